//! Gradient-boosted trees with the `gbdt` crate, driven so that training is seeded,
//! reports progress, and optionally runs on quantile-binned features.

use gbdt::config::Config;
use gbdt::decision_tree::{Data, DataVec};
use gbdt::gradient_boost::GBDT;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::trees::{Ensemble, Node, Tree};
use crate::ModelError;

/// Most bins per column of the hist engine (its bin matrix is `u8`).
pub const MAX_BINS: usize = 256;

/// Which learner grows the trees. Both produce the same portable [`Ensemble`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The in-house histogram learner (`crate::hist`): XGBoost's objective, missing-value
    /// directions, monotone constraints.
    #[default]
    Hist,
    /// The `gbdt` crate (exact splits, imputed inputs): the engine this platform started with.
    Gbdt,
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Engine, String> {
        match s {
            "hist" => Ok(Engine::Hist),
            "gbdt" => Ok(Engine::Gbdt),
            other => Err(format!("unknown engine '{other}' (hist or gbdt)")),
        }
    }
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Hist => "hist",
            Engine::Gbdt => "gbdt",
        }
    }
}

/// Booster settings. Defaults match the reference XGBoost setup (200 trees, depth 4, eta 0.05).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    /// Settings written before engines existed were `gbdt` ones.
    #[serde(default = "gbdt_engine")]
    pub engine: Engine,
    pub trees: usize,
    pub max_depth: u32,
    pub learning_rate: f32,
    /// Minimum rows in a leaf.
    pub min_leaf: usize,
    /// Fraction of rows each tree sees (seeded; 1.0 = all).
    pub row_subsample: f64,
    /// Fraction of columns each tree may split on (seeded; 1.0 = all).
    pub col_subsample: f64,
    /// Quantile bins per numeric column before fitting (0 = exact split search with `gbdt`,
    /// 256 with `hist`, which always bins).
    pub bins: usize,
    pub seed: u64,
    /// L2 penalty on leaf weights (`hist`; XGBoost's `lambda`).
    #[serde(default = "one")]
    pub lambda: f64,
    /// Least hessian sum in a child (`hist`; XGBoost's `min_child_weight`).
    #[serde(default = "one")]
    pub min_child_weight: f64,
    /// Least gain for a split (`hist`; XGBoost's `gamma`).
    #[serde(default)]
    pub gamma: f64,
    /// Stop when the held-out log loss has not improved for this many trees (0 = off; `hist`).
    #[serde(default)]
    pub early_stopping_rounds: usize,
    /// Share of the training rows held out for early stopping.
    #[serde(default = "tenth")]
    pub validation_fraction: f64,
    /// Weight of each default relative to a repayment (`hist`; XGBoost's `scale_pos_weight`).
    #[serde(default = "one")]
    pub scale_pos_weight: f64,
}

fn gbdt_engine() -> Engine {
    Engine::Gbdt
}
fn one() -> f64 {
    1.0
}
fn tenth() -> f64 {
    0.1
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            engine: Engine::default(),
            trees: 200,
            max_depth: 4,
            learning_rate: 0.05,
            min_leaf: 5,
            row_subsample: 1.0,
            col_subsample: 1.0,
            bins: 0,
            seed: 42,
            lambda: 1.0,
            min_child_weight: 1.0,
            gamma: 0.0,
            early_stopping_rounds: 0,
            validation_fraction: 0.1,
            scale_pos_weight: 1.0,
        }
    }
}

