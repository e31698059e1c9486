//! One booster fit on an 80/20 stratified split, timed, for `bench/train-engines.sh`:
//! `cargo run --release -p training --example fit_once -- DATA SPEC ENGINE [SPLIT_SEED [DUMP_DIR]]`.
//! Prints one JSON line (engine, rows, columns, seconds, test ROC AUC). With DUMP_DIR it also
//! writes the encoded split (`train.f32`, `test.f32`, `train.y`, `test.y`, `shape.json`) so that
//! XGBoost can be fitted on exactly the same matrix.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use features::{Preprocessor, Raw};
use model::pipeline::{encode_rows, stratified_split};
use model::train::{Engine, TrainParams};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!("usage: fit_once DATA SPEC hist|gbdt [SPLIT_SEED [DUMP_DIR]]");
    }
    let spec = training::read_spec(&PathBuf::from(&args[1]))?;
    let engine: Engine = args[2].parse().map_err(anyhow::Error::msg)?;
    let data = training::table::read_labelled(&PathBuf::from(&args[0]), &spec)?;
    let raws = data.rows();
    let split_seed: u64 = match args.get(3) {
        Some(s) => s.parse().context("SPLIT_SEED must be a number")?,
        None => 42,
    };
    let (train_idx, test_idx) = stratified_split(&data.labels, 0.2, split_seed)?;
    let train_raw: Vec<Vec<Raw<'_>>> = train_idx.iter().map(|&i| raws[i].clone()).collect();
    let test_raw: Vec<Vec<Raw<'_>>> = test_idx.iter().map(|&i| raws[i].clone()).collect();
    let ytr: Vec<bool> = train_idx.iter().map(|&i| data.labels[i]).collect();
    let yte: Vec<bool> = test_idx.iter().map(|&i| data.labels[i]).collect();
    let pre = Preprocessor::fit(&spec, &train_raw).context("fitting the preprocessor")?;
    let w = pre.width();
    let xtr = encode_rows(&pre, &train_raw)?;
    let xte = encode_rows(&pre, &test_raw)?;
    if let Some(dir) = args.get(4) {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let bools = |v: &[bool]| v.iter().map(|b| u8::from(*b)).collect::<Vec<u8>>();
        std::fs::write(dir.join("train.f32"), f32s(&xtr))?;
        std::fs::write(dir.join("test.f32"), f32s(&xte))?;
        std::fs::write(dir.join("train.y"), bools(&ytr))?;
        std::fs::write(dir.join("test.y"), bools(&yte))?;
        std::fs::write(
            dir.join("shape.json"),
            serde_json::json!({"width": w, "train": ytr.len(), "test": yte.len()}).to_string(),
        )?;
    }
    let trees = std::env::var("FIT_ONCE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let params = TrainParams {
        engine,
        trees,
        ..TrainParams::default()
    };
    let started = Instant::now();
    let ensemble = match engine {
        Engine::Hist => model::hist::train(&xtr, &ytr, w, &params, &[], &mut |_| {})?.ensemble,
        Engine::Gbdt => model::train::train(&xtr, &ytr, w, &params, &mut |_| {})?.ensemble,
    };
    let seconds = started.elapsed().as_secs_f64();
    if let Ok(path) = std::env::var("FIT_ONCE_TREES") {
        std::fs::write(path, serde_json::to_string_pretty(&ensemble)?)?;
    }
    let pred = model::Predictor::new(&ensemble);
    let p: Vec<f64> = xte
        .chunks_exact(w)
        .map(|r| model::trees::sigmoid(f64::from(pred.margin(r))))
        .collect();
    let auc = model::metrics::roc_auc(&p, &yte);
    println!(
        "{}",
        serde_json::json!({
            "engine": engine.as_str(),
            "split_seed": split_seed,
            "rows": ytr.len(),
            "columns": w,
            "threads": rayon::current_num_threads(),
            "seconds": seconds,
            "test_roc_auc": auc,
        })
    );
    Ok(())
}
