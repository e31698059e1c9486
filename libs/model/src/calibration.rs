//! Probability calibration and decision thresholds, both fitted on held-out scores.

use serde::{Deserialize, Serialize};

use crate::trees::sigmoid;
use crate::ModelError;

/// Platt scaling on the margin: `p = sigmoid(a·margin + b)`. SMOTE shifts the base rate and
/// stretches the margins; this maps them back to observed default frequencies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub a: f64,
    pub b: f64,
}

impl Calibration {
    /// No change: `sigmoid(margin)`.
    pub const IDENTITY: Calibration = Calibration { a: 1.0, b: 0.0 };

    #[inline]
    pub fn apply(&self, margin: f64) -> f64 {
        sigmoid(self.a * margin + self.b)
    }

    /// Fits `a`, `b` by Newton's method on the log loss, with Platt's smoothed targets.
    pub fn fit(margins: &[f64], y: &[bool]) -> Result<Calibration, ModelError> {
        let pos = y.iter().filter(|v| **v).count() as f64;
        let neg = y.len() as f64 - pos;
        if pos == 0.0 || neg == 0.0 {
            return Err(ModelError::InvalidParams(
                "calibration needs both classes".into(),
            ));
        }
        let hi = (pos + 1.0) / (pos + 2.0);
        let lo = 1.0 / (neg + 2.0);
        let loss = |a: f64, b: f64| -> f64 {
            margins
                .iter()
                .zip(y)
                .map(|(m, yi)| {
                    let t = if *yi { hi } else { lo };
                    let z = a * m + b;
                    // log(1 + e^z) - t·z, computed stably.
                    z.max(0.0) + (-z.abs()).exp().ln_1p() - t * z
                })
                .sum()
        };
        let (mut a, mut b) = (1.0f64, 0.0f64);
        for _ in 0..100 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for (m, yi) in margins.iter().zip(y) {
                let t = if *yi { hi } else { lo };
                let p = sigmoid(a * m + b);
                let d = p - t;
                let w = (p * (1.0 - p)).max(1e-12);
                ga += d * m;
                gb += d;
                haa += w * m * m;
                hab += w * m;
                hbb += w;
            }
            // A tiny ridge keeps the step defined when margins are constant.
            let (haa, hbb) = (haa + 1e-9, hbb + 1e-9);
            let det = haa * hbb - hab * hab;
            if det.abs() < 1e-18 {
                break;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            // Newton with step halving: a full step can overshoot far from the optimum.
            let current = loss(a, b);
            let mut step = 1.0;
            while step > 1e-10 && loss(a - step * da, b - step * db) > current {
                step /= 2.0;
            }
            a -= step * da;
            b -= step * db;
            if (step * da).abs() < 1e-10 && (step * db).abs() < 1e-10 {
                break;
            }
        }
        if !(a.is_finite() && b.is_finite()) {
            return Err(ModelError::InvalidParams(
                "calibration did not converge".into(),
            ));
        }
        Ok(Calibration { a, b })
    }
}

/// How the decline threshold is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum ThresholdRule {
    /// The threshold with the best F1 for "default".
    F1,
    /// The threshold with the least expected cost: approving a defaulter costs
    /// `false_approve`, declining a good applicant costs `false_decline`.
    ExpectedCost {
        false_approve: f64,
        false_decline: f64,
    },
}

/// `approve` below `approve`, `decline` at or above `decline`, `review` between.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub approve: f64,
    pub decline: f64,
    pub rule: ThresholdRule,
    /// Share of held-out defaulters that must not be auto-approved (sets `approve`).
    pub review_recall: f64,
}

/// The three outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Review,
    Decline,
}

impl Decision {
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Review => "review",
            Decision::Decline => "decline",
        }
    }
}

impl Thresholds {
    pub fn decide(&self, p: f64) -> Decision {
        if p >= self.decline {
            Decision::Decline
        } else if p >= self.approve {
            Decision::Review
        } else {
            Decision::Approve
        }
    }

    /// Chooses thresholds on held-out calibrated probabilities.
    pub fn choose(
        p: &[f64],
        y: &[bool],
        rule: ThresholdRule,
        review_recall: f64,
    ) -> Result<Thresholds, ModelError> {
        if !(review_recall > 0.0 && review_recall <= 1.0) {
            return Err(ModelError::InvalidParams(
                "review recall must be in (0, 1]".into(),
            ));
        }
        if p.len() != y.len() {
            return Err(ModelError::InvalidParams(
                "scores and labels disagree".into(),
            ));
        }
        // One sort, then every distinct score as a threshold with the counts at or above it.
        let mut order: Vec<(f64, bool)> = p.iter().copied().zip(y.iter().copied()).collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0));
        if order.is_empty() {
            return Err(ModelError::InvalidParams(
                "no scores to choose thresholds from".into(),
            ));
        }
        let positives = order.iter().filter(|r| r.1).count();
        let negatives = order.len() - positives;
        // (threshold, counts) from the lowest threshold up.
        let mut at: Vec<Confusion> = Vec::new();
        let (mut below_pos, mut below_neg) = (0usize, 0usize);
        let mut i = 0;
        while i < order.len() {
            let t = order[i].0;
            at.push(Confusion::from_counts(
                t,
                positives - below_pos,
                negatives - below_neg,
                below_neg,
                below_pos,
            ));
            // Equal scores (as `==` sees them) are one threshold.
            while i < order.len() && order[i].0 == t {
                if order[i].1 {
                    below_pos += 1;
                } else {
                    below_neg += 1;
                }
                i += 1;
            }
        }
        let score = |c: &Confusion| match rule {
            ThresholdRule::F1 => c.f1,
            ThresholdRule::ExpectedCost {
                false_approve,
                false_decline,
            } => -(c.fn_ as f64 * false_approve + c.fp as f64 * false_decline),
        };
        let mut decline = at[0].threshold;
        let mut best = f64::NEG_INFINITY;
        for c in &at {
            let s = score(c);
            if s > best {
                best = s;
                decline = c.threshold;
            }
        }
        // The highest threshold that still sends `review_recall` of defaulters to review or decline.
        let mut approve = at[0].threshold;
        for c in &at {
            if c.recall >= review_recall {
                approve = c.threshold;
            }
        }
        Ok(Thresholds {
            approve: approve.min(decline),
            decline,
            rule,
            review_recall,
        })
    }
}

