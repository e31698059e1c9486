//! Scoring rows in blocks: the one block scorer behind `loanctl score`, batch jobs and
//! `POST /v1/predict/batch`. Columns are mapped once from a header ([`Columns`]); a block of
//! rows is encoded, predicted at once, calibrated, decided, and the rows the [`ReasonPolicy`]
//! asks for are explained ([`BlockScorer`]). Callers only read rows in and write results out.

use std::fmt::Write as _;

use features::{FeatureError, Raw, Spec};
use serde::{Deserialize, Serialize};

use crate::calibration::Decision;
use crate::scorer::Scorer;

/// Which scored rows get reason codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasonPolicy {
    /// Every row.
    #[default]
    All,
    /// Only rows whose decision is review or decline (what adverse-action notices need).
    Adverse,
    /// None (fastest).
    None,
}

impl ReasonPolicy {
    /// The policy's names, as the CLI and the API take them.
    pub const NAMES: [&'static str; 3] = ["all", "adverse", "none"];

    pub fn parse(s: &str) -> Option<ReasonPolicy> {
        match s {
            "all" => Some(ReasonPolicy::All),
            "adverse" => Some(ReasonPolicy::Adverse),
            "none" => Some(ReasonPolicy::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonPolicy::All => "all",
            ReasonPolicy::Adverse => "adverse",
            ReasonPolicy::None => "none",
        }
    }

    /// Whether a row with this decision is explained.
    pub fn explains(self, decision: Decision) -> bool {
        match self {
            ReasonPolicy::All => true,
            ReasonPolicy::Adverse => decision != Decision::Approve,
            ReasonPolicy::None => false,
        }
    }
}

impl std::str::FromStr for ReasonPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<ReasonPolicy, String> {
        ReasonPolicy::parse(s).ok_or_else(|| {
            format!(
                "'{s}' is not a reason policy (one of {})",
                ReasonPolicy::NAMES.join(", ")
            )
        })
    }
}

impl std::fmt::Display for ReasonPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the columns of one file map onto a spec, found once from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// For each spec feature, its column in the file (absent features are `None`).
    pub features: Vec<Option<usize>>,
    /// The label column, if the file has one.
    pub target: Option<usize>,
    /// Columns that are neither model inputs nor the target, in file order: carried through.
    pub passthrough: Vec<usize>,
}

impl Columns {
    /// Maps a header (names are compared trimmed) onto the spec.
    pub fn new<'h>(spec: &Spec, headers: impl IntoIterator<Item = &'h str>) -> Columns {
        let headers: Vec<&str> = headers.into_iter().map(str::trim).collect();
        let find = |name: &str| headers.iter().position(|h| *h == name);
        let features: Vec<Option<usize>> = spec.features.iter().map(|f| find(&f.name)).collect();
        let target = find(&spec.target.name);
        let model_cols: Vec<usize> = spec
            .features
            .iter()
            .zip(&features)
            .filter(|(f, _)| f.is_model_input())
            .filter_map(|(_, c)| *c)
            .collect();
        let passthrough = (0..headers.len())
            .filter(|c| Some(*c) != target && !model_cols.contains(c))
            .collect();
        Columns {
            features,
            target,
            passthrough,
        }
    }

    /// Required model inputs the header lacks, by name.
    pub fn missing_required<'s>(&self, spec: &'s Spec) -> Vec<&'s str> {
        spec.features
            .iter()
            .zip(&self.features)
            .filter(|(f, c)| c.is_none() && f.required && f.is_model_input())
            .map(|(f, _)| f.name.as_str())
            .collect()
    }

    /// A CSV record's values in spec order.
    pub fn raws<'a>(&self, rec: &'a csv::StringRecord, out: &mut Vec<Raw<'a>>) {
        out.clear();
        out.extend(self.features.iter().map(|c| {
            c.and_then(|c| rec.get(c))
                .map_or(Raw::Missing, Raw::from_cell)
        }));
    }
}

