//! `edge-cli calibrate`: fit the causal frame score and the alert threshold on normal footage
//! to an alerts-per-day budget, and store both in the bundle's `[calibration]`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::{open_scorer, score_source, Backend, FrameStack};
use crate::export::bundle::Bundle;
use crate::frame::Units;
use crate::model::config::Mode;
use crate::score::causal::{CausalModel, CausalScorer};
use crate::score::threshold::{fit_threshold, ThresholdFit};
use crate::source::{label, open_source, tre, FrameSource, OpenOptions};

/// Arguments of `edge-cli calibrate`.
#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// Model bundle folder; its bundle.toml gets the `[calibration]` table.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Normal footage: a dataset (its `train/` clips; frames labelled anomalous are skipped),
    /// a clip folder or one replay file. No anomalous examples are needed.
    #[arg(long)]
    pub source: PathBuf,
    /// False-alarm budget: alerts per day the threshold should let through on normal footage.
    #[arg(long, default_value_t = 2.0)]
    pub alerts_per_day: f64,
    /// Frames scored per second on the board (1 FPS by default), for the per-day rates.
    #[arg(long, default_value_t = 1.0)]
    pub fps: f64,
    /// Exponential smoothing factor λ of the score (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub smoothing: f64,
    /// Backend that scores the footage (use the one the board runs).
    #[arg(long, default_value = "tract-f32")]
    pub backend: Backend,
    /// Worker threads for tract.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// What `[calibration]` holds (version 1).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    /// Table version.
    pub version: u32,
    /// Footage the calibration was fitted on.
    pub source: String,
    /// Backend that scored it.
    pub backend: String,
    /// Alerts per day asked for.
    pub alerts_per_day: f64,
    /// Frames per second the rates assume.
    pub fps: f64,
    /// The causal score's normal statistics, mix and smoothing.
    pub score: CausalModel,
    /// The alert threshold on that score.
    pub threshold: ThresholdFit,
}

/// Per-clip (PSNR, feature distance) of the normal frames of `path`.
fn score_footage(
    path: &Path,
    bundle: &Bundle,
    a: &CalibrateArgs,
) -> anyhow::Result<Vec<Vec<(f64, f64)>>> {
    let mut scorer = open_scorer(bundle, a.backend, a.threads)?;
    let mut stack = FrameStack::for_bundle(bundle)?;
    let mut sources: Vec<Box<dyn FrameSource>> = Vec::new();
    if tre::looks_like_tre(path) {
        let ds = tre::open_dataset(path)?;
        let clips = if ds.train.is_empty() {
            ds.test
        } else {
            ds.train
        };
        for c in &clips {
            sources.push(Box::new(c.open(Units::Counts)?));
        }
    } else {
        sources.push(open_source(path, &OpenOptions::default())?);
    }
    let pb = ProgressBar::new(sources.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} clips ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message("scoring");
    let mut clips = Vec::new();
    for mut src in sources {
        stack.clear();
        let name = src.info().name.clone();
        let mut terms = Vec::new();
        score_source(scorer.as_mut(), &mut stack, src.as_mut(), None, |f| {
            if f.label != Some(label::EVENT) {
                terms.push((f64::from(f.psnr), f64::from(f.feature_distance)));
            }
        })
        .with_context(|| format!("scoring {name}"))?;
        clips.push(terms);
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(clips)
}

/// Runs `edge-cli calibrate`.
pub fn run(a: &CalibrateArgs) -> anyhow::Result<()> {
    if !(a.fps > 0.0 && a.fps.is_finite()) {
        bail!("--fps must be a positive number");
    }
    let mut bundle = Bundle::open(&a.bundle).context("opening the bundle")?;
    let clips = score_footage(&a.source, &bundle, a)?;
    let psnr: Vec<f64> = clips.iter().flatten().map(|t| t.0).collect();
    let dist: Vec<f64> = clips.iter().flatten().map(|t| t.1).collect();
    let alpha = match bundle.config().mode {
        Mode::Prediction => 0.6,
        Mode::Reconstruction => 0.7,
    };
    let model = CausalModel::fit(&psnr, &dist, alpha, a.smoothing)
        .with_context(|| format!("fitting normal statistics on {}", a.source.display()))?;
    let mut scores = Vec::with_capacity(psnr.len());
    for clip in &clips {
        let mut s = CausalScorer::new(model.clone());
        scores.extend(clip.iter().map(|&(p, d)| s.push(p, d)));
    }
    let frames_per_day = 86_400.0 * a.fps;
    let fit = fit_threshold(&scores, frames_per_day, a.alerts_per_day, 0)
        .with_context(|| format!("fitting the threshold on {}", a.source.display()))?;
    let cal = Calibration {
        version: 1,
        source: a.source.display().to_string(),
        backend: a.backend.to_string(),
        alerts_per_day: a.alerts_per_day,
        fps: a.fps,
        score: model.clone(),
        threshold: fit.clone(),
    };
    let table = match toml::Value::try_from(&cal).context("encoding the calibration")? {
        toml::Value::Table(t) => t,
        _ => unreachable!("a struct encodes as a table"),
    };
    bundle.manifest_mut().calibration = Some(table);
    bundle
        .save_manifest()
        .with_context(|| format!("writing {}", bundle.manifest_path().display()))?;
    let hours = scores.len() as f64 / a.fps / 3600.0;
    println!(
        "calibrated {} on {} normal frames ({:.1} h at {} fps) from {} clips of {}",
        bundle.manifest().name,
        scores.len(),
        hours,
        a.fps,
        clips.len(),
        a.source.display()
    );
    println!("  {:<26} {}", "backend", a.backend);
    println!(
        "  {:<26} median {:.3} dB, sigma {:.3} dB",
        "PSNR (normal)", model.psnr.median, model.psnr.sigma
    );
    println!(
        "  {:<26} median {:.3e}, sigma {:.3e}",
        "feature distance (normal)", model.distance.median, model.distance.sigma
    );
    println!("  {:<26} α {alpha}, smoothing {}", "score", model.smoothing);
    println!(
        "  {:<26} {:.3} ({})",
        "threshold",
        fit.threshold,
        match fit.method {
            crate::score::threshold::TailMethod::Empirical => "empirical quantile",
            crate::score::threshold::TailMethod::Gpd => "generalized Pareto tail",
        }
    );
    println!(
        "  {:<26} {:.2} per day (90 % interval {:.2}–{:.2}; budget {})",
        "expected false alarms",
        fit.expected_per_day,
        fit.interval_per_day[0],
        fit.interval_per_day[1],
        a.alerts_per_day
    );
    println!(
        "wrote [calibration] into {}",
        bundle.manifest_path().display()
    );
    Ok(())
}
