//! Quantization-aware training (QAT): fine-tunes a trained checkpoint with fake quantization
//! that mirrors the int8 exporter's scheme exactly, so that the int8 export of a QAT
//! checkpoint scores like its f32 self.
//!
//! Scheme `u8s8-per-channel-v1`, on every convolution of the network:
//! - weights: batch norm folded in where the exporter folds it (conv directly followed by BN,
//!   running statistics, ε = 1e-5), then symmetric int8 per output channel:
//!   s_c = max|w′_c| / 127 (1 when 0), q = clamp(round_half_even(w′/s_c), −127, 127);
//! - activations: asymmetric uint8 per tensor at `<conv>.in` and `<conv>.out` (after the ReLU
//!   that directly follows, if any), from a range [lo, hi] widened to include 0:
//!   scale = (hi − lo)/255 (1 when 0), zp = clamp(round_half_even(−lo/scale), 0, 255);
//! - the bias stays f32 (the exporter stores it as int32 at s_x·s_c), everything that is not a
//!   convolution (memory read, channel transformer, gates, tanh) stays f32.
//!
//! Gradients pass the rounding straight through (STE). Batch norms are frozen in eval mode.
//! Activation ranges are calibrated on a few batches, then follow an exponential moving average
//! of batch min/max, frozen for the last steps; they are saved as `quant.json`
//! ([`QuantRanges`]), which the int8 exporter uses instead of its own calibration.
//!
//! The plain-slice functions ([`quant_params`], [`weight_scales`], [`quantize_weight`],
//! [`fake_quant_value`]) are what the exporter calls, so both sides share one implementation.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::config::{BlockVariant, ModelConfig, Upsample};
use super::data::FrameSet;
use super::layers::{BatchNorm2d, Conv2d, ConvTranspose2d};
use super::masked_conv::MaskedConv;
use super::optim::{cosine_lr, Adam};
use super::train::{
    files, latest_checkpoint, load_model, loss, psnr, save_checkpoint, EpochReport, LossTerms,
    Progress, TrainError, TrainOptions, TrainState,
};
use super::Mnad;
use crate::rng::Rng;

/// Name of the scheme written into `quant.json`.
pub const SCHEME: &str = "u8s8-per-channel-v1";
/// File name of the activation ranges inside a checkpoint folder.
pub const RANGES_FILE: &str = "quant.json";
/// Largest magnitude of an int8 weight (symmetric, −127..=127).
pub const WEIGHT_QMAX: f32 = 127.0;

// ---------------------------------------------------------------------------------------------
// The scheme on plain values (shared with the exporter).

/// Asymmetric uint8 parameters (scale, zero point) of a range [lo, hi], first widened to
/// include 0: scale = (hi − lo)/255 (1 when that is 0), zp = clamp(round_half_even(−lo/scale),
/// 0, 255).
pub fn quant_params(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let mut scale = (hi - lo) / 255.0;
    if scale == 0.0 || !scale.is_finite() {
        scale = 1.0;
    }
    let zp = (-lo / scale).round_ties_even().clamp(0.0, 255.0);
    (scale, zp as u8)
}

/// The uint8 code of `x`: clamp(round_half_even(x/scale) + zp, 0, 255).
pub fn quantize_value(x: f32, scale: f32, zp: u8) -> u8 {
    ((x / scale).round_ties_even() + f32::from(zp)).clamp(0.0, 255.0) as u8
}

/// x̃ = (clamp(round_half_even(x/scale) + zp, 0, 255) − zp)·scale.
pub fn fake_quant_value(x: f32, scale: f32, zp: u8) -> f32 {
    let z = f32::from(zp);
    (((x / scale).round_ties_even() + z).clamp(0.0, 255.0) - z) * scale
}

/// Per-output-channel symmetric int8 scales of a weight of `shape` whose output channel is
/// `axis` (0 for Conv (out, in, k, k), 1 for ConvTranspose (in, out, k, k)):
/// s_c = max|w_c| / 127 over everything else, 1 where the channel is all zero.
pub fn weight_scales(w: &[f32], shape: &[usize], axis: usize) -> Vec<f32> {
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    assert_eq!(
        w.len(),
        shape.iter().product::<usize>(),
        "weight length vs shape"
    );
    let mut max = vec![0f32; n];
    for (i, v) in w.iter().enumerate() {
        let c = (i / inner) % n;
        max[c] = max[c].max(v.abs());
    }
    max.into_iter()
        .map(|m| {
            let s = m / WEIGHT_QMAX;
            if s == 0.0 || !s.is_finite() {
                1.0
            } else {
                s
            }
        })
        .collect()
}

