//! Versions side by side before a promotion: the held-out figures training logged to each
//! version's source run (`loanctl train --registry` and training jobs log them), with the
//! champion's row marked, on the model page and on the confirmation page of an alias move.

use maud::{html, Markup};

use crate::error::Result;
use crate::startup::AppState;
use crate::store::registry::ModelVersion;
use crate::store::runs;

/// Which way is better for a figure.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
    /// Neither: a change to read, not a gain or a loss (the approval rate).
    Neither,
}

/// The compared figures: run metric, column title, which way is better, decimals.
const FIGURES: [(&str, &str, Better, usize); 5] = [
    ("test_roc_auc", "ROC AUC", Better::Higher, 4),
    ("test_ks", "KS", Better::Higher, 4),
    ("test_brier", "Brier", Better::Lower, 4),
    ("test_approval_rate", "Approval rate", Better::Neither, 3),
    (
        "test_min_adverse_impact_ratio",
        "Worst adverse impact ratio",
        Better::Higher,
        3,
    ),
];

/// The most versions the model page compares (the newest).
const MAX_VERSIONS: usize = 20;

/// One version's figures (`None`: not logged, or no source run).
pub struct Row {
    pub version: i64,
    pub aliases: Vec<String>,
    values: Vec<Option<f64>>,
}

/// The figures of `versions` (newest first, at most [`MAX_VERSIONS`]) from their source runs.
/// A run that is gone leaves its row empty.
pub async fn rows(s: &AppState, versions: &[ModelVersion]) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    let mut newest: Vec<&ModelVersion> = versions.iter().collect();
    newest.sort_by_key(|v| std::cmp::Reverse(v.version));
    for v in newest.into_iter().take(MAX_VERSIONS) {
        let metrics = if v.run_id.is_empty() {
            Vec::new()
        } else {
            match runs::get_run(&s.pool, &v.run_id).await {
                Ok(run) => run.metrics,
                Err(crate::error::RegistryError::NotFound(_)) => Vec::new(),
                Err(e) => return Err(e),
            }
        };
        let values = FIGURES
            .iter()
            .map(|(key, ..)| {
                metrics
                    .iter()
                    .find(|m| m.key == *key && !m.is_nan)
                    .map(|m| m.value)
            })
            .collect();
        out.push(Row {
            version: v.version,
            aliases: v.aliases.clone(),
            values,
        });
    }
    Ok(out)
}

fn cell(v: Option<f64>, decimals: usize) -> Markup {
    html! { @if let Some(x) = v { (format!("{x:.decimals$}")) } @else { span.muted { "—" } } }
}

/// The comparison table. `champion`: the version to mark as serving; `candidate`: the one a
/// change would promote (its row shows the difference from the champion's).
pub fn table(rows: &[Row], champion: Option<i64>, candidate: Option<i64>) -> Markup {
    let base = rows
        .iter()
        .find(|r| Some(r.version) == champion)
        .map(|r| &r.values);
    let any = rows.iter().any(|r| r.values.iter().any(Option::is_some));
    html! {
        @if !any {
            p.muted { "No held-out figures logged for these versions (training with "
                code { "loanctl train --registry" } " or a training job logs them to the source run)." }
        } @else {
            div.scroll {
                table.compare {
                    thead {
                        tr {
                            th.num { "Version" } th { "Aliases" }
                            @for (_, title, ..) in FIGURES { th.num { (title) } }
                        }
                    }
                    tbody {
                        @for r in rows {
                            @let is_champion = Some(r.version) == champion;
                            @let is_candidate = Some(r.version) == candidate;
                            @let class = if is_champion { "champion" } else if is_candidate { "candidate" } else { "" };
                            tr class=(class) {
                                th.num scope="row" {
                                    (r.version)
                                    @if is_champion { " " span.tag { "serving" } }
                                    @if is_candidate { " " span.tag { "proposed" } }
                                }
                                td { @for a in &r.aliases { span.tag { "@" (a) } " " } }
                                @for (i, (_, _, better, decimals)) in FIGURES.iter().enumerate() {
                                    td.num {
                                        (cell(r.values[i], *decimals))
                                        @if let (true, Some(now), Some(Some(was))) = (is_candidate && !is_champion, r.values[i], base.map(|b| b[i])) {
                                            @let d = now - was;
                                            @let class = match better {
                                                Better::Higher if d > 0.0 => "gain",
                                                Better::Lower if d < 0.0 => "gain",
                                                Better::Neither => "change",
                                                _ if d == 0.0 => "change",
                                                _ => "loss",
                                            };
                                            " " span class=(class) { "(" (format!("{d:+.decimals$}")) ")" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p.muted { "Held out at training, from each version's source run. Worst adverse impact ratio: the lowest group's approval rate over the highest group's for any protected attribute (below 0.8 deserves review)." }
        }
    }
}
