//! Drift monitor: whether normal footage still looks like the calibration footage. It keeps the
//! last `window` normal frames (frames of alerting events are left out: they are not normal
//! footage) and compares the rolling median of each score term's robust z-score, and the rate at
//! which frames reach the alert threshold, with what calibration expects. Sans-I/O: callers feed
//! each frame's PSNR and feature distance and get a [`DriftStatus`] back.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;

use super::causal::{CausalModel, CausalScorer};

/// Exceedances the window must hold before the rate criterion may fire: with a budget of a few
/// alerts a day, one or two stray exceedances in an hour already read as many times the
/// calibrated rate.
const MIN_EXCEEDANCES: usize = 3;

/// Largest Poisson tail probability of the observed exceedance count (at the calibrated rate)
/// for which the rate criterion may fire. The multipliers alone are not enough when the window
/// expects about one exceedance: three then read as "3×" although they happen on calibration
/// footage in one window of twelve.
const RATE_SIGNIFICANCE: f64 = 1e-3;

/// How the drift monitor judges normal footage.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DriftConfig {
    /// Normal frames in the rolling window (3600: one hour at 1 fps).
    pub window: usize,
    /// Normal frames the window must hold before any verdict other than Ok.
    pub min_frames: usize,
    /// Absolute rolling median z-score of a term at or above which the monitor warns.
    pub warn_z: f64,
    /// Absolute rolling median z-score of a term at or above which recalibration is advised.
    pub recalibrate_z: f64,
    /// Exceedance rate, as a multiple of the calibrated rate, at or above which the monitor warns.
    pub warn_rate: f64,
    /// Exceedance rate, as a multiple of the calibrated rate, at or above which recalibration is
    /// advised.
    pub recalibrate_rate: f64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            window: 3600,
            min_frames: 600,
            warn_z: 1.0,
            recalibrate_z: 2.0,
            warn_rate: 3.0,
            recalibrate_rate: 10.0,
        }
    }
}

/// Why a drift configuration or monitor is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftError {
    /// `window` is 0.
    #[error("drift window must be at least 1 frame")]
    Window,
    /// `min_frames` is 0 or larger than the window (no verdict could ever be given).
    #[error("drift min_frames {min_frames} must lie between 1 and the window ({window} frames)")]
    MinFrames {
        /// Configured `min_frames`.
        min_frames: usize,
        /// Configured `window`.
        window: usize,
    },
    /// A z threshold that is not a finite positive number.
    #[error("drift {field} {value} must be a finite number above 0")]
    NotPositive {
        /// Name of the field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// A rate multiplier that is not a finite number above 1.
    #[error(
        "drift {field} {value} must be a finite multiplier above 1 (the calibrated rate itself is normal)"
    )]
    RateMultiplier {
        /// Name of the field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// A recalibration threshold below its warning threshold.
    #[error("drift {high} ({high_value}) must not be below {low} ({low_value})")]
    Order {
        /// Name of the warning field.
        low: &'static str,
        /// Its value.
        low_value: f64,
        /// Name of the recalibration field.
        high: &'static str,
        /// Its value.
        high_value: f64,
    },
    /// The alert threshold is not finite.
    #[error("drift monitor threshold {0} must be a finite score")]
    Threshold(f64),
    /// The expected exceedance rate is not a fraction of frames in (0, 1).
    #[error("drift monitor expected_rate {0} must be a fraction of frames in (0, 1)")]
    ExpectedRate(f64),
    /// A calibrated statistic that cannot standardise anything.
    #[error("drift monitor model {field} {value} must be finite (and a sigma above 0)")]
    Model {
        /// Name of the statistic.
        field: &'static str,
        /// Its value.
        value: f64,
    },
}

fn positive(field: &'static str, value: f64) -> Result<(), DriftError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(DriftError::NotPositive { field, value })
    }
}

fn multiplier(field: &'static str, value: f64) -> Result<(), DriftError> {
    if value.is_finite() && value > 1.0 {
        Ok(())
    } else {
        Err(DriftError::RateMultiplier { field, value })
    }
}

fn ordered(low: (&'static str, f64), high: (&'static str, f64)) -> Result<(), DriftError> {
    if high.1 >= low.1 {
        Ok(())
    } else {
        Err(DriftError::Order {
            low: low.0,
            low_value: low.1,
            high: high.0,
            high_value: high.1,
        })
    }
}

