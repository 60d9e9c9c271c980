//! What `edge-cli calibrate` stores in a bundle's `[calibration]` (version 2) and how the runtime
//! and the evaluation use it: how the prediction-error term is pooled, the masks it was fitted
//! with, the regimes, and per regime the causal score's normal statistics and the alert
//! threshold. Sans-I/O: the caller reads and writes the bundle.

use crate::score::causal::{CausalError, CausalModel, TermStats};
use crate::score::drift::{DriftConfig, DriftError, DriftMonitor, DriftStatus};
use crate::score::regime::{RegimeError, RegimeSpec};
use crate::score::terms::TermsConfig;
use crate::score::threshold::{fit_threshold_clips, ThresholdError, ThresholdFit};
use crate::score::zones::{Polygon, Zone};

/// The `[calibration]` table version this build writes and reads.
pub const CALIBRATION_VERSION: u32 = 2;

/// One regime's fitted score and threshold.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RegimeFit {
    /// Regime name (`all`, `day`, `night`, `cold`, `warm`).
    pub regime: String,
    /// The causal score's normal statistics, mix and smoothing in this regime.
    pub score: CausalModel,
    /// The alert threshold on that score.
    pub threshold: ThresholdFit,
    /// Per calibrated zone (in the order of [`Calibration::zones`]): its prediction-error
    /// term's (PSNR, dB) normal statistics in this regime.
    #[serde(default)]
    pub zones: Vec<TermStats>,
}

impl RegimeFit {
    /// The unsmoothed score of one frame and the zone that set it: the frame's causal score,
    /// or a zone's PSNR drop in robust σ times its sensitivity when that is higher (a small
    /// intruder on a closed pier end lowers the zone's PSNR far more than the frame's).
    pub fn raw(
        &self,
        zones: &[Zone],
        psnr: f64,
        distance: f64,
        zone_psnr: &[f64],
    ) -> (f64, Option<usize>) {
        combined_raw(&self.score, &self.zones, zones, psnr, distance, zone_psnr)
    }
}

/// [`RegimeFit::raw`] from its parts.
fn combined_raw(
    score: &CausalModel,
    stats: &[TermStats],
    zones: &[Zone],
    psnr: f64,
    distance: f64,
    zone_psnr: &[f64],
) -> (f64, Option<usize>) {
    let mut best = (score.raw(psnr, distance), None);
    for (k, ((stats, zone), &p)) in stats.iter().zip(zones).zip(zone_psnr).enumerate() {
        if !p.is_finite() {
            continue;
        }
        let v = -stats.z(p) * zone.sensitivity;
        if v > best.0 {
            best = (v, Some(k));
        }
    }
    best
}

/// The calibration of a bundle for a site.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    /// Table version ([`CALIBRATION_VERSION`]).
    pub version: u32,
    /// Footage the calibration was fitted on.
    pub source: String,
    /// Backend that scored it.
    pub backend: String,
    /// Alerts per day asked for, in each regime.
    pub alerts_per_day: f64,
    /// Frames per second the rates assume.
    pub fps: f64,
    /// How the prediction-error term is pooled.
    #[serde(default)]
    pub terms: TermsConfig,
    /// Masked areas (normalised polygons) left out of the prediction error.
    #[serde(default)]
    pub masks: Vec<Polygon>,
    /// Zones with their own prediction-error term and sensitivity (the site's, at calibration).
    #[serde(default)]
    pub zones: Vec<Zone>,
    /// How frames are split into regimes.
    #[serde(default)]
    pub regimes: RegimeSpec,
    /// One fit per regime, in the order of [`RegimeSpec::names`].
    pub fits: Vec<RegimeFit>,
}

