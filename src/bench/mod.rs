//! Speed and memory on this machine (`edge-cli bench`): per-stage latency of the on-device
//! loop, achieved GFLOP/s from the model's counted multiply–accumulates, peak resident memory,
//! this CPU's peak matrix-multiply rate ([`peak`]), a training step, and sizing a model for a
//! board's frame budget ([`sizing`]).
//!
//! Figures come from measurement only; the JSON ([`Report`]) has the same shape as the peers'
//! (`tools/peers/peers.py`) so `tools/peers/compare.sh` can put them side by side.

pub mod peak;
pub mod sizing;

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use crate::engine::{open_scorer, Backend, EngineError, FrameStack, ScoreOutput};
use crate::export::bundle::Bundle;
use crate::frame::guard::GuardConfig;
use crate::frame::ThermalFrame;
use crate::model::cost::cost;
use crate::model::optim::Adam;
use crate::model::params::ParamStore;
use crate::model::train::loss;
use crate::model::{Mnad, ModelConfig};
use crate::pipeline::{FrameOutcome, Identity, LoopSettings, Pipeline, StageTimes};
use crate::score::calibration::Calibration;
use crate::score::drift::DriftConfig;
use crate::score::zones::ZoneMap;
use crate::source::simulator::{Gray8Camera, SimConfig};
use crate::source::FrameSource;

/// Version tag of the JSON report (shared with the peers' script).
pub const SCHEMA: &str = "thermal-edge-bench/1";

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The scorer failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The on-device loop failed.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    /// The bundle's calibration is unreadable.
    #[error("the bundle's calibration: {0}")]
    Calibration(#[from] crate::score::calibration::CalibrationError),
    /// candle failed (training step, peak multiply).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The frames to bench with could not be read.
    #[error("frames: {0}")]
    Source(#[from] crate::source::SourceError),
    /// The request cannot be measured.
    #[error("{0}")]
    Invalid(String),
}

/// Latency statistics of one stage over the timed frames, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Mean.
    pub mean_ms: f64,
    /// Median (nearest rank).
    pub p50_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Fastest.
    pub min_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Summary {
    /// Statistics of `samples` (ms); None when there are none.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        // Nearest rank: the smallest value with at least q·n samples at or below it.
        let rank = |q: f64| s[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Self {
            n,
            mean_ms: s.iter().sum::<f64>() / n as f64,
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            min_ms: s[0],
            max_ms: s[n - 1],
        })
    }

    fn of_durations(d: &[Duration]) -> Option<Self> {
        Self::of(&d.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>())
    }
}

/// The machine a report was measured on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Host {
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs the process may use.
    pub logical_cpus: usize,
}

impl Host {
    /// This machine.
    pub fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        Self {
            cpu,
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The model a report measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    /// Bundle folder.
    pub bundle: String,
    /// Preset name (or "custom").
    pub preset: String,
    /// Network input shape (N, frames × channels, H, W).
    pub input: [usize; 4],
    /// Multiply–accumulates per frame, counted from the architecture (`model::cost`).
    pub macs: u64,
    /// Trainable parameters.
    pub params: u64,
}

impl ModelInfo {
    /// The model of `cfg` in `bundle`.
    pub fn of(bundle: &str, cfg: &ModelConfig) -> Self {
        let c = cost(cfg);
        Self {
            bundle: bundle.to_string(),
            preset: cfg.preset.clone().unwrap_or_else(|| "custom".into()),
            input: [1, cfg.input_channels(), cfg.height, cfg.width],
            macs: c.macs,
            params: c.params,
        }
    }
}

/// Per-stage latency of one backend.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stages {
    /// Guards, normalizing, resizing and the frame history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<Summary>,
    /// The model's forward pass (inputs in, outputs out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference: Option<Summary>,
    /// Everything after the forward pass: scores, events, drift, memory update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scoring: Option<Summary>,
    /// The whole frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<Summary>,
}

