//! The feature spec: what a loan application looks like.

use serde::{Deserialize, Serialize};

use crate::FeatureError;

/// The spec format this build reads and writes.
pub const SPEC_FORMAT_VERSION: u32 = 1;

/// How one feature is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureKind {
    Numeric,
    Categorical,
    Boolean,
}

/// What to do with a present but invalid value (out of range, unknown category, wrong type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvalidPolicy {
    /// Report a field error; the record is not scored.
    #[default]
    Reject,
    /// Treat the value as missing and impute it.
    Missing,
}

/// A monotone constraint on a numeric feature. `Increasing`: a higher value never lowers the
/// probability of default; `Decreasing`: a higher value never raises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Monotone {
    Increasing,
    Decreasing,
}

impl Monotone {
    /// +1 for increasing, -1 for decreasing.
    pub fn sign(self) -> i8 {
        match self {
            Monotone::Increasing => 1,
            Monotone::Decreasing => -1,
        }
    }
}

/// The label column and which of its values means "defaulted".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub name: String,
    pub positive: String,
}

/// One input feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub name: String,
    pub kind: FeatureKind,
    #[serde(default = "default_true")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Allowed categories; `None` means "learn them from the training data".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Plain-language text used when this feature is a reason for a decision.
    #[serde(default)]
    pub reason: String,
    /// A protected attribute (sex, age, nationality...): never a reason code, kept out of the
    /// model unless `use_in_model` says otherwise, reported in the fairness section.
    #[serde(default)]
    pub protected: bool,
    /// Overrides the default (`true`, or `false` for protected features).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_in_model: Option<bool>,
    #[serde(default)]
    pub on_invalid: InvalidPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A monotone constraint (numeric features, `hist` engine); see docs/feature-spec.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monotone: Option<Monotone>,
}

fn default_true() -> bool {
    true
}

impl FeatureSpec {
    /// Whether the model sees this feature.
    pub fn is_model_input(&self) -> bool {
        self.use_in_model.unwrap_or(!self.protected)
    }
}

/// The whole spec: target, optional id column and features in model order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub format_version: u32,
    pub target: Target,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_column: Option<String>,
    pub features: Vec<FeatureSpec>,
}

impl Spec {
    /// Parses and checks a spec document.
    pub fn from_json(text: &str) -> Result<Spec, FeatureError> {
        let spec: Spec =
            serde_json::from_str(text).map_err(|e| FeatureError::InvalidSpec(e.to_string()))?;
        spec.check()?;
        Ok(spec)
    }

    /// Checks the invariants serde cannot express.
    pub fn check(&self) -> Result<(), FeatureError> {
        let bad = |m: String| Err(FeatureError::InvalidSpec(m));
        if self.format_version != SPEC_FORMAT_VERSION {
            return bad(format!(
                "format_version {} is not supported (this build reads {SPEC_FORMAT_VERSION})",
                self.format_version
            ));
        }
        if self.features.is_empty() {
            return bad("the spec lists no features".into());
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.features {
            if f.name.is_empty() {
                return bad("a feature has an empty name".into());
            }
            if !seen.insert(f.name.as_str()) {
                return bad(format!("feature '{}' is listed twice", f.name));
            }
            if f.name == self.target.name || Some(&f.name) == self.id_column.as_ref() {
                return bad(format!(
                    "feature '{}' is also the target or id column",
                    f.name
                ));
            }
            if let (Some(lo), Some(hi)) = (f.min, f.max) {
                if lo.is_nan() || hi.is_nan() || lo > hi {
                    return bad(format!("feature '{}': min {lo} is above max {hi}", f.name));
                }
            }
            if f.kind != FeatureKind::Categorical && f.categories.is_some() {
                return bad(format!(
                    "feature '{}' has categories but is not categorical",
                    f.name
                ));
            }
            if f.kind != FeatureKind::Numeric && f.monotone.is_some() {
                return bad(format!(
                    "feature '{}' has a monotone constraint but is not numeric",
                    f.name
                ));
            }
            if f.kind != FeatureKind::Numeric && (f.min.is_some() || f.max.is_some()) {
                return bad(format!(
                    "feature '{}' has a range but is not numeric",
                    f.name
                ));
            }
        }
        if !self.features.iter().any(FeatureSpec::is_model_input) {
            return bad("no feature is a model input (all are protected?)".into());
        }
        Ok(())
    }

    /// Index of a feature by name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.features.iter().position(|f| f.name == name)
    }
}