/// Why a calibration cannot be fitted, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// The table is of another version.
    #[error("[calibration] version {0} is not supported (this build reads version {CALIBRATION_VERSION}); run edge-cli calibrate again")]
    Version(u32),
    /// The table does not decode.
    #[error("[calibration]: {0}")]
    Decode(String),
    /// The fits do not match the regimes.
    #[error("[calibration]: regimes {spec} need fits for {want:?}, found {found:?}")]
    Fits {
        /// The regimes.
        spec: String,
        /// Regime names expected.
        want: Vec<String>,
        /// Regime names found.
        found: Vec<String>,
    },
    /// A frame's regime could not be determined.
    #[error(transparent)]
    Regime(#[from] RegimeError),
    /// A regime had no usable footage.
    #[error("regime {regime}: {source}")]
    Causal {
        /// Regime.
        regime: String,
        /// Cause.
        #[source]
        source: CausalError,
    },
    /// The zone statistics do not match the zones.
    #[error("[calibration]: regime {regime} has statistics for {found} zones, the calibration lists {want}; run edge-cli calibrate again")]
    Zones {
        /// Regime.
        regime: String,
        /// Zones listed.
        want: usize,
        /// Statistics found.
        found: usize,
    },
    /// A regime's threshold could not be fitted.
    #[error("regime {regime}: {source}")]
    Threshold {
        /// Regime.
        regime: String,
        /// Cause.
        #[source]
        source: ThresholdError,
    },
}

/// One normal frame's score terms and what its regime depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalFrame {
    /// Capture time, Unix µs.
    pub t_us: i64,
    /// Mean scene temperature, °C, when radiometric.
    pub scene_c: Option<f64>,
    /// Prediction-error term (PSNR, dB).
    pub psnr: f64,
    /// Feature distance.
    pub distance: f64,
    /// Each zone's prediction-error term (PSNR, dB), in the order of the settings' zones.
    pub zones: Vec<f64>,
}

/// What [`Calibration::fit`] needs besides the footage.
#[derive(Debug, Clone, PartialEq)]
pub struct FitSettings {
    /// Footage name, for the record.
    pub source: String,
    /// Backend name, for the record.
    pub backend: String,
    /// Alerts per day per regime.
    pub alerts_per_day: f64,
    /// Frames per second on the board.
    pub fps: f64,
    /// PSNR weight α.
    pub alpha: f64,
    /// EMA smoothing λ.
    pub smoothing: f64,
    /// Prediction-error pooling.
    pub terms: TermsConfig,
    /// Masks.
    pub masks: Vec<Polygon>,
    /// Zones, each with its own term and sensitivity.
    pub zones: Vec<Zone>,
    /// Regimes.
    pub regimes: RegimeSpec,
}

