//! int8 export in ONNX QOperator form: the quantization arithmetic shared with quantization-aware
//! training, activation-range calibration on normal frames, and the int8 model itself.
//!
//! Scheme (`u8s8-per-channel-v1`): every convolution runs as `QLinearConv` with per-output-channel
//! symmetric int8 weights (batch norm folded first) and an int32 bias; activations are asymmetric
//! uint8 per tensor, quantized at each convolution's input (unless it already is the uint8 output
//! of another convolution) and output (after its ReLU, which the saturating output then performs).
//! Everything else — memory read, feature normalisation, channel transformer, gates, tanh — stays
//! f32 between `DequantizeLinear` and `QuantizeLinear`.

use std::collections::BTreeMap;

use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::{
    tvec, Framework, InferenceModelExt, IntoRunnable, IntoTValue, Tensor as TractTensor,
};

use super::graph::{build_graph_with, GraphMode, Site};
use super::ExportError;
use crate::model::data::FrameSet;
use crate::model::{Mnad, ParamStore};
use crate::rng::Rng;

/// Name of the quantization scheme written in bundles and QAT checkpoints.
pub const SCHEME: &str = "u8s8-per-channel-v1";

/// The uint8 (scale, zero point) of the activation range `[lo, hi]`, widened to include 0 so
/// that zero (padding, ReLU) is exact.
pub fn quant_params(lo: f32, hi: f32) -> (f32, u8) {
    let lo = lo.min(0.0);
    let hi = hi.max(0.0);
    let mut scale = (hi - lo) / 255.0;
    if !(scale > 0.0 && scale.is_finite()) {
        scale = 1.0;
    }
    let zp = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as u8;
    (scale, zp)
}

/// Quantizes one activation value to uint8 with `(scale, zp)` as ONNX `QuantizeLinear` does.
pub fn quantize_u8(x: f32, scale: f32, zp: u8) -> u8 {
    ((x / scale).round_ties_even() + f32::from(zp)).clamp(0.0, 255.0) as u8
}

/// Symmetric int8 scale of each output channel of a weight whose output channel is `axis`
/// (0 for Conv (O, I, kh, kw), 1 for ConvTranspose (I, O, kh, kw)): max|w| / 127, or 1 for an
/// all-zero channel.
pub fn weight_scales(w: &[f32], shape: &[usize], axis: usize) -> Vec<f32> {
    let c = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut max = vec![0f32; c];
    for (i, v) in w.iter().enumerate() {
        let ch = (i / inner) % c;
        max[ch] = max[ch].max(v.abs());
    }
    max.into_iter()
        .map(|m| if m > 0.0 { m / 127.0 } else { 1.0 })
        .collect()
}

/// Quantizes a weight per output channel (`axis` as in [`weight_scales`]) with `scales`.
pub fn quantize_weight(w: &[f32], shape: &[usize], axis: usize, scales: &[f32]) -> Vec<i8> {
    let c = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    w.iter()
        .enumerate()
        .map(|(i, v)| {
            (v / scales[(i / inner) % c])
                .round_ties_even()
                .clamp(-127.0, 127.0) as i8
        })
        .collect()
}

/// How an activation range was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeMethod {
    /// The observed minimum and maximum.
    MinMax,
    /// The 0.01 % and 99.99 % quantiles.
    Percentile9999,
    /// The 0.1 % and 99.9 % quantiles.
    Percentile999,
    /// The min-max range shrunk by the factor with the smallest quantization error.
    Mse,
    /// Taken from a quantization-aware-training checkpoint.
    Qat,
}

impl RangeMethod {
    /// The name written in the bundle's quantization report.
    pub fn name(self) -> &'static str {
        match self {
            RangeMethod::MinMax => "min-max",
            RangeMethod::Percentile9999 => "percentile-99.99",
            RangeMethod::Percentile999 => "percentile-99.9",
            RangeMethod::Mse => "mse",
            RangeMethod::Qat => "qat",
        }
    }
}

/// The calibrated range of one activation site.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteRange {
    /// Site name, `<conv>.in` or `<conv>.out`.
    pub name: String,
    /// How the range was chosen.
    pub method: RangeMethod,
    /// Lower end.
    pub lo: f32,
    /// Upper end.
    pub hi: f32,
    /// Mean squared quantization error on the calibration sample.
    pub mse: f64,
}

