//! Drift on German credit: training stores the baseline in the bundle, held-out applicants read
//! as stable, and a population whose credit amounts and durations have moved is flagged on
//! exactly those features (the others' PSI does not change).

mod common;
use common::german;

use features::Raw;
use model::drift::{Level, Monitor, Report, PSI_ACT, PSI_WATCH};
use model::pipeline::{fit, provenance_now, stratified_split, TrainConfig};
use model::{Bundle, Scorer};

const MOVED: [&str; 2] = ["credit_amount", "duration_in_month"];

fn trained() -> (Bundle, Vec<usize>) {
    let (spec, rows, y) = german();
    let (train_idx, test_idx) = stratified_split(&y, 0.2, 42).unwrap();
    let raws: Vec<Vec<Raw>> = train_idx
        .iter()
        .map(|&i| rows[i].iter().map(|c| Raw::from_cell(c)).collect())
        .collect();
    let ty: Vec<bool> = train_idx.iter().map(|&i| y[i]).collect();
    let cfg = TrainConfig::default();
    let fitted = fit(&spec, &raws, &ty, &cfg, provenance_now(), &mut |_| {}).unwrap();
    (fitted.bundle, test_idx)
}

/// Scores `rows` (text cells in spec order) and counts them in a fresh window.
fn watch(bundle: &Bundle, rows: &[Vec<String>]) -> Report {
    let scorer = Scorer::new(bundle.clone()).unwrap();
    let baseline = bundle
        .drift_baseline
        .as_ref()
        .expect("a trained bundle has a baseline");
    let monitor = Monitor::new(baseline, 10_000);
    for r in rows {
        let raws: Vec<Raw> = r.iter().map(|c| Raw::from_cell(c)).collect();
        let p = scorer.score(&raws, false).unwrap().default_probability;
        monitor.observe(&bundle.spec, &raws, p);
    }
    monitor.report()
}

#[test]
fn the_baseline_is_in_the_bundle_and_covers_the_score_and_every_model_input() {
    let (bundle, _) = trained();
    let b = bundle.drift_baseline.as_ref().expect("a baseline");
    assert_eq!(b.rows, 800);
    let inputs: Vec<&str> = bundle
        .spec
        .features
        .iter()
        .filter(|f| f.is_model_input())
        .map(|f| f.name.as_str())
        .collect();
    let covered: Vec<&str> = b.features.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        covered, inputs,
        "every model input, in spec order, protected ones left out"
    );
    for d in std::iter::once(&b.score).chain(b.features.iter().map(|f| &f.dist)) {
        let sum: f64 = d.proportions.iter().sum();
        assert!((sum - 1.0).abs() < 1e-9, "{sum}");
        assert_eq!(d.proportions.len(), d.bins.len());
    }
    // Deciles of the score: ten bins (and the missing one, empty).
    assert_eq!(b.score.bins.len(), 11);
    assert_eq!(*b.score.proportions.last().unwrap(), 0.0);
    for p in &b.score.proportions[..10] {
        assert!((p - 0.1).abs() < 0.02, "{:?}", b.score.proportions);
    }

    // Saved and loaded as it was; a baseline that disagrees with its spec is refused.
    let dir = tempfile::tempdir().unwrap();
    bundle.save(dir.path()).unwrap();
    let loaded = Bundle::load(dir.path()).unwrap();
    assert_eq!(loaded.drift_baseline, bundle.drift_baseline);
    let mut broken = bundle.clone();
    broken.drift_baseline.as_mut().unwrap().features[0]
        .dist
        .proportions
        .pop();
    let err = broken.check().unwrap_err().to_string();
    assert!(err.contains("drift baseline"), "{err}");
}

