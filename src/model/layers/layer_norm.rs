//! Layer normalisation over the last dimension, written with plain tensor ops because candle's
//! fused `LayerNorm` drops gradients (candle#2977).

use candle_core::{Result, Tensor, D};

use crate::model::params::{Builder, Init, ParamError};

/// LayerNorm with learned scale and shift.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// Scale (dim).
    pub weight: Tensor,
    /// Shift (dim).
    pub bias: Tensor,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// A layer norm over `dim` features.
    pub fn new(b: Builder<'_>, dim: usize, eps: f64) -> std::result::Result<Self, ParamError> {
        Ok(Self {
            weight: b.param("weight", &[dim], Init::Const(1.0))?,
            bias: b.param("bias", &[dim], Init::Const(0.0))?,
            eps,
        })
    }

    /// Normalises the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        y.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}
