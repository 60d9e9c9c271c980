//! The causal frame score a board runs: PSNR and feature distance each standardised against
//! robust statistics of normal footage (median and MAD, stored with the bundle), mixed with α,
//! optionally smoothed by an exponential moving average — no look-ahead, unlike the paper's
//! per-clip min–max.

use crate::stats::{mad, median};

/// MAD → standard deviation for normally distributed data.
const MAD_TO_SIGMA: f64 = 1.4826;

/// Robust location and scale of one score term on normal footage.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TermStats {
    /// Median on normal footage.
    pub median: f64,
    /// Robust standard deviation: 1.4826 · MAD, floored so that a constant term cannot divide
    /// by zero.
    pub sigma: f64,
}

impl TermStats {
    /// Fits the statistics of `values`; `floor` is the smallest sigma accepted.
    pub fn fit(values: &[f64], floor: f64) -> Option<Self> {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        Some(Self {
            median: median(&finite)?,
            sigma: (MAD_TO_SIGMA * mad(&finite)?).max(floor),
        })
    }

    /// (x − median) / sigma.
    pub fn z(&self, x: f64) -> f64 {
        (x - self.median) / self.sigma
    }
}

/// Why causal statistics could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CausalError {
    /// No finite values for a term.
    #[error("no finite {0} values to fit the normal statistics on")]
    Empty(&'static str),
    /// α outside [0, 1] or a smoothing factor outside [0, 1).
    #[error("{0}")]
    Parameter(String),
}

/// The fitted causal score: statistics, mix and smoothing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CausalModel {
    /// PSNR on normal footage (dB).
    pub psnr: TermStats,
    /// Feature distance on normal footage.
    pub distance: TermStats,
    /// Weight of the PSNR term (0.6 prediction, 0.7 reconstruction).
    pub alpha: f64,
    /// EMA factor λ in s_t = λ·s_{t−1} + (1 − λ)·x_t (0: no smoothing).
    pub smoothing: f64,
}

impl CausalModel {
    /// Fits the statistics on normal footage's per-frame PSNR and feature distance.
    pub fn fit(
        psnr: &[f64],
        distance: &[f64],
        alpha: f64,
        smoothing: f64,
    ) -> Result<Self, CausalError> {
        if !(0.0..=1.0).contains(&alpha) {
            return Err(CausalError::Parameter(format!(
                "alpha {alpha} must lie in [0, 1]"
            )));
        }
        if !(0.0..1.0).contains(&smoothing) {
            return Err(CausalError::Parameter(format!(
                "smoothing {smoothing} must lie in [0, 1)"
            )));
        }
        Ok(Self {
            // 0.01 dB and 1e-9 distance: below what the models resolve.
            psnr: TermStats::fit(psnr, 1e-2).ok_or(CausalError::Empty("PSNR"))?,
            distance: TermStats::fit(distance, 1e-9).ok_or(CausalError::Empty("distance"))?,
            alpha,
            smoothing,
        })
    }

    /// The unsmoothed anomaly score of one frame: α·(−z_PSNR) + (1 − α)·z_distance, in robust
    /// standard deviations above normal (a low PSNR and a large distance are anomalous). A
    /// non-finite PSNR (a perfect prediction) counts as very normal.
    pub fn raw(&self, psnr: f64, distance: f64) -> f64 {
        let zp = if psnr.is_finite() {
            self.psnr.z(psnr)
        } else {
            0.0
        };
        self.alpha * -zp + (1.0 - self.alpha) * self.distance.z(distance)
    }
}

/// Scores a stream of frames with a [`CausalModel`], carrying the smoothing state.
#[derive(Debug, Clone)]
pub struct CausalScorer {
    model: CausalModel,
    state: Option<f64>,
}

impl CausalScorer {
    /// A scorer at the start of a stream.
    pub fn new(model: CausalModel) -> Self {
        Self { model, state: None }
    }

    /// The model.
    pub fn model(&self) -> &CausalModel {
        &self.model
    }

    /// The smoothed score of the next frame (depends on this and earlier frames only).
    pub fn push(&mut self, psnr: f64, distance: f64) -> f64 {
        let x = self.model.raw(psnr, distance);
        let s = match self.state {
            Some(prev) => self.model.smoothing * prev + (1.0 - self.model.smoothing) * x,
            None => x,
        };
        self.state = Some(s);
        s
    }

    /// Forgets the smoothing state (a new clip, or a gap in the stream).
    pub fn reset(&mut self) {
        self.state = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(smoothing: f64) -> CausalModel {
        // PSNR 30, 31, 32, 33, 34: median 32, MAD 1. Distance 1..5 e-3: median 3e-3, MAD 1e-3.
        let psnr = [30.0, 31.0, 32.0, 33.0, 34.0];
        let dist = [1e-3, 2e-3, 3e-3, 4e-3, 5e-3];
        CausalModel::fit(&psnr, &dist, 0.6, smoothing).unwrap()
    }

    #[test]
    fn fits_median_and_mad_and_scores_in_robust_sigmas() {
        let m = model(0.0);
        assert_eq!(m.psnr.median, 32.0);
        assert!((m.psnr.sigma - 1.4826).abs() < 1e-12);
        assert!((m.distance.median - 3e-3).abs() < 1e-15);
        // The normal median scores 0; 1.4826 dB lower PSNR scores α; a distance one sigma
        // higher adds (1 − α).
        assert!(m.raw(32.0, 3e-3).abs() < 1e-12);
        assert!((m.raw(32.0 - 1.4826, 3e-3) - 0.6).abs() < 1e-9);
        assert!((m.raw(32.0, 3e-3 + 1.4826e-3) - 0.4).abs() < 1e-9);
        assert!(m.raw(f64::INFINITY, 3e-3).abs() < 1e-12);
    }

    #[test]
    fn smoothing_is_causal_and_resets() {
        let mut s = CausalScorer::new(model(0.5));
        let a = s.push(32.0 - 1.4826, 3e-3); // raw 0.6
        let b = s.push(32.0, 3e-3); // raw 0 -> 0.5·0.6
        assert!((a - 0.6).abs() < 1e-9 && (b - 0.3).abs() < 1e-9, "{a} {b}");
        // The same prefix gives the same scores whatever follows.
        let mut t = CausalScorer::new(model(0.5));
        assert_eq!(t.push(32.0 - 1.4826, 3e-3), a);
        s.reset();
        assert!(s.push(32.0, 3e-3).abs() < 1e-12);
    }

    #[test]
    fn constant_terms_and_bad_parameters() {
        let m = CausalModel::fit(&[30.0; 4], &[1e-3; 4], 0.6, 0.0).unwrap();
        assert_eq!(m.psnr.sigma, 1e-2);
        assert!(m.raw(29.0, 1e-3).is_finite());
        assert_eq!(
            CausalModel::fit(&[], &[1.0], 0.6, 0.0),
            Err(CausalError::Empty("PSNR"))
        );
        assert!(CausalModel::fit(&[1.0], &[1.0], 1.5, 0.0).is_err());
        assert!(CausalModel::fit(&[1.0], &[1.0], 0.6, 1.0).is_err());
    }
}
