//! Golden scores: fixed applicants, a fixed model recipe, committed outputs. A change in
//! preprocessing, SMOTE, training, calibration or the predictor that moves any of these
//! numbers fails here. Regenerate deliberately with `UPDATE_GOLDEN=1 cargo test -p model --test golden`
//! and explain the change in the commit.

mod common;
use common::german;

use features::Raw;
use model::pipeline::{fit, provenance_now, TrainConfig};
use model::train::{Engine, TrainParams};
use model::Scorer;

const GOLDEN_GBDT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/golden_scores.json"
);
const GOLDEN_HIST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/golden_scores_hist.json"
);

#[test]
fn fixed_applicants_keep_their_encodings_and_scores_gbdt() {
    check(Engine::Gbdt, GOLDEN_GBDT);
}

#[test]
fn fixed_applicants_keep_their_encodings_and_scores_hist() {
    check(Engine::Hist, GOLDEN_HIST);
}

fn check(engine: Engine, golden: &str) {
    let (spec, rows, y) = german();
    let raws: Vec<Vec<Raw>> = rows
        .iter()
        .map(|r| r.iter().map(|c| Raw::from_cell(c)).collect())
        .collect();
    let cfg = TrainConfig {
        booster: TrainParams {
            engine,
            trees: 40,
            ..TrainParams::default()
        },
        ..TrainConfig::default()
    };
    let fitted = fit(&spec, &raws, &y, &cfg, provenance_now(), &mut |_| {}).unwrap();
    let scorer = Scorer::new(fitted.bundle).unwrap();
    let applicants = [0usize, 1, 2, 3, 4, 500, 999];
    let mut got = serde_json::Map::new();
    let mut encoded = vec![0.0f32; scorer.preprocessor().width()];
    scorer
        .preprocessor()
        .transform(&raws[0], &mut encoded)
        .unwrap();
    got.insert("encoded_applicant_0".into(), serde_json::json!(encoded));
    let scores: Vec<serde_json::Value> = applicants
        .iter()
        .map(|&i| {
            let s = scorer.score(&raws[i], true).unwrap();
            serde_json::json!({
                "row": i,
                "default_probability": s.default_probability,
                "decision": s.decision,
                "reasons": s.reasons.iter().map(|r| r.feature.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    got.insert("scores".into(), serde_json::Value::Array(scores));
    let got = serde_json::Value::Object(got);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        return;
    }
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden).expect("golden file; run with UPDATE_GOLDEN=1 once"),
    )
    .unwrap();
    let enc_want: Vec<f64> = want["encoded_applicant_0"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(encoded.len(), enc_want.len(), "encoded width changed");
    for (k, (a, b)) in encoded.iter().zip(&enc_want).enumerate() {
        assert!(
            (f64::from(*a) - b).abs() < 1e-6,
            "encoded column {k} ({}) changed: {a} vs {b}",
            scorer.preprocessor().columns[k].name
        );
    }
    for (g, w) in got["scores"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["scores"].as_array().unwrap())
    {
        let (pg, pw) = (
            g["default_probability"].as_f64().unwrap(),
            w["default_probability"].as_f64().unwrap(),
        );
        assert!(
            (pg - pw).abs() < 1e-9,
            "row {}: probability {pg} vs golden {pw}",
            w["row"]
        );
        assert_eq!(g["decision"], w["decision"], "row {}", w["row"]);
        assert_eq!(g["reasons"], w["reasons"], "row {}", w["row"]);
    }
}
