//! `loanctl` run as a user runs it: real files in a temporary folder, the real binary.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn data() -> PathBuf {
    repo().join("data/german_credit.csv")
}

fn spec() -> PathBuf {
    repo().join("data/german_credit.spec.json")
}

fn loanctl() -> Command {
    Command::cargo_bin("loanctl").unwrap()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Trains with the default settings once per test binary run and returns the output folder.
fn trained() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = loanctl()
            .args(["train", "--data"])
            .arg(data())
            .arg("--spec")
            .arg(spec())
            .arg("--out")
            .arg(dir.path().join("gc"))
            .arg("--compare-no-smote")
            .output()
            .unwrap();
        assert!(out.status.success(), "train failed: {}", stderr_of(&out));
        dir
    })
    .path()
}

#[test]
fn train_writes_bundle_report_and_plots_and_meets_the_quality_bar() {
    let out = trained().join("gc");
    for f in [
        "model/MLmodel",
        "model/model.json",
        "report.json",
        "report.md",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    for png in [
        "roc.png",
        "precision_recall.png",
        "calibration.png",
        "score_distribution.png",
    ] {
        let bytes = std::fs::read(out.join(png)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{png} is not a PNG");
        assert!(bytes.len() > 5_000, "{png} looks empty");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let auc = report["evaluation"]["metrics"]["roc_auc"].as_f64().unwrap();
    assert!(auc >= 0.78, "test ROC AUC {auc} below 0.78");
    assert_eq!(report["data"]["test_rows"], 200);
    // SMOTE must not cost calibration once the calibration step is applied.
    let brier = report["evaluation"]["calibration_check"]["brier_calibrated"]
        .as_f64()
        .unwrap();
    let brier_plain = report["without_smote"]["evaluation"]["calibration_check"]
        ["brier_calibrated"]
        .as_f64()
        .unwrap();
    assert!(
        brier <= brier_plain,
        "calibrated Brier with SMOTE {brier} worse than without {brier_plain}"
    );
    let fairness = report["evaluation"]["fairness"].as_array().unwrap();
    let names: Vec<&str> = fairness
        .iter()
        .map(|f| f["feature"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["personal_status_and_sex", "foreign_worker"]);
    let mlmodel = std::fs::read_to_string(out.join("model/MLmodel")).unwrap();
    assert!(
        mlmodel.contains("loan_default:")
            && mlmodel.contains("signature:")
            && mlmodel.contains("model_uuid:")
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("ROC AUC") && md.contains("SMOTE vs no SMOTE") && md.contains("adverse impact")
    );
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let mut trees = Vec::new();
    for run in ["a", "b"] {
        let out = loanctl()
            .args(["train", "--trees", "30", "--data"])
            .arg(data())
            .arg("--spec")
            .arg(spec())
            .arg("--out")
            .arg(dir.path().join(run))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        let bundle: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(run).join("model/model.json")).unwrap(),
        )
        .unwrap();
        trees.push((
            bundle["ensemble"].clone(),
            bundle["calibration"].clone(),
            bundle["thresholds"].clone(),
        ));
    }
    assert_eq!(trees[0], trees[1]);
}

/// Writes the German data with an id column in front, one row broken.
fn applications(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(data()).unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 {
            out.push_str(&format!("application_id,{line}\n"));
        } else if i == 3 {
            // duration_in_month is the second column of the original file.
            let mut cells: Vec<String> = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(line.as_bytes())
                .records()
                .next()
                .unwrap()
                .unwrap()
                .iter()
                .map(String::from)
                .collect();
            cells[1] = "twelve".into();
            let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
            w.write_record(&cells).unwrap();
            let row = String::from_utf8(w.into_inner().unwrap()).unwrap();
            out.push_str(&format!("APP-{i:04},{row}"));
        } else {
            out.push_str(&format!("APP-{i:04},{line}\n"));
        }
    }
    let path = dir.join("applications.csv");
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn score_passes_ids_through_matches_the_scorer_and_reports_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = applications(dir.path());
    let scored = dir.path().join("scored.csv");
    let out = loanctl()
        .args(["score", "--model"])
        .arg(trained().join("gc"))
        .arg("--data")
        .arg(&input)
        .arg("--out")
        .arg(&scored)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("scored 999 rows, rejected 1"),
        "{}",
        stderr_of(&out)
    );
    let mut rdr = csv::Reader::from_path(&scored).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let cols: Vec<&str> = headers.iter().collect();
    assert_eq!(cols[0], "application_id");
    assert!(
        !cols.contains(&"creditability"),
        "the label column must not be copied"
    );
    assert!(
        !cols.contains(&"duration_in_month"),
        "model features are not copied"
    );
    assert_eq!(
        &cols[cols.len() - 7..],
        [
            "default_probability",
            "decision",
            "reason_1",
            "reason_2",
            "reason_3",
            "reason_4",
            "error"
        ]
    );
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1000, "every input row has an output row");

    // Compare with the library's Scorer on the same rows.
    let bundle = model::Bundle::load(&trained().join("gc/model")).unwrap();
    let scorer = model::Scorer::new(bundle).unwrap();
    let spec = scorer.bundle().spec.clone();
    let mut inp = csv::Reader::from_path(&input).unwrap();
    let in_headers = inp.headers().unwrap().clone();
    let pos: Vec<usize> = spec
        .features
        .iter()
        .map(|f| in_headers.iter().position(|h| h == f.name).unwrap())
        .collect();
    let p_col = cols
        .iter()
        .position(|c| *c == "default_probability")
        .unwrap();
    for (i, (rec, got)) in inp.records().map(Result::unwrap).zip(&rows).enumerate() {
        assert_eq!(&rec[0], &got[0], "ids stay in order");
        let raws: Vec<features::Raw> = pos
            .iter()
            .map(|&c| features::Raw::from_cell(&rec[c]))
            .collect();
        match scorer.score(&raws, true) {
            Ok(s) => {
                let p: f64 = got[p_col].parse().unwrap();
                assert!((p - s.default_probability).abs() < 1e-6, "row {i}");
                assert_eq!(&got[p_col + 1], s.decision.as_str());
                assert_eq!(
                    &got[p_col + 2],
                    s.reasons.first().map_or("", |r| r.feature.as_str())
                );
                assert!(got[p_col + 6].is_empty());
            }
            Err(_) => {
                assert!(got[p_col].is_empty());
                let err = &got[p_col + 6];
                assert!(
                    err.contains("line 4")
                        && err.contains("duration_in_month")
                        && err.contains("twelve"),
                    "{err}"
                );
            }
        }
    }
    for r in &rows {
        for c in p_col + 2..p_col + 6 {
            assert!(
                r[c] != *"personal_status_and_sex" && r[c] != *"foreign_worker",
                "protected feature cited"
            );
        }
    }
}