/// One row of a scored block.
#[derive(Debug, Clone, Copy)]
pub enum Row<'b> {
    Scored {
        probability: f64,
        decision: Decision,
        /// (spec feature index, contribution), largest first; empty when not explained.
        reasons: &'b [(usize, f64)],
    },
    Rejected(&'b FeatureError),
}

/// Scores blocks of rows with one model and one reason policy, reusing its buffers.
pub struct BlockScorer<'s> {
    scorer: &'s Scorer,
    policy: ReasonPolicy,
    encoded: Vec<f32>,
    margins: Vec<f32>,
    errors: Vec<Option<FeatureError>>,
    probabilities: Vec<f64>,
    decisions: Vec<Decision>,
    /// The explained rows' reasons, flat; row i's are `reasons[ends[i-1]..ends[i]]`.
    reasons: Vec<(usize, f64)>,
    ends: Vec<usize>,
    top: Vec<(usize, f64)>,
    /// Rows to explain in this block, their encoded values gathered, their contributions.
    picked: Vec<usize>,
    gathered: Vec<f32>,
    phi: Vec<f64>,
    by_feature: Vec<f64>,
    number: String,
}

/// Rows explained together: enough for the explainer's tree-by-tree pass to pay, few enough
/// that their contributions stay small (256 rows x 55 columns x 8 bytes = 110 KB).
const EXPLAIN_ROWS: usize = 256;

impl<'s> BlockScorer<'s> {
    pub fn new(scorer: &'s Scorer, policy: ReasonPolicy) -> BlockScorer<'s> {
        BlockScorer {
            scorer,
            policy,
            encoded: Vec::new(),
            margins: Vec::new(),
            errors: Vec::new(),
            probabilities: Vec::new(),
            decisions: Vec::new(),
            reasons: Vec::new(),
            ends: Vec::new(),
            top: Vec::with_capacity(scorer.bundle().max_reasons + 1),
            picked: Vec::new(),
            gathered: Vec::new(),
            phi: Vec::new(),
            by_feature: vec![0.0; scorer.bundle().spec.features.len()],
            number: String::new(),
        }
    }

    pub fn scorer(&self) -> &'s Scorer {
        self.scorer
    }

    /// Scores `n` rows; `fill(i, raws)` puts row `i`'s values in spec order into `raws` (it
    /// arrives empty), or returns why the row cannot be scored.
    pub fn score<'r>(
        &mut self,
        n: usize,
        mut fill: impl FnMut(usize, &mut Vec<Raw<'r>>) -> Result<(), FeatureError>,
    ) {
        let pre = self.scorer.preprocessor();
        let w = pre.width();
        self.encoded.clear();
        self.encoded.resize(n * w, 0.0);
        self.errors.clear();
        let mut raws: Vec<Raw<'r>> = Vec::with_capacity(self.scorer.bundle().spec.features.len());
        for (i, row) in self.encoded.chunks_exact_mut(w.max(1)).take(n).enumerate() {
            raws.clear();
            let outcome = fill(i, &mut raws).and_then(|()| pre.transform(&raws, row));
            self.errors.push(outcome.err());
        }
        self.errors.resize_with(n, || None);
        self.finish(n, w);
    }