/// The int8 codes q = clamp(round_half_even(w/s_c), −127, 127) and the scales s_c of a weight
/// (see [`weight_scales`]); the fake-quantized weight is q·s_c.
pub fn quantize_weight(w: &[f32], shape: &[usize], axis: usize) -> (Vec<i8>, Vec<f32>) {
    let scales = weight_scales(w, shape, axis);
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let s = scales[(i / inner) % n];
            (v / s).round_ties_even().clamp(-WEIGHT_QMAX, WEIGHT_QMAX) as i8
        })
        .collect();
    (q, scales)
}

/// The fake-quantized values q·s_c of a weight (see [`quantize_weight`]).
pub fn fake_quant_weight_values(w: &[f32], shape: &[usize], axis: usize) -> Vec<f32> {
    let (q, scales) = quantize_weight(w, shape, axis);
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    q.iter()
        .enumerate()
        .map(|(i, &q)| f32::from(q) * scales[(i / inner) % n])
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The scheme on tensors, with straight-through gradients.

/// Fake-quantizes a weight per output channel (`axis`), int8 symmetric; the gradient passes
/// straight through. The forward value is exactly q·s_c.
pub fn fake_quant_weight_per_channel(w: &Tensor, axis: usize) -> Result<Tensor> {
    let shape = w.dims().to_vec();
    let vals = w
        .detach()
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let fq = Tensor::from_vec(
        fake_quant_weight_values(&vals, &shape, axis),
        shape,
        w.device(),
    )?
    .to_dtype(w.dtype())?;
    straight_through(w, &fq)
}

/// `fq` in the forward pass, the gradient of `x` in the backward pass: (x − x̄) + fq with x̄
/// detached, which is exactly fq (x − x̄ = 0), unlike x + (fq − x̄).
fn straight_through(x: &Tensor, fq: &Tensor) -> Result<Tensor> {
    (x - x.detach())? + fq
}

/// uint8 fake quantization of an activation with the range [lo, hi] (see [`quant_params`]);
/// the gradient passes straight through. On the CPU the rounding is half-to-even like the
/// exporter's; other devices use candle's `round` (half away from zero: exact ties only).
pub fn fake_quant_act(x: &Tensor, lo: f32, hi: f32) -> Result<Tensor> {
    let (scale, zp) = quant_params(lo, hi);
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(FakeQuantAct { scale, zp });
    }
    let z = f64::from(zp);
    let xd = x.detach();
    let fq = (((xd / f64::from(scale))?.round()? + z)?.clamp(0.0, 255.0)? - z)? * f64::from(scale);
    straight_through(x, &fq?)
}

/// The CPU activation fake-quantizer, one parallel pass; its backward is the identity.
struct FakeQuantAct {
    scale: f32,
    zp: u8,
}

impl CustomOp1 for FakeQuantAct {
    fn name(&self) -> &'static str {
        "fake-quant-u8"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let v = s.as_slice::<f32>()?;
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("fake-quant needs a contiguous input")
        };
        let out: Vec<f32> = v[a..b]
            .par_iter()
            .map(|&x| fake_quant_value(x, self.scale, self.zp))
            .collect();
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.clone()))
    }
}

/// Minimum and maximum of a tensor (one parallel pass on the CPU).
pub fn min_max(x: &Tensor) -> Result<(f32, f32)> {
    let x = x.contiguous()?;
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let (st, l) = x.storage_and_layout();
        if let (candle_core::Storage::Cpu(cs), Some((a, b))) = (&*st, l.contiguous_offsets()) {
            let v = &cs.as_slice::<f32>()?[a..b];
            let id = || (f32::INFINITY, f32::NEG_INFINITY);
            return Ok(v
                .par_iter()
                .fold(id, |(lo, hi), &x| (lo.min(x), hi.max(x)))
                .reduce(id, |(a, b), (c, d)| (a.min(c), b.max(d))));
        }
    }
    let f = x.flatten_all()?.to_dtype(DType::F32)?;
    Ok((f.min(0)?.to_scalar()?, f.max(0)?.to_scalar()?))
}

// ---------------------------------------------------------------------------------------------
// Sites and saved ranges.

