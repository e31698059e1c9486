//! Training end to end: preprocess, SMOTE, boost, calibrate out of fold, pick thresholds,
//! and assemble a bundle. The CLI and the worker call this; it does no I/O.

use features::{ColumnKind, FeatureError, Preprocessor, Raw, Spec};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::bundle::{
    new_model_uuid, now_rfc3339, Bundle, ModelSource, Provenance, ScoreDistribution,
    BUNDLE_FORMAT_VERSION,
};
use crate::calibration::{Calibration, ThresholdRule, Thresholds};
use crate::predictor::Predictor;
use crate::smote::{oversample, SmoteParams};
use crate::train::{train, Engine, TrainParams};
use crate::ModelError;

/// Everything that shapes a trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub booster: TrainParams,
    /// `None` trains on the data as it is.
    pub smote: Option<SmoteParams>,
    /// Folds for out-of-fold calibration and thresholds (at least 2).
    pub calibration_folds: usize,
    pub threshold_rule: ThresholdRule,
    pub review_recall: f64,
    pub max_reasons: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            booster: TrainParams::default(),
            smote: Some(SmoteParams::default()),
            calibration_folds: 3,
            threshold_rule: ThresholdRule::F1,
            review_recall: 0.9,
            max_reasons: 4,
        }
    }
}

/// Where training is, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Trees built so far, of the total for all folds and the final model.
    Trees { done: usize, total: usize },
}

/// How the final fit dealt with the rarer class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Balance {
    /// Trained on the data as it is.
    None,
    /// SMOTE-NC added synthetic minority rows.
    Smote { rows: usize },
    /// Too many minority rows for SMOTE to pay off: each minority row weighs this much.
    Weights {
        minority_rows: usize,
        scale_pos_weight: f64,
    },
}

/// A trained model and what was learned on the way.
pub struct Fitted {
    pub bundle: Bundle,
    /// Rows SMOTE added to the final training set.
    pub smote_rows: usize,
    /// How the final fit balanced the classes.
    pub balance: Balance,
    /// Out-of-fold margins of the training rows (what calibration was fitted on).
    pub oof_margins: Vec<f64>,
}

pub use crate::split::stratified_split;

/// Stratified fold number (0..k) for each row.
pub fn stratified_folds(y: &[bool], k: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut fold = vec![0; y.len()];
    for class in [false, true] {
        let mut idx: Vec<usize> = (0..y.len()).filter(|&i| y[i] == class).collect();
        idx.shuffle(&mut rng);
        for (r, i) in idx.into_iter().enumerate() {
            fold[i] = r % k;
        }
    }
    fold
}

/// One-hot blocks of a preprocessor, for SMOTE-NC.
fn one_hot_blocks(pre: &Preprocessor) -> Vec<std::ops::Range<usize>> {
    (0..pre.spec.features.len())
        .map(|j| pre.feature_columns(j))
        .filter(|r| !r.is_empty() && matches!(pre.columns[r.start].kind, ColumnKind::OneHot { .. }))
        .collect()
}

/// Each encoded column's monotone constraint (+1, -1 or 0) from the spec.
pub fn monotone_columns(pre: &Preprocessor) -> Vec<i8> {
    pre.columns
        .iter()
        .map(|c| match (&c.kind, pre.spec.features[c.feature].monotone) {
            // Scaling divides by a positive spread, so order is kept.
            (ColumnKind::Scaled { .. } | ColumnKind::Passthrough, Some(m)) => m.sign(),
            _ => 0,
        })
        .collect()
}

