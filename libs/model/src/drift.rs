//! Drift: how far the applicants scored now are from the ones the model was trained on, by the
//! population stability index (PSI).
//!
//! Training stores a [`Baseline`] in the bundle: for the score and for every model input, bins
//! (deciles of the training values for numeric features and the score; the categories for
//! categorical and boolean ones) plus a last bin for missing values (and, for categories, values
//! not seen in training), with the training share of each. Live traffic is counted into the same
//! bins ([`Window`], the last N decisions, or [`Counts`] for a file) and compared bin by bin:
//!
//! `PSI = Σ (actual − expected) · ln(actual / expected)`, shares floored at [`PSI_FLOOR`].
//!
//! The standard reading: below 0.1 stable, 0.1 to 0.25 watch, above 0.25 act ([`Level`]).

use std::collections::VecDeque;

use features::{clean, Clean, FeatureKind, Raw, Spec};
use serde::{Deserialize, Serialize};

/// A share below this counts as this in the PSI (an empty bin would make it infinite).
pub const PSI_FLOOR: f64 = 1e-4;
/// PSI at or above this is worth watching.
pub const PSI_WATCH: f64 = 0.1;
/// PSI above this calls for action.
pub const PSI_ACT: f64 = 0.25;

/// The training distributions the live ones are compared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Rows the baseline was computed from.
    pub rows: u64,
    pub score: Dist,
    /// One per model input, in spec order.
    pub features: Vec<FeatureDist>,
}

/// One feature's training distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDist {
    pub name: String,
    /// The feature's position in the spec.
    pub index: usize,
    #[serde(flatten)]
    pub dist: Dist,
}

/// Bins and the training share of each; the last share is the missing bin's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dist {
    pub bins: Bins,
    pub proportions: Vec<f64>,
}

/// How values are put into bins. Every kind has one more bin, last, for missing values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Bins {
    /// Cut points, ascending: bin `i` holds `edges[i-1] < x <= edges[i]` (open at both ends).
    Numeric { edges: Vec<f64> },
    /// One bin per category, ascending and without repeats; values not among them go to the
    /// last (missing or other) bin.
    Categorical { categories: Vec<String> },
}

/// PSI's reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Stable,
    Watch,
    Act,
}

impl Level {
    pub fn of(psi: f64) -> Level {
        if psi > PSI_ACT {
            Level::Act
        } else if psi >= PSI_WATCH {
            Level::Watch
        } else {
            Level::Stable
        }
    }
}

impl Bins {
    /// Deciles of `values` (missing ones left out) as cut points, without repeats.
    pub fn deciles(values: &[f64]) -> Bins {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = Vec::new();
        if !v.is_empty() {
            for k in 1..10 {
                let e = v[(k * (v.len() - 1)) / 10];
                if edges.last() != Some(&e) {
                    edges.push(e);
                }
            }
            // A cut at the maximum would leave its upper bin empty in training.
            if edges.last() == v.last() && edges.len() > 1 {
                edges.pop();
            }
        }
        Bins::Numeric { edges }
    }

