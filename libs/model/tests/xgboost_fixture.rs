//! The XGBoost importer, predictor and TreeSHAP against XGBoost's own outputs
//! (fixture made by `scripts/xgboost_fixture.py`).

use features::{Raw, Spec};
use model::pipeline::{bundle_imported, provenance_now};
use model::shap::{Explainer, FastExplainer};
use model::{Predictor, Scorer, ThresholdRule, Thresholds};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/xgboost");

struct Case {
    features: Vec<Option<f64>>,
    margin: f64,
    probability: f64,
    contribs: Vec<f64>,
}

fn load() -> (Spec, model::Ensemble, Vec<Case>) {
    let spec =
        Spec::from_json(&std::fs::read_to_string(format!("{DIR}/spec.json")).unwrap()).unwrap();
    let names: Vec<String> = spec
        .features
        .iter()
        .filter(|f| f.is_model_input())
        .map(|f| f.name.clone())
        .collect();
    let text = std::fs::read_to_string(format!("{DIR}/model.json")).unwrap();
    let ensemble = model::xgboost::import(&text, &names).unwrap();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/cases.json")).unwrap())
            .unwrap();
    let cases = cases["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            features: c["features"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64())
                .collect(),
            margin: c["margin"].as_f64().unwrap(),
            probability: c["probability"].as_f64().unwrap(),
            contribs: c["contribs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect(),
        })
        .collect();
    (spec, ensemble, cases)
}

fn row(c: &Case) -> Vec<f32> {
    c.features
        .iter()
        .map(|v| v.map_or(f32::NAN, |x| x as f32))
        .collect()
}

#[test]
fn imported_predictions_match_xgboost_to_1e_5() {
    let (_, ensemble, cases) = load();
    assert_eq!(cases.len(), 40);
    let p = Predictor::new(&ensemble);
    for (i, c) in cases.iter().enumerate() {
        let m = f64::from(p.margin(&row(c)));
        assert!(
            (m - c.margin).abs() < 1e-5,
            "case {i}: margin {m} vs {}",
            c.margin
        );
        let prob = model::trees::sigmoid(m);
        assert!(
            (prob - c.probability).abs() < 1e-5,
            "case {i}: p {prob} vs {}",
            c.probability
        );
    }
}

#[test]
fn treeshap_matches_xgboost_pred_contribs_and_sums_to_margin() {
    let (_, ensemble, cases) = load();
    let exact = Explainer::new(&ensemble);
    let fast = FastExplainer::new(&ensemble);
    let mut phi = vec![0.0; 5];
    let mut phi_fast = vec![0.0; 5];
    for (i, c) in cases.iter().enumerate() {
        let r = row(c);
        exact.contributions(&ensemble, &r, &mut phi);
        fast.contributions(&ensemble, &r, &mut phi_fast);
        for j in 0..5 {
            assert!(
                (phi[j] - c.contribs[j]).abs() < 1e-5,
                "case {i} feature {j}: {} vs {}",
                phi[j],
                c.contribs[j]
            );
            assert!(
                (phi_fast[j] - c.contribs[j]).abs() < 1e-5,
                "case {i} feature {j}: fast explainer {} vs {}",
                phi_fast[j],
                c.contribs[j]
            );
        }
        assert!(
            (exact.bias() - c.contribs[5]).abs() < 1e-5,
            "bias {} vs {}",
            exact.bias(),
            c.contribs[5]
        );
        let total = exact.bias() + phi.iter().sum::<f64>();
        assert!(
            (total - c.margin).abs() < 1e-5,
            "case {i}: contributions sum to {total}, margin {}",
            c.margin
        );
    }
}

#[test]
fn imported_bundle_scores_raw_applications_with_reasons() {
    let (spec, ensemble, cases) = load();
    let t = Thresholds {
        approve: 0.2,
        decline: 0.5,
        rule: ThresholdRule::F1,
        review_recall: 0.9,
    };
    let bundle = bundle_imported(&spec, ensemble, t, 4, provenance_now()).unwrap();
    let dir = tempdir();
    bundle.save(&dir).unwrap();
    let scorer = Scorer::new(model::Bundle::load(&dir).unwrap()).unwrap();
    for c in &cases {
        let raws: Vec<Raw> = c
            .features
            .iter()
            .map(|v| v.map_or(Raw::Missing, Raw::Num))
            .collect();
        let s = scorer.score(&raws, true).unwrap();
        assert!((s.default_probability - c.probability).abs() < 1e-5);
        let positive: Vec<f64> = {
            // Feature 2 (age) is protected: a model input here, but never a reason.
            let mut v: Vec<f64> = c.contribs[..5]
                .iter()
                .enumerate()
                .filter(|(j, x)| *j != 2 && **x > 0.0)
                .map(|(_, x)| *x)
                .collect();
            v.sort_by(|a, b| b.total_cmp(a));
            v
        };
        let got: Vec<f64> = s.reasons.iter().map(|r| r.contribution).collect();
        assert_eq!(got.len(), positive.len().min(4));
        assert!(s
            .reasons
            .iter()
            .all(|r| r.feature != "age" && !r.text.is_empty()));
        for (g, w) in got.iter().zip(&positive) {
            assert!((g - w).abs() < 1e-5);
        }
    }
}

#[test]
fn import_refuses_mismatched_spec_and_other_objectives() {
    let text = std::fs::read_to_string(format!("{DIR}/model.json")).unwrap();
    let names: Vec<String> = ["income", "debt_ratio", "age", "num_late_payments"]
        .map(String::from)
        .to_vec();
    let err = model::xgboost::import(&text, &names)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("5 features") && err.contains("4 model inputs"),
        "{err}"
    );
    let swapped: Vec<String> = [
        "debt_ratio",
        "income",
        "age",
        "num_late_payments",
        "loan_amount",
    ]
    .map(String::from)
    .to_vec();
    assert!(model::xgboost::import(&text, &swapped)
        .unwrap_err()
        .to_string()
        .contains("differ"));
    let other = text.replace("binary:logistic", "reg:squarederror");
    let names5: Vec<String> = [
        "income",
        "debt_ratio",
        "age",
        "num_late_payments",
        "loan_amount",
    ]
    .map(String::from)
    .to_vec();
    assert!(model::xgboost::import(&other, &names5)
        .unwrap_err()
        .to_string()
        .contains("objective"));
    assert!(model::xgboost::import("{}", &names5).is_err());
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "model-test-{}-{}",
        std::process::id(),
        model::bundle::new_model_uuid()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