/// Values of one activation tensor seen during calibration: exact extremes and a bounded,
/// evenly thinned sample for the error estimates.
#[derive(Debug, Clone)]
pub struct Observer {
    min: f32,
    max: f32,
    sample: Vec<f32>,
    cap: usize,
    rng: Rng,
}

impl Observer {
    /// An observer keeping at most `cap` sample values (seeded, so calibration is repeatable).
    pub fn new(cap: usize, seed: u64) -> Self {
        Self {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            sample: Vec::new(),
            cap,
            rng: Rng::new(seed),
        }
    }

    /// Records a batch of values.
    pub fn observe(&mut self, values: &[f32]) {
        for &v in values {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        // Keep about `cap / 8` values per batch so that later batches still count.
        let per_batch = (self.cap / 8).max(1);
        let step = values.len().div_ceil(per_batch).max(1);
        let offset = (self.rng.next_u64() % step as u64) as usize;
        for &v in values.iter().skip(offset).step_by(step) {
            if self.sample.len() < self.cap {
                self.sample.push(v);
            } else {
                let i = (self.rng.next_u64() % self.cap as u64) as usize;
                self.sample[i] = v;
            }
        }
    }

    /// Mean squared error of quantizing the sample to uint8 over `[lo, hi]`.
    pub fn mse(&self, lo: f32, hi: f32) -> f64 {
        if self.sample.is_empty() {
            return 0.0;
        }
        let (s, zp) = quant_params(lo, hi);
        let sum: f64 = self
            .sample
            .iter()
            .map(|&v| {
                let q = (f32::from(quantize_u8(v, s, zp)) - f32::from(zp)) * s;
                f64::from(q - v).powi(2)
            })
            .sum();
        sum / self.sample.len() as f64
    }

    /// Picks the range with the smallest quantization error among min-max, two percentile
    /// ranges and a search over shrunk min-max ranges.
    pub fn choose(&self, name: &str) -> SiteRange {
        let (min, max) = if self.min <= self.max {
            (self.min, self.max)
        } else {
            (0.0, 0.0)
        };
        let mut sorted = self.sample.clone();
        sorted.sort_by(f32::total_cmp);
        let quantile = |q: f64| -> f32 {
            if sorted.is_empty() {
                return 0.0;
            }
            let i = ((sorted.len() - 1) as f64 * q).round() as usize;
            sorted[i]
        };
        let mut candidates = vec![
            (RangeMethod::MinMax, min, max),
            (
                RangeMethod::Percentile9999,
                quantile(0.0001).min(0.0),
                quantile(0.9999),
            ),
            (
                RangeMethod::Percentile999,
                quantile(0.001).min(0.0),
                quantile(0.999),
            ),
        ];
        for i in 1..40 {
            let f = 1.0 - 0.0175 * i as f32;
            candidates.push((RangeMethod::Mse, min * f, max * f));
        }
        let mut best: Option<SiteRange> = None;
        for (method, lo, hi) in candidates {
            let mse = self.mse(lo, hi);
            if best.as_ref().is_none_or(|b| mse < b.mse) {
                best = Some(SiteRange {
                    name: name.to_string(),
                    method,
                    lo: lo.min(0.0),
                    hi: hi.max(0.0),
                    mse,
                });
            }
        }
        best.expect("at least the min-max candidate")
    }
}

/// Options of the activation calibration.
#[derive(Debug, Clone, Copy)]
pub struct CalibOptions {
    /// Frame windows run through the f32 model.
    pub windows: usize,
    /// Sample values kept per activation tensor.
    pub sample_cap: usize,
}

impl Default for CalibOptions {
    fn default() -> Self {
        Self {
            windows: 48,
            sample_cap: 1 << 16,
        }
    }
}

/// Evenly spaced windows `(clip, first frame)` of `set`, at most `n`.
pub fn spread_windows(set: &FrameSet, t: usize, n: usize) -> Vec<(usize, usize)> {
    let all = set.windows(t);
    if all.len() <= n {
        return all;
    }
    (0..n).map(|i| all[i * all.len() / n]).collect()
}

/// The model's input stack (input frames only) of window `(clip, start)`.
pub fn window_input(
    set: &FrameSet,
    cfg: &crate::model::ModelConfig,
    w: (usize, usize),
) -> Vec<f32> {
    let plane = set.height * set.width;
    let c = &set.clips[w.0];
    let s = w.1;
    let n = cfg.input_frames();
    c.frames[s * plane..(s + n) * plane].to_vec()
}

/// Calibrates every activation site of `net` on `windows` of `set`: runs the f32 graph in its
/// int8 structure with the sites exposed as outputs and chooses each site's range.
pub fn calibrate(
    net: &Mnad,
    store: &ParamStore,
    set: &FrameSet,
    windows: &[(usize, usize)],
    opts: CalibOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<SiteRange>, ExportError> {
    let cfg = net.config();
    let (mut builder, sites) = build_graph_with(net, store, GraphMode::Calibrate)?;
    // One graph output per distinct site value; the frames input is observed directly.
    let mut outputs: Vec<String> = Vec::new();
    for s in &sites {
        if s.value != super::INPUT_FRAMES && !outputs.contains(&s.value) {
            outputs.push(s.value.clone());
        }
    }
    for o in &outputs {
        builder.output_any_shape(o);
    }
    let proto = builder.finish("thermal_edge_mnad_calibration", "calibration graph");
    let runnable = tract(&proto)?;
    let memory = memory_items(store)?;
    let (m, d) = (cfg.memory_items, cfg.memory_dim());
    let mut observers: BTreeMap<String, Observer> = BTreeMap::new();
    for (i, o) in outputs.iter().enumerate() {
        observers.insert(o.clone(), Observer::new(opts.sample_cap, 0x5eed + i as u64));
    }
    observers.insert(
        super::INPUT_FRAMES.to_string(),
        Observer::new(opts.sample_cap, 0x5eed_f00d),
    );
    let shape = [1, cfg.input_channels(), cfg.height, cfg.width];
    for (k, &w) in windows.iter().enumerate() {
        let x = window_input(set, cfg, w);
        observers
            .get_mut(super::INPUT_FRAMES)
            .expect("inserted above")
            .observe(&x);
        let xt = TractTensor::from_shape(&shape, &x).map_err(tract_err)?;
        let mt = TractTensor::from_shape(&[m, d], &memory).map_err(tract_err)?;
        let out = runnable
            .run(tvec!(xt.into_tvalue(), mt.into_tvalue()))
            .map_err(tract_err)?;
        // Outputs follow the declared order: pred, queries, read weights, then the sites.
        for (o, v) in outputs.iter().zip(out.iter().skip(3)) {
            let v = v.to_plain_array_view::<f32>().map_err(tract_err)?;
            let v: Vec<f32> = v.iter().copied().collect();
            observers.get_mut(o).expect("one per output").observe(&v);
        }
        progress(k + 1, windows.len());
    }
    Ok(sites
        .iter()
        .map(|s| observers[&s.value].choose(&s.name))
        .collect())
}

/// The int8 QOperator model of `net` with activation `ranges` (from [`calibrate`] or QAT).
pub fn model_int8(
    net: &Mnad,
    store: &ParamStore,
    ranges: &[SiteRange],
) -> Result<ModelProto, ExportError> {
    let map = ranges
        .iter()
        .map(|r| (r.name.clone(), [r.lo, r.hi]))
        .collect();
    let (builder, _) = build_graph_with(net, store, GraphMode::Int8(map))?;
    let cfg = net.config();
    let doc = format!(
        "MNAD + {} block, int8 QOperator ({SCHEME}), {}x{}",
        cfg.block.variant.name(),
        cfg.height,
        cfg.width
    );
    Ok(builder.finish("thermal_edge_mnad_int8", &doc))
}

/// The serialized int8 model (see [`model_int8`]).
pub fn export_int8(
    net: &Mnad,
    store: &ParamStore,
    ranges: &[SiteRange],
) -> Result<Vec<u8>, ExportError> {
    Ok(model_int8(net, store, ranges)?.encode_to_vec())
}

/// The memory items of `store` as f32, row-major (M, D).
pub fn memory_items(store: &ParamStore) -> Result<Vec<f32>, ExportError> {
    let t = store
        .tensors()
        .get("memory.items")
        .cloned()
        .ok_or_else(|| ExportError::Missing("memory.items".into()))?;
    t.to_dtype(candle_core::DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|source| ExportError::Tensor {
            name: "memory.items".into(),
            source,
        })
}

type Runnable = std::sync::Arc<tract_onnx::prelude::TypedRunnableModel>;

fn tract_err(e: impl std::fmt::Display) -> ExportError {
    ExportError::Unsupported(format!("tract: {e}"))
}

fn tract(proto: &ModelProto) -> Result<Runnable, ExportError> {
    tract_onnx::onnx()
        .model_for_proto_model(proto)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(tract_err)
}

/// Sites as recorded by the graph writer (re-exported for reports and tests).
pub type Sites = Vec<Site>;