#[test]
fn evaluate_prints_tables_or_json() {
    let out = loanctl()
        .args(["evaluate", "--json", "--model"])
        .arg(trained().join("gc"))
        .arg("--data")
        .arg(data())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let auc = v["evaluation"]["metrics"]["roc_auc"].as_f64().unwrap();
    assert!(auc > 0.78 && auc <= 1.0);
    assert_eq!(v["evaluation"]["metrics"]["rows"], 1000);
    let out = loanctl()
        .args(["evaluate", "--model"])
        .arg(trained().join("gc"))
        .arg("--data")
        .arg(data())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("| ROC AUC |") && text.contains("Calibration"),
        "{text}"
    );
}

#[test]
fn spec_infer_drafts_a_spec_that_trains() {
    let out = loanctl()
        .args([
            "spec",
            "infer",
            "--target",
            "creditability",
            "--positive",
            "bad",
            "--data",
        ])
        .arg(data())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let spec = features::Spec::from_json(std::str::from_utf8(&out.stdout).unwrap()).unwrap();
    assert_eq!(spec.features.len(), 20);
    assert_eq!(spec.target.positive, "bad");
    let f = spec.features.iter().find(|f| f.name == "purpose").unwrap();
    assert_eq!(f.kind, features::FeatureKind::Categorical);
    let f = spec
        .features
        .iter()
        .find(|f| f.name == "credit_amount")
        .unwrap();
    assert_eq!(f.kind, features::FeatureKind::Numeric);
}

