//! The prediction-error term of the frame score, from a forward pass's prediction and target.
//!
//! MNAD takes the PSNR of the whole frame. A person on a 160×128 harbor view covers a few dozen
//! pixels, so the whole-frame mean error barely moves when one walks onto the pier, while a
//! camera's flat-field correction or gain step shifts every pixel at once. Two options address
//! this: the PSNR of the worst local patch instead of the whole frame, and removing the frame's
//! mean prediction error (a global level step) before squaring. Masked pixels never count.

/// How the prediction-error term is pooled over the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TermsConfig {
    /// Side of the square patches (model-input pixels) whose worst mean error gives the PSNR;
    /// 0: the whole frame (MNAD).
    #[serde(default)]
    pub patch: usize,
    /// Subtract the frame's mean prediction error before squaring, so a global level step (FFC,
    /// AGC) is not an anomaly.
    #[serde(default)]
    pub offset_compensation: bool,
}

impl TermsConfig {
    /// MNAD's whole-frame PSNR.
    pub const PAPER: TermsConfig = TermsConfig {
        patch: 0,
        offset_compensation: false,
    };

    /// A short description for reports, e.g. `patch 16, offset-compensated`.
    pub fn describe(&self) -> String {
        let pool = if self.patch == 0 {
            "whole frame".to_string()
        } else {
            format!("worst {0}×{0} patch", self.patch)
        };
        if self.offset_compensation {
            format!("{pool}, offset-compensated")
        } else {
            pool
        }
    }
}

/// Working buffers of [`frame_psnr_with`], kept between frames so that scoring a stream
/// allocates nothing once they have their size.
#[derive(Debug, Clone, Default)]
pub struct TermScratch {
    diff: Vec<f64>,
    sum: Vec<f64>,
    cnt: Vec<u32>,
}

impl TermScratch {
    /// The per-pixel squared error (H·W, [0, 1] space, offset-compensated when the terms say
    /// so) of the last [`frame_psnr_with`] call, for the zone terms.
    pub fn squared_error(&self) -> &[f64] {
        &self.diff
    }
}

/// The pixels of each calibrated zone on the model grid, masked pixels left out, so that each
/// zone gets its own prediction-error term (a person on a closed pier end is a few dozen pixels
/// of a whole frame, but most of the zone's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZonePixels {
    pixels: Vec<Vec<u32>>,
}

impl ZonePixels {
    /// Rasterizes `zones` (normalised polygons) on a `width`×`height` grid; `masked` pixels
    /// (H·W, true = ignore) never count. A zone may overlap another: each gets all its pixels.
    pub fn new(
        zones: &[crate::score::zones::Polygon],
        width: usize,
        height: usize,
        masked: Option<&[bool]>,
    ) -> Self {
        let pixels = zones
            .iter()
            .map(|z| {
                z.rasterize(width, height)
                    .into_iter()
                    .enumerate()
                    .filter(|&(i, inside)| inside && masked.is_none_or(|m| !m[i]))
                    .map(|(i, _)| i as u32)
                    .collect()
            })
            .collect();
        Self { pixels }
    }

    /// Number of zones.
    pub fn len(&self) -> usize {
        self.pixels.len()
    }

    /// Whether there are no zones.
    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Unmasked pixels of each zone.
    pub fn counts(&self) -> Vec<usize> {
        self.pixels.iter().map(Vec::len).collect()
    }

    /// Each zone's PSNR (dB) from a squared-error map (H·W), written into `out`. A zone with no
    /// unmasked pixel gets +∞ (a perfect prediction: never anomalous).
    pub fn psnrs_into(&self, sq_err: &[f64], out: &mut Vec<f64>) {
        out.clear();
        out.extend(self.pixels.iter().map(|px| {
            if px.is_empty() {
                return f64::INFINITY;
            }
            let s: f64 = px.iter().map(|&i| sq_err[i as usize]).sum();
            let mse = s / px.len() as f64;
            10.0 * (1.0 / mse.max(1e-10)).log10()
        }));
    }
}

/// PSNR (dB, in [0, 1] pixel space as MNAD) of `pred` against `target` — both (c, H, W) in
/// [−1, 1] — pooled as `cfg` says, over the pixels `masked` (H·W, true = ignore) leaves.
pub fn frame_psnr(
    pred: &[f32],
    target: &[f32],
    width: usize,
    height: usize,
    cfg: &TermsConfig,
    masked: Option<&[bool]>,
) -> f64 {
    let mut scratch = TermScratch::default();
    frame_psnr_with(&mut scratch, pred, target, width, height, cfg, masked)
}

