//! HTTP routes.

pub mod model;
pub mod openapi;
pub mod predict;