    /// Scores rows already encoded by this scorer's preprocessor (as [`Scorer::encode`] makes
    /// them): the same results as [`BlockScorer::score`] of the applications they encode.
    pub fn score_encoded<'r>(&mut self, rows: impl IntoIterator<Item = &'r [f32]>) {
        let w = self.scorer.preprocessor().width();
        self.encoded.clear();
        self.errors.clear();
        for row in rows {
            assert_eq!(row.len(), w, "an encoded row has the preprocessor's width");
            self.encoded.extend_from_slice(row);
            self.errors.push(None);
        }
        self.finish(self.errors.len(), w);
    }

    /// Predicts, decides and explains the `n` rows of `self.encoded` (`w` values each).
    fn finish(&mut self, n: usize, w: usize) {
        self.margins.clear();
        self.margins.resize(n, 0.0);
        self.scorer
            .predictor()
            .margins(&self.encoded, &mut self.margins);
        self.probabilities.clear();
        self.decisions.clear();
        self.reasons.clear();
        self.picked.clear();
        for i in 0..n {
            let (p, decision) = self.scorer.decide_margin(self.margins[i]);
            if self.errors[i].is_none() && self.policy.explains(decision) {
                self.picked.push(i);
            }
            self.probabilities.push(p);
            self.decisions.push(decision);
        }
        // Reasons for the picked rows, many at a time; `ends` first holds each row's count.
        self.ends.clear();
        self.ends.resize(n, 0);
        for group in self.picked.chunks(EXPLAIN_ROWS) {
            self.gathered.clear();
            for &i in group {
                self.gathered
                    .extend_from_slice(&self.encoded[i * w..(i + 1) * w]);
            }
            self.phi.resize(group.len() * w, 0.0);
            self.scorer
                .contributions_block(&self.gathered, &mut self.phi[..group.len() * w]);
            for (k, &i) in group.iter().enumerate() {
                self.scorer.top_reasons_from(
                    &self.phi[k * w..(k + 1) * w],
                    &self.gathered[k * w..(k + 1) * w],
                    &mut self.by_feature,
                    &mut self.top,
                );
                self.reasons.extend_from_slice(&self.top);
                self.ends[i] = self.top.len();
            }
        }
        let mut end = 0;
        for e in &mut self.ends {
            end += *e;
            *e = end;
        }
    }

    /// Scores CSV records mapped by `columns`.
    pub fn score_records(&mut self, columns: &Columns, records: &[csv::StringRecord]) {
        self.score(records.len(), |i, raws| {
            columns.raws(&records[i], raws);
            Ok(())
        });
    }

    /// Rows in the last block.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Row `i` of the last block.
    pub fn row(&self, i: usize) -> Row<'_> {
        if let Some(e) = &self.errors[i] {
            return Row::Rejected(e);
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Row::Scored {
            probability: self.probabilities[i],
            decision: self.decisions[i],
            reasons: &self.reasons[start..self.ends[i]],
        }
    }

    /// Writes row `i`'s result fields: probability (6 decimals), decision and `max_reasons`
    /// reason columns (feature names, blank past the last reason). A rejected row gets blank
    /// fields, so columns stay aligned. The caller ends the record.
    pub fn write_fields<W: std::io::Write>(
        &mut self,
        i: usize,
        out: &mut csv::Writer<W>,
    ) -> csv::Result<()> {
        let k = self.scorer.bundle().max_reasons;
        let spec = &self.scorer.bundle().spec;
        let mut number = std::mem::take(&mut self.number);
        match self.row(i) {
            Row::Rejected(_) => {
                for _ in 0..k + 2 {
                    out.write_field("")?;
                }
            }
            Row::Scored {
                probability,
                decision,
                reasons,
            } => {
                number.clear();
                let _ = write!(number, "{probability:.6}");
                out.write_field(&number)?;
                out.write_field(decision.as_str())?;
                for r in 0..k {
                    out.write_field(
                        reasons
                            .get(r)
                            .map_or("", |(j, _)| spec.features[*j].name.as_str()),
                    )?;
                }
            }
        }
        self.number = number;
        Ok(())
    }
}

/// The result columns written by [`BlockScorer::write_fields`], after the carried-through ones.
pub fn result_header(scorer: &Scorer, mut passthrough: Vec<String>) -> Vec<String> {
    passthrough.extend(["default_probability".to_string(), "decision".to_string()]);
    passthrough.extend((1..=scorer.bundle().max_reasons).map(|i| format!("reason_{i}")));
    passthrough
}
