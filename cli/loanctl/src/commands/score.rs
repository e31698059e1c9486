//! `loanctl score`: streams a CSV through the scorer. One thread reads and parses chunks of
//! rows while the rayon pool scores the previous chunk, so memory stays flat whatever the size
//! of the file, and output keeps input order.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc;

use anyhow::{anyhow, Context, Result};
use csv::StringRecord;
use model::batch::{result_header, Row};
use model::{BlockScorer, ReasonPolicy, Scorer};
use rayon::prelude::*;

use training::table::{describe, Layout};

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
    /// Which rows get reason codes: all, adverse (review or decline only: what adverse-action
    /// notices need) or none (fastest).
    #[arg(long, default_value_t = ReasonPolicy::All)]
    pub reasons: ReasonPolicy,
}

struct Counts {
    scored: usize,
    rejected: usize,
}

pub fn run(a: Args) -> Result<()> {
    let scorer = crate::commands::load_scorer(&a.model)?;
    let spec = &scorer.bundle().spec;
    let mut rdr = training::table::reader(&a.data)?;
    let headers = rdr
        .headers()
        .with_context(|| format!("{}: cannot read the header", a.data.display()))?
        .clone();
    let layout = training::table::layout(spec, &headers, false, &a.data)?;
    let size = std::fs::metadata(&a.data).map(|m| m.len()).unwrap_or(0);

    let tmp = a.out.with_extension("partial");
    let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    {
        let mut w = csv::Writer::from_writer(&mut out);
        let carried = layout
            .passthrough
            .iter()
            .map(|&c| headers[c].to_string())
            .collect();
        let mut header = result_header(&scorer, carried);
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
    // Reader thread: parses chunks while the previous one is scored; two chunks in flight at
    // most, and their record buffers come back to be reused, so memory stays flat.
    let (tx, rx) = mpsc::sync_channel::<Result<Vec<StringRecord>>>(2);
    let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<StringRecord>>();
    let path = a.data.clone();
    let reader = std::thread::spawn(move || loop {
        let mut chunk = recycle_rx.try_recv().unwrap_or_default();
        chunk.resize_with(CHUNK_ROWS, StringRecord::new);
        let mut n = 0;
        while n < CHUNK_ROWS {
            match rdr.read_record(&mut chunk[n]) {
                Ok(true) => n += 1,
                Ok(false) => break,
                Err(e) => {
                    let _ = tx.send(Err(anyhow!("{}: malformed CSV: {e}", path.display())));
                    return;
                }
            }
        }
        chunk.truncate(n);
        let last = n < CHUNK_ROWS;
        if n > 0 && tx.send(Ok(chunk)).is_err() {
            return;
        }
        if last {
            return;
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
            .map(|rows| score_rows(&scorer, &layout, rows, a.reasons))
            .collect();
        for part in parts {
            let (bytes, ok, bad) = part?;
            out.write_all(&bytes)?;
            counts.scored += ok;
            counts.rejected += bad;
        }
        pb.set_position(byte);
        let _ = recycle_tx.send(chunk);
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

/// Scores a slice of rows into CSV bytes with the block scorer; returns (bytes, scored,
/// rejected). A rejected row keeps its carried-through values and says why in `error`.
fn score_rows(
    scorer: &Scorer,
    layout: &Layout,
    rows: &[StringRecord],
    reasons: ReasonPolicy,
) -> Result<(Vec<u8>, usize, usize)> {
    let mut block = BlockScorer::new(scorer, reasons);
    block.score_records(layout, rows);
    let mut wtr = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(rows.len() * 96));
    let (mut ok, mut bad) = (0, 0);
    let mut message = String::new();
    for (i, rec) in rows.iter().enumerate() {
        for &c in &layout.passthrough {
            wtr.write_field(rec.get(c).unwrap_or(""))?;
        }
        message.clear();
        match block.row(i) {
            Row::Scored { .. } => ok += 1,
            Row::Rejected(e) => {
                bad += 1;
                let why = match e {
                    features::FeatureError::Invalid(errs) => {
                        errs.iter().map(describe).collect::<Vec<_>>().join("; ")
                    }
                    other => other.to_string(),
                };
                message = format!("line {}: {why}", training::table::line_of(rec));
            }
        }
        block.write_fields(i, &mut wtr)?;
        wtr.write_field(&message)?;
        wtr.write_record(None::<&[u8]>)?;
    }
    let bytes = wtr.into_inner().map_err(|e| anyhow!("{e}"))?;
    Ok((bytes, ok, bad))
}
