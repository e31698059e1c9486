//! Evaluation of a model on labelled applications: metrics, calibration, feature importance
//! and the fairness section, as data and as Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use features::{FeatureKind, Raw};
use serde::{Deserialize, Serialize};

use crate::calibration::Decision;
use crate::metrics::{calibration_bands, Band, Metrics};
use crate::pipeline::encode_rows;
use crate::{ModelError, Scorer};

/// Rows used to estimate feature importance (mean |TreeSHAP|); more adds time, not insight.
const IMPORTANCE_ROWS: usize = 5_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Importance {
    pub feature: String,
    /// Mean absolute contribution to the log-odds.
    pub mean_abs_contribution: f64,
}

/// Outcomes for one group of a protected attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupOutcome {
    pub group: String,
    pub count: usize,
    pub default_rate: f64,
    pub approval_rate: f64,
    /// Approval rate divided by the highest group's (the "four-fifths rule" flags < 0.8).
    pub adverse_impact_ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fairness {
    pub feature: String,
    pub groups: Vec<GroupOutcome>,
}

/// Uncalibrated vs calibrated probability quality on the same rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationCheck {
    pub brier_uncalibrated: f64,
    pub brier_calibrated: f64,
    pub log_loss_uncalibrated: f64,
    pub log_loss_calibrated: f64,
    pub bands_uncalibrated: Vec<Band>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub metrics: Metrics,
    pub calibration_check: CalibrationCheck,
    pub importance: Vec<Importance>,
    pub fairness: Vec<Fairness>,
    /// Calibrated probabilities, in row order (for plots; not serialized).
    #[serde(skip)]
    pub probabilities: Vec<f64>,
    #[serde(skip)]
    pub labels: Vec<bool>,
}

