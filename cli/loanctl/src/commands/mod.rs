//! One module per subcommand, plus what they share.

pub mod drift;
pub mod evaluate;
pub mod generate;
pub mod import;
pub mod quickstart;
pub mod registry;
pub mod replay;
pub mod score;
pub mod spec;
pub mod train;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use model::{Bundle, Scorer};

/// Finds the bundle for `--model`: a training output folder, a bundle folder, or `model.json`.
pub fn resolve_bundle(path: &Path) -> Result<PathBuf> {
    Ok(model::bundle::locate(path)?)
}

/// Loads the bundle behind `--model` and builds its scorer.
pub fn load_scorer(path: &Path) -> Result<Scorer> {
    let file = resolve_bundle(path)?;
    let bundle = Bundle::load(&file).with_context(|| format!("{}", file.display()))?;
    Ok(Scorer::new(bundle)?)
}

pub use training::read_spec;

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

/// A progress bar for training: trees built of all trees to build, and trees per second.
pub fn tree_bar(what: &str) -> indicatif::ProgressBar {
    let pb = bar(0, what);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {pos}/{len} trees, {rate} ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .with_key(
            "rate",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} trees/s", s.per_sec());
            },
        )
        .progress_chars("=> "),
    );
    pb
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
