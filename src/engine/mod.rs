//! Scoring frames with a bundle: one [`Scorer`] trait, run by tract (f32 / int8 ONNX) or candle
//! (f16 weights upcast to f32, CPU or CUDA).
//!
//! Everything both backends share lives here so they score identically: the [`FrameStack`]
//! (preprocessing and the last t frames), the scores computed from a forward pass
//! ([`score_forward`]: PSNR, error map, feature distance, point score) and the MNAD test-time
//! memory update ([`MemoryState`]).

pub mod candle;
pub mod dump;
pub mod tract;

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use crate::export::bundle::{Bundle, BundleError};
use crate::frame::normalize::NormalizeError;
use crate::frame::{Preprocessor, ThermalFrame};
use crate::model::memory::{update_items_with, UpdateScratch};
use crate::model::{Mode, ModelConfig};
use crate::source::{FrameSource, SourceError};

pub use self::candle::CandleScorer;
pub use self::dump::ScoreDump;
pub use self::tract::{Precision, TractScorer};

/// Point-score threshold below which a prediction model's memory is updated (MNAD: 0.01).
pub const UPDATE_THRESHOLD_PREDICTION: f32 = 0.01;
/// Point-score threshold below which a reconstruction model's memory is updated (MNAD: 0.015).
pub const UPDATE_THRESHOLD_RECONSTRUCTION: f32 = 0.015;

/// Why scoring failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The bundle could not be used.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A frame stack of the wrong size was given to a scorer.
    #[error(
        "frame stack holds {got} values but the model needs {frames} frames of {channels}x{height}x{width} = {expected}"
    )]
    StackSize {
        /// Frames in a stack (t).
        frames: usize,
        /// Channels per frame.
        channels: usize,
        /// Model input height.
        height: usize,
        /// Model input width.
        width: usize,
        /// Values expected.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// Memory items of the wrong size.
    #[error("memory holds {got} values but the model has {items}x{dim} = {expected}")]
    MemorySize {
        /// Items M.
        items: usize,
        /// Dimension D.
        dim: usize,
        /// Values expected.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A frame could not be preprocessed.
    #[error("frame {seq}: {source}")]
    Preprocess {
        /// Frame sequence number.
        seq: u64,
        /// Cause.
        #[source]
        source: NormalizeError,
    },
    /// The model cannot be run by this engine.
    #[error("{0}")]
    Unsupported(String),
    /// tract failed to load or run a model.
    #[error("tract: {context}: {detail}")]
    Tract {
        /// What was being done (names the model file).
        context: String,
        /// tract's error chain.
        detail: String,
    },
    /// candle failed to load or run the model.
    #[error("candle: {context}: {source}")]
    Candle {
        /// What was being done (names the file).
        context: String,
        /// Cause.
        #[source]
        source: candle_core::Error,
    },
    /// The network returned outputs of unexpected shapes.
    #[error("model output {name}: {detail}")]
    Output {
        /// Output name.
        name: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The frame source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// Which runtime and precision scores frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// tract, f32 ONNX model.
    TractF32,
    /// tract, int8 ONNX model.
    TractInt8,
    /// candle on the CPU, f16 weights upcast to f32.
    CandleCpu,
    /// candle on CUDA GPU 0 (needs the `cuda` feature).
    CandleCuda,
}

impl Backend {
    /// Every backend.
    pub const ALL: [Backend; 4] = [
        Backend::TractF32,
        Backend::TractInt8,
        Backend::CandleCpu,
        Backend::CandleCuda,
    ];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::TractF32 => "tract-f32",
            Backend::TractInt8 => "tract-int8",
            Backend::CandleCpu => "candle-cpu",
            Backend::CandleCuda => "candle-cuda",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown backend '{s}' (expected tract-f32, tract-int8, candle-cpu or candle-cuda)"
                )
            })
    }
}