/// Evaluates `scorer` on rows (values in spec order) with labels.
pub fn evaluate(
    scorer: &Scorer,
    rows: &[Vec<Raw<'_>>],
    y: &[bool],
) -> Result<Evaluation, ModelError> {
    if rows.is_empty() {
        return Err(ModelError::InvalidData("no rows to evaluate".into()));
    }
    let pre = scorer.preprocessor();
    let w = pre.width();
    let x = encode_rows(pre, rows)?;
    let mut margins = vec![0.0f32; rows.len()];
    let mut p = vec![0.0f64; rows.len()];
    scorer.probabilities_encoded(&x, &mut margins, &mut p);
    let raw_p: Vec<f64> = margins
        .iter()
        .map(|m| crate::trees::sigmoid(f64::from(*m)))
        .collect();
    let metrics = Metrics::compute(&p, y, scorer.thresholds());
    let raw = Metrics::compute(&raw_p, y, scorer.thresholds());
    let spec = &scorer.bundle().spec;
    let nf = spec.features.len();
    let mut sums = vec![0.0f64; nf];
    let mut phi = vec![0.0f64; w];
    let mut by_feature = vec![0.0f64; nf];
    let step = (rows.len() / IMPORTANCE_ROWS).max(1);
    let mut counted = 0usize;
    for row in x.chunks_exact(w).step_by(step) {
        scorer.contributions_by_feature(row, &mut phi, &mut by_feature);
        for (s, c) in sums.iter_mut().zip(&by_feature) {
            *s += c.abs();
        }
        counted += 1;
    }
    let mut importance: Vec<Importance> = spec
        .features
        .iter()
        .zip(&sums)
        .filter(|(f, _)| f.is_model_input())
        .map(|(f, s)| Importance {
            feature: f.name.clone(),
            mean_abs_contribution: s / counted as f64,
        })
        .collect();
    importance.sort_by(|a, b| b.mean_abs_contribution.total_cmp(&a.mean_abs_contribution));
    let decisions: Vec<Decision> = p.iter().map(|q| scorer.thresholds().decide(*q)).collect();
    let fairness = spec
        .features
        .iter()
        .enumerate()
        .filter(|(_, f)| f.protected)
        .map(|(j, f)| fairness_for(j, f.kind, &f.name, rows, y, &decisions))
        .collect();
    Ok(Evaluation {
        calibration_check: CalibrationCheck {
            brier_uncalibrated: raw.brier,
            brier_calibrated: metrics.brier,
            log_loss_uncalibrated: raw.log_loss,
            log_loss_calibrated: metrics.log_loss,
            bands_uncalibrated: calibration_bands(&raw_p, y, 10),
        },
        metrics,
        importance,
        fairness,
        probabilities: p,
        labels: y.to_vec(),
    })
}

fn fairness_for(
    j: usize,
    kind: FeatureKind,
    name: &str,
    rows: &[Vec<Raw<'_>>],
    y: &[bool],
    decisions: &[Decision],
) -> Fairness {
    // Numeric attributes (age) are grouped by quartile of the evaluated rows.
    let mut cuts: Vec<f64> = Vec::new();
    if kind == FeatureKind::Numeric {
        let mut v: Vec<f64> = rows.iter().filter_map(|r| number(r[j])).collect();
        v.sort_by(f64::total_cmp);
        if !v.is_empty() {
            cuts = (1..4).map(|q| v[q * v.len() / 4]).collect();
            cuts.dedup();
        }
    }
    let group_of = |raw: Raw<'_>| -> String {
        match raw {
            Raw::Missing => "(missing)".into(),
            _ if kind == FeatureKind::Numeric => match number(raw) {
                Some(x) => {
                    let k = cuts.partition_point(|c| *c <= x);
                    match (k.checked_sub(1).map(|i| cuts[i]), cuts.get(k)) {
                        (None, Some(hi)) => format!("< {hi}"),
                        (Some(lo), Some(hi)) => format!("{lo} to < {hi}"),
                        (Some(lo), None) => format!(">= {lo}"),
                        (None, None) => "all".into(),
                    }
                }
                None => "(invalid)".into(),
            },
            Raw::Text(t) => t.to_string(),
            Raw::Bool(b) => b.to_string(),
            Raw::Num(x) => x.to_string(),
            Raw::Nested => "(invalid)".into(),
        }
    };
    let mut acc: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for ((row, yi), d) in rows.iter().zip(y).zip(decisions) {
        let e = acc.entry(group_of(row[j])).or_default();
        e.0 += 1;
        e.1 += usize::from(*yi);
        e.2 += usize::from(*d == Decision::Approve);
    }
    let best = acc
        .values()
        .map(|(n, _, a)| *a as f64 / *n as f64)
        .fold(0.0, f64::max);
    Fairness {
        feature: name.to_string(),
        groups: acc
            .into_iter()
            .map(|(group, (n, bad, ok))| {
                let approval = ok as f64 / n as f64;
                GroupOutcome {
                    group,
                    count: n,
                    default_rate: bad as f64 / n as f64,
                    approval_rate: approval,
                    adverse_impact_ratio: if best > 0.0 {
                        approval / best
                    } else {
                        f64::NAN
                    },
                }
            })
            .collect(),
    }
}

fn number(raw: Raw<'_>) -> Option<f64> {
    match raw {
        Raw::Num(x) => Some(x),
        Raw::Text(t) => t.parse().ok(),
        _ => None,
    }
}

impl Evaluation {
    /// The evaluation as Markdown sections (metrics, decisions, calibration, importance, fairness).
    pub fn to_markdown(&self) -> String {
        let m = &self.metrics;
        let mut s = String::new();
        let _ = writeln!(s, "## Held-out performance\n");
        let _ = writeln!(s, "| metric | value |\n| --- | --- |");
        let _ = writeln!(s, "| rows | {} ({} defaults) |", m.rows, m.positives);
        for (k, v) in [
            ("ROC AUC", m.roc_auc),
            ("PR AUC (average precision)", m.pr_auc),
            ("KS", m.ks),
            ("Brier score", m.brier),
            ("log loss", m.log_loss),
        ] {
            let _ = writeln!(s, "| {k} | {v:.4} |");
        }
        let _ = writeln!(s, "\n## Decisions\n");
        let _ = writeln!(s, "| cut | threshold | precision | recall | F1 | TP | FP | TN | FN |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for (name, c) in [
            ("decline", &m.at_decline),
            ("review or decline", &m.at_review),
        ] {
            let _ = writeln!(
                s,
                "| {name} | {:.4} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} |",
                c.threshold, c.precision, c.recall, c.f1, c.tp, c.fp, c.tn, c.fn_
            );
        }
        let r = &m.decision_rates;
        let _ = writeln!(
            s,
            "\nShare of applications: approve {:.1} %, review {:.1} %, decline {:.1} %.",
            100.0 * r.approve,
            100.0 * r.review,
            100.0 * r.decline
        );
        let c = &self.calibration_check;
        let _ = writeln!(s, "\n## Calibration\n");
        let _ =
            writeln!(
            s,
            "Brier score {:.4} calibrated ({:.4} before calibration); log loss {:.4} ({:.4}).\n",
            c.brier_calibrated, c.brier_uncalibrated, c.log_loss_calibrated, c.log_loss_uncalibrated
        );
        let _ = writeln!(s, "| score band | rows | mean predicted PD | observed default rate |\n| --- | --- | --- | --- |");
        for b in &m.calibration {
            let _ = writeln!(
                s,
                "| {:.3} – {:.3} | {} | {:.3} | {:.3} |",
                b.lower, b.upper, b.count, b.mean_predicted, b.observed_rate
            );
        }
        let _ = writeln!(
            s,
            "\n## Feature importance (mean |TreeSHAP| on the log-odds)\n"
        );
        let _ = writeln!(s, "| feature | importance |\n| --- | --- |");
        for i in &self.importance {
            let _ = writeln!(s, "| {} | {:.4} |", i.feature, i.mean_abs_contribution);
        }
        if !self.fairness.is_empty() {
            let _ = writeln!(
                s,
                "\n## Fairness (protected attributes: not model inputs, never reasons)\n\nAdverse impact ratio: a group's approval rate over the highest group's; below 0.8 deserves review."
            );
            for f in &self.fairness {
                let _ = writeln!(s, "\n### {}\n", f.feature);
                let _ = writeln!(s, "| group | rows | default rate | approval rate | adverse impact ratio |\n| --- | --- | --- | --- | --- |");
                for g in &f.groups {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {:.3} | {:.3} | {:.3} |",
                        g.group.replace('|', "\\|"),
                        g.count,
                        g.default_rate,
                        g.approval_rate,
                        g.adverse_impact_ratio
                    );
                }
            }
        }
        s
    }
}
