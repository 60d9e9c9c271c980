//! `edge-cli export`: turn a checkpoint into a model bundle — f32 and int8 ONNX models, the
//! int8 calibration and the parity report.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::export::export_f32;
use crate::export::parity::{self, labelled_windows, normal_windows, Window};
use crate::export::quant::{self, CalibOptions, SiteRange};
use crate::model::data::FrameSet;
use crate::model::train::{latest_checkpoint, load_model};
use crate::source::OpenOptions;

/// File name of the f32 model in the output folder.
pub const MODEL_FILE: &str = "model.onnx";
/// File name of the int8 model in the output folder.
pub const MODEL_INT8_FILE: &str = "model.int8.onnx";

/// Arguments of `edge-cli export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Checkpoint folder, or a run folder whose `latest` file names one.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Normal footage to calibrate the int8 activation ranges on (a dataset, a folder of
    /// replay files or one source); its held-out part (and a dataset's labelled `test/` clips)
    /// feed the parity report. Without it only the f32 model is written.
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Output folder (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    /// Frame windows used for calibration.
    #[arg(long, default_value_t = 48)]
    pub calib_windows: usize,
    /// Use one activation-range method for every tensor (default: per tensor, the one with the
    /// smallest quantization error).
    #[arg(long, value_enum)]
    pub calib_method: Option<quant::RangeMethod>,
    /// Calibration windows on which each tensor's candidate ranges are compared by the int8
    /// model's output error (0: choose by each tensor's own quantization error).
    #[arg(long, default_value_t = 6)]
    pub refine_windows: usize,
    /// Frame windows used for the parity report (normal and, with a dataset, labelled).
    #[arg(long, default_value_t = 64)]
    pub parity_windows: usize,
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Exports the checkpoint and reports what was written.
pub fn run(a: &ExportArgs) -> anyhow::Result<()> {
    let dir = latest_checkpoint(&a.checkpoint)
        .with_context(|| format!("finding the checkpoint in {}", a.checkpoint.display()))?;
    let (store, net) = load_model(&dir, &candle_core::Device::Cpu)
        .with_context(|| format!("loading {}", dir.display()))?;
    let cfg = net.config().clone();
    let f32_bytes =
        export_f32(&net, &store).with_context(|| format!("exporting {}", dir.display()))?;
    fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let path = a.out.join(MODEL_FILE);
    fs::write(&path, &f32_bytes).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "wrote {} ({:.1} MB, f32) from {}",
        path.display(),
        f32_bytes.len() as f64 / 1e6,
        dir.display()
    );
    let Some(calib) = &a.calib else {
        log::warn!("no --calib footage: the int8 model and the parity report are not written");
        return Ok(());
    };
    if a.calib_windows == 0 {
        bail!("--calib-windows must be at least 1");
    }
    let set = FrameSet::load(calib, &cfg, &OpenOptions::default())
        .with_context(|| format!("loading calibration footage {}", calib.display()))?;
    // Calibrate on one part of the normal footage, check parity on the rest.
    let (cal_set, held) = set.split_holdout(0.25, cfg.t_length);
    let windows = quant::spread_windows(&cal_set, cfg.t_length, a.calib_windows);
    let pb = bar(windows.len(), "calibrating");
    let mut cal = quant::calibrate(
        &net,
        &store,
        &cal_set,
        &windows,
        CalibOptions {
            windows: a.calib_windows,
            method: a.calib_method,
            ..Default::default()
        },
        |i, _| pb.set_position(i as u64),
    )
    .context("calibrating activation ranges")?;
    pb.finish_and_clear();
    if a.calib_method.is_none() && a.refine_windows > 0 {
        let step = (windows.len() / a.refine_windows).max(1);
        let inputs: Vec<Vec<f32>> = windows
            .iter()
            .step_by(step)
            .take(a.refine_windows)
            .map(|&w| quant::window_input(&cal_set, &cfg, w))
            .collect();
        let pb = bar(cal.len(), "ranges");
        let err = quant::refine_by_output(&net, &store, &mut cal, &inputs, |i, n| {
            pb.set_length(n as u64);
            pb.set_position(i as u64)
        })
        .context("choosing activation ranges by the int8 output error")?;
        pb.finish_and_clear();
        log::info!("int8 output error after choosing ranges: {err:.3e} (MSE of frame + queries)");
    }
    let ranges: Vec<SiteRange> = quant::chosen_ranges(&cal);
    for r in &ranges {
        log::debug!(
            "{}: {} [{:.4}, {:.4}] mse {:.3e}",
            r.name,
            r.method.name(),
            r.lo,
            r.hi,
            r.mse
        );
    }
    let int8_bytes = quant::export_int8(&net, &store, &ranges).context("writing the int8 model")?;
    let path = a.out.join(MODEL_INT8_FILE);
    fs::write(&path, &int8_bytes).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "wrote {} ({:.1} MB, int8, {} activation ranges from {} windows)",
        path.display(),
        int8_bytes.len() as f64 / 1e6,
        ranges.len(),
        windows.len()
    );

    let mut pw: Vec<Window> = normal_windows(&held, &cfg, a.parity_windows);
    if let Some(l) = labelled_windows(calib, &cfg, a.parity_windows)? {
        pw.extend(l);
    }
    let pb = bar(pw.len(), "parity");
    let p = parity::compute(&net, &store, &f32_bytes, &int8_bytes, &pw, |i, _| {
        pb.set_position(i as u64)
    })
    .context("computing the parity report")?;
    pb.finish_and_clear();
    println!(
        "parity on {} frames: candle vs tract f32 max |diff| {:.2e}; int8 vs f32: max |diff| {:.4}, PSNR pearson {:.4}, score pearson {:.4}, AUC f32 {} int8 {}",
        p.frames,
        p.f32_max_abs_diff,
        p.int8_max_abs_diff,
        p.psnr_pearson,
        p.score_pearson,
        p.f32_auc.map_or("n/a".into(), |v| format!("{v:.4}")),
        p.int8_auc.map_or("n/a".into(), |v| format!("{v:.4}")),
    );
    Ok(())
}
