//! Fully connected layer on the last dimension.

use candle_core::{Result, Tensor};

use crate::model::params::{Builder, Init, ParamError};

/// y = x·Wᵀ + b over the last dimension.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Weight (out, in).
    pub weight: Tensor,
    /// Bias (out), if any.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A linear map `din → dout` with PyTorch's default init.
    pub fn new(
        b: Builder<'_>,
        din: usize,
        dout: usize,
        bias: bool,
    ) -> std::result::Result<Self, ParamError> {
        let bound = 1.0 / (din as f32).sqrt();
        Ok(Self {
            weight: b.param("weight", &[dout, din], Init::Uniform(bound))?,
            bias: if bias {
                Some(b.param("bias", &[dout], Init::Uniform(bound))?)
            } else {
                None
            },
        })
    }

    /// Applies the map to (..., din).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.broadcast_matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}
