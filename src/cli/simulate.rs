//! `edge-cli simulate`: writes a simulated harbor dataset (Thermal Rare Event layout).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::frame::Units;
use crate::source::simulator::{write_dataset, DatasetConfig};

/// Progress lines start only when writing takes longer than this.
const QUIET_FOR: Duration = Duration::from_secs(2);

/// Arguments of `edge-cli simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Output directory (created if missing; must be empty unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of normal training clips.
    #[arg(long)]
    pub train_clips: usize,
    /// Number of test clips (with labelled anomalies; every sixth is normal).
    #[arg(long)]
    pub test_clips: usize,
    /// Dataset seed: the same seed writes the same bytes.
    #[arg(long)]
    pub seed: u64,
    /// Frames per clip (1 frame per second of scene time).
    #[arg(long, default_value_t = 120)]
    pub frames: usize,
    /// Pixel output: gray8 (8-bit JPEG through the camera's locked window) or centikelvin (16-bit PNG).
    #[arg(long, default_value = "gray8")]
    pub units: Units,
    /// Frame width in pixels.
    #[arg(long, default_value_t = 384)]
    pub width: u32,
    /// Frame height in pixels.
    #[arg(long, default_value_t = 288)]
    pub height: u32,
    /// JPEG quality for gray8 output.
    #[arg(long, default_value_t = 95)]
    pub jpeg_quality: u8,
    /// Replace the dataset (train/, test/, annotations, manifest) in a non-empty directory.
    #[arg(long)]
    pub force: bool,
    /// Worker threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Runs `edge-cli simulate`.
pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let cfg = DatasetConfig {
        out: args.out.clone(),
        train_clips: args.train_clips,
        test_clips: args.test_clips,
        seed: args.seed,
        frames: args.frames,
        width: args.width,
        height: args.height,
        units: args.units,
        jpeg_quality: args.jpeg_quality,
        overwrite: args.force,
        threads: args.threads,
    };
    cfg.validate().context("invalid arguments")?;
    let started = Instant::now();
    let progress = |done: usize, total: usize| {
        if started.elapsed() > QUIET_FOR {
            eprintln!(
                "simulate: {done}/{total} clips written ({:.0} s)",
                started.elapsed().as_secs_f32()
            );
        }
    };
    let summary = write_dataset(&cfg, &progress).context("writing the simulated dataset")?;
    let format = if cfg.units == Units::Gray8 {
        "8-bit JPEG"
    } else {
        "16-bit centikelvin PNG"
    };
    println!(
        "wrote {} clips ({} train, {} test), {} frames of {}×{} {format} in {:.1} s",
        summary.train_clips + summary.test_clips,
        summary.train_clips,
        summary.test_clips,
        summary.frames,
        cfg.width,
        cfg.height,
        started.elapsed().as_secs_f32()
    );
    let kinds: Vec<String> = summary
        .by_type
        .iter()
        .map(|(k, (events, frames))| {
            format!(
                "{k} {frames} ({events} event{})",
                if *events == 1 { "" } else { "s" }
            )
        })
        .collect();
    let pct = 100.0 * summary.anomalous_frames as f32 / summary.frames.max(1) as f32;
    if kinds.is_empty() {
        println!("anomalous frames: 0");
    } else {
        println!(
            "anomalous frames: {} ({pct:.1} %): {}",
            summary.anomalous_frames,
            kinds.join(", ")
        );
    }
    println!(
        "output: {}  (manifest.json, train/, test/, test_annotations_anomalies/)",
        summary.out.display()
    );
    Ok(())
}
