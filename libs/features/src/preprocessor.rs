//! The fitted preprocessor: validation, imputation, one-hot encoding and StandardScaler.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{
    parse_bool, FeatureError, FeatureKind, FeatureSpec, FieldError, InvalidPolicy, Raw, Spec,
};

/// The preprocessor format this build reads and writes.
pub const PREPROCESSOR_FORMAT_VERSION: u32 = 1;

/// How one model column is produced from its feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ColumnKind {
    /// `(x - mean) / std`; a missing value becomes `impute` before scaling.
    Scaled { impute: f64, mean: f64, std: f64 },
    /// 1.0 when the feature equals `category`, else 0.0 (missing: all zeros).
    OneHot { category: String },
    /// 1.0 or 0.0; a missing value becomes `impute`.
    Flag { impute: bool },
    /// The value as given; a missing value becomes NaN (for models that route missing values
    /// themselves, such as imported XGBoost models).
    Passthrough,
}

/// One column of the encoded matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Display name: the feature name, or `feature=category` for one-hot columns.
    pub name: String,
    /// Index of the source feature in the spec.
    pub feature: usize,
    pub kind: ColumnKind,
}

/// Fitted on training rows only; applied unchanged to every scored application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessor {
    pub format_version: u32,
    pub spec: Spec,
    pub columns: Vec<Column>,
    /// Missing numeric and boolean values encode as NaN instead of their imputed value, for
    /// models whose splits learn where missing values go (the `hist` engine).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_missing: bool,
    /// For each spec feature, the range of its columns (empty for features the model ignores).
    #[serde(skip)]
    ranges: Vec<std::ops::Range<usize>>,
    /// For categorical features, category -> column offset within the feature's range.
    #[serde(skip)]
    lookup: Vec<HashMap<String, usize>>,
}

/// A feature value after validation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clean<'a> {
    Missing,
    Num(f64),
    Cat(&'a str),
    Bool(bool),
}

/// Validates one value against its feature spec.
pub fn clean<'a>(f: &FeatureSpec, raw: Raw<'a>) -> Result<Clean<'a>, FieldError> {
    let err = |code, message: String| FieldError {
        field: f.name.clone(),
        code,
        message,
    };
    let result = match (f.kind, raw) {
        (_, Raw::Missing) => Ok(Clean::Missing),
        (_, Raw::Nested) => Err(err(
            "wrong_type",
            "expected a single value, got an array or object".into(),
        )),
        (FeatureKind::Numeric, Raw::Num(x)) => check_range(f, x),
        (FeatureKind::Numeric, Raw::Text(t)) => match t.trim().parse::<f64>() {
            Ok(x) => check_range(f, x),
            Err(_) => Err(err(
                "wrong_type",
                format!("expected a number, got '{}'", clip(t)),
            )),
        },
        (FeatureKind::Numeric, Raw::Bool(_)) => {
            Err(err("wrong_type", "expected a number, got a boolean".into()))
        }
        (FeatureKind::Categorical, Raw::Text(t)) => match &f.categories {
            Some(cats) if !cats.iter().any(|c| c == t) => Err(err(
                "unknown_category",
                format!(
                    "'{}' is not one of the {} allowed categories",
                    clip(t),
                    cats.len()
                ),
            )),
            _ => Ok(Clean::Cat(t)),
        },
        (FeatureKind::Categorical, _) => {
            Err(err("wrong_type", "expected a category (string)".into()))
        }
        (FeatureKind::Boolean, Raw::Bool(b)) => Ok(Clean::Bool(b)),
        (FeatureKind::Boolean, Raw::Text(t)) => parse_bool(t).map(Clean::Bool).ok_or_else(|| {
            err(
                "wrong_type",
                format!("expected true or false, got '{}'", clip(t)),
            )
        }),
        (FeatureKind::Boolean, Raw::Num(x)) if x == 0.0 || x == 1.0 => Ok(Clean::Bool(x == 1.0)),
        (FeatureKind::Boolean, Raw::Num(_)) => {
            Err(err("wrong_type", "expected true or false".into()))
        }
    };
    match result {
        Ok(Clean::Missing) if f.required => Err(err("missing", "is required".into())),
        Err(_) if f.on_invalid == InvalidPolicy::Missing => Ok(Clean::Missing),
        other => other,
    }
}