impl Calibration {
    /// Fits every regime on normal footage given as clips of frames (the smoothing restarts
    /// with each clip). Each regime needs enough frames of its own.
    pub fn fit(clips: &[Vec<NormalFrame>], s: &FitSettings) -> Result<Self, CalibrationError> {
        s.regimes.validate()?;
        let names = s.regimes.names();
        // Per regime, per clip: the frames in order (a clip may switch regime, e.g. at dusk).
        let mut by_regime: Vec<Vec<Vec<NormalFrame>>> = vec![Vec::new(); names.len()];
        for clip in clips {
            let mut parts: Vec<Vec<NormalFrame>> = vec![Vec::new(); names.len()];
            for f in clip {
                let r = s.regimes.classify(f.t_us, f.scene_c)?;
                let i = names
                    .iter()
                    .position(|n| *n == r)
                    .expect("classify returns a listed name");
                if f.zones.len() != s.zones.len() {
                    return Err(CalibrationError::Decode(format!(
                        "a normal frame has {} zone terms for {} zones",
                        f.zones.len(),
                        s.zones.len()
                    )));
                }
                parts[i].push(f.clone());
            }
            for (i, p) in parts.into_iter().enumerate() {
                if !p.is_empty() {
                    by_regime[i].push(p);
                }
            }
        }
        let frames_per_day = 86_400.0 * s.fps;
        let mut fits = Vec::new();
        for (name, parts) in names.iter().zip(&by_regime) {
            let psnr: Vec<f64> = parts.iter().flatten().map(|f| f.psnr).collect();
            let dist: Vec<f64> = parts.iter().flatten().map(|f| f.distance).collect();
            let score = CausalModel::fit(&psnr, &dist, s.alpha, s.smoothing).map_err(|source| {
                CalibrationError::Causal {
                    regime: name.to_string(),
                    source,
                }
            })?;
            let zones = s
                .zones
                .iter()
                .enumerate()
                .map(|(k, z)| {
                    let v: Vec<f64> = parts.iter().flatten().map(|f| f.zones[k]).collect();
                    TermStats::fit(&v, 1e-2).ok_or_else(|| CalibrationError::Causal {
                        regime: name.to_string(),
                        source: CausalError::Parameter(format!(
                            "zone {}: no finite PSNR on normal footage (is it wholly masked?)",
                            z.name
                        )),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            // The threshold is fitted on the score the board computes, zones included, so the
            // false-alarm budget covers them.
            let lambda = score.smoothing;
            let scores: Vec<Vec<f64>> = parts
                .iter()
                .map(|p| {
                    let mut state: Option<f64> = None;
                    p.iter()
                        .map(|f| {
                            let x = combined_raw(
                                &score, &zones, &s.zones, f.psnr, f.distance, &f.zones,
                            )
                            .0;
                            let v = state.map_or(x, |prev| lambda * prev + (1.0 - lambda) * x);
                            state = Some(v);
                            v
                        })
                        .collect()
                })
                .collect();
            let refs: Vec<&[f64]> = scores.iter().map(Vec::as_slice).collect();
            let threshold = fit_threshold_clips(&refs, frames_per_day, s.alerts_per_day, 0)
                .map_err(|source| CalibrationError::Threshold {
                    regime: name.to_string(),
                    source,
                })?;
            fits.push(RegimeFit {
                regime: name.to_string(),
                score,
                threshold,
                zones,
            });
        }
        Ok(Self {
            version: CALIBRATION_VERSION,
            source: s.source.clone(),
            backend: s.backend.clone(),
            alerts_per_day: s.alerts_per_day,
            fps: s.fps,
            terms: s.terms,
            masks: s.masks.clone(),
            zones: s.zones.clone(),
            regimes: s.regimes,
            fits,
        })
    }

    /// Reads and checks a bundle's `[calibration]` table.
    pub fn from_table(t: &toml::Table) -> Result<Self, CalibrationError> {
        let version = t.get("version").and_then(|v| v.as_integer()).unwrap_or(0);
        if version != i64::from(CALIBRATION_VERSION) {
            return Err(CalibrationError::Version(version.try_into().unwrap_or(0)));
        }
        let c: Calibration = toml::Value::Table(t.clone())
            .try_into()
            .map_err(|e: toml::de::Error| CalibrationError::Decode(e.to_string()))?;
        c.regimes.validate()?;
        let want: Vec<String> = c.regimes.names().iter().map(|s| s.to_string()).collect();
        let found: Vec<String> = c.fits.iter().map(|f| f.regime.clone()).collect();
        if want != found {
            return Err(CalibrationError::Fits {
                spec: c.regimes.to_string(),
                want,
                found,
            });
        }
        for f in &c.fits {
            if f.zones.len() != c.zones.len() {
                return Err(CalibrationError::Zones {
                    regime: f.regime.clone(),
                    want: c.zones.len(),
                    found: f.zones.len(),
                });
            }
        }
        Ok(c)
    }

    /// The table to store as `[calibration]`.
    pub fn to_table(&self) -> toml::Table {
        match toml::Value::try_from(self) {
            Ok(toml::Value::Table(t)) => t,
            // Every field is a plain number, string, table or array.
            other => unreachable!("a calibration encodes as a table: {other:?}"),
        }
    }

    /// The index in `fits` of the regime a frame falls in.
    pub fn regime_index(&self, t_us: i64, scene_c: Option<f64>) -> Result<usize, CalibrationError> {
        let r = self.regimes.classify(t_us, scene_c)?;
        Ok(self
            .fits
            .iter()
            .position(|f| f.regime == r)
            .expect("from_table checked a fit per regime"))
    }

    /// The fit of the regime a frame falls in.
    pub fn fit_for(&self, t_us: i64, scene_c: Option<f64>) -> Result<&RegimeFit, CalibrationError> {
        Ok(&self.fits[self.regime_index(t_us, scene_c)?])
    }
}

/// Drift monitors of a calibration, one per regime: does the footage a board sees still look
/// like the normal footage each regime was calibrated on?
#[derive(Debug, Clone)]
pub struct RegimeDrift<'a> {
    cal: &'a Calibration,
    monitors: Vec<DriftMonitor>,
    last: Vec<Option<DriftStatus>>,
}

impl<'a> RegimeDrift<'a> {
    /// Monitors with `cfg` for every regime of `cal`.
    pub fn new(cal: &'a Calibration, cfg: &DriftConfig) -> Result<Self, DriftError> {
        let frames_per_day = 86_400.0 * cal.fps;
        let monitors = cal
            .fits
            .iter()
            .map(|f| {
                // A threshold no normal frame reaches still has a tiny expected rate.
                let rate = (f.threshold.expected_per_day / frames_per_day).clamp(1e-9, 0.5);
                DriftMonitor::new(cfg.clone(), f.score.clone(), f.threshold.threshold, rate)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            cal,
            last: vec![None; monitors.len()],
            monitors,
        })
    }

    /// Feeds one frame to its regime's monitor; returns that regime's status.
    pub fn push(
        &mut self,
        t_us: i64,
        scene_c: Option<f64>,
        psnr: f64,
        distance: f64,
        in_event: bool,
    ) -> Result<&DriftStatus, CalibrationError> {
        let i = self.cal.regime_index(t_us, scene_c)?;
        let status = self.monitors[i].push(psnr, distance, in_event);
        Ok(self.last[i].insert(status))
    }

    /// Forgets the smoothing state (a new clip, a gap in the stream); the windows are kept.
    pub fn reset(&mut self) {
        self.monitors.iter_mut().for_each(DriftMonitor::reset);
    }

    /// The latest status of each regime that has seen a frame, by regime name.
    pub fn statuses(&self) -> Vec<(String, DriftStatus)> {
        self.cal
            .fits
            .iter()
            .zip(&self.last)
            .filter_map(|(f, s)| s.clone().map(|s| (f.regime.clone(), s)))
            .collect()
    }
}

/// One frame's causal score under a calibration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored<'a> {
    /// The smoothed score, to compare with [`RegimeScorer::threshold`].
    pub score: f64,
    /// The regime the frame fell in.
    pub regime: &'a str,
    /// The calibrated zone whose own term set the (unsmoothed) score, if one did.
    pub zone: Option<&'a str>,
}

/// The causal score of a stream under a calibration: each frame standardised by its regime's
/// statistics and expressed relative to that regime's threshold, so one alarm threshold serves
/// every regime.
#[derive(Debug, Clone)]
pub struct RegimeScorer<'a> {
    cal: &'a Calibration,
    state: Option<f64>,
}

impl<'a> RegimeScorer<'a> {
    /// A scorer at the start of a stream.
    pub fn new(cal: &'a Calibration) -> Self {
        Self { cal, state: None }
    }

