//! Model quality on labelled data: ranking, calibration, errors at the decision thresholds.

use serde::{Deserialize, Serialize};

use crate::Thresholds;

/// One score band of a calibration table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    pub mean_predicted: f64,
    pub observed_rate: f64,
}

pub use crate::calibration::Confusion;

/// Everything `evaluate` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub rows: usize,
    pub positives: usize,
    pub roc_auc: f64,
    pub pr_auc: f64,
    pub ks: f64,
    pub brier: f64,
    pub log_loss: f64,
    /// Counts with `decline` as the positive prediction.
    pub at_decline: Confusion,
    /// Counts with `review` or `decline` as the positive prediction.
    pub at_review: Confusion,
    /// Share of rows per decision.
    pub decision_rates: DecisionRates,
    pub calibration: Vec<Band>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecisionRates {
    pub approve: f64,
    pub review: f64,
    pub decline: f64,
}

impl Metrics {
    /// Computes all metrics of probabilities `p` against labels `y` (true = default).
    pub fn compute(p: &[f64], y: &[bool], thresholds: &Thresholds) -> Metrics {
        let n = p.len().max(1) as f64;
        let positives = y.iter().filter(|v| **v).count();
        let eps = 1e-15;
        let brier = p
            .iter()
            .zip(y)
            .map(|(pi, yi)| (pi - f64::from(u8::from(*yi))).powi(2))
            .sum::<f64>()
            / n;
        let log_loss = -p
            .iter()
            .zip(y)
            .map(|(pi, yi)| {
                let q = pi.clamp(eps, 1.0 - eps);
                if *yi {
                    q.ln()
                } else {
                    (1.0 - q).ln()
                }
            })
            .sum::<f64>()
            / n;
        let count = |f: &dyn Fn(f64) -> bool| p.iter().filter(|x| f(**x)).count() as f64 / n;
        Metrics {
            rows: p.len(),
            positives,
            roc_auc: roc_auc(p, y),
            pr_auc: average_precision(p, y),
            ks: ks(p, y),
            brier,
            log_loss,
            at_decline: Confusion::at(p, y, thresholds.decline),
            at_review: Confusion::at(p, y, thresholds.approve),
            decision_rates: DecisionRates {
                approve: count(&|x| x < thresholds.approve),
                review: count(&|x| x >= thresholds.approve && x < thresholds.decline),
                decline: count(&|x| x >= thresholds.decline),
            },
            calibration: calibration_bands(p, y, 10),
        }
    }
}

/// Indices sorted by descending score.
fn by_score_desc(p: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    idx
}

