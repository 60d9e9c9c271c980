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

// One implementation of the scheme's arithmetic, shared with quantization-aware training.
pub use crate::model::qat::{quant_params, quantize_value as quantize_u8, weight_scales, SCHEME};

/// Quantizes a weight per output channel (`axis` as in [`weight_scales`]) with given `scales`
/// (the sub-pixel form of a transposed convolution shares the scales of the original kernel).
pub fn quantize_weight_with_scales(
    w: &[f32],
    shape: &[usize],
    axis: usize,
    scales: &[f32],
) -> Vec<i8> {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
    then_tanh: bool,
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
            then_tanh: false,
        }
    }

    /// Measures errors after a tanh (for the tensor that a tanh turns into the output, whose
    /// large magnitudes all map to ±1).
    pub fn then_tanh(mut self, yes: bool) -> Self {
        self.then_tanh = yes;
        self
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
                if self.then_tanh {
                    f64::from(q.tanh() - v.tanh()).powi(2)
                } else {
                    f64::from(q - v).powi(2)
                }
            })
            .sum();
        sum / self.sample.len() as f64
    }

    /// Picks the range with the smallest quantization error among min-max, two percentile
    /// ranges and a search over shrunk min-max ranges.
    pub fn choose(&self, name: &str) -> SiteRange {
        self.choose_among(name, None)
    }

    /// The best range of each method (min-max, the two percentiles, the best shrink factor).
    pub fn candidates(&self, name: &str) -> Vec<SiteRange> {
        [
            RangeMethod::MinMax,
            RangeMethod::Percentile9999,
            RangeMethod::Percentile999,
            RangeMethod::Mse,
        ]
        .into_iter()
        .map(|m| self.choose_among(name, Some(m)))
        .collect()
    }

    /// Like [`Observer::choose`], restricted to one method when `only` is given.
    pub fn choose_among(&self, name: &str, only: Option<RangeMethod>) -> SiteRange {
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
        // Shrink factors from 1 down to 1/256, geometrically: late decoder activations are
        // heavy-tailed (maxima 1000× their mean), where the best range is a small fraction.
        for i in 1..=64 {
            let f = 2f32.powf(-(i as f32) / 8.0);
            candidates.push((RangeMethod::Mse, min * f, max * f));
        }
        let mut best: Option<SiteRange> = None;
        for (method, lo, hi) in candidates {
            if only.is_some_and(|m| m != method) {
                continue;
            }
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

/// The candidate ranges of one activation site and the one chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteCalibration {
    /// One range per method (min-max, percentiles, MSE-optimal).
    pub candidates: Vec<SiteRange>,
    /// Index of the chosen candidate.
    pub chosen: usize,
}

impl SiteCalibration {
    /// The chosen range.
    pub fn range(&self) -> &SiteRange {
        &self.candidates[self.chosen]
    }
}

/// The chosen range of every site.
pub fn chosen_ranges(cal: &[SiteCalibration]) -> Vec<SiteRange> {
    cal.iter().map(|c| c.range().clone()).collect()
}

/// Options of the activation calibration.
#[derive(Debug, Clone, Copy)]
pub struct CalibOptions {
    /// Frame windows run through the f32 model.
    pub windows: usize,
    /// Windows on which each site's candidates are compared by the int8 model's output error
    /// (0: keep the per-tensor choice).
    pub refine_windows: usize,
    /// Sample values kept per activation tensor.
    pub sample_cap: usize,
    /// One range method for every tensor instead of the per-tensor best.
    pub method: Option<RangeMethod>,
}

impl Default for CalibOptions {
    fn default() -> Self {
        Self {
            windows: 48,
            refine_windows: 6,
            sample_cap: 1 << 16,
            method: None,
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
/// int8 structure with the sites exposed as outputs and finds each site's candidate ranges,
/// choosing the one with the smallest quantization error of the tensor itself (or the forced
/// method). [`refine_by_output`] then chooses by the error of the network's output.
pub fn calibrate(
    net: &Mnad,
    store: &ParamStore,
    set: &FrameSet,
    windows: &[(usize, usize)],
    opts: CalibOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<SiteCalibration>, ExportError> {
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
    let runnable = tract_bytes(&proto.encode_to_vec())?;
    let memory = memory_items(store)?;
    let (m, d) = (cfg.memory_items, cfg.memory_dim());
    let mut observers: BTreeMap<String, Observer> = BTreeMap::new();
    for (i, o) in outputs.iter().enumerate() {
        let tanh = sites.iter().any(|s| &s.value == o && s.then_tanh);
        observers.insert(
            o.clone(),
            Observer::new(opts.sample_cap, 0x5eed + i as u64).then_tanh(tanh),
        );
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
        .map(|s| {
            let o = &observers[&s.value];
            let candidates = o.candidates(&s.name);
            let best = o.choose_among(&s.name, opts.method);
            let chosen = candidates
                .iter()
                .position(|c| c.method == best.method)
                .expect("every method has a candidate");
            SiteCalibration { candidates, chosen }
        })
        .collect())
}

/// Mean squared difference of the int8 model's predicted frames and queries from the f32
/// model's `reference` outputs on `inputs`.
fn output_error(
    net: &Mnad,
    store: &ParamStore,
    ranges: &[SiteRange],
    inputs: &[Vec<f32>],
    reference: &[(Vec<f32>, Vec<f32>)],
    memory: &[f32],
) -> Result<f64, ExportError> {
    let model = tract_bytes(&export_int8(net, store, ranges)?)?;
    let mut err = 0f64;
    for (x, (pred, queries)) in inputs.iter().zip(reference) {
        let (p, q) = run_model(&model, net.config(), x, memory)?;
        err += mse(&p, pred) + mse(&q, queries);
    }
    Ok(err / inputs.len().max(1) as f64)
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64
}

/// Mean squared difference of the int8 model with `ranges` from the f32 model (predicted frame
/// + queries) on `inputs`.
pub fn int8_output_error(
    net: &Mnad,
    store: &ParamStore,
    ranges: &[SiteRange],
    inputs: &[Vec<f32>],
) -> Result<f64, ExportError> {
    let memory = memory_items(store)?;
    let f32_model = tract_bytes(&super::export_f32(net, store)?)?;
    let reference = inputs
        .iter()
        .map(|x| run_model(&f32_model, net.config(), x, &memory))
        .collect::<Result<Vec<_>, _>>()?;
    output_error(net, store, ranges, inputs, &reference, &memory)
}

/// Chooses, site by site in graph order, the candidate range whose int8 model reproduces the
/// f32 model's output (predicted frame and queries) best on `inputs`; per-tensor error alone
/// keeps the rare, very large activations of the late decoder and loses the common small ones.
/// Returns the final output error. Only sites the int8 graph uses are searched.
pub fn refine_by_output(
    net: &Mnad,
    store: &ParamStore,
    cal: &mut [SiteCalibration],
    inputs: &[Vec<f32>],
    mut progress: impl FnMut(usize, usize),
) -> Result<f64, ExportError> {
    let memory = memory_items(store)?;
    let f32_model = tract_bytes(&super::export_f32(net, store)?)?;
    let reference = inputs
        .iter()
        .map(|x| run_model(&f32_model, net.config(), x, &memory))
        .collect::<Result<Vec<_>, _>>()?;
    let ranges = chosen_ranges(cal);
    let map = ranges
        .iter()
        .map(|r| (r.name.clone(), [r.lo, r.hi]))
        .collect();
    let (_, used) = build_graph_with(net, store, GraphMode::Int8(map))?;
    let used: Vec<usize> = cal
        .iter()
        .enumerate()
        .filter(|(_, c)| used.iter().any(|u| u.name == c.range().name))
        .map(|(i, _)| i)
        .collect();
    // Start from the best single method for every site (or the per-tensor choice).
    let mut best = output_error(net, store, &chosen_ranges(cal), inputs, &reference, &memory)?;
    let mut start: Vec<usize> = cal.iter().map(|c| c.chosen).collect();
    for j in 0..cal.first().map_or(0, |c| c.candidates.len()) {
        for c in cal.iter_mut() {
            c.chosen = j;
        }
        let e = output_error(net, store, &chosen_ranges(cal), inputs, &reference, &memory)?;
        if e < best {
            best = e;
            start = vec![j; cal.len()];
        }
    }
    for (c, &j) in cal.iter_mut().zip(&start) {
        c.chosen = j;
    }
    let total = used.len();
    for (k, &i) in used.iter().enumerate() {
        let mut current = cal[i].chosen;
        for j in 0..cal[i].candidates.len() {
            if j == current {
                continue;
            }
            cal[i].chosen = j;
            let e = output_error(net, store, &chosen_ranges(cal), inputs, &reference, &memory)?;
            if e < best {
                best = e;
                current = j;
            } else {
                cal[i].chosen = current;
            }
        }
        progress(k + 1, total);
    }
    Ok(best)
}

/// The ranges of a quantization-aware-training checkpoint (`quant.json`) for every site the int8
/// graph uses; a missing site is an error naming it.
pub fn qat_ranges(
    net: &Mnad,
    store: &ParamStore,
    ranges: &BTreeMap<String, [f32; 2]>,
) -> Result<Vec<SiteRange>, ExportError> {
    let (_, used) = build_graph_with(net, store, GraphMode::Int8(ranges.clone()))?;
    let mut out: Vec<SiteRange> = Vec::new();
    for site in used {
        if out.iter().any(|r| r.name == site.name) {
            continue;
        }
        let [lo, hi] = ranges[&site.name];
        out.push(SiteRange {
            name: site.name,
            method: RangeMethod::Qat,
            lo,
            hi,
            mse: 0.0,
        });
    }
    Ok(out)
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

pub(crate) type Runnable = std::sync::Arc<tract_onnx::prelude::TypedRunnableModel>;

pub(crate) fn tract_bytes(bytes: &[u8]) -> Result<Runnable, ExportError> {
    tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(tract_err)
}

/// Runs one input stack: (predicted frame, queries).
pub(crate) fn run_model(
    model: &Runnable,
    cfg: &crate::model::ModelConfig,
    x: &[f32],
    memory: &[f32],
) -> Result<(Vec<f32>, Vec<f32>), ExportError> {
    let xt = TractTensor::from_shape(&[1, cfg.input_channels(), cfg.height, cfg.width], x)
        .map_err(tract_err)?;
    let mt = TractTensor::from_shape(&[cfg.memory_items, cfg.memory_dim()], memory)
        .map_err(tract_err)?;
    let out = model
        .run(tvec!(xt.into_tvalue(), mt.into_tvalue()))
        .map_err(tract_err)?;
    let get = |i: usize| -> Result<Vec<f32>, ExportError> {
        Ok(out[i]
            .to_plain_array_view::<f32>()
            .map_err(tract_err)?
            .iter()
            .copied()
            .collect())
    };
    Ok((get(0)?, get(1)?))
}

fn tract_err(e: impl std::fmt::Display) -> ExportError {
    ExportError::Unsupported(format!("tract: {e}"))
}

/// Sites as recorded by the graph writer (re-exported for reports and tests).
pub type Sites = Vec<Site>;