    /// The alarm threshold of [`RegimeScorer::push`]'s scores: the threshold itself with one
    /// regime (scores stay in robust σ), 0 with several (scores are margins over the regime's
    /// threshold).
    pub fn threshold(&self) -> f64 {
        match self.cal.fits.as_slice() {
            [only] => only.threshold.threshold,
            _ => 0.0,
        }
    }

    /// The smoothed score of the next frame, its regime and the zone that set it;
    /// `zone_psnr` holds the PSNR of each of the calibration's zones (empty without zones).
    pub fn push(
        &mut self,
        t_us: i64,
        scene_c: Option<f64>,
        psnr: f64,
        distance: f64,
        zone_psnr: &[f64],
    ) -> Result<Scored<'a>, CalibrationError> {
        let cal = self.cal;
        let fit = cal.fit_for(t_us, scene_c)?;
        let offset = if cal.fits.len() == 1 {
            0.0
        } else {
            fit.threshold.threshold
        };
        let (raw, zone) = fit.raw(&cal.zones, psnr, distance, zone_psnr);
        let x = raw - offset;
        let lambda = fit.score.smoothing;
        let s = match self.state {
            Some(prev) => lambda * prev + (1.0 - lambda) * x,
            None => x,
        };
        self.state = Some(s);
        Ok(Scored {
            score: s,
            regime: fit.regime.as_str(),
            zone: zone.map(|k| cal.zones[k].name.as_str()),
        })
    }

