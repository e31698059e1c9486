//! Splitting an uploaded file into chunks of rows, streaming: memory is bounded by one record
//! (at most [`MAX_RECORD_BYTES`]), not the file. CSV chunks each repeat the header; quoted
//! fields may hold newlines. Chunks are synced to disk before the job is accepted.

use std::cell::Cell;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::rc::Rc;

use features::Spec;

use crate::Format;

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("{0}")]
    Invalid(String),
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
}

/// The longest CSV record (header included) or NDJSON line accepted, in bytes. A loan
/// application is well under a kilobyte; a longer record is refused with its place instead of
/// being buffered whole (it could be as large as the upload).
pub const MAX_RECORD_BYTES: u64 = 1 << 20;

/// What the CSV parser may read past the end of a record (its buffer), on top of the limit.
const READ_AHEAD: u64 = 64 << 10;

/// A reader that fails once more than `MAX_RECORD_BYTES` (plus read-ahead) are read without
/// `since` being reset, which the caller does after each record.
struct RecordBound<R> {
    inner: R,
    since: Rc<Cell<u64>>,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for RecordBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.since.get() > MAX_RECORD_BYTES + READ_AHEAD {
            self.tripped.set(true);
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a record is longer than the limit",
            ));
        }
        let n = self.inner.read(buf)?;
        self.since.set(self.since.get() + n as u64);
        Ok(n)
    }
}

fn too_long(place: &str) -> SplitError {
    SplitError::Invalid(format!(
        "{place} is longer than the limit of {MAX_RECORD_BYTES} bytes per record"
    ))
}

/// Flushes a chunk and syncs it to disk.
fn close(w: BufWriter<File>) -> Result<(), SplitError> {
    let file = w.into_inner().map_err(|e| SplitError::Io(e.into_error()))?;
    file.sync_all()?;
    Ok(())
}

/// What splitting found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub rows: u64,
    pub chunks: u32,
    /// CSV header (empty for NDJSON).
    pub header: Vec<String>,
}

/// Checks that a CSV header carries every required model input of the spec.
pub fn check_header(spec: &Spec, header: &[String]) -> Result<(), SplitError> {
    let missing: Vec<&str> = spec
        .features
        .iter()
        .filter(|f| f.required && f.is_model_input() && !header.iter().any(|h| h.trim() == f.name))
        .map(|f| f.name.as_str())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SplitError::Invalid(format!(
            "the header lacks required column(s): {}",
            missing.join(", ")
        )))
    }
}

/// How much of a file being written is there to read, shared by its writer and a [`Growing`]
/// reader, so that a file can be split while it is uploaded.
#[derive(Debug, Default)]
pub struct Written {
    /// Bytes written so far, and whether the file has ended (whole or not).
    state: std::sync::Mutex<(u64, Option<bool>)>,
    more: std::sync::Condvar,
}

impl Written {
    fn update(&self, f: impl FnOnce(&mut (u64, Option<bool>))) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.more.notify_all();
    }

    /// The file now holds `bytes` more bytes.
    pub fn grew(&self, bytes: u64) {
        self.update(|s| s.0 += bytes);
    }

    /// The file is whole (`true`) or will not be (`false`: the upload failed). Only the first
    /// word counts.
    pub fn ended(&self, whole: bool) {
        self.update(|s| {
            s.1.get_or_insert(whole);
        });
    }
}

/// Reads a file while it is written: waits for more bytes until the writer says it has ended;
/// a file that ended before it was whole is an error.
pub struct Growing {
    file: File,
    read: u64,
    written: std::sync::Arc<Written>,
}

impl Growing {
    pub fn new(path: &Path, written: std::sync::Arc<Written>) -> std::io::Result<Growing> {
        Ok(Growing {
            file: File::open(path)?,
            read: 0,
            written,
        })
    }
}

impl Read for Growing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (there, ended) = {
            let state = self.written.state.lock().unwrap_or_else(|e| e.into_inner());
            let state = self
                .written
                .more
                .wait_while(state, |s| s.0 <= self.read && s.1.is_none())
                .unwrap_or_else(|e| e.into_inner());
            *state
        };
        if there > self.read {
            let want = buf
                .len()
                .min(usize::try_from(there - self.read).unwrap_or(usize::MAX));
            let n = self.file.read(&mut buf[..want])?;
            self.read += n as u64;
            return Ok(n);
        }
        match ended {
            Some(true) => Ok(0),
            _ => Err(std::io::Error::other("the upload did not complete")),
        }
    }
}