/// What one backend measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Run {
    /// Backend name (`tract-f32`, ... or a peer's name).
    pub name: String,
    /// Threads the backend ran on.
    pub threads: usize,
    /// Timed frames.
    pub frames: usize,
    /// Untimed frames before them.
    pub warmup: usize,
    /// Latency per stage.
    pub stages: Stages,
    /// Whole frames per second at the median (bare inference for peers).
    pub fps: f64,
    /// Achieved GFLOP/s of the forward pass at its median: 2 × counted MACs / time (for int8,
    /// integer operations counted the same way).
    pub gflops: Option<f64>,
    /// `gflops` over this CPU's measured peak f32 rate, when `--peak` ran.
    pub fraction_of_peak: Option<f64>,
    /// Peak resident memory (MiB) from opening the model to the end of the run.
    pub peak_rss_mib: Option<f64>,
    /// Resident memory (MiB) just before the model was opened: the program and the frames
    /// held for the benchmark. The model's own share is the difference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_rss_mib: Option<f64>,
    /// Which path was timed: `pipeline` (the on-device loop, calibrated bundle) or `engine`
    /// (frame history, model and scores: an uncalibrated bundle has no events to run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// What one training configuration measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainRun {
    /// Name (`candle-cpu-train-step`, or a peer's).
    pub name: String,
    /// Threads.
    pub threads: usize,
    /// Samples per step.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps before them.
    pub warmup: usize,
    /// Time of one step: forward, losses, backward, optimizer, memory update.
    pub step: Summary,
}

/// A whole `edge-cli bench` report.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// What produced it.
    pub tool: String,
    /// The machine.
    pub host: Host,
    /// The model.
    pub model: ModelInfo,
    /// This CPU's peak f32 rate, when measured.
    pub peak: Option<peak::Peak>,
    /// One entry per backend.
    pub runs: Vec<Run>,
    /// Training steps, when measured.
    #[serde(default)]
    pub train: Vec<TrainRun>,
}

/// How long to measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchOptions {
    /// Threads for the model.
    pub threads: usize,
    /// Timed frames.
    pub frames: usize,
    /// Untimed frames first (JIT-free, but caches, allocator and the memory plan settle).
    pub warmup: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            frames: 50,
            warmup: 5,
        }
    }
}

/// Resets the kernel's peak-RSS mark to the current RSS (Linux ≥ 4.0; false elsewhere).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident memory of this process in MiB (since the last [`reset_peak_rss`]).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// `n` frames from the harbor simulator (384×288, 8-bit, normal scene) to bench with.
pub fn simulated_frames(n: usize, seed: u64) -> Result<Vec<ThermalFrame>, BenchError> {
    let cfg = SimConfig {
        frames: n,
        ..SimConfig::default()
    };
    read_frames(&mut Gray8Camera::new(cfg, seed)?, n)
}

/// Up to `n` frames of `source`, read before any timing starts.
pub fn read_frames(
    source: &mut dyn FrameSource,
    n: usize,
) -> Result<Vec<ThermalFrame>, BenchError> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let info = source.info();
        let mut f = ThermalFrame::zeroed(info.width, info.height, Default::default());
        if !source.next_into(&mut f)? {
            break;
        }
        out.push(f);
    }
    if out.is_empty() {
        return Err(BenchError::Invalid("the source has no frames".into()));
    }
    Ok(out)
}