    /// Bins, the missing bin included.
    pub fn len(&self) -> usize {
        match self {
            Bins::Numeric { edges } => edges.len() + 2,
            Bins::Categorical { categories } => categories.len() + 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The missing (or other) bin.
    pub fn missing(&self) -> usize {
        self.len() - 1
    }

    /// The bin of a number.
    pub fn of_number(&self, x: f64) -> usize {
        match self {
            Bins::Numeric { edges } if x.is_finite() => edges.partition_point(|e| *e < x),
            _ => self.missing(),
        }
    }

    /// The bin of a feature value, as validation reads it.
    pub fn of_value(&self, v: Clean<'_>) -> usize {
        match (self, v) {
            (Bins::Numeric { .. }, Clean::Num(x)) => self.of_number(x),
            (Bins::Categorical { .. }, Clean::Cat(c)) => self.of_category(c),
            (Bins::Categorical { .. }, Clean::Bool(b)) => {
                self.of_category(if b { "true" } else { "false" })
            }
            _ => self.missing(),
        }
    }

    /// The bin of a category: its place among the categories (ascending, as
    /// [`Baseline::check`] requires), or the last bin.
    pub fn of_category(&self, c: &str) -> usize {
        match self {
            Bins::Categorical { categories } => categories
                .binary_search_by(|k| k.as_str().cmp(c))
                .unwrap_or(self.missing()),
            Bins::Numeric { .. } => self.missing(),
        }
    }

    /// Readable labels, one per bin.
    pub fn labels(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.len());
        match self {
            Bins::Numeric { edges } => {
                for i in 0..=edges.len() {
                    out.push(match (i.checked_sub(1).map(|k| edges[k]), edges.get(i)) {
                        (None, Some(hi)) => format!("<= {}", short(*hi)),
                        (Some(lo), Some(hi)) => format!("({}, {}]", short(lo), short(*hi)),
                        (Some(lo), None) => format!("> {}", short(lo)),
                        (None, None) => "all".to_string(),
                    });
                }
                out.push("missing".into());
            }
            Bins::Categorical { categories } => {
                out.extend(categories.iter().cloned());
                out.push("missing or other".into());
            }
        }
        out
    }
}

fn short(x: f64) -> String {
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

impl Dist {
    /// Shares of `counts` (which must have one entry per bin).
    fn from_counts(bins: Bins, counts: &[u64]) -> Dist {
        let total: u64 = counts.iter().sum();
        let proportions = counts
            .iter()
            .map(|c| {
                if total == 0 {
                    0.0
                } else {
                    *c as f64 / total as f64
                }
            })
            .collect();
        Dist { bins, proportions }
    }

    /// PSI of `counts` (one per bin) against the training shares; 0 when nothing was counted.
    pub fn psi(&self, counts: &[u64]) -> f64 {
        psi(&self.proportions, counts)
    }
}

/// PSI of live `counts` against `expected` shares (same bins).
pub fn psi(expected: &[f64], counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    expected
        .iter()
        .zip(counts)
        .map(|(e, c)| {
            let a = (*c as f64 / total as f64).max(PSI_FLOOR);
            let e = e.max(PSI_FLOOR);
            (a - e) * (a / e).ln()
        })
        .sum()
}

impl Baseline {
    /// The baseline of training `rows` (values in spec order) and their calibrated
    /// probabilities. Features the model does not use are left out.
    pub fn fit(spec: &Spec, rows: &[Vec<Raw<'_>>], probabilities: &[f64]) -> Baseline {
        let mut features = Vec::new();
        for (j, f) in spec.features.iter().enumerate() {
            if !f.is_model_input() {
                continue;
            }
            let values: Vec<Clean<'_>> = rows
                .iter()
                .map(|r| clean(f, r[j]).unwrap_or(Clean::Missing))
                .collect();
            let bins = match f.kind {
                FeatureKind::Numeric => {
                    let nums: Vec<f64> = values
                        .iter()
                        .filter_map(|v| match v {
                            Clean::Num(x) => Some(*x),
                            _ => None,
                        })
                        .collect();
                    Bins::deciles(&nums)
                }
                FeatureKind::Categorical => {
                    let mut seen: Vec<String> = match &f.categories {
                        Some(allowed) => allowed.clone(),
                        None => values
                            .iter()
                            .filter_map(|v| match v {
                                Clean::Cat(c) => Some(c.to_string()),
                                _ => None,
                            })
                            .collect(),
                    };
                    seen.sort();
                    seen.dedup();
                    Bins::Categorical { categories: seen }
                }
                FeatureKind::Boolean => Bins::Categorical {
                    categories: vec!["false".into(), "true".into()],
                },
            };
            let mut counts = vec![0u64; bins.len()];
            for v in &values {
                counts[bins.of_value(*v)] += 1;
            }
            features.push(FeatureDist {
                name: f.name.clone(),
                index: j,
                dist: Dist::from_counts(bins, &counts),
            });
        }
        let bins = Bins::deciles(probabilities);
        let mut counts = vec![0u64; bins.len()];
        for p in probabilities {
            counts[bins.of_number(*p)] += 1;
        }
        Baseline {
            rows: rows.len() as u64,
            score: Dist::from_counts(bins, &counts),
            features,
        }
    }

    /// Checks the baseline against the spec it is stored with.
    pub fn check(&self, spec: &Spec) -> Result<(), String> {
        let dists = std::iter::once(("score", &self.score))
            .chain(self.features.iter().map(|f| (f.name.as_str(), &f.dist)));
        for (name, d) in dists {
            if d.proportions.len() != d.bins.len() {
                return Err(format!(
                    "the drift baseline of '{name}' has {} shares for {} bins",
                    d.proportions.len(),
                    d.bins.len()
                ));
            }
            match &d.bins {
                Bins::Numeric { edges } => {
                    if edges.windows(2).any(|w| w[0] >= w[1] || w[0].is_nan()) {
                        return Err(format!(
                            "the drift baseline of '{name}' has cut points out of order"
                        ));
                    }
                }
                Bins::Categorical { categories } => {
                    if categories.windows(2).any(|w| w[0] >= w[1]) {
                        return Err(format!(
                            "the drift baseline of '{name}' has categories out of order or repeated"
                        ));
                    }
                }
            }
        }
        for f in &self.features {
            let Some(s) = spec.features.get(f.index).filter(|s| s.name == f.name) else {
                return Err(format!(
                    "the drift baseline's feature '{}' is not at position {} of the spec",
                    f.name, f.index
                ));
            };
            if let (Bins::Categorical { categories }, Some(allowed)) = (&f.dist.bins, &s.categories)
            {
                if let Some(c) = categories.iter().find(|c| !allowed.contains(c)) {
                    return Err(format!(
                        "the drift baseline of '{}' has a category the spec does not allow: '{c}'",
                        f.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// Slots per decision in a [`Window`]: the score, then each feature.
    pub fn width(&self) -> usize {
        1 + self.features.len()
    }

    /// The bins of one scored record (values in spec order) into `out` (length [`width`]).
    /// A value that does not validate counts as missing. The baseline must have passed
    /// [`check`] against `spec`.
    ///
    /// [`width`]: Baseline::width
    /// [`check`]: Baseline::check
    pub fn bin(&self, spec: &Spec, record: &[Raw<'_>], probability: f64, out: &mut [u16]) {
        out[0] = self.score.bins.of_number(probability) as u16;
        for (k, f) in self.features.iter().enumerate() {
            let s = &spec.features[f.index];
            let bins = &f.dist.bins;
            let bin = match (s.kind, record.get(f.index)) {
                // One search instead of validation's and then the bins': the bins' categories
                // are among the spec's (`check`), so a text found there is valid, and one not
                // found is missing or other whether it is valid or not.
                (FeatureKind::Categorical, Some(Raw::Text(t))) => bins.of_category(t),
                (_, raw) => bins.of_value(
                    raw.and_then(|raw| clean(s, *raw).ok())
                        .unwrap_or(Clean::Missing),
                ),
            };
            out[k + 1] = bin as u16;
        }
    }

    /// Empty counts for this baseline's bins.
    pub fn counts(&self) -> Counts {
        Counts {
            n: 0,
            bins: std::iter::once(&self.score)
                .chain(self.features.iter().map(|f| &f.dist))
                .map(|d| vec![0; d.bins.len()])
                .collect(),
        }
    }
}

/// Decisions counted into a baseline's bins.
#[derive(Debug, Clone, PartialEq)]
pub struct Counts {
    pub n: u64,
    /// Per slot (score first, then features), per bin.
    pub bins: Vec<Vec<u64>>,
}

impl Counts {
    pub fn add(&mut self, slots: &[u16]) {
        self.n += 1;
        for (c, b) in self.bins.iter_mut().zip(slots) {
            c[usize::from(*b)] += 1;
        }
    }

    fn remove(&mut self, slots: impl IntoIterator<Item = u16>) {
        self.n -= 1;
        for (c, b) in self.bins.iter_mut().zip(slots) {
            c[usize::from(b)] -= 1;
        }
    }

    /// The PSI of every slot against `baseline`.
    pub fn report(&self, baseline: &Baseline) -> Report {
        let part = |d: &Dist, counts: &[u64]| {
            let total: u64 = counts.iter().sum();
            let psi = d.psi(counts);
            Part {
                psi,
                level: Level::of(psi),
                bins: d
                    .bins
                    .labels()
                    .into_iter()
                    .zip(&d.proportions)
                    .zip(counts)
                    .map(|((label, e), c)| BinShare {
                        bin: label,
                        expected: *e,
                        actual: if total == 0 {
                            0.0
                        } else {
                            *c as f64 / total as f64
                        },
                        count: *c,
                    })
                    .collect(),
            }
        };
        Report {
            window: self.n,
            score: part(&baseline.score, &self.bins[0]),
            features: baseline
                .features
                .iter()
                .zip(&self.bins[1..])
                .map(|(f, c)| (f.name.clone(), part(&f.dist, c)))
                .collect(),
        }
    }
}

/// PSI of the score and every feature, with the shares behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Decisions counted.
    pub window: u64,
    pub score: Part,
    pub features: std::collections::BTreeMap<String, Part>,
}

impl Report {
    /// Each feature's PSI, by name (for gauges).
    pub fn psi_by_feature(&self) -> Vec<(&str, f64)> {
        self.features
            .iter()
            .map(|(name, p)| (name.as_str(), p.psi))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Part {
    pub psi: f64,
    pub level: Level,
    pub bins: Vec<BinShare>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BinShare {
    pub bin: String,
    /// Training share.
    pub expected: f64,
    /// Share in the window.
    pub actual: f64,
    pub count: u64,
}

/// The last `capacity` decisions' bins, with their counts kept up to date.
#[derive(Debug)]
pub struct Window {
    capacity: usize,
    width: usize,
    slots: VecDeque<u16>,
    counts: Counts,
}

impl Window {
    pub fn new(baseline: &Baseline, capacity: usize) -> Window {
        Window {
            capacity: capacity.max(1),
            width: baseline.width(),
            slots: VecDeque::new(),
            counts: baseline.counts(),
        }
    }

    /// Counts one decision (`slots` from [`Baseline::bin`]), forgetting the oldest when full.
    pub fn push(&mut self, slots: &[u16]) {
        debug_assert_eq!(slots.len(), self.width);
        if self.counts.n as usize >= self.capacity {
            self.counts.remove(self.slots.drain(..self.width));
        }
        self.slots.extend(slots.iter().copied());
        self.counts.add(slots);
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }
}

/// A serving model's drift watch: its baseline and the window of its last decisions, shared by
/// the threads that score. Binning happens outside the lock; the lock covers one push.
#[derive(Debug)]
pub struct Monitor {
    baseline: Baseline,
    window: std::sync::Mutex<Window>,
}

impl Monitor {
    /// A watch over the last `capacity` decisions against `baseline` (a bundle's
    /// `drift_baseline`).
    pub fn new(baseline: &Baseline, capacity: usize) -> Monitor {
        Monitor {
            baseline: baseline.clone(),
            window: std::sync::Mutex::new(Window::new(baseline, capacity)),
        }
    }

    /// Counts one scored decision (record values in spec order).
    pub fn observe(&self, spec: &Spec, record: &[Raw<'_>], probability: f64) {
        // On the stack for any spec of up to 63 features (one call per request).
        let (mut stack, mut heap) = ([0u16; 64], Vec::new());
        let width = self.baseline.width();
        let slots = if width <= stack.len() {
            &mut stack[..width]
        } else {
            heap.resize(width, 0);
            &mut heap[..]
        };
        self.baseline.bin(spec, record, probability, slots);
        self.window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(slots);
    }

    /// Counts decisions binned beforehand ([`Baseline::bin`], one after another), at once.
    pub fn observe_binned(&self, slots: &[u16]) {
        let mut w = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for one in slots.chunks_exact(self.baseline.width()) {
            w.push(one);
        }
    }

    /// The PSI of the window so far.
    pub fn report(&self) -> Report {
        let counts = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .counts()
            .clone();
        counts.report(&self.baseline)
    }

    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    /// Decisions the window holds at most.
    pub fn capacity(&self) -> usize {
        self.window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_of_the_training_shares_is_zero_and_grows_with_the_shift() {
        let e = [0.25, 0.25, 0.25, 0.25, 0.0];
        assert_eq!(psi(&e, &[10, 10, 10, 10, 0]), 0.0);
        let small = psi(&e, &[12, 10, 10, 8, 0]);
        let large = psi(&e, &[30, 5, 3, 2, 0]);
        assert!(small > 0.0 && small < PSI_WATCH, "{small}");
        assert!(large > PSI_ACT, "{large}");
        // By hand for [12, 10, 10, 8]: the two bins that moved.
        let by_hand =
            (0.3f64 - 0.25) * (0.3f64 / 0.25).ln() + (0.2f64 - 0.25) * (0.2f64 / 0.25).ln();
        assert!((small - by_hand).abs() < 1e-12, "{small} vs {by_hand}");
        assert_eq!(psi(&e, &[0, 0, 0, 0, 0]), 0.0);
    }

    #[test]
    fn deciles_cut_ten_bins_and_values_land_in_the_right_one() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let bins = Bins::deciles(&v);
        let Bins::Numeric { edges } = &bins else {
            panic!()
        };
        assert_eq!(edges.len(), 9, "{edges:?}");
        assert_eq!(bins.len(), 11);
        assert_eq!(bins.of_number(1.0), 0);
        assert_eq!(bins.of_number(100.0), 9);
        assert_eq!(bins.of_number(f64::NAN), 10);
        assert_eq!(bins.of_number(edges[0]), 0, "upper edges are inclusive");
        assert_eq!(bins.of_number(edges[0] + 0.5), 1);
        // Few distinct values: no repeated cut points, no empty top bin.
        let bins = Bins::deciles(&[1.0, 1.0, 1.0, 2.0, 2.0, 3.0]);
        assert_eq!(
            bins,
            Bins::Numeric {
                edges: vec![1.0, 2.0]
            }
        );
        assert_eq!(bins.labels(), vec!["<= 1", "(1, 2]", "> 2", "missing"]);
    }

    #[test]
    fn a_window_forgets_the_oldest_decisions() {
        let baseline = Baseline {
            rows: 2,
            score: Dist {
                bins: Bins::Numeric { edges: vec![0.5] },
                proportions: vec![0.5, 0.5, 0.0],
            },
            features: vec![],
        };
        let mut w = Window::new(&baseline, 3);
        for b in [0u16, 0, 0, 1, 1] {
            w.push(&[b]);
        }
        assert_eq!(w.counts().n, 3);
        assert_eq!(w.counts().bins[0], vec![1, 2, 0]);
        w.push(&[1]);
        assert_eq!(w.counts().bins[0], vec![0, 3, 0]);
        let report = w.counts().report(&baseline);
        assert_eq!(report.window, 3);
        assert_eq!(report.score.level, Level::Act);
    }
}
