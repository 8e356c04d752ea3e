pub mod config;
pub mod frame;
pub mod metrics;
pub mod outbox;
pub mod router;
