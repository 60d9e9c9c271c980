//! Batch normalisation over (N, H, W) per channel, with running statistics kept as buffers so
//! they are saved with the checkpoint (candle's own BatchNorm keeps them outside the VarMap).

use candle_core::{Result, Tensor, Var};

use crate::model::params::{Builder, Init, ParamError};

/// BatchNorm2d (eps 1e-5, momentum 0.1, as PyTorch).
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    /// Scale (C).
    pub weight: Tensor,
    /// Shift (C).
    pub bias: Tensor,
    /// Running mean (C).
    pub running_mean: Var,
    /// Running variance (C), unbiased as PyTorch keeps it.
    pub running_var: Var,
    /// Added to the variance.
    pub eps: f64,
    /// Weight of the new batch statistics in the running averages.
    pub momentum: f64,
}

impl BatchNorm2d {
    /// A batch norm over `c` channels.
    pub fn new(b: Builder<'_>, c: usize) -> std::result::Result<Self, ParamError> {
        let weight = b.param("weight", &[c], Init::Const(1.0))?;
        let bias = b.param("bias", &[c], Init::Const(0.0))?;
        b.buffer("running_mean", &[c], Init::Const(0.0))?;
        b.buffer("running_var", &[c], Init::Const(1.0))?;
        Ok(Self {
            weight,
            bias,
            running_mean: b.var("running_mean").expect("just created"),
            running_var: b.var("running_var").expect("just created"),
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    /// Normalises with batch statistics (`train`, also updating the running ones) or running ones.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let shape = (1, (), 1, 1);
        let (mean, var) = if train {
            let (n, _, h, w) = x.dims4()?;
            let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
            let var = x
                .broadcast_sub(&mean)?
                .sqr()?
                .mean_keepdim(0)?
                .mean_keepdim(2)?
                .mean_keepdim(3)?;
            let count = (n * h * w) as f64;
            let m = self.momentum;
            let new_mean = ((self.running_mean.as_tensor() * (1.0 - m))?
                + (mean.detach().flatten_all()? * m)?)?;
            let unbiased = (var.detach().flatten_all()? * (count / (count - 1.0).max(1.0)))?;
            let new_var = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
            self.running_mean.set(&new_mean)?;
            self.running_var.set(&new_var)?;
            (mean, var)
        } else {
            (
                self.running_mean.as_detached_tensor().reshape(shape)?,
                self.running_var.as_detached_tensor().reshape(shape)?,
            )
        };
        let y = x
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + self.eps)?.sqrt()?)?;
        y.broadcast_mul(&self.weight.reshape(shape)?)?
            .broadcast_add(&self.bias.reshape(shape)?)
    }
}