/// Splits `input` into chunk files of at most `chunk_rows` rows, named by `chunk_path(n)`.
/// For CSV the header is checked against `spec` first.
pub fn split_file(
    input: &Path,
    format: Format,
    chunk_rows: u64,
    spec: &Spec,
    chunk_path: impl FnMut(u32) -> std::path::PathBuf,
) -> Result<Split, SplitError> {
    split_from(
        File::open(input)?,
        input,
        format,
        chunk_rows,
        spec,
        chunk_path,
    )
}

/// As [`split_file`], reading the rows from `source`: the bytes of `input`, perhaps as they are
/// written ([`Growing`]). A CSV file's chunks are copied from `input` once `source` has ended.
pub fn split_from(
    source: impl Read,
    input: &Path,
    format: Format,
    chunk_rows: u64,
    spec: &Spec,
    mut chunk_path: impl FnMut(u32) -> std::path::PathBuf,
) -> Result<Split, SplitError> {
    if chunk_rows == 0 {
        return Err(SplitError::Invalid("chunk size must be at least 1".into()));
    }
    let mut open_chunk = |n: u32| -> Result<BufWriter<File>, SplitError> {
        let p = chunk_path(n);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(BufWriter::with_capacity(1 << 20, File::create(p)?))
    };
    let (mut rows, mut chunks) = (0u64, 0u32);
    match format {
        Format::Csv => {
            let since = Rc::new(Cell::new(0u64));
            let tripped = Rc::new(Cell::new(false));
            let mut rdr = csv::ReaderBuilder::new()
                .flexible(false)
                .from_reader(RecordBound {
                    inner: BufReader::with_capacity(1 << 20, source),
                    since: since.clone(),
                    tripped: tripped.clone(),
                });
            let header: Vec<String> = rdr
                .headers()
                .map_err(|e| {
                    if tripped.get() {
                        too_long("the CSV header")
                    } else {
                        SplitError::Invalid(format!("cannot read the CSV header: {e}"))
                    }
                })?
                .iter()
                .map(String::from)
                .collect();
            since.set(0);
            check_header(spec, &header)?;
            // Parse once to validate and to find where each chunk starts; then copy the bytes
            // (header line + the chunk's rows) instead of re-writing every record.
            let header_end = rdr.position().byte();
            // A StringRecord, so that a row that is not UTF-8 is refused here, with its place,
            // rather than failing its whole chunk in the worker.
            let mut record = csv::StringRecord::new();
            let mut starts: Vec<u64> = Vec::new();
            loop {
                let at = rdr.position().byte();
                let line = rdr.position().line();
                let more = rdr.read_record(&mut record).map_err(|e| {
                    if tripped.get() {
                        too_long(&format!("row {} (line {line})", rows + 1))
                    } else {
                        SplitError::Invalid(format!("malformed CSV: {e}"))
                    }
                })?;
                if !more {
                    break;
                }
                since.set(0);
                if rows % chunk_rows == 0 {
                    starts.push(at);
                }
                rows += 1;
            }
            let end = rdr.position().byte();
            let mut src = File::open(input)?;
            let mut head = vec![0u8; header_end as usize];
            src.read_exact(&mut head)?;
            if !head.ends_with(b"\n") {
                head.push(b'\n');
            }
            for (k, &from) in starts.iter().enumerate() {
                let to = starts.get(k + 1).copied().unwrap_or(end);
                let mut w = open_chunk(chunks)?;
                w.write_all(&head)?;
                src.seek(SeekFrom::Start(from))?;
                std::io::copy(&mut (&mut src).take(to - from), &mut w)?;
                close(w)?;
                chunks += 1;
            }
            Ok(Split {
                rows,
                chunks,
                header,
            })
        }
        Format::Ndjson => {
            let mut rdr = BufReader::with_capacity(1 << 20, source);
            let mut out: Option<BufWriter<File>> = None;
            let mut bytes = Vec::new();
            let mut i = 0u64;
            loop {
                bytes.clear();
                // At most one byte past the limit is read: a longer line is never held whole.
                let n = (&mut rdr)
                    .take(MAX_RECORD_BYTES + 1)
                    .read_until(b'\n', &mut bytes)?;
                if n == 0 {
                    break;
                }
                i += 1;
                if n as u64 > MAX_RECORD_BYTES && !bytes.ends_with(b"\n") {
                    return Err(too_long(&format!("line {i}")));
                }
                let line = std::str::from_utf8(&bytes)
                    .map_err(|_| SplitError::Invalid(format!("line {i}: not valid UTF-8")))?
                    .trim_end_matches(['\n', '\r']);
                if line.trim().is_empty() {
                    continue;
                }
                if !line.trim_start().starts_with('{') {
                    return Err(SplitError::Invalid(format!(
                        "line {i}: each NDJSON line must be a JSON object"
                    )));
                }
                if rows % chunk_rows == 0 {
                    if let Some(w) = out.take() {
                        close(w)?;
                    }
                    out = Some(open_chunk(chunks)?);
                    chunks += 1;
                }
                if let Some(w) = out.as_mut() {
                    w.write_all(line.as_bytes())?;
                    w.write_all(b"\n")?;
                }
                rows += 1;
            }
            if let Some(w) = out {
                close(w)?;
            }
            Ok(Split {
                rows,
                chunks,
                header: Vec::new(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec::from_json(
            r#"{"format_version": 1, "target": {"name": "y", "positive": "1"}, "id_column": "id",
                "features": [{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "categorical"},
                             {"name": "c", "kind": "numeric", "required": false}]}"#,
        )
        .unwrap()
    }

    fn tmp() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("split-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn csv_chunks_repeat_the_header_and_keep_quoted_newlines() {
        let d = tmp();
        let input = d.join("in.csv");
        let mut text = String::from("id,a,b\n");
        for i in 0..7 {
            text.push_str(&format!("r{i},{i},\"multi\nline, with comma\"\n"));
        }
        std::fs::write(&input, text).unwrap();
        let s = split_file(&input, Format::Csv, 3, &spec(), |n| {
            d.join(format!("c{n}.csv"))
        })
        .unwrap();
        assert_eq!((s.rows, s.chunks), (7, 3));
        let mut seen = Vec::new();
        for n in 0..3 {
            let mut r = csv::Reader::from_path(d.join(format!("c{n}.csv"))).unwrap();
            assert_eq!(r.headers().unwrap(), vec!["id", "a", "b"]);
            for rec in r.records() {
                let rec = rec.unwrap();
                assert_eq!(&rec[2], "multi\nline, with comma");
                seen.push(rec[0].to_string());
            }
        }
        assert_eq!(
            seen,
            (0..7).map(|i| format!("r{i}")).collect::<Vec<_>>(),
            "every row once, in order"
        );
    }

    /// Writes `text` to `path` in pieces of `piece` bytes from another thread, telling
    /// `written`, and ends it whole or not.
    fn write_slowly(
        path: std::path::PathBuf,
        text: Vec<u8>,
        piece: usize,
        whole: bool,
        written: std::sync::Arc<Written>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            for p in text.chunks(piece) {
                f.write_all(p).unwrap();
                written.grew(p.len() as u64);
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            written.ended(whole);
        })
    }

    #[test]
    fn a_file_split_while_it_is_written_gives_the_chunks_of_the_whole_file() {
        let d = tmp();
        let mut text = String::from("id,a,b\n");
        for i in 0..50 {
            text.push_str(&format!("r{i},{i},\"multi\nline, with comma\"\n"));
        }
        for (format, text) in [
            (Format::Csv, text.clone()),
            (
                Format::Ndjson,
                (0..50)
                    .map(|i| format!("{{\"id\": \"r{i}\", \"a\": {i}, \"b\": \"x\"}}\n"))
                    .collect(),
            ),
        ] {
            let whole = d.join("whole");
            std::fs::write(&whole, &text).unwrap();
            let want = split_file(&whole, format, 7, &spec(), |n| d.join(format!("w{n}"))).unwrap();
            // Pieces of 13 bytes: records and quoted newlines are cut across pieces.
            let growing = d.join("growing");
            std::fs::write(&growing, "").unwrap();
            let written = std::sync::Arc::new(Written::default());
            let writer = write_slowly(
                growing.clone(),
                text.into_bytes(),
                13,
                true,
                written.clone(),
            );
            let source = Growing::new(&growing, written).unwrap();
            let got = split_from(source, &growing, format, 7, &spec(), |n| {
                d.join(format!("g{n}"))
            })
            .unwrap();
            writer.join().unwrap();
            assert_eq!(got, want, "{format:?}");
            for n in 0..got.chunks {
                assert_eq!(
                    std::fs::read(d.join(format!("g{n}"))).unwrap(),
                    std::fs::read(d.join(format!("w{n}"))).unwrap(),
                    "{format:?} chunk {n}"
                );
            }
        }
    }

    #[test]
    fn a_file_whose_upload_failed_is_not_split() {
        let d = tmp();
        let growing = d.join("growing");
        std::fs::write(&growing, "").unwrap();
        let written = std::sync::Arc::new(Written::default());
        let writer = write_slowly(
            growing.clone(),
            b"id,a,b\nr1,1,x\nr2,2,y\n".to_vec(),
            5,
            false,
            written.clone(),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let path = growing.clone();
        std::thread::spawn(move || {
            let source = Growing::new(&path, written).unwrap();
            let _ = tx.send(split_from(source, &path, Format::Csv, 7, &spec(), |n| {
                path.with_extension(format!("c{n}"))
            }));
        });
        let split = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the split ends when the upload does");
        writer.join().unwrap();
        let err = split.unwrap_err().to_string();
        assert!(err.contains("did not complete"), "{err}");
    }

    #[test]
    fn a_header_without_required_columns_is_refused() {
        let d = tmp();
        let input = d.join("in.csv");
        std::fs::write(&input, "id,a\nx,1\n").unwrap();
        let err = split_file(&input, Format::Csv, 10, &spec(), |n| {
            d.join(format!("c{n}"))
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("required column(s): b"), "{err}");
    }

    #[test]
    fn ndjson_splits_by_line_and_rejects_non_objects() {
        let d = tmp();
        let input = d.join("in.ndjson");
        std::fs::write(&input, "{\"a\":1}\n\n{\"a\":2}\n{\"a\":3}\n").unwrap();
        let s = split_file(&input, Format::Ndjson, 2, &spec(), |n| {
            d.join(format!("n{n}"))
        })
        .unwrap();
        assert_eq!((s.rows, s.chunks), (3, 2));
        assert_eq!(
            std::fs::read_to_string(d.join("n1")).unwrap(),
            "{\"a\":3}\n"
        );
        std::fs::write(&input, "{\"a\":1}\n[1,2]\n").unwrap();
        assert!(split_file(&input, Format::Ndjson, 2, &spec(), |n| d
            .join(format!("m{n}")))
        .is_err());
    }

    /// One record as long as the upload was buffered whole; now the split stops at the limit
    /// and names the record.
    #[test]
    fn records_longer_than_the_limit_are_refused_with_their_place() {
        let d = tmp();
        let long = "x".repeat(MAX_RECORD_BYTES as usize + 200_000);
        let input = d.join("in.csv");
        std::fs::write(&input, format!("id,a,b\nr1,1,x\nr2,2,\"{long}\"\nr3,3,y\n")).unwrap();
        let err = split_file(&input, Format::Csv, 10, &spec(), |n| {
            d.join(format!("c{n}"))
        })
        .unwrap_err();
        assert!(matches!(err, SplitError::Invalid(_)), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("row 2 (line 3)") && msg.contains("limit"),
            "{msg}"
        );
        // The same for a header, and for an NDJSON line.
        std::fs::write(&input, format!("id,a,b{long}\nr1,1,x\n")).unwrap();
        let msg = split_file(&input, Format::Csv, 10, &spec(), |n| {
            d.join(format!("h{n}"))
        })
        .unwrap_err()
        .to_string();
        assert!(msg.contains("header") && msg.contains("limit"), "{msg}");
        let input = d.join("in.ndjson");
        std::fs::write(&input, format!("{{\"a\":1}}\n{{\"b\":\"{long}\"}}\n")).unwrap();
        let msg = split_file(&input, Format::Ndjson, 10, &spec(), |n| {
            d.join(format!("n{n}"))
        })
        .unwrap_err()
        .to_string();
        assert!(msg.contains("line 2") && msg.contains("limit"), "{msg}");
        // Records just under the limit still pass.
        let fits = "y".repeat(MAX_RECORD_BYTES as usize - 100);
        std::fs::write(&input, format!("{{\"b\":\"{fits}\"}}\r\n{{\"a\":2}}")).unwrap();
        let s = split_file(&input, Format::Ndjson, 10, &spec(), |n| {
            d.join(format!("f{n}"))
        })
        .unwrap();
        assert_eq!(s.rows, 2);
        assert_eq!(
            std::fs::read_to_string(d.join("f0"))
                .unwrap()
                .lines()
                .nth(1),
            Some("{\"a\":2}")
        );
    }

    /// Found by `scripts/fuzz.sh` (batch_split): a row that is not UTF-8 passed the split and
    /// then failed its whole chunk in the worker. Now the upload is refused with the place.
    #[test]
    fn rows_that_are_not_utf8_are_refused_at_the_split() {
        let d = tmp();
        let input = d.join("in.csv");
        std::fs::write(&input, b"id,a,b\nr1,1,x\nr2,2,\xff\xfe\n".as_slice()).unwrap();
        let err = split_file(&input, Format::Csv, 10, &spec(), |n| {
            d.join(format!("c{n}"))
        })
        .unwrap_err();
        assert!(matches!(err, SplitError::Invalid(_)), "{err:?}");
        assert!(err.to_string().contains("line 3"), "{err}");
        std::fs::write(&input, b"{\"a\":1}\n{\"b\":\"\xff\"}\n".as_slice()).unwrap();
        let err = split_file(&input, Format::Ndjson, 10, &spec(), |n| {
            d.join(format!("n{n}"))
        })
        .unwrap_err();
        assert!(matches!(err, SplitError::Invalid(_)), "{err:?}");
        assert_eq!(err.to_string(), "line 2: not valid UTF-8");
    }
}
