//! Loan application schema: the feature spec, validation, encoding and the StandardScaler.
//!
//! A [`Spec`] says what an application looks like; a fitted [`Preprocessor`] turns one
//! application ([`Raw`] values in spec order) into the model's `f32` columns without allocating.

mod infer;
mod preprocessor;
mod spec;

pub use infer::infer_spec;
pub use preprocessor::{
    clean, Clean, Column, ColumnKind, Preprocessor, PREPROCESSOR_FORMAT_VERSION,
};
pub use spec::{
    FeatureKind, FeatureSpec, InvalidPolicy, Monotone, Spec, Target, SPEC_FORMAT_VERSION,
};

use serde::Serialize;

/// One input value as it arrives, before validation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Raw<'a> {
    Missing,
    Num(f64),
    Text(&'a str),
    Bool(bool),
    /// A JSON array or object: never a valid value for any feature.
    Nested,
}

impl<'a> Raw<'a> {
    /// A CSV cell: empty (after trimming) means missing; anything else is text parsed later by kind.
    pub fn from_cell(cell: &'a str) -> Raw<'a> {
        let t = cell.trim();
        if t.is_empty() {
            Raw::Missing
        } else {
            Raw::Text(t)
        }
    }

    /// A JSON value; `null` means missing. Objects and arrays fail validation as `wrong_type`.
    pub fn from_json(v: &'a serde_json::Value) -> Raw<'a> {
        match v {
            serde_json::Value::Null => Raw::Missing,
            serde_json::Value::Bool(b) => Raw::Bool(*b),
            serde_json::Value::Number(n) => n.as_f64().map_or(Raw::Missing, Raw::Num),
            serde_json::Value::String(s) => Raw::Text(s),
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => Raw::Nested,
        }
    }
}

/// Why one field of a record cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    /// Machine-readable: `missing`, `wrong_type`, `out_of_range`, `unknown_category`, `not_finite`.
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("invalid feature spec: {0}")]
    InvalidSpec(String),
    #[error("invalid preprocessor: {0}")]
    InvalidPreprocessor(String),
    #[error("cannot fit the preprocessor: {0}")]
    Fit(String),
    #[error("the record has {} invalid field(s): {}", .0.len(), join_errors(.0))]
    Invalid(Vec<FieldError>),
}

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses a boolean written the usual ways.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" | "t" => Some(true),
        "false" | "no" | "n" | "0" | "f" => Some(false),
        _ => None,
    }
}
