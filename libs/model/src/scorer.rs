//! The `Scorer`: one application in, probability of default, decision and reasons out.
//! What the CLI, the API and the worker all use.

use features::{Clean, FeatureError, Preprocessor, Raw};
use serde::Serialize;

use crate::bundle::Bundle;
use crate::calibration::{Calibration, Decision, Thresholds};
use crate::predictor::Predictor;
use crate::shap::FastExplainer;
use crate::trees::Ensemble;
use crate::ModelError;

/// A principal reason for the risk: a feature that raised the default probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    pub feature: String,
    /// The applicant's value (as validated), or null when it was missing and imputed.
    pub value: serde_json::Value,
    /// Contribution to the log-odds of default (TreeSHAP), always positive.
    pub contribution: f64,
    pub text: String,
}

/// A [`Reason`] borrowed from the model's spec and the applicant's values: what an answer shows,
/// written without copying a string. Its JSON is the JSON of the `Reason` it converts into.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReasonView<'a> {
    pub feature: &'a str,
    pub value: Shown<'a>,
    pub contribution: f64,
    pub text: &'a str,
}

/// The applicant's value as a reason shows it: as validated, or null when it was missing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Shown<'a> {
    Num(f64),
    Text(&'a str),
    Bool(bool),
    Missing,
}

impl From<ReasonView<'_>> for Reason {
    fn from(r: ReasonView<'_>) -> Reason {
        Reason {
            feature: r.feature.to_string(),
            value: match r.value {
                Shown::Num(x) => serde_json::json!(x),
                Shown::Text(t) => serde_json::json!(t),
                Shown::Bool(b) => serde_json::json!(b),
                Shown::Missing => serde_json::Value::Null,
            },
            contribution: r.contribution,
            text: r.text.to_string(),
        }
    }
}

/// The result of scoring one application.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub default_probability: f64,
    pub decision: Decision,
    pub reasons: Vec<Reason>,
}

/// Reusable buffers, so that scoring many rows does not allocate per row.
#[derive(Debug, Clone, Default)]
pub struct Scratch {
    encoded: Vec<f32>,
    phi: Vec<f64>,
    by_feature: Vec<f64>,
}

impl Scratch {
    /// The row as [`Scorer::score_with`] last encoded it.
    pub fn encoded(&self) -> &[f32] {
        &self.encoded
    }
}

/// Preprocessor + predictor + calibration + explainer + thresholds.
#[derive(Debug, Clone)]
pub struct Scorer {
    bundle: Bundle,
    preprocessor: Preprocessor,
    predictor: Predictor,
    explainer: FastExplainer,
    /// Spec features that may be cited as reasons (model inputs that are not protected).
    citable: Vec<bool>,
    /// Per spec feature: its encoded column and constraint sign, for constrained features.
    monotone: Vec<Option<(usize, i8)>>,
    /// SHA-256 of the spec and fitted preprocessor as the bundle holds them (see
    /// [`Scorer::encodes_as`]).
    encoding: [u8; 32],
    /// SHA-256 of the spec alone (see [`Scorer::reads_as`]).
    reading: [u8; 32],
}

