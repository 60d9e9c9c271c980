//! The channel-wise transformer of SSMCTB: one token per channel (global average pool),
//! attention across channels, and a sigmoid gate per channel.
//!
//! Two forms: the paper's (L pre-norm layers, H heads whose outputs are summed, MLP) and the
//! official torch code's (one attention layer, heads concatenated, output projection, no
//! norm/MLP/residual). Softmax is candle's composite `ops::softmax`, which keeps gradients.

use candle_core::{Result, Tensor, D};
use candle_nn::ops::softmax;

use super::config::{BlockConfig, BlockVariant};
use super::layers::{LayerNorm, Linear};
use super::params::{Builder, Init, ParamError};

/// One pre-norm layer of the paper's transformer.
#[derive(Debug, Clone)]
pub struct PaperLayer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    d_q: usize,
}

impl PaperLayer {
    fn new(b: Builder<'_>, cfg: &BlockConfig) -> std::result::Result<Self, ParamError> {
        let (dt, h) = (cfg.token_dim, cfg.heads);
        // Per head W_Q, W_K ∈ R^{d_t×d_q} with d_q = d_t/H; W_V ∈ R^{d_t×d_t} so the summed head
        // outputs stay in token space (eq. 4 sums heads instead of concatenating them).
        let d_q = dt / h;
        Ok(Self {
            ln1: LayerNorm::new(b.pp("ln1").b(), dt, cfg.ln_eps)?,
            q: Linear::new(b.pp("q").b(), dt, h * d_q, false)?,
            k: Linear::new(b.pp("k").b(), dt, h * d_q, false)?,
            v: Linear::new(b.pp("v").b(), dt, h * dt, false)?,
            ln2: LayerNorm::new(b.pp("ln2").b(), dt, cfg.ln_eps)?,
            fc1: Linear::new(b.pp("fc1").b(), dt, cfg.mlp_dim, true)?,
            fc2: Linear::new(b.pp("fc2").b(), cfg.mlp_dim, dt, true)?,
            heads: h,
            d_q,
        })
    }

    fn forward(&self, r: &Tensor) -> Result<Tensor> {
        let (bsz, c, dt) = r.dims3()?;
        let x = self.ln1.forward(r)?;
        let split = |t: Tensor, d: usize| {
            t.reshape((bsz, c, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward(&x)?, self.d_q)?;
        let k = split(self.k.forward(&x)?, self.d_q)?;
        let v = split(self.v.forward(&x)?, dt)?;
        let att = (q.matmul(&k.t()?)? / (self.d_q as f64).sqrt())?;
        let att = softmax(&att, D::Minus1)?;
        let heads = att.matmul(&v)?; // (B, H, C, d_t)
        let p = (r + heads.sum(1)?)?;
        let m = self
            .fc2
            .forward(&self.fc1.forward(&self.ln2.forward(&p)?)?.relu()?)?;
        p + m
    }
}

/// The official code's single attention layer.
#[derive(Debug, Clone)]
pub struct ReferenceAttention {
    qkv: Linear,
    out: Linear,
    heads: usize,
    dim_head: usize,
}

impl ReferenceAttention {
    fn new(b: Builder<'_>, cfg: &BlockConfig) -> std::result::Result<Self, ParamError> {
        let (dt, h) = (cfg.token_dim, cfg.heads);
        Ok(Self {
            qkv: Linear::new(b.pp("qkv").b(), dt, 3 * h * dt, false)?,
            out: Linear::new(b.pp("out").b(), h * dt, dt, true)?,
            heads: h,
            dim_head: dt,
        })
    }

    fn forward(&self, r: &Tensor) -> Result<Tensor> {
        let (bsz, c, _) = r.dims3()?;
        let inner = self.heads * self.dim_head;
        let qkv = self.qkv.forward(r)?;
        let part = |i: usize| -> Result<Tensor> {
            qkv.narrow(D::Minus1, i * inner, inner)?
                .reshape((bsz, c, self.heads, self.dim_head))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let att = softmax(
            &(q.matmul(&k.t()?)? * (self.dim_head as f64).powf(-0.5))?,
            D::Minus1,
        )?;
        let o = att.matmul(&v)?.transpose(1, 2)?.reshape((bsz, c, inner))?;
        self.out.forward(&o)
    }
}

/// The transformer body of either form.
#[derive(Debug, Clone)]
enum Body {
    Paper(Vec<PaperLayer>),
    Reference(ReferenceAttention),
}

/// Channel transformer producing a per-channel gate in (0, 1).
#[derive(Debug, Clone)]
pub struct ChannelTransformer {
    proj: Linear,
    pos: Tensor,
    body: Body,
}

impl ChannelTransformer {
    /// A channel transformer over `c` channels.
    pub fn new(
        b: Builder<'_>,
        c: usize,
        cfg: &BlockConfig,
    ) -> std::result::Result<Self, ParamError> {
        let proj = Linear::new(b.pp("proj").b(), 1, cfg.token_dim, true)?;
        let pos = b.param("pos", &[c, cfg.token_dim], Init::Normal(1.0))?;
        let body = match cfg.variant {
            BlockVariant::ReferenceCode => Body::Reference(ReferenceAttention::new(b, cfg)?),
            _ => {
                let mut layers = Vec::with_capacity(cfg.layers);
                for i in 0..cfg.layers {
                    layers.push(PaperLayer::new(b.pp(&format!("layers.{i}")).b(), cfg)?);
                }
                Body::Paper(layers)
            }
        };
        Ok(Self { proj, pos, body })
    }

    /// The gate σ(R̂) for input Z (B, C, H, W), shaped (B, C, 1, 1).
    pub fn gate(&self, z: &Tensor) -> Result<Tensor> {
        let (bsz, c, _, _) = z.dims4()?;
        let pooled = z.mean_keepdim(3)?.mean_keepdim(2)?.reshape((bsz, c, 1))?;
        let mut r = self.proj.forward(&pooled)?.broadcast_add(&self.pos)?;
        match &self.body {
            Body::Paper(layers) => {
                for l in layers {
                    r = l.forward(&r)?;
                }
            }
            Body::Reference(a) => r = a.forward(&r)?,
        }
        candle_nn::ops::sigmoid(&r.mean(D::Minus1)?)?.reshape((bsz, c, 1, 1))
    }
}
