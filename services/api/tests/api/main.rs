//! The API over HTTP: local bundles, the real registry on SQLite and Postgres, hot swaps.

mod border;
mod helpers;
mod keys;
mod memory;
mod methods;
mod models;
mod predict;
mod training;
