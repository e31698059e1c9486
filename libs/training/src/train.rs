//! Training: split, fit, calibrate, evaluate; the bundle, report and plots; optionally the run
//! logged to the registry and the model registered.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use features::Raw;
use model::pipeline::{fit, provenance_now, stratified_split, Progress, TrainConfig};
use model::report::{evaluate, Evaluation};
use model::Scorer;
use serde_json::json;

pub use crate::register::Registered;
use crate::table::read_labelled;

/// A training: where it reads and writes, the model recipe, and where it registers. A plain
/// struct: `loanctl train` fills it from its flags, training jobs from their settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Labelled CSV of past applications.
    pub data: PathBuf,
    /// Feature spec (JSON).
    pub spec: PathBuf,
    /// Output folder: model/ (the bundle), report.json, report.md and plots.
    pub out: PathBuf,
    /// Share of rows held out for evaluation (stratified).
    pub test_fraction: f64,
    /// Seed of the split (the recipe's booster and SMOTE carry their own).
    pub seed: u64,
    /// Booster, balancing (SMOTE or none), calibration folds, thresholds and reasons.
    pub model: TrainConfig,
    /// Also train without SMOTE and report both calibrations side by side.
    pub compare_no_smote: bool,
    /// Log the run to a registry and register the model there.
    pub registry: Option<Registry>,
}

/// Where a trained model is logged and registered.
#[derive(Debug, Clone)]
pub struct Registry {
    /// The MLflow tracking URI. Credentials come from MLFLOW_TRACKING_USERNAME/PASSWORD or
    /// MLFLOW_TRACKING_TOKEN.
    pub url: String,
    pub experiment: String,
    /// Registered model name for the new version.
    pub register_as: String,
    /// Alias to move to the new version (none for training jobs: promotion stays a human call).
    pub alias: Option<String>,
    /// What the run's `mlflow.source.name` tag says started it.
    pub source: String,
    /// The training job this is (tagged on the run and the version), if any.
    pub job_id: Option<String>,
}

impl Config {
    /// The default recipe on these files, seed 42 everywhere, a fifth held out, no registry.
    pub fn new(data: PathBuf, spec: PathBuf, out: PathBuf) -> Config {
        Config {
            data,
            spec,
            out,
            test_fraction: 0.2,
            seed: 42,
            model: TrainConfig::default(),
            compare_no_smote: false,
            registry: None,
        }
    }
}

/// What a training tells its caller while it runs.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A line for a person (row counts, files written, why SMOTE was skipped). Never row values.
    Note(&'a str),
    /// Trees built so far in a stage ("training", "no SMOTE") of its total.
    Trees {
        stage: &'a str,
        done: usize,
        total: usize,
    },
    /// A stage is over.
    StageDone(&'a str),
}

/// What a training produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Trained {
    pub model_uuid: String,
    /// Held-out metrics: test_roc_auc, test_pr_auc, test_ks, test_brier, test_log_loss, rows.
    pub metrics: serde_json::Value,
    pub training_seconds: f64,
    /// The run and version, when logged to a registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered: Option<Registered>,
    /// The training report (Markdown), also written to `report.md`.
    #[serde(skip)]
    pub report: String,
}

