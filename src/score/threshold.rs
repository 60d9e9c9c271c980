//! Alert threshold from normal footage only, for a false-alarm budget: the empirical quantile
//! when the data hold enough exceedances, else a peaks-over-threshold fit of a generalized
//! Pareto tail; with a bootstrap interval of the expected alerts per day.

use crate::rng::Rng;

/// Exceedances the data must hold for the empirical quantile to be used.
const MIN_EXCEEDANCES: f64 = 10.0;
/// Fraction of the data forming the tail the generalized Pareto distribution is fitted to.
const TAIL_FRACTION: f64 = 0.1;

/// How the threshold was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TailMethod {
    /// The empirical quantile of the scores.
    Empirical,
    /// A generalized Pareto tail fitted to the top scores (the budget lies beyond the data).
    Gpd,
}

/// A fitted alert threshold.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ThresholdFit {
    /// Score at or above which a frame alerts.
    pub threshold: f64,
    /// How it was found.
    pub method: TailMethod,
    /// Alerts per day the fit expects at the threshold: runs of consecutive exceeding frames
    /// per day (one alert per run), i.e. frame exceedances per day times the extremal index.
    pub expected_per_day: f64,
    /// 90 % bootstrap interval of the expected alerts per day.
    pub interval_per_day: [f64; 2],
    /// Runs per exceeding frame (the extremal index θ ≤ 1) on the calibration footage, measured
    /// at its 95th percentile: scores stay high for a while, so 1/θ frames make one alert.
    #[serde(default = "one")]
    pub extremal_index: f64,
    /// Normal frames the fit used.
    pub frames: usize,
}

fn one() -> f64 {
    1.0
}

/// Why no threshold could be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    /// Too few finite scores.
    #[error("need at least 50 finite normal-frame scores to fit a threshold, got {0}")]
    TooFew(usize),
    /// A budget or rate that is not positive.
    #[error("{0}")]
    Parameter(String),
}

/// Generalized Pareto tail above `u`: P(S > t) = ζ·(1 + ξ(t − u)/σ)^(−1/ξ).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tail {
    u: f64,
    zeta: f64,
    xi: f64,
    sigma: f64,
}

impl Tail {
    /// Probability-weighted-moment fit (Hosking & Wallis 1987) to the top `TAIL_FRACTION` of
    /// `sorted` (ascending).
    fn fit(sorted: &[f64]) -> Option<Self> {
        let n = sorted.len();
        let k = ((n as f64 * TAIL_FRACTION) as usize).max(10).min(n - 1);
        let u = sorted[n - k - 1];
        let y: Vec<f64> = sorted[n - k..].iter().map(|s| s - u).collect();
        let kf = k as f64;
        let a0 = y.iter().sum::<f64>() / kf;
        let a1 = y
            .iter()
            .enumerate()
            .map(|(i, v)| (1.0 - (i as f64 + 1.0 - 0.35) / kf) * v)
            .sum::<f64>()
            / kf;
        let d = a0 - 2.0 * a1;
        if !(a0 > 0.0 && d > 0.0) {
            return None;
        }
        Some(Self {
            u,
            zeta: kf / n as f64,
            xi: 2.0 - a0 / d,
            sigma: 2.0 * a0 * a1 / d,
        })
    }

    fn exceedance(&self, t: f64) -> f64 {
        if t <= self.u {
            return self.zeta;
        }
        let z = (t - self.u) / self.sigma;
        if self.xi.abs() < 1e-6 {
            self.zeta * (-z).exp()
        } else {
            let base = 1.0 + self.xi * z;
            if base <= 0.0 {
                0.0
            } else {
                self.zeta * base.powf(-1.0 / self.xi)
            }
        }
    }

    fn quantile(&self, p: f64) -> f64 {
        let r = p / self.zeta;
        if self.xi.abs() < 1e-6 {
            self.u - self.sigma * r.ln()
        } else {
            self.u + self.sigma / self.xi * (r.powf(-self.xi) - 1.0)
        }
    }
}

fn empirical_quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn exceedance_rate(sorted: &[f64], t: f64, method: TailMethod) -> f64 {
    match method {
        TailMethod::Empirical => {
            let above = sorted.len() - sorted.partition_point(|&s| s < t);
            above as f64 / sorted.len() as f64
        }
        TailMethod::Gpd => Tail::fit(sorted).map_or(0.0, |tail| tail.exceedance(t)),
    }
}

/// Frames at or above `u` in `scores`, and the runs of consecutive such frames they form.
fn runs(scores: &[f64], u: f64) -> (usize, usize) {
    let (mut frames, mut runs, mut inside) = (0, 0, false);
    for &s in scores {
        let above = s >= u;
        if above {
            frames += 1;
            if !inside {
                runs += 1;
            }
        }
        inside = above;
    }
    (frames, runs)
}

/// Frames per bootstrap block: consecutive frames of one clip are not independent (the
/// weather, the light and a passing boat last minutes), so the interval resamples blocks of up
/// to 10 minutes at 1 fps, never single frames.
const BLOCK_FRAMES: usize = 600;

