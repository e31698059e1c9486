//! What every handler shares.

use std::sync::Arc;

use crate::config::Settings;
use crate::models::Models;

pub struct AppState {
    pub models: Arc<Models>,
    pub settings: Settings,
    /// Batch jobs, once Redis is reachable.
    pub batch: Arc<arc_swap::ArcSwapOption<crate::batch::Batch>>,
}