impl DriftConfig {
    /// Checks the window, the thresholds and their order.
    pub fn validate(&self) -> Result<(), DriftError> {
        if self.window == 0 {
            return Err(DriftError::Window);
        }
        if self.min_frames == 0 || self.min_frames > self.window {
            return Err(DriftError::MinFrames {
                min_frames: self.min_frames,
                window: self.window,
            });
        }
        positive("warn_z", self.warn_z)?;
        positive("recalibrate_z", self.recalibrate_z)?;
        ordered(
            ("warn_z", self.warn_z),
            ("recalibrate_z", self.recalibrate_z),
        )?;
        multiplier("warn_rate", self.warn_rate)?;
        multiplier("recalibrate_rate", self.recalibrate_rate)?;
        ordered(
            ("warn_rate", self.warn_rate),
            ("recalibrate_rate", self.recalibrate_rate),
        )
    }
}

/// The monitor's verdict, ordered from best to worst.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DriftState {
    /// Normal footage matches calibration.
    Ok,
    /// Normal footage has moved away from calibration; watch it.
    Warn,
    /// Normal footage no longer matches calibration; recalibrate.
    Recalibrate,
}

impl fmt::Display for DriftState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Recalibrate => "recalibrate",
        })
    }
}

/// The monitor's view after a frame.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DriftStatus {
    /// Verdict: the worst of the PSNR, distance and exceedance-rate criteria.
    pub state: DriftState,
    /// Normal frames in the window.
    pub frames: usize,
    /// Rolling median of the PSNR z-score (negative: worse predictions); None while empty.
    pub median_z_psnr: Option<f64>,
    /// Rolling median of the feature-distance z-score (positive: farther from the memory);
    /// None while empty.
    pub median_z_distance: Option<f64>,
    /// Frames in the window whose score reached the alert threshold.
    pub exceedances: usize,
    /// Fraction of the window's frames whose score reached the alert threshold (0 while empty).
    pub exceedance_rate: f64,
    /// `exceedance_rate` over the calibrated expected rate.
    pub exceedance_ratio: f64,
    /// Which criteria drove the state, for people ("PSNR 2.4 σ below calibration").
    pub reason: Cow<'static, str>,
}

/// One normal frame in the window.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    z_psnr: f64,
    z_distance: f64,
    above: bool,
}

/// Watches normal footage for drift away from the calibration footage.
#[derive(Debug, Clone)]
pub struct DriftMonitor {
    cfg: DriftConfig,
    scorer: CausalScorer,
    threshold: f64,
    expected_rate: f64,
    window: VecDeque<Sample>,
    exceedances: usize,
    /// Reused for the medians so that a frame allocates nothing but its reason.
    scratch: Vec<f64>,
}

