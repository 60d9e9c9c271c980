//! From per-frame scores to decisions: the causal frame score, masks, zones and anomaly
//! regions, evaluation metrics over labelled clips and the event state machine (hysteresis,
//! minimum duration, cooldown). Sans-I/O: callers feed scores in
//! and get values and event updates back.

pub mod causal;
pub mod events;
pub mod metrics;
pub mod threshold;
pub mod zones;
