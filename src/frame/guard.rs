//! Camera guards: frames that would make the model cry wolf — frozen or duplicated frames, a
//! flat-field correction (FFC) in progress or just finished, a global offset or AGC step — pause
//! scoring for a few frames instead of raising alerts. A sans-I/O state machine: feed it every
//! frame the loop samples and obey its verdict. Nothing is allocated per frame.

use super::{FfcState, ThermalFrame, Units};

/// How the guard decides.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// Pause after a frame identical to the one before (a frozen camera, a duplicated frame).
    pub frozen: bool,
    /// Pixels may differ by this much (raw units) and still count as identical.
    pub frozen_tolerance: u16,
    /// Frames paused after the last frozen frame.
    pub frozen_pause: usize,
    /// Pause while the camera reports an FFC imminent or in progress, and until this many
    /// milliseconds after it (Lepton/Boson telemetry).
    pub ffc_settle_ms: u32,
    /// Frames paused after an FFC seen in telemetry.
    pub ffc_pause: usize,
    /// A global step: the median per-pixel change between sampled frames beyond this (raw
    /// units; `None` picks 0.5 K for radiometric frames, 4 grey levels for 8-bit, 40 counts for
    /// raw counts).
    pub step_threshold: Option<f32>,
    /// Frames paused after a global step.
    pub step_pause: usize,
    /// Undo global steps: every later frame is shifted back by the accumulated step, so the
    /// model keeps seeing the levels it was calibrated on (an FFC or AGC step moves the whole
    /// image; only the history restart would leave every later frame off-level). Without it,
    /// the history restarts at each step.
    pub compensate_steps: bool,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            frozen: true,
            frozen_tolerance: 0,
            frozen_pause: 2,
            ffc_settle_ms: 1_000,
            ffc_pause: 1,
            step_threshold: None,
            step_pause: 0,
            compensate_steps: true,
        }
    }
}

impl GuardConfig {
    /// The step threshold for frames in `units`.
    pub fn step_threshold_for(&self, units: Units) -> f32 {
        self.step_threshold.unwrap_or(match units {
            Units::Centikelvin => 50.0,
            Units::Gray8 => 4.0,
            _ => 40.0,
        })
    }
}

/// Why scoring is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PauseReason {
    /// The frame repeats the previous one.
    Frozen,
    /// The camera is running, or has just run, a flat-field correction.
    Ffc,
    /// The whole image stepped up or down at once (AGC, offset, gain change).
    Step,
}

impl PauseReason {
    /// Stable name (logs, stats).
    pub fn name(self) -> &'static str {
        match self {
            PauseReason::Frozen => "frozen",
            PauseReason::Ffc => "ffc",
            PauseReason::Step => "step",
        }
    }
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Score it.
    Score,
    /// Do not score it. With `restart`, the frames held so far are no longer comparable with
    /// what comes next: clear the history and the score smoothing.
    Pause {
        /// Why.
        reason: PauseReason,
        /// Whether the history must restart.
        restart: bool,
    },
}

/// Frames the guard has held back, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GuardCounts {
    /// Frames found frozen.
    pub frozen: u64,
    /// FFC events seen.
    pub ffc: u64,
    /// Global steps seen.
    pub steps: u64,
    /// Frames not scored because of a pause (including the triggering frames).
    pub paused_frames: u64,
}

/// The guard's state between frames.
#[derive(Debug, Clone)]
pub struct FrameGuard {
    cfg: GuardConfig,
    prev: Vec<u16>,
    prev_size: Option<(u32, u32)>,
    in_ffc: bool,
    pause_left: usize,
    reason: PauseReason,
    diffs: Vec<i32>,
    counts: GuardCounts,
    offset: i32,
}

/// At most this many pixels are sampled for the median change (every k-th pixel).
const STEP_SAMPLES: usize = 4_096;

