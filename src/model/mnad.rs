//! The MNAD network (Park et al., CVPR 2020): encoder with skip features, memory read,
//! decoder with skips (prediction) or without (reconstruction), tanh output; the configured
//! SSMCTB block replaces the penultimate convolution of the last decoder block.

use candle_core::{Result, Tensor};

use super::config::{Mode, ModelConfig, Upsample};
use super::layers::{BatchNorm2d, Conv2d, ConvTranspose2d};
use super::memory::{Memory, MemoryRead};
use super::params::{Builder, ParamError, ParamStore};
use super::qat::QatState;
use super::ssmctb::{Block, BlockOutput};

/// How a forward pass runs: f32 (batch statistics when training), or fake-quantized for
/// quantization-aware training (batch norms frozen and folded; see [`super::qat`]).
#[derive(Clone, Copy)]
enum Run<'a> {
    Float { train: bool },
    Qat(&'a QatState),
}

/// conv3×3 → BN → ReLU → conv3×3 → [BN → ReLU] (the tail is absent in the encoder's last block).
#[derive(Debug, Clone)]
pub struct Basic {
    name: String,
    c1: Conv2d,
    bn1: BatchNorm2d,
    c2: Conv2d,
    bn2: Option<BatchNorm2d>,
}

impl Basic {
    fn new(
        b: Builder<'_>,
        cin: usize,
        cout: usize,
        tail: bool,
    ) -> std::result::Result<Self, ParamError> {
        Ok(Self {
            name: b.prefix().to_string(),
            c1: Conv2d::new(b.pp("c1").b(), cin, cout, 3)?,
            bn1: BatchNorm2d::new(b.pp("bn1").b(), cout)?,
            c2: Conv2d::new(b.pp("c2").b(), cout, cout, 3)?,
            bn2: if tail {
                Some(BatchNorm2d::new(b.pp("bn2").b(), cout)?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.bn1.forward(&self.c1.forward(x)?, train)?.relu()?;
        let y = self.c2.forward(&y)?;
        match &self.bn2 {
            Some(bn) => bn.forward(&y, train)?.relu(),
            None => Ok(y),
        }
    }

    fn run(&self, x: &Tensor, run: Run<'_>) -> Result<Tensor> {
        match run {
            Run::Float { train } => self.forward(x, train),
            Run::Qat(q) => {
                let p = &self.name;
                let y = q.conv(&format!("{p}.c1"), x, &self.c1, Some(&self.bn1), true)?;
                let tail = self.bn2.is_some();
                q.conv(&format!("{p}.c2"), &y, &self.c2, self.bn2.as_ref(), tail)
            }
        }
    }
}

/// ×2 upsampling: ConvTranspose2d (or nearest + conv3×3) → BN → ReLU.
#[derive(Debug, Clone)]
pub struct Up {
    name: String,
    transpose: Option<ConvTranspose2d>,
    conv: Option<Conv2d>,
    bn: BatchNorm2d,
}

impl Up {
    fn new(
        b: Builder<'_>,
        cin: usize,
        cout: usize,
        kind: Upsample,
    ) -> std::result::Result<Self, ParamError> {
        let (transpose, conv) = match kind {
            Upsample::Transpose => (Some(ConvTranspose2d::new(b.pp("t").b(), cin, cout)?), None),
            Upsample::NearestConv => (None, Some(Conv2d::new(b.pp("conv").b(), cin, cout, 3)?)),
        };
        Ok(Self {
            name: b.prefix().to_string(),
            transpose,
            conv,
            bn: BatchNorm2d::new(b.pp("bn").b(), cout)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = match (&self.transpose, &self.conv) {
            (Some(t), _) => t.forward(x)?,
            (None, Some(c)) => {
                let (_, _, h, w) = x.dims4()?;
                c.forward(&x.upsample_nearest2d(2 * h, 2 * w)?)?
            }
            (None, None) => unreachable!("Up has one of its two forms"),
        };
        self.bn.forward(&y, train)?.relu()
    }

    fn run(&self, x: &Tensor, run: Run<'_>) -> Result<Tensor> {
        let q = match run {
            Run::Float { train } => return self.forward(x, train),
            Run::Qat(q) => q,
        };
        let p = &self.name;
        match (&self.transpose, &self.conv) {
            (Some(t), _) => q.conv_transpose(&format!("{p}.t"), x, t, &self.bn),
            (None, Some(c)) => {
                let (_, _, h, w) = x.dims4()?;
                let up = x.upsample_nearest2d(2 * h, 2 * w)?;
                q.conv(&format!("{p}.conv"), &up, c, Some(&self.bn), true)
            }
            (None, None) => unreachable!("Up has one of its two forms"),
        }
    }
}

/// The output block: conv → BN → ReLU → (block | conv) → BN → ReLU → conv → tanh.
#[derive(Debug, Clone)]
pub struct Gen {
    name: String,
    c1: Conv2d,
    bn1: BatchNorm2d,
    block: Block,
    bn2: Option<BatchNorm2d>,
    c3: Conv2d,
}

impl Gen {
    fn new(
        b: Builder<'_>,
        cin: usize,
        cout: usize,
        nc: usize,
        cfg: &ModelConfig,
    ) -> std::result::Result<Self, ParamError> {
        let plain = cfg.block.variant == super::config::BlockVariant::None;
        let block_builder = b.pp(if plain { "c2" } else { "block" });
        Ok(Self {
            name: b.prefix().to_string(),
            c1: Conv2d::new(b.pp("c1").b(), cin, nc, 3)?,
            bn1: BatchNorm2d::new(b.pp("bn1").b(), nc)?,
            block: Block::new(block_builder.b(), nc, &cfg.block)?,
            bn2: if plain || cfg.block.keep_bn_after {
                Some(BatchNorm2d::new(b.pp("bn2").b(), nc)?)
            } else {
                None
            },
            c3: Conv2d::new(b.pp("c3").b(), nc, cout, 3)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<(Tensor, BlockOutput)> {
        let y = self.bn1.forward(&self.c1.forward(x)?, train)?.relu()?;
        let bo = self.block.forward(&y)?;
        let y = match &self.bn2 {
            Some(bn) => bn.forward(&bo.output, train)?.relu()?,
            None => bo.output.clone(),
        };
        Ok((self.c3.forward(&y)?.tanh()?, bo))
    }

    fn run(&self, x: &Tensor, run: Run<'_>) -> Result<(Tensor, BlockOutput)> {
        let q = match run {
            Run::Float { train } => return self.forward(x, train),
            Run::Qat(q) => q,
        };
        let p = &self.name;
        let y = q.conv(&format!("{p}.c1"), x, &self.c1, Some(&self.bn1), true)?;
        let (y, bo) = match self.block.plain_conv() {
            // The plain convolution takes BN2 folded in, as the exporter does.
            Some(c2) => {
                let y = q.conv(&format!("{p}.c2"), &y, c2, self.bn2.as_ref(), true)?;
                let bo = BlockOutput {
                    output: y.clone(),
                    target: None,
                };
                (y, bo)
            }
            None => {
                let name = format!("{p}.block.masked");
                let bo = self.block.forward_with(&y, |x, m| q.masked(&name, x, m))?;
                let y = match &self.bn2 {
                    // A ReLU sits between the masked conv and BN2: not folded, eval mode.
                    Some(bn) => q.batch_norm(bn, &bo.output)?.relu()?,
                    None => bo.output.clone(),
                };
                (y, bo)
            }
        };
        let y = q.conv(&format!("{p}.c3"), &y, &self.c3, None, false)?;
        Ok((y.tanh()?, bo))
    }
}

/// Everything one forward pass produces.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Predicted (or reconstructed) frame (B, c, H, W) in [−1, 1].
    pub pred: Tensor,
    /// L2-normalised queries (B·h·w, D), frame-major.
    pub queries: Tensor,
    /// The memory read (scores, weights, read vectors).
    pub read: MemoryRead,
    /// The SSMCTB block's output and target.
    pub block: BlockOutput,
}

/// The MNAD network with its memory.
#[derive(Debug, Clone)]
pub struct Mnad {
    cfg: ModelConfig,
    enc: [Basic; 4],
    dec0: Basic,
    ups: [Up; 3],
    decs: [Basic; 2],
    gen: Gen,
    block: Block,
    /// The memory items.
    pub memory: Memory,
}

impl Mnad {
    /// Builds the network; tensors come from `store` (fresh seeded init, or a checkpoint).
    pub fn new(store: &ParamStore, cfg: &ModelConfig) -> std::result::Result<Self, ParamError> {
        cfg.validate()
            .map_err(|e| ParamError::Candle(candle_core::Error::Msg(e.to_string())))?;
        let r = store.root();
        let (c1, c2, c3, c4) = (cfg.ch(64), cfg.ch(128), cfg.ch(256), cfg.ch(512));
        let enc = r.pp("enc");
        let e = enc.b();
        let enc = [
            Basic::new(e.pp("b1").b(), cfg.input_channels(), c1, true)?,
            Basic::new(e.pp("b2").b(), c1, c2, true)?,
            Basic::new(e.pp("b3").b(), c2, c3, true)?,
            Basic::new(e.pp("b4").b(), c3, c4, false)?,
        ];
        let memory = Memory::new(r.pp("memory").b(), cfg.memory_items, c4)?;
        let dec = r.pp("dec");
        let d = dec.b();
        let u = cfg.upsample;
        let (dec0, ups, decs, gen) = match cfg.mode {
            Mode::Prediction => (
                Basic::new(d.pp("b0").b(), 2 * c4, c4, true)?,
                [
                    Up::new(d.pp("up4").b(), c4, c3, u)?,
                    Up::new(d.pp("up3").b(), c3, c2, u)?,
                    Up::new(d.pp("up2").b(), c2, c1, u)?,
                ],
                [
                    Basic::new(d.pp("b3").b(), 2 * c3, c3, true)?,
                    Basic::new(d.pp("b2").b(), 2 * c2, c2, true)?,
                ],
                Gen::new(d.pp("gen").b(), 2 * c1, cfg.channels, c1, cfg)?,
            ),
            Mode::Reconstruction => (
                Basic::new(d.pp("b0").b(), 2 * c4, c4, true)?,
                [
                    Up::new(d.pp("up4").b(), c4, c4, u)?,
                    Up::new(d.pp("up3").b(), c3, c3, u)?,
                    Up::new(d.pp("up2").b(), c2, c2, u)?,
                ],
                [
                    Basic::new(d.pp("b3").b(), c4, c3, true)?,
                    Basic::new(d.pp("b2").b(), c3, c2, true)?,
                ],
                Gen::new(d.pp("gen").b(), c2, cfg.channels, c1, cfg)?,
            ),
        };
        let block = gen.block.clone();
        Ok(Self {
            cfg: cfg.clone(),
            enc,
            dec0,
            ups,
            decs,
            gen,
            block,
            memory,
        })
    }

    /// The configuration the network was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The self-supervised block (for its loss and for tests).
    pub fn block(&self) -> &Block {
        &self.block
    }

    /// Runs the network on input frames (B, c·(t−1), H, W); `train` selects batch statistics.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Forward> {
        self.run(x, Run::Float { train })
    }

    /// Runs the network fake-quantized as the int8 exporter runs it: batch norms in eval mode
    /// folded into their convolutions, every convolution's weights and input/output activations
    /// fake-quantized with straight-through gradients; activation ranges per `q`'s phase.
    pub fn forward_qat(&self, x: &Tensor, q: &QatState) -> Result<Forward> {
        self.run(x, Run::Qat(q))
    }

    fn run(&self, x: &Tensor, run: Run<'_>) -> Result<Forward> {
        let s1 = self.enc[0].run(x, run)?;
        let s2 = self.enc[1].run(&s1.max_pool2d(2)?, run)?;
        let s3 = self.enc[2].run(&s2.max_pool2d(2)?, run)?;
        let fea = self.enc[3].run(&s3.max_pool2d(2)?, run)?;
        let (b, d, h, w) = fea.dims4()?;
        // F.normalize over channels: x / max(‖x‖, 1e-12).
        let norm = fea.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
        let qmap = fea.broadcast_div(&norm)?;
        let queries = qmap.permute((0, 2, 3, 1))?.reshape((b * h * w, d))?;
        let read = self.memory.read(&queries)?;
        let read_map = read.read.reshape((b, h, w, d))?.permute((0, 3, 1, 2))?;
        let z = Tensor::cat(&[&qmap, &read_map], 1)?;
        let y = self.dec0.run(&z, run)?;
        let (pred, block) = match self.cfg.mode {
            Mode::Prediction => {
                let y = Tensor::cat(&[&s3, &self.ups[0].run(&y, run)?], 1)?;
                let y = self.decs[0].run(&y, run)?;
                let y = Tensor::cat(&[&s2, &self.ups[1].run(&y, run)?], 1)?;
                let y = self.decs[1].run(&y, run)?;
                let y = Tensor::cat(&[&s1, &self.ups[2].run(&y, run)?], 1)?;
                self.gen.run(&y, run)?
            }
            Mode::Reconstruction => {
                let y = self.decs[0].run(&self.ups[0].run(&y, run)?, run)?;
                let y = self.decs[1].run(&self.ups[1].run(&y, run)?, run)?;
                self.gen.run(&self.ups[2].run(&y, run)?, run)?
            }
        };
        Ok(Forward {
            pred,
            queries,
            read,
            block,
        })
    }
}