/// The quantized convolutions of a network, in forward order, by parameter prefix.
pub fn quantized_convs(cfg: &ModelConfig) -> Vec<String> {
    let up = match cfg.upsample {
        Upsample::Transpose => "t",
        Upsample::NearestConv => "conv",
    };
    let block = if cfg.block.variant == BlockVariant::None {
        "dec.gen.c2"
    } else {
        "dec.gen.block.masked"
    };
    let mut v = Vec::new();
    for b in ["enc.b1", "enc.b2", "enc.b3", "enc.b4", "dec.b0"] {
        v.push(format!("{b}.c1"));
        v.push(format!("{b}.c2"));
    }
    for (u, b) in [("dec.up4", "dec.b3"), ("dec.up3", "dec.b2")] {
        v.push(format!("{u}.{up}"));
        v.push(format!("{b}.c1"));
        v.push(format!("{b}.c2"));
    }
    v.push(format!("dec.up2.{up}"));
    v.push("dec.gen.c1".into());
    v.push(block.into());
    v.push("dec.gen.c3".into());
    v
}

/// The activation sites (`<conv>.in`, `<conv>.out`) of a network, in forward order.
pub fn sites(cfg: &ModelConfig) -> Vec<String> {
    quantized_convs(cfg)
        .into_iter()
        .flat_map(|c| [format!("{c}.in"), format!("{c}.out")])
        .collect()
}

/// The activation ranges of a QAT checkpoint (`quant.json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantRanges {
    /// Quantization scheme ([`SCHEME`]).
    pub scheme: String,
    /// [lo, hi] per activation site (see [`sites`]).
    pub ranges: BTreeMap<String, [f32; 2]>,
}

impl QuantRanges {
    /// Ranges of the current scheme.
    pub fn new(ranges: BTreeMap<String, [f32; 2]>) -> Self {
        Self {
            scheme: SCHEME.into(),
            ranges,
        }
    }

    /// Reads `dir/quant.json`; `None` when the checkpoint has none (not QAT-trained).
    pub fn load(dir: &Path) -> std::result::Result<Option<Self>, TrainError> {
        let p = dir.join(RANGES_FILE);
        let text = match fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(TrainError::Io { path: p, source }),
        };
        let r: QuantRanges = serde_json::from_slice(&text).map_err(|e| TrainError::Checkpoint {
            path: p.clone(),
            detail: format!("not a quantization range file: {e}"),
        })?;
        if r.scheme != SCHEME {
            return Err(TrainError::Checkpoint {
                path: p,
                detail: format!(
                    "quantization scheme '{}' is not the supported '{SCHEME}'",
                    r.scheme
                ),
            });
        }
        Ok(Some(r))
    }

    /// Writes `dir/quant.json`.
    pub fn save(&self, dir: &Path) -> std::result::Result<(), TrainError> {
        let p = dir.join(RANGES_FILE);
        if let Some((k, _)) = self
            .ranges
            .iter()
            .find(|(_, r)| !(r[0].is_finite() && r[1].is_finite()))
        {
            return Err(TrainError::Invalid(format!(
                "quantization range of {k} is not finite (did training diverge?)"
            )));
        }
        fs::create_dir_all(dir).map_err(|source| TrainError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        fs::write(
            &p,
            serde_json::to_vec_pretty(self).expect("ranges serialise"),
        )
        .map_err(|source| TrainError::Io { path: p, source })
    }
}

// ---------------------------------------------------------------------------------------------
// The fake-quantized network state.

/// How activation ranges are handled by [`QatState::act`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangePhase {
    /// Record min/max over all batches seen; activations pass unquantized.
    Calibrate,
    /// Move each range towards the batch's min/max (EMA), then quantize with it.
    Ema,
    /// Quantize with the ranges as they are (every site must have one).
    Frozen,
}

/// Activation ranges and switches of a fake-quantized forward pass ([`Mnad::forward_qat`]).
#[derive(Debug)]
pub struct QatState {
    ranges: Mutex<BTreeMap<String, [f32; 2]>>,
    phase: Mutex<RangePhase>,
    /// EMA momentum of the ranges (0.99: r ← 0.99·r + 0.01·batch).
    pub momentum: f32,
    /// Fake-quantize weights (off only for checks of the folding).
    pub quantize_weights: bool,
    /// Fake-quantize activations (off only for checks of the folding).
    pub quantize_acts: bool,
}

impl Default for QatState {
    fn default() -> Self {
        Self::new()
    }
}

