//! Reading application CSVs against a feature spec: which column is which, labels, and
//! validation errors a person can act on (file line and column name).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use csv::StringRecord;
use features::{FieldError, Raw, Spec};
use sha2::Digest;

/// How the columns of one file map onto a spec.
#[derive(Debug, Clone)]
pub struct Layout {
    /// For each spec feature, its column in the file (absent optional features are `None`).
    pub feature_cols: Vec<Option<usize>>,
    pub target_col: Option<usize>,
    /// Columns that are neither model inputs nor the target, in file order.
    pub passthrough: Vec<usize>,
}

impl Layout {
    pub fn new(
        spec: &Spec,
        headers: &StringRecord,
        need_target: bool,
        file: &Path,
    ) -> Result<Layout> {
        let find = |name: &str| headers.iter().position(|h| h.trim() == name);
        let mut missing = Vec::new();
        let feature_cols: Vec<Option<usize>> = spec
            .features
            .iter()
            .map(|f| {
                let c = find(&f.name);
                if c.is_none() && f.required && f.is_model_input() {
                    missing.push(f.name.clone());
                }
                c
            })
            .collect();
        if !missing.is_empty() {
            bail!(
                "{}: required column(s) missing from the header: {}",
                file.display(),
                missing.join(", ")
            );
        }
        let target_col = find(&spec.target.name);
        if need_target && target_col.is_none() {
            bail!(
                "{}: the label column '{}' (the spec's target) is missing",
                file.display(),
                spec.target.name
            );
        }
        let model_cols: Vec<usize> = spec
            .features
            .iter()
            .zip(&feature_cols)
            .filter(|(f, _)| f.is_model_input())
            .filter_map(|(_, c)| *c)
            .collect();
        let passthrough = (0..headers.len())
            .filter(|c| Some(*c) != target_col && !model_cols.contains(c))
            .collect();
        Ok(Layout {
            feature_cols,
            target_col,
            passthrough,
        })
    }

    /// The record's values in spec order.
    pub fn raws<'a>(&self, rec: &'a StringRecord, out: &mut Vec<Raw<'a>>) {
        out.clear();
        out.extend(self.feature_cols.iter().map(|c| {
            c.and_then(|c| rec.get(c))
                .map_or(Raw::Missing, Raw::from_cell)
        }));
    }

    /// The label of a record: true when it equals the spec's positive value.
    pub fn label(&self, spec: &Spec, rec: &StringRecord) -> std::result::Result<bool, String> {
        let c = self.target_col.ok_or("no label column")?;
        match rec.get(c).map(str::trim) {
            None | Some("") => Err(format!("empty label in column '{}'", spec.target.name)),
            Some(v) => Ok(v == spec.target.positive),
        }
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
    let layout = Layout::new(spec, &headers, true, path)?;
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
        match layout.label(spec, &rec) {
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
