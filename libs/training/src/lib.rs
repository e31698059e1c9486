//! Training as a library: `loanctl train` and the worker's training jobs run the same code.
//! No command line here: callers fill a [`Config`] and watch [`Event`]s.

pub mod plots;
pub mod register;
pub mod table;
pub mod train;

use std::path::Path;

use anyhow::{Context, Result};
use features::Spec;

pub use train::{Config, Event, Registry, Trained};

/// Reads and checks a feature spec file.
pub fn read_spec(path: &Path) -> Result<Spec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the spec {}", path.display()))?;
    Spec::from_json(&text).with_context(|| format!("{}", path.display()))
}
