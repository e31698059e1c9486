//! The one place logging starts: an `EnvFilter` from `RUST_LOG` (default `info`) and JSON logs
//! on stderr, so every service logs the same way.

use tracing_subscriber::{fmt, EnvFilter};

/// Flushes on drop; keep it alive for the life of the process.
#[must_use]
pub struct Guard;

/// Starts logging for `service`. Safe to call once per process.
pub fn init(service: &str) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .try_init();
    tracing::info!(service, "logging started");
    Guard
}

/// Quiet, human-readable logs for tests (`RUST_LOG` still applies, default `warn`).
pub fn init_for_tests() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = fmt().with_env_filter(filter).with_test_writer().try_init();
}
