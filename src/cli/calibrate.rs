//! `edge-cli calibrate`: fit the causal frame score and the alert threshold on normal footage
//! to an alerts-per-day budget — per regime when asked — and store both in the bundle's
//! `[calibration]`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::SiteConfig;
use crate::engine::{open_scorer, Backend, FrameStack};
use crate::export::bundle::Bundle;
use crate::model::config::Mode;
use crate::score::calibration::{Calibration, FitSettings, NormalFrame};
use crate::score::footage::{score_terms, TermLayout};
use crate::score::regime::{RegimeError, RegimeSpec};
use crate::score::terms::TermsConfig;
use crate::score::threshold::TailMethod;
use crate::source::{footage_clips, OpenOptions};

/// Arguments of `edge-cli calibrate`.
#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// Model bundle folder; its bundle.toml gets the `[calibration]` table.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Normal footage: a dataset (its `train/` clips; frames labelled anomalous are skipped),
    /// a folder of replay clips or one replay source. No anomalous examples are needed.
    #[arg(long)]
    pub source: PathBuf,
    /// False-alarm budget: alerts per day the threshold should let through on normal footage
    /// (in each regime).
    #[arg(long, default_value_t = 2.0)]
    pub alerts_per_day: f64,
    /// Frames scored per second on the board (1 FPS by default), for the per-day rates.
    #[arg(long, default_value_t = 1.0)]
    pub fps: f64,
    /// Weight α of the PSNR term against the feature distance (default: MNAD's 0.6 for
    /// prediction, 0.7 for reconstruction models).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Exponential smoothing factor λ of the score (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub smoothing: f64,
    /// Regimes with their own statistics and threshold: none, day-night[:START-END[:±UTC_OFFSET]]
    /// (by timestamp; e.g. day-night:6-20:+1), or temperature[:SPLIT_C] (by scene mean
    /// temperature, radiometric cameras; without a split, the footage's median).
    #[arg(long, default_value = "none")]
    pub regimes: String,
    /// Prediction-error term: PSNR of the worst PATCH×PATCH window (model-input pixels)
    /// instead of the whole frame (0, MNAD).
    #[arg(long, default_value_t = 0)]
    pub patch: usize,
    /// Remove the frame's mean prediction error before squaring (FFC/AGC level steps).
    #[arg(long)]
    pub offset_compensation: bool,
    /// Site file (see `edge-cli run`): its masks are left out of the prediction error, and each
    /// of its zones gets its own prediction-error term, scaled by the zone's sensitivity.
    #[arg(long)]
    pub site: Option<PathBuf>,
    /// Ignore the site's zones for scoring (masks still apply).
    #[arg(long)]
    pub no_zone_terms: bool,
    /// Backend that scores the footage (use the one the board runs).
    #[arg(long, default_value = "tract-f32")]
    pub backend: Backend,
    /// Worker threads for tract.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// The normal frames of every clip of `path`, scored.