/// Scores of one frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreOutput {
    /// Predicted (or reconstructed) frame, (c, H, W) in [−1, 1].
    pub pred: Vec<f32>,
    /// Per-pixel squared error between prediction and target in [0, 1] space, (c, H, W).
    pub error_map: Vec<f32>,
    /// Mean of `error_map`.
    pub mse: f32,
    /// 10·log10(1 / mse): higher is more normal.
    pub psnr: f32,
    /// Mean squared distance of the queries to their nearest memory item: higher is less normal.
    pub feature_distance: f32,
    /// MNAD's weighted point score Σ(w·e)/Σw with w = 1 − exp(−e), deciding the memory update.
    pub point_score: f32,
    /// Memory read weights (N, M): softmax over items of the cosine scores.
    pub read_weights: Vec<f32>,
    /// L2-normalised queries (N, D).
    pub queries: Vec<f32>,
}

/// Computes every score of a frame from a forward pass, identically for all backends.
///
/// `pred` and `target` are (c, H, W) in [−1, 1]; `queries` (N, D); `memory` (M, D) is the memory
/// the forward pass read. PSNR and the error map are in [0, 1] space ((x + 1) / 2), as MNAD's
/// evaluation; the feature distance is the compactness MSE to each query's top-1 item by
/// cosine score (queries and items are unit vectors, so the dot product).
pub fn score_forward(
    pred: Vec<f32>,
    target: &[f32],
    queries: Vec<f32>,
    read_weights: Vec<f32>,
    memory: &[f32],
    dim: usize,
) -> ScoreOutput {
    let mut out = ScoreOutput {
        pred,
        queries,
        read_weights,
        ..ScoreOutput::default()
    };
    fill_scores(&mut out, target, memory, dim);
    out
}

/// [`score_forward`] in place: computes the error map and every score from `out.pred` and
/// `out.queries`, reusing `out`'s buffers (no allocation once they have their size).
pub fn fill_scores(out: &mut ScoreOutput, target: &[f32], memory: &[f32], dim: usize) {
    debug_assert_eq!(out.pred.len(), target.len());
    out.error_map.resize(target.len(), 0.0);
    for ((e, p), t) in out.error_map.iter_mut().zip(&out.pred).zip(target) {
        // ((p + 1) / 2 − (t + 1) / 2)² = ((p − t) / 2)²
        let d = (p - t) * 0.5;
        *e = d * d;
    }
    let n = out.error_map.len().max(1) as f64;
    let mse = (out.error_map.iter().map(|&e| f64::from(e)).sum::<f64>() / n) as f32;
    let (mut num, mut den) = (0f64, 0f64);
    for &e in &out.error_map {
        let w = 1.0 - (-f64::from(e)).exp();
        num += w * f64::from(e);
        den += w;
    }
    out.mse = mse;
    out.psnr = 10.0 * (1.0 / mse.max(1e-10)).log10();
    // A perfect prediction has all weights 0: it is as normal as a frame gets.
    out.point_score = if den > 0.0 { (num / den) as f32 } else { 0.0 };
    out.feature_distance = feature_distance(&out.queries, memory, dim);
}

/// Mean over queries and dimensions of (q − nearest item)² (the model layer's definition,
/// shared with the export's parity report).
pub use crate::model::memory::feature_distance_slices as feature_distance;

/// Cosine scores S = Q·Mᵀ (N, M) of unit queries against unit items.
pub fn cosine_scores(queries: &[f32], memory: &[f32], dim: usize) -> Vec<f32> {
    let mut s = Vec::new();
    cosine_scores_into(queries, memory, dim, &mut s);
    s
}

/// [`cosine_scores`] into a reusable buffer.
pub fn cosine_scores_into(queries: &[f32], memory: &[f32], dim: usize, s: &mut Vec<f32>) {
    s.clear();
    for q in queries.chunks_exact(dim) {
        for item in memory.chunks_exact(dim) {
            s.push(q.iter().zip(item).map(|(a, b)| a * b).sum());
        }
    }
}

/// The memory items a scorer reads, and MNAD's test-time update rule.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryState {
    items: Vec<f32>,
    m: usize,
    d: usize,
    threshold: f32,
    scores: Vec<f32>,
    scratch: UpdateScratch,
}