impl Spec {
    /// Validates one record (values in spec order), reporting every invalid field. Features the
    /// model does not use may be missing; a value sent for one is still checked.
    pub fn validate(&self, record: &[Raw<'_>]) -> Result<(), Vec<FieldError>> {
        let errors: Vec<FieldError> = self
            .features
            .iter()
            .zip(record)
            .filter_map(|(f, raw)| invalid(f, *raw))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Why `raw` cannot be used for feature `f`, if it cannot. A feature that is not a model input
/// (a protected attribute) may be left out, but a value that is sent is held to the spec like any
/// other, as the API's schema promises.
fn invalid(f: &FeatureSpec, raw: Raw<'_>) -> Option<FieldError> {
    if !f.is_model_input() && raw == Raw::Missing {
        return None;
    }
    clean(f, raw).err()
}

fn check_range<'a>(f: &FeatureSpec, x: f64) -> Result<Clean<'a>, FieldError> {
    let err = |code, message: String| FieldError {
        field: f.name.clone(),
        code,
        message,
    };
    if !x.is_finite() {
        return Err(err("not_finite", "must be a finite number".into()));
    }
    if let Some(lo) = f.min {
        if x < lo {
            return Err(err(
                "out_of_range",
                format!("{x} is below the minimum {lo}"),
            ));
        }
    }
    if let Some(hi) = f.max {
        if x > hi {
            return Err(err(
                "out_of_range",
                format!("{x} is above the maximum {hi}"),
            ));
        }
    }
    Ok(Clean::Num(x))
}

/// Keeps echoed input short in messages (inputs are hostile and may be huge).
fn clip(t: &str) -> String {
    const MAX: usize = 64;
    if t.chars().count() <= MAX {
        t.to_string()
    } else {
        format!("{}…", t.chars().take(MAX).collect::<String>())
    }
}

impl Preprocessor {
    /// Fits imputation values, categories and scaling on training rows (each in spec order).
    /// Rows with invalid values are an error naming the row and field.
    pub fn fit<'a, R>(spec: &Spec, rows: R) -> Result<Preprocessor, FeatureError>
    where
        R: IntoIterator,
        R::Item: AsRef<[Raw<'a>]>,
    {
        spec.check()?;
        let n = spec.features.len();
        let mut nums: Vec<Vec<f64>> = vec![Vec::new(); n];
        let mut cats: Vec<HashMap<String, usize>> = vec![HashMap::new(); n];
        let mut trues = vec![0usize; n];
        let mut bools = vec![0usize; n];
        let mut count = 0usize;
        for (i, row) in rows.into_iter().enumerate() {
            let row = row.as_ref();
            if row.len() != n {
                return Err(FeatureError::Fit(format!(
                    "row {i} has {} values, the spec has {n} features",
                    row.len()
                )));
            }
            count += 1;
            for (j, f) in spec.features.iter().enumerate() {
                if !f.is_model_input() {
                    continue;
                }
                match clean(f, row[j]) {
                    Ok(Clean::Num(x)) => nums[j].push(x),
                    Ok(Clean::Cat(c)) => *cats[j].entry(c.to_string()).or_default() += 1,
                    Ok(Clean::Bool(b)) => {
                        bools[j] += 1;
                        trues[j] += usize::from(b);
                    }
                    Ok(Clean::Missing) => {}
                    Err(e) => return Err(FeatureError::Fit(format!("training row {i}: {e}"))),
                }
            }
        }
        if count == 0 {
            return Err(FeatureError::Fit("no training rows".into()));
        }
        let mut columns = Vec::new();
        for (j, f) in spec.features.iter().enumerate() {
            if !f.is_model_input() {
                continue;
            }
            match f.kind {
                FeatureKind::Numeric => {
                    let seen = std::mem::take(&mut nums[j]);
                    if seen.is_empty() {
                        return Err(FeatureError::Fit(format!(
                            "feature '{}' has no values in the training data",
                            f.name
                        )));
                    }
                    let impute = median(seen.clone());
                    let missing = count - seen.len();
                    // Scale the imputed column, as an impute-then-scale pipeline would.
                    let total: f64 = seen.iter().sum::<f64>() + impute * missing as f64;
                    let mean = total / count as f64;
                    let ss: f64 = seen.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
                        + missing as f64 * (impute - mean).powi(2);
                    let std = (ss / count as f64).sqrt();
                    // A constant column would divide by zero; scikit-learn uses 1 as well.
                    let std = if std > 0.0 { std } else { 1.0 };
                    columns.push(Column {
                        name: f.name.clone(),
                        feature: j,
                        kind: ColumnKind::Scaled { impute, mean, std },
                    });
                }
                FeatureKind::Categorical => {
                    let mut seen: Vec<(String, usize)> =
                        std::mem::take(&mut cats[j]).into_iter().collect();
                    if seen.is_empty() {
                        return Err(FeatureError::Fit(format!(
                            "feature '{}' has no values in the training data",
                            f.name
                        )));
                    }
                    // Most frequent first, then by name: stable across runs.
                    seen.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                    for (category, _) in seen {
                        columns.push(Column {
                            name: format!("{}={}", f.name, category),
                            feature: j,
                            kind: ColumnKind::OneHot { category },
                        });
                    }
                }
                FeatureKind::Boolean => columns.push(Column {
                    name: f.name.clone(),
                    feature: j,
                    kind: ColumnKind::Flag {
                        impute: trues[j] * 2 >= bools[j].max(1),
                    },
                }),
            }
        }
        Preprocessor::from_parts(spec.clone(), columns)
    }

    /// No fitting: every model input goes to the model as given, in spec order. Only numeric
    /// features can be passed through.
    pub fn passthrough(spec: &Spec) -> Result<Preprocessor, FeatureError> {
        let mut columns = Vec::new();
        for (j, f) in spec.features.iter().enumerate() {
            if !f.is_model_input() {
                continue;
            }
            if f.kind != FeatureKind::Numeric {
                return Err(FeatureError::InvalidSpec(format!(
                    "feature '{}' is {:?}; a model without fitted preprocessing takes numeric features only",
                    f.name, f.kind
                )));
            }
            columns.push(Column {
                name: f.name.clone(),
                feature: j,
                kind: ColumnKind::Passthrough,
            });
        }
        Preprocessor::from_parts(spec.clone(), columns)
    }

    /// Builds the lookup tables and checks that columns and spec agree.
    pub fn from_parts(spec: Spec, columns: Vec<Column>) -> Result<Preprocessor, FeatureError> {
        let mut p = Preprocessor {
            format_version: PREPROCESSOR_FORMAT_VERSION,
            spec,
            columns,
            keep_missing: false,
            ranges: Vec::new(),
            lookup: Vec::new(),
        };
        p.index()?;
        Ok(p)
    }

    /// Parses a serialized preprocessor and checks it.
    pub fn from_json_value(v: serde_json::Value) -> Result<Preprocessor, FeatureError> {
        let mut p: Preprocessor = serde_json::from_value(v)
            .map_err(|e| FeatureError::InvalidPreprocessor(e.to_string()))?;
        p.index()?;
        Ok(p)
    }

    fn index(&mut self) -> Result<(), FeatureError> {
        let bad = |m: String| Err(FeatureError::InvalidPreprocessor(m));
        if self.format_version != PREPROCESSOR_FORMAT_VERSION {
            return bad(format!(
                "format_version {} is not supported (this build reads {PREPROCESSOR_FORMAT_VERSION})",
                self.format_version
            ));
        }
        self.spec.check()?;
        let n = self.spec.features.len();
        self.ranges = vec![0..0; n];
        self.lookup = vec![HashMap::new(); n];
        let mut last: Option<usize> = None;
        for (c, col) in self.columns.iter().enumerate() {
            let Some(f) = self.spec.features.get(col.feature) else {
                return bad(format!(
                    "column '{}' refers to feature {} of {n}",
                    col.name, col.feature
                ));
            };
            if last.is_some_and(|l| l > col.feature) {
                return bad("columns are not in spec order".into());
            }
            if !f.is_model_input() {
                return bad(format!(
                    "column '{}' encodes a feature the model must not use",
                    col.name
                ));
            }
            let kind_ok = matches!(
                (f.kind, &col.kind),
                (
                    FeatureKind::Numeric,
                    ColumnKind::Scaled { .. } | ColumnKind::Passthrough
                ) | (FeatureKind::Categorical, ColumnKind::OneHot { .. })
                    | (FeatureKind::Boolean, ColumnKind::Flag { .. })
            );
            if !kind_ok {
                return bad(format!(
                    "column '{}' does not match the kind of feature '{}'",
                    col.name, f.name
                ));
            }
            if let ColumnKind::Scaled { std, mean, impute } = col.kind {
                if !(std > 0.0 && std.is_finite() && mean.is_finite() && impute.is_finite()) {
                    return bad(format!("column '{}' has invalid scaling", col.name));
                }
            }
            let r = &mut self.ranges[col.feature];
            if r.start == r.end {
                *r = c..c + 1;
            } else {
                r.end = c + 1;
            }
            if let ColumnKind::OneHot { category } = &col.kind {
                let offset = c - r.start;
                if self.lookup[col.feature]
                    .insert(category.clone(), offset)
                    .is_some()
                {
                    return bad(format!("column '{}' is duplicated", col.name));
                }
            }
            last = Some(col.feature);
        }
        for (j, f) in self.spec.features.iter().enumerate() {
            if f.is_model_input() && self.ranges[j].is_empty() {
                return bad(format!("feature '{}' has no columns", f.name));
            }
        }
        Ok(())
    }

    /// Number of encoded columns (the model's feature count).
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// The columns that feature `j` (spec index) encodes into.
    pub fn feature_columns(&self, j: usize) -> std::ops::Range<usize> {
        self.ranges[j].clone()
    }

    /// Validates one record (values in spec order) and encodes it into `out` (length `width()`).
    /// Every invalid field is reported, not only the first. Does not allocate on success.
    pub fn transform(&self, record: &[Raw<'_>], out: &mut [f32]) -> Result<(), FeatureError> {
        assert_eq!(out.len(), self.width(), "output buffer has the wrong width");
        if record.len() != self.spec.features.len() {
            return Err(FeatureError::Invalid(vec![FieldError {
                field: String::new(),
                code: "wrong_type",
                message: format!(
                    "the record has {} values, the spec has {} features",
                    record.len(),
                    self.spec.features.len()
                ),
            }]));
        }
        let mut errors = Vec::new();
        for (j, f) in self.spec.features.iter().enumerate() {
            let range = self.ranges[j].clone();
            if range.is_empty() {
                // Not a model input (a protected attribute): not scored, but checked.
                if let Some(e) = invalid(f, record[j]) {
                    errors.push(e);
                }
                continue;
            }
            let value = match clean(f, record[j]) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let cols = &mut out[range.clone()];
            match (&self.columns[range.start].kind, value) {
                (ColumnKind::Scaled { impute, mean, std }, v) => {
                    cols[0] = match v {
                        Clean::Num(x) => ((x - mean) / std) as f32,
                        _ if self.keep_missing => f32::NAN,
                        _ => ((impute - mean) / std) as f32,
                    };
                }
                (ColumnKind::Flag { impute }, v) => {
                    cols[0] = match v {
                        Clean::Bool(b) => f32::from(u8::from(b)),
                        _ if self.keep_missing => f32::NAN,
                        _ => f32::from(u8::from(*impute)),
                    };
                }
                (ColumnKind::Passthrough, v) => {
                    cols[0] = if let Clean::Num(x) = v {
                        x as f32
                    } else {
                        f32::NAN
                    };
                }
                (ColumnKind::OneHot { .. }, v) => {
                    cols.fill(0.0);
                    if let Clean::Cat(c) = v {
                        // A category allowed by the spec but never seen in training encodes
                        // as all zeros, like a missing value.
                        if let Some(&k) = self.lookup[j].get(c) {
                            cols[k] = 1.0;
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(FeatureError::Invalid(errors))
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec::from_json(
            r#"{
            "format_version": 1,
            "target": {"name": "y", "positive": "bad"},
            "features": [
              {"name": "amount", "kind": "numeric", "min": 0, "max": 100, "reason": "High amount"},
              {"name": "purpose", "kind": "categorical", "reason": "Purpose"},
              {"name": "phone", "kind": "boolean", "required": false},
              {"name": "income", "kind": "numeric", "required": false, "on_invalid": "missing"},
              {"name": "sex", "kind": "categorical", "protected": true}
            ]}"#,
        )
        .unwrap()
    }

    fn fitted() -> Preprocessor {
        let rows = vec![
            vec![
                Raw::Num(10.0),
                Raw::Text("car"),
                Raw::Bool(true),
                Raw::Num(1.0),
                Raw::Text("m"),
            ],
            vec![
                Raw::Num(20.0),
                Raw::Text("tv"),
                Raw::Bool(false),
                Raw::Missing,
                Raw::Text("f"),
            ],
            vec![
                Raw::Num(30.0),
                Raw::Text("car"),
                Raw::Bool(true),
                Raw::Num(3.0),
                Raw::Text("f"),
            ],
            vec![
                Raw::Num(40.0),
                Raw::Text("car"),
                Raw::Missing,
                Raw::Num(5.0),
                Raw::Text("m"),
            ],
        ];
        Preprocessor::fit(&spec(), &rows).unwrap()
    }

    #[test]
    fn fit_learns_scaler_with_population_std_and_categories_by_frequency() {
        let p = fitted();
        let names: Vec<_> = p.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["amount", "purpose=car", "purpose=tv", "phone", "income"]
        );
        let ColumnKind::Scaled { mean, std, .. } = p.columns[0].kind else {
            panic!()
        };
        assert_eq!(mean, 25.0);
        // Population std of 10,20,30,40 is sqrt(125).
        assert!((std - 125f64.sqrt()).abs() < 1e-12);
        // income: median of 1,3,5 = 3 imputed for the missing row, so mean 3.
        let ColumnKind::Scaled { impute, mean, .. } = p.columns[4].kind else {
            panic!()
        };
        assert_eq!((impute, mean), (3.0, 3.0));
    }

    #[test]
    fn protected_features_are_left_out_of_the_model() {
        let p = fitted();
        assert!(p.columns.iter().all(|c| !c.name.starts_with("sex")));
        assert!(p.feature_columns(4).is_empty());
    }

    #[test]
    fn a_protected_value_may_be_left_out_but_a_sent_one_is_validated() {
        let p = fitted();
        let mut out = vec![0.0; p.width()];
        let record = |sex| {
            [
                Raw::Num(10.0),
                Raw::Text("car"),
                Raw::Missing,
                Raw::Missing,
                sex,
            ]
        };
        p.transform(&record(Raw::Missing), &mut out).unwrap();
        p.transform(&record(Raw::Text("f")), &mut out).unwrap();
        let Err(FeatureError::Invalid(errors)) = p.transform(&record(Raw::Num(1.0)), &mut out)
        else {
            panic!("a number for a categorical protected attribute was accepted")
        };
        assert_eq!(
            errors
                .iter()
                .map(|e| (e.field.as_str(), e.code))
                .collect::<Vec<_>>(),
            [("sex", "wrong_type")]
        );
    }

    #[test]
    fn transform_encodes_one_hot_and_scales() {
        let p = fitted();
        let mut out = vec![9.0; p.width()];
        p.transform(
            &[
                Raw::Text("35"),
                Raw::Text("tv"),
                Raw::Text("no"),
                Raw::Missing,
                Raw::Missing,
            ],
            &mut out,
        )
        .unwrap();
        assert!((out[0] - (10.0 / 125f64.sqrt()) as f32).abs() < 1e-6);
        assert_eq!(&out[1..4], &[0.0, 1.0, 0.0]);
        assert_eq!(out[4], 0.0, "imputed median equals the mean here");
    }

    #[test]
    fn transform_reports_every_invalid_field_at_once() {
        let p = fitted();
        let mut out = vec![0.0; p.width()];
        let err = p
            .transform(
                &[
                    Raw::Num(500.0),
                    Raw::Missing,
                    Raw::Text("maybe"),
                    Raw::Num(1.0),
                    Raw::Missing,
                ],
                &mut out,
            )
            .unwrap_err();
        let FeatureError::Invalid(errors) = err else {
            panic!()
        };
        let codes: Vec<_> = errors.iter().map(|e| (e.field.as_str(), e.code)).collect();
        assert_eq!(
            codes,
            [
                ("amount", "out_of_range"),
                ("purpose", "missing"),
                ("phone", "wrong_type")
            ]
        );
    }

    #[test]
    fn invalid_policy_missing_imputes_instead_of_rejecting() {
        let p = fitted();
        let mut out = vec![0.0; p.width()];
        p.transform(
            &[
                Raw::Num(1.0),
                Raw::Text("car"),
                Raw::Missing,
                Raw::Text("lots"),
                Raw::Missing,
            ],
            &mut out,
        )
        .unwrap();
        assert_eq!(out[4], 0.0);
    }

    #[test]
    fn keep_missing_encodes_missing_numbers_and_flags_as_nan_and_survives_a_round_trip() {
        let mut p = fitted();
        let row = [
            Raw::Num(10.0),
            Raw::Text("car"),
            Raw::Missing,
            Raw::Missing,
            Raw::Missing,
        ];
        let mut imputed = vec![0.0; p.width()];
        p.transform(&row, &mut imputed).unwrap();
        assert!(imputed.iter().all(|v| v.is_finite()));
        p.keep_missing = true;
        let p = Preprocessor::from_json_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert!(p.keep_missing);
        let mut kept = vec![0.0; p.width()];
        p.transform(&row, &mut kept).unwrap();
        let (phone, income) = (p.feature_columns(2).start, p.feature_columns(3).start);
        assert!(kept[phone].is_nan() && kept[income].is_nan());
        for (k, (a, b)) in imputed.iter().zip(&kept).enumerate() {
            if k != phone && k != income {
                assert_eq!(a, b, "column {k}");
            }
        }
        // Without the flag, the serialized form is what it was.
        assert!(!serde_json::to_string(&fitted())
            .unwrap()
            .contains("keep_missing"));
    }

    #[test]
    fn monotone_constraints_are_for_numeric_features_only() {
        let mut s = spec();
        s.features[0].monotone = Some(crate::spec::Monotone::Increasing);
        s.check().unwrap();
        let back = Spec::from_json(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(
            back.features[0].monotone,
            Some(crate::spec::Monotone::Increasing)
        );
        assert!(serde_json::to_string(&s)
            .unwrap()
            .contains(r#""monotone":"increasing""#));
        s.features[1].monotone = Some(crate::spec::Monotone::Decreasing);
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("'purpose' has a monotone constraint"), "{err}");
        assert!(Spec::from_json(
            r#"{"format_version": 1, "target": {"name": "y", "positive": "1"},
                "features": [{"name": "a", "kind": "numeric", "monotone": "upwards"}]}"#
        )
        .is_err());
    }

    #[test]
    fn non_finite_numbers_are_rejected() {
        let p = fitted();
        let mut out = vec![0.0; p.width()];
        let err = p
            .transform(
                &[
                    Raw::Num(f64::NAN),
                    Raw::Text("car"),
                    Raw::Missing,
                    Raw::Missing,
                    Raw::Missing,
                ],
                &mut out,
            )
            .unwrap_err();
        assert!(err.to_string().contains("finite"), "{err}");
    }

    #[test]
    fn unseen_category_encodes_as_all_zeros() {
        let p = fitted();
        let mut out = vec![0.0; p.width()];
        p.transform(
            &[
                Raw::Num(1.0),
                Raw::Text("boat"),
                Raw::Missing,
                Raw::Missing,
                Raw::Missing,
            ],
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[1..3], &[0.0, 0.0]);
    }

    #[test]
    fn serialization_round_trips_and_tampering_is_detected() {
        let p = fitted();
        let v = serde_json::to_value(&p).unwrap();
        let back = Preprocessor::from_json_value(v.clone()).unwrap();
        assert_eq!(back.feature_columns(1), 1..3);
        let mut bad = v.clone();
        bad["columns"][0]["feature"] = serde_json::json!(1);
        assert!(Preprocessor::from_json_value(bad).is_err());
        let mut bad = v;
        bad["format_version"] = serde_json::json!(99);
        let err = Preprocessor::from_json_value(bad).unwrap_err().to_string();
        assert!(err.contains("format_version 99"), "{err}");
    }

    #[test]
    fn training_row_with_bad_value_names_row_and_field() {
        let rows = vec![vec![
            Raw::Text("abc"),
            Raw::Text("car"),
            Raw::Missing,
            Raw::Missing,
            Raw::Missing,
        ]];
        let err = Preprocessor::fit(&spec(), &rows).unwrap_err().to_string();
        assert!(
            err.contains("training row 0") && err.contains("amount"),
            "{err}"
        );
    }

    #[test]
    fn passthrough_keeps_values_and_marks_missing_as_nan() {
        let mut s = spec();
        s.features.retain(|f| f.kind == FeatureKind::Numeric);
        let p = Preprocessor::passthrough(&s).unwrap();
        let mut out = vec![0.0; 2];
        p.transform(&[Raw::Num(12.5), Raw::Missing], &mut out)
            .unwrap();
        assert_eq!(out[0], 12.5);
        assert!(out[1].is_nan());
        assert!(
            Preprocessor::passthrough(&spec()).is_err(),
            "categorical features are refused"
        );
    }

    #[test]
    fn spec_rejects_duplicates_and_bad_ranges() {
        let mut s = spec();
        s.features[1].name = "amount".into();
        assert!(s.check().is_err());
        let mut s = spec();
        s.features[0].min = Some(5.0);
        s.features[0].max = Some(1.0);
        assert!(s.check().is_err());
        assert!(Spec::from_json(
            r#"{"format_version":1,"target":{"name":"y","positive":"1"},"features":[],"extra":1}"#
        )
        .is_err());
    }
}
