//! `loanctl import-xgboost`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use model::drift::Baseline;
use model::pipeline::{bundle_imported, provenance_now};
use model::{Scorer, ThresholdRule, Thresholds};

use training::table::read_labelled;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model file XGBoost wrote with save_model("*.json") (binary:logistic, gbtree).
    #[arg(long)]
    pub model: PathBuf,
    /// Feature spec; its model inputs, in order, are the XGBoost model's features.
    #[arg(long)]
    pub spec: PathBuf,
    /// Output folder for the bundle.
    #[arg(long)]
    pub out: PathBuf,
    /// Labelled CSV (the model's training data, or data like it): decision thresholds are
    /// chosen on it (F1-optimal decline, review recall 0.9) unless both are given, the model is
    /// evaluated on it, and it becomes the drift baseline. Without it, give both thresholds.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Approve below this probability of default.
    #[arg(long, requires = "decline_at")]
    pub approve_below: Option<f64>,
    /// Decline at or above this probability of default.
    #[arg(long, requires = "approve_below")]
    pub decline_at: Option<f64>,
    /// Reasons given per decision.
    #[arg(long, default_value_t = 4)]
    pub max_reasons: usize,
}

pub fn run(a: Args) -> Result<()> {
    let spec = crate::commands::read_spec(&a.spec)?;
    let meta = std::fs::metadata(&a.model)
        .with_context(|| format!("cannot read {}", a.model.display()))?;
    if meta.len() > model::bundle::MAX_BUNDLE_BYTES {
        bail!(
            "{} is larger than {} bytes",
            a.model.display(),
            model::bundle::MAX_BUNDLE_BYTES
        );
    }
    let text = std::fs::read_to_string(&a.model)
        .with_context(|| format!("cannot read {}", a.model.display()))?;
    let names: Vec<String> = spec
        .features
        .iter()
        .filter(|f| f.is_model_input())
        .map(|f| f.name.clone())
        .collect();
    let ensemble =
        model::xgboost::import(&text, &names).with_context(|| format!("{}", a.model.display()))?;
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    };
    let provenance = model::Provenance {
        params: serde_json::json!({"imported_from": a.model.display().to_string(), "model_sha256": sha}),
        ..provenance_now()
    };
    let placeholder = Thresholds {
        approve: 0.0,
        decline: 1.0,
        rule: ThresholdRule::F1,
        review_recall: 0.9,
    };
    let mut bundle = bundle_imported(&spec, ensemble, placeholder, a.max_reasons, provenance)?;
    if let (Some(lo), Some(hi)) = (a.approve_below, a.decline_at) {
        if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
            bail!("thresholds must satisfy 0 <= approve-below <= decline-at <= 1");
        }
        bundle.thresholds = Thresholds {
            approve: lo,
            decline: hi,
            rule: ThresholdRule::F1,
            review_recall: 0.9,
        };
    }
    match &a.data {
        Some(path) => {
            let data = read_labelled(path, &spec)?;
            let rows = data.rows();
            let scorer = Scorer::new(bundle.clone())?;
            let p: Vec<f64> = rows
                .iter()
                .map(|r| scorer.score(r, false).map(|s| s.default_probability))
                .collect::<Result<_, _>>()?;
            if a.approve_below.is_none() {
                bundle.thresholds = Thresholds::choose(&p, &data.labels, ThresholdRule::F1, 0.9)?;
            }
            // What drift in production is measured against (the model's training data, as
            // the lender gives it).
            bundle.drift_baseline = Some(Baseline::fit(&spec, &rows, &p));
            let eval = model::report::evaluate(&Scorer::new(bundle.clone())?, &rows, &data.labels)?;
            bundle.metrics = serde_json::json!({"roc_auc": eval.metrics.roc_auc, "brier": eval.metrics.brier, "rows": rows.len()});
            crate::commands::print(&eval.to_markdown())?;
        }
        None if a.approve_below.is_some() => eprintln!(
            "no --data: the bundle has no drift baseline (GET /v1/monitoring/drift and \
             `loanctl drift` need one)"
        ),
        None => bail!("give --data (labelled CSV) to choose thresholds, or both --approve-below and --decline-at"),
    }
    let dir = a.out.join("model");
    bundle.save(&dir)?;
    eprintln!(
        "imported {} trees; approve below {:.4}, decline at or above {:.4}; wrote {}",
        bundle.ensemble.trees.len(),
        bundle.thresholds.approve,
        bundle.thresholds.decline,
        dir.display()
    );
    Ok(())
}