/// Times `backend` on `bundle` over `frames` (cycled when there are fewer than needed):
/// through the on-device loop when the bundle is calibrated, else through the engine.
pub fn bench_backend(
    bundle: &Bundle,
    backend: Backend,
    frames: &[ThermalFrame],
    opts: BenchOptions,
) -> Result<Run, BenchError> {
    if frames.is_empty() || opts.frames == 0 {
        return Err(BenchError::Invalid(
            "nothing to time: no frames or --frames 0".into(),
        ));
    }
    let rss_reset = reset_peak_rss();
    let baseline_rss_mib = crate::pipeline::health::rss_kib().map(|k| k as f64 / 1024.0);
    let scorer = open_scorer(bundle, backend, opts.threads)?;
    let cfg = bundle.config().clone();
    let cal = bundle
        .manifest()
        .calibration
        .as_ref()
        .map(Calibration::from_table)
        .transpose()?;
    let mut times: Vec<StageTimes> = Vec::with_capacity(opts.frames);
    // Frames are stamped one second apart, as the loop samples them.
    let frame_at = |i: usize| {
        let mut f = frames[i % frames.len()].clone();
        f.meta.seq = i as u64;
        f.meta.timestamp_us = i as i64 * 1_000_000 + f.meta.timestamp_us.max(0) % 1_000_000;
        f
    };
    let wanted = opts.warmup + opts.frames;
    // Guards may hold frames back (a cycled clip can look frozen); give up well past that.
    let limit = 4 * (wanted + cfg.t_length) + 64;
    let path = match &cal {
        Some(cal) => {
            let (w, h) = (cfg.width, cfg.height);
            let zones = ZoneMap::new(Vec::new(), &[], w, h)
                .map_err(|e| BenchError::Invalid(format!("zones: {e}")))?;
            let id = Identity {
                site: "bench".into(),
                camera: "bench".into(),
                model: bundle.manifest().name.clone(),
            };
            let mut p = Pipeline::new(
                id,
                scorer,
                cal,
                zones,
                LoopSettings::default(),
                GuardConfig::default(),
                &DriftConfig::default(),
                1,
                1,
            )?;
            let mut scored = 0;
            let mut i = 0;
            while scored < wanted && i < limit {
                let f = frame_at(i);
                i += 1;
                let outcome = p.process(&f, f.meta.timestamp_us, &mut |_| {})?;
                if let FrameOutcome::Scored { .. } = outcome {
                    scored += 1;
                    if scored > opts.warmup {
                        times.push(p.stage_times());
                    }
                }
            }
            "pipeline"
        }
        None => {
            let mut scorer = scorer;
            let mut stack = FrameStack::new(&cfg)?;
            let mut out = ScoreOutput::default();
            let mut scored = 0;
            let mut i = 0;
            while scored < wanted && i < limit {
                let f = frame_at(i);
                i += 1;
                let start = Instant::now();
                if !stack.push(&f)? {
                    continue;
                }
                let preprocess = start.elapsed();
                scorer.score_into(stack.as_slice(), &mut out)?;
                let inference = scorer.last_forward();
                scorer.update_memory(&out)?;
                scored += 1;
                if scored > opts.warmup {
                    times.push(StageTimes {
                        preprocess,
                        inference,
                        frame: start.elapsed(),
                    });
                }
            }
            "engine"
        }
    };
    if times.len() < opts.frames {
        return Err(BenchError::Invalid(format!(
            "only {} of {} frames were scored (the frame guards held the rest back: \
             use footage that moves, or more frames)",
            times.len(),
            opts.frames
        )));
    }
    let of = |f: &dyn Fn(&StageTimes) -> Option<Duration>| -> Option<Summary> {
        // A stage is reported only when every frame has it.
        let d: Option<Vec<Duration>> = times.iter().map(f).collect();
        d.and_then(|d| Summary::of_durations(&d))
    };
    let stages = Stages {
        preprocess: of(&|t| Some(t.preprocess)),
        inference: of(&|t| t.inference),
        scoring: of(&|t| {
            t.inference
                .map(|i| t.frame.saturating_sub(t.preprocess + i))
        }),
        frame: of(&|t| Some(t.frame)),
    };
    let frame_p50 = stages.frame.map_or(f64::NAN, |s| s.p50_ms);
    let gflops = stages
        .inference
        .map(|s| 2.0 * cost(&cfg).macs as f64 / (s.p50_ms * 1e-3) / 1e9);
    Ok(Run {
        name: backend.name().to_string(),
        threads: opts.threads,
        frames: opts.frames,
        warmup: opts.warmup,
        stages,
        fps: 1e3 / frame_p50,
        gflops,
        fraction_of_peak: None,
        peak_rss_mib: if rss_reset { peak_rss_mib() } else { None },
        baseline_rss_mib,
        path: Some(path.into()),
    })
}