impl MemoryState {
    /// Memory of `cfg`'s shape holding `items` (row-major M×D).
    pub fn new(cfg: &ModelConfig, items: Vec<f32>) -> Result<Self, EngineError> {
        let (m, d) = (cfg.memory_items, cfg.memory_dim());
        let mut s = Self {
            items: Vec::new(),
            m,
            d,
            threshold: update_threshold(cfg.mode),
            scores: Vec::new(),
            scratch: UpdateScratch::default(),
        };
        s.set(&items)?;
        Ok(s)
    }

    /// The items, row-major (M×D).
    pub fn items(&self) -> &[f32] {
        &self.items
    }

    /// Items M and dimension D.
    pub fn shape(&self) -> (usize, usize) {
        (self.m, self.d)
    }

    /// The point score below which [`MemoryState::update`] changes the memory.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Replaces the items.
    pub fn set(&mut self, items: &[f32]) -> Result<(), EngineError> {
        if items.len() != self.m * self.d {
            return Err(EngineError::MemorySize {
                items: self.m,
                dim: self.d,
                expected: self.m * self.d,
                got: items.len(),
            });
        }
        self.items.clear();
        self.items.extend_from_slice(items);
        Ok(())
    }

    /// MNAD's test-time update: when the frame's point score is under the threshold (the frame
    /// looks normal), moves the items toward its queries. Returns whether the memory changed.
    pub fn update(&mut self, out: &ScoreOutput) -> Result<bool, EngineError> {
        if out.point_score >= self.threshold {
            return Ok(false);
        }
        if !out.queries.len().is_multiple_of(self.d) || out.queries.is_empty() {
            return Err(EngineError::Output {
                name: "queries",
                detail: format!(
                    "{} values is not a whole number of {}-dimensional queries",
                    out.queries.len(),
                    self.d
                ),
            });
        }
        // The rule uses the scores against the memory as it is now (MNAD: before the update).
        cosine_scores_into(&out.queries, &self.items, self.d, &mut self.scores);
        update_items_with(
            &mut self.scratch,
            &mut self.items,
            self.m,
            self.d,
            &out.queries,
            &self.scores,
        );
        Ok(true)
    }
}

/// MNAD's update threshold for a model mode.
pub fn update_threshold(mode: Mode) -> f32 {
    match mode {
        Mode::Prediction => UPDATE_THRESHOLD_PREDICTION,
        Mode::Reconstruction => UPDATE_THRESHOLD_RECONSTRUCTION,
    }
}

/// Values in a frame stack of `cfg`: t frames (1 in reconstruction) of c×H×W.
pub fn stack_len(cfg: &ModelConfig) -> usize {
    stack_frames(cfg) * cfg.channels * cfg.height * cfg.width
}

/// Frames in a stack: the network's inputs, then the target (reconstruction: one frame, both).
pub fn stack_frames(cfg: &ModelConfig) -> usize {
    match cfg.mode {
        Mode::Prediction => cfg.t_length,
        Mode::Reconstruction => 1,
    }
}

/// Checks a stack's length and splits it into (network input, target).
pub fn split_stack<'a>(
    cfg: &ModelConfig,
    stack: &'a [f32],
) -> Result<(&'a [f32], &'a [f32]), EngineError> {
    let expected = stack_len(cfg);
    if stack.len() != expected {
        return Err(EngineError::StackSize {
            frames: stack_frames(cfg),
            channels: cfg.channels,
            height: cfg.height,
            width: cfg.width,
            expected,
            got: stack.len(),
        });
    }
    let plane = cfg.channels * cfg.height * cfg.width;
    Ok(match cfg.mode {
        Mode::Prediction => stack.split_at(stack.len() - plane),
        Mode::Reconstruction => (stack, stack),
    })
}

/// A model runtime that scores frame stacks and keeps the MNAD memory (`Send`, so the on-device
/// loop can score on its own thread).
pub trait Scorer: Send {
    /// The backend running the model.
    fn backend(&self) -> Backend;

    /// The model configuration.
    fn config(&self) -> &ModelConfig;

    /// Scores one stack of t preprocessed frames (inputs, then the target), oldest first, each
    /// c×H×W in [−1, 1] (see [`FrameStack`]). The memory is not changed.
    fn score(&mut self, stack: &[f32]) -> Result<ScoreOutput, EngineError>;

