//! tract backend: runs the bundle's f32 or int8 ONNX model on the CPU.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tract_onnx::prelude::{
    tvec, Framework, InferenceModelExt, IntoTValue, TValue, TVec, Tensor, TypedRunnableModel,
};

use tract_linalg::multithread::Executor;
use tract_onnx::tract_core::prelude::RunOptions;

use super::{fill_scores, split_stack, Backend, EngineError, MemoryState, ScoreOutput, Scorer};
use crate::alloc::{MemoryPlan, PlanStats};
use crate::export::bundle::Bundle;
use crate::model::ModelConfig;

/// Which ONNX model of the bundle tract runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// `model.onnx`.
    F32,
    /// `model.int8.onnx`.
    Int8,
}

/// Scores with tract: the model is loaded, optimized and planned once, then run per frame with
/// the frame stack and the current memory items as its two inputs.
pub struct TractScorer {
    model: Arc<TypedRunnableModel>,
    precision: Precision,
    cfg: ModelConfig,
    memory: MemoryState,
    /// Serves the forward pass's per-frame allocations from one arena (see `crate::alloc`).
    plan: MemoryPlan,
    /// Time of the last forward pass (`model.run` and the output copies).
    last_forward: Duration,
}

impl std::fmt::Debug for TractScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractScorer")
            .field("precision", &self.precision)
            .field("model", &self.cfg.to_string())
            .finish_non_exhaustive()
    }
}

fn tract_err(context: String) -> impl FnOnce(tract_onnx::prelude::TractError) -> EngineError {
    move |e| EngineError::Tract {
        context,
        detail: format!("{e:#}"),
    }
}

impl TractScorer {
    /// Loads the bundle's model of `precision` with the bundle's initial memory; `threads` > 1
    /// runs tract's matrix products (the convolutions' bulk) on a pool of that many threads.
    pub fn new(bundle: &Bundle, precision: Precision, threads: usize) -> Result<Self, EngineError> {
        let path = match precision {
            Precision::F32 => bundle.model_f32_path(),
            Precision::Int8 => bundle.model_int8_path(),
        };
        let memory = bundle.load_memory()?;
        Self::from_path(&path, bundle.config(), memory, precision, threads)
    }

    /// Loads an ONNX model file exported for `cfg`, with `memory` (row-major M×D) as the
    /// initial memory, running on `threads` threads (0 or 1: the calling thread only).
    pub fn from_path(
        path: &Path,
        cfg: &ModelConfig,
        memory: Vec<f32>,
        precision: Precision,
        threads: usize,
    ) -> Result<Self, EngineError> {
        let ctx = |what: &str| format!("{what} {}", path.display());
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(tract_err(ctx("loading")))?
            .into_optimized()
            .map_err(tract_err(ctx("optimizing")))?
            .into_runnable_with_options(&RunOptions {
                executor: (threads > 1).then(|| Executor::multithread(threads)),
                ..Default::default()
            })
            .map_err(tract_err(ctx("planning")))?;
        log::debug!("tract loaded {} ({precision:?})", path.display());
        Ok(Self {
            model,
            precision,
            cfg: cfg.clone(),
            memory: MemoryState::new(cfg, memory)?,
            // tract's pool allocates on whichever thread runs a piece: the sequence differs
            // every call, and trying to record it only costs time (until 5 misses turn it off).
            plan: if threads > 1 {
                MemoryPlan::off("tract runs on a thread pool (--threads > 1)")
            } else {
                MemoryPlan::new()
            },
            last_forward: Duration::ZERO,
        })
    }
}

/// The model's two inputs: the input frames (1, t−1 frames × c, H, W) and the memory (M, D).
fn model_inputs(
    cfg: &ModelConfig,
    input: &[f32],
    memory: &MemoryState,
) -> Result<TVec<TValue>, EngineError> {
    let shape = [1, cfg.input_channels(), cfg.height, cfg.width];
    let frames = Tensor::from_shape(&shape, input).map_err(tract_err("input frames".into()))?;
    let (m, d) = memory.shape();
    let mem =
        Tensor::from_shape(&[m, d], memory.items()).map_err(tract_err("input memory".into()))?;
    Ok(tvec!(frames.into_tvalue(), mem.into_tvalue()))
}

/// Time one node of the model took, averaged over the profiled calls.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeTime {
    /// Node name in the optimized model (the ONNX node it came from, plus tract's suffixes).
    pub node: String,
    /// tract's operator (after optimization: e.g. `Conv`, `DirectSpatialConv`, `OptMatMul`).
    pub op: String,
    /// Mean milliseconds per call.
    pub ms: f64,
}

