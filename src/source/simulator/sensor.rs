//! What the camera adds to the scene: fixed-pattern noise and vignetting (fixed per camera),
//! temporal noise, slow offset drift reset by flat-field corrections (FFC: one frozen frame,
//! then a small global step), and the 8-bit mapping with an occasional AGC step.

use super::rng::{derive, Rng};
use crate::frame::FfcState;

/// Temperature noise of one pixel in one frame (°C, NETD-like).
const NETD_C: f32 = 0.06;
/// Gain changes pivot around this scene temperature (°C), so steps stay small.
const GAIN_PIVOT_C: f32 = 15.0;

/// Linear temperature-to-grey mapping of a camera whose AGC is locked.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GrayWindow {
    /// Temperature shown as 0 (°C); colder pixels clip to 0.
    pub lo_c: f32,
    /// Temperature shown as 255 (°C); warmer pixels clip to 255.
    pub hi_c: f32,
}

impl GrayWindow {
    /// The window of the simulated harbor camera: cold sky clips to black, engines to white.
    pub const HARBOR: GrayWindow = GrayWindow {
        lo_c: -8.0,
        hi_c: 42.0,
    };

    /// Grey level of a temperature in °C.
    pub fn level(&self, celsius: f32) -> u8 {
        ((celsius - self.lo_c) / (self.hi_c - self.lo_c) * 255.0)
            .round()
            .clamp(0.0, 255.0) as u8
    }

    /// Grey level of a centikelvin pixel.
    pub fn level_ck(&self, ck: u16) -> u8 {
        self.level(crate::frame::centikelvin_to_celsius(ck))
    }

    /// The same window moved by `c` °C (an AGC step).
    pub fn shifted(&self, c: f32) -> Self {
        Self {
            lo_c: self.lo_c + c,
            hi_c: self.hi_c + c,
        }
    }
}

/// Kind of a camera event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SensorEventKind {
    /// Flat-field correction: the frame is a frozen copy of the previous one and the next frame
    /// shows a small global offset step.
    Ffc,
    /// The 8-bit window moved (gray8 output only).
    Agc,
}

/// A camera event in a clip (not an anomaly: labels stay 0).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SensorEvent {
    /// Frame index (0-based) where it happens.
    pub frame: usize,
    /// What happens.
    pub kind: SensorEventKind,
    /// Size of the resulting global step (°C).
    pub step_c: f32,
}

/// Per-pixel offsets that never change for one camera: column and row stripes, pixel
/// non-uniformity, a few bad pixels and vignetting (°C).
pub(crate) fn fixed_pattern(w: usize, h: usize, camera_seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(derive(camera_seed, 0xF1C5));
    let cols: Vec<f32> = (0..w).map(|_| 0.09 * rng.normal()).collect();
    let rows: Vec<f32> = (0..h).map(|_| 0.045 * rng.normal()).collect();
    let (cx, cy) = (w as f32 * 0.5, h as f32 * 0.5);
    let mut out = Vec::with_capacity(w * h);
    for (y, row) in rows.iter().enumerate() {
        let ny = (y as f32 + 0.5 - cy) / cy;
        for (x, col) in cols.iter().enumerate() {
            let nx = (x as f32 + 0.5 - cx) / cx;
            let r2 = 0.5 * (nx * nx + ny * ny);
            out.push(col + row + 0.03 * rng.fast_normal() - 0.55 * r2);
        }
    }
    for _ in 0..(w * h / 20_000).max(1) {
        let i = rng.below(w * h);
        out[i] += 2.5 * rng.sign();
    }
    out
}

/// The camera's behaviour over one clip.
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    offset: Vec<f32>,
    gain: Vec<f32>,
    frozen: Vec<bool>,
    ffc: Vec<FfcState>,
    ms_since_ffc: Vec<u32>,
    agc: Vec<f32>,
    pub events: Vec<SensorEvent>,
}