impl QatState {
    /// No ranges yet, calibrating; weights and activations quantized, momentum 0.99.
    pub fn new() -> Self {
        Self {
            ranges: Mutex::new(BTreeMap::new()),
            phase: Mutex::new(RangePhase::Calibrate),
            momentum: 0.99,
            quantize_weights: true,
            quantize_acts: true,
        }
    }

    /// Fixed ranges (e.g. a QAT checkpoint's), frozen.
    pub fn with_ranges(ranges: &QuantRanges) -> Self {
        let s = Self::new();
        *s.ranges.lock().expect("ranges lock") = ranges.ranges.clone();
        s.set_phase(RangePhase::Frozen);
        s
    }

    /// The current phase.
    pub fn phase(&self) -> RangePhase {
        *self.phase.lock().expect("phase lock")
    }

    /// Switches the phase.
    pub fn set_phase(&self, p: RangePhase) {
        *self.phase.lock().expect("phase lock") = p;
    }

    /// The current ranges.
    pub fn ranges(&self) -> QuantRanges {
        QuantRanges::new(self.ranges.lock().expect("ranges lock").clone())
    }

    /// Observes (per the phase) and fake-quantizes the activation at `site`.
    pub fn act(&self, site: &str, x: &Tensor) -> Result<Tensor> {
        let phase = self.phase();
        let range = {
            let mut ranges = self.ranges.lock().expect("ranges lock");
            match phase {
                RangePhase::Calibrate => {
                    let (lo, hi) = min_max(x)?;
                    let r = ranges.entry(site.to_string()).or_insert([lo, hi]);
                    *r = [r[0].min(lo), r[1].max(hi)];
                    return Ok(x.clone());
                }
                RangePhase::Ema => {
                    let (lo, hi) = min_max(x)?;
                    let m = self.momentum;
                    let r = ranges.entry(site.to_string()).or_insert([lo, hi]);
                    *r = [m * r[0] + (1.0 - m) * lo, m * r[1] + (1.0 - m) * hi];
                    *r
                }
                RangePhase::Frozen => *ranges.get(site).ok_or_else(|| {
                    candle_core::Error::Msg(format!("no quantization range for {site}"))
                })?,
            }
        };
        if self.quantize_acts {
            fake_quant_act(x, range[0], range[1])
        } else {
            Ok(x.clone())
        }
    }

    fn weight(&self, w: &Tensor, axis: usize) -> Result<Tensor> {
        if self.quantize_weights {
            fake_quant_weight_per_channel(w, axis)
        } else {
            Ok(w.clone())
        }
    }

    /// A convolution with its batch norm (if any) folded in, fake-quantized weights and
    /// activations, and an optional ReLU before the output site.
    pub fn conv(
        &self,
        name: &str,
        x: &Tensor,
        conv: &Conv2d,
        bn: Option<&BatchNorm2d>,
        relu: bool,
    ) -> Result<Tensor> {
        let x = self.act(&format!("{name}.in"), x)?;
        let (w, b) = match bn {
            Some(bn) => fold(&conv.weight, &conv.bias, bn, 0)?,
            None => (conv.weight.clone(), conv.bias.clone()),
        };
        let mut y = conv.forward_with(&x, &self.weight(&w, 0)?, &b)?;
        if relu {
            y = y.relu()?;
        }
        self.act(&format!("{name}.out"), &y)
    }

    /// The ×2 transposed convolution with its batch norm folded in (output channel = axis 1),
    /// then ReLU.
    pub fn conv_transpose(
        &self,
        name: &str,
        x: &Tensor,
        t: &ConvTranspose2d,
        bn: &BatchNorm2d,
    ) -> Result<Tensor> {
        let x = self.act(&format!("{name}.in"), x)?;
        let (w, b) = fold(&t.weight, &t.bias, bn, 1)?;
        let y = t.forward_with(&x, &self.weight(&w, 1)?, &b)?.relu()?;
        self.act(&format!("{name}.out"), &y)
    }

    /// The masked convolution (its full kernel quantized per output channel) and its ReLU.
    pub fn masked(&self, name: &str, x: &Tensor, m: &MaskedConv) -> Result<Tensor> {
        let x = self.act(&format!("{name}.in"), x)?;
        let y = m.forward_mapped(&x, |k, b| Ok((self.weight(k, 0)?, b.clone())))?;
        self.act(&format!("{name}.out"), &y)
    }

