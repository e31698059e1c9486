//! Training: split, fit, calibrate, evaluate; the bundle, report and plots; optionally the run
//! logged to the registry and the model registered.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use features::Raw;
use model::pipeline::{fit, provenance_now, stratified_split, Progress, TrainConfig};
use model::report::{evaluate, Evaluation};
use model::smote::SmoteParams;
use model::train::TrainParams;
use model::{Scorer, ThresholdRule};
use serde_json::json;

pub use crate::register::Registered;
use crate::table::read_labelled;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Labelled CSV of past applications.
    #[arg(long)]
    pub data: PathBuf,
    /// Feature spec (JSON).
    #[arg(long)]
    pub spec: PathBuf,
    /// Output folder: model/ (the bundle), report.json, report.md and plots.
    #[arg(long)]
    pub out: PathBuf,
    /// Share of rows held out for evaluation (stratified).
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Seed for the split, SMOTE, folds and subsampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Tree learner: hist (histogram boosting, XGBoost's objective, missing-value directions,
    /// monotone constraints) or gbdt (the `gbdt` crate, exact splits).
    #[arg(long, default_value = "hist", value_parser = ["hist", "gbdt"])]
    pub engine: String,
    #[arg(long, default_value_t = 200)]
    pub trees: usize,
    #[arg(long, default_value_t = 4)]
    pub max_depth: u32,
    #[arg(long, default_value_t = 0.05)]
    pub learning_rate: f32,
    /// Minimum rows per leaf (gbdt engine).
    #[arg(long, default_value_t = 5)]
    pub min_leaf: usize,
    /// L2 penalty on leaf weights (hist engine; XGBoost's lambda).
    #[arg(long, default_value_t = 1.0)]
    pub lambda: f64,
    /// Least hessian sum in a child (hist engine; XGBoost's min_child_weight).
    #[arg(long, default_value_t = 1.0)]
    pub min_child_weight: f64,
    /// Least gain for a split (hist engine; XGBoost's gamma).
    #[arg(long, default_value_t = 0.0)]
    pub gamma: f64,
    /// Stop adding trees when the log loss on a held-out tenth of the training rows has not
    /// improved for this many trees (hist engine; 0 = off).
    #[arg(long, default_value_t = 0)]
    pub early_stopping_rounds: usize,
    /// Share of rows each tree sees.
    #[arg(long, default_value_t = 1.0)]
    pub row_subsample: f64,
    /// Share of columns each tree may use.
    #[arg(long, default_value_t = 1.0)]
    pub col_subsample: f64,
    /// Quantile bins per numeric column (gbdt: 0 = exact splits; hist: 0 = 256, at most 256).
    #[arg(long, default_value_t = 0)]
    pub bins: usize,
    /// Train on the data as it is, without SMOTE oversampling.
    #[arg(long)]
    pub no_smote: bool,
    /// SMOTE neighbours.
    #[arg(long, default_value_t = 5)]
    pub smote_k: usize,
    /// Defaults per non-default after SMOTE (1.0 = balanced).
    #[arg(long, default_value_t = 1.0)]
    pub smote_ratio: f64,
    /// Above this many rows of the rarer class SMOTE is skipped and that class is weighted up to
    /// the same ratio instead (hist engine; the gbdt engine then trains unbalanced).
    #[arg(long, default_value_t = model::smote::DEFAULT_MAX_MINORITY)]
    pub smote_max_minority: usize,
    /// Folds for out-of-fold calibration and threshold choice.
    #[arg(long, default_value_t = 3)]
    pub calibration_folds: usize,
    /// How to choose the decline threshold: f1, or cost (with the two cost options).
    #[arg(long, default_value = "f1", value_parser = ["f1", "cost"])]
    pub threshold_rule: String,
    /// Cost of approving an applicant who defaults (rule "cost").
    #[arg(long, default_value_t = 5.0)]
    pub cost_false_approve: f64,
    /// Cost of declining an applicant who would have repaid (rule "cost").
    #[arg(long, default_value_t = 1.0)]
    pub cost_false_decline: f64,
    /// Share of defaulters that must not be auto-approved (sets the review threshold).
    #[arg(long, default_value_t = 0.9)]
    pub review_recall: f64,
    /// Reasons given per decision.
    #[arg(long, default_value_t = 4)]
    pub max_reasons: usize,
    /// Also train without SMOTE and report both calibrations side by side.
    #[arg(long)]
    pub compare_no_smote: bool,
    /// Model registry (MLflow tracking URI) to log the run to and register the model in.
    /// Credentials come from MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN.
    #[arg(long)]
    pub registry: Option<String>,
    /// Experiment the run is logged to (with --registry).
    #[arg(long, default_value = "loan-default")]
    pub experiment: String,
    /// Registered model name for the new version (with --registry).
    #[arg(long, env = "MODEL_NAME", default_value = "loan-default")]
    pub register_as: String,
    /// Alias to move to the new version, e.g. champion (with --registry).
    #[arg(long)]
    pub alias: Option<String>,
    /// No report on stdout and no progress bars (training jobs log instead).
    #[arg(skip)]
    pub quiet: bool,
    /// What the run's `mlflow.source.name` tag says started it.
    #[arg(skip = String::from("loanctl train"))]
    pub source: String,
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
}