impl DriftMonitor {
    /// A monitor for the calibrated `model` and alert `threshold`, where `expected_rate` is the
    /// fraction of normal frames whose score reaches the threshold (the calibration's expected
    /// alerts per day over frames per day).
    pub fn new(
        cfg: DriftConfig,
        model: CausalModel,
        threshold: f64,
        expected_rate: f64,
    ) -> Result<Self, DriftError> {
        cfg.validate()?;
        if !threshold.is_finite() {
            return Err(DriftError::Threshold(threshold));
        }
        if !(expected_rate > 0.0 && expected_rate < 1.0) {
            return Err(DriftError::ExpectedRate(expected_rate));
        }
        for (field, value, is_sigma) in [
            ("psnr.median", model.psnr.median, false),
            ("psnr.sigma", model.psnr.sigma, true),
            ("distance.median", model.distance.median, false),
            ("distance.sigma", model.distance.sigma, true),
        ] {
            if !value.is_finite() || (is_sigma && value <= 0.0) {
                return Err(DriftError::Model { field, value });
            }
        }
        Ok(Self {
            window: VecDeque::with_capacity(cfg.window),
            scratch: Vec::with_capacity(cfg.window),
            cfg,
            scorer: CausalScorer::new(model),
            threshold,
            expected_rate,
            exceedances: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DriftConfig {
        &self.cfg
    }

    /// Forgets the score's smoothing state where the board's scorer does (a new clip, a gap in
    /// the stream); the window is kept.
    pub fn reset(&mut self) {
        self.scorer.reset();
    }

    /// Feeds one frame. `in_event`: the frame belongs to an alerting event; it is left out of
    /// the window. Frames still pending confirmation as an event should be flagged too where
    /// the caller can tell, or each event's first frames count as normal exceedances. A
    /// non-finite PSNR (a perfect prediction) counts as z = 0, as in [`CausalModel::raw`]; a
    /// frame with a non-finite distance is no measurement and is left out.
    pub fn push(&mut self, psnr: f64, distance: f64, in_event: bool) -> DriftStatus {
        // Every frame goes through the scorer, event or not, so that its smoothing state, and
        // so the exceedances, stay those of the board's score the threshold was fitted on.
        let score = self.scorer.push(psnr, distance);
        if !in_event && distance.is_finite() {
            let model = self.scorer.model();
            let sample = Sample {
                z_psnr: if psnr.is_finite() {
                    model.psnr.z(psnr)
                } else {
                    0.0
                },
                z_distance: model.distance.z(distance),
                above: score >= self.threshold,
            };
            if self.window.len() == self.cfg.window {
                if let Some(old) = self.window.pop_front() {
                    self.exceedances -= usize::from(old.above);
                }
            }
            self.exceedances += usize::from(sample.above);
            self.window.push_back(sample);
        }
        self.status()
    }

    fn status(&mut self) -> DriftStatus {
        let n = self.window.len();
        let median_z_psnr = median_of(&mut self.scratch, self.window.iter().map(|s| s.z_psnr));
        let median_z_distance =
            median_of(&mut self.scratch, self.window.iter().map(|s| s.z_distance));
        let exceedance_rate = if n == 0 {
            0.0
        } else {
            self.exceedances as f64 / n as f64
        };
        let exceedance_ratio = exceedance_rate / self.expected_rate;
        let (state, reason) = match (median_z_psnr, median_z_distance) {
            (Some(zp), Some(zd)) if n >= self.cfg.min_frames => {
                self.verdict(zp, zd, exceedance_ratio)
            }
            _ => (DriftState::Ok, Cow::Borrowed("warming up")),
        };
        DriftStatus {
            state,
            frames: n,
            median_z_psnr,
            median_z_distance,
            exceedances: self.exceedances,
            exceedance_rate,
            exceedance_ratio,
            reason,
        }
    }

    fn verdict(&self, zp: f64, zd: f64, ratio: f64) -> (DriftState, Cow<'static, str>) {
        let cfg = &self.cfg;
        let z_state = |z: f64| {
            if z.abs() >= cfg.recalibrate_z {
                DriftState::Recalibrate
            } else if z.abs() >= cfg.warn_z {
                DriftState::Warn
            } else {
                DriftState::Ok
            }
        };
        let n = self.window.len();
        let significant = self.exceedances >= MIN_EXCEEDANCES
            && poisson_upper_tail(self.exceedances, n as f64 * self.expected_rate)
                <= RATE_SIGNIFICANCE;
        let rate_state = if !significant {
            DriftState::Ok
        } else if ratio >= cfg.recalibrate_rate {
            DriftState::Recalibrate
        } else if ratio >= cfg.warn_rate {
            DriftState::Warn
        } else {
            DriftState::Ok
        };
        let states = [z_state(zp), z_state(zd), rate_state];
        let worst = states.into_iter().max().unwrap_or(DriftState::Ok);
        if worst == DriftState::Ok {
            return (worst, Cow::Borrowed("matches calibration"));
        }
        let side = |z: f64| if z < 0.0 { "below" } else { "above" };
        let mut reasons = Vec::new();
        if states[0] == worst {
            reasons.push(format!("PSNR {:.1} σ {} calibration", zp.abs(), side(zp)));
        }
        if states[1] == worst {
            reasons.push(format!(
                "feature distance {:.1} σ {} calibration",
                zd.abs(),
                side(zd)
            ));
        }
        if states[2] == worst {
            reasons.push(format!(
                "alert-threshold exceedances {ratio:.1}× the calibrated rate ({} of {n} frames)",
                self.exceedances
            ));
        }
        (worst, Cow::Owned(reasons.join("; ")))
    }
}

/// Median of `values`, found by selection in `scratch`: O(n) per call, so recomputing it for
/// every frame of an hour-long window at 1 fps costs microseconds.
fn median_of(scratch: &mut Vec<f64>, values: impl Iterator<Item = f64>) -> Option<f64> {
    scratch.clear();
    scratch.extend(values);
    let n = scratch.len();
    if n == 0 {
        return None;
    }
    let (below, mid, _) = scratch.select_nth_unstable_by(n / 2, f64::total_cmp);
    let mid = *mid;
    Some(if n.is_multiple_of(2) {
        // The lower middle value is the largest of the lower half.
        let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + mid) / 2.0
    } else {
        mid
    })
}

/// P(X ≥ k) for X ~ Poisson(λ), summed from k upwards in log space so that a large λ cannot
/// underflow e^(−λ).
fn poisson_upper_tail(k: usize, lambda: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if lambda <= 0.0 {
        return 0.0;
    }
    let ln_lambda = lambda.ln();
    let ln_k_factorial: f64 = (2..=k).map(|i| (i as f64).ln()).sum();
    let mut ln_term = -lambda + k as f64 * ln_lambda - ln_k_factorial;
    let mut sum = 0.0;
    let mut i = k;
    loop {
        let term = ln_term.exp();
        sum += term;
        // Past the mode the terms fall at least geometrically.
        if i as f64 > lambda && term <= sum * 1e-16 {
            break;
        }
        i += 1;
        ln_term += ln_lambda - (i as f64).ln();
    }
    sum.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::score::causal::TermStats;
    use crate::score::threshold::fit_threshold;

    // Normal footage in the tests: PSNR ~ N(32 dB, 1.5 dB), distance ~ N(3e-3, 1e-3).
    const PSNR_MEDIAN: f64 = 32.0;
    const PSNR_SIGMA: f64 = 1.5;
    const DIST_MEDIAN: f64 = 3e-3;
    const DIST_SIGMA: f64 = 1e-3;

    /// One frame with each term shifted by the given number of standard deviations.
    fn frame(rng: &mut Rng, psnr_shift: f64, dist_shift: f64) -> (f64, f64) {
        (
            PSNR_MEDIAN + PSNR_SIGMA * (rng.normal() + psnr_shift),
            DIST_MEDIAN + DIST_SIGMA * (rng.normal() + dist_shift),
        )
    }

    /// Calibrates as `edge-cli calibrate` does, on 20 000 normal frames: the model, the
    /// threshold for 240 alerts per day at 1 fps and the expected exceedance rate.
    fn calibrate() -> (CausalModel, f64, f64) {
        let mut rng = Rng::new(1);
        let (psnr, dist): (Vec<f64>, Vec<f64>) =
            (0..20_000).map(|_| frame(&mut rng, 0.0, 0.0)).unzip();
        let model = CausalModel::fit(&psnr, &dist, 0.6, 0.0).unwrap();
        let scores: Vec<f64> = psnr
            .iter()
            .zip(&dist)
            .map(|(&p, &d)| model.raw(p, d))
            .collect();
        let fit = fit_threshold(&scores, 86_400.0, 240.0, 0).unwrap();
        (model, fit.threshold, fit.expected_per_day / 86_400.0)
    }

    fn monitor(cfg: DriftConfig) -> DriftMonitor {
        let (model, threshold, rate) = calibrate();
        DriftMonitor::new(cfg, model, threshold, rate).unwrap()
    }

    /// The rate criterion out of reach: a shifted term also raises the exceedance rate, and
    /// these tests watch the z criterion alone (the rate criterion has its own test).
    fn z_only() -> DriftConfig {
        DriftConfig {
            warn_rate: 1e12,
            recalibrate_rate: 1e12,
            ..DriftConfig::default()
        }
    }

    /// Feeds `n` frames shifted by (psnr, distance) σ and returns every status.
    fn feed(
        m: &mut DriftMonitor,
        rng: &mut Rng,
        n: usize,
        shift: (f64, f64),
        in_event: bool,
    ) -> Vec<DriftStatus> {
        (0..n)
            .map(|_| {
                let (p, d) = frame(rng, shift.0, shift.1);
                m.push(p, d, in_event)
            })
            .collect()
    }

    #[test]
    fn stationary_normal_footage_stays_ok() {
        let mut m = monitor(DriftConfig::default());
        let mut rng = Rng::new(2);
        let statuses = feed(&mut m, &mut rng, 3 * 3600, (0.0, 0.0), false);
        for (i, s) in statuses.iter().enumerate() {
            assert_eq!(s.state, DriftState::Ok, "frame {i}: {s:?}");
        }
        let last = statuses.last().unwrap();
        assert_eq!(last.frames, 3600);
        assert_eq!(last.reason, "matches calibration");
        assert!(last.median_z_psnr.unwrap().abs() < 0.1, "{last:?}");
        assert!(last.median_z_distance.unwrap().abs() < 0.1, "{last:?}");
        // About the calibrated rate: ~10 exceedances expected in the hour.
        assert!(
            (0.3..3.0).contains(&last.exceedance_ratio) && last.exceedances > 0,
            "{last:?}"
        );
    }

    #[test]
    fn psnr_3_sigma_lower_recalibrates_once_most_of_the_window_has_shifted() {
        let mut m = monitor(z_only());
        let mut rng = Rng::new(3);
        let before = feed(&mut m, &mut rng, 3600, (0.0, 0.0), false);
        assert_eq!(before.last().unwrap().state, DriftState::Ok);
        let after = feed(&mut m, &mut rng, 3600, (-3.0, 0.0), false);
        // The median moves past −2 σ once ~58 % of the window has shifted (~2100 frames).
        let first = after
            .iter()
            .position(|s| s.state == DriftState::Recalibrate)
            .unwrap();
        assert!(
            (1800..2600).contains(&first),
            "first recalibrate at {first}"
        );
        assert!(after[..first].iter().any(|s| s.state == DriftState::Warn));
        let last = after.last().unwrap();
        assert_eq!(last.state, DriftState::Recalibrate, "{last:?}");
        assert!((last.median_z_psnr.unwrap() + 3.0).abs() < 0.15, "{last:?}");
        assert!(
            last.reason.starts_with("PSNR ") && last.reason.ends_with("σ below calibration"),
            "{}",
            last.reason
        );
        assert!(!last.reason.contains("distance"), "{}", last.reason);
    }

    #[test]
    fn a_1_3_sigma_shift_warns_and_names_the_term() {
        let mut m = monitor(z_only());
        let mut rng = Rng::new(4);
        let last = feed(&mut m, &mut rng, 3600, (-1.3, 0.0), false)
            .pop()
            .unwrap();
        assert_eq!(last.state, DriftState::Warn, "{last:?}");
        assert!((last.median_z_psnr.unwrap() + 1.3).abs() < 0.15, "{last:?}");
        assert!(
            last.reason.starts_with("PSNR 1.") && last.reason.ends_with("σ below calibration"),
            "{}",
            last.reason
        );

        let mut m = monitor(z_only());
        let last = feed(&mut m, &mut rng, 3600, (0.0, 1.3), false)
            .pop()
            .unwrap();
        assert_eq!(last.state, DriftState::Warn, "{last:?}");
        assert!(
            (last.median_z_distance.unwrap() - 1.3).abs() < 0.15,
            "{last:?}"
        );
        assert!(
            last.reason.starts_with("feature distance 1.")
                && last.reason.ends_with("σ above calibration"),
            "{}",
            last.reason
        );
    }

    #[test]
    fn frames_in_an_event_are_not_normal_footage() {
        let mut m = monitor(DriftConfig::default());
        let mut rng = Rng::new(5);
        feed(&mut m, &mut rng, 600, (0.0, 0.0), false);
        // A long event of terrible frames changes nothing.
        for s in feed(&mut m, &mut rng, 5000, (-10.0, 10.0), true) {
            assert_eq!(s.state, DriftState::Ok, "{s:?}");
            assert_eq!(s.frames, 600);
        }
        // The same frames as normal footage would be drift.
        let last = feed(&mut m, &mut rng, 600, (-10.0, 10.0), false)
            .pop()
            .unwrap();
        assert_eq!(last.state, DriftState::Recalibrate, "{last:?}");
        assert_eq!(last.frames, 1200);
    }

    #[test]
    fn no_verdict_before_min_frames() {
        let mut m = monitor(DriftConfig::default());
        let mut rng = Rng::new(6);
        let s = m.push(PSNR_MEDIAN, DIST_MEDIAN, true);
        assert_eq!((s.frames, s.median_z_psnr), (0, None));
        assert_eq!((s.state, s.reason.as_ref()), (DriftState::Ok, "warming up"));
        let statuses = feed(&mut m, &mut rng, 600, (-5.0, 0.0), false);
        for (i, s) in statuses[..599].iter().enumerate() {
            assert_eq!((s.state, s.reason.as_ref()), (DriftState::Ok, "warming up"));
            assert_eq!(s.frames, i + 1);
        }
        // The medians are reported while warming up, only the verdict waits.
        assert!(statuses[598].median_z_psnr.unwrap() < -4.0);
        assert_eq!(statuses[599].state, DriftState::Recalibrate);
    }

    /// A monitor whose frames score exactly 0 (normal) or 5 (an exceedance of threshold 3).
    fn spike_monitor(expected_rate: f64, smoothing: f64) -> DriftMonitor {
        let unit = TermStats {
            median: 0.0,
            sigma: 1.0,
        };
        let model = CausalModel {
            psnr: unit,
            distance: unit,
            alpha: 0.5,
            smoothing,
        };
        DriftMonitor::new(DriftConfig::default(), model, 3.0, expected_rate).unwrap()
    }

    fn push_n(m: &mut DriftMonitor, n: usize, spike: bool) -> DriftStatus {
        let d = if spike { 10.0 } else { 0.0 };
        let mut last = m.push(0.0, d, false);
        for _ in 1..n {
            last = m.push(0.0, d, false);
        }
        last
    }

    #[test]
    fn the_rate_criterion_needs_several_significant_exceedances() {
        // 2 alerts a day: an hour expects 0.08 exceedances, so two read as 24×.
        let mut m = spike_monitor(2.0 / 86_400.0, 0.0);
        push_n(&mut m, 3597, false);
        let s = push_n(&mut m, 2, true);
        assert_eq!((s.exceedances, s.state), (2, DriftState::Ok), "{s:?}");
        assert!(s.exceedance_ratio > 20.0, "{s:?}");
        let s = push_n(&mut m, 1, true);
        assert_eq!(
            (s.exceedances, s.state),
            (3, DriftState::Recalibrate),
            "{s:?}"
        );
        assert!(
            s.reason.starts_with("alert-threshold exceedances")
                && s.reason.contains("(3 of 3600 frames)"),
            "{}",
            s.reason
        );
        // The spikes leave with the window.
        let s = push_n(&mut m, 3600, false);
        assert_eq!((s.exceedances, s.state), (0, DriftState::Ok), "{s:?}");

        // One exceedance an hour expected: 3 (3×) happen by chance one hour in twelve.
        let mut m = spike_monitor(1.0 / 3600.0, 0.0);
        push_n(&mut m, 3597, false);
        let s = push_n(&mut m, 3, true);
        assert!((s.exceedance_ratio - 3.0).abs() < 1e-9, "{s:?}");
        assert_eq!(s.state, DriftState::Ok, "{s:?}");
        // 6 (P ≈ 6e-4) warn, 12 advise recalibration.
        push_n(&mut m, 3, false);
        let s = push_n(&mut m, 3, true);
        assert_eq!((s.exceedances, s.state), (6, DriftState::Warn), "{s:?}");
        push_n(&mut m, 6, false);
        let s = push_n(&mut m, 6, true);
        assert_eq!(
            (s.exceedances, s.state),
            (12, DriftState::Recalibrate),
            "{s:?}"
        );
    }

    #[test]
    fn exceedances_use_the_smoothed_score_the_threshold_was_fitted_on() {
        let mut raw = spike_monitor(1e-3, 0.0);
        push_n(&mut raw, 10, false);
        assert_eq!(push_n(&mut raw, 1, true).exceedances, 1);
        // Smoothed with λ = 0.9, a lone raw 5 scores 0.5: below the threshold; a run of them
        // reaches it from the 9th on (5·(1 − 0.9⁹) = 3.06).
        let mut smooth = spike_monitor(1e-3, 0.9);
        push_n(&mut smooth, 10, false);
        assert_eq!(push_n(&mut smooth, 1, true).exceedances, 0);
        assert_eq!(push_n(&mut smooth, 29, true).exceedances, 22);
        // Event frames stay out of the window but feed the smoothing state, as on the board:
        // the normal frame after them still scores 0.9 · 4.8 and counts.
        let mut smooth = spike_monitor(1e-3, 0.9);
        push_n(&mut smooth, 10, false);
        for _ in 0..30 {
            smooth.push(0.0, 10.0, true);
        }
        let s = smooth.push(0.0, 0.0, false);
        assert_eq!((s.frames, s.exceedances), (11, 1), "{s:?}");
    }

    #[test]
    fn median_and_poisson_tail_helpers() {
        let mut scratch = Vec::new();
        let mut rng = Rng::new(7);
        for n in [1, 2, 3, 10, 11] {
            let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
            assert_eq!(
                median_of(&mut scratch, v.iter().copied()),
                crate::stats::median(&v)
            );
        }
        assert_eq!(median_of(&mut scratch, std::iter::empty()), None);
        assert_eq!(poisson_upper_tail(0, 2.0), 1.0);
        assert!((poisson_upper_tail(1, 2.0) - (1.0 - (-2.0f64).exp())).abs() < 1e-12);
        let p3 = 1.0 - (-1.0f64).exp() * 2.5;
        assert!((poisson_upper_tail(3, 1.0) - p3).abs() < 1e-12);
        // λ = 3600 would underflow e^(−λ) in a plain sum; P(X ≥ 3600) is about one half.
        assert!((poisson_upper_tail(3600, 3600.0) - 0.5).abs() < 0.01);
    }

    #[test]
    fn bad_configurations_are_refused_naming_the_field() {
        assert_eq!(DriftConfig::default().validate(), Ok(()));
        let check = |cfg: DriftConfig, field: &str| {
            let e = cfg.validate().unwrap_err();
            assert!(e.to_string().contains(field), "{e} should name {field}");
        };
        let d = DriftConfig::default;
        check(DriftConfig { window: 0, ..d() }, "window");
        check(
            DriftConfig {
                min_frames: 0,
                ..d()
            },
            "min_frames",
        );
        check(
            DriftConfig {
                min_frames: 3601,
                ..d()
            },
            "min_frames",
        );
        check(DriftConfig { warn_z: 0.0, ..d() }, "warn_z");
        check(
            DriftConfig {
                recalibrate_z: f64::NAN,
                ..d()
            },
            "recalibrate_z",
        );
        check(
            DriftConfig { warn_z: 3.0, ..d() },
            "recalibrate_z (2) must not be below warn_z (3)",
        );
        check(
            DriftConfig {
                warn_rate: 1.0,
                ..d()
            },
            "warn_rate",
        );
        check(
            DriftConfig {
                recalibrate_rate: f64::INFINITY,
                ..d()
            },
            "recalibrate_rate",
        );
        check(
            DriftConfig {
                recalibrate_rate: 2.0,
                ..d()
            },
            "recalibrate_rate (2) must not be below warn_rate (3)",
        );
        let (model, threshold, rate) = calibrate();
        let new = |model: CausalModel, threshold: f64, rate: f64| {
            DriftMonitor::new(d(), model, threshold, rate).unwrap_err()
        };
        assert_eq!(
            new(model.clone(), f64::NAN, rate).to_string(),
            "drift monitor threshold NaN must be a finite score"
        );
        assert_eq!(
            new(model.clone(), threshold, 0.0),
            DriftError::ExpectedRate(0.0)
        );
        assert_eq!(
            new(model.clone(), threshold, 1.0),
            DriftError::ExpectedRate(1.0)
        );
        let mut flat = model;
        flat.distance.sigma = 0.0;
        assert!(new(flat, threshold, rate)
            .to_string()
            .contains("distance.sigma"));
    }

    #[test]
    fn config_defaults_and_state_names() {
        let cfg: DriftConfig = toml::from_str("window = 1800\nmin_frames = 300").unwrap();
        assert_eq!(
            cfg,
            DriftConfig {
                window: 1800,
                min_frames: 300,
                ..DriftConfig::default()
            }
        );
        for (state, name) in [
            (DriftState::Ok, "ok"),
            (DriftState::Warn, "warn"),
            (DriftState::Recalibrate, "recalibrate"),
        ] {
            assert_eq!(state.to_string(), name);
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{name}\"")
            );
        }
        assert!(DriftState::Ok < DriftState::Warn && DriftState::Warn < DriftState::Recalibrate);
    }
}
