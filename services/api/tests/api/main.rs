//! The API over HTTP: local bundles, the real registry on SQLite and Postgres, hot swaps.

mod audit_log;
mod border;
mod drift;
mod events;
mod helpers;
mod keys;
mod memory;
mod methods;
mod models;
mod predict;
mod shadow;
mod training;
