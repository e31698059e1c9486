//! The batch worker service: a health and metrics server and the job consumers on the Redis
//! queues. The handlers themselves live in the `job-handlers` library (the API's embedded mode
//! runs the same ones); this crate is the process around them.

pub mod config;
pub mod startup;

pub use config::Settings;
pub use startup::Application;
