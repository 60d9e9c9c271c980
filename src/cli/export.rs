//! `edge-cli export`: write a checkpoint's network as an f32 ONNX model (`model.onnx`).

use std::fs;
use std::path::PathBuf;

use anyhow::Context;

use crate::export::export_checkpoint_f32;
use crate::model::train::latest_checkpoint;

/// File name of the f32 model in the output folder.
pub const MODEL_FILE: &str = "model.onnx";

/// Arguments of `edge-cli export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Checkpoint folder, or a run folder whose `latest` file names one.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output folder (created if needed); `model.onnx` is written there.
    #[arg(long)]
    pub out: PathBuf,
}

/// Exports the checkpoint and reports what was written.
pub fn run(a: &ExportArgs) -> anyhow::Result<()> {
    let dir = latest_checkpoint(&a.checkpoint)
        .with_context(|| format!("finding the checkpoint in {}", a.checkpoint.display()))?;
    let bytes =
        export_checkpoint_f32(&dir).with_context(|| format!("exporting {}", dir.display()))?;
    fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let path = a.out.join(MODEL_FILE);
    fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "wrote {} ({:.1} MB, f32) from {}",
        path.display(),
        bytes.len() as f64 / 1e6,
        dir.display()
    );
    Ok(())
}
