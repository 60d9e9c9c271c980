//! Sizing a model for a board's frame budget (`edge-cli bench --sweep`): every preset and
//! precision is timed on this machine, the time is carried over to the board with the board
//! profile's speed factor and the thread gain measured here, and the largest model whose
//! predicted p99 fits the budget with a safety margin is recommended.
//!
//! The prediction for a board of speed factor s (per-thread speed relative to this machine)
//! running k threads, from the one-thread p99 t₁ and the two-thread p99 t₂ measured here:
//! `t_board = t₁ / s / (1 + (k − 1)·g)` with g = t₁/t₂ − 1 (the gain of one added thread,
//! clamped to [0, 1]). Its uncertainty is the speed factor's (declared ones are rough: ±50 %)
//! and the thread extrapolation's; the margin covers both.

use std::path::{Path, PathBuf};

use candle_core::Device;

use super::{bench_backend, BenchError, BenchOptions, Run};
use crate::config::RunConfigFile;
use crate::engine::Backend;
use crate::export::bundle::{write_model_bundle, Bundle};
use crate::export::quant::{calibrate, chosen_ranges, export_int8, spread_windows};
use crate::frame::Preprocessor;
use crate::frame::ThermalFrame;
use crate::model::cost::cost;
use crate::model::data::FrameSet;
use crate::model::params::ParamStore;
use crate::model::{Mnad, ModelConfig};
use crate::source::simulator::{Gray8Camera, SimConfig};

/// What the sweep needs from a board profile.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BoardProfile {
    /// Board name.
    pub board: String,
    /// Per-thread speed relative to this (x86-64 development) machine.
    pub speed_factor: f64,
    /// Threads the board gives the model.
    pub threads: usize,
    /// The backend the profile runs.
    pub backend: String,
}

impl BoardProfile {
    /// Reads a board profile (`boards/*.toml`).
    pub fn load(path: &Path) -> Result<Self, BenchError> {
        let bad = |what: String| BenchError::Invalid(format!("{}: {what}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let f: RunConfigFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let speed_factor = f
            .speed_factor
            .ok_or_else(|| bad("no speed_factor (per-thread speed relative to x86-64)".into()))?;
        if !(speed_factor.is_finite() && speed_factor > 0.0) {
            return Err(bad(format!(
                "speed_factor {speed_factor} is not a positive number"
            )));
        }
        let model = f.model.unwrap_or_default();
        Ok(Self {
            board: f.board.unwrap_or_else(|| path.display().to_string()),
            speed_factor,
            threads: model.threads.max(1),
            backend: model.backend,
        })
    }
}

/// Predicted board latency (ms) from this machine's one-thread time `t1_ms`, for `threads`
/// board threads with a per-added-thread gain `gain` (see the module docs).
pub fn predict_ms(t1_ms: f64, speed_factor: f64, threads: usize, gain: f64) -> f64 {
    let g = gain.clamp(0.0, 1.0);
    t1_ms / speed_factor / (1.0 + (threads.max(1) - 1) as f64 * g)
}

/// One preset × backend of the sweep.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Candidate {
    /// Preset.
    pub preset: String,
    /// Backend.
    pub backend: String,
    /// Multiply–accumulates per frame.
    pub macs: u64,
    /// Whole frame here, one thread.
    pub one_thread: Run,
    /// Whole frame here, two threads (when this machine has two).
    pub two_threads: Option<Run>,
    /// Gain of one added thread measured here (t₁/t₂ − 1).
    pub thread_gain: f64,
    /// Predicted whole-frame p99 on the board, ms.
    pub predicted_p99_ms: f64,
    /// Whether predicted p99 × margin ≤ budget.
    pub fits: bool,
}

/// The sweep's result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sizing {
    /// The board.
    pub board: BoardProfile,
    /// Frame budget, ms.
    pub budget_ms: f64,
    /// Safety margin the prediction is multiplied by.
    pub margin: f64,
    /// Every candidate, smallest model first.
    pub candidates: Vec<Candidate>,
    /// The largest model (most MACs) that fits; on equal MACs the faster backend.
    pub recommended: Option<(String, String)>,
}