    /// [`Scorer::score`] into `out`, reusing its buffers: the on-device loop's path. Backends
    /// that can fill the buffers in place override it.
    fn score_into(&mut self, stack: &[f32], out: &mut ScoreOutput) -> Result<(), EngineError> {
        *out = self.score(stack)?;
        Ok(())
    }

    /// The memory state.
    fn memory_state(&self) -> &MemoryState;

    /// The memory state, mutable.
    fn memory_state_mut(&mut self) -> &mut MemoryState;

    /// What the forward pass's memory plan has done (backends that have one).
    fn memory_plan(&self) -> Option<crate::alloc::PlanStats> {
        None
    }

    /// Wall time of the last call's forward pass proper (inputs in, outputs copied out; not the
    /// scores computed from them), for `edge-cli bench`'s per-stage figures.
    fn last_forward(&self) -> Option<std::time::Duration> {
        None
    }

    /// The current memory items, row-major (M×D).
    fn memory(&self) -> &[f32] {
        self.memory_state().items()
    }

    /// Replaces the memory items (row-major M×D).
    fn set_memory(&mut self, items: &[f32]) -> Result<(), EngineError> {
        self.memory_state_mut().set(items)
    }

    /// MNAD's test-time update after scoring `out`; returns whether the memory changed.
    fn update_memory(&mut self, out: &ScoreOutput) -> Result<bool, EngineError> {
        self.memory_state_mut().update(out)
    }
}

/// Opens the scorer for `backend` on a bundle. `threads` is used by tract (see
/// [`TractScorer::new`]); candle uses its own thread pool.
pub fn open_scorer(
    bundle: &Bundle,
    backend: Backend,
    threads: usize,
) -> Result<Box<dyn Scorer>, EngineError> {
    Ok(match backend {
        Backend::TractF32 => Box::new(TractScorer::new(bundle, Precision::F32, threads)?),
        Backend::TractInt8 => Box::new(TractScorer::new(bundle, Precision::Int8, threads)?),
        Backend::CandleCpu => Box::new(CandleScorer::new(bundle, ::candle_core::Device::Cpu)?),
        Backend::CandleCuda => Box::new(CandleScorer::cuda(bundle, 0)?),
    })
}

/// Preprocesses frames the way the bundle's model was trained (normalizer, then resize to the
/// model input, one [`Preprocessor`] for every backend) and keeps the last t of them.
#[derive(Debug, Clone)]
pub struct FrameStack {
    pre: Preprocessor,
    plane: usize,
    frames: usize,
    filled: usize,
    buf: Vec<f32>,
}

impl FrameStack {
    /// An empty stack for `cfg` (single-channel thermal frames).
    pub fn new(cfg: &ModelConfig) -> Result<Self, EngineError> {
        if cfg.channels != 1 {
            return Err(EngineError::Unsupported(format!(
                "thermal frames have one channel but the model takes {}",
                cfg.channels
            )));
        }
        let pre = Preprocessor::new(cfg.normalizer, cfg.width, cfg.height)
            .map_err(|e| EngineError::Unsupported(format!("model preprocessing: {e}")))?;
        let plane = cfg.height * cfg.width;
        let frames = stack_frames(cfg);
        Ok(Self {
            pre,
            plane,
            frames,
            filled: 0,
            buf: vec![0.0; frames * plane],
        })
    }

    /// An empty stack for a bundle's model, checking that the preprocessed size is its input.
    pub fn for_bundle(bundle: &Bundle) -> Result<Self, EngineError> {
        let s = Self::new(bundle.config())?;
        let (w, h) = s.pre.output_size();
        bundle.check_frame_size(h, w)?;
        Ok(s)
    }

    /// Preprocesses `frame` and appends it, dropping the oldest when full; returns whether the
    /// stack is full (ready to score).
    pub fn push(&mut self, frame: &ThermalFrame) -> Result<bool, EngineError> {
        if self.filled == self.frames {
            // Shift one plane left: t planes of a few tens of thousands of floats, no allocation.
            self.buf.copy_within(self.plane.., 0);
            self.filled -= 1;
        }
        let at = self.filled * self.plane;
        self.pre
            .run(frame, &mut self.buf[at..at + self.plane])
            .map_err(|source| EngineError::Preprocess {
                seq: frame.meta.seq,
                source,
            })?;
        self.filled += 1;
        Ok(self.is_full())
    }

