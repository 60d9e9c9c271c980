//! `edge-cli infer`: score every frame of a source with a bundle and print the scores.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::engine::{
    open_scorer, score_source_inspect, Backend, FrameScore, FrameStack, ScoreDump,
};
use crate::export::bundle::Bundle;
use crate::frame::Units;
use crate::source::{open_source, OpenOptions};

/// Arguments of `edge-cli infer`.
#[derive(Debug, clap::Args)]
pub struct InferArgs {
    /// Bundle folder (with bundle.toml).
    #[arg(long)]
    pub bundle: PathBuf,
    /// Source: .cptv, .npy, .npy.xz, .y16, an image or a folder of images.
    #[arg(long)]
    pub source: PathBuf,
    /// Runtime: tract-f32, tract-int8, candle-cpu or candle-cuda.
    #[arg(long, default_value = "tract-f32")]
    pub backend: Backend,
    /// Worker threads for tract.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Stop after this many frames read from the source.
    #[arg(long)]
    pub max_frames: Option<usize>,
    /// Print one JSON object per scored frame.
    #[arg(long)]
    pub json: bool,
    /// Units of 16-bit pixels: centikelvin, counts or gray8.
    #[arg(long)]
    pub units: Option<Units>,
    /// Frame width, for raw Y16 files.
    #[arg(long)]
    pub width: Option<u32>,
    /// Frame height, for raw Y16 files.
    #[arg(long)]
    pub height: Option<u32>,
    /// Write what the scorer received and produced for every scored frame into this folder
    /// (inputs, memory, targets, pred, queries, read_weights as f32 .npy, and dump.json), e.g.
    /// for tools/check_onnx.py. Frames are held in memory until the end: use --max-frames.
    #[arg(long, value_name = "DIR")]
    pub dump: Option<PathBuf>,
}

fn print_line(out: &mut impl Write, s: &FrameScore, json: bool) -> std::io::Result<()> {
    if json {
        let v = serde_json::json!({
            "seq": s.seq,
            "t_us": s.t_us,
            "psnr": s.psnr,
            "feature_distance": s.feature_distance,
            "label": s.label,
        });
        writeln!(out, "{v}")
    } else {
        let label = s.label.map(|l| format!(" label {l}")).unwrap_or_default();
        writeln!(
            out,
            "{:>6} {:>14} µs  psnr {:7.3} dB  distance {:.4e}{label}",
            s.seq, s.t_us, s.psnr, s.feature_distance
        )
    }
}

/// Runs `edge-cli infer`.
pub fn run(a: &InferArgs) -> anyhow::Result<()> {
    let bundle = Bundle::open(&a.bundle).context("opening the bundle")?;
    let opts = OpenOptions {
        units: a.units,
        width: a.width,
        height: a.height,
        fps: None,
    };
    let mut source = open_source(&a.source, &opts)?;
    let mut scorer = open_scorer(&bundle, a.backend, a.threads)?;
    let mut stack = FrameStack::for_bundle(&bundle)?;
    log::info!(
        "scoring {} with {} ({}) on {}",
        a.source.display(),
        bundle.manifest().name,
        bundle.config(),
        a.backend
    );
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_err = None;
    let mut dump = a.dump.as_ref().map(|_| ScoreDump::new(bundle.config()));
    let summary = score_source_inspect(
        scorer.as_mut(),
        &mut stack,
        source.as_mut(),
        a.max_frames,
        |f| dump.as_mut().map_or(Ok(()), |d| d.push(f)),
        |s| {
            if write_err.is_none() {
                write_err = print_line(&mut out, s, a.json).err();
            }
        },
    )
    .with_context(|| format!("scoring {}", a.source.display()))?;
    if let Some(e) = write_err {
        return Err(e).context("writing scores");
    }
    if let (Some(dir), Some(dump)) = (&a.dump, &dump) {
        let model = match a.backend {
            Backend::TractF32 => bundle.model_f32_path(),
            Backend::TractInt8 => bundle.model_int8_path(),
            Backend::CandleCpu | Backend::CandleCuda => bundle.weights_f16_path(),
        };
        let model = model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        dump.write(dir, a.backend, &model)
            .with_context(|| format!("writing the dump into {}", dir.display()))?;
        log::info!("dumped {} frames into {}", dump.len(), dir.display());
    }
    let line = format!(
        "{} frames read, {} scored, {} memory updates, {:.2} ms per frame ({})",
        summary.frames_read,
        summary.frames_scored,
        summary.memory_updates,
        summary.mean_ms,
        a.backend
    );
    if a.json {
        // stdout stays pure JSON lines.
        eprintln!("{line}");
    } else {
        writeln!(out, "{line}").context("writing the summary")?;
    }
    Ok(())
}
