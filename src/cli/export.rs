//! `edge-cli export`: turn a checkpoint into a model bundle — f32 and int8 ONNX models, the
//! int8 calibration and the parity report.

use std::path::PathBuf;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::export::bundle::{self, Bundle, Manifest, ParityReport, QuantReport, TensorRange};
use crate::export::export_f32;
use crate::export::parity::{self, labelled_windows, normal_windows, Window};
use crate::export::quant::{self, CalibOptions, SiteRange};
use crate::model::data::FrameSet;
use crate::model::qat::QuantRanges;
use crate::model::train::{latest_checkpoint, load_model};
use crate::source::OpenOptions;

/// Largest |tract f32 − candle f32| on the predicted frame a bundle may ship with.
pub const F32_BOUND: f32 = 1e-4;

/// Arguments of `edge-cli export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Checkpoint folder, or a run folder whose `latest` file names one.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Normal footage to calibrate the int8 activation ranges on (a dataset, a folder of
    /// replay files or one source); its held-out quarter (and a dataset's labelled `test/`
    /// clips) feed the parity report.
    #[arg(long)]
    pub calib: PathBuf,
    /// Bundle folder to write (created if needed), e.g. `models/harbor-edge-s`.
    #[arg(long)]
    pub out: PathBuf,
    /// Model name in bundle.toml (default: the output folder's name).
    #[arg(long)]
    pub name: Option<String>,
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
    let name = match &a.name {
        Some(n) => n.clone(),
        None => a
            .out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into()),
    };
    let calib = &a.calib;
    if a.calib_windows == 0 {
        bail!("--calib-windows must be at least 1");
    }
    let set = FrameSet::load(calib, &cfg, &OpenOptions::default())
        .with_context(|| format!("loading calibration footage {}", calib.display()))?;
    // Calibrate on one part of the normal footage, check parity on the rest.
    let (cal_set, held) = set.split_holdout(0.25, cfg.t_length);
    let windows = quant::spread_windows(&cal_set, cfg.t_length, a.calib_windows);
    let (ranges, calib_frames): (Vec<SiteRange>, usize) = match QuantRanges::load(&dir)
        .with_context(|| format!("reading the QAT ranges of {}", dir.display()))?
    {
        Some(q) => {
            if q.scheme != quant::SCHEME {
                bail!(
                    "{}: quant.json has scheme {}, this exporter writes {}",
                    dir.display(),
                    q.scheme,
                    quant::SCHEME
                );
            }
            println!(
                "quantization-aware checkpoint: activation ranges from {}/quant.json",
                dir.display()
            );
            let ranges = quant::qat_ranges(&net, &store, &q.ranges)
                .with_context(|| format!("{}/quant.json", dir.display()))?;
            (ranges, 0)
        }
        None => {
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
                log::info!(
                    "int8 output error after choosing ranges: {err:.3e} (MSE of frame + queries)"
                );
            }
            (quant::chosen_ranges(&cal), windows.len())
        }
    };
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
    let f32_bytes =
        export_f32(&net, &store).with_context(|| format!("exporting {}", dir.display()))?;

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
    if p.f32_max_abs_diff > F32_BOUND {
        bail!(
            "the f32 ONNX model differs from candle by {:.2e} (> {F32_BOUND:e}) on the predicted frame: not writing the bundle",
            p.f32_max_abs_diff
        );
    }
    let mut manifest = Manifest::new(&name, &cfg);
    manifest.quantization = Some(QuantReport {
        scheme: quant::SCHEME.into(),
        source: calib.display().to_string(),
        frames: calib_frames,
        tensors: ranges
            .iter()
            .map(|r| TensorRange {
                name: r.name.clone(),
                method: r.method.name().into(),
                lo: r.lo,
                hi: r.hi,
                mse: r.mse,
            })
            .collect(),
    });
    manifest.parity = Some(ParityReport {
        source: calib.display().to_string(),
        frames: p.frames,
        f32_max_abs_diff: p.f32_max_abs_diff,
        f32_bound: F32_BOUND,
        int8_max_abs_diff: p.int8_max_abs_diff,
        psnr_pearson: p.psnr_pearson,
        score_pearson: p.score_pearson,
        f32_auc: p.f32_auc,
        int8_auc: p.int8_auc,
        auc_diff: p.f32_auc.zip(p.int8_auc).map(|(f, q)| q - f),
    });
    let mut files =
        bundle::model_files(&net, &store).context("serializing the f16 weights and memory")?;
    files.retain(|(n, _)| *n != bundle::MODEL_F32_FILE);
    files.push((bundle::MODEL_F32_FILE, f32_bytes));
    files.push((bundle::MODEL_INT8_FILE, int8_bytes));
    bundle::write_bundle(&a.out, &mut manifest, &files)
        .with_context(|| format!("writing the bundle {}", a.out.display()))?;
    // Self-check: what was written opens with verified hashes.
    Bundle::open(&a.out).with_context(|| format!("re-opening {}", a.out.display()))?;
    println!(
        "wrote bundle {} ({name}) from {}:",
        a.out.display(),
        dir.display()
    );
    for (f, e) in &manifest.files {
        println!(
            "  {f:24} {:>9.1} kB  sha256 {}",
            e.bytes as f64 / 1e3,
            &e.sha256[..16]
        );
    }
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
    if p.score_pearson < 0.99 {
        log::warn!(
            "int8 anomaly scores correlate with f32 at only {:.4} (< 0.99): consider quantization-aware training (edge-cli train --qat --from {})",
            p.score_pearson,
            dir.display()
        );
    }
    Ok(())
}
