//! An MLflow-compatible tracking server, model registry and artifact proxy, backed by Postgres
//! (production) or SQLite (embedded). The official `mlflow` Python client works against it, and
//! a web UI at `/` shows experiments, runs and models.

pub mod artifacts;
pub mod auth;
pub mod border;
pub mod config;
pub mod error;
pub mod moves;
pub mod params;
pub mod routes;
pub mod search;
pub mod search_sql;
pub mod startup;
pub mod store;
pub mod ui;
pub mod webhooks;

pub use config::Settings;
pub use startup::Application;
