//! What every handler shares.

use std::sync::Arc;

use crate::config::Settings;
use crate::models::Models;

pub struct AppState {
    pub models: Arc<Models>,
    pub settings: Settings,
    /// Batch jobs, once Redis is reachable.
    pub batch: Arc<arc_swap::ArcSwapOption<crate::batch::Batch>>,
    /// The challenger scored in the shadow of each request, when one is configured.
    pub shadow: Option<Arc<crate::shadow::Shadow>>,
    /// The decision audit log, when `AUDIT_URL` is set.
    pub audit: Option<Arc<audit::Auditor>>,
}