impl Scorer {
    /// Builds a scorer from a checked bundle and smoke-tests the flat trees against the node lists.
    pub fn new(bundle: Bundle) -> Result<Scorer, ModelError> {
        let preprocessor = bundle.check()?;
        let predictor = Predictor::new(&bundle.ensemble);
        let explainer = FastExplainer::new(&bundle.ensemble);
        let citable = bundle
            .spec
            .features
            .iter()
            .map(|f| f.is_model_input() && !f.protected)
            .collect();
        let monotone = bundle
            .spec
            .features
            .iter()
            .enumerate()
            .map(|(j, f)| {
                let cols = preprocessor.feature_columns(j);
                match f.monotone {
                    Some(m) if cols.len() == 1 => Some((cols.start, m.sign())),
                    _ => None,
                }
            })
            .collect();
        let encoding = digest(&(&bundle.spec, &preprocessor))?;
        let reading = digest(&bundle.spec)?;
        let probe = vec![0.0f32; predictor.n_features()];
        if !crate::predictor::agrees_with_reference(&bundle.ensemble, &predictor, &probe) {
            return Err(ModelError::Internal(
                "flattened trees disagree with the model".into(),
            ));
        }
        Ok(Scorer {
            bundle,
            preprocessor,
            predictor,
            explainer,
            citable,
            monotone,
            encoding,
            reading,
        })
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    pub fn predictor(&self) -> &Predictor {
        &self.predictor
    }

    pub fn ensemble(&self) -> &Ensemble {
        &self.bundle.ensemble
    }

    pub fn calibration(&self) -> Calibration {
        self.bundle.calibration
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.bundle.thresholds
    }

    /// Whether `other` reads and encodes applications exactly as this model does (the same
    /// spec and the same fitted preprocessor), so that a row this model encoded can be scored by
    /// `other` with [`Scorer::decide_encoded`]. Compares digests taken when the scorers were
    /// built, so it is cheap enough for every request.
    pub fn encodes_as(&self, other: &Scorer) -> bool {
        self.encoding == other.encoding
    }

    /// Whether `other` reads applications as this model does (the same spec: the same
    /// features, kinds and validation), so that values this model validated are valid for
    /// `other` and can be encoded with its preprocessor ([`Scorer::encode`]) without parsing
    /// the request again. A digest comparison, as [`Scorer::encodes_as`].
    pub fn reads_as(&self, other: &Scorer) -> bool {
        self.reading == other.reading
    }

    /// One application (values in spec order) encoded by this model's preprocessor: the row
    /// [`Scorer::decide_encoded`] takes.
    pub fn encode(&self, record: &[Raw<'_>]) -> Result<Vec<f32>, FeatureError> {
        let mut row = vec![0.0; self.predictor.n_features()];
        self.preprocessor.transform(record, &mut row)?;
        Ok(row)
    }

    /// This model's row for an application that the model `from` validated (`record`) and
    /// encoded (`from_row`), without reading the application again: `from_row` itself when the
    /// two encode alike, `record` through this model's preprocessor when they only read alike,
    /// and `None` when their specs differ (the application must be read with this model's spec).
    pub fn row_from(
        &self,
        from: &Scorer,
        record: &[Raw<'_>],
        from_row: &[f32],
    ) -> Option<Vec<f32>> {
        if self.encodes_as(from) {
            Some(from_row.to_vec())
        } else if self.reads_as(from) {
            self.encode(record).ok()
        } else {
            None
        }
    }

    /// The probability and decision of a row already encoded by this model's preprocessor (or
    /// by one that [`Scorer::encodes_as`] it): what [`Scorer::score`] answers for the
    /// application, without reasons.
    pub fn decide_encoded(&self, encoded: &[f32]) -> (f64, Decision) {
        self.decide_margin(self.predictor.margin(encoded))
    }

    /// The probability and decision for a row's margin (from [`Predictor::margin`], or from
    /// [`Predictor::margins`] with many rows: the same bits).
    pub fn decide_margin(&self, margin: f32) -> (f64, Decision) {
        let p = self.bundle.calibration.apply(f64::from(margin));
        (p, self.bundle.thresholds.decide(p))
    }

    /// A scratch space sized for this model.
    pub fn scratch(&self) -> Scratch {
        Scratch {
            encoded: vec![0.0; self.predictor.n_features()],
            phi: vec![0.0; self.predictor.n_features()],
            by_feature: vec![0.0; self.bundle.spec.features.len()],
        }
    }

    /// Scores one application given as values in spec order.
    pub fn score(&self, record: &[Raw<'_>], explain: bool) -> Result<Score, FeatureError> {
        self.score_with(record, explain, &mut self.scratch())
    }

    /// Like [`Scorer::score`], reusing `scratch`.
    pub fn score_with(
        &self,
        record: &[Raw<'_>],
        explain: bool,
        scratch: &mut Scratch,
    ) -> Result<Score, FeatureError> {
        self.preprocessor.transform(record, &mut scratch.encoded)?;
        let (p, decision) = self.decide_encoded(&scratch.encoded);
        let reasons = if explain {
            self.reasons(record, scratch)
        } else {
            Vec::new()
        };
        Ok(Score {
            default_probability: p,
            decision,
            reasons,
        })
    }

    /// Calibrated probabilities of already-encoded rows (row-major), in parallel.
    pub fn probabilities_encoded(&self, rows: &[f32], margins: &mut [f32], out: &mut [f64]) {
        self.predictor.margins_parallel(rows, margins);
        for (o, m) in out.iter_mut().zip(margins.iter()) {
            *o = self.bundle.calibration.apply(f64::from(*m));
        }
    }

    /// Contributions (log-odds) per spec feature for an encoded row, one-hot columns summed.
    pub fn contributions_by_feature(&self, encoded: &[f32], phi: &mut [f64], out: &mut [f64]) {
        self.explainer
            .contributions(&self.bundle.ensemble, encoded, phi);
        self.sum_by_feature(phi, out);
    }

    /// Contributions per encoded column for many encoded rows (row-major) at once, `width`
    /// values per row in `phi`; the same bits as one row at a time, faster for many rows.
    pub fn contributions_block(&self, rows: &[f32], phi: &mut [f64]) {
        self.explainer.contributions_block(
            &self.bundle.ensemble,
            rows,
            self.preprocessor.width(),
            phi,
        );
    }

    fn sum_by_feature(&self, phi: &[f64], out: &mut [f64]) {
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.preprocessor.feature_columns(j).map(|c| phi[c]).sum();
        }
    }

    /// The expected margin that contributions are measured from.
    pub fn bias(&self) -> f64 {
        self.explainer.bias()
    }

    /// Top features raising the risk for an encoded row, as (spec feature index, contribution),
    /// largest first, at most `max_reasons`; protected features are never included, and a
    /// monotone feature is cited only on its side of the training mean (an "increasing" one only
    /// when above it), so a reason never runs against the constraint.
    pub fn top_reasons(&self, encoded: &[f32], scratch: &mut Scratch, out: &mut Vec<(usize, f64)>) {
        let Scratch {
            phi, by_feature, ..
        } = scratch;
        self.explainer
            .contributions(&self.bundle.ensemble, encoded, phi);
        self.top_reasons_from(phi, encoded, by_feature, out);
    }

    /// [`Scorer::top_reasons`] from the row's contributions per encoded column (`phi`, as from
    /// [`Scorer::contributions_block`]); `by_feature` is scratch space of one value per feature.
    pub fn top_reasons_from(
        &self,
        phi: &[f64],
        encoded: &[f32],
        by_feature: &mut [f64],
        out: &mut Vec<(usize, f64)>,
    ) {
        self.sum_by_feature(phi, by_feature);
        out.clear();
        out.extend(
            by_feature
                .iter()
                .enumerate()
                .filter(|(j, c)| self.citable[*j] && **c > 0.0 && self.consistent(*j, encoded))
                .map(|(j, c)| (j, *c)),
        );
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(self.bundle.max_reasons);
    }

    /// Whether citing feature `j` as raising risk agrees with its monotone constraint: scaled
    /// columns are centred on the training mean, so the sign of the encoded value says which
    /// side of it the applicant is on. A missing value is not constrained.
    #[inline]
    fn consistent(&self, j: usize, encoded: &[f32]) -> bool {
        match self.monotone[j] {
            Some((col, sign)) => {
                let x = encoded[col];
                x.is_nan() || f32::from(sign) * x > 0.0
            }
            None => true,
        }
    }

    /// Top features raising the risk for the row in `scratch.encoded`.
    fn reasons(&self, record: &[Raw<'_>], scratch: &mut Scratch) -> Vec<Reason> {
        let encoded = std::mem::take(&mut scratch.encoded);
        let mut top = Vec::with_capacity(self.bundle.max_reasons + 1);
        self.top_reasons(&encoded, scratch, &mut top);
        scratch.encoded = encoded;
        top.into_iter()
            .map(|(j, c)| self.reason(j, c, record))
            .collect()
    }

    /// The reason citing spec feature `j` with contribution `contribution`, showing the
    /// applicant's value from `record` (values in spec order).
    pub fn reason(&self, j: usize, contribution: f64, record: &[Raw<'_>]) -> Reason {
        self.reason_view(j, contribution, record).into()
    }

    /// [`Scorer::reason`], borrowed from the spec and `record`.
    pub fn reason_view<'v>(
        &'v self,
        j: usize,
        contribution: f64,
        record: &[Raw<'v>],
    ) -> ReasonView<'v> {
        let f = &self.bundle.spec.features[j];
        ReasonView {
            feature: &f.name,
            value: match features::clean(f, record[j]) {
                Ok(Clean::Num(x)) => Shown::Num(x),
                Ok(Clean::Cat(c)) => Shown::Text(c),
                Ok(Clean::Bool(b)) => Shown::Bool(b),
                _ => Shown::Missing,
            },
            contribution,
            text: if f.reason.is_empty() {
                &f.name
            } else {
                &f.reason
            },
        }
    }
}

/// SHA-256 of a value's JSON (the spec and preprocessor digests of [`Scorer`]).
fn digest<T: serde::Serialize>(value: &T) -> Result<[u8; 32], ModelError> {
    use sha2::Digest;
    let text = serde_json::to_vec(value)
        .map_err(|e| ModelError::Internal(format!("a digest of the bundle: {e}")))?;
    Ok(sha2::Sha256::digest(&text).into())
}
