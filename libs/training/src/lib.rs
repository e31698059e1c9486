//! Training as a library: `loanctl train` and the worker's training jobs run the same code.

pub mod plots;
pub mod register;
pub mod table;
pub mod train;

use std::path::Path;

use anyhow::{Context, Result};
use features::Spec;

pub use train::{Args, Trained};

/// Reads and checks a feature spec file.
pub fn read_spec(path: &Path) -> Result<Spec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the spec {}", path.display()))?;
    Spec::from_json(&text).with_context(|| format!("{}", path.display()))
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
