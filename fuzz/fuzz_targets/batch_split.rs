//! An uploaded batch file, CSV or NDJSON (first byte chooses), split into chunks as the API does.
//! Properties: no panic; when the split succeeds, the chunk files hold exactly `rows` records,
//! each CSV chunk starting with the upload's header.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn spec() -> &'static features::Spec {
    static SPEC: OnceLock<features::Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        features::Spec::from_json(include_str!("../../data/german_credit.spec.json")).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = if selector % 2 == 0 {
        jobs::Format::Csv
    } else {
        jobs::Format::Ndjson
    };
    let chunk_rows = u64::from(selector / 2 % 7) + 1;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    std::fs::write(&input, body).unwrap();
    let chunk = |n: u32| dir.path().join(format!("chunk-{n}"));
    let Ok(split) = jobs::split::split_file(&input, format, chunk_rows, spec(), chunk) else {
        return;
    };
    let mut rows = 0u64;
    for n in 0..split.chunks {
        let bytes = std::fs::read(chunk(n)).unwrap();
        let in_chunk = match format {
            jobs::Format::Csv => {
                let mut rdr = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
                let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
                assert_eq!(header, split.header, "chunk {n} repeats the header");
                rdr.records().map(|r| r.expect("a chunk re-parses")).count() as u64
            }
            jobs::Format::Ndjson => bytes
                .split(|b| *b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .count() as u64,
        };
        assert!(in_chunk <= chunk_rows, "chunk {n} has {in_chunk} rows");
        rows += in_chunk;
    }
    assert_eq!(rows, split.rows, "the chunks hold every row once");
});
