//! `edge-cli eval`: score labelled clips with a bundle and measure detection — micro/macro AUC,
//! average precision, event recall and false alarms per hour at the calibrated threshold, a
//! per-anomaly-type breakdown — into `report.json`, `scores.csv`, a ROC plot and a score
//! timeline per clip.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::{open_scorer, Backend, FrameStack};
use crate::export::bundle::Bundle;
use crate::frame::Units;
use crate::model::config::Mode;
use crate::report::plots::{roc_png, timeline_png, RocCurve, Timeline};
use crate::score::calibration::{Calibration, RegimeDrift, RegimeScorer};
use crate::score::drift::DriftConfig;
use crate::score::evaluate::{
    causal_scores, evaluate, label_runs, paper_scores, AlarmSettings, LabelledEvent, Protocol,
    ProtocolReport, ScoredClip,
};
use crate::score::events::EventConfig;
use crate::score::footage::{score_terms, TermLayout};
use crate::source::{open_source, replay_files, tre, FrameSource, OpenOptions};

/// Which protocols to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolChoice {
    /// The paper's per-clip min–max (offline).
    Paper,
    /// The calibrated causal score (what a board runs); needs `edge-cli calibrate` first.
    Causal,
    /// Both (causal only when the bundle is calibrated).
    Both,
}

/// Arguments of `edge-cli eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Model bundle folder.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Labelled footage: a Thermal Rare Event dataset (its `test/` clips; `manifest.json` adds
    /// anomaly types), a folder of labelled `.cptv`/`.npy` clips, or one labelled clip.
    #[arg(long)]
    pub data: PathBuf,
    /// Score normalisation to report.
    #[arg(long, value_enum, default_value = "both")]
    pub protocol: ProtocolChoice,
    /// Backend that scores the footage.
    #[arg(long, default_value = "tract-f32")]
    pub backend: Backend,
    /// Worker threads for tract.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Report folder (created): report.json, scores.csv, roc.png, timelines/.
    #[arg(long)]
    pub out: PathBuf,
    /// Frames an alarm must last before it is raised.
    #[arg(long, default_value_t = 1)]
    pub min_frames: usize,
    /// Exit threshold below the alarm threshold (hysteresis), in score units.
    #[arg(long, default_value_t = 0.0)]
    pub exit_margin: f64,
    /// Frames after an alarm in which no new alarm starts.
    #[arg(long, default_value_t = 0)]
    pub cooldown: usize,
    /// Write no plots (report.json and scores.csv only).
    #[arg(long)]
    pub no_plots: bool,
    /// Evaluate at most this many clips (quick checks).
    #[arg(long)]
    pub max_clips: Option<usize>,
}

/// A clip to score: how to open it and its typed anomalies, if a manifest gives them.
struct ClipJob {
    name: String,
    open: Box<dyn Fn() -> anyhow::Result<Box<dyn FrameSource>>>,
    typed: Option<Vec<LabelledEvent>>,
}

