//! The model library: SMOTE, GBDT training with the `gbdt` crate, metrics, calibration and
//! thresholds, the model bundle, the fast predictor, XGBoost import, TreeSHAP reason codes,
//! and the [`Scorer`] that puts them together. Pure computation plus bundle files; no network.

pub mod batch;
pub mod bundle;
pub mod calibration;
pub mod drift;
pub mod hist;
pub mod metrics;
pub mod pipeline;
pub mod predictor;
pub mod report;
pub mod scorer;
pub mod shap;
pub mod smote;
pub mod split;
pub mod train;
pub mod trees;
pub mod xgboost;

pub use batch::{BlockScorer, Columns, ReasonPolicy};
pub use bundle::{Bundle, ModelSource, Provenance, ScoreDistribution};
pub use calibration::{Calibration, Decision, ThresholdRule, Thresholds};
pub use predictor::Predictor;
pub use scorer::{Reason, ReasonView, Score, Scorer, Scratch, Shown};
pub use trees::{Ensemble, Node, Tree};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model: {0}")]
    InvalidModel(String),
    #[error("invalid model bundle: {0}")]
    InvalidBundle(String),
    #[error("invalid training settings: {0}")]
    InvalidParams(String),
    #[error("invalid data: {0}")]
    InvalidData(String),
    #[error("{0}")]
    Io(String),
    #[error("internal error: {0}")]
    Internal(String),
}