/// Fewest blocks the bootstrap resamples.
const MIN_BLOCKS: usize = 10;

/// Fits the threshold whose expected alerts (runs of exceeding frames) match `alerts_per_day` for footage of
/// `frames_per_day` frames (86 400 at 1 fps), on one stream of normal scores. Needs no
/// anomalous examples. `seed` makes the bootstrap interval repeatable.
pub fn fit_threshold(
    scores: &[f64],
    frames_per_day: f64,
    alerts_per_day: f64,
    seed: u64,
) -> Result<ThresholdFit, ThresholdError> {
    fit_threshold_clips(&[scores], frames_per_day, alerts_per_day, seed)
}

/// [`fit_threshold`] on several clips of normal scores: the threshold from all frames, the 90 %
/// interval from a block bootstrap (each clip cut into blocks of at most 10 minutes at 1 fps;
/// blocks are resampled whole, so a clip whose conditions raise every score counts as one
/// draw, not as many independent frames).
pub fn fit_threshold_clips(
    clips: &[&[f64]],
    frames_per_day: f64,
    alerts_per_day: f64,
    seed: u64,
) -> Result<ThresholdFit, ThresholdError> {
    if !(frames_per_day > 0.0 && alerts_per_day > 0.0 && alerts_per_day < frames_per_day) {
        return Err(ThresholdError::Parameter(format!(
            "the alert budget ({alerts_per_day}/day) must be positive and below the frame rate ({frames_per_day}/day)"
        )));
    }
    // Blocks of up to BLOCK_FRAMES; with fewer than MIN_BLOCKS of them (short footage) shorter
    // blocks, or the bootstrap would only ever redraw the same few.
    let total: usize = clips.iter().map(|c| c.len()).sum();
    let whole: usize = clips.iter().map(|c| c.len().div_ceil(BLOCK_FRAMES)).sum();
    let block = if whole >= MIN_BLOCKS {
        BLOCK_FRAMES
    } else {
        (total / MIN_BLOCKS).clamp(10, BLOCK_FRAMES)
    };
    let blocks: Vec<Vec<f64>> = clips
        .iter()
        .flat_map(|c| c.chunks(block))
        .map(|b| {
            b.iter()
                .copied()
                .filter(|s| s.is_finite())
                .collect::<Vec<f64>>()
        })
        .filter(|b| !b.is_empty())
        .collect();
    let mut sorted: Vec<f64> = blocks.iter().flatten().copied().collect();
    if sorted.len() < 50 {
        return Err(ThresholdError::TooFew(sorted.len()));
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    // Exceedances cluster: per block, frames at or above the 95th percentile and the runs they
    // form. An alert is one run, so the frame budget is the alert budget over θ = runs/frames.
    let u = empirical_quantile(&sorted, 0.95);
    let runs_at_u: Vec<(usize, usize)> = blocks.iter().map(|b| runs(b, u)).collect();
    let theta = |idx: &mut dyn Iterator<Item = usize>| {
        let (mut e, mut r) = (0usize, 0usize);
        for i in idx {
            e += runs_at_u[i].0;
            r += runs_at_u[i].1;
        }
        if e == 0 {
            1.0
        } else {
            r as f64 / e as f64
        }
    };
    let extremal_index = theta(&mut (0..blocks.len()));
    let p = (alerts_per_day / (frames_per_day * extremal_index)).min(0.5);
    let (method, threshold) = match Tail::fit(&sorted) {
        Some(tail) if p * (n as f64) < MIN_EXCEEDANCES => (TailMethod::Gpd, tail.quantile(p)),
        _ => (TailMethod::Empirical, empirical_quantile(&sorted, 1.0 - p)),
    };
    let expected = exceedance_rate(&sorted, threshold, method) * frames_per_day * extremal_index;
    // Block bootstrap: resample the blocks, re-estimate the exceedance rate at the threshold
    // and the extremal index.
    let mut rng = Rng::new(seed);
    let nb = blocks.len() as u64;
    let mut rates: Vec<f64> = (0..200)
        .map(|_| {
            let pick: Vec<usize> = (0..nb).map(|_| (rng.next_u64() % nb) as usize).collect();
            let mut s: Vec<f64> = Vec::with_capacity(n);
            for &i in &pick {
                s.extend_from_slice(&blocks[i]);
            }
            s.sort_by(f64::total_cmp);
            if s.len() < 50 {
                return expected;
            }
            let th = theta(&mut pick.iter().copied());
            exceedance_rate(&s, threshold, method) * frames_per_day * th
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    Ok(ThresholdFit {
        threshold,
        method,
        expected_per_day: expected,
        interval_per_day: [rates[10], rates[189]],
        extremal_index,
        frames: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Standard exponential scores: P(S > t) = e^(−t).
    fn exponential(n: usize, seed: u64) -> Vec<f64> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| -(1.0 - f64::from(r.f32())).ln()).collect()
    }

    #[test]
    fn empirical_quantile_within_the_data() {
        let s = exponential(20_000, 1);
        // 1 alert per 100 frames: t = ln 100 = 4.61.
        let f = fit_threshold(&s, 8_640.0, 86.4, 2).unwrap();
        assert_eq!(f.method, TailMethod::Empirical);
        assert!((f.threshold - 100f64.ln()).abs() < 0.2, "{f:?}");
        assert!(
            f.interval_per_day[0] <= 86.4 && 86.4 <= f.interval_per_day[1],
            "{f:?}"
        );
    }

    #[test]
    fn tail_fit_beyond_the_data_and_fresh_normal_footage_stays_in_the_interval() {
        // One day at 1 fps of normal scores; budget 2 alerts/day -> beyond 10 exceedances in
        // 20 000 frames, so the generalized Pareto tail is used.
        let s = exponential(20_000, 3);
        let f = fit_threshold(&s, 86_400.0, 2.0, 4).unwrap();
        eprintln!("{f:?}");
        assert_eq!(f.method, TailMethod::Gpd);
        let truth = (86_400.0f64 / 2.0).ln(); // 10.67
        assert!((f.threshold - truth).abs() < 1.0, "{f:?} vs {truth}");
        // Fresh normal footage (5 days): exceedances per day at the threshold fall inside the
        // reported interval.
        let fresh = exponential(432_000, 99);
        let per_day = runs(&fresh, f.threshold).1 as f64 / 5.0;
        eprintln!("fresh normal footage: {per_day} alerts/day");
        assert!(
            f.interval_per_day[0] <= per_day && per_day <= f.interval_per_day[1],
            "{per_day}/day outside {:?}",
            f.interval_per_day
        );
    }

    #[test]
    fn the_interval_resamples_clips_not_frames() {
        // 20 clips of 120 frames; in 2 of them (a windy night, say) every score runs 3 higher.
        // Frame-level resampling would treat their 240 frames as independent evidence; with
        // whole clips resampled, drawing neither of them is plausible and the interval reaches
        // far lower.
        let clips: Vec<Vec<f64>> = (0..20)
            .map(|i| {
                let shift = if i < 2 { 3.0 } else { 0.0 };
                exponential(120, 100 + i)
                    .into_iter()
                    .map(|v| v + shift)
                    .collect()
            })
            .collect();
        let refs: Vec<&[f64]> = clips.iter().map(Vec::as_slice).collect();
        let by_clip = fit_threshold_clips(&refs, 86_400.0, 1_728.0, 5).unwrap();
        // Every frame its own block: the frame-level bootstrap.
        let all: Vec<f64> = clips.concat();
        let frames: Vec<&[f64]> = all.iter().map(std::slice::from_ref).collect();
        let pooled = fit_threshold_clips(&frames, 86_400.0, 1_728.0, 5).unwrap();
        // (Single-frame blocks cannot show runs, so their θ is 1 and the thresholds differ a
        // little; compare the relative widths.)
        let width =
            |f: &ThresholdFit| (f.interval_per_day[1] - f.interval_per_day[0]) / f.expected_per_day;
        assert!(
            width(&by_clip) > 1.5 * width(&pooled),
            "{by_clip:?} vs {pooled:?}"
        );
    }

    #[test]
    fn clustered_exceedances_count_as_one_alert_per_run() {
        // Every score repeated 4 times (a slow scene): runs of 4 equal frames, θ = 1/4. The
        // budget is alerts (runs), so 4× as many frames may exceed as for independent frames,
        // and the threshold is lower.
        let base = exponential(5_000, 8);
        let slow: Vec<f64> = base.iter().flat_map(|&v| [v; 4]).collect();
        let f = fit_threshold(&slow, 86_400.0, 864.0, 3).unwrap();
        assert!((f.extremal_index - 0.25).abs() < 0.02, "{f:?}");
        // Frame exceedance probability 864 / 86 400 / θ = 0.04: t = −ln 0.04 = 3.22.
        assert!((f.threshold - 0.04f64.ln().abs()).abs() < 0.15, "{f:?}");
        let alerts = runs(&slow, f.threshold).1 as f64 / slow.len() as f64 * 86_400.0;
        assert!((alerts - 864.0).abs() < 150.0, "{alerts} alerts/day");
        assert!(runs(&[0.0, 2.0, 3.0, 0.0, 5.0], 1.0) == (3, 2));
    }

    #[test]
    fn one_short_clip_still_gets_an_interval() {
        let s = exponential(300, 12);
        let f = fit_threshold(&s, 86_400.0, 2_000.0, 1).unwrap();
        assert!(
            f.interval_per_day[0] < f.expected_per_day
                && f.expected_per_day < f.interval_per_day[1],
            "{f:?}"
        );
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert_eq!(
            fit_threshold(&[1.0; 10], 86_400.0, 2.0, 0),
            Err(ThresholdError::TooFew(10))
        );
        assert!(fit_threshold(&exponential(100, 1), 86_400.0, 0.0, 0).is_err());
        assert!(fit_threshold(&exponential(100, 1), 10.0, 20.0, 0).is_err());
    }
}