/// Typed anomalies per clip folder from a simulator manifest (`manifest.json`), if present.
fn manifest_events(root: &Path) -> anyhow::Result<BTreeMap<String, Vec<LabelledEvent>>> {
    let path = root.join("manifest.json");
    let mut out = BTreeMap::new();
    if !path.is_file() {
        return Ok(out);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let Some(clips) = v.get("clips").and_then(|c| c.as_array()) else {
        return Ok(out);
    };
    for (i, c) in clips.iter().enumerate() {
        let field = |k: &str| {
            c.get(k)
                .with_context(|| format!("{}: clips[{i}] has no `{k}`", path.display()))
        };
        let name = field("path")?
            .as_str()
            .with_context(|| format!("{}: clips[{i}].path is not a string", path.display()))?
            .to_string();
        let mut evs = Vec::new();
        if let Some(list) = c.get("events").and_then(|e| e.as_array()) {
            for (j, e) in list.iter().enumerate() {
                let num = |k: &str| {
                    e.get(k).and_then(|x| x.as_u64()).with_context(|| {
                        format!(
                            "{}: clips[{i}].events[{j}].{k} is missing or not a frame index",
                            path.display()
                        )
                    })
                };
                evs.push(LabelledEvent {
                    kind: e.get("type").and_then(|t| t.as_str()).map(str::to_string),
                    first: num("first_frame")?,
                    last: num("last_frame")?,
                });
            }
        }
        out.insert(name, evs);
    }
    Ok(out)
}

/// The labelled clips `path` names.
fn clip_jobs(path: &Path) -> anyhow::Result<Vec<ClipJob>> {
    let mut jobs = Vec::new();
    if tre::looks_like_tre(path) {
        let ds = tre::open_dataset(path)?;
        // Without test clips, the (all-normal) training clips: false alarms on normal footage.
        let clips = if !ds.test.is_empty() {
            ds.test
        } else if !ds.train.is_empty() {
            log::info!(
                "{}: no test/ clips; evaluating the normal train/ clips (false alarms only)",
                path.display()
            );
            ds.train
        } else {
            bail!("{}: no clips to evaluate", path.display());
        };
        let typed = manifest_events(&ds.root)?;
        for c in clips {
            let key = format!("{}/{}/{}", c.split.dir_name(), c.date, c.name);
            let events = typed.get(&key).cloned();
            let name = c.id();
            jobs.push(ClipJob {
                name,
                typed: events,
                open: Box::new(
                    move || Ok(Box::new(c.open(Units::Counts)?) as Box<dyn FrameSource>),
                ),
            });
        }
    } else {
        let files = replay_files(path)?.unwrap_or_else(|| vec![path.to_path_buf()]);
        if files.is_empty() {
            bail!("{}: no .cptv or .npy clips found", path.display());
        }
        for f in files {
            let name = f.file_name().map_or_else(
                || f.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            jobs.push(ClipJob {
                name,
                typed: None,
                open: Box::new(move || Ok(open_source(&f, &OpenOptions::default())?)),
            });
        }
    }
    Ok(jobs)
}

/// Scores every clip in order with one scorer (the memory carries over between clips, as in
/// MNAD's evaluation; the frame stack starts afresh per clip).
fn score_clips(
    bundle: &Bundle,
    a: &EvalArgs,
    jobs: Vec<ClipJob>,
    layout: &TermLayout,
) -> anyhow::Result<(Vec<ScoredClip>, usize)> {
    let mut scorer = open_scorer(bundle, a.backend, a.threads)?;
    let mut stack = FrameStack::for_bundle(bundle)?;
    let pb = ProgressBar::new(jobs.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} clips ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message("scoring");
    let mut clips = Vec::new();
    let mut unlabelled = 0;
    for job in jobs {
        let mut src = (job.open)().with_context(|| format!("opening {}", job.name))?;
        if src.labels().is_none() {
            log::warn!("{}: no labels; skipped", job.name);
            unlabelled += 1;
            pb.inc(1);
            continue;
        }
        let frames = score_terms(scorer.as_mut(), &mut stack, src.as_mut(), layout)
            .with_context(|| format!("scoring {}", job.name))?;
        let anomalies = match job.typed {
            Some(mut t) => {
                // Anomalies wholly inside the unscored first frames cannot be detected.
                let first = frames.first().map_or(u64::MAX, |f| f.seq);
                t.retain(|e| e.last >= first);
                t
            }
            None => label_runs(&frames),
        };
        clips.push(ScoredClip {
            name: job.name,
            frames,
            anomalies,
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok((clips, unlabelled))
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.4}"))
}

/// File-system-safe version of a clip name.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Runs `edge-cli eval`.
pub fn run(a: &EvalArgs) -> anyhow::Result<()> {
    let bundle = Bundle::open(&a.bundle).context("opening the bundle")?;
    let calibration = bundle
        .manifest()
        .calibration
        .as_ref()
        .map(Calibration::from_table)
        .transpose()
        .with_context(|| format!("reading {}", bundle.manifest_path().display()))?;
    let want_causal = matches!(a.protocol, ProtocolChoice::Causal | ProtocolChoice::Both);
    if a.protocol == ProtocolChoice::Causal && calibration.is_none() {
        bail!(
            "the causal protocol needs a calibrated bundle: run `edge-cli calibrate --bundle {} --source <normal footage>` first, or use --protocol paper",
            a.bundle.display()
        );
    }
    let mut jobs = clip_jobs(&a.data)?;
    if let Some(m) = a.max_clips {
        jobs.truncate(m);
    }
    let cfg = bundle.config().clone();
    // The causal protocol takes the terms as the calibration did: pooled, masked, and each
    // calibrated zone on its own, as on the board.
    let layout = match &calibration {
        Some(c) => TermLayout::for_calibration(c, cfg.width, cfg.height)
            .with_context(|| format!("[calibration] of {}", bundle.manifest_path().display()))?,
        None => TermLayout::default(),
    };
    let (clips, unlabelled) = score_clips(&bundle, a, jobs, &layout)?;
    if clips.is_empty() {
        bail!("{}: none of the clips has labels", a.data.display());
    }
    let alpha = match cfg.mode {
        Mode::Prediction => 0.6,
        Mode::Reconstruction => 0.7,
    };
    // A prediction model keeps erring while an anomaly is still in its input frames.
    let slack = match cfg.mode {
        Mode::Prediction => cfg.t_length.saturating_sub(1) as u64,
        Mode::Reconstruction => 0,
    };

    let mut reports: Vec<(ProtocolReport, Vec<Vec<f64>>)> = Vec::new();
    if matches!(a.protocol, ProtocolChoice::Paper | ProtocolChoice::Both) {
        let scores: Vec<Vec<f64>> = clips
            .iter()
            .map(|c| paper_scores(&c.frames, alpha))
            .collect();
        reports.push((evaluate(&clips, &scores, Protocol::Paper, None)?, scores));
    }
    if let (true, Some(cal)) = (want_causal, &calibration) {
        let scores = clips
            .iter()
            .map(|c| causal_scores(&c.frames, cal))
            .collect::<Result<Vec<_>, _>>()
            .context("scoring with the calibration")?;
        let enter = RegimeScorer::new(cal).threshold();
        let settings = AlarmSettings {
            events: EventConfig {
                enter,
                exit: enter - a.exit_margin,
                min_frames: a.min_frames,
                cooldown_frames: a.cooldown,
                zone: None,
            },
            fps: cal.fps,
            slack_frames: slack,
        };
        reports.push((
            evaluate(&clips, &scores, Protocol::Causal, Some(&settings))?,
            scores,
        ));
    }

    // Drift: does the evaluated footage's normal part look like the calibration footage?
    let drift = match &calibration {
        Some(cal) => {
            let mut d = RegimeDrift::new(cal, &DriftConfig::default())
                .context("setting up the drift monitor")?;
            for c in &clips {
                d.reset();
                for f in &c.frames {
                    d.push(f.t_us, f.scene_c, f.psnr, f.distance, f.anomalous)?;
                }
            }
            d.statuses()
        }
        None => Vec::new(),
    };

    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    // scores.csv: one row per scored frame, every protocol's score.
    let mut csv = String::from("clip,frame,t_us,label,psnr,feature_distance");
    for (r, _) in &reports {
        let _ = write!(csv, ",{}", r.protocol);
    }
    csv.push('\n');
    for (ci, c) in clips.iter().enumerate() {
        for (fi, f) in c.frames.iter().enumerate() {
            let _ = write!(
                csv,
                "{},{},{},{},{},{}",
                c.name,
                f.seq,
                f.t_us,
                u8::from(f.anomalous),
                f.psnr,
                f.distance
            );
            for (_, s) in &reports {
                let _ = write!(csv, ",{}", s[ci][fi]);
            }
            csv.push('\n');
        }
    }
    let csv_path = a.out.join("scores.csv");
    std::fs::write(&csv_path, csv).with_context(|| format!("writing {}", csv_path.display()))?;

    let report = serde_json::json!({
        "bundle": a.bundle.display().to_string(),
        "model": bundle.manifest().name,
        "backend": a.backend.to_string(),
        "data": a.data.display().to_string(),
        "clips": clips.len(),
        "clips_without_labels": unlabelled,
        "frames": clips.iter().map(|c| c.frames.len()).sum::<usize>(),
        "skipped_frames_per_clip": match cfg.mode { Mode::Prediction => cfg.t_length - 1, Mode::Reconstruction => 0 },
        "calibration": calibration.as_ref().map(|c| serde_json::json!({
            "source": c.source, "alerts_per_day": c.alerts_per_day, "fps": c.fps,
            "terms": c.terms.describe(), "masks": c.masks.len(), "regimes": c.regimes.to_string(),
            "zones": c.zones.iter().map(|z| serde_json::json!({"name": z.name, "sensitivity": z.sensitivity})).collect::<Vec<_>>(),
            "fits": c.fits,
        })),
        "drift": drift.iter().map(|(r, s)| serde_json::json!({"regime": r, "status": s})).collect::<Vec<_>>(),
        "protocols": reports.iter().map(|(r, _)| r).collect::<Vec<_>>(),
    });
    let json_path = a.out.join("report.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;

    if !a.no_plots {
        let curves: Vec<RocCurve<'_>> = reports
            .iter()
            .map(|(r, _)| RocCurve {
                label: format!(
                    "{}, micro AUC {}",
                    r.protocol,
                    fmt_opt(r.detection.micro_auc)
                ),
                points: &r.roc,
            })
            .collect();
        roc_png(
            &a.out.join("roc.png"),
            &format!("{} on {}", bundle.manifest().name, a.data.display()),
            &curves,
        )?;
        let dir = a.out.join("timelines");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // The board's protocol when there is one, else the paper's.
        let (r, scores) = reports.last().expect("at least one protocol");
        for (ci, c) in clips.iter().enumerate() {
            let pts: Vec<(u64, f64)> = c
                .frames
                .iter()
                .map(|f| f.seq)
                .zip(scores[ci].iter().copied())
                .collect();
            let labelled: Vec<(u64, u64)> = label_runs(&c.frames)
                .iter()
                .map(|e| (e.first, e.last))
                .collect();
            let alarms: Vec<(u64, u64)> = r.clips[ci]
                .alarms
                .iter()
                .flatten()
                .map(|x| (x.first, x.last))
                .collect();
            timeline_png(
                &dir.join(format!("{}.png", file_stem(&c.name))),
                &Timeline {
                    title: format!("{} — {} score", c.name, r.protocol),
                    scores: &pts,
                    labelled: &labelled,
                    alarms: &alarms,
                    threshold: r.events.as_ref().map(|e| e.settings.events.enter),
                    y_desc: match (r.protocol, calibration.as_ref().map_or(1, |c| c.fits.len())) {
                        (Protocol::Paper, _) => "anomaly score (per-clip min–max)".into(),
                        (Protocol::Causal, 1) => "anomaly score (robust σ)".into(),
                        (Protocol::Causal, _) => "score over the regime's threshold".into(),
                    },
                },
            )?;
        }
    }

    // Summary.
    let frames: usize = clips.iter().map(|c| c.frames.len()).sum();
    let anomalous: usize = clips
        .iter()
        .map(|c| c.frames.iter().filter(|f| f.anomalous).count())
        .sum();
    println!(
        "evaluated {} on {} clips of {} ({} frames scored, {} anomalous; backend {})",
        bundle.manifest().name,
        clips.len(),
        a.data.display(),
        frames,
        anomalous,
        a.backend
    );
    if unlabelled > 0 {
        println!("  {unlabelled} clips without labels were skipped");
    }
    if want_causal && calibration.is_none() {
        println!(
            "  causal protocol skipped: the bundle is not calibrated (run edge-cli calibrate)"
        );
    }
    println!(
        "  {:<8} {:>9} {:>9} {:>8} {:>9} {:>8} {:>12}",
        "protocol", "micro AUC", "macro AUC", "AP", "recall", "alarms", "false/hour"
    );
    for (r, _) in &reports {
        let d = &r.detection;
        let (recall, alarms, fph) = match &r.events {
            Some(e) => (
                format!("{}/{}", e.detected, e.labelled),
                e.alarms.to_string(),
                format!("{:.2}", e.false_alarms_per_hour),
            ),
            None => ("–".into(), "–".into(), "–".into()),
        };
        println!(
            "  {:<8} {:>9} {:>9} {:>8} {:>9} {:>8} {:>12}",
            r.protocol.to_string(),
            fmt_opt(d.micro_auc),
            fmt_opt(d.macro_auc),
            fmt_opt(d.average_precision),
            recall,
            alarms,
            fph
        );
        if d.macro_skipped > 0 {
            println!(
                "  {:<8} macro AUC skipped {} single-class clips",
                "", d.macro_skipped
            );
        }
    }
    if let Some((r, _)) = reports.last() {
        if !r.by_type.is_empty() {
            println!("  per anomaly type ({}):", r.protocol);
            for (k, t) in &r.by_type {
                println!(
                    "    {:<16} {:>2} events, {:>4} frames, AUC {}{}",
                    k,
                    t.events,
                    t.frames,
                    fmt_opt(t.auc),
                    t.detected
                        .map_or(String::new(), |d| format!(", detected {d}/{}", t.events))
                );
            }
        }
    }
    for (r, s) in &drift {
        println!(
            "  drift ({r}): {} after {} normal frames — {}",
            s.state, s.frames, s.reason
        );
    }
    println!("wrote {}", a.out.display());
    Ok(())
}