/// A bundle of `preset` with random weights, for timing only (speed does not depend on the
/// weights), built once into `dir` and reused while its configuration is unchanged.
pub fn timing_bundle(preset: &str, dir: &Path) -> Result<Bundle, BenchError> {
    let cfg = ModelConfig::preset(preset).map_err(|e| BenchError::Invalid(e.to_string()))?;
    if let Ok(b) = Bundle::open(dir) {
        if b.config() == &cfg {
            return Ok(b);
        }
    }
    log::info!("building a timing bundle of {preset} in {}", dir.display());
    let export = |e: crate::export::ExportError| BenchError::Invalid(format!("{preset}: {e}"));
    let store = ParamStore::new(Device::Cpu, 11);
    let net = Mnad::new(&store, &cfg).map_err(|e| BenchError::Invalid(e.to_string()))?;
    // int8 ranges from a few simulated windows: enough for realistic scales.
    let mut camera = Gray8Camera::new(
        SimConfig {
            frames: cfg.t_length + 3,
            ..SimConfig::default()
        },
        3,
    )?;
    let mut pre = Preprocessor::new(cfg.normalizer, cfg.width, cfg.height)
        .map_err(|e| BenchError::Invalid(format!("{preset} preprocessing: {e}")))?;
    let mut set = FrameSet::new(cfg.height, cfg.width);
    set.add_source(&mut camera, &mut pre, cfg.t_length)
        .map_err(|e| BenchError::Invalid(format!("simulated calibration frames: {e}")))?;
    let windows = spread_windows(&set, cfg.t_length, 3);
    let cal =
        calibrate(&net, &store, &set, &windows, Default::default(), |_, _| {}).map_err(export)?;
    let int8 = export_int8(&net, &store, &chosen_ranges(&cal)).map_err(export)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::Invalid(format!("{}: {e}", dir.display())))?;
    write_model_bundle(dir, &format!("timing-{preset}"), &net, &store, int8)
        .map_err(|e| BenchError::Invalid(e.to_string()))?;
    Bundle::open(dir).map_err(|e| BenchError::Invalid(e.to_string()))
}

/// Options of the sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Presets to time.
    pub presets: Vec<String>,
    /// Backends to time.
    pub backends: Vec<Backend>,
    /// Frame budget, ms.
    pub budget_ms: f64,
    /// Safety margin.
    pub margin: f64,
    /// Where timing bundles are kept.
    pub dir: PathBuf,
    /// Timed frames per configuration (the largest presets take seconds a frame).
    pub frames: usize,
    /// Untimed frames first.
    pub warmup: usize,
}

/// Times every preset × backend and recommends one for `board`. `progress` hears each
/// configuration as it starts.
pub fn sweep(
    board: BoardProfile,
    opts: &SweepOptions,
    frames: &[ThermalFrame],
    mut progress: impl FnMut(&str),
) -> Result<Sizing, BenchError> {
    let two = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    let mut candidates = Vec::new();
    for preset in &opts.presets {
        let bundle = timing_bundle(preset, &opts.dir.join(preset))?;
        let macs = cost(bundle.config()).macs;
        for &backend in &opts.backends {
            let run_with = |threads| {
                bench_backend(
                    &bundle,
                    backend,
                    frames,
                    BenchOptions {
                        threads,
                        frames: opts.frames,
                        warmup: opts.warmup,
                    },
                )
            };
            progress(&format!("{preset} {backend} 1 thread"));
            let one = run_with(1)?;
            let two_run = if two {
                progress(&format!("{preset} {backend} 2 threads"));
                Some(run_with(2)?)
            } else {
                None
            };
            let p99 = |r: &Run| r.stages.frame.map_or(f64::NAN, |s| s.p99_ms);
            let p50 = |r: &Run| r.stages.frame.map_or(f64::NAN, |s| s.p50_ms);
            // The gain from medians (p99s are too noisy for a ratio), applied to the p99.
            let gain = two_run
                .as_ref()
                .map_or(0.0, |t| (p50(&one) / p50(t) - 1.0).clamp(0.0, 1.0));
            let predicted = predict_ms(p99(&one), board.speed_factor, board.threads, gain);
            candidates.push(Candidate {
                preset: preset.clone(),
                backend: backend.name().to_string(),
                macs,
                fits: predicted * opts.margin <= opts.budget_ms,
                one_thread: one,
                two_threads: two_run,
                thread_gain: gain,
                predicted_p99_ms: predicted,
            });
        }
    }
    candidates.sort_by_key(|c| c.macs);
    let recommended = recommend(&candidates, &board.backend);
    Ok(Sizing {
        board,
        budget_ms: opts.budget_ms,
        margin: opts.margin,
        candidates,
        recommended,
    })
}

