//! From per-frame scores to decisions: the causal frame score and its prediction-error term,
//! masks, zones and anomaly regions, calibration (thresholds per regime), evaluation metrics
//! over labelled clips, the event state machine (hysteresis, minimum duration, cooldown),
//! regimes for regime-aware thresholds and the drift monitor (does normal footage still look
//! like calibration?). Sans-I/O: callers feed scores in and get values and event updates back.

pub mod calibration;
pub mod causal;
pub mod drift;
pub mod evaluate;
pub mod events;
pub mod footage;
pub mod metrics;
pub mod regime;
pub mod terms;
pub mod threshold;
pub mod zones;
