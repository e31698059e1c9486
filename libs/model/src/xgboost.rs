//! Reads the JSON model XGBoost 1.x–3.x writes with `save_model("*.json")` (gbtree,
//! `binary:logistic`), so models trained in Python serve exactly like ours.

use serde_json::Value;

use crate::trees::{Ensemble, Node, Tree};
use crate::ModelError;

fn bad(m: impl Into<String>) -> ModelError {
    ModelError::InvalidModel(format!("XGBoost model: {}", m.into()))
}

/// XGBoost writes scalars in `*_param` objects as strings, and from 3.1 on `base_score` as a
/// bracketed vector ("[3E-1]").
fn number(v: &Value, what: &str) -> Result<f64, ModelError> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| bad(what)),
        Value::String(s) => {
            let t = s.trim().trim_start_matches('[').trim_end_matches(']');
            let first = t.split(',').next().unwrap_or("").trim();
            first
                .parse()
                .map_err(|_| bad(format!("{what} '{s}' is not a number")))
        }
        _ => Err(bad(format!("{what} is missing"))),
    }
}

fn array<'a>(tree: &'a Value, key: &str, t: usize) -> Result<&'a Vec<Value>, ModelError> {
    tree[key]
        .as_array()
        .ok_or_else(|| bad(format!("tree {t} has no '{key}'")))
}

/// Parses the model; `feature_names` are the spec's model inputs, in order, checked against
/// the names stored in the model when it has them.
pub fn import(text: &str, feature_names: &[String]) -> Result<Ensemble, ModelError> {
    let root: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let learner = &root["learner"];
    if learner.is_null() {
        return Err(bad(
            "no 'learner' object (is this the JSON written by save_model?)",
        ));
    }
    let objective = learner["objective"]["name"].as_str().unwrap_or("");
    if objective != "binary:logistic" {
        return Err(bad(format!(
            "objective '{objective}' is not supported; only binary:logistic is"
        )));
    }
    let booster = &learner["gradient_booster"];
    let name = booster["name"].as_str().unwrap_or("");
    if name != "gbtree" {
        return Err(bad(format!(
            "booster '{name}' is not supported; only gbtree is"
        )));
    }
    let params = &learner["learner_model_param"];
    let num_class = number(&params["num_class"], "num_class").unwrap_or(0.0);
    if num_class > 1.0 {
        return Err(bad("multi-class models are not supported"));
    }
    let n_features = number(&params["num_feature"], "num_feature")? as usize;
    if n_features != feature_names.len() {
        return Err(bad(format!(
            "the model reads {n_features} features but the spec has {} model inputs",
            feature_names.len()
        )));
    }
    if let Some(names) = learner["feature_names"].as_array() {
        if !names.is_empty() {
            let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
            if names != feature_names.iter().map(String::as_str).collect::<Vec<_>>() {
                return Err(bad(format!(
                    "the model's features {names:?} differ from the spec's {feature_names:?} (names and order must match)"
                )));
            }
        }
    }
    let base_score = number(&params["base_score"], "base_score")?;
    if !(base_score > 0.0 && base_score < 1.0) {
        return Err(bad(format!("base_score {base_score} is not a probability")));
    }
    // XGBoost's ProbToMargin in f64, then f32 like its prediction buffer.
    let base_margin = (base_score / (1.0 - base_score)).ln() as f32;
    let trees = booster["model"]["trees"]
        .as_array()
        .ok_or_else(|| bad("no trees"))?;
    let mut out = Vec::with_capacity(trees.len());
    for (t, tree) in trees.iter().enumerate() {
        let left = array(tree, "left_children", t)?;
        let right = array(tree, "right_children", t)?;
        let feature = array(tree, "split_indices", t)?;
        let cond = array(tree, "split_conditions", t)?;
        let default_left = array(tree, "default_left", t)?;
        let hess = array(tree, "sum_hessian", t)?;
        let n = left.len();
        if [
            right.len(),
            feature.len(),
            cond.len(),
            default_left.len(),
            hess.len(),
        ]
        .iter()
        .any(|l| *l != n)
        {
            return Err(bad(format!("tree {t}: node arrays differ in length")));
        }
        if let Some(types) = tree["split_type"].as_array() {
            if types.iter().any(|v| v.as_u64() != Some(0)) {
                return Err(bad(format!(
                    "tree {t} has categorical splits; import models trained on numeric features"
                )));
            }
        }
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let l = left[i].as_i64().ok_or_else(|| bad("bad child index"))?;
            let r = right[i].as_i64().ok_or_else(|| bad("bad child index"))?;
            let value = number(&cond[i], "split condition")? as f32;
            let is_leaf = l == -1;
            if !is_leaf && (l <= 0 || r <= 0 || l as usize >= n || r as usize >= n) {
                return Err(bad(format!("tree {t} node {i}: invalid children")));
            }
            nodes.push(Node {
                feature: if is_leaf {
                    0
                } else {
                    feature[i].as_u64().ok_or_else(|| bad("bad split index"))? as u32
                },
                threshold: if is_leaf { 0.0 } else { value },
                left: if is_leaf { 0 } else { l as u32 },
                right: if is_leaf { 0 } else { r as u32 },
                // Written as 0/1 integers (older versions: booleans).
                default_left: default_left[i]
                    .as_u64()
                    .map(|v| v != 0)
                    .or(default_left[i].as_bool())
                    .unwrap_or(true),
                value: if is_leaf { value } else { 0.0 },
                cover: number(&hess[i], "sum_hessian")?,
            });
        }
        out.push(Tree { nodes });
    }
    let ensemble = Ensemble {
        n_features,
        base_margin,
        trees: out,
    };
    ensemble.check()?;
    Ok(ensemble)
}
