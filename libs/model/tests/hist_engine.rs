//! The hist engine on German credit: its bins are XGBoost's, and monotone constraints hold end
//! to end with `credit_amount` and `duration_in_month` constrained increasing. For every
//! held-out applicant, raising either over its whole range never lowers the served (calibrated)
//! probability, and neither is ever cited as a reason on the wrong side of its training mean.

mod common;
use common::german;

use features::{Monotone, Raw, Spec};
use model::pipeline::{fit, provenance_now, stratified_split, TrainConfig};
use model::train::{Engine, TrainParams};
use model::Scorer;

const CONSTRAINED: [&str; 2] = ["credit_amount", "duration_in_month"];

fn constrained_spec() -> Spec {
    let (mut spec, _, _) = german();
    for f in &mut spec.features {
        if CONSTRAINED.contains(&f.name.as_str()) {
            f.monotone = Some(Monotone::Increasing);
        }
    }
    spec.check().unwrap();
    spec
}

fn train(spec: &Spec, engine: Engine) -> Result<(Scorer, Vec<usize>), model::ModelError> {
    let (_, rows, y) = german();
    let (train_idx, test_idx) = stratified_split(&y, 0.2, 42).unwrap();
    let raws: Vec<Vec<Raw>> = train_idx
        .iter()
        .map(|&i| rows[i].iter().map(|c| Raw::from_cell(c)).collect())
        .collect();
    let ty: Vec<bool> = train_idx.iter().map(|&i| y[i]).collect();
    let cfg = TrainConfig {
        booster: TrainParams {
            engine,
            ..TrainParams::default()
        },
        ..TrainConfig::default()
    };
    let fitted = fit(spec, &raws, &ty, &cfg, provenance_now(), &mut |_| {})?;
    Ok((Scorer::new(fitted.bundle).unwrap(), test_idx))
}

/// Rows (as text cells) where raising a constrained feature lowered the served probability.
fn violations(scorer: &Scorer, spec: &Spec, test: &[usize]) -> usize {
    let (_, rows, _) = german();
    let mut bad = 0;
    for name in CONSTRAINED {
        let j = spec.position(name).unwrap();
        let values: Vec<f64> = rows.iter().map(|r| r[j].parse().unwrap()).collect();
        let (lo, hi) = values
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
        let grid: Vec<String> = (0..=60)
            .map(|k| (lo + (hi - lo) * f64::from(k) / 60.0).round().to_string())
            .collect();
        for &i in test {
            let mut row = rows[i].clone();
            let mut last = f64::MIN;
            for v in &grid {
                row[j] = v.clone();
                let raws: Vec<Raw> = row.iter().map(|c| Raw::from_cell(c)).collect();
                let p = scorer.score(&raws, false).unwrap().default_probability;
                if p < last {
                    bad += 1;
                    break;
                }
                last = p;
            }
        }
    }
    bad
}

#[test]
fn constrained_features_never_lower_the_served_probability_as_they_rise() {
    let spec = constrained_spec();
    let (scorer, test) = train(&spec, Engine::Hist).unwrap();
    assert_eq!(violations(&scorer, &spec, &test), 0);
    // The same check finds violations in a model trained without the constraints.
    let (free_spec, _, _) = german();
    let (free, _) = train(&free_spec, Engine::Hist).unwrap();
    assert!(
        violations(&free, &spec, &test) > 0,
        "the check must be able to fail"
    );
}

#[test]
fn constrained_features_are_cited_only_on_their_side_of_the_mean() {
    let spec = constrained_spec();
    let (scorer, test) = train(&spec, Engine::Hist).unwrap();
    let (_, rows, _) = german();
    let mut encoded = vec![0.0f32; scorer.preprocessor().width()];
    let mut cited = 0;
    for &i in &test {
        let raws: Vec<Raw> = rows[i].iter().map(|c| Raw::from_cell(c)).collect();
        let s = scorer.score(&raws, true).unwrap();
        scorer
            .preprocessor()
            .transform(&raws, &mut encoded)
            .unwrap();
        for r in &s.reasons {
            if let Some(j) = CONSTRAINED.iter().find(|n| **n == r.feature) {
                let j = spec.position(j).unwrap();
                let col = scorer.preprocessor().feature_columns(j).start;
                assert!(
                    encoded[col] > 0.0,
                    "row {i}: {} cited below its mean",
                    r.feature
                );
                cited += 1;
            }
        }
    }
    assert!(
        cited > 0,
        "the constrained features are reasons for someone"
    );
}

#[test]
fn the_gbdt_engine_refuses_monotone_constraints() {
    let spec = constrained_spec();
    let err = train(&spec, Engine::Gbdt).err().unwrap().to_string();
    assert!(err.contains("monotone"), "{err}");
}

/// The hist engine bins like XGBoost: on German credit's training part (split seed 42, encoded
/// by our preprocessor) its cut points equal those XGBoost 3.2 computes with `max_bin=256`
/// (fixture from `QuantileDMatrix.get_quantile_cut()`), column by column.
#[test]
fn bins_are_xgboosts_on_german_credit() {
    let (spec, rows, y) = german();
    let (train_idx, _) = stratified_split(&y, 0.2, 42).unwrap();
    let raws: Vec<Vec<Raw>> = train_idx
        .iter()
        .map(|&i| rows[i].iter().map(|c| Raw::from_cell(c)).collect())
        .collect();
    let pre = features::Preprocessor::fit(&spec, &raws).unwrap();
    let x = model::pipeline::encode_rows(&pre, &raws).unwrap();
    let binned = model::hist::Binned::fit(&x, pre.width(), 256);
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/xgboost_cuts_german.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let want = fixture["cuts"].as_array().unwrap();
    assert_eq!(want.len(), pre.width());
    for (f, (ours, theirs)) in binned.cuts().iter().zip(want).enumerate() {
        let theirs: Vec<f32> = theirs
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(ours, &theirs, "column {f} ({})", pre.columns[f].name);
    }
}

/// A whole default fit (SMOTE, three calibration folds, thresholds) gives the same model on one
/// thread as on three: trees, preprocessing, calibration and thresholds, byte for byte.
#[test]
fn a_default_fit_is_the_same_on_any_number_of_threads() {
    let (spec, rows, y) = german();
    let raws: Vec<Vec<Raw>> = rows
        .iter()
        .map(|r| r.iter().map(|c| Raw::from_cell(c)).collect())
        .collect();
    let fit_on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let b = pool.install(|| {
            fit(
                &spec,
                &raws,
                &y,
                &TrainConfig::default(),
                provenance_now(),
                &mut |_| {},
            )
            .unwrap()
            .bundle
        });
        serde_json::to_string(&(
            &b.ensemble,
            &b.preprocessor,
            &b.calibration,
            &b.thresholds,
            &b.score_distribution,
        ))
        .unwrap()
    };
    let one = fit_on(1);
    assert_eq!(one, fit_on(3));
    assert!(
        one.contains("keep_missing"),
        "a hist model keeps missing values"
    );
}
