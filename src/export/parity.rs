//! The bundle's parity report: candle f32 against tract f32 on the predicted frame, and the int8
//! model's anomaly scores against the f32 model's (Pearson correlation, AUC on labelled frames).
//!
//! Scores here are computed the same way for every model — PSNR of the predicted frame and the
//! feature distance to the initial memory (no test-time memory update, so the models see the
//! same memory) — and turned into one anomaly score per frame with the evaluation protocol's
//! α = 0.6 (prediction) / 0.7 (reconstruction) over min–max normalised PSNR and distance.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::quant::{memory_items, run_model as run_tract, tract_bytes as tract_model};
use super::ExportError;
use crate::frame::{Preprocessor, ThermalFrame, Units};
use crate::model::config::Mode;
use crate::model::data::FrameSet;
use crate::model::memory::feature_distance_slices;
use crate::model::{Mnad, ModelConfig, ParamStore};
use crate::source::{label, tre, FrameSource};
use crate::stats::min_max;
pub use crate::stats::{auc, pearson};

/// One scored window: the model's input frames, the frame to predict, and its label if known.
#[derive(Debug, Clone)]
pub struct Window {
    /// Input stack (input frames × H × W), normalised.
    pub input: Vec<f32>,
    /// Target frame (H × W), normalised.
    pub target: Vec<f32>,
    /// Whether the target frame is anomalous, when labelled.
    pub label: Option<bool>,
}

/// Up to `n` evenly spread windows of normal footage (labelled normal).
pub fn normal_windows(set: &FrameSet, cfg: &ModelConfig, n: usize) -> Vec<Window> {
    let plane = set.height * set.width;
    super::quant::spread_windows(set, cfg.t_length, n)
        .into_iter()
        .map(|(ci, s)| {
            let c = &set.clips[ci];
            let (input, target) = split_window(&c.frames, s, cfg, plane);
            Window {
                input,
                target,
                label: Some(false),
            }
        })
        .collect()
}

fn split_window(frames: &[f32], s: usize, cfg: &ModelConfig, plane: usize) -> (Vec<f32>, Vec<f32>) {
    match cfg.mode {
        Mode::Prediction => {
            let t = cfg.t_length;
            (
                frames[s * plane..(s + t - 1) * plane].to_vec(),
                frames[(s + t - 1) * plane..(s + t) * plane].to_vec(),
            )
        }
        Mode::Reconstruction => {
            let f = frames[s * plane..(s + 1) * plane].to_vec();
            (f.clone(), f)
        }
    }
}

/// Up to `n` windows spread over the labelled `test/` clips of a Thermal Rare Event dataset
/// (None when `path` is not one or has no test clips).
pub fn labelled_windows(
    path: &Path,
    cfg: &ModelConfig,
    n: usize,
) -> Result<Option<Vec<Window>>, ExportError> {
    if !tre::looks_like_tre(path) {
        return Ok(None);
    }
    let err = |e: String| ExportError::Unsupported(format!("{}: {e}", path.display()));
    let ds = tre::open_dataset(path).map_err(|e| err(e.to_string()))?;
    if ds.test.is_empty() {
        return Ok(None);
    }
    let mut pre =
        Preprocessor::new(cfg.normalizer, cfg.width, cfg.height).map_err(|e| err(e.to_string()))?;
    let plane = cfg.height * cfg.width;
    // Windows per clip so that the total is about n.
    let per_clip = n.div_ceil(ds.test.len()).max(1);
    let mut out = Vec::new();
    for clip in &ds.test {
        let mut src = clip.open(Units::Counts).map_err(|e| err(e.to_string()))?;
        let labels = src.labels().map(|l| l.to_vec()).unwrap_or_default();
        let mut frame =
            ThermalFrame::zeroed(src.info().width, src.info().height, Default::default());
        let mut frames = Vec::new();
        let mut k = 0;
        while src.next_into(&mut frame).map_err(|e| err(e.to_string()))? {
            frames.resize((k + 1) * plane, 0.0);
            pre.run(&frame, &mut frames[k * plane..])
                .map_err(|e| err(e.to_string()))?;
            k += 1;
        }
        let span = match cfg.mode {
            Mode::Prediction => cfg.t_length,
            Mode::Reconstruction => 1,
        };
        let count = (k + 1).saturating_sub(span);
        for i in 0..per_clip.min(count) {
            let s = i * count / per_clip.min(count);
            let (input, target) = split_window(&frames, s, cfg, plane);
            let label = labels.get(s + span - 1).and_then(|&l| match l {
                label::EVENT => Some(true),
                label::NORMAL => Some(false),
                _ => None,
            });
            out.push(Window {
                input,
                target,
                label,
            });
        }
    }
    Ok(Some(out))
}

/// Per-frame raw scores of one model.
#[derive(Debug, Clone, Default)]
pub struct RawScores {
    /// PSNR (dB) of each predicted frame.
    pub psnr: Vec<f64>,
    /// Feature distance of each frame's queries to their nearest memory items.
    pub distance: Vec<f64>,
}

impl RawScores {
    /// Anomaly scores in [0, 1]: 1 − (α·norm(PSNR) + (1 − α)·(1 − norm(distance))), min–max
    /// normalised over the frames given.
    pub fn anomaly(&self, alpha: f64) -> Vec<f64> {
        let p = min_max(&self.psnr);
        let d = min_max(&self.distance);
        p.iter()
            .zip(&d)
            .map(|(p, d)| 1.0 - (alpha * p + (1.0 - alpha) * (1.0 - d)))
            .collect()
    }
}

