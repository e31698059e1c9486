//! One module per subcommand, plus what they share.

pub mod evaluate;
pub mod generate;
pub mod import;
pub mod register;
pub mod score;
pub mod spec;
pub mod train;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use features::Spec;
use model::{Bundle, Scorer};

/// Reads and checks a feature spec file.
pub fn read_spec(path: &Path) -> Result<Spec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the spec {}", path.display()))?;
    Spec::from_json(&text).with_context(|| format!("{}", path.display()))
}

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

/// Prints to stdout; a closed pipe (`loanctl ... | head`) ends output quietly instead of panicking.
pub fn print(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {pos}/{len} ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}