/// Area under the ROC curve by the rank-sum formula, ties counted half.
pub fn roc_auc(p: &[f64], y: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && p[idx[j + 1]] == p[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += (i..=j).filter(|&k| y[idx[k]]).count() as f64 * avg_rank;
        i = j + 1;
    }
    let pos = y.iter().filter(|v| **v).count() as f64;
    let neg = y.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Area under the precision-recall curve as average precision (scikit-learn's definition).
pub fn average_precision(p: &[f64], y: &[bool]) -> f64 {
    let idx = by_score_desc(p);
    let pos = y.iter().filter(|v| **v).count() as f64;
    if pos == 0.0 {
        return f64::NAN;
    }
    let (mut tp, mut fp, mut ap, mut last_recall) = (0.0, 0.0, 0.0, 0.0);
    for (k, &i) in idx.iter().enumerate() {
        if y[i] {
            tp += 1.0
        } else {
            fp += 1.0
        }
        // Only at the end of a run of tied scores.
        if k + 1 < idx.len() && p[idx[k + 1]] == p[i] {
            continue;
        }
        let recall = tp / pos;
        ap += (recall - last_recall) * tp / (tp + fp);
        last_recall = recall;
    }
    ap
}

/// Kolmogorov-Smirnov: the largest gap between the score distributions of the two classes.
pub fn ks(p: &[f64], y: &[bool]) -> f64 {
    let idx = by_score_desc(p);
    let pos = y.iter().filter(|v| **v).count() as f64;
    let neg = y.len() as f64 - pos;
    let (mut tp, mut fp, mut best) = (0.0, 0.0, 0.0f64);
    for (k, &i) in idx.iter().enumerate() {
        if y[i] {
            tp += 1.0
        } else {
            fp += 1.0
        }
        if k + 1 < idx.len() && p[idx[k + 1]] == p[i] {
            continue;
        }
        best = best.max(tp / pos.max(1.0) - fp / neg.max(1.0));
    }
    best
}

/// Points of the ROC curve (false positive rate, true positive rate), for plots.
pub fn roc_curve(p: &[f64], y: &[bool]) -> Vec<(f64, f64)> {
    let idx = by_score_desc(p);
    let pos = y.iter().filter(|v| **v).count().max(1) as f64;
    let neg = (y.len() as f64 - y.iter().filter(|v| **v).count() as f64).max(1.0);
    let mut out = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    for (k, &i) in idx.iter().enumerate() {
        if y[i] {
            tp += 1.0
        } else {
            fp += 1.0
        }
        if k + 1 == idx.len() || p[idx[k + 1]] != p[i] {
            out.push((fp / neg, tp / pos));
        }
    }
    out
}

/// Points of the precision-recall curve (recall, precision), for plots.
pub fn pr_curve(p: &[f64], y: &[bool]) -> Vec<(f64, f64)> {
    let idx = by_score_desc(p);
    let pos = y.iter().filter(|v| **v).count().max(1) as f64;
    let mut out = Vec::new();
    let (mut tp, mut fp) = (0.0, 0.0);
    for (k, &i) in idx.iter().enumerate() {
        if y[i] {
            tp += 1.0
        } else {
            fp += 1.0
        }
        if k + 1 == idx.len() || p[idx[k + 1]] != p[i] {
            out.push((tp / pos, tp / (tp + fp)));
        }
    }
    out
}

/// Calibration table by equal-count score bands (deciles for `bands = 10`).
pub fn calibration_bands(p: &[f64], y: &[bool], bands: usize) -> Vec<Band> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let n = idx.len();
    (0..bands)
        .filter_map(|b| {
            let (lo, hi) = (b * n / bands, (b + 1) * n / bands);
            if lo == hi {
                return None;
            }
            let slice = &idx[lo..hi];
            let count = slice.len();
            Some(Band {
                lower: p[slice[0]],
                upper: p[slice[count - 1]],
                count,
                mean_predicted: slice.iter().map(|&i| p[i]).sum::<f64>() / count as f64,
                observed_rate: slice.iter().filter(|&&i| y[i]).count() as f64 / count as f64,
            })
        })
        .collect()
}

/// Population stability index between a baseline histogram and observed scores, with the
/// baseline's bin edges; a common drift alarm is PSI > 0.25.
pub fn psi(baseline: &crate::ScoreDistribution, scores: &[f64]) -> f64 {
    let observed = crate::ScoreDistribution::histogram(scores, baseline.edges.len() - 1);
    let total_b: f64 = baseline.counts.iter().sum::<u64>() as f64;
    let total_o: f64 = observed.counts.iter().sum::<u64>() as f64;
    baseline
        .counts
        .iter()
        .zip(&observed.counts)
        .map(|(b, o)| {
            let pb = (*b as f64 / total_b).max(1e-6);
            let po = (*o as f64 / total_o).max(1e-6);
            (po - pb) * (po / pb).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_ks_and_ap_on_known_cases() {
        let p = [0.1, 0.4, 0.35, 0.8];
        let y = [false, false, true, true];
        assert!((roc_auc(&p, &y) - 0.75).abs() < 1e-12);
        // scikit-learn: average_precision_score([0,0,1,1],[0.1,0.4,0.35,0.8]) = 0.8333...
        assert!((average_precision(&p, &y) - 0.833_333_333_333).abs() < 1e-9);
        assert!((ks(&p, &y) - 0.5).abs() < 1e-12);
        let tied = [0.5, 0.5, 0.5, 0.5];
        assert!((roc_auc(&tied, &y) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn confusion_and_bands_add_up() {
        let p: Vec<f64> = (0..100).map(|i| f64::from(i) / 100.0).collect();
        let y: Vec<bool> = (0..100).map(|i| i % 3 == 0).collect();
        let c = Confusion::at(&p, &y, 0.5);
        assert_eq!(c.tp + c.fp + c.tn + c.fn_, 100);
        assert_eq!(c.tp + c.fp, 50);
        let bands = calibration_bands(&p, &y, 10);
        assert_eq!(bands.len(), 10);
        assert_eq!(bands.iter().map(|b| b.count).sum::<usize>(), 100);
        assert!((bands[0].mean_predicted - 0.045).abs() < 1e-12);
    }
}