impl TractScorer {
    /// Runs the forward pass `runs` times on `stack`, timing every node of the optimized
    /// model (for `edge-cli bench --profile`); nodes in plan order. The memory is not changed.
    pub fn profile(&self, stack: &[f32], runs: usize) -> Result<Vec<NodeTime>, EngineError> {
        use tract_onnx::tract_core::plan::{eval, SimpleState};
        let (input, _) = split_stack(&self.cfg, stack)?;
        let mut state = SimpleState::new(&self.model).map_err(tract_err("profiling".into()))?;
        let n = self.model.model().nodes().len();
        let mut total = vec![Duration::ZERO; n];
        for _ in 0..runs.max(1) {
            state
                .run_plan_with_eval(
                    model_inputs(&self.cfg, input, &self.memory)?,
                    |ctx, op_state, node, inputs| {
                        let t = Instant::now();
                        let r = eval(ctx, op_state, node, inputs);
                        total[node.id] += t.elapsed();
                        r
                    },
                )
                .map_err(tract_err("profiling".into()))?;
            clear_avx_upper();
        }
        let model = self.model.model();
        Ok(self
            .model
            .order_without_consts()
            .iter()
            .map(|&id| {
                let node = &model.nodes()[id];
                NodeTime {
                    node: node.name.clone(),
                    op: node.op.name().to_string(),
                    ms: total[id].as_secs_f64() * 1e3 / runs.max(1) as f64,
                }
            })
            .collect())
    }
}

/// tract's x86 kernels (hand-written AVX2/AVX-512 assembly) return without `vzeroupper`, so
/// the upper halves of the vector registers stay dirty and every legacy-SSE instruction after
/// them pays a transition penalty: computing the scores took 2.9 ms instead of 0.28 ms per
/// frame on the development Xeon (`edge-cli bench`, scoring stage). Clearing them once after
/// the forward pass restores our code's speed.
#[inline]
fn clear_avx_upper() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above), which is all vzeroupper needs.
        unsafe { zero_upper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn zero_upper() {
    std::arch::x86_64::_mm256_zeroupper();
}

/// Copies output `i` into `dst` (resized to `len` once; no allocation after that).
fn output_into(
    outputs: &[TValue],
    i: usize,
    name: &'static str,
    len: usize,
    dst: &mut Vec<f32>,
) -> Result<(), EngineError> {
    let t = outputs.get(i).ok_or_else(|| EngineError::Output {
        name,
        detail: format!("the model returned {} outputs", outputs.len()),
    })?;
    let v = t
        .to_plain_array_view::<f32>()
        .map_err(|e| EngineError::Output {
            name,
            detail: format!("{e:#}"),
        })?;
    if v.len() != len {
        return Err(EngineError::Output {
            name,
            detail: format!("{} values, expected {len} (shape {:?})", v.len(), t.shape()),
        });
    }
    dst.clear();
    match v.as_slice() {
        Some(s) => dst.extend_from_slice(s),
        None => dst.extend(v.iter().copied()),
    }
    Ok(())
}

impl Scorer for TractScorer {
    fn backend(&self) -> Backend {
        match self.precision {
            Precision::F32 => Backend::TractF32,
            Precision::Int8 => Backend::TractInt8,
        }
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn score(&mut self, stack: &[f32]) -> Result<ScoreOutput, EngineError> {
        let mut out = ScoreOutput::default();
        self.score_into(stack, &mut out)?;
        Ok(out)
    }

    fn score_into(&mut self, stack: &[f32], out: &mut ScoreOutput) -> Result<(), EngineError> {
        let (cfg, model, memory) = (&self.cfg, &self.model, &self.memory);
        let last_forward = &mut self.last_forward;
        self.plan.run(|| {
            let (input, target) = split_stack(cfg, stack)?;
            let started = Instant::now();
            let (m, d) = memory.shape();
            let res = model
                .run(model_inputs(cfg, input, memory)?)
                .map_err(tract_err("running the model".into()))?;
            let (qh, qw) = cfg.query_size();
            let n = qh * qw;
            output_into(&res, 0, "pred", target.len(), &mut out.pred)?;
            output_into(&res, 1, "queries", n * d, &mut out.queries)?;
            output_into(&res, 2, "read_weights", n * m, &mut out.read_weights)?;
            *last_forward = started.elapsed();
            clear_avx_upper();
            fill_scores(out, target, memory.items(), d);
            Ok(())
        })
    }

    fn memory_plan(&self) -> Option<PlanStats> {
        Some(self.plan.stats())
    }

    fn last_forward(&self) -> Option<Duration> {
        Some(self.last_forward)
    }

    fn memory_state(&self) -> &MemoryState {
        &self.memory
    }

    fn memory_state_mut(&mut self) -> &mut MemoryState {
        &mut self.memory
    }
}