    /// An eval-mode batch norm that is not folded (a ReLU sits before it), differentiable in
    /// γ and β (the fused CPU eval path has no backward).
    pub fn batch_norm(&self, bn: &BatchNorm2d, x: &Tensor) -> Result<Tensor> {
        let (scale, shift) = bn_affine(bn)?;
        let shape = (1, (), 1, 1);
        x.broadcast_mul(&scale.reshape(shape)?)?
            .broadcast_add(&shift.reshape(shape)?)
    }
}

/// Eval-mode batch norm as y = x·scale + shift, differentiable in γ and β (running statistics
/// are constants): scale = γ/√(var + ε), shift = β − μ·scale.
fn bn_affine(bn: &BatchNorm2d) -> Result<(Tensor, Tensor)> {
    let mean = bn.running_mean.as_detached_tensor();
    let var = bn.running_var.as_detached_tensor();
    let scale = bn.weight.div(&(var + bn.eps)?.sqrt()?)?;
    let shift = (&bn.bias - mean.mul(&scale)?)?;
    Ok((scale, shift))
}

/// Folds an eval-mode batch norm into a kernel whose output channel is `axis` and its bias:
/// w′ = w·scale, b′ = b·scale + shift = (b − μ)·γ/√(var + ε) + β.
fn fold(w: &Tensor, b: &Tensor, bn: &BatchNorm2d, axis: usize) -> Result<(Tensor, Tensor)> {
    let (scale, shift) = bn_affine(bn)?;
    let mut shape = vec![1usize; w.rank()];
    shape[axis] = scale.dim(0)?;
    let w = w.broadcast_mul(&scale.reshape(shape)?)?;
    let b = (b.mul(&scale)? + shift)?;
    Ok((w, b))
}

// ---------------------------------------------------------------------------------------------
// Training.

/// How to run quantization-aware training.
#[derive(Debug, Clone)]
pub struct QatOptions {
    /// Epochs, batch, learning rate (cosine over the epochs), seed, held-out fraction, step cap.
    pub train: TrainOptions,
    /// Batches the frozen model runs over to initialise the ranges.
    pub calibration_batches: usize,
    /// EMA momentum of the ranges.
    pub momentum: f32,
    /// Fraction of the steps, at the end, with the ranges frozen.
    pub freeze_fraction: f64,
}

impl Default for QatOptions {
    fn default() -> Self {
        Self {
            train: TrainOptions {
                epochs: DEFAULT_EPOCHS,
                lr: DEFAULT_LR,
                ..TrainOptions::default()
            },
            calibration_batches: 8,
            momentum: 0.99,
            freeze_fraction: 0.1,
        }
    }
}

/// Default QAT learning rate: 10 % of normal training's 2e-4 — the weights only need to adapt
/// to the rounding, and a full-size step would undo much of the trained model at once.
pub const DEFAULT_LR: f64 = 2e-5;
/// Default QAT epochs: 10 % of normal training's 60.
pub const DEFAULT_EPOCHS: usize = 6;