fn score_footage(
    path: &Path,
    bundle: &Bundle,
    a: &CalibrateArgs,
    layout: &TermLayout,
) -> anyhow::Result<Vec<Vec<NormalFrame>>> {
    let mut scorer = open_scorer(bundle, a.backend, a.threads)?;
    let mut stack = FrameStack::for_bundle(bundle)?;
    let clips_in = footage_clips(path)?;
    if clips_in.is_empty() {
        bail!("{}: no clips found", path.display());
    }
    let pb = ProgressBar::new(clips_in.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} clips ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message("scoring");
    let mut clips = Vec::new();
    for clip in clips_in {
        let mut src = clip.open(&OpenOptions::default())?;
        let name = src.info().name.clone();
        let frames = score_terms(scorer.as_mut(), &mut stack, src.as_mut(), layout)
            .with_context(|| format!("scoring {name}"))?;
        clips.push(
            frames
                .iter()
                .filter(|f| !f.anomalous)
                .map(|f| NormalFrame {
                    t_us: f.t_us,
                    scene_c: f.scene_c,
                    psnr: f.psnr,
                    distance: f.distance,
                    zones: f.zones.clone(),
                })
                .collect(),
        );
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
    let cfg = bundle.config().clone();
    let site = a.site.as_deref().map(SiteConfig::load).transpose()?;
    let masks = site.as_ref().map(|s| s.mask_polygons()).unwrap_or_default();
    let terms = TermsConfig {
        patch: a.patch,
        offset_compensation: a.offset_compensation,
    };
    let zones = match &site {
        Some(s) if !a.no_zone_terms => s.zones.clone(),
        _ => Vec::new(),
    };
    let layout =
        TermLayout::new(terms, &masks, &zones, cfg.width, cfg.height).with_context(|| {
            format!(
                "{} on the {}×{} model grid (--no-zone-terms drops the zones)",
                a.site.as_deref().unwrap_or(Path::new("")).display(),
                cfg.width,
                cfg.height
            )
        })?;
    let clips = score_footage(&a.source, &bundle, a, &layout)?;
    let regimes = match RegimeSpec::parse_cli(&a.regimes) {
        Ok(r) => r,
        Err(RegimeError::SplitNeeded) => {
            let temps: Vec<f64> = clips.iter().flatten().filter_map(|f| f.scene_c).collect();
            let split = RegimeSpec::fit_temperature_split(&temps).with_context(|| {
                format!(
                    "--regimes temperature: {} has no scene temperatures (the camera must be radiometric)",
                    a.source.display()
                )
            })?;
            RegimeSpec::Temperature { split_c: split }
        }
        Err(e) => bail!("--regimes: {e}"),
    };
    let alpha = a.alpha.unwrap_or(match cfg.mode {
        Mode::Prediction => 0.6,
        Mode::Reconstruction => 0.7,
    });
    let cal = Calibration::fit(
        &clips,
        &FitSettings {
            source: a.source.display().to_string(),
            backend: a.backend.to_string(),
            alerts_per_day: a.alerts_per_day,
            fps: a.fps,
            alpha,
            smoothing: a.smoothing,
            terms,
            masks,
            zones,
            regimes,
        },
    )
    .with_context(|| format!("calibrating on {}", a.source.display()))?;
    bundle.manifest_mut().calibration = Some(cal.to_table());
    bundle
        .save_manifest()
        .with_context(|| format!("writing {}", bundle.manifest_path().display()))?;
    let n: usize = clips.iter().map(Vec::len).sum();
    println!(
        "calibrated {} on {} normal frames ({:.1} h at {} fps) from {} clips of {}",
        bundle.manifest().name,
        n,
        n as f64 / a.fps / 3600.0,
        a.fps,
        clips.len(),
        a.source.display()
    );
    println!("  {:<26} {}", "backend", a.backend);
    println!("  {:<26} {}", "prediction-error term", terms.describe());
    if !cal.masks.is_empty() {
        println!("  {:<26} {} polygons", "masks", cal.masks.len());
    }
    for (k, z) in cal.zones.iter().enumerate() {
        let stats: Vec<String> = cal
            .fits
            .iter()
            .map(|f| {
                format!(
                    "{} {:.2} ± {:.2} dB",
                    f.regime, f.zones[k].median, f.zones[k].sigma
                )
            })
            .collect();
        println!(
            "  {:<26} sensitivity {}, normal PSNR {}",
            format!("zone {}", z.name),
            z.sensitivity,
            stats.join(", ")
        );
    }
    println!("  {:<26} {}", "regimes", cal.regimes);
    println!(
        "  {:<8} {:>7} {:>10} {:>9} {:>11} {:>9} {:>5} {:>10}  90 % interval (method)",
        "regime", "frames", "PSNR med", "PSNR σ", "dist med", "threshold", "θ", "alerts/day",
    );
    for f in &cal.fits {
        println!(
            "  {:<8} {:>7} {:>10.3} {:>9.3} {:>11.3e} {:>9.3} {:>5.2} {:>10.2}  {:.2}–{:.2} ({})",
            f.regime,
            f.threshold.frames,
            f.score.psnr.median,
            f.score.psnr.sigma,
            f.score.distance.median,
            f.threshold.threshold,
            f.threshold.extremal_index,
            f.threshold.expected_per_day,
            f.threshold.interval_per_day[0],
            f.threshold.interval_per_day[1],
            match f.threshold.method {
                TailMethod::Empirical => "empirical quantile",
                TailMethod::Gpd => "generalized Pareto tail",
            }
        );
    }
    println!(
        "  score α {alpha}, smoothing {}; budget {} alerts/day per regime (an alert is a run of",
        a.smoothing, a.alerts_per_day
    );
    println!("  exceeding frames; θ: runs per exceeding frame on this footage)");
    // A budget far beyond the footage is an extrapolation of the fitted tail, however good.
    let per_regime_frames = cal
        .fits
        .iter()
        .map(|f| f.threshold.frames)
        .min()
        .unwrap_or(0);
    let frames_needed = 10.0 * 86_400.0 * a.fps / a.alerts_per_day;
    if (per_regime_frames as f64) < frames_needed / 100.0 {
        println!(
            "  warning: measuring {} alerts/day takes about {:.0}× the {} frames per regime given; the threshold extrapolates a fitted tail — calibrate on about {:.0} h of normal footage per regime",
            a.alerts_per_day,
            frames_needed / per_regime_frames.max(1) as f64,
            per_regime_frames,
            frames_needed / a.fps / 3600.0
        );
    }
    println!(
        "wrote [calibration] into {}",
        bundle.manifest_path().display()
    );
    Ok(())
}
