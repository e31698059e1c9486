//! HTTP routes.

pub mod batch_jobs;
pub mod model;
pub mod openapi;
pub mod predict;
pub mod training_jobs;