    /// Whether t frames are held.
    pub fn is_full(&self) -> bool {
        self.filled == self.frames
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// Whether no frame is held.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Frames a full stack holds (t).
    pub fn capacity(&self) -> usize {
        self.frames
    }

    /// Forgets every frame (e.g. at a cut between clips).
    pub fn clear(&mut self) {
        self.filled = 0;
    }

    /// The held frames, oldest first (t planes when full).
    pub fn as_slice(&self) -> &[f32] {
        &self.buf[..self.filled * self.plane]
    }
}

/// Scores of one frame of a source.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FrameScore {
    /// Frame sequence number in the source.
    pub seq: u64,
    /// Capture time, µs.
    pub t_us: i64,
    /// PSNR of the prediction.
    pub psnr: f32,
    /// Feature distance to the memory.
    pub feature_distance: f32,
    /// Ground-truth label when the source has labels.
    pub label: Option<i8>,
    /// Mean scene temperature (°C) when the frame is radiometric, for temperature regimes.
    pub scene_c: Option<f32>,
    /// Whether the memory was updated after this frame.
    pub updated: bool,
    /// Milliseconds spent preprocessing, scoring and updating this frame.
    pub ms: f64,
}

/// What a run over a source did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RunSummary {
    /// Frames read from the source.
    pub frames_read: usize,
    /// Frames scored (all but the first t − 1).
    pub frames_scored: usize,
    /// Memory updates applied.
    pub memory_updates: usize,
    /// Mean milliseconds per scored frame (preprocessing, scoring, update).
    pub mean_ms: f64,
}

/// Mean temperature of a radiometric frame in °C (None for other units).
pub fn scene_celsius(frame: &ThermalFrame) -> Option<f32> {
    if frame.meta.units != crate::frame::Units::Centikelvin || frame.pixels().is_empty() {
        return None;
    }
    let sum: u64 = frame.pixels().iter().map(|&p| u64::from(p)).sum();
    let mean_ck = sum as f64 / frame.pixels().len() as f64;
    Some((mean_ck / 100.0 - 273.15) as f32)
}

/// Scores every frame of `source` once the stack is full, applies the memory update after each,
/// and hands each frame's scores to `on_frame`. Stops after `max_frames` frames read, if given.
pub fn score_source(
    scorer: &mut dyn Scorer,
    stack: &mut FrameStack,
    source: &mut dyn FrameSource,
    max_frames: Option<usize>,
    on_frame: impl FnMut(&FrameScore),
) -> Result<RunSummary, EngineError> {
    score_source_inspect(scorer, stack, source, max_frames, |_| Ok(()), on_frame)
}

/// What a scorer received and produced for one frame, as [`score_source_inspect`] shows it.
#[derive(Debug, Clone, Copy)]
pub struct ScoredFrame<'a> {
    /// Frame sequence number in the source.
    pub seq: u64,
    /// The full frame stack scored (inputs, then the target; see [`split_stack`]).
    pub stack: &'a [f32],
    /// The memory items (M×D) the forward pass read: the memory before this frame's update.
    pub memory: &'a [f32],
    /// The scorer's outputs and scores.
    pub out: &'a ScoreOutput,
}

