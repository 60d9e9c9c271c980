//! From per-frame scores to decisions: evaluation metrics over labelled clips and the event
//! state machine (hysteresis, minimum duration, cooldown). Sans-I/O: callers feed scores in
//! and get values and event updates back.

pub mod events;
pub mod metrics;