impl TrainParams {
    pub fn check(&self) -> Result<(), ModelError> {
        let bad = |m: &str| Err(ModelError::InvalidParams(m.to_string()));
        if self.trees == 0 {
            return bad("trees must be at least 1");
        }
        if self.max_depth == 0 || self.max_depth as usize > crate::trees::MAX_DEPTH {
            return bad("max depth must be between 1 and 16");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad("learning rate must be in (0, 1]");
        }
        if !(self.row_subsample > 0.0 && self.row_subsample <= 1.0) {
            return bad("row subsample must be in (0, 1]");
        }
        if !(self.col_subsample > 0.0 && self.col_subsample <= 1.0) {
            return bad("column subsample must be in (0, 1]");
        }
        if self.min_leaf == 0 {
            return bad("min leaf must be at least 1");
        }
        if self.bins == 1 || self.bins > 65_536 {
            return bad("bins must be 0 (off) or between 2 and 65536");
        }
        if self.engine == Engine::Hist && self.bins > MAX_BINS {
            return bad("the hist engine uses at most 256 bins per column");
        }
        if !(self.lambda >= 0.0 && self.lambda.is_finite()) {
            return bad("lambda must be a finite number >= 0");
        }
        if !(self.min_child_weight >= 0.0 && self.min_child_weight.is_finite()) {
            return bad("min child weight must be a finite number >= 0");
        }
        if !(self.gamma >= 0.0 && self.gamma.is_finite()) {
            return bad("gamma must be a finite number >= 0");
        }
        if !(self.scale_pos_weight > 0.0 && self.scale_pos_weight.is_finite()) {
            return bad("scale_pos_weight must be a finite number > 0");
        }
        if self.early_stopping_rounds > 0
            && !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0)
        {
            return bad("validation fraction must be between 0 and 1");
        }
        if self.engine == Engine::Gbdt
            && (self.early_stopping_rounds > 0 || self.scale_pos_weight != 1.0)
        {
            return bad("early stopping and class weights need the hist engine");
        }
        Ok(())
    }
}

/// The columns one tree may split on: a seeded share `fraction` of `width` (all when 1.0).
pub(crate) fn column_mask(width: usize, fraction: f64, rng: &mut ChaCha8Rng) -> Vec<bool> {
    if fraction >= 1.0 {
        return vec![true; width];
    }
    let take = ((width as f64 * fraction).round() as usize).max(1);
    let mut cols: Vec<usize> = (0..width).collect();
    cols.shuffle(rng);
    let mut m = vec![false; width];
    for c in &cols[..take] {
        m[*c] = true;
    }
    m
}

/// Per-column quantile cut points; a column with few distinct values is left as is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bins {
    cuts: Vec<Option<Vec<f32>>>,
}

impl Bins {
    /// Learns up to `bins` quantile bins per column of row-major `x` (`width` wide).
    pub fn fit(x: &[f32], width: usize, bins: usize) -> Bins {
        let n = x.len() / width;
        let cuts = (0..width)
            .map(|j| {
                let mut col: Vec<f32> = x.iter().skip(j).step_by(width).copied().collect();
                col.sort_by(f32::total_cmp);
                col.dedup();
                if col.len() <= bins {
                    return None;
                }
                let mut sorted: Vec<f32> = x.iter().skip(j).step_by(width).copied().collect();
                sorted.sort_by(f32::total_cmp);
                let mut c: Vec<f32> = (1..bins).map(|k| sorted[k * n / bins]).collect();
                c.dedup();
                // A cut at the minimum would leave bin 0 empty.
                c.retain(|v| *v > sorted[0]);
                Some(c)
            })
            .collect();
        Bins { cuts }
    }

    /// Replaces binned columns by their bin index (the number of cuts at or below the value).
    pub fn apply(&self, x: &mut [f32]) {
        let w = self.cuts.len();
        for row in x.chunks_exact_mut(w) {
            for (v, cuts) in row.iter_mut().zip(&self.cuts) {
                if let Some(c) = cuts {
                    *v = c.partition_point(|cut| *cut <= *v) as f32;
                }
            }
        }
    }

