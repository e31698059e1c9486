//! The registry over HTTP, every test on both backends (SQLite and Postgres).

mod artifacts;
mod auth;
mod border;
mod cli;
mod helpers;
mod hostile;
mod registry;
mod search;
mod tracking;
mod ui;
mod webhooks;
