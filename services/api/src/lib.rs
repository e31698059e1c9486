//! The scoring API: one loan application in; probability of default, decision and reason codes
//! out. Models come from the registry (following an alias) or a local bundle, and are swapped
//! in without dropping a request.

pub mod applications;
pub mod auth;
pub mod batch;
pub mod config;
pub mod error;
pub mod events;
pub mod explain;
pub mod metrics;
pub mod models;
pub mod routes;
pub mod shadow;
pub mod startup;
pub mod state;

pub use config::Settings;
pub use startup::Application;