/// The fitting candidate with the most MACs; on equal MACs the faster one (the board
/// profile's backend only breaks an exact tie: its choice may predate a measurement).
fn recommend(candidates: &[Candidate], board_backend: &str) -> Option<(String, String)> {
    candidates
        .iter()
        .filter(|c| c.fits)
        .max_by(|a, b| {
            a.macs
                .cmp(&b.macs)
                .then(b.predicted_p99_ms.total_cmp(&a.predicted_p99_ms))
                .then((a.backend == board_backend).cmp(&(b.backend == board_backend)))
        })
        .map(|c| (c.preset.clone(), c.backend.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Stages, Summary};

    #[test]
    fn prediction_scales_by_speed_and_threads() {
        // A quarter of this machine's speed, one thread: 4× slower.
        assert!((predict_ms(100.0, 0.25, 1, 0.9) - 400.0).abs() < 1e-9);
        // Three threads at a gain of 0.5 each: 1 + 2·0.5 = 2× faster.
        assert!((predict_ms(100.0, 0.25, 3, 0.5) - 200.0).abs() < 1e-9);
        // A measured slowdown from threads counts as no gain, never as a loss.
        assert!((predict_ms(100.0, 1.0, 4, -0.3) - 100.0).abs() < 1e-9);
    }

    fn cand(preset: &str, backend: &str, macs: u64, ms: f64, fits: bool) -> Candidate {
        let s = Summary::of(&[ms]).unwrap();
        let run = Run {
            name: backend.into(),
            threads: 1,
            frames: 1,
            warmup: 0,
            stages: Stages {
                frame: Some(s),
                ..Stages::default()
            },
            fps: 1e3 / ms,
            gflops: None,
            fraction_of_peak: None,
            peak_rss_mib: None,
            baseline_rss_mib: None,
            path: None,
        };
        Candidate {
            preset: preset.into(),
            backend: backend.into(),
            macs,
            one_thread: run,
            two_threads: None,
            thread_gain: 0.0,
            predicted_p99_ms: ms,
            fits,
        }
    }

    #[test]
    fn the_largest_fitting_model_is_recommended() {
        let c = vec![
            cand("edge-s", "tract-f32", 10, 100.0, true),
            cand("edge-s", "tract-int8", 10, 150.0, true),
            cand("edge-m", "tract-f32", 50, 600.0, true),
            cand("edge-m", "tract-int8", 50, 900.0, true),
            cand("paper", "tract-f32", 400, 5000.0, false),
        ];
        // Same MACs: the faster wins, whatever the board profile says.
        for board in ["tract-int8", "candle-cuda"] {
            assert_eq!(
                recommend(&c, board),
                Some(("edge-m".into(), "tract-f32".into()))
            );
        }
        // An exact tie goes to the board's backend.
        let tie = vec![
            cand("edge-s", "tract-f32", 10, 100.0, true),
            cand("edge-s", "tract-int8", 10, 100.0, true),
        ];
        assert_eq!(
            recommend(&tie, "tract-int8"),
            Some(("edge-s".into(), "tract-int8".into()))
        );
        assert_eq!(
            recommend(&tie, "tract-f32"),
            Some(("edge-s".into(), "tract-f32".into()))
        );
        assert_eq!(recommend(&c[4..], "tract-f32"), None);
    }

    #[test]
    fn shipped_board_profiles_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
        let pi4 = BoardProfile::load(&dir.join("raspberry-pi-4.toml")).unwrap();
        assert_eq!((pi4.board.as_str(), pi4.threads), ("raspberry-pi-4", 3));
        assert!(pi4.speed_factor > 0.0 && pi4.speed_factor < 1.0);
        let e = BoardProfile::load(&dir.join("nope.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.toml"), "{e}");
    }
}