/// Counts at one threshold (positive = predicted default, i.e. p >= threshold).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    pub threshold: f64,
    pub tp: usize,
    pub fp: usize,
    pub tn: usize,
    pub fn_: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Confusion {
    pub fn at(p: &[f64], y: &[bool], threshold: f64) -> Confusion {
        let (mut tp, mut fp, mut tn, mut fn_) = (0, 0, 0, 0);
        for (pi, yi) in p.iter().zip(y) {
            match (*pi >= threshold, *yi) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, false) => tn += 1,
                (false, true) => fn_ += 1,
            }
        }
        Confusion::from_counts(threshold, tp, fp, tn, fn_)
    }

    /// The rates of given counts.
    pub fn from_counts(threshold: f64, tp: usize, fp: usize, tn: usize, fn_: usize) -> Confusion {
        let div = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let precision = div(tp, tp + fp);
        let recall = div(tp, tp + fn_);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Confusion {
            threshold,
            tp,
            fp,
            tn,
            fn_,
            precision,
            recall,
            f1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quadratic search `choose` replaced: every distinct score, counted from scratch.
    fn choose_reference(p: &[f64], y: &[bool], rule: ThresholdRule, recall: f64) -> (f64, f64) {
        use Confusion;
        let mut candidates: Vec<f64> = p.to_vec();
        candidates.sort_by(f64::total_cmp);
        candidates.dedup();
        let score = |t: f64| {
            let c = Confusion::at(p, y, t);
            match rule {
                ThresholdRule::F1 => c.f1,
                ThresholdRule::ExpectedCost {
                    false_approve,
                    false_decline,
                } => -(c.fn_ as f64 * false_approve + c.fp as f64 * false_decline),
            }
        };
        let (mut decline, mut best) = (candidates[0], f64::NEG_INFINITY);
        for &t in &candidates {
            if score(t) > best {
                best = score(t);
                decline = t;
            }
        }
        let mut approve = candidates[0];
        for &t in &candidates {
            if Confusion::at(p, y, t).recall >= recall {
                approve = t;
            }
        }
        (approve.min(decline), decline)
    }

    #[test]
    fn thresholds_match_the_exhaustive_search() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for round in 0..20 {
            let n = 50 + round * 37;
            // Coarse scores, so that many rows share one.
            let p: Vec<f64> = (0..n)
                .map(|_| f64::from(rng.gen_range(0..40u8)) / 40.0)
                .collect();
            let y: Vec<bool> = p.iter().map(|pi| rng.gen_bool(pi * 0.8 + 0.1)).collect();
            for rule in [
                ThresholdRule::F1,
                ThresholdRule::ExpectedCost {
                    false_approve: 5.0,
                    false_decline: 1.0,
                },
            ] {
                for recall in [0.5, 0.9, 1.0] {
                    let t = Thresholds::choose(&p, &y, rule, recall).unwrap();
                    assert_eq!(
                        (t.approve, t.decline),
                        choose_reference(&p, &y, rule, recall),
                        "round {round}, {rule:?}, recall {recall}"
                    );
                }
            }
        }
    }

    #[test]
    fn platt_recovers_a_known_mapping() {
        // Labels drawn deterministically with p = sigmoid(0.5·m - 1).
        let mut m = Vec::new();
        let mut y = Vec::new();
        for i in 0..4000 {
            let x = -6.0 + 12.0 * f64::from(i) / 4000.0;
            let p = sigmoid(0.5 * x - 1.0);
            // Low-discrepancy draw: a stratified uniform per row.
            let u = ((f64::from(i) * 0.618_033_988_75) % 1.0 + 1.0) % 1.0;
            m.push(x);
            y.push(u < p);
        }
        let c = Calibration::fit(&m, &y).unwrap();
        assert!(
            (c.a - 0.5).abs() < 0.08 && (c.b + 1.0).abs() < 0.12,
            "{c:?}"
        );
    }

    #[test]
    fn thresholds_order_and_decisions() {
        let p: Vec<f64> = (0..200).map(|i| f64::from(i) / 200.0).collect();
        let y: Vec<bool> = (0..200).map(|i| i > 140 || i % 10 == 0).collect();
        let t = Thresholds::choose(&p, &y, ThresholdRule::F1, 0.95).unwrap();
        assert!(t.approve <= t.decline);
        assert!(Confusion::at(&p, &y, t.approve).recall >= 0.95);
        assert_eq!(t.decide(t.decline), Decision::Decline);
        assert_eq!(t.decide(0.0), Decision::Approve);
        let costly = Thresholds::choose(
            &p,
            &y,
            ThresholdRule::ExpectedCost {
                false_approve: 10.0,
                false_decline: 1.0,
            },
            0.95,
        )
        .unwrap();
        assert!(
            costly.decline <= t.decline,
            "expensive defaults lower the decline threshold"
        );
    }
}
