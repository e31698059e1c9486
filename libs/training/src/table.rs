//! Reading application CSVs against a feature spec: which column is which, labels, and
//! validation errors a person can act on (file line and column name).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use csv::StringRecord;
use features::{FieldError, Raw, Spec};
use model::Columns;
use sha2::Digest;

/// How the columns of one file map onto a spec: [`model::Columns`], checked.
pub type Layout = Columns;

/// Maps a file's header onto the spec; fails naming the required columns (and the label, when
/// `need_target`) the file lacks.
pub fn layout(
    spec: &Spec,
    headers: &StringRecord,
    need_target: bool,
    file: &Path,
) -> Result<Layout> {
    let columns = Columns::new(spec, headers.iter());
    let missing = columns.missing_required(spec);
    if !missing.is_empty() {
        bail!(
            "{}: required column(s) missing from the header: {}",
            file.display(),
            missing.join(", ")
        );
    }
    if need_target && columns.target.is_none() {
        bail!(
            "{}: the label column '{}' (the spec's target) is missing",
            file.display(),
            spec.target.name
        );
    }
    Ok(columns)
}

/// The label of a record: true when it equals the spec's positive value.
pub fn label(
    layout: &Layout,
    spec: &Spec,
    rec: &StringRecord,
) -> std::result::Result<bool, String> {
    let c = layout.target.ok_or("no label column")?;
    match rec.get(c).map(str::trim) {
        None | Some("") => Err(format!("empty label in column '{}'", spec.target.name)),
        Some(v) => Ok(v == spec.target.positive),
    }
}

/// 1-based line of a record in its file.
pub fn line_of(rec: &StringRecord) -> u64 {
    rec.position().map_or(0, |p| p.line())
}

pub fn reader(path: &Path) -> Result<csv::Reader<BufReader<File>>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(BufReader::with_capacity(1 << 20, file)))
}

/// A labelled file read whole (training and evaluation data fits in memory by design).
pub struct Labelled {
    pub layout: Layout,
    pub records: Vec<StringRecord>,
    pub labels: Vec<bool>,
    pub sha256: String,
}

impl Labelled {
    /// Every record's values in spec order (borrowing the records).
    pub fn rows(&self) -> Vec<Vec<Raw<'_>>> {
        self.records
            .iter()
            .map(|rec| {
                let mut r = Vec::new();
                self.layout.raws(rec, &mut r);
                r
            })
            .collect()
    }
}

/// Reads a labelled CSV and validates every row; lists the first problems with their lines.
pub fn read_labelled(path: &Path, spec: &Spec) -> Result<Labelled> {
    let mut bytes = Vec::new();
    File::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    let mut rdr = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
    let headers = rdr
        .headers()
        .with_context(|| format!("{}: cannot read the header", path.display()))?
        .clone();
    let layout = layout(spec, &headers, true, path)?;
    let mut records = Vec::new();
    let mut labels = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut bad_rows = 0usize;
    for rec in rdr.records() {
        let rec = rec.with_context(|| format!("{}: malformed CSV", path.display()))?;
        let line = line_of(&rec);
        let mut raws = Vec::new();
        layout.raws(&rec, &mut raws);
        let mut errs: Vec<String> = Vec::new();
        if let Err(e) = spec.validate(&raws) {
            errs.extend(e.iter().map(describe));
        }
        match label(&layout, spec, &rec) {
            Ok(l) => labels.push(l),
            Err(e) => errs.push(e),
        }
        if !errs.is_empty() {
            bad_rows += 1;
            for e in errs {
                if problems.len() < 20 {
                    problems.push(format!("  line {line}: {e}"));
                }
            }
        }
        drop(raws);
        records.push(rec);
    }
    if bad_rows > 0 {
        bail!(
            "{}: {bad_rows} row(s) are invalid for the spec; fix them or set the feature's \"on_invalid\" to \"missing\":\n{}",
            path.display(),
            problems.join("\n")
        );
    }
    if records.is_empty() {
        bail!("{}: no data rows", path.display());
    }
    Ok(Labelled {
        layout,
        records,
        labels,
        sha256,
    })
}

/// "column 'x': message".
pub fn describe(e: &FieldError) -> String {
    format!("column '{}': {}", e.field, e.message)
}
