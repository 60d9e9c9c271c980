//! Building blocks with their weights taken from a [`Builder`](super::params::Builder), one per file.

pub mod batch_norm;
pub mod conv;
pub mod im2col;
pub mod layer_norm;
pub mod linear;

pub use batch_norm::BatchNorm2d;
pub use conv::{Conv2d, ConvTranspose2d};
pub use layer_norm::LayerNorm;
pub use linear::Linear;