/// Fine-tunes the checkpoint `from` (a checkpoint folder, or a run folder's latest) with fake
/// quantization and writes one checkpoint into `out` (config.json, model.safetensors,
/// optimizer.safetensors, state.json, quant.json) with `out/train.jsonl`. Returns the epoch
/// reports and the final ranges.
pub fn train_qat(
    from: &Path,
    data: FrameSet,
    opts: &QatOptions,
    out: &Path,
    device: &Device,
    progress: &mut dyn Progress,
) -> std::result::Result<(Vec<EpochReport>, QuantRanges), TrainError> {
    let t = &opts.train;
    if t.batch_size == 0 || t.epochs == 0 {
        return Err(TrainError::Invalid(
            "batch size and epochs must be at least 1".into(),
        ));
    }
    let dir = latest_checkpoint(from)?;
    let (store, net) = load_model(&dir, device)?;
    let cfg = net.config().clone();
    if (data.height, data.width) != (cfg.height, cfg.width) {
        return Err(TrainError::Invalid(format!(
            "data is {}×{}, the checkpoint's model needs {}×{}",
            data.height, data.width, cfg.height, cfg.width
        )));
    }
    let (train_set, val_set) = data.split_holdout(t.val_fraction, cfg.t_length);
    let windows = train_set.windows(cfg.t_length);
    if windows.len() < t.batch_size {
        return Err(TrainError::Invalid(format!(
            "only {} training windows of {} frames, fewer than one batch of {}",
            windows.len(),
            cfg.t_length,
            t.batch_size
        )));
    }
    let val_windows = val_set.windows(cfg.t_length);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    fs::create_dir_all(out).map_err(io(out))?;
    let log_path = out.join(files::LOG);
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(&log_path))?;

    // Ranges from the frozen model (batch norms in eval mode, weights quantized).
    let q = QatState {
        momentum: opts.momentum,
        ..QatState::new()
    };
    let mut calib = windows.clone();
    Rng::new(t.seed ^ 0xCA1B_0000).shuffle(&mut calib);
    for batch in calib
        .chunks_exact(t.batch_size)
        .take(opts.calibration_batches.max(1))
    {
        let (x, _) = train_set.batch(batch, &cfg, device)?;
        net.forward_qat(&x, &q)?;
    }
    log::info!(
        "QAT from {}: {} sites calibrated",
        dir.display(),
        q.ranges().ranges.len()
    );

    let mut steps_per_epoch = windows.len() / t.batch_size;
    if let Some(m) = t.max_steps_per_epoch {
        steps_per_epoch = steps_per_epoch.min(m);
    }
    let total = steps_per_epoch * t.epochs;
    let mut adam = Adam::new(store.params(), t.lr);
    let mut rng = Rng::new(t.seed ^ 0x5EED_DA7A);
    let mut state = TrainState {
        epoch: 0,
        global_step: 0,
        rng: rng.state(),
        options: t.clone(),
        history: Vec::new(),
    };
    let mut step = 0usize;
    for epoch in 1..=t.epochs {
        let started = Instant::now();
        adam.lr = cosine_lr(t.lr, epoch - 1, t.epochs);
        let mut order = windows.clone();
        rng.shuffle(&mut order);
        progress.epoch_start(epoch, t.epochs, steps_per_epoch);
        let mut sum = LossTerms::default();
        for batch in order.chunks_exact(t.batch_size).take(steps_per_epoch) {
            q.set_phase(range_phase(step, total, opts.freeze_fraction));
            let (x, y) = train_set.batch(batch, &cfg, device)?;
            let fwd = net.forward_qat(&x, &q)?;
            let (total_loss, terms) = loss(&net, &fwd, &y)?;
            let grads = total_loss.backward()?;
            adam.step(&grads)?;
            net.memory.update(&fwd.queries, &fwd.read.scores)?;
            step += 1;
            state.global_step += 1;
            sum.add(&terms);
            progress.step(&terms);
            let line = serde_json::json!({"kind": "qat-step", "epoch": epoch, "step": state.global_step, "loss": terms});
            writeln!(log, "{line}").map_err(io(&log_path))?;
        }
        sum.scale(1.0 / steps_per_epoch.max(1) as f32);
        let phase = q.phase();
        q.set_phase(RangePhase::Frozen);
        let val_psnr = validate_qat(&net, &q, &val_set, &val_windows, &cfg, device)?;
        q.set_phase(phase);
        let report = EpochReport {
            epoch,
            steps: steps_per_epoch,
            lr: adam.lr,
            loss: sum,
            val_psnr,
            seconds: started.elapsed().as_secs_f64(),
        };
        writeln!(
            log,
            "{}",
            serde_json::json!({"kind": "qat-epoch", "report": report})
        )
        .map_err(io(&log_path))?;
        state.epoch = epoch;
        state.rng = rng.state();
        state.history.push(report.clone());
        progress.epoch_end(&report);
    }
    let ranges = q.ranges();
    save_checkpoint(out, &store, &cfg, Some(&adam), &state)?;
    ranges.save(out)?;
    Ok((state.history, ranges))
}

/// The range phase of training step `step` (from 0) of `total`: EMA, then frozen for the last
/// `freeze_fraction` of the steps (rounded down, so 10 % of 5 steps freezes none).
pub fn range_phase(step: usize, total: usize, freeze_fraction: f64) -> RangePhase {
    let freeze_at = ((total as f64) * (1.0 - freeze_fraction)).ceil() as usize;
    if step >= freeze_at {
        RangePhase::Frozen
    } else {
        RangePhase::Ema
    }
}