    /// Forgets the smoothing state (a new clip, or a gap in the stream).
    pub fn reset(&mut self) {
        self.state = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const HOUR_US: i64 = 3_600_000_000;

    /// Day frames around 36 dB, night frames around 30 dB, one clip per hour of a day.
    fn footage(rng: &mut Rng) -> Vec<Vec<NormalFrame>> {
        (0..24)
            .map(|h| {
                (0..120)
                    .map(|i| {
                        let day = (7..19).contains(&h);
                        NormalFrame {
                            t_us: h * HOUR_US + i * 1_000_000,
                            scene_c: Some(if day { 18.0 } else { 8.0 }),
                            psnr: if day { 36.0 } else { 30.0 } + rng.normal() * 0.5,
                            distance: 1e-5 * (1.0 + 0.1 * rng.normal()),
                            zones: vec![],
                        }
                    })
                    .collect()
            })
            .collect()
    }

    fn settings(regimes: RegimeSpec) -> FitSettings {
        FitSettings {
            source: "sim".into(),
            backend: "tract-f32".into(),
            alerts_per_day: 2.0,
            fps: 1.0,
            alpha: 0.6,
            smoothing: 0.0,
            terms: TermsConfig::default(),
            masks: vec![],
            zones: vec![],
            regimes,
        }
    }

    #[test]
    fn day_night_regimes_fit_their_own_statistics_and_round_trip() {
        let mut rng = Rng::new(5);
        let clips = footage(&mut rng);
        let spec = RegimeSpec::parse_cli("day-night").unwrap();
        let cal = Calibration::fit(&clips, &settings(spec)).unwrap();
        assert_eq!(cal.fits.len(), 2);
        let day = &cal.fits[0];
        let night = &cal.fits[1];
        assert_eq!(
            (day.regime.as_str(), night.regime.as_str()),
            ("day", "night")
        );
        assert!((day.score.psnr.median - 36.0).abs() < 0.1);
        assert!((night.score.psnr.median - 30.0).abs() < 0.1);
        // A 31 dB frame is normal at night and far out by day.
        let mut s = RegimeScorer::new(&cal);
        let at_night = s.push(2 * HOUR_US, None, 31.0, 1e-5, &[]).unwrap();
        assert_eq!((at_night.regime, at_night.zone), ("night", None));
        let at_night = at_night.score;
        s.reset();
        let by_day = s.push(12 * HOUR_US, None, 31.0, 1e-5, &[]).unwrap();
        assert_eq!(by_day.regime, "day");
        let by_day = by_day.score;
        assert!(
            at_night < s.threshold() && by_day > s.threshold(),
            "{at_night} {by_day}"
        );

        let back = Calibration::from_table(&cal.to_table()).unwrap();
        assert_eq!(back, cal);
    }

    /// A zone around 40 dB (little moves there) in frames around 33 dB.
    fn zone_footage(rng: &mut Rng) -> Vec<Vec<NormalFrame>> {
        (0..8)
            .map(|c| {
                (0..120)
                    .map(|i| NormalFrame {
                        t_us: c * HOUR_US + i * 1_000_000,
                        scene_c: None,
                        psnr: 33.0 + rng.normal() * 0.5,
                        distance: 1e-5 * (1.0 + 0.1 * rng.normal()),
                        zones: vec![40.0 + rng.normal() * 0.5],
                    })
                    .collect()
            })
            .collect()
    }

    fn pier(sensitivity: f64) -> Zone {
        Zone {
            name: "pier-end".into(),
            polygon: Polygon(vec![[0.6, 0.7], [0.8, 0.7], [0.8, 0.9], [0.6, 0.9]]),
            sensitivity,
        }
    }

    #[test]
    fn a_zone_raises_the_score_the_frame_alone_would_not_and_is_named() {
        let mut rng = Rng::new(11);
        let clips = zone_footage(&mut rng);
        let mut set = settings(RegimeSpec::None);
        set.zones = vec![pier(1.0)];
        let cal = Calibration::fit(&clips, &set).unwrap();
        assert_eq!(cal.fits[0].zones.len(), 1);
        assert!((cal.fits[0].zones[0].median - 40.0).abs() < 0.1);
        let mut s = RegimeScorer::new(&cal);
        let th = s.threshold();
        // A normal frame and a normal zone: below the threshold.
        let calm = s.push(0, None, 33.0, 1e-5, &[40.0]).unwrap();
        assert!(calm.score < th, "{calm:?} {th}");
        // Someone on the pier end: the zone drops 8 dB, the frame only 0.3 dB.
        let intruder = s.push(0, None, 32.7, 1e-5, &[32.0]).unwrap();
        assert!(intruder.score > th, "{intruder:?} {th}");
        assert_eq!(intruder.zone, Some("pier-end"));
        // Without the zone term the same frame stays normal.
        let frame_only = cal.fits[0].score.raw(32.7, 1e-5);
        assert!(frame_only < th, "{frame_only} {th}");
        // A wholly masked zone (+∞ dB) never counts.
        let masked = s.push(0, None, 33.0, 1e-5, &[f64::INFINITY]).unwrap();
        assert!(masked.zone.is_none());

        // Sensitivity scales the zone's term: half as sensitive, a drop that barely crosses
        // now stays below.
        let z = &cal.fits[0].zones[0];
        let just_over = z.median - 1.2 * th * z.sigma;
        let mut half = cal.clone();
        half.zones[0].sensitivity = 0.5;
        let over = RegimeScorer::new(&cal)
            .push(0, None, 33.0, 1e-5, &[just_over])
            .unwrap();
        let under = RegimeScorer::new(&half)
            .push(0, None, 33.0, 1e-5, &[just_over])
            .unwrap();
        assert!(
            over.score > th && under.score < th,
            "{over:?} {under:?} {th}"
        );

        // Round trip, and a table whose statistics do not match its zones is refused.
        assert_eq!(Calibration::from_table(&cal.to_table()).unwrap(), cal);
        let mut bad = cal.clone();
        bad.fits[0].zones.clear();
        let e = Calibration::from_table(&bad.to_table())
            .unwrap_err()
            .to_string();
        assert!(e.contains("0 zones") && e.contains("lists 1"), "{e}");
        // Frames whose zone terms do not match the settings are refused, not misread.
        let mut short = clips.clone();
        short[0][0].zones.clear();
        assert!(Calibration::fit(&short, &set).is_err());
    }

    #[test]
    fn the_zone_threshold_keeps_the_false_alarm_budget() {
        // Fitting with a zone must not loosen the budget: normal footage crosses the zone-aware
        // threshold no more often than the frame-only one's.
        let mut rng = Rng::new(12);
        let clips = zone_footage(&mut rng);
        let mut set = settings(RegimeSpec::None);
        let mut without = clips.clone();
        without.iter_mut().flatten().for_each(|f| f.zones.clear());
        let plain = Calibration::fit(&without, &set).unwrap();
        set.zones = vec![pier(2.0)];
        let zoned = Calibration::fit(&clips, &set).unwrap();
        let fresh = zone_footage(&mut rng);
        let count = |cal: &Calibration| {
            let mut s = RegimeScorer::new(cal);
            let th = s.threshold();
            fresh
                .iter()
                .flatten()
                .filter(|f| {
                    let z: &[f64] = if cal.zones.is_empty() { &[] } else { &f.zones };
                    s.push(f.t_us, None, f.psnr, f.distance, z).unwrap().score >= th
                })
                .count()
        };
        let (a, b) = (count(&plain), count(&zoned));
        // 960 frames at 2 alerts a day: about 0.02 expected; a handful would mean a broken fit.
        assert!(a <= 3 && b <= 3, "plain {a}, zoned {b}");
        assert!(zoned.fits[0].threshold.threshold >= plain.fits[0].threshold.threshold * 0.9);
    }

    #[test]
    fn one_regime_keeps_scores_in_sigmas() {
        let mut rng = Rng::new(6);
        let clips = footage(&mut rng);
        let cal = Calibration::fit(&clips, &settings(RegimeSpec::None)).unwrap();
        let s = RegimeScorer::new(&cal);
        assert_eq!(s.threshold(), cal.fits[0].threshold.threshold);
        assert!(s.threshold() > 1.0);
    }

    #[test]
    fn drift_is_watched_per_regime() {
        let mut rng = Rng::new(9);
        let clips = footage(&mut rng);
        let spec = RegimeSpec::parse_cli("day-night").unwrap();
        let cal = Calibration::fit(&clips, &settings(spec)).unwrap();
        let cfg = DriftConfig {
            window: 400,
            min_frames: 200,
            ..DriftConfig::default()
        };
        let mut d = RegimeDrift::new(&cal, &cfg).unwrap();
        // Nights as calibrated; days 3 dB worse (a fogged lens in the sun, say).
        for i in 0..600 {
            let t = 2 * HOUR_US + i * 1_000_000;
            d.push(t, None, 30.0 + rng.normal() * 0.5, 1e-5, false)
                .unwrap();
            let t = 12 * HOUR_US + i * 1_000_000;
            d.push(t, None, 33.0 + rng.normal() * 0.5, 1e-5, false)
                .unwrap();
        }
        let s = d.statuses();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0, "day");
        assert_eq!(s[0].1.state, crate::score::drift::DriftState::Recalibrate);
        assert_eq!(
            s[1].1.state,
            crate::score::drift::DriftState::Ok,
            "{:?}",
            s[1]
        );
    }

