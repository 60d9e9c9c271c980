//! thermal-edge: anomaly detection for fixed thermal cameras at harbor sites.
//!
//! Data flows one way: **source → frame → model → score → event → sink / display**.
//! A lower module never imports a higher one.

pub mod alert;
pub mod alloc;
pub mod bench;
pub mod cli;
pub mod config;
pub mod display;
pub mod engine;
pub mod export;
pub mod frame;
pub mod model;
pub mod pipeline;
pub mod report;
pub mod rng;
pub mod score;
pub mod source;
pub mod stats;
