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
    let mut rdr = training::table::reader(&a.data)?;
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
            .map(|rows| score_rows(&scorer, &layout, rows, k, a.reasons))
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

/// Scores a slice of rows into CSV bytes; returns (bytes, scored, rejected). Rows are
/// encoded first, then predicted as one block, then written.
fn score_rows(
    scorer: &Scorer,
    layout: &Layout,
    rows: &[StringRecord],
    k: usize,
    reasons: Reasons,
) -> Result<(Vec<u8>, usize, usize)> {
    use std::fmt::Write as _;
    let pre = scorer.preprocessor();
    let spec = &scorer.bundle().spec;
    let w = pre.width();
    let mut encoded = vec![0.0f32; rows.len() * w];
    let mut errors: Vec<Option<String>> = vec![None; rows.len()];
    let mut raws = Vec::new();
    for ((rec, row), err) in rows
        .iter()
        .zip(encoded.chunks_exact_mut(w))
        .zip(errors.iter_mut())
    {
        layout.raws(rec, &mut raws);
        if let Err(e) = pre.transform(&raws, row) {
            let message = match e {
                features::FeatureError::Invalid(errs) => {
                    errs.iter().map(describe).collect::<Vec<_>>().join("; ")
                }
                other => other.to_string(),
            };
            *err = Some(format!("line {}: {message}", training::table::line_of(rec)));
        }
    }
    let mut margins = vec![0.0f32; rows.len()];
    scorer.predictor().margins(&encoded, &mut margins);
    let calibration = scorer.calibration();
    let thresholds = scorer.thresholds();
    let mut wtr = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(rows.len() * 96));
    let mut scratch = scorer.scratch();
    let mut top = Vec::with_capacity(k + 1);
    let mut number = String::new();
    let (mut ok, mut bad) = (0, 0);
    for (i, rec) in rows.iter().enumerate() {
        for &c in &layout.passthrough {
            wtr.write_field(rec.get(c).unwrap_or(""))?;
        }
        top.clear();
        if let Some(message) = &errors[i] {
            bad += 1;
            for _ in 0..k + 2 {
                wtr.write_field("")?;
            }
            wtr.write_field(message)?;
        } else {
            ok += 1;
            let p = calibration.apply(f64::from(margins[i]));
            let decision = thresholds.decide(p);
            let explain = match reasons {
                Reasons::All => true,
                Reasons::Adverse => decision != Decision::Approve,
                Reasons::None => false,
            };
            if explain {
                scorer.top_reasons(&encoded[i * w..(i + 1) * w], &mut scratch, &mut top);
            }
            number.clear();
            let _ = write!(number, "{p:.6}");
            wtr.write_field(&number)?;
            wtr.write_field(decision.as_str())?;
            for r in 0..k {
                wtr.write_field(
                    top.get(r)
                        .map_or("", |(j, _)| spec.features[*j].name.as_str()),
                )?;
            }
            wtr.write_field("")?;
        }
        wtr.write_record(None::<&[u8]>)?;
    }
    let bytes = wtr.into_inner().map_err(|e| anyhow!("{e}"))?;
    Ok((bytes, ok, bad))
}