#[test]
fn clear_errors_for_missing_columns_bad_values_and_missing_models() {
    let dir = tempfile::tempdir().unwrap();
    // A required column dropped.
    let text = std::fs::read_to_string(data()).unwrap();
    let dropped: String = text
        .lines()
        .map(|l| {
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(l.as_bytes());
            let rec = r.records().next().unwrap().unwrap();
            let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
            w.write_record(rec.iter().skip(1)).unwrap();
            String::from_utf8(w.into_inner().unwrap()).unwrap()
        })
        .collect();
    let path = dir.path().join("dropped.csv");
    std::fs::write(&path, dropped).unwrap();
    let out = loanctl()
        .args(["train", "--data"])
        .arg(&path)
        .arg("--spec")
        .arg(spec())
        .arg("--out")
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("status_of_existing_checking_account"),
        "{}",
        stderr_of(&out)
    );

    // A bad value: the line and the column are named.
    let bad = applications(dir.path());
    let out = loanctl()
        .args(["train", "--data"])
        .arg(&bad)
        .arg("--spec")
        .arg(spec())
        .arg("--out")
        .arg(dir.path().join("y"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("line 4") && err.contains("column 'duration_in_month'"),
        "{err}"
    );

    let out = loanctl()
        .args(["score", "--model"])
        .arg(dir.path())
        .arg("--data")
        .arg(data())
        .arg("--out")
        .arg(dir.path().join("s.csv"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("no model bundle"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn imported_xgboost_model_scores_like_xgboost() {
    let fixtures = repo().join("libs/model/tests/fixtures/xgboost");
    let dir = tempfile::tempdir().unwrap();
    let out = loanctl()
        .args([
            "import-xgboost",
            "--approve-below",
            "0.2",
            "--decline-at",
            "0.5",
            "--model",
        ])
        .arg(fixtures.join("model.json"))
        .arg("--spec")
        .arg(fixtures.join("spec.json"))
        .arg("--out")
        .arg(dir.path().join("xgb"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let scored = dir.path().join("scored.csv");
    let out = loanctl()
        .args(["score", "--model"])
        .arg(dir.path().join("xgb"))
        .arg("--data")
        .arg(fixtures.join("cases.csv"))
        .arg("--out")
        .arg(&scored)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("cases.json")).unwrap()).unwrap();
    let mut rdr = csv::Reader::from_path(&scored).unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    let cases = cases["cases"].as_array().unwrap();
    assert_eq!(rows.len(), cases.len());
    for (r, c) in rows.iter().zip(cases) {
        let p: f64 = r[1].parse().unwrap();
        let want = c["probability"].as_f64().unwrap();
        assert!((p - want).abs() < 1e-5, "{} vs {want}", &r[1]);
    }
    // Without thresholds or data, import refuses with a useful message.
    let out = loanctl()
        .args(["import-xgboost", "--model"])
        .arg(fixtures.join("model.json"))
        .arg("--spec")
        .arg(fixtures.join("spec.json"))
        .arg("--out")
        .arg(dir.path().join("none"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("--approve-below"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn generate_is_seeded() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.csv", "b.csv"] {
        let out = loanctl()
            .args(["generate", "--rows", "500", "--like"])
            .arg(data())
            .arg("--out")
            .arg(dir.path().join(name))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    }
    let a = std::fs::read(dir.path().join("a.csv")).unwrap();
    assert_eq!(a, std::fs::read(dir.path().join("b.csv")).unwrap());
    assert_eq!(a.iter().filter(|b| **b == b'\n').count(), 501);
}

#[test]
fn hash_password_reads_stdin_and_prints_a_users_line_the_registry_accepts() {
    let out = loanctl()
        .args(["registry", "hash-password", "--user", "ds"])
        .write_stdin("correct horse battery\n")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("ds:$argon2id$"), "{line}");
    assert!(!line.contains("correct horse"));
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, &line).unwrap();
    let auth = model_registry::auth::Auth::load(&model_registry::auth::AuthFiles {
        users: Some(&users),
        ..Default::default()
    })
    .unwrap()
    .unwrap();
    use base64::Engine as _;
    let basic = |pw: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("ds:{pw}"))
        )
    };
    assert!(auth
        .authenticate(Some(&basic("correct horse battery")))
        .is_some());
    assert!(auth.authenticate(Some(&basic("correct horse"))).is_none());
    // No password, no hash.
    let empty = loanctl()
        .args(["registry", "hash-password"])
        .write_stdin("")
        .output()
        .unwrap();
    assert!(!empty.status.success());
    assert!(stderr_of(&empty).contains("empty"), "{}", stderr_of(&empty));
}

/// `data/german_credit.csv` with `credit_amount` multiplied by `factor`.
fn german_with_amounts_times(dir: &Path, factor: f64) -> PathBuf {
    let mut rdr = csv::Reader::from_path(data()).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let a = headers.iter().position(|h| h == "credit_amount").unwrap();
    let path = dir.join(format!("amounts-x{factor}.csv"));
    let mut w = csv::Writer::from_path(&path).unwrap();
    w.write_record(&headers).unwrap();
    for rec in rdr.records() {
        let rec = rec.unwrap();
        let row: Vec<String> = rec
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if i == a {
                    (v.parse::<f64>().unwrap() * factor).to_string()
                } else {
                    v.to_string()
                }
            })
            .collect();
        w.write_record(&row).unwrap();
    }
    w.flush().unwrap();
    path
}

