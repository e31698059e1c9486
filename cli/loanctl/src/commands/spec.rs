//! `loanctl spec infer`.

use std::path::Path;

use anyhow::{Context, Result};

pub fn infer(data: &Path, target: &str, positive: &str) -> Result<()> {
    let mut rdr = training::table::reader(data)?;
    let headers: Vec<String> = rdr
        .headers()
        .with_context(|| format!("{}: cannot read the header", data.display()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.with_context(|| format!("{}: malformed CSV", data.display()))?;
        rows.push(rec.iter().map(str::to_string).collect::<Vec<_>>());
    }
    let spec = features::infer_spec(&headers, &rows, target, positive)?;
    crate::commands::print(&serde_json::to_string_pretty(&spec)?)?;
    eprintln!(
        "drafted {} features from {} rows: review the ranges, add reason texts, and mark protected attributes (\"protected\": true)",
        spec.features.len(),
        rows.len()
    );
    Ok(())
}