/// Mean held-out PSNR of the fake-quantized network (ranges as they are, no memory updates).
pub fn validate_qat(
    net: &Mnad,
    q: &QatState,
    set: &FrameSet,
    windows: &[(usize, usize)],
    cfg: &ModelConfig,
    device: &Device,
) -> Result<Option<f32>> {
    if windows.is_empty() {
        return Ok(None);
    }
    let mut all = Vec::with_capacity(windows.len());
    for chunk in windows.chunks(8) {
        let (x, y) = set.batch(chunk, cfg, device)?;
        let fwd = net.forward_qat(&x, q)?;
        all.extend(psnr(&fwd.pred.detach(), &y)?);
    }
    Ok(Some(all.iter().sum::<f32>() / all.len() as f32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quant_params_edge_cases() {
        // Degenerate range: scale 1, zero point 0.
        assert_eq!(quant_params(0.0, 0.0), (1.0, 0));
        // All-positive range is widened to [0, hi]: zero point 0.
        let (s, z) = quant_params(2.0, 5.1);
        assert_eq!(z, 0);
        assert!((s - 0.02).abs() < 1e-7, "{s}");
        // All-negative range is widened to [lo, 0]: zero point 255.
        assert_eq!(quant_params(-2.55, -1.0), (0.01, 255));
        // Symmetric: −lo/scale = 127.5 exactly rounds half to even → 128 (not 127 or away).
        assert_eq!(quant_params(-127.5, 127.5), (1.0, 128));
        assert_eq!(quant_params(-126.5, 128.5), (1.0, 126));
        // 0 is exactly representable in every range.
        for (lo, hi) in [(-0.3f32, 2.7f32), (-1.0, 1.0), (0.0, 6.0), (-5.0, 0.1)] {
            let (s, z) = quant_params(lo, hi);
            assert_eq!(fake_quant_value(0.0, s, z), 0.0);
        }
    }

    #[test]
    fn fake_quant_value_rounds_half_to_even_and_clamps() {
        // Range [0, 2.55]: scale 0.01, zp 0.
        let (s, z) = quant_params(0.0, 2.55);
        assert_eq!(z, 0);
        assert_eq!(quantize_value(-0.5, s, z), 0);
        assert_eq!(quantize_value(9.0, s, z), 255);
        // Range [−1, 1.55]: scale 0.01, zp 100; 0.025/0.01 = 2.5 → 2 (even).
        let (s, z) = quant_params(-1.0, 1.55);
        assert_eq!(z, 100);
        assert!((s - 0.01).abs() < 1e-9);
        assert_eq!(quantize_value(0.1, s, z), 110);
        let (s2, z2) = (0.5f32, 10u8); // exact binary values: 0.25/0.5 = 0.5 → 0, 0.75 → 2
        assert_eq!(quantize_value(0.25, s2, z2), 10);
        assert_eq!(quantize_value(0.75, s2, z2), 12);
        assert_eq!(quantize_value(-0.25, s2, z2), 10);
        assert_eq!(fake_quant_value(0.75, s2, z2), 1.0);
        assert_eq!(fake_quant_value(-100.0, s2, z2), -5.0);
        assert_eq!(fake_quant_value(1000.0, s2, z2), 122.5);
    }

    #[test]
    fn weight_scales_and_fake_quant_by_hand() {
        // Conv (out 2, in 1, 1, 2): channel 0 max 1.27 → s 0.01; channel 1 all zero → s 1.
        let w = [1.27f32, -0.005, 0.0, 0.0];
        let s = weight_scales(&w, &[2, 1, 1, 2], 0);
        assert!((s[0] - 0.01).abs() < 1e-9 && s[1] == 1.0, "{s:?}");
        let (q, _) = quantize_weight(&w, &[2, 1, 1, 2], 0);
        // −0.005/0.01 = −0.5 → −0 (half to even).
        assert_eq!(q, vec![127, 0, 0, 0]);
        // Transposed layout (in 2, out 2, 1, 1), output channel axis 1:
        // out 0 over in {0,1} = {0.5, −2.0} → s 2/127; out 1 = {0.1, 0.3} → s 0.3/127.
        let wt = [0.5f32, 0.1, -2.0, 0.3];
        let st = weight_scales(&wt, &[2, 2, 1, 1], 1);
        assert!((st[0] - 2.0 / 127.0).abs() < 1e-9 && (st[1] - 0.3 / 127.0).abs() < 1e-9);
        let (qt, _) = quantize_weight(&wt, &[2, 2, 1, 1], 1);
        // 0.5·127/2 = 31.75 → 32; 0.1·127/0.3 = 42.33 → 42.
        assert_eq!(qt, vec![32, 42, -127, 127]);
    }

    #[test]
    fn tensor_versions_match_the_slice_versions() {
        let dev = Device::Cpu;
        let mut r = Rng::new(5);
        let vals: Vec<f32> = (0..3 * 2 * 3 * 3).map(|_| r.f32() * 2.0 - 1.0).collect();
        let w = Tensor::from_vec(vals.clone(), (3, 2, 3, 3), &dev).unwrap();
        for axis in [0, 1] {
            let got = fake_quant_weight_per_channel(&w, axis)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(got, fake_quant_weight_values(&vals, &[3, 2, 3, 3], axis));
        }
        // Hand example on a tensor: s = 1.27/127 = 0.01 for channel 0.
        let w = Tensor::new(&[[1.27f32, 0.013, -0.026], [0.0, 0.0, 0.0]], &dev).unwrap();
        let got = fake_quant_weight_per_channel(&w, 0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let s = 1.27f32 / 127.0;
        assert_eq!(got[0], vec![127.0 * s, s, -3.0 * s]);
        assert_eq!(got[1], vec![0.0; 3]);

        // Activations: range [−1, 1.55] → scale 0.01, zp 100; clamps at −1 and 1.55.
        let x = Tensor::new(&[-3.0f32, -1.0, 0.0, 0.004, 0.0151, 1.2, 9.0], &dev).unwrap();
        let got = fake_quant_act(&x, -1.0, 1.55)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let (sc, z) = quant_params(-1.0, 1.55);
        let want: Vec<f32> = [-3.0f32, -1.0, 0.0, 0.004, 0.0151, 1.2, 9.0]
            .iter()
            .map(|&v| fake_quant_value(v, sc, z))
            .collect();
        assert_eq!(got, want);
        for (g, h) in got.iter().zip([-1.0f32, -1.0, 0.0, 0.0, 0.02, 1.2, 1.55]) {
            assert!((g - h).abs() < 1e-5, "{g} vs {h}");
        }
    }

    #[test]
    fn gradients_pass_straight_through() {
        let dev = Device::Cpu;
        let x = candle_core::Var::new(&[0.3f32, -0.7, 2.0], &dev).unwrap();
        let k = Tensor::new(&[1.0f32, 2.0, 3.0], &dev).unwrap();
        let y = fake_quant_act(x.as_tensor(), -1.0, 1.0).unwrap();
        let g = (y * &k).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(
            g.get(&x).unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0, 2.0, 3.0]
        );
        let w = candle_core::Var::new(&[[0.3f32, -0.7, 2.0]], &dev).unwrap();
        let y = fake_quant_weight_per_channel(w.as_tensor(), 0).unwrap();
        let g = (y.squeeze(0).unwrap() * &k)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(
            g.get(&w).unwrap().to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 2.0, 3.0]]
        );
    }

    #[test]
    fn ranges_freeze_for_the_last_tenth_of_the_steps() {
        let phases: Vec<RangePhase> = (0..20).map(|s| range_phase(s, 20, 0.1)).collect();
        assert!(phases[..18].iter().all(|p| *p == RangePhase::Ema));
        assert!(phases[18..].iter().all(|p| *p == RangePhase::Frozen));
        assert_eq!(range_phase(4, 5, 0.1), RangePhase::Ema);
        assert_eq!(range_phase(0, 5, 1.0), RangePhase::Frozen);
    }

    #[test]
    fn min_max_and_ranges_round_trip() {
        let x = Tensor::new(&[[0.5f32, -2.0], [7.0, 1.0]], &Device::Cpu).unwrap();
        assert_eq!(min_max(&x).unwrap(), (-2.0, 7.0));
        assert_eq!(min_max(&x.t().unwrap()).unwrap(), (-2.0, 7.0));
        let d = tempfile::tempdir().unwrap();
        assert!(QuantRanges::load(d.path()).unwrap().is_none());
        let mut m = BTreeMap::new();
        m.insert("enc.b1.c1.in".to_string(), [-1.0f32, 0.1 + 0.2]);
        let r = QuantRanges::new(m);
        r.save(d.path()).unwrap();
        assert_eq!(QuantRanges::load(d.path()).unwrap(), Some(r));
        let text = fs::read_to_string(d.path().join(RANGES_FILE)).unwrap();
        assert!(
            text.contains("\"scheme\": \"u8s8-per-channel-v1\""),
            "{text}"
        );
        fs::write(
            d.path().join(RANGES_FILE),
            r#"{"scheme": "other", "ranges": {}}"#,
        )
        .unwrap();
        let e = QuantRanges::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("other"), "{e}");
    }
}