    /// Maps a split learned on bin indices back to a raw-value threshold with the same effect:
    /// `bin < t` holds exactly when `x < cuts[ceil(t) - 1]`.
    fn raw_threshold(&self, feature: usize, t: f32) -> f32 {
        match &self.cuts[feature] {
            None => t,
            Some(c) => {
                let k = t.ceil();
                if k < 1.0 {
                    f32::NEG_INFINITY
                } else if k as usize > c.len() {
                    f32::INFINITY
                } else {
                    c[k as usize - 1]
                }
            }
        }
    }
}

/// What training produced: the portable ensemble, plus the crate's own model for checking.
pub struct Trained {
    pub ensemble: Ensemble,
    /// The `gbdt` crate's model over all trees (inputs binned with `bins` if set).
    pub gbdt: GBDT,
    pub bins: Option<Bins>,
}

/// Trains on row-major `x` (`width` columns) with labels `y` (true = default).
/// `progress` is called with the number of trees built so far.
pub fn train(
    x: &[f32],
    y: &[bool],
    width: usize,
    params: &TrainParams,
    progress: &mut dyn FnMut(usize),
) -> Result<Trained, ModelError> {
    params.check()?;
    let n = y.len();
    if n == 0 || x.len() != n * width {
        return Err(ModelError::InvalidParams(
            "training matrix and labels disagree".into(),
        ));
    }
    if x.iter().any(|v| !v.is_finite()) {
        // The crate panics on NaN and treats f32::MIN as missing: impute upstream.
        return Err(ModelError::InvalidParams(
            "training data must be finite (impute first)".into(),
        ));
    }
    let positives = y.iter().filter(|v| **v).count();
    if positives == 0 || positives == n {
        return Err(ModelError::InvalidParams(
            "training labels need both classes".into(),
        ));
    }
    let bins = (params.bins > 0).then(|| Bins::fit(x, width, params.bins));
    let mut xb = x.to_vec();
    if let Some(b) = &bins {
        b.apply(&mut xb);
    }
    let label = |v: bool| if v { 1.0 } else { -1.0 };
    // LogLikelyhood's initial guess, as the crate computes it: half the log-odds.
    let mean: f32 = y.iter().map(|v| label(*v)).sum::<f32>() / n as f32;
    let bias: f32 = ((1.0 + mean) / (1.0 - mean)).ln() / 2.0;

    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let sampling = params.row_subsample < 1.0 || params.col_subsample < 1.0;
    // Trees per call to the crate: one when sampling (each tree its own seeded sample),
    // otherwise a few calls so that progress can be shown.
    let step = if sampling {
        1
    } else {
        params.trees.div_ceil(20).max(1)
    };
    let mut margin = vec![bias; n];
    let mut merged: Option<serde_json::Value> = None;
    let mut built = 0;
    while built < params.trees {
        let k = step.min(params.trees - built);
        let rows: Vec<usize> = if params.row_subsample < 1.0 {
            let take = ((n as f64 * params.row_subsample).round() as usize).max(1);
            let mut idx: Vec<usize> = (0..n).collect();
            idx.shuffle(&mut rng);
            idx.truncate(take);
            idx.sort_unstable();
            idx
        } else {
            (0..n).collect()
        };
        let mask = column_mask(width, params.col_subsample, &mut rng);
        let mut data: DataVec = rows
            .iter()
            .map(|&i| {
                // A masked column is constant for this tree, so it cannot be split on.
                let features = xb[i * width..(i + 1) * width]
                    .iter()
                    .zip(&mask)
                    .map(|(v, keep)| if *keep { *v } else { 0.0 })
                    .collect();
                Data::new_training_data(features, 1.0, label(y[i]), Some(margin[i]))
            })
            .collect();
        let mut cfg = Config::new();
        cfg.set_feature_size(width);
        cfg.set_max_depth(params.max_depth);
        cfg.set_iterations(k);
        cfg.set_shrinkage(params.learning_rate);
        cfg.set_min_leaf_size(params.min_leaf);
        cfg.set_loss("LogLikelyhood");
        cfg.enabled_initial_guess(true);
        let mut part = GBDT::new(&cfg);
        part.fit(&mut data);
        let value = serde_json::to_value(&part).map_err(|e| ModelError::Internal(e.to_string()))?;
        // Advance every row's margin exactly as the crate accumulates it.
        let trees = gbdt_trees(&value, params.learning_rate, None)?;
        for (i, m) in margin.iter_mut().enumerate() {
            let row = &xb[i * width..(i + 1) * width];
            for t in &trees {
                *m += t.nodes[t.leaf_index(row)].value;
            }
        }
        merged = Some(match merged {
            None => value,
            Some(mut all) => {
                let more = value["trees"].as_array().cloned().unwrap_or_default();
                if let Some(list) = all["trees"].as_array_mut() {
                    list.extend(more);
                }
                all
            }
        });
        built += k;
        progress(built);
    }
    let mut all = merged.ok_or_else(|| ModelError::Internal("no trees were built".into()))?;
    all["conf"]["iterations"] = serde_json::json!(params.trees);
    all["conf"]["initial_guess_enabled"] = serde_json::json!(false);
    all["bias"] = serde_json::json!(bias);
    let gbdt: GBDT =
        serde_json::from_value(all.clone()).map_err(|e| ModelError::Internal(e.to_string()))?;
    let trees = gbdt_trees(&all, params.learning_rate, bins.as_ref())?;
    // The crate's probability is sigmoid(2F): double F (exactly, in f32) so p = sigmoid(margin).
    let trees = trees
        .into_iter()
        .map(|mut t| {
            for node in &mut t.nodes {
                node.value *= 2.0;
            }
            t
        })
        .collect();
    let mut ensemble = Ensemble {
        n_features: width,
        base_margin: 2.0 * bias,
        trees,
    };
    ensemble.set_covers_from_rows(x);
    ensemble.check()?;
    Ok(Trained {
        ensemble,
        gbdt,
        bins,
    })
}