/// Trains with `cfg` on the training rows and evaluates on the test rows.
fn fit_and_evaluate(
    spec: &features::Spec,
    train: (&[Vec<Raw<'_>>], &[bool]),
    test: (&[Vec<Raw<'_>>], &[bool]),
    cfg: &TrainConfig,
    provenance: model::Provenance,
    stage: &str,
    on: &mut dyn FnMut(Event<'_>),
) -> Result<(model::pipeline::Fitted, Evaluation, f64)> {
    let started = Instant::now();
    let fitted = fit(spec, train.0, train.1, cfg, provenance, &mut |p| match p {
        Progress::Trees { done, total } => on(Event::Trees { stage, done, total }),
    })?;
    on(Event::StageDone(stage));
    let seconds = started.elapsed().as_secs_f64();
    let scorer = Scorer::new(fitted.bundle.clone())?;
    let eval = evaluate(&scorer, test.0, test.1)?;
    Ok((fitted, eval, seconds))
}

/// Trains as `a` says, reporting progress to `on`.
pub fn run(a: &Config, on: &mut dyn FnMut(Event<'_>)) -> Result<Trained> {
    let spec = crate::read_spec(&a.spec)?;
    let data = read_labelled(&a.data, &spec)?;
    let raws_all = data.rows();
    let (train_idx, test_idx) = stratified_split(&data.labels, a.test_fraction, a.seed)?;
    // Move each row to its side rather than copy it: at a million rows a copy is ~0.5 GB.
    let mut in_test = vec![false; raws_all.len()];
    for &i in &test_idx {
        in_test[i] = true;
    }
    let (mut train_x, mut test_x) = (
        Vec::with_capacity(train_idx.len()),
        Vec::with_capacity(test_idx.len()),
    );
    let (mut train_y, mut test_y) = (
        Vec::with_capacity(train_idx.len()),
        Vec::with_capacity(test_idx.len()),
    );
    for (i, row) in raws_all.into_iter().enumerate() {
        if in_test[i] {
            test_x.push(row);
            test_y.push(data.labels[i]);
        } else {
            train_x.push(row);
            train_y.push(data.labels[i]);
        }
    }
    on(Event::Note(&format!(
        "training on {} rows ({} defaults), holding out {} rows ({} defaults)",
        train_y.len(),
        train_y.iter().filter(|v| **v).count(),
        test_y.len(),
        test_y.iter().filter(|v| **v).count()
    )));
    let provenance = model::Provenance {
        data_sha256: Some(data.sha256.clone()),
        data_rows: Some(data.records.len()),
        ..provenance_now()
    };
    let cfg = &a.model;
    let (mut fitted, eval, seconds) = fit_and_evaluate(
        &spec,
        (&train_x, &train_y),
        (&test_x, &test_y),
        cfg,
        provenance.clone(),
        "training",
        on,
    )?;
    let baseline = if a.compare_no_smote && cfg.smote.is_some() {
        let cfg = TrainConfig {
            smote: None,
            ..cfg.clone()
        };
        Some(fit_and_evaluate(
            &spec,
            (&train_x, &train_y),
            (&test_x, &test_y),
            &cfg,
            provenance,
            "no SMOTE",
            on,
        )?)
    } else {
        None
    };
    if let Some(note) = balance_note(cfg, &fitted.balance) {
        on(Event::Note(&note));
    }
    let m = &eval.metrics;
    fitted.bundle.metrics = json!({
        "test_roc_auc": m.roc_auc,
        "test_pr_auc": m.pr_auc,
        "test_ks": m.ks,
        "test_brier": m.brier,
        "test_log_loss": m.log_loss,
        "test_rows": m.rows,
        "train_rows": train_y.len(),
    });
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let bundle_dir = a.out.join("model");
    fitted.bundle.save(&bundle_dir)?;
    let plots = crate::plots::write_all(
        &a.out,
        &eval.probabilities,
        &eval.labels,
        m.roc_auc,
        m.pr_auc,
    )?;
    let report = json!({
        "model_uuid": fitted.bundle.model_uuid,
        "data": {
            "file": a.data.display().to_string(),
            "sha256": data.sha256,
            "rows": data.records.len(),
            "train_rows": train_y.len(),
            "test_rows": test_y.len(),
            "test_fraction": a.test_fraction,
        },
        "config": cfg,
        "smote_rows_added": fitted.smote_rows,
        "balance": fitted.balance,
        "thresholds": fitted.bundle.thresholds,
        "calibration": fitted.bundle.calibration,
        "training_seconds": seconds,
        "evaluation": eval,
        "without_smote": baseline.as_ref().map(|(_, e, s)| json!({"evaluation": e, "training_seconds": s})),
        "plots": plots,
    });
    std::fs::write(
        a.out.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    let md = markdown(
        a,
        &fitted,
        &eval,
        seconds,
        baseline.as_ref().map(|(_, e, _)| e),
    );
    std::fs::write(a.out.join("report.md"), &md)?;
    on(Event::Note(&format!(
        "wrote {} (bundle), report.json, report.md, {}",
        bundle_dir.display(),
        plots.join(", ")
    )));
    let mut registered = None;
    if let Some(r) = &a.registry {
        let params = flatten("", &serde_json::to_value(cfg)?);
        let metrics: Vec<(String, f64, i64)> = [
            ("test_roc_auc", m.roc_auc),
            ("test_pr_auc", m.pr_auc),
            ("test_ks", m.ks),
            ("test_brier", m.brier),
            ("test_log_loss", m.log_loss),
            ("test_approval_rate", approval_rate(&fitted.bundle, &eval)),
            ("training_seconds", seconds),
        ]
        .iter()
        // The registry UI compares versions on it before a promotion (none without protected
        // attributes).
        .chain(
            worst_adverse_impact_ratio(&eval)
                .map(|r| ("test_min_adverse_impact_ratio", r))
                .iter(),
        )
        .map(|(k, v)| (k.to_string(), *v, 0))
        .chain(learning_curve(&fitted.bundle, &test_x, &test_y)?)
        .collect();
        registered = Some(crate::register::log_and_register(
            &r.url,
            &crate::register::Run {
                experiment: &r.experiment,
                name: &r.register_as,
                alias: r.alias.as_deref(),
                source: &r.source,
                job_id: r.job_id.as_deref(),
            },
            &a.out,
            &params,
            &metrics,
        )?);
    }
    Ok(Trained {
        model_uuid: fitted.bundle.model_uuid.clone(),
        metrics: fitted.bundle.metrics.clone(),
        training_seconds: seconds,
        registered,
        report: md,
    })
}

/// Share of the held-out applications the model approves.
fn approval_rate(bundle: &model::Bundle, eval: &model::report::Evaluation) -> f64 {
    let approved = eval
        .probabilities
        .iter()
        .filter(|p| bundle.thresholds.decide(**p) == model::Decision::Approve)
        .count();
    approved as f64 / eval.probabilities.len().max(1) as f64
}

/// The lowest adverse impact ratio of any group of any protected attribute (held out).
fn worst_adverse_impact_ratio(eval: &model::report::Evaluation) -> Option<f64> {
    eval.fairness
        .iter()
        .flat_map(|f| &f.groups)
        .map(|g| g.adverse_impact_ratio)
        .min_by(f64::total_cmp)
}

/// Held-out log loss and ROC AUC of the uncalibrated ensemble after every twentieth of its trees,
/// as metric histories (step = trees so far) the registry charts.
fn learning_curve(
    bundle: &model::Bundle,
    rows: &[Vec<Raw<'_>>],
    labels: &[bool],
) -> Result<Vec<(String, f64, i64)>> {
    let pre = bundle.check()?;
    let width = bundle.ensemble.n_features;
    let x = model::pipeline::encode_rows(&pre, rows)?;
    let trees = &bundle.ensemble.trees;
    let every = (trees.len() / 20).max(1);
    let mut margins = vec![bundle.ensemble.base_margin; labels.len()];
    let mut out = Vec::new();
    for (i, tree) in trees.iter().enumerate() {
        for (m, row) in margins.iter_mut().zip(x.chunks_exact(width)) {
            *m += tree.nodes[tree.leaf_index(row)].value;
        }
        let done = i + 1;
        if done % every == 0 || done == trees.len() {
            let p: Vec<f64> = margins
                .iter()
                .map(|m| model::trees::sigmoid(*m as f64))
                .collect();
            let log_loss = p
                .iter()
                .zip(labels)
                .map(|(p, y)| {
                    let p = p.clamp(1e-15, 1.0 - 1e-15);
                    if *y {
                        -p.ln()
                    } else {
                        -(1.0 - p).ln()
                    }
                })
                .sum::<f64>()
                / p.len().max(1) as f64;
            out.push(("curve_test_log_loss".to_string(), log_loss, done as i64));
            out.push((
                "curve_test_roc_auc".to_string(),
                model::metrics::roc_auc(&p, labels),
                done as i64,
            ));
        }
    }
    Ok(out)
}

/// `{"booster": {"trees": 200}}` -> `booster.trees = 200`.
fn flatten(prefix: &str, v: &serde_json::Value) -> Vec<(String, String)> {
    match v {
        serde_json::Value::Object(o) => o
            .iter()
            .flat_map(|(k, v)| {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v)
            })
            .collect(),
        serde_json::Value::String(s) => vec![(prefix.to_string(), s.clone())],
        other => vec![(prefix.to_string(), other.to_string())],
    }
}

/// Why SMOTE did not run although asked for, or `None` when it ran (or was not asked for).
fn balance_note(cfg: &TrainConfig, balance: &model::pipeline::Balance) -> Option<String> {
    use model::pipeline::Balance;
    let max_minority = cfg.smote.as_ref()?.max_minority;
    match balance {
        Balance::Weights {
            minority_rows,
            scale_pos_weight,
        } => Some(format!(
            "SMOTE skipped: {minority_rows} rows of the rarer class is above \
             --smote-max-minority {max_minority}, where oversampling costs more than it gives; \
             defaults weighted by {scale_pos_weight:.3} instead (scale_pos_weight)"
        )),
        Balance::None => Some(format!(
            "SMOTE skipped: the rarer class is above --smote-max-minority {max_minority}, and \
             the gbdt engine cannot weight classes; trained on the data as it is"
        )),
        Balance::Smote { .. } => None,
    }
}

fn markdown(
    a: &Config,
    fitted: &model::pipeline::Fitted,
    eval: &Evaluation,
    seconds: f64,
    baseline: Option<&Evaluation>,
) -> String {
    let b = &fitted.bundle;
    let t = &b.thresholds;
    let p = &a.model.booster;
    let mut s = format!(
        "# Training report\n\nModel `{}` trained on `{}` ({} rows, SHA-256 `{}`) in {:.1} s.\n\n\
         Settings: engine {}, {} trees, depth {}, learning rate {}, min leaf {}, bins {}, seed {}; {}; \
         Platt calibration fitted out of fold ({} folds): a = {:.4}, b = {:.4}.\n\n\
         Decisions: approve below {:.4}, review from {:.4}, decline at or above {:.4} (rule {:?}, review recall {}).\n\n",
        b.model_uuid,
        a.data.display(),
        b.provenance.data_rows.unwrap_or(0),
        b.provenance.data_sha256.as_deref().unwrap_or(""),
        seconds,
        p.engine.as_str(),
        p.trees,
        p.max_depth,
        p.learning_rate,
        p.min_leaf,
        p.bins,
        p.seed,
        match (&a.model.smote, &fitted.balance) {
            (None, _) => "no SMOTE".to_string(),
            (Some(smote), model::pipeline::Balance::Smote { rows }) => format!(
                "SMOTE-NC k = {} to ratio {} (+{rows} synthetic rows)",
                smote.k, smote.ratio
            ),
            _ => balance_note(&a.model, &fitted.balance).unwrap_or_default(),
        },
        a.model.calibration_folds,
        b.calibration.a,
        b.calibration.b,
        t.approve,
        t.approve,
        t.decline,
        t.rule,
        t.review_recall,
    );
    s.push_str(&eval.to_markdown());
    if let Some(base) = baseline {
        s.push_str(&format!(
            "\n## SMOTE vs no SMOTE (same split, same settings)\n\n| model | ROC AUC | Brier (calibrated) | Brier (uncalibrated) | log loss (calibrated) |\n| --- | --- | --- | --- | --- |\n| SMOTE | {:.4} | {:.4} | {:.4} | {:.4} |\n| no SMOTE | {:.4} | {:.4} | {:.4} | {:.4} |\n",
            eval.metrics.roc_auc,
            eval.calibration_check.brier_calibrated,
            eval.calibration_check.brier_uncalibrated,
            eval.calibration_check.log_loss_calibrated,
            base.metrics.roc_auc,
            base.calibration_check.brier_calibrated,
            base.calibration_check.brier_uncalibrated,
            base.calibration_check.log_loss_calibrated,
        ));
    }
    s.push_str("\n## Plots\n\n![ROC](roc.png)\n![Precision-recall](precision_recall.png)\n![Calibration](calibration.png)\n![Score distribution](score_distribution.png)\n");
    s
}