impl Timeline {
    /// Draws FFC and AGC events for a clip of `frames` frames (none when `enabled` is false).
    pub(crate) fn new(frames: usize, rng: &mut Rng, enabled: bool) -> Self {
        let drift = 0.0012 * rng.normal();
        let mut residual = 0.1 * rng.normal();
        let mut gain = 1.0;
        let mut age = rng.range(5.0, 170.0);
        let mut ffc_frames = Vec::new();
        if enabled && frames >= 8 {
            let n = rng.weighted(&[0.55, 0.35, 0.1]);
            for _ in 0..n {
                let f = 2 + rng.below(frames - 3);
                if ffc_frames.iter().all(|&g: &usize| g.abs_diff(f) >= 20) {
                    ffc_frames.push(f);
                }
            }
            ffc_frames.sort_unstable();
        }
        let mut t = Self {
            offset: Vec::with_capacity(frames),
            gain: Vec::with_capacity(frames),
            frozen: vec![false; frames],
            ffc: Vec::with_capacity(frames),
            ms_since_ffc: Vec::with_capacity(frames),
            agc: vec![0.0; frames],
            events: Vec::new(),
        };
        for i in 0..frames {
            if ffc_frames.contains(&i) {
                // The frozen frame repeats the previous one; afterwards the drift is gone and a
                // small residual offset (and gain change) remains.
                t.frozen[i] = true;
                let before = residual + drift * age;
                residual = 0.12 * rng.normal();
                gain = 1.0 + 0.004 * rng.normal();
                age = 0.0;
                t.events.push(SensorEvent {
                    frame: i,
                    kind: SensorEventKind::Ffc,
                    step_c: residual - before,
                });
            }
            let state = if t.frozen[i] {
                FfcState::InProgress
            } else if ffc_frames.iter().any(|&f| f > i && f - i <= 2) {
                FfcState::Imminent
            } else {
                FfcState::Complete
            };
            t.offset.push(residual + drift * age);
            t.gain.push(gain);
            t.ffc.push(state);
            t.ms_since_ffc.push((age * 1000.0) as u32);
            age += 1.0;
        }
        if enabled && frames >= 8 && rng.chance(0.2) {
            let f = 1 + rng.below(frames - 1);
            let step = rng.range(0.2, 0.5) * rng.sign();
            t.agc[f..].iter_mut().for_each(|a| *a = step);
            t.events.push(SensorEvent {
                frame: f,
                kind: SensorEventKind::Agc,
                step_c: step,
            });
            t.events.sort_by_key(|e| e.frame);
        }
        t
    }

    /// Whether frame `i` is a frozen copy of frame `i − 1`.
    pub(crate) fn frozen(&self, i: usize) -> bool {
        self.frozen[i]
    }

    /// FFC state and milliseconds since the last FFC at frame `i`.
    pub(crate) fn ffc(&self, i: usize) -> (FfcState, u32) {
        (self.ffc[i], self.ms_since_ffc[i])
    }

    /// AGC window shift at frame `i` (°C).
    pub(crate) fn agc(&self, i: usize) -> f32 {
        self.agc[i]
    }

    /// Applies gain, offset, fixed pattern and temporal noise of frame `i` to `buf` (°C).
    pub(crate) fn apply(
        &self,
        buf: &mut [f32],
        fixed: &[f32],
        w: usize,
        i: usize,
        noise_seed: u64,
    ) {
        let mut rng = Rng::new(derive(noise_seed, i as u64));
        let (gain, offset) = (self.gain[i], self.offset[i]);
        for (row, fixed_row) in buf.chunks_mut(w).zip(fixed.chunks(w)) {
            let row_noise = 0.012 * rng.fast_normal();
            for (p, f) in row.iter_mut().zip(fixed_row) {
                *p = GAIN_PIVOT_C
                    + (*p - GAIN_PIVOT_C) * gain
                    + offset
                    + f
                    + row_noise
                    + NETD_C * rng.fast_normal();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_maps_linearly_and_clips() {
        let g = GrayWindow::HARBOR;
        assert_eq!(g.level(-8.0), 0);
        assert_eq!(g.level(42.0), 255);
        assert_eq!(g.level(-40.0), 0);
        assert_eq!(g.level(90.0), 255);
        assert_eq!(g.level(17.0), 128);
        assert_eq!(g.level_ck(crate::frame::celsius_to_centikelvin(17.0)), 128);
        assert!(g.shifted(1.0).level(17.0) < 128);
    }

    #[test]
    fn ffc_freezes_one_frame_then_steps() {
        let mut found = false;
        for seed in 0..40 {
            let t = Timeline::new(120, &mut Rng::new(seed), true);
            for e in t.events.iter().filter(|e| e.kind == SensorEventKind::Ffc) {
                found = true;
                assert!(t.frozen(e.frame) && !t.frozen(e.frame + 1) && e.frame >= 2);
                assert_eq!(t.ffc(e.frame - 1).0, FfcState::Imminent);
                assert_eq!(t.ffc(e.frame + 1), (FfcState::Complete, 1000));
                assert!(e.step_c.abs() < 2.0);
            }
            let off = Timeline::new(120, &mut Rng::new(seed), false);
            assert!(off.events.is_empty() && (0..120).all(|i| !off.frozen(i)));
        }
        assert!(found);
    }

    #[test]
    fn fixed_pattern_is_small_and_per_camera() {
        let a = fixed_pattern(64, 48, 1);
        assert_eq!(a, fixed_pattern(64, 48, 1));
        assert_ne!(a, fixed_pattern(64, 48, 2));
        let typical = a.iter().filter(|v| v.abs() < 1.0).count();
        assert!(typical >= a.len() - 2);
    }
}