/// Reads the trees out of the crate's serialized model. Leaf values include the shrinkage
/// (computed as the crate does: `shrinkage * pred` in f32); covers are left at zero.
fn gbdt_trees(
    model: &serde_json::Value,
    shrinkage: f32,
    bins: Option<&Bins>,
) -> Result<Vec<Tree>, ModelError> {
    let bad = |m: &str| ModelError::Internal(format!("unexpected gbdt model layout: {m}"));
    let trees = model["trees"].as_array().ok_or_else(|| bad("no trees"))?;
    trees
        .iter()
        .map(|t| {
            let nodes = t["tree"]["tree"]
                .as_array()
                .ok_or_else(|| bad("no nodes"))?;
            // The crate's node list is indexed by `index`; 0 as a child means "none".
            let mut out = Vec::with_capacity(nodes.len());
            for n in nodes {
                let v = &n["value"];
                let get_f = |k: &str| v[k].as_f64().ok_or_else(|| bad(k));
                let left = n["left"].as_u64().ok_or_else(|| bad("left"))? as u32;
                let right = n["right"].as_u64().ok_or_else(|| bad("right"))? as u32;
                let is_leaf = v["is_leaf"].as_bool().ok_or_else(|| bad("is_leaf"))?;
                let feature = v["feature_index"]
                    .as_u64()
                    .ok_or_else(|| bad("feature_index"))? as u32;
                let threshold = get_f("feature_value")? as f32;
                let threshold = match bins {
                    Some(b) if !is_leaf => b.raw_threshold(feature as usize, threshold),
                    _ => threshold,
                };
                let pred = get_f("pred")? as f32;
                out.push(Node {
                    feature,
                    threshold,
                    left: if is_leaf { 0 } else { left },
                    right: if is_leaf { 0 } else { right },
                    default_left: true,
                    value: if is_leaf { shrinkage * pred } else { 0.0 },
                    cover: 0.0,
                });
            }
            Ok(Tree { nodes: out })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gbdt::decision_tree::Data;

    /// A small seeded problem with an interaction.
    fn data(n: usize) -> (Vec<f32>, Vec<bool>) {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        use rand::Rng;
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..n {
            let a: f32 = rng.gen_range(-2.0..2.0);
            let b: f32 = rng.gen_range(-2.0..2.0);
            let c: f32 = if rng.gen_bool(0.3) { 1.0 } else { 0.0 };
            let z = 1.2 * a - 0.8 * b * c + 0.3;
            y.push(rng.gen_bool(crate::trees::sigmoid(f64::from(z))));
            x.extend([a, b, c]);
        }
        (x, y)
    }

    fn gbdt_probs(model: &GBDT, x: &[f32], w: usize) -> Vec<f32> {
        let dv: DataVec = x
            .chunks(w)
            .map(|r| Data::new_test_data(r.to_vec(), None))
            .collect();
        model.predict(&dv)
    }

    #[test]
    fn fast_predictor_equals_gbdt_crate_predictions() {
        let (x, y) = data(600);
        let params = TrainParams {
            trees: 30,
            max_depth: 3,
            ..TrainParams::default()
        };
        let t = train(&x, &y, 3, &params, &mut |_| {}).unwrap();
        let p = crate::Predictor::new(&t.ensemble);
        let theirs = gbdt_probs(&t.gbdt, &x, 3);
        for (row, want) in x.chunks(3).zip(theirs) {
            let ours = crate::trees::sigmoid(f64::from(p.margin(row)));
            assert!((ours - f64::from(want)).abs() < 1e-6, "{ours} vs {want}");
        }
    }

    #[test]
    fn binned_model_thresholds_map_back_to_raw_values() {
        let (x, y) = data(800);
        let params = TrainParams {
            trees: 20,
            max_depth: 3,
            bins: 16,
            ..TrainParams::default()
        };
        let t = train(&x, &y, 3, &params, &mut |_| {}).unwrap();
        let bins = t.bins.clone().unwrap();
        let mut xb = x.clone();
        bins.apply(&mut xb);
        let theirs = gbdt_probs(&t.gbdt, &xb, 3);
        let p = crate::Predictor::new(&t.ensemble);
        for (row, want) in x.chunks(3).zip(theirs) {
            let ours = crate::trees::sigmoid(f64::from(p.margin(row)));
            assert!((ours - f64::from(want)).abs() < 1e-6, "{ours} vs {want}");
        }
    }

    #[test]
    fn training_is_deterministic_for_a_seed_even_with_subsampling() {
        let (x, y) = data(400);
        let params = TrainParams {
            trees: 10,
            row_subsample: 0.7,
            col_subsample: 0.67,
            seed: 9,
            ..TrainParams::default()
        };
        let a = train(&x, &y, 3, &params, &mut |_| {}).unwrap().ensemble;
        let b = train(&x, &y, 3, &params, &mut |_| {}).unwrap().ensemble;
        assert_eq!(a, b);
        let c = train(&x, &y, 3, &TrainParams { seed: 10, ..params }, &mut |_| {})
            .unwrap()
            .ensemble;
        assert_ne!(a, c);
    }

    #[test]
    fn covers_count_training_rows() {
        let (x, y) = data(300);
        let t = train(
            &x,
            &y,
            3,
            &TrainParams {
                trees: 3,
                ..TrainParams::default()
            },
            &mut |_| {},
        )
        .unwrap();
        for tree in &t.ensemble.trees {
            assert_eq!(tree.nodes[0].cover, 300.0);
        }
    }

    #[test]
    fn rejects_non_finite_data_and_single_class_labels() {
        let (mut x, y) = data(50);
        assert!(train(&x, &[false; 50], 3, &TrainParams::default(), &mut |_| {}).is_err());
        x[4] = f32::NAN;
        assert!(train(&x, &y, 3, &TrainParams::default(), &mut |_| {}).is_err());
    }
}