/// [`score_source`], also handing every scored frame's inputs and outputs to `inspect` between
/// scoring and the memory update (e.g. `edge-cli infer --dump`). The time `inspect` takes is
/// not counted in the per-frame milliseconds; an error from it stops the run.
pub fn score_source_inspect(
    scorer: &mut dyn Scorer,
    stack: &mut FrameStack,
    source: &mut dyn FrameSource,
    max_frames: Option<usize>,
    mut inspect: impl FnMut(&ScoredFrame<'_>) -> Result<(), EngineError>,
    mut on_frame: impl FnMut(&FrameScore),
) -> Result<RunSummary, EngineError> {
    let mut summary = RunSummary::default();
    let mut total_ms = 0f64;
    let mut frame = {
        let info = source.info();
        ThermalFrame::zeroed(
            info.width,
            info.height,
            crate::frame::FrameMeta {
                units: info.units,
                ..Default::default()
            },
        )
    };
    while max_frames.is_none_or(|m| summary.frames_read < m) {
        if !source.next_into(&mut frame)? {
            break;
        }
        summary.frames_read += 1;
        let start = Instant::now();
        if !stack.push(&frame)? {
            continue;
        }
        let out = scorer.score(stack.as_slice())?;
        let inspect_start = Instant::now();
        inspect(&ScoredFrame {
            seq: frame.meta.seq,
            stack: stack.as_slice(),
            memory: scorer.memory(),
            out: &out,
        })?;
        let inspect_time = inspect_start.elapsed();
        let updated = scorer.update_memory(&out)?;
        let ms = start.elapsed().saturating_sub(inspect_time).as_secs_f64() * 1e3;
        total_ms += ms;
        summary.frames_scored += 1;
        summary.memory_updates += usize::from(updated);
        let label = source
            .labels()
            .and_then(|l| l.get(frame.meta.seq as usize).copied());
        on_frame(&FrameScore {
            seq: frame.meta.seq,
            t_us: frame.meta.timestamp_us,
            psnr: out.psnr,
            feature_distance: out.feature_distance,
            label,
            scene_c: scene_celsius(&frame),
            updated,
            ms,
        });
    }
    if summary.frames_scored > 0 {
        summary.mean_ms = total_ms / summary.frames_scored as f64;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip() {
        for b in Backend::ALL {
            assert_eq!(b.name().parse::<Backend>().unwrap(), b);
        }
        assert!("tract-f16"
            .parse::<Backend>()
            .unwrap_err()
            .contains("tract-f32"));
    }

    #[test]
    fn scores_follow_the_protocol() {
        // Prediction off by 0.2 in [−1, 1] everywhere: 0.1 in [0, 1], mse 0.01, PSNR 20 dB.
        let target = vec![0.0f32; 8];
        let pred = vec![0.2f32; 8];
        // Two unit items in 2-D; queries at e1 and e2 exactly, and one at 45°.
        let memory = vec![1.0, 0.0, 0.0, 1.0];
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let queries = vec![1.0, 0.0, 0.0, 1.0, s, s];
        let out = score_forward(pred, &target, queries, vec![], &memory, 2);
        assert!((out.mse - 0.01).abs() < 1e-7, "{}", out.mse);
        assert!((out.psnr - 20.0).abs() < 1e-4, "{}", out.psnr);
        assert!(out.error_map.iter().all(|&e| (e - 0.01).abs() < 1e-7));
        // Uniform errors: the weighted point score is the error itself.
        assert!((out.point_score - 0.01).abs() < 1e-7);
        // Only the 45° query is away from its (first, on a tie) item: (s−1)² + s², over 3·2.
        let expect = ((s - 1.0).powi(2) + s * s) / 6.0;
        assert!((out.feature_distance - expect).abs() < 1e-6);
    }

    #[test]
    fn memory_updates_only_under_the_threshold() {
        let cfg = ModelConfig::preset("tiny").unwrap();
        let (m, d) = (cfg.memory_items, cfg.memory_dim());
        let mut items = vec![0f32; m * d];
        for i in 0..m {
            items[i * d + i % d] = 1.0;
        }
        let mut mem = MemoryState::new(&cfg, items.clone()).unwrap();
        let mut q = vec![0f32; 2 * d];
        q[0] = 0.6;
        q[1] = 0.8;
        q[d + 1] = 1.0;
        let out = |point_score| ScoreOutput {
            pred: vec![],
            error_map: vec![],
            mse: 0.0,
            psnr: 0.0,
            feature_distance: 0.0,
            point_score,
            read_weights: vec![],
            queries: q.clone(),
        };
        assert!(!mem.update(&out(0.01)).unwrap());
        assert_eq!(mem.items(), items.as_slice());
        assert!(mem.update(&out(0.009)).unwrap());
        assert_ne!(mem.items(), items.as_slice());
        assert!(mem.set(&items[1..]).is_err());
    }
}