/// [`frame_psnr`] with reusable working buffers.
pub fn frame_psnr_with(
    scratch: &mut TermScratch,
    pred: &[f32],
    target: &[f32],
    width: usize,
    height: usize,
    cfg: &TermsConfig,
    masked: Option<&[bool]>,
) -> f64 {
    let plane = width * height;
    let channels = (pred.len() / plane.max(1)).max(1);
    let keep = |i: usize| masked.is_none_or(|m| !m[i]);
    // Signed error per pixel in [0, 1] space, averaged over channels.
    let diff = &mut scratch.diff;
    diff.clear();
    diff.resize(plane, 0.0);
    for c in 0..channels {
        for (i, d) in diff.iter_mut().enumerate() {
            let j = c * plane + i;
            *d += f64::from(pred[j] - target[j]) * 0.5 / channels as f64;
        }
    }
    if cfg.offset_compensation {
        let (mut s, mut n) = (0f64, 0usize);
        for (i, d) in diff.iter().enumerate() {
            if keep(i) {
                s += d;
                n += 1;
            }
        }
        let mean = if n > 0 { s / n as f64 } else { 0.0 };
        diff.iter_mut().for_each(|d| *d -= mean);
    }
    // Squared in place.
    diff.iter_mut().for_each(|d| *d *= *d);
    let err = &scratch.diff;
    let mse = if cfg.patch == 0 || cfg.patch >= width.min(height) {
        masked_mean(err, masked)
    } else {
        worst_patch(
            err,
            width,
            height,
            cfg.patch,
            masked,
            &mut scratch.sum,
            &mut scratch.cnt,
        )
        .unwrap_or_else(|| masked_mean(err, masked))
    };
    10.0 * (1.0 / mse.max(1e-10)).log10()
}

fn masked_mean(err: &[f64], masked: Option<&[bool]>) -> f64 {
    let (mut s, mut n) = (0f64, 0usize);
    for (i, e) in err.iter().enumerate() {
        if masked.is_none_or(|m| !m[i]) {
            s += e;
            n += 1;
        }
    }
    if n > 0 {
        s / n as f64
    } else {
        0.0
    }
}