impl FrameGuard {
    /// A guard that has seen no frame.
    pub fn new(cfg: GuardConfig) -> Self {
        Self {
            cfg,
            prev: Vec::new(),
            prev_size: None,
            in_ffc: false,
            pause_left: 0,
            reason: PauseReason::Frozen,
            diffs: Vec::with_capacity(STEP_SAMPLES),
            counts: GuardCounts::default(),
            offset: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GuardConfig {
        &self.cfg
    }

    /// What has been held back so far.
    pub fn counts(&self) -> GuardCounts {
        self.counts
    }

    /// Forgets the previous frame and the step compensation (after a reconnect: the next
    /// frame cannot be compared).
    pub fn reset(&mut self) {
        self.prev_size = None;
        self.in_ffc = false;
        self.pause_left = 0;
        self.offset = 0;
    }

    /// The raw-unit offset to add to frames to undo the global steps seen so far (0 without
    /// `compensate_steps`).
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Copies `frame` into `out` with [`FrameGuard::offset`] applied (clamped to the units'
    /// range); reuses `out`'s buffer.
    pub fn compensate(&self, frame: &ThermalFrame, out: &mut ThermalFrame) {
        let max = if frame.meta.units == Units::Gray8 {
            255
        } else {
            i32::from(u16::MAX)
        };
        out.reshape(frame.width(), frame.height());
        for (o, &p) in out.pixels_mut().iter_mut().zip(frame.pixels()) {
            *o = (i32::from(p) + self.offset).clamp(0, max) as u16;
        }
        out.meta.clone_from(&frame.meta);
    }

    /// Judges the next sampled frame.
    pub fn check(&mut self, frame: &ThermalFrame) -> Verdict {
        let trigger = self.trigger(frame);
        self.remember(frame);
        if let Some((reason, pause)) = trigger {
            if reason == PauseReason::Step && self.cfg.compensate_steps {
                // Undone from this frame on: the history stays comparable.
                self.pause_left = pause;
                self.reason = reason;
                if pause == 0 {
                    return Verdict::Score;
                }
                self.pause_left -= 1;
                self.counts.paused_frames += 1;
                return Verdict::Pause {
                    reason,
                    restart: false,
                };
            }
            self.reason = reason;
            self.pause_left = pause;
            self.counts.paused_frames += 1;
            return Verdict::Pause {
                reason,
                restart: true,
            };
        }
        if self.pause_left > 0 {
            self.pause_left -= 1;
            self.counts.paused_frames += 1;
            return Verdict::Pause {
                reason: self.reason,
                restart: false,
            };
        }
        Verdict::Score
    }

    /// The event this frame shows, if any, and the pause that follows it.
    fn trigger(&mut self, frame: &ThermalFrame) -> Option<(PauseReason, usize)> {
        let ffc_now = matches!(
            frame.meta.ffc,
            Some(FfcState::Imminent | FfcState::InProgress)
        ) || (frame.meta.ffc == Some(FfcState::Complete)
            && frame
                .meta
                .ms_since_ffc
                .is_some_and(|ms| ms < self.cfg.ffc_settle_ms));
        let ffc_started = ffc_now && !self.in_ffc;
        self.in_ffc = ffc_now;
        if ffc_now {
            self.counts.ffc += u64::from(ffc_started);
            return Some((PauseReason::Ffc, self.cfg.ffc_pause));
        }
        if self.prev_size != Some((frame.width(), frame.height())) {
            return None;
        }
        if self.cfg.frozen && self.identical(frame) {
            self.counts.frozen += 1;
            return Some((PauseReason::Frozen, self.cfg.frozen_pause));
        }
        let limit = self.cfg.step_threshold_for(frame.meta.units);
        let change = self.median_change(frame);
        if change.abs() > limit {
            self.counts.steps += 1;
            if self.cfg.compensate_steps {
                self.offset -= change.round() as i32;
            }
            return Some((PauseReason::Step, self.cfg.step_pause));
        }
        None
    }

    fn identical(&self, frame: &ThermalFrame) -> bool {
        let tol = self.cfg.frozen_tolerance;
        frame
            .pixels()
            .iter()
            .zip(&self.prev)
            .all(|(&a, &b)| a.abs_diff(b) <= tol)
    }

    /// Median over sampled pixels of (this frame − previous frame): a moving object changes a
    /// minority of pixels and leaves it near 0; a global step moves it by the step.
    fn median_change(&mut self, frame: &ThermalFrame) -> f32 {
        let px = frame.pixels();
        let stride = px.len().div_ceil(STEP_SAMPLES).max(1);
        self.diffs.clear();
        self.diffs.extend(
            px.iter()
                .zip(&self.prev)
                .step_by(stride)
                .map(|(&a, &b)| i32::from(a) - i32::from(b)),
        );
        if self.diffs.is_empty() {
            return 0.0;
        }
        let mid = self.diffs.len() / 2;
        let (_, m, _) = self.diffs.select_nth_unstable(mid);
        *m as f32
    }

    fn remember(&mut self, frame: &ThermalFrame) {
        let px = frame.pixels();
        if self.prev.len() != px.len() {
            // Only when the frame size changes (a different camera mode).
            self.prev.resize(px.len(), 0);
        }
        self.prev.copy_from_slice(px);
        self.prev_size = Some((frame.width(), frame.height()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameMeta;
    use crate::rng::Rng;

    fn frame(rng: &mut Rng, level: u16) -> ThermalFrame {
        let mut f = ThermalFrame::zeroed(
            64,
            48,
            FrameMeta {
                units: Units::Centikelvin,
                ..Default::default()
            },
        );
        for p in f.pixels_mut() {
            *p = level + (rng.below(20) as u16);
        }
        f
    }

    fn verdicts(g: &mut FrameGuard, frames: &[ThermalFrame]) -> Vec<Verdict> {
        frames.iter().map(|f| g.check(f)).collect()
    }

    #[test]
    fn frozen_frames_pause_and_restart_the_history() {
        let mut rng = Rng::new(1);
        let a = frame(&mut rng, 29_000);
        let b = frame(&mut rng, 29_000);
        let c = frame(&mut rng, 29_000);
        let d = frame(&mut rng, 29_000);
        let e = frame(&mut rng, 29_000);
        let mut g = FrameGuard::new(GuardConfig {
            frozen_pause: 1,
            ..GuardConfig::default()
        });
        let v = verdicts(&mut g, &[a, b.clone(), b.clone(), b, c, d, e]);
        let frozen = Verdict::Pause {
            reason: PauseReason::Frozen,
            restart: true,
        };
        assert_eq!(v[..2], [Verdict::Score, Verdict::Score]);
        assert_eq!(v[2..4], [frozen, frozen]);
        assert_eq!(
            v[4],
            Verdict::Pause {
                reason: PauseReason::Frozen,
                restart: false
            }
        );
        assert_eq!(v[5..], [Verdict::Score, Verdict::Score]);
        assert_eq!(g.counts().frozen, 2);
        assert_eq!(g.counts().paused_frames, 3);
    }

    #[test]
    fn a_global_step_pauses_but_a_warm_object_does_not() {
        let mut rng = Rng::new(2);
        let mut g = FrameGuard::new(GuardConfig {
            compensate_steps: false,
            ..GuardConfig::default()
        });
        let a = frame(&mut rng, 29_000);
        // A warm object over a fifth of the frame: many pixels change a lot, the median not.
        let mut b = frame(&mut rng, 29_000);
        for p in b.pixels_mut().iter_mut().take(64 * 10) {
            *p += 3_000;
        }
        // The whole image 0.8 K warmer.
        let mut c = frame(&mut rng, 29_080);
        c.pixels_mut()[..64 * 10]
            .iter_mut()
            .for_each(|p| *p += 3_000);
        let v = verdicts(&mut g, &[a, b, c]);
        assert_eq!(v[..2], [Verdict::Score, Verdict::Score]);
        assert_eq!(
            v[2],
            Verdict::Pause {
                reason: PauseReason::Step,
                restart: true
            }
        );
        assert_eq!(g.counts().steps, 1);
    }

    #[test]
    fn compensated_steps_are_undone_on_later_frames() {
        let mut rng = Rng::new(4);
        let mut g = FrameGuard::new(GuardConfig::default());
        let a = frame(&mut rng, 29_000);
        assert_eq!(g.check(&a), Verdict::Score);
        // 2 K warmer at once, and it stays so.
        let b = frame(&mut rng, 29_200);
        let c = frame(&mut rng, 29_200);
        assert_eq!(g.check(&b), Verdict::Score);
        assert_eq!(g.check(&c), Verdict::Score);
        assert_eq!(g.counts().steps, 1);
        let off = g.offset();
        assert!((-205..=-195).contains(&off), "{off}");
        let mut out = ThermalFrame::zeroed(1, 1, FrameMeta::default());
        g.compensate(&c, &mut out);
        let mean = |f: &ThermalFrame| {
            f.pixels().iter().map(|&p| f64::from(p)).sum::<f64>() / f.pixels().len() as f64
        };
        assert!((mean(&out) - mean(&a)).abs() < 6.0);
        g.reset();
        assert_eq!(g.offset(), 0);
    }

    #[test]
    fn ffc_telemetry_pauses_until_the_camera_settles() {
        let mut rng = Rng::new(3);
        let mut g = FrameGuard::new(GuardConfig {
            ffc_pause: 0,
            ..GuardConfig::default()
        });
        let states = [
            (FfcState::Complete, 90_000),
            (FfcState::Imminent, 91_000),
            (FfcState::InProgress, 0),
            (FfcState::Complete, 500),
            (FfcState::Complete, 1_500),
        ];
        let v: Vec<Verdict> = states
            .iter()
            .map(|&(s, ms)| {
                let mut f = frame(&mut rng, 29_000);
                f.meta.ffc = Some(s);
                f.meta.ms_since_ffc = Some(ms);
                g.check(&f)
            })
            .collect();
        let ffc = Verdict::Pause {
            reason: PauseReason::Ffc,
            restart: true,
        };
        assert_eq!(v, [Verdict::Score, ffc, ffc, ffc, Verdict::Score]);
        assert_eq!(g.counts().ffc, 1);
    }

    #[test]
    fn a_new_frame_size_is_not_compared_with_the_old_one() {
        let mut g = FrameGuard::new(GuardConfig::default());
        let a = ThermalFrame::zeroed(8, 8, FrameMeta::default());
        let b = ThermalFrame::zeroed(16, 4, FrameMeta::default());
        assert_eq!(g.check(&a), Verdict::Score);
        assert_eq!(g.check(&b), Verdict::Score);
        assert!(matches!(g.check(&b), Verdict::Pause { .. }));
    }
}
