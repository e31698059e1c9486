//! One module per subcommand, plus what they share.

pub mod evaluate;
pub mod generate;
pub mod import;
pub mod quickstart;
pub mod registry;
pub mod score;
pub mod spec;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use model::{Bundle, Scorer};

/// Finds the bundle for `--model`: a training output folder, a bundle folder, or `model.json`.
pub fn resolve_bundle(path: &Path) -> Result<PathBuf> {
    for candidate in [
        path.join("model").join(model::bundle::MODEL_FILE),
        path.join(model::bundle::MODEL_FILE),
    ] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    bail!(
        "no model bundle at {} (looked for model/model.json and model.json); train one with `loanctl train`",
        path.display()
    )
}

/// Loads the bundle behind `--model` and builds its scorer.
pub fn load_scorer(path: &Path) -> Result<Scorer> {
    let file = resolve_bundle(path)?;
    let bundle = Bundle::load(&file).with_context(|| format!("{}", file.display()))?;
    Ok(Scorer::new(bundle)?)
}

pub use training::{bar, print, read_spec};
