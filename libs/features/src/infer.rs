//! Drafting a spec from a table: a starting point for a person to edit.

use std::collections::BTreeSet;

use crate::{
    parse_bool, FeatureError, FeatureKind, FeatureSpec, InvalidPolicy, Spec, Target,
    SPEC_FORMAT_VERSION,
};

/// A column with more distinct text values than this is not drafted as categorical.
const MAX_CATEGORIES: usize = 100;

/// Drafts a spec from a header and rows of cells. A column where every non-empty cell is a
/// number becomes numeric; one with only yes/no-like values becomes boolean; text columns
/// become categorical, except one whose values are all distinct, which becomes the id column.
pub fn infer_spec(
    headers: &[String],
    rows: &[Vec<String>],
    target: &str,
    positive: &str,
) -> Result<Spec, FeatureError> {
    let t = headers.iter().position(|h| h == target).ok_or_else(|| {
        FeatureError::InvalidSpec(format!("there is no column '{target}' for the target"))
    })?;
    if !rows
        .iter()
        .any(|r| r.get(t).is_some_and(|v| v.trim() == positive))
    {
        return Err(FeatureError::InvalidSpec(format!(
            "no row has '{positive}' in the target column '{target}'"
        )));
    }
    let mut features = Vec::new();
    let mut id_column = None;
    for (j, name) in headers.iter().enumerate() {
        if j == t {
            continue;
        }
        let values: Vec<&str> = rows
            .iter()
            .filter_map(|r| r.get(j).map(|v| v.trim()))
            .filter(|v| !v.is_empty())
            .collect();
        let required = values.len() == rows.len();
        let numbers: Option<Vec<f64>> = values.iter().map(|v| v.parse::<f64>().ok()).collect();
        let distinct: BTreeSet<&str> = values.iter().copied().collect();
        let mut f = FeatureSpec {
            name: name.clone(),
            kind: FeatureKind::Numeric,
            required,
            min: None,
            max: None,
            categories: None,
            reason: name.replace('_', " "),
            protected: false,
            use_in_model: None,
            on_invalid: InvalidPolicy::Reject,
            description: None,
            // A constraint is a modelling decision, not something the data can say.
            monotone: None,
        };
        match numbers {
            Some(nums) if !nums.is_empty() => {
                // Only a sign constraint: observed extremes are not limits for new applicants.
                if nums.iter().all(|x| *x >= 0.0) {
                    f.min = Some(0.0);
                }
                let lo = nums.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = nums.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                f.description = Some(format!("observed range {lo} to {hi}"));
            }
            _ if distinct.len() == 2 && distinct.iter().all(|v| parse_bool(v).is_some()) => {
                f.kind = FeatureKind::Boolean;
            }
            _ if values.len() > 1 && distinct.len() == values.len() && id_column.is_none() => {
                id_column = Some(name.clone());
                continue;
            }
            _ if distinct.len() <= MAX_CATEGORIES => {
                f.kind = FeatureKind::Categorical;
                f.categories = Some(distinct.iter().map(|s| s.to_string()).collect());
            }
            _ => {
                f.kind = FeatureKind::Categorical;
                f.description = Some(format!(
                    "{} distinct values: categories are learned from training data",
                    distinct.len()
                ));
            }
        }
        features.push(f);
    }
    let spec = Spec {
        format_version: SPEC_FORMAT_VERSION,
        target: Target {
            name: target.to_string(),
            positive: positive.to_string(),
        },
        id_column,
        features,
    };
    spec.check()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_kinds_id_and_target() {
        let headers: Vec<String> = ["id", "amount", "purpose", "phone", "y"]
            .map(String::from)
            .to_vec();
        let rows: Vec<Vec<String>> = [
            ["a1", "100", "car", "yes", "bad"],
            ["a2", "", "tv", "no", "good"],
            ["a3", "300", "car", "yes", "good"],
        ]
        .iter()
        .map(|r| r.map(String::from).to_vec())
        .collect();
        let spec = infer_spec(&headers, &rows, "y", "bad").unwrap();
        assert_eq!(spec.id_column.as_deref(), Some("id"));
        let kinds: Vec<_> = spec
            .features
            .iter()
            .map(|f| (f.name.as_str(), f.kind, f.required))
            .collect();
        assert_eq!(
            kinds,
            [
                ("amount", FeatureKind::Numeric, false),
                ("purpose", FeatureKind::Categorical, true),
                ("phone", FeatureKind::Boolean, true)
            ]
        );
        assert_eq!(
            spec.features[1].categories.as_ref().unwrap(),
            &["car", "tv"]
        );
        assert!(infer_spec(&headers, &rows, "y", "default").is_err());
        assert!(infer_spec(&headers, &rows, "label", "bad").is_err());
    }
}
