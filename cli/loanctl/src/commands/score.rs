//! `loanctl score`: streams a CSV through the scorer. One thread reads and parses chunks of
//! rows while the rayon pool scores the previous chunk, so memory stays flat whatever the size
//! of the file, and output keeps input order.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc;

use anyhow::{anyhow, Context, Result};
use csv::StringRecord;
use model::{Decision, Scorer};
use rayon::prelude::*;

use crate::table::{describe, Layout};

/// Rows parsed per chunk handed to the scoring pool.
const CHUNK_ROWS: usize = 32_768;
/// Rows per rayon task inside a chunk.
const TASK_ROWS: usize = 1_024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Reasons {
    /// Reasons for every application.
    All,
    /// Reasons only where the decision is review or decline (adverse-action notices).
    Adverse,
    /// No reasons (fastest).
    None,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A training output folder, a bundle folder, or a bundle's model.json.
    #[arg(long)]
    pub model: PathBuf,
    /// CSV of applications; columns that are not model features are copied through.
    #[arg(long)]
    pub data: PathBuf,
    /// Output CSV (written to a temporary name and renamed when complete).
    #[arg(long)]
    pub out: PathBuf,
    /// Which rows get reason codes.
    #[arg(long, value_enum, default_value_t = Reasons::All)]
    pub reasons: Reasons,
}

struct Counts {
    scored: usize,
    rejected: usize,
}

pub fn run(a: Args) -> Result<()> {
    let scorer = crate::commands::load_scorer(&a.model)?;
    let spec = &scorer.bundle().spec;
    let mut rdr = crate::table::reader(&a.data)?;
    let headers = rdr
        .headers()
        .with_context(|| format!("{}: cannot read the header", a.data.display()))?
        .clone();
    let layout = Layout::new(spec, &headers, false, &a.data)?;
    let k = scorer.bundle().max_reasons;
    let size = std::fs::metadata(&a.data).map(|m| m.len()).unwrap_or(0);

    let tmp = a.out.with_extension("partial");
    let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    {
        let mut w = csv::Writer::from_writer(&mut out);
        let mut header: Vec<String> = layout
            .passthrough
            .iter()
            .map(|&c| headers[c].to_string())
            .collect();
        header.push("default_probability".into());
        header.push("decision".into());
        header.extend((1..=k).map(|i| format!("reason_{i}")));
        header.push("error".into());
        w.write_record(&header)?;
        w.flush()?;
    }

    let pb = crate::commands::bar(size, "scoring");
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {bytes}/{total_bytes} ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    // Reader thread: parses chunks while the previous one is scored; two chunks in flight at most.
    let (tx, rx) = mpsc::sync_channel::<Result<Vec<StringRecord>>>(2);
    let path = a.data.clone();
    let reader = std::thread::spawn(move || {
        let mut chunk = Vec::with_capacity(CHUNK_ROWS);
        for rec in rdr.into_records() {
            match rec {
                Ok(r) => chunk.push(r),
                Err(e) => {
                    let _ = tx.send(Err(anyhow!("{}: malformed CSV: {e}", path.display())));
                    return;
                }
            }
            if chunk.len() == CHUNK_ROWS
                && tx
                    .send(Ok(std::mem::replace(
                        &mut chunk,
                        Vec::with_capacity(CHUNK_ROWS),
                    )))
                    .is_err()
            {
                return;
            }
        }
        if !chunk.is_empty() {
            let _ = tx.send(Ok(chunk));
        }
    });
    let mut counts = Counts {
        scored: 0,
        rejected: 0,
    };
    for chunk in rx {
        let chunk = chunk?;
        let byte = chunk
            .last()
            .and_then(|r| r.position())
            .map_or(0, |p| p.byte());
        let parts: Vec<Result<(Vec<u8>, usize, usize)>> = chunk
            .par_chunks(TASK_ROWS)
            .map(|rows| score_rows(&scorer, &layout, rows, k, a.reasons))
            .collect();
        for part in parts {
            let (bytes, ok, bad) = part?;
            out.write_all(&bytes)?;
            counts.scored += ok;
            counts.rejected += bad;
        }
        pb.set_position(byte);
    }
    reader
        .join()
        .map_err(|_| anyhow!("the CSV reader thread panicked"))?;
    out.flush()?;
    drop(out);
    std::fs::rename(&tmp, &a.out)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), a.out.display()))?;
    pb.finish_and_clear();
    eprintln!(
        "scored {} rows, rejected {} (see the error column) -> {}",
        counts.scored,
        counts.rejected,
        a.out.display()
    );
    Ok(())
}

/// Scores a slice of rows into CSV bytes; returns (bytes, scored, rejected).
fn score_rows(
    scorer: &Scorer,
    layout: &Layout,
    rows: &[StringRecord],
    k: usize,
    reasons: Reasons,
) -> Result<(Vec<u8>, usize, usize)> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(rows.len() * 96));
    let mut scratch = scorer.scratch();
    let mut raws = Vec::new();
    let (mut ok, mut bad) = (0, 0);
    let mut fields: Vec<String> = Vec::with_capacity(layout.passthrough.len() + k + 3);
    for rec in rows {
        layout.raws(rec, &mut raws);
        for &c in &layout.passthrough {
            w.write_field(rec.get(c).unwrap_or(""))?;
        }
        fields.clear();
        match scorer.score_with(&raws, reasons == Reasons::All, &mut scratch) {
            Ok(mut s) => {
                if reasons == Reasons::Adverse && s.decision != Decision::Approve {
                    s = scorer
                        .score_with(&raws, true, &mut scratch)
                        .map_err(|e| anyhow!("{e}"))?;
                }
                ok += 1;
                fields.push(format!("{:.6}", s.default_probability));
                fields.push(s.decision.as_str().to_string());
                for i in 0..k {
                    fields.push(
                        s.reasons
                            .get(i)
                            .map(|r| r.feature.clone())
                            .unwrap_or_default(),
                    );
                }
                fields.push(String::new());
            }
            Err(e) => {
                bad += 1;
                fields.push(String::new());
                fields.push(String::new());
                fields.extend(std::iter::repeat(String::new()).take(k));
                let message = match e {
                    features::FeatureError::Invalid(errs) => {
                        errs.iter().map(describe).collect::<Vec<_>>().join("; ")
                    }
                    other => other.to_string(),
                };
                fields.push(format!("line {}: {message}", crate::table::line_of(rec)));
            }
        }
        for f in &fields {
            w.write_field(f)?;
        }
        w.write_record(None::<&[u8]>)?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow!("{e}"))?;
    Ok((bytes, ok, bad))
}