/// The largest mean error over k×k windows at stride k/2 (windows less than half unmasked are
/// skipped); None when no window qualifies.
fn worst_patch(
    err: &[f64],
    w: usize,
    h: usize,
    k: usize,
    masked: Option<&[bool]>,
    sum: &mut Vec<f64>,
    cnt: &mut Vec<u32>,
) -> Option<f64> {
    // Integral images of the error and of the unmasked count, (h+1)×(w+1).
    let (iw, ih) = (w + 1, h + 1);
    sum.clear();
    sum.resize(iw * ih, 0.0);
    cnt.clear();
    cnt.resize(iw * ih, 0);
    for y in 0..h {
        let (mut rs, mut rc) = (0f64, 0u32);
        for x in 0..w {
            let i = y * w + x;
            if masked.is_none_or(|m| !m[i]) {
                rs += err[i];
                rc += 1;
            }
            sum[(y + 1) * iw + x + 1] = sum[y * iw + x + 1] + rs;
            cnt[(y + 1) * iw + x + 1] = cnt[y * iw + x + 1] + rc;
        }
    }
    let stride = (k / 2).max(1);
    // Window starts at the stride, and always one flush with the far edge.
    let starts = |len: usize| {
        let last = len - k;
        (0..=last)
            .step_by(stride)
            .chain((!last.is_multiple_of(stride)).then_some(last))
    };
    let need = (k * k).div_ceil(2) as u32;
    let mut best: Option<f64> = None;
    for y0 in starts(h) {
        for x0 in starts(w) {
            let (y1, x1) = (y0 + k, x0 + k);
            let c = cnt[y1 * iw + x1] + cnt[y0 * iw + x0] - cnt[y0 * iw + x1] - cnt[y1 * iw + x0];
            if c < need {
                continue;
            }
            let s = sum[y1 * iw + x1] + sum[y0 * iw + x0] - sum[y0 * iw + x1] - sum[y1 * iw + x0];
            let m = s / f64::from(c);
            best = Some(best.map_or(m, |b: f64| b.max(m)));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = 32;
    const H: usize = 24;

    /// A target of zeros and a prediction off by `level` everywhere plus `blob` in a 4×4 square.
    fn frames(level: f32, blob: f32) -> (Vec<f32>, Vec<f32>) {
        let target = vec![0f32; W * H];
        let mut pred = vec![level; W * H];
        for y in 10..14 {
            for x in 20..24 {
                pred[y * W + x] += blob;
            }
        }
        (pred, target)
    }

    #[test]
    fn zone_psnrs_see_a_small_blob_the_whole_frame_barely_does() {
        use crate::score::zones::Polygon;
        // The blob covers x 20..24, y 10..14: the zone [0.5, 1]×[0.25, 0.75] holds it.
        let zone = Polygon(vec![[0.5, 0.25], [1.0, 0.25], [1.0, 0.75], [0.5, 0.75]]);
        let away = Polygon(vec![[0.0, 0.0], [0.25, 0.0], [0.25, 0.25], [0.0, 0.25]]);
        let (p, t) = frames(0.02, 0.4);
        let mut scratch = TermScratch::default();
        let whole = frame_psnr_with(&mut scratch, &p, &t, W, H, &TermsConfig::PAPER, None);
        let zones = ZonePixels::new(&[zone.clone(), away], W, H, None);
        assert_eq!(zones.counts(), vec![16 * 12, 8 * 6]);
        let mut out = Vec::new();
        zones.psnrs_into(scratch.squared_error(), &mut out);
        // Background (0.01)² = 1e-4 (40 dB); the blob's 16 pixels at (0.21)² in the zone's 192.
        let in_zone = (16.0 * 0.21f64.powi(2) + 176.0 * 1e-4) / 192.0;
        assert!(
            (out[0] - 10.0 * (1.0 / in_zone).log10()).abs() < 1e-4,
            "{out:?}"
        );
        assert!((out[1] - 40.0).abs() < 1e-4, "{out:?}");
        assert!(out[0] < whole - 5.0, "zone {} vs whole {whole}", out[0]);
        // Masking the zone leaves it no pixel: never anomalous.
        let all = vec![true; W * H];
        let masked = ZonePixels::new(&[zone], W, H, Some(&all));
        masked.psnrs_into(scratch.squared_error(), &mut out);
        assert_eq!(out, vec![f64::INFINITY]);
    }

    #[test]
    fn whole_frame_matches_mnad_psnr() {
        // Error (0.2 / 2)² = 0.01 everywhere: 20 dB.
        let (p, t) = frames(0.2, 0.0);
        let v = frame_psnr(&p, &t, W, H, &TermsConfig::PAPER, None);
        assert!((v - 20.0).abs() < 1e-6, "{v}");
    }

    #[test]
    fn offset_compensation_ignores_a_global_step_but_not_an_object() {
        let oc = TermsConfig {
            patch: 0,
            offset_compensation: true,
        };
        let (p, t) = frames(0.2, 0.0);
        assert!(frame_psnr(&p, &t, W, H, &oc, None) >= 99.9);
        let (p, t) = frames(0.2, 0.6);
        assert!(frame_psnr(&p, &t, W, H, &oc, None) < 40.0);
    }

    #[test]
    fn worst_patch_sees_a_small_object_the_frame_mean_dilutes() {
        let (p, t) = frames(0.0, 0.6);
        let whole = frame_psnr(&p, &t, W, H, &TermsConfig::PAPER, None);
        let patch = TermsConfig {
            patch: 8,
            offset_compensation: false,
        };
        let local = frame_psnr(&p, &t, W, H, &patch, None);
        // 16 of 768 pixels at 0.09: whole-frame MSE 0.001875 (27.3 dB); the best 8×8 window
        // holds all 16: 0.0225 (16.5 dB).
        assert!((whole - 27.27).abs() < 0.01, "{whole}");
        assert!((local - 16.48).abs() < 0.01, "{local}");
    }

    #[test]
    fn masked_pixels_never_count() {
        let (p, t) = frames(0.0, 0.6);
        let mut mask = vec![false; W * H];
        for y in 8..16 {
            for x in 18..26 {
                mask[y * W + x] = true;
            }
        }
        for cfg in [
            TermsConfig::PAPER,
            TermsConfig {
                patch: 8,
                offset_compensation: true,
            },
        ] {
            assert!(
                frame_psnr(&p, &t, W, H, &cfg, Some(&mask)) >= 99.9,
                "{cfg:?}"
            );
        }
    }
}