fn drift_json(model: &Path, data: &Path, out: &Path) -> serde_json::Value {
    let run = loanctl()
        .args(["drift", "--json", "--model"])
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr_of(&run));
    serde_json::from_slice(&run.stdout).unwrap()
}

#[test]
fn drift_reads_the_training_data_as_stable_and_flags_moved_amounts_with_a_plot() {
    let model = trained().join("gc");
    let dir = tempfile::tempdir().unwrap();
    let same = drift_json(&model, &data(), &dir.path().join("same"));
    assert_eq!(same["window"], 1000);
    for (name, p) in same["features"].as_object().unwrap() {
        assert!(p["psi"].as_f64().unwrap() < 0.1, "{name}: {}", p["psi"]);
    }
    assert!(
        same["score"]["psi"].as_f64().unwrap() < 0.1,
        "{}",
        same["score"]
    );
    assert!(dir.path().join("same/drift.md").is_file());
    assert!(!dir.path().join("same/drift_credit_amount.png").exists());

    let moved = german_with_amounts_times(dir.path(), 3.0);
    let report = drift_json(&model, &moved, &dir.path().join("moved"));
    let amount = &report["features"]["credit_amount"];
    assert!(amount["psi"].as_f64().unwrap() > 0.25, "{amount}");
    assert_eq!(amount["level"], "act");
    assert_eq!(
        report["features"]["purpose"]["psi"], same["features"]["purpose"]["psi"],
        "what did not move reads the same"
    );
    let png = dir.path().join("moved/drift_credit_amount.png");
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let md = std::fs::read_to_string(dir.path().join("moved/drift.md")).unwrap();
    assert!(
        md.contains("| credit_amount |") && md.contains("drift_credit_amount.png"),
        "{md}"
    );

    // The table, most drifted first.
    let run = loanctl()
        .args(["drift", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&moved)
        .arg("--out")
        .arg(dir.path().join("table"))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr_of(&run));
    let table = String::from_utf8_lossy(&run.stdout).to_string();
    let first = table.lines().nth(1).unwrap_or_default();
    assert!(
        first.starts_with("credit_amount") && first.ends_with("act"),
        "{table}"
    );
}

#[test]
fn an_xgboost_import_gets_its_drift_baseline_from_data() {
    let fixtures = repo().join("libs/model/tests/fixtures/xgboost");
    let dir = tempfile::tempdir().unwrap();
    // The fixture's cases, labelled (by XGBoost's own probability) so that --data takes them.
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("cases.json")).unwrap()).unwrap();
    let mut rdr = csv::Reader::from_path(fixtures.join("cases.csv")).unwrap();
    let labelled = dir.path().join("labelled.csv");
    let mut w = csv::Writer::from_path(&labelled).unwrap();
    let mut header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    header.push("default".into());
    w.write_record(&header).unwrap();
    for (rec, c) in rdr.records().zip(cases["cases"].as_array().unwrap()) {
        let mut row: Vec<String> = rec.unwrap().iter().map(String::from).collect();
        row.push(
            if c["probability"].as_f64().unwrap() >= 0.5 {
                "1"
            } else {
                "0"
            }
            .into(),
        );
        w.write_record(&row).unwrap();
    }
    w.flush().unwrap();
    let import = |out: &str, extra: &[&str]| {
        let run = loanctl()
            .args(["import-xgboost", "--model"])
            .arg(fixtures.join("model.json"))
            .arg("--spec")
            .arg(fixtures.join("spec.json"))
            .arg("--out")
            .arg(dir.path().join(out))
            .args(extra)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", stderr_of(&run));
        stderr_of(&run)
    };
    import("with", &["--data", labelled.to_str().unwrap()]);
    let report = drift_json(&dir.path().join("with"), &labelled, &dir.path().join("r"));
    assert_eq!(report["window"], 40);
    assert!(
        report["features"]["loan_amount"]["psi"].as_f64().unwrap() < 1e-9,
        "{report}"
    );

    // With thresholds alone there is no baseline, and both commands say so.
    let said = import(
        "without",
        &["--approve-below", "0.2", "--decline-at", "0.5"],
    );
    assert!(said.contains("no drift baseline"), "{said}");
    let run = loanctl()
        .args(["drift", "--model"])
        .arg(dir.path().join("without"))
        .arg("--data")
        .arg(&labelled)
        .arg("--out")
        .arg(dir.path().join("r2"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(stderr_of(&run).contains("--data"), "{}", stderr_of(&run));
}
