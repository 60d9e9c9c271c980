//! The anomaly model: MNAD with one SSMCTB block, in candle. Configuration and presets,
//! building blocks (one per file), the memory, the network, losses, training and checkpoints.

pub mod channel_transformer;
pub mod config;
pub mod cost;
pub mod data;
pub mod layers;
pub mod masked_conv;
pub mod memory;
pub mod mnad;
pub mod optim;
pub mod params;
pub mod qat;
pub mod ssmctb;
pub mod train;

pub use config::{BlockVariant, Mode, ModelConfig};
pub use mnad::Mnad;
pub use params::ParamStore;