/// PSNR of `pred` against `target` (both in [−1, 1]): 10·log10(1 / MSE in [0, 1]).
pub fn psnr(pred: &[f32], target: &[f32]) -> f64 {
    let mse = pred
        .iter()
        .zip(target)
        .map(|(p, t)| (f64::from(p - t) / 2.0).powi(2))
        .sum::<f64>()
        / pred.len().max(1) as f64;
    10.0 * (1.0 / mse.max(1e-10)).log10()
}

/// The parity figures of one export.
#[derive(Debug, Clone, PartialEq)]
pub struct Parity {
    /// Windows compared.
    pub frames: usize,
    /// Max |candle f32 − tract f32| over every predicted pixel.
    pub f32_max_abs_diff: f32,
    /// Max |tract int8 − tract f32| over every predicted pixel.
    pub int8_max_abs_diff: f32,
    /// Pearson correlation of the int8 and f32 PSNRs.
    pub psnr_pearson: f64,
    /// Pearson correlation of the int8 and f32 anomaly scores.
    pub score_pearson: f64,
    /// AUC of the f32 anomaly scores, with labelled frames of both kinds.
    pub f32_auc: Option<f64>,
    /// AUC of the int8 anomaly scores.
    pub int8_auc: Option<f64>,
}

/// Compares candle (the checkpoint's f32 weights), the f32 ONNX model and the int8 ONNX model on
/// `windows`.
pub fn compute(
    net: &Mnad,
    store: &ParamStore,
    f32_onnx: &[u8],
    int8_onnx: &[u8],
    windows: &[Window],
    mut progress: impl FnMut(usize, usize),
) -> Result<Parity, ExportError> {
    let cfg = net.config();
    let memory = memory_items(store)?;
    let d = cfg.memory_dim();
    let f32_model = tract_model(f32_onnx)?;
    let int8_model = tract_model(int8_onnx)?;
    let (mut f32_scores, mut int8_scores) = (RawScores::default(), RawScores::default());
    let (mut f32_diff, mut int8_diff) = (0f32, 0f32);
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let terr = |source| ExportError::Tensor {
        name: "parity input".into(),
        source,
    };
    for (i, w) in windows.iter().enumerate() {
        let (pf, qf) = run_tract(&f32_model, cfg, &w.input, &memory)?;
        let (pq, qq) = run_tract(&int8_model, cfg, &w.input, &memory)?;
        let x = Tensor::from_slice(
            &w.input,
            (1, cfg.input_channels(), cfg.height, cfg.width),
            &Device::Cpu,
        )
        .map_err(terr)?;
        let pc = net
            .forward(&x, false)
            .and_then(|f| f.pred.flatten_all())
            .and_then(|p| p.to_vec1::<f32>())
            .map_err(terr)?;
        f32_diff = f32_diff.max(max_diff(&pc, &pf));
        int8_diff = int8_diff.max(max_diff(&pq, &pf));
        f32_scores.psnr.push(psnr(&pf, &w.target));
        f32_scores
            .distance
            .push(f64::from(feature_distance_slices(&qf, &memory, d)));
        int8_scores.psnr.push(psnr(&pq, &w.target));
        int8_scores
            .distance
            .push(f64::from(feature_distance_slices(&qq, &memory, d)));
        progress(i + 1, windows.len());
    }
    let alpha = match cfg.mode {
        Mode::Prediction => 0.6,
        Mode::Reconstruction => 0.7,
    };
    let (sf, sq) = (f32_scores.anomaly(alpha), int8_scores.anomaly(alpha));
    let labelled: Vec<(usize, bool)> = windows
        .iter()
        .enumerate()
        .filter_map(|(i, w)| w.label.map(|l| (i, l)))
        .collect();
    let labels: Vec<bool> = labelled.iter().map(|&(_, l)| l).collect();
    let pick = |s: &[f64]| -> Vec<f64> { labelled.iter().map(|&(i, _)| s[i]).collect() };
    Ok(Parity {
        frames: windows.len(),
        f32_max_abs_diff: f32_diff,
        int8_max_abs_diff: int8_diff,
        psnr_pearson: pearson(&f32_scores.psnr, &int8_scores.psnr),
        score_pearson: pearson(&sf, &sq),
        f32_auc: auc(&pick(&sf), &labels),
        int8_auc: auc(&pick(&sq), &labels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_psnr_and_feature_distance() {
        let s = RawScores {
            psnr: vec![30.0, 20.0, 25.0],
            distance: vec![0.0, 1.0, 0.5],
        };
        assert_eq!(s.anomaly(0.6), vec![0.0, 1.0, 0.5]);
        assert!((psnr(&[0.0; 4], &[0.2; 4]) - 20.0).abs() < 1e-5);
        // A query equal to an item: distance 0.
        let mem = [1.0, 0.0, 0.0, 1.0];
        assert_eq!(feature_distance_slices(&[1.0, 0.0], &mem, 2), 0.0);
        // (0.6, 0.8) is nearest e2: ((0.6² + 0.2²) / 2 = 0.2.
        assert!((feature_distance_slices(&[0.6, 0.8], &mem, 2) - 0.2).abs() < 1e-6);
    }
}