    #[test]
    fn bad_tables_are_named_errors() {
        let mut rng = Rng::new(7);
        let cal = Calibration::fit(&footage(&mut rng), &settings(RegimeSpec::None)).unwrap();
        let mut t = cal.to_table();
        t.insert("version".into(), toml::Value::Integer(1));
        let e = Calibration::from_table(&t).unwrap_err().to_string();
        assert!(
            e.contains("version 1") && e.contains("calibrate again"),
            "{e}"
        );
        let mut t = cal.to_table();
        t.insert(
            "regimes".into(),
            toml::Value::try_from(RegimeSpec::parse_cli("day-night").unwrap()).unwrap(),
        );
        let e = Calibration::from_table(&t).unwrap_err().to_string();
        assert!(e.contains("day") && e.contains("all"), "{e}");
        let mut t = cal.to_table();
        t.remove("fits");
        assert!(matches!(
            Calibration::from_table(&t),
            Err(CalibrationError::Decode(_))
        ));
    }

    #[test]
    fn a_regime_without_footage_is_named() {
        let mut rng = Rng::new(8);
        let mut clips = footage(&mut rng);
        clips.retain(|c| c[0].t_us >= 7 * HOUR_US && c[0].t_us < 19 * HOUR_US);
        let e = Calibration::fit(
            &clips,
            &settings(RegimeSpec::parse_cli("day-night").unwrap()),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("regime night"), "{e}");
    }
}
