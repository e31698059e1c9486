//! Scorer latency on one application (German credit, default settings: 200 trees, depth 4).
//! Run: `cargo bench -p model --bench scorer`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use features::{Raw, Spec};
use model::pipeline::{fit, provenance_now, TrainConfig};
use model::shap::{Explainer, FastExplainer};
use model::Scorer;

fn scorer_and_rows() -> (Scorer, Vec<Vec<String>>) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data");
    let spec = Spec::from_json(
        &std::fs::read_to_string(format!("{root}/german_credit.spec.json")).unwrap(),
    )
    .unwrap();
    let mut rdr = csv::Reader::from_path(format!("{root}/german_credit.csv")).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let cols: Vec<usize> = spec
        .features
        .iter()
        .map(|f| headers.iter().position(|h| h == f.name).unwrap())
        .collect();
    let t = headers.iter().position(|h| h == spec.target.name).unwrap();
    let mut rows = Vec::new();
    let mut y = Vec::new();
    for rec in rdr.records() {
        let rec = rec.unwrap();
        rows.push(cols.iter().map(|&c| rec[c].to_string()).collect::<Vec<_>>());
        y.push(rec[t] == *spec.target.positive);
    }
    let raws: Vec<Vec<Raw>> = rows
        .iter()
        .map(|r| r.iter().map(|c| Raw::from_cell(c)).collect())
        .collect();
    let fitted = fit(
        &spec,
        &raws,
        &y,
        &TrainConfig::default(),
        provenance_now(),
        &mut |_| {},
    )
    .unwrap();
    (Scorer::new(fitted.bundle).unwrap(), rows)
}

fn bench(c: &mut Criterion) {
    let (scorer, rows) = scorer_and_rows();
    let raws: Vec<Vec<Raw>> = rows
        .iter()
        .map(|r| r.iter().map(|c| Raw::from_cell(c)).collect())
        .collect();
    let mut scratch = scorer.scratch();
    let w = scorer.preprocessor().width();
    let mut encoded = vec![0.0f32; w];
    scorer
        .preprocessor()
        .transform(&raws[1], &mut encoded)
        .unwrap();
    let mut i = 0;
    c.bench_function("predict_encoded_row", |b| {
        b.iter(|| scorer.predictor().margin(black_box(&encoded)))
    });
    c.bench_function("transform_row", |b| {
        b.iter(|| {
            scorer
                .preprocessor()
                .transform(black_box(&raws[1]), &mut encoded)
                .unwrap()
        })
    });
    // A scored application's drift bins (score and every input), as each decision is counted.
    let baseline = scorer
        .bundle()
        .drift_baseline
        .clone()
        .expect("fit stores a baseline");
    let spec = &scorer.bundle().spec;
    let mut slots = vec![0u16; baseline.width()];
    c.bench_function("drift_bin_row", |b| {
        b.iter(|| {
            i = (i + 1) % raws.len();
            baseline.bin(spec, black_box(&raws[i]), 0.3, &mut slots);
        })
    });
    c.bench_function("score_without_reasons", |b| {
        b.iter(|| {
            i = (i + 1) % raws.len();
            scorer
                .score_with(black_box(&raws[i]), false, &mut scratch)
                .unwrap()
        })
    });
    c.bench_function("score_with_reasons", |b| {
        b.iter(|| {
            i = (i + 1) % raws.len();
            scorer
                .score_with(black_box(&raws[i]), true, &mut scratch)
                .unwrap()
        })
    });
    let ens = scorer.ensemble();
    let mut phi = vec![0.0f64; w];
    let fast = FastExplainer::new(ens);
    let exact = Explainer::new(ens);
    c.bench_function("treeshap_precomputed", |b| {
        b.iter(|| fast.contributions(ens, black_box(&encoded), &mut phi))
    });
    c.bench_function("treeshap_recursive", |b| {
        b.iter(|| exact.contributions(ens, black_box(&encoded), &mut phi))
    });
    let n = 4096;
    let block: Vec<f32> = (0..n)
        .flat_map(|k| {
            let mut e = vec![0.0f32; w];
            scorer
                .preprocessor()
                .transform(&raws[k % raws.len()], &mut e)
                .unwrap();
            e
        })
        .collect();
    let mut out = vec![0.0f32; n];
    c.bench_function("predict_block_4096_rows", |b| {
        b.iter(|| scorer.predictor().margins(black_box(&block), &mut out))
    });
    // Explaining 256 different rows, as a batch does: one row at a time (each row walks every
    // tree's tables, which do not fit in L2), then tree by tree over the block.
    let rows = &block[..256 * w];
    let mut phis = vec![0.0f64; 256 * w];
    c.bench_function("treeshap_256_rows_one_by_one", |b| {
        b.iter(|| {
            for (row, p) in rows.chunks_exact(w).zip(phis.chunks_exact_mut(w)) {
                fast.contributions(ens, black_box(row), p);
            }
        })
    });
    c.bench_function("treeshap_256_rows_block", |b| {
        b.iter(|| fast.contributions_block(ens, black_box(rows), w, &mut phis))
    });
    // A few rows at once, as concurrent API requests are explained together: per row, the
    // block against one by one.
    for n in [2usize, 4, 5, 8, 12, 16, 32] {
        let rows = &block[..n * w];
        c.bench_function(&format!("treeshap_{n}_rows_block"), |b| {
            b.iter(|| fast.contributions_block(ens, black_box(rows), w, &mut phis[..n * w]))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