#[test]
fn held_out_applicants_are_stable_and_a_moved_population_is_flagged_on_what_moved() {
    let (bundle, test) = trained();
    let (spec, rows, _) = german();
    let held: Vec<Vec<String>> = test.iter().map(|&i| rows[i].clone()).collect();
    let same = watch(&bundle, &held);
    assert_eq!(same.window, 200);
    for (name, p) in &same.features {
        assert!(p.psi < PSI_ACT, "{name}: {}", p.psi);
    }
    assert!(same.score.psi < PSI_WATCH, "score: {}", same.score.psi);

    // The same applicants asking for three times the amount over two more years.
    let moved: Vec<Vec<String>> = held
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let a = spec.position("credit_amount").unwrap();
            r[a] = (r[a].parse::<f64>().unwrap() * 3.0).to_string();
            let d = spec.position("duration_in_month").unwrap();
            r[d] = (r[d].parse::<f64>().unwrap() + 24.0).to_string();
            r
        })
        .collect();
    let shifted = watch(&bundle, &moved);
    for (name, p) in &shifted.features {
        if MOVED.contains(&name.as_str()) {
            assert!(p.psi > PSI_ACT, "{name}: {}", p.psi);
            assert_eq!(p.level, Level::Act);
        } else {
            assert_eq!(p.psi, same.features[name].psi, "{name} did not move");
        }
    }
    assert!(
        shifted.score.psi > same.score.psi,
        "longer, larger loans move the score: {} vs {}",
        shifted.score.psi,
        same.score.psi
    );
    // The shares behind it: the top bin of the amount holds far more than in training.
    let top = shifted.features["credit_amount"].bins[9].clone();
    assert!(top.actual > 3.0 * top.expected, "{top:?}");
}

#[test]
fn a_baseline_whose_categories_are_out_of_order_or_not_in_the_spec_is_refused() {
    // Binning looks a category up by binary search and trusts it to be one the spec allows.
    let (bundle, _) = trained();
    fn categories(b: &mut Bundle) -> &mut Vec<String> {
        let f = b
            .drift_baseline
            .as_mut()
            .unwrap()
            .features
            .iter_mut()
            .find(|f| f.name == "purpose")
            .unwrap();
        match &mut f.dist.bins {
            model::drift::Bins::Categorical { categories } => categories,
            other => panic!("purpose is categorical: {other:?}"),
        }
    }
    bundle.check().expect("as trained");
    let mut reversed = bundle.clone();
    categories(&mut reversed).reverse();
    let err = reversed.check().unwrap_err().to_string();
    assert!(
        err.contains("'purpose'") && err.contains("out of order"),
        "{err}"
    );
    let mut foreign = bundle.clone();
    *categories(&mut foreign).last_mut().unwrap() = "zzz not in the spec".into();
    let err = foreign.check().unwrap_err().to_string();
    assert!(err.contains("zzz not in the spec"), "{err}");
}

#[test]
fn a_value_is_binned_as_validation_reads_it() {
    // Every kind of value of every input, valid or not, under both invalid-value policies: its
    // bin is the one its validated value falls in, and missing when it does not validate.
    let (bundle, _) = trained();
    let (spec, rows, _) = german();
    let baseline = bundle.drift_baseline.as_ref().unwrap();
    for policy in [
        features::InvalidPolicy::Reject,
        features::InvalidPolicy::Missing,
    ] {
        let mut spec = spec.clone();
        for f in &mut spec.features {
            f.on_invalid = policy;
        }
        let odd = [
            "",
            "zzz",
            "-1",
            "1e999",
            "true",
            "radio/television ",
            " 12 ",
        ];
        // Each of a few rows as it is, then with each value replaced by each odd one in turn.
        let mut cases: Vec<Vec<String>> = Vec::new();
        for row in rows.iter().take(5) {
            cases.push(row.clone());
            for j in 0..row.len() {
                for o in odd {
                    let mut cells = row.clone();
                    cells[j] = o.to_string();
                    cases.push(cells);
                }
            }
        }
        for cells in &cases {
            let raws: Vec<Raw> = cells.iter().map(|c| Raw::from_cell(c)).collect();
            let mut slots = vec![0u16; baseline.width()];
            baseline.bin(&spec, &raws, 0.5, &mut slots);
            for (k, f) in baseline.features.iter().enumerate() {
                let v = features::clean(&spec.features[f.index], raws[f.index])
                    .unwrap_or(features::Clean::Missing);
                assert_eq!(
                    usize::from(slots[k + 1]),
                    f.dist.bins.of_value(v),
                    "{} = {:?} under {policy:?}",
                    f.name,
                    raws[f.index]
                );
            }
        }
    }
}
