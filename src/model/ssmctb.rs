//! The self-supervised block that replaces one convolution: SSMCTB (masked conv + channel
//! transformer), SSPCAB (masked conv + squeeze-and-excitation) or a plain 3×3 convolution.
//! Its own loss compares its output with its input.

use candle_core::{Result, Tensor};

use super::channel_transformer::ChannelTransformer;
use super::config::{BlockConfig, BlockLoss, BlockVariant};
use super::layers::{Conv2d, Linear};
use super::masked_conv::MaskedConv;
use super::params::{Builder, ParamError};

/// The block's output and, for self-supervised variants, its input (the block-loss target).
#[derive(Debug, Clone)]
pub struct BlockOutput {
    /// What the next layer receives.
    pub output: Tensor,
    /// The block's input when the variant has a block loss.
    pub target: Option<Tensor>,
}

#[derive(Debug, Clone)]
enum Inner {
    Transformer(MaskedConv, ChannelTransformer),
    SqueezeExcite(MaskedConv, Linear, Linear),
    Conv(Conv2d),
}

/// One block of the configured variant over `c` channels.
#[derive(Debug, Clone)]
pub struct Block {
    inner: Inner,
    loss: BlockLoss,
}

impl Block {
    /// Builds the block; the plain convolution keeps the name the replaced layer would have.
    pub fn new(
        b: Builder<'_>,
        c: usize,
        cfg: &BlockConfig,
    ) -> std::result::Result<Self, ParamError> {
        let inner = match cfg.variant {
            BlockVariant::Paper | BlockVariant::ReferenceCode => Inner::Transformer(
                MaskedConv::new(b, c, cfg.k_prime, cfg.dilation)?,
                ChannelTransformer::new(b.pp("attn").b(), c, cfg)?,
            ),
            BlockVariant::Sspcab => {
                let r = (c / 8).max(1);
                Inner::SqueezeExcite(
                    MaskedConv::new(b, c, cfg.k_prime, cfg.dilation)?,
                    Linear::new(b.pp("se.fc1").b(), c, r, true)?,
                    Linear::new(b.pp("se.fc2").b(), r, c, true)?,
                )
            }
            BlockVariant::None => Inner::Conv(Conv2d::new(b, c, c, 3)?),
        };
        Ok(Self {
            inner,
            loss: cfg.loss,
        })
    }

    /// Whether this block adds its own loss.
    pub fn has_loss(&self) -> bool {
        !matches!(self.inner, Inner::Conv(_))
    }

    /// The masked convolution, when the variant has one.
    pub fn masked_conv(&self) -> Option<&MaskedConv> {
        match &self.inner {
            Inner::Transformer(m, _) | Inner::SqueezeExcite(m, _, _) => Some(m),
            Inner::Conv(_) => None,
        }
    }

    /// The plain convolution of the `none` variant.
    pub fn plain_conv(&self) -> Option<&Conv2d> {
        match &self.inner {
            Inner::Conv(c) => Some(c),
            _ => None,
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: &Tensor) -> Result<BlockOutput> {
        self.forward_with(x, |x, m| m.forward(x))
    }

    /// Applies the block with its masked convolution (with its ReLU) run by `masked`; the
    /// gates stay as they are. Quantization-aware training passes a fake-quantizing version.
    pub fn forward_with(
        &self,
        x: &Tensor,
        masked: impl FnOnce(&Tensor, &MaskedConv) -> Result<Tensor>,
    ) -> Result<BlockOutput> {
        match &self.inner {
            Inner::Conv(c) => Ok(BlockOutput {
                output: c.forward(x)?,
                target: None,
            }),
            Inner::Transformer(m, t) => {
                let z = masked(x, m)?;
                let out = z.broadcast_mul(&t.gate(&z)?)?;
                Ok(BlockOutput {
                    output: out,
                    target: Some(x.clone()),
                })
            }
            Inner::SqueezeExcite(m, fc1, fc2) => {
                let z = masked(x, m)?;
                let (bsz, c, _, _) = z.dims4()?;
                let s = z.mean_keepdim(3)?.mean_keepdim(2)?.reshape((bsz, c))?;
                let g = candle_nn::ops::sigmoid(&fc2.forward(&fc1.forward(&s)?.relu()?)?)?;
                let out = z.broadcast_mul(&g.reshape((bsz, c, 1, 1))?)?;
                Ok(BlockOutput {
                    output: out,
                    target: Some(x.clone()),
                })
            }
        }
    }

    /// The block loss between output and target (mean over elements).
    pub fn loss(&self, out: &BlockOutput) -> Result<Option<Tensor>> {
        let Some(target) = &out.target else {
            return Ok(None);
        };
        let diff = (&out.output - target)?;
        Ok(Some(match self.loss {
            BlockLoss::Mse => diff.sqr()?.mean_all()?,
            BlockLoss::Huber { delta } => huber(&diff, f64::from(delta))?,
        }))
    }
}

/// Mean Huber loss of a difference tensor: ½d² where |d| < δ, δ(|d| − ½δ) elsewhere.
pub fn huber(diff: &Tensor, delta: f64) -> Result<Tensor> {
    let a = diff.abs()?;
    let quad = (diff.sqr()? * 0.5)?;
    let lin = ((&a - 0.5 * delta)? * delta)?;
    a.lt(delta)?.where_cond(&quad, &lin)?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn huber_matches_hand_values() {
        let d = Tensor::new(&[0.5f32, -2.0, 1.0, 0.0], &Device::Cpu).unwrap();
        // 0.125, 1.5, 0.5, 0 -> mean 0.53125 at δ = 1.
        let v = huber(&d, 1.0).unwrap().to_scalar::<f32>().unwrap();
        assert!((v - 0.53125).abs() < 1e-6, "{v}");
        // δ = 0.5: 0.125 (= 0.5·(0.5−0.25)), 0.875, 0.375, 0 -> 0.34375
        let v = huber(&d, 0.5).unwrap().to_scalar::<f32>().unwrap();
        assert!((v - 0.34375).abs() < 1e-6, "{v}");
    }
}
