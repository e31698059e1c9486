//! `loanctl drift`: how far a file of applications is from the model's training data, by the
//! population stability index of the score and of every feature (the same figures the API's
//! `GET /v1/monitoring/drift` gives for its last decisions).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use model::batch::Row;
use model::drift::{Level, Part, Report, PSI_ACT, PSI_WATCH};
use model::{BlockScorer, Columns, ReasonPolicy};

/// Rows scored per block.
const BLOCK_ROWS: usize = 8_192;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A training output folder, a bundle folder, or a bundle's model.json.
    #[arg(long)]
    pub model: PathBuf,
    /// CSV of applications (a label column, if any, is ignored).
    #[arg(long)]
    pub data: PathBuf,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Folder for drift.md and a plot per drifted feature (PSI ≥ 0.1).
    #[arg(long, default_value = "drift-report")]
    pub out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let scorer = crate::commands::load_scorer(&a.model)?;
    let bundle = scorer.bundle();
    let spec = &bundle.spec;
    let Some(baseline) = bundle.drift_baseline.as_ref() else {
        bail!(
            "this model has no drift baseline (bundles trained before it, and XGBoost imports \
             without --data); retrain it, or import it again with --data"
        );
    };
    let mut rdr = training::table::reader(&a.data)?;
    let headers = rdr
        .headers()
        .with_context(|| format!("{}: cannot read the header", a.data.display()))?
        .clone();
    let columns = Columns::new(spec, headers.iter());
    let missing = columns.missing_required(spec);
    if !missing.is_empty() {
        bail!(
            "{}: no column for the required feature(s) {}",
            a.data.display(),
            missing.join(", ")
        );
    }
    let mut counts = baseline.counts();
    let mut slots = vec![0u16; baseline.width()];
    let mut block = BlockScorer::new(&scorer, ReasonPolicy::None);
    let mut records = Vec::with_capacity(BLOCK_ROWS);
    let mut rejected = 0u64;
    let mut records_iter = rdr.records();
    loop {
        records.clear();
        for rec in records_iter.by_ref().take(BLOCK_ROWS) {
            records.push(rec.with_context(|| format!("{}", a.data.display()))?);
        }
        if records.is_empty() {
            break;
        }
        block.score_records(&columns, &records);
        let mut raws = Vec::new();
        for (i, rec) in records.iter().enumerate() {
            match block.row(i) {
                Row::Scored { probability, .. } => {
                    raws.clear();
                    columns.raws(rec, &mut raws);
                    baseline.bin(spec, &raws, probability, &mut slots);
                    counts.add(&slots);
                }
                Row::Rejected(_) => rejected += 1,
            }
        }
    }
    if counts.n == 0 {
        bail!(
            "{}: no application could be scored ({rejected} rejected)",
            a.data.display()
        );
    }
    let report = counts.report(baseline);
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let plots = write_plots(&a.out, &report)?;
    let md = markdown(&report, rejected, &plots);
    let path = a.out.join("drift.md");
    std::fs::write(&path, &md).with_context(|| format!("cannot write {}", path.display()))?;
    if a.json {
        crate::commands::print(&serde_json::to_string_pretty(&report)?)?;
    } else {
        crate::commands::print(&table(&report))?;
    }
    eprintln!(
        "{} applications compared ({rejected} rejected); report in {}",
        report.window,
        path.display()
    );
    Ok(())
}

/// Drifted parts, most drifted first: (name, part).
fn ranked(report: &Report) -> Vec<(&str, &Part)> {
    let mut parts: Vec<(&str, &Part)> = std::iter::once(("score", &report.score))
        .chain(report.features.iter().map(|(n, p)| (n.as_str(), p)))
        .collect();
    parts.sort_by(|a, b| b.1.psi.total_cmp(&a.1.psi).then(a.0.cmp(b.0)));
    parts
}

fn level(l: Level) -> &'static str {
    match l {
        Level::Stable => "stable",
        Level::Watch => "watch",
        Level::Act => "act",
    }
}

fn table(report: &Report) -> String {
    let parts = ranked(report);
    let w = parts.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut s = format!("{:<w$} {:>8}  reading\n", "", "PSI");
    for (name, p) in parts {
        let _ = writeln!(s, "{name:<w$} {:>8.4}  {}", p.psi, level(p.level));
    }
    s.trim_end().to_string()
}

/// A plot per part at or above the watch level; the files written.
fn write_plots(dir: &std::path::Path, report: &Report) -> Result<Vec<(String, String)>> {
    let mut written = Vec::new();
    for (name, p) in ranked(report) {
        if p.psi < PSI_WATCH {
            continue;
        }
        let file = format!("drift_{}.png", safe_name(name));
        let labels: Vec<String> = p.bins.iter().map(|b| b.bin.clone()).collect();
        let expected: Vec<f64> = p.bins.iter().map(|b| b.expected).collect();
        let actual: Vec<f64> = p.bins.iter().map(|b| b.actual).collect();
        training::plots::drift_chart(
            &dir.join(&file),
            &format!("{name}: PSI {:.3} ({})", p.psi, level(p.level)),
            &labels,
            &expected,
            &actual,
        )?;
        written.push((name.to_string(), file));
    }
    Ok(written)
}

/// A file name from a feature name: letters, digits, `-` and `_` kept, the rest `_`.
fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn markdown(report: &Report, rejected: u64, plots: &[(String, String)]) -> String {
    let mut s = String::from("# Drift report\n\n");
    let _ = writeln!(
        s,
        "{} applications compared with the model's training data ({rejected} rejected by the \
         feature spec and left out). PSI below {PSI_WATCH} is stable, {PSI_WATCH} to {PSI_ACT} \
         worth watching, above {PSI_ACT} calls for action.\n",
        report.window
    );
    s.push_str("| | PSI | reading |\n| --- | ---: | --- |\n");
    for (name, p) in ranked(report) {
        let _ = writeln!(s, "| {name} | {:.4} | {} |", p.psi, level(p.level));
    }
    for (name, file) in plots {
        let _ = write!(s, "\n## {name}\n\n![{name}]({file})\n");
    }
    s
}