/// Times every node of `backend`'s optimized model over `runs` forward passes (tract only).
pub fn profile_backend(
    bundle: &Bundle,
    backend: Backend,
    frames: &[ThermalFrame],
    threads: usize,
    runs: usize,
) -> Result<Vec<crate::engine::tract::NodeTime>, BenchError> {
    use crate::engine::{Precision, TractScorer};
    let precision = match backend {
        Backend::TractF32 => Precision::F32,
        Backend::TractInt8 => Precision::Int8,
        other => {
            return Err(BenchError::Invalid(format!(
                "--profile times tract's operators; {other} has none to show"
            )))
        }
    };
    let scorer = TractScorer::new(bundle, precision, threads)?;
    let mut stack = FrameStack::new(bundle.config())?;
    for f in frames.iter().cycle().take(stack.capacity()) {
        stack.push(f)?;
    }
    // One untimed pass first, as the benchmark's warm-up.
    scorer.profile(stack.as_slice(), 1)?;
    Ok(scorer.profile(stack.as_slice(), runs)?)
}

/// Times candle CPU training steps of `cfg` on random data: forward in training mode, the
/// losses, backward, Adam and the memory update, as `model::train` does per batch.
pub fn bench_train(
    cfg: &ModelConfig,
    batch: usize,
    steps: usize,
    warmup: usize,
    threads: usize,
) -> Result<TrainRun, BenchError> {
    if batch == 0 || steps == 0 {
        return Err(BenchError::Invalid(
            "a training step needs a batch and steps of at least 1".into(),
        ));
    }
    let device = Device::Cpu;
    let store = ParamStore::new(device.clone(), 7);
    let net = Mnad::new(&store, cfg).map_err(|e| BenchError::Invalid(e.to_string()))?;
    let mut adam = Adam::new(store.params(), 2e-4);
    let x = Tensor::rand(
        -1f32,
        1f32,
        (batch, cfg.input_channels(), cfg.height, cfg.width),
        &device,
    )?;
    let y = Tensor::rand(
        -1f32,
        1f32,
        (batch, cfg.channels, cfg.height, cfg.width),
        &device,
    )?;
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let start = Instant::now();
        let fwd = net.forward(&x, true)?;
        let (total, _) = loss(&net, &fwd, &y)?;
        let grads = total.backward()?;
        adam.step(&grads)?;
        net.memory.update(&fwd.queries, &fwd.read.scores)?;
        if i >= warmup {
            times.push(start.elapsed());
        }
    }
    Ok(TrainRun {
        name: "candle-cpu-train-step".into(),
        threads,
        batch,
        steps,
        warmup,
        step: Summary::of_durations(&times).expect("steps ≥ 1"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Summary::of(&[5.0, 1.0, 4.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.n, s.min_ms, s.max_ms), (5, 1.0, 5.0));
        assert_eq!(s.p50_ms, 3.0);
        assert_eq!(s.p99_ms, 5.0);
        assert!((s.mean_ms - 3.0).abs() < 1e-12);
        // Even count: the median is the lower middle (rank ⌈0.5·4⌉ = 2).
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.p50_ms, 2.0);
        // 100 samples 1..=100: p99 is the 99th.
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&v).unwrap();
        assert_eq!((s.p50_ms, s.p99_ms), (50.0, 99.0));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn peak_rss_is_read_and_reset() {
        assert!(reset_peak_rss(), "Linux lets a process reset its peak RSS");
        // 64 MiB touched page by page: the peak holds it after it is freed, until a reset.
        let v = vec![1u8; 64 << 20];
        std::hint::black_box(&v);
        let with = peak_rss_mib().expect("Linux /proc/self/status has VmHWM");
        assert!(with >= 64.0, "{with}");
        drop(v);
        // RSS counters are batched per thread, so the mark may read a few pages lower; it still
        // holds the freed 64 MiB.
        let after = peak_rss_mib().unwrap();
        assert!(after >= 64.0 && after >= with - 1.0, "{after} {with}");
    }
}
