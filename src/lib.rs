pub mod frame;
pub mod config;