impl Args {
    fn config(&self, smote: bool) -> TrainConfig {
        TrainConfig {
            booster: TrainParams {
                engine: self.engine.parse().unwrap_or_default(),
                trees: self.trees,
                max_depth: self.max_depth,
                learning_rate: self.learning_rate,
                min_leaf: self.min_leaf,
                row_subsample: self.row_subsample,
                col_subsample: self.col_subsample,
                bins: self.bins,
                seed: self.seed,
                lambda: self.lambda,
                min_child_weight: self.min_child_weight,
                gamma: self.gamma,
                early_stopping_rounds: self.early_stopping_rounds,
                ..TrainParams::default()
            },
            smote: smote.then_some(SmoteParams {
                k: self.smote_k,
                ratio: self.smote_ratio,
                seed: self.seed,
                max_minority: self.smote_max_minority,
            }),
            calibration_folds: self.calibration_folds,
            threshold_rule: match self.threshold_rule.as_str() {
                "cost" => ThresholdRule::ExpectedCost {
                    false_approve: self.cost_false_approve,
                    false_decline: self.cost_false_decline,
                },
                _ => ThresholdRule::F1,
            },
            review_recall: self.review_recall,
            max_reasons: self.max_reasons,
        }
    }
}

/// Trains with `cfg` on the training rows and evaluates on the test rows.
fn fit_and_evaluate(
    spec: &features::Spec,
    train: (&[Vec<Raw<'_>>], &[bool]),
    test: (&[Vec<Raw<'_>>], &[bool]),
    cfg: &TrainConfig,
    provenance: model::Provenance,
    label: &str,
    quiet: bool,
) -> Result<(model::pipeline::Fitted, Evaluation, f64)> {
    let started = Instant::now();
    let pb = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        crate::tree_bar(label)
    };
    let fitted = fit(spec, train.0, train.1, cfg, provenance, &mut |p| match p {
        Progress::Trees { done, total } => {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        }
    })?;
    pb.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let scorer = Scorer::new(fitted.bundle.clone())?;
    let eval = evaluate(&scorer, test.0, test.1)?;
    Ok((fitted, eval, seconds))
}

pub fn run(a: Args) -> Result<Trained> {
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
    eprintln!(
        "training on {} rows ({} defaults), holding out {} rows ({} defaults)",
        train_y.len(),
        train_y.iter().filter(|v| **v).count(),
        test_y.len(),
        test_y.iter().filter(|v| **v).count()
    );
    let provenance = model::Provenance {
        data_sha256: Some(data.sha256.clone()),
        data_rows: Some(data.records.len()),
        ..provenance_now()
    };
    let cfg = a.config(!a.no_smote);
    let (mut fitted, eval, seconds) = fit_and_evaluate(
        &spec,
        (&train_x, &train_y),
        (&test_x, &test_y),
        &cfg,
        provenance.clone(),
        "training",
        a.quiet,
    )?;
    let baseline = if a.compare_no_smote && !a.no_smote {
        let cfg = a.config(false);
        Some(fit_and_evaluate(
            &spec,
            (&train_x, &train_y),
            (&test_x, &test_y),
            &cfg,
            provenance,
            "no SMOTE",
            a.quiet,
        )?)
    } else {
        None
    };
    if let Some(note) = balance_note(&a, &fitted.balance) {
        eprintln!("{note}");
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
        &a,
        &fitted,
        &eval,
        seconds,
        baseline.as_ref().map(|(_, e, _)| e),
    );
    std::fs::write(a.out.join("report.md"), &md)?;
    if !a.quiet {
        crate::print(&md)?;
    }
    eprintln!(
        "wrote {} (bundle), report.json, report.md, {}",
        bundle_dir.display(),
        plots.join(", ")
    );
    let mut registered = None;
    if let Some(url) = &a.registry {
        let params = flatten("", &serde_json::to_value(&cfg)?);
        let metrics: Vec<(String, f64, i64)> = [
            ("test_roc_auc", m.roc_auc),
            ("test_pr_auc", m.pr_auc),
            ("test_ks", m.ks),
            ("test_brier", m.brier),
            ("test_log_loss", m.log_loss),
            ("training_seconds", seconds),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v, 0))
        .chain(learning_curve(&fitted.bundle, &test_x, &test_y)?)
        .collect();
        registered = Some(crate::register::log_and_register(
            url,
            &crate::register::Run {
                experiment: &a.experiment,
                name: &a.register_as,
                alias: a.alias.as_deref(),
                source: &a.source,
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
    })
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
fn balance_note(a: &Args, balance: &model::pipeline::Balance) -> Option<String> {
    use model::pipeline::Balance;
    if a.no_smote {
        return None;
    }
    match balance {
        Balance::Weights {
            minority_rows,
            scale_pos_weight,
        } => Some(format!(
            "SMOTE skipped: {minority_rows} rows of the rarer class is above \
             --smote-max-minority {}, where oversampling costs more than it gives; \
             defaults weighted by {scale_pos_weight:.3} instead (scale_pos_weight)",
            a.smote_max_minority
        )),
        Balance::None => Some(format!(
            "SMOTE skipped: the rarer class is above --smote-max-minority {}, and the gbdt \
             engine cannot weight classes; trained on the data as it is",
            a.smote_max_minority
        )),
        Balance::Smote { .. } => None,
    }
}

fn markdown(
    a: &Args,
    fitted: &model::pipeline::Fitted,
    eval: &Evaluation,
    seconds: f64,
    baseline: Option<&Evaluation>,
) -> String {
    let b = &fitted.bundle;
    let t = &b.thresholds;
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
        a.engine,
        a.trees,
        a.max_depth,
        a.learning_rate,
        a.min_leaf,
        a.bins,
        a.seed,
        match fitted.balance {
            _ if a.no_smote => "no SMOTE".to_string(),
            model::pipeline::Balance::Smote { rows } => format!(
                "SMOTE-NC k = {} to ratio {} (+{rows} synthetic rows)",
                a.smote_k, a.smote_ratio
            ),
            _ => balance_note(a, &fitted.balance).unwrap_or_default(),
        },
        a.calibration_folds,
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
