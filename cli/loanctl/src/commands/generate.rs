//! `loanctl generate`: seeded synthetic applications shaped like a real file.
//!
//! Each row starts from a random row of the source; each cell is then, with some probability,
//! taken from another random row instead, and numbers are jittered. Values stay within what
//! the source holds (same categories, similar ranges) and labels keep some of their relation
//! to the features, which is enough for throughput benchmarks and training-time measurements.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The CSV to imitate (read whole).
    #[arg(long)]
    pub like: PathBuf,
    /// Rows to write.
    #[arg(long)]
    pub rows: usize,
    /// Output CSV.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Name of an id column to add first (empty for none).
    #[arg(long, default_value = "application_id")]
    pub id_column: String,
    /// Chance that a cell comes from another row than the row's source.
    #[arg(long, default_value_t = 0.2)]
    pub mix: f64,
}

pub fn run(a: Args) -> Result<()> {
    if !(0.0..=1.0).contains(&a.mix) {
        bail!("--mix must be between 0 and 1");
    }
    let mut rdr = training::table::reader(&a.like)?;
    let headers = rdr.headers()?.clone();
    let rows: Vec<csv::StringRecord> = rdr
        .records()
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: malformed CSV", a.like.display()))?;
    if rows.is_empty() {
        bail!("{} has no rows to imitate", a.like.display());
    }
    // A column is jittered when every value in it is an integer; jitter stays within the
    // column's observed range, so generated rows pass the same validation as the source.
    let integer: Vec<Option<(i64, i64)>> = (0..headers.len())
        .map(|c| {
            let v: Option<Vec<i64>> = rows
                .iter()
                .map(|r| r.get(c).and_then(|v| v.trim().parse::<i64>().ok()))
                .collect();
            v.map(|v| {
                (
                    v.iter().copied().min().unwrap_or(0),
                    v.iter().copied().max().unwrap_or(0),
                )
            })
        })
        .collect();
    if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let file = std::fs::File::create(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let mut w = csv::Writer::from_writer(BufWriter::with_capacity(1 << 20, file));
    let mut header: Vec<&str> = Vec::new();
    if !a.id_column.is_empty() {
        header.push(&a.id_column);
    }
    header.extend(headers.iter());
    w.write_record(&header)?;
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let pb = crate::commands::bar(a.rows as u64, "generating");
    let mut cells: Vec<String> = Vec::with_capacity(header.len());
    for i in 0..a.rows {
        let base = &rows[rng.gen_range(0..rows.len())];
        cells.clear();
        if !a.id_column.is_empty() {
            cells.push(format!("A{:09}", i + 1));
        }
        for (c, range) in integer.iter().enumerate() {
            let src = if rng.gen_bool(a.mix) {
                &rows[rng.gen_range(0..rows.len())]
            } else {
                base
            };
            let v = src.get(c).unwrap_or("");
            if let Some((lo, hi)) = *range {
                let x: i64 = v.trim().parse().unwrap_or(0);
                let jitter = (x as f64 * rng.gen_range(-0.1..0.1)).round() as i64;
                cells.push((x + jitter).clamp(lo, hi).to_string());
            } else {
                cells.push(v.to_string());
            }
        }
        w.write_record(&cells)?;
        if i % 65_536 == 0 {
            pb.set_position(i as u64);
        }
    }
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .flush()?;
    pb.finish_and_clear();
    eprintln!("wrote {} rows to {}", a.rows, a.out.display());
    Ok(())
}