/// Encodes rows with a preprocessor, naming the first bad row.
pub fn encode_rows(pre: &Preprocessor, rows: &[Vec<Raw<'_>>]) -> Result<Vec<f32>, ModelError> {
    let w = pre.width();
    let mut x = vec![0.0f32; rows.len() * w];
    for (i, (row, out)) in rows.iter().zip(x.chunks_exact_mut(w)).enumerate() {
        pre.transform(row, out).map_err(|e| match e {
            FeatureError::Invalid(errs) => ModelError::InvalidData(format!(
                "row {i}: {}",
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            other => ModelError::InvalidData(other.to_string()),
        })?;
    }
    Ok(x)
}

/// Trains one booster (with SMOTE if configured) on encoded rows.
fn boost(
    x: &[f32],
    y: &[bool],
    w: usize,
    blocks: &[std::ops::Range<usize>],
    monotone: &[i8],
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(usize),
) -> Result<(crate::trees::Ensemble, Balance), ModelError> {
    // Copied only when SMOTE adds rows.
    let (mut xs, mut ys): (std::borrow::Cow<[f32]>, std::borrow::Cow<[bool]>) =
        (x.into(), y.into());
    let mut booster = cfg.booster.clone();
    let positives = y.iter().filter(|v| **v).count();
    let minority = positives.min(y.len() - positives);
    let balance = match &cfg.smote {
        Some(p) if minority > p.max_minority && cfg.booster.engine == Engine::Hist => {
            // Weight the minority class up to `ratio` of the majority instead.
            let majority = (y.len() - minority) as f64;
            let w = (p.ratio * majority / minority as f64).max(1.0);
            let scale = if positives <= y.len() - positives {
                w
            } else {
                1.0 / w
            };
            booster.scale_pos_weight = scale;
            Balance::Weights {
                minority_rows: minority,
                scale_pos_weight: scale,
            }
        }
        Some(p) if minority > p.max_minority => Balance::None,
        Some(p) => Balance::Smote {
            rows: oversample(xs.to_mut(), ys.to_mut(), w, blocks, p)?,
        },
        None => Balance::None,
    };
    let added = match balance {
        Balance::Smote { rows } => rows,
        _ => 0,
    };
    let mut ensemble = match cfg.booster.engine {
        Engine::Gbdt => train(&xs, &ys, w, &booster, progress)?.ensemble,
        Engine::Hist => crate::hist::train(&xs, &ys, w, &booster, monotone, progress)?.ensemble,
    };
    // Covers for TreeSHAP come from the real rows, not the synthetic ones.
    if added > 0 || cfg.booster.engine == Engine::Gbdt {
        ensemble.set_covers_from_rows(x);
    }
    Ok((ensemble, balance))
}

/// Fits a full model on training rows (values in spec order) with labels (true = default).
pub fn fit(
    spec: &Spec,
    rows: &[Vec<Raw<'_>>],
    y: &[bool],
    cfg: &TrainConfig,
    provenance: Provenance,
    progress: &mut dyn FnMut(Progress),
) -> Result<Fitted, ModelError> {
    if cfg.calibration_folds < 2 {
        return Err(ModelError::InvalidParams(
            "calibration folds must be at least 2".into(),
        ));
    }
    cfg.booster.check()?;
    let mut pre =
        Preprocessor::fit(spec, rows).map_err(|e| ModelError::InvalidData(e.to_string()))?;
    // The hist engine learns where missing values go; the gbdt crate needs them imputed.
    pre.keep_missing = cfg.booster.engine == Engine::Hist;
    let monotone = monotone_columns(&pre);
    if cfg.booster.engine == Engine::Gbdt && monotone.iter().any(|c| *c != 0) {
        return Err(ModelError::InvalidParams(
            "the spec has monotone constraints; only the hist engine can keep them".into(),
        ));
    }
    let w = pre.width();
    let x = encode_rows(&pre, rows)?;
    let blocks = one_hot_blocks(&pre);
    let k = cfg.calibration_folds;
    let total = cfg.booster.trees * (k + 1);
    let mut done = 0;
    // Out-of-fold margins: each training row scored by a model that never saw it.
    let folds = stratified_folds(y, k, cfg.booster.seed);
    let mut oof = vec![0.0f64; y.len()];
    for f in 0..k {
        let (mut xf, mut yf, mut held) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..y.len() {
            if folds[i] == f {
                held.push(i);
            } else {
                xf.extend_from_slice(&x[i * w..(i + 1) * w]);
                yf.push(y[i]);
            }
        }
        let (ens, _) = boost(&xf, &yf, w, &blocks, &monotone, cfg, &mut |t| {
            progress(Progress::Trees {
                done: done + t,
                total,
            })
        })?;
        done += cfg.booster.trees;
        let pred = Predictor::new(&ens);
        for i in held {
            oof[i] = f64::from(pred.margin(&x[i * w..(i + 1) * w]));
        }
    }
    let calibration = Calibration::fit(&oof, y)?;
    // A falling calibration would turn every constraint around.
    if calibration.a < 0.0 && monotone.iter().any(|c| *c != 0) {
        return Err(ModelError::InvalidData(
            "the out-of-fold calibration reverses the model's ranking, so monotone constraints \
             cannot hold for the served probability; check the labels and the target's positive value"
                .into(),
        ));
    }
    let oof_p: Vec<f64> = oof.iter().map(|m| calibration.apply(*m)).collect();
    let thresholds = Thresholds::choose(&oof_p, y, cfg.threshold_rule, cfg.review_recall)?;
    let (ensemble, balance) = boost(&x, y, w, &blocks, &monotone, cfg, &mut |t| {
        progress(Progress::Trees {
            done: done + t,
            total,
        })
    })?;
    let pred = Predictor::new(&ensemble);
    let train_p: Vec<f64> = x
        .chunks_exact(w)
        .map(|r| calibration.apply(f64::from(pred.margin(r))))
        .collect();
    let bundle = Bundle {
        format_version: BUNDLE_FORMAT_VERSION,
        model_uuid: new_model_uuid(),
        source: match cfg.booster.engine {
            Engine::Gbdt => ModelSource::Gbdt,
            Engine::Hist => ModelSource::Hist,
        },
        spec: spec.clone(),
        preprocessor: serde_json::to_value(&pre)
            .map_err(|e| ModelError::Internal(e.to_string()))?,
        ensemble,
        calibration,
        thresholds,
        max_reasons: cfg.max_reasons,
        metrics: serde_json::Value::Null,
        score_distribution: ScoreDistribution::histogram(&train_p, 20),
        // The score's baseline from out-of-fold probabilities: what the model gives rows it
        // has not seen (in-sample scores are more extreme, and would read as drift at once).
        drift_baseline: Some(crate::drift::Baseline::fit(spec, rows, &oof_p)),
        provenance: Provenance {
            params: serde_json::to_value(cfg).unwrap_or_default(),
            seed: Some(cfg.booster.seed),
            ..provenance
        },
    };
    bundle.check()?;
    let smote_rows = match balance {
        Balance::Smote { rows } => rows,
        _ => 0,
    };
    Ok(Fitted {
        bundle,
        smote_rows,
        balance,
        oof_margins: oof,
    })
}

/// A default provenance stamped now with this crate's version.
pub fn provenance_now() -> Provenance {
    Provenance {
        code_version: format!("loan-scoring {}", env!("CARGO_PKG_VERSION")),
        created_at: now_rfc3339(),
        ..Provenance::default()
    }
}

/// Wraps an imported XGBoost ensemble into a bundle. Inputs pass through unscaled; missing
/// values follow the trees' default directions.
pub fn bundle_imported(
    spec: &Spec,
    ensemble: crate::trees::Ensemble,
    thresholds: Thresholds,
    max_reasons: usize,
    provenance: Provenance,
) -> Result<Bundle, ModelError> {
    let pre =
        Preprocessor::passthrough(spec).map_err(|e| ModelError::InvalidModel(e.to_string()))?;
    let bundle = Bundle {
        format_version: BUNDLE_FORMAT_VERSION,
        model_uuid: new_model_uuid(),
        source: ModelSource::Xgboost,
        spec: spec.clone(),
        preprocessor: serde_json::to_value(&pre)
            .map_err(|e| ModelError::Internal(e.to_string()))?,
        ensemble,
        // XGBoost's binary:logistic output is already a probability.
        calibration: Calibration::IDENTITY,
        thresholds,
        max_reasons,
        metrics: serde_json::Value::Null,
        score_distribution: ScoreDistribution {
            edges: vec![0.0, 1.0],
            counts: vec![0],
        },
        drift_baseline: None,
        provenance,
    };
    bundle.check()?;
    Ok(bundle)
}
