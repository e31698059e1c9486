//! `loanctl evaluate`.

use std::path::PathBuf;

use anyhow::Result;
use model::report::evaluate;

use training::table::read_labelled;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A training output folder, a bundle folder, or a bundle's model.json.
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled CSV (must have the spec's target column).
    #[arg(long)]
    pub data: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let scorer = crate::commands::load_scorer(&a.model)?;
    let spec = &scorer.bundle().spec;
    let data = read_labelled(&a.data, spec)?;
    let rows = data.rows();
    let eval = evaluate(&scorer, &rows, &data.labels)?;
    if a.json {
        crate::commands::print(&serde_json::to_string_pretty(&serde_json::json!({
            "model_uuid": scorer.bundle().model_uuid,
            "data": {"file": a.data.display().to_string(), "sha256": data.sha256, "rows": rows.len()},
            "thresholds": scorer.thresholds(),
            "evaluation": eval,
        }))?)?;
    } else {
        crate::commands::print(&format!(
            "# Evaluation of model `{}` on `{}`\n\n{}",
            scorer.bundle().model_uuid,
            a.data.display(),
            eval.to_markdown()
        ))?;
    }
    Ok(())
}
