//! False colour for thermal frames and the red/yellow anomaly overlay.

use std::sync::OnceLock;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

use super::{Canvas, DisplayError};
use crate::frame::ThermalFrame;

/// Ironbow-like anchors (position, colour): black → purple → magenta → red → orange → yellow →
/// white. Luminance rises monotonically, so "brighter" always reads as "warmer", also in grey.
const IRONBOW_ANCHORS: [(f32, [u8; 3]); 7] = [
    (0.00, [0, 0, 10]),
    (0.15, [40, 0, 110]),
    (0.35, [150, 0, 150]),
    (0.55, [225, 50, 50]),
    (0.70, [250, 120, 0]),
    (0.85, [255, 200, 20]),
    (1.00, [255, 255, 230]),
];

/// Share of pixels ignored at each end of the stretch: dead and hot pixels, sun glints.
const CLIP_FRACTION: f64 = 0.01;
/// Histogram bins for the percentile stretch; on the stack, so a call never allocates.
const BINS: usize = 1024;
/// Widest bin `robust_range` can need: the whole u16 range over [`BINS`] bins.
const MAX_BIN_WIDTH: usize = (u16::MAX as usize + 1) / BINS;

/// The 256-entry ironbow colour map (built on first use).
pub fn ironbow() -> &'static [Rgb888; 256] {
    static LUT: OnceLock<[Rgb888; 256]> = OnceLock::new();
    LUT.get_or_init(|| {
        let mut lut = [Rgb888::BLACK; 256];
        for (i, c) in lut.iter_mut().enumerate() {
            let t = i as f32 / 255.0;
            let k = IRONBOW_ANCHORS
                .windows(2)
                .position(|w| t <= w[1].0)
                .unwrap_or(IRONBOW_ANCHORS.len() - 2);
            let ((t0, a), (t1, b)) = (IRONBOW_ANCHORS[k], IRONBOW_ANCHORS[k + 1]);
            let f = ((t - t0) / (t1 - t0)).clamp(0.0, 1.0);
            let mix = |j: usize| {
                (f32::from(a[j]) + (f32::from(b[j]) - f32::from(a[j])) * f).round() as u8
            };
            *c = Rgb888::new(mix(0), mix(1), mix(2));
        }
        lut
    })
}

/// The 1st and 99th percentile of `pixels`, falling back to the full min–max when those
/// coincide (e.g. a small hot spot on a flat scene); `None` if there are no pixels.
pub fn robust_range(pixels: &[u16]) -> Option<(u16, u16)> {
    if pixels.is_empty() {
        return None;
    }
    let (min, max) = pixels
        .iter()
        .fold((u16::MAX, u16::MIN), |(lo, hi), &p| (lo.min(p), hi.max(p)));
    if min == max {
        return Some((min, max));
    }
    // A coarse histogram over [min, max] finds the bins holding the two percentiles, then a
    // second pass counts the values inside just those bins: exact, and all on the stack.
    let width = (usize::from(max - min) + 1).div_ceil(BINS);
    let bins = usize::from(max - min) / width + 1;
    let mut coarse = [0u32; BINS];
    for &p in pixels {
        coarse[usize::from(p - min) / width] += 1;
    }
    let n = pixels.len() as u64;
    let need_lo = (n as f64 * CLIP_FRACTION) as u64 + 1;
    let need_hi = ((n as f64 * (1.0 - CLIP_FRACTION)).ceil() as u64).clamp(1, n);
    let (lo_bin, lo_before) = first_reaching(&coarse[..bins], 0, need_lo);
    let (hi_bin, hi_before) = first_reaching(&coarse[..bins], 0, need_hi);
    let mut fine_lo = [0u32; MAX_BIN_WIDTH];
    let mut fine_hi = [0u32; MAX_BIN_WIDTH];
    for &p in pixels {
        let off = usize::from(p - min);
        let b = off / width;
        if b == lo_bin {
            fine_lo[off % width] += 1;
        }
        if b == hi_bin {
            fine_hi[off % width] += 1;
        }
    }
    let lo_off = lo_bin * width + first_reaching(&fine_lo[..width], lo_before, need_lo).0;
    let hi_off = hi_bin * width + first_reaching(&fine_hi[..width], hi_before, need_hi).0;
    let (lo, hi) = (min + lo_off as u16, min + hi_off as u16);
    Some(if hi > lo { (lo, hi) } else { (min, max) })
}

/// Index of the first bin at which the running count, starting at `before`, reaches `need`,
/// and the count before that bin.
fn first_reaching(hist: &[u32], mut before: u64, need: u64) -> (usize, u64) {
    for (i, &h) in hist.iter().enumerate() {
        if before + u64::from(h) >= need {
            return (i, before);
        }
        before += u64::from(h);
    }
    (hist.len().saturating_sub(1), before)
}

/// Checks that a frame has pixels to draw.
pub(crate) fn check_frame(frame: &ThermalFrame) -> Result<(), DisplayError> {
    if frame.width() == 0 || frame.height() == 0 || frame.pixels().is_empty() {
        return Err(DisplayError::input(format!(
            "cannot draw an empty {}×{} frame",
            frame.width(),
            frame.height()
        )));
    }
    Ok(())
}

/// Checks that an error map holds `grid_w`×`grid_h` values.
pub(crate) fn check_error_map(
    map: &[f32],
    grid_w: usize,
    grid_h: usize,
) -> Result<(), DisplayError> {
    if grid_w == 0 || grid_h == 0 || grid_w.checked_mul(grid_h) != Some(map.len()) {
        return Err(DisplayError::input(format!(
            "error map holds {} values but its grid is {grid_w}×{grid_h}",
            map.len()
        )));
    }
    Ok(())
}

/// The canvas pixels covered by `dest`, as (first x, first y, last x, last y).
fn visible(canvas: &Canvas, dest: &Rectangle) -> Option<(i32, i32, i32, i32)> {
    let clip = dest.intersection(&canvas.area());
    let br = clip.bottom_right()?;
    Some((clip.top_left.x, clip.top_left.y, br.x, br.y))
}

/// Source index along one axis for nearest-neighbour scaling of `src` samples onto `dst`.
#[inline]
fn nearest(d: i32, dst: u32, src: usize) -> usize {
    ((d as u64 * src as u64) / u64::from(dst)).min(src as u64 - 1) as usize
}

/// Draws `frame` in false colour scaled (nearest-neighbour) into `dest`, stretched over its
/// [`robust_range`]; returns that range so callers can label the colour scale.
pub fn draw_frame(
    canvas: &mut Canvas,
    frame: &ThermalFrame,
    dest: Rectangle,
) -> Result<(u16, u16), DisplayError> {
    check_frame(frame)?;
    let (lo, hi) = robust_range(frame.pixels()).expect("checked non-empty");
    let Some((x0, y0, x1, y1)) = visible(canvas, &dest) else {
        return Ok((lo, hi));
    };
    let lut = ironbow();
    let span = u32::from((hi - lo).max(1));
    let (fw, fh) = (frame.width() as usize, frame.height() as usize);
    let px = frame.pixels();
    for y in y0..=y1 {
        let row = nearest(y - dest.top_left.y, dest.size.height, fh) * fw;
        for x in x0..=x1 {
            let p = px[row + nearest(x - dest.top_left.x, dest.size.width, fw)];
            // Integer maths, so the top of the range is exactly the last colour.
            let i = (u32::from(p.saturating_sub(lo)) * 255 / span).min(255) as usize;
            canvas.set_pixel(x, y, lut[i]);
        }
    }
    Ok((lo, hi))
}

/// Blends the anomaly overlay into `dest`: grid cells whose error exceeds `level` turn red, and
/// yellow and more opaque as the error reaches twice `level` (or `level + 1` when `level` ≤ 0).
pub fn draw_overlay(
    canvas: &mut Canvas,
    error_map: &[f32],
    grid_w: usize,
    grid_h: usize,
    level: f32,
    dest: Rectangle,
) -> Result<(), DisplayError> {
    check_error_map(error_map, grid_w, grid_h)?;
    if !level.is_finite() {
        return Err(DisplayError::input(format!(
            "overlay level must be a finite number, got {level}"
        )));
    }
    let Some((x0, y0, x1, y1)) = visible(canvas, &dest) else {
        return Ok(());
    };
    let span = if level > 0.0 { level } else { 1.0 };
    for y in y0..=y1 {
        let row = nearest(y - dest.top_left.y, dest.size.height, grid_h) * grid_w;
        for x in x0..=x1 {
            let e = error_map[row + nearest(x - dest.top_left.x, dest.size.width, grid_w)];
            // NaN is never above the level, so missing values never light up.
            if e.is_nan() || e <= level {
                continue;
            }
            let t = ((e - level) / span).min(1.0);
            let alpha = 0.5 + 0.4 * t;
            let over = [255.0, 255.0 * t, 0.0];
            let base = canvas.pixel(x, y).expect("inside the visible area");
            let mix = |b: u8, o: f32| (f32::from(b) * (1.0 - alpha) + o * alpha).round() as u8;
            canvas.set_pixel(
                x,
                y,
                Rgb888::new(
                    mix(base.r(), over[0]),
                    mix(base.g(), over[1]),
                    mix(base.b(), over[2]),
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameMeta;

    fn luma(c: Rgb888) -> f32 {
        0.299 * f32::from(c.r()) + 0.587 * f32::from(c.g()) + 0.114 * f32::from(c.b())
    }

    fn frame(w: u32, h: u32, f: impl Fn(u32, u32) -> u16) -> ThermalFrame {
        let px = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| f(x, y));
        ThermalFrame::new(w, h, px.collect(), FrameMeta::default()).unwrap()
    }

    #[test]
    fn ironbow_runs_dark_to_bright_monotonically() {
        let lut = ironbow();
        assert!(luma(lut[0]) < 5.0);
        assert!(luma(lut[255]) > 240.0);
        for w in lut.windows(2) {
            assert!(luma(w[1]) >= luma(w[0]) - 0.5, "{:?} -> {:?}", w[0], w[1]);
        }
        // Mid-scale is reddish, not grey: it is a false-colour map.
        assert!(lut[150].r() > lut[150].b() + 50);
    }

    #[test]
    fn robust_range_ignores_outliers_and_handles_flat_or_empty_frames() {
        let mut px: Vec<u16> = (0..10_000).map(|i| 1000 + (i % 1001) as u16).collect();
        px[17] = 60_000; // a hot pixel
        px[42] = 3; // a dead pixel
        let (lo, hi) = robust_range(&px).unwrap();
        assert!((1000..1030).contains(&lo), "{lo}");
        assert!((1970..=2100).contains(&hi), "{hi}");
        assert_eq!(robust_range(&[7, 7, 7]), Some((7, 7)));
        assert_eq!(robust_range(&[]), None);
        // A hot spot under 1% of a flat scene still stretches over min–max.
        let mut flat = vec![500u16; 1000];
        flat[3] = 900;
        assert_eq!(robust_range(&flat), Some((500, 900)));
        // Narrow (8-bit) ranges are exact.
        let gray: Vec<u16> = (0..=255).cycle().take(25_600).collect();
        assert_eq!(robust_range(&gray), Some((2, 253)));
    }

    #[test]
    fn hot_blob_is_drawn_warmer_and_scaled_nearest_neighbour() {
        let f = frame(20, 10, |x, y| {
            if (12..16).contains(&x) && (2..6).contains(&y) {
                3000
            } else {
                1000 + (x + y) as u16
            }
        });
        let mut c = Canvas::new(60, 40).unwrap();
        let dest = Rectangle::new(Point::new(10, 10), Size::new(40, 20));
        let (lo, hi) = draw_frame(&mut c, &f, dest).unwrap();
        assert!(lo >= 1000 && hi <= 3000 && hi > lo);
        // Blob frame pixels (12..16, 2..6) land at canvas (10 + 2x, 10 + 2y).
        let hot = c.pixel(10 + 2 * 13, 10 + 2 * 3).unwrap();
        let cold = c.pixel(10 + 2 * 2, 10 + 2 * 7).unwrap();
        assert!(luma(hot) > luma(cold) + 100.0, "{hot:?} vs {cold:?}");
        assert_eq!(hot, ironbow()[255]);
        // Edges of the blob after 2× scaling, and nothing drawn outside dest.
        assert_eq!(c.pixel(10 + 24, 10 + 4), Some(hot));
        assert_ne!(c.pixel(10 + 23, 10 + 4), Some(hot));
        assert_eq!(c.pixel(9, 15), Some(Rgb888::BLACK));
        assert_eq!(c.pixel(50, 15), Some(Rgb888::BLACK));
        assert_eq!(c.pixel(20, 30), Some(Rgb888::BLACK));
    }

    #[test]
    fn dest_partly_off_canvas_is_clipped() {
        let f = frame(4, 4, |x, _| x as u16 * 100);
        let mut c = Canvas::new(8, 8).unwrap();
        draw_frame(
            &mut c,
            &f,
            Rectangle::new(Point::new(-6, 4), Size::new(16, 16)),
        )
        .unwrap();
        // Column 7 of the canvas is dest column 13 → frame column 3, the hottest.
        assert_eq!(c.pixel(7, 7), Some(ironbow()[255]));
        assert_eq!(c.pixel(7, 3), Some(Rgb888::BLACK));
    }

    #[test]
    fn empty_frames_and_mismatched_maps_are_errors() {
        let mut c = Canvas::new(8, 8).unwrap();
        let all = c.area();
        let empty = ThermalFrame::new(0, 0, vec![], FrameMeta::default()).unwrap();
        assert!(draw_frame(&mut c, &empty, all).is_err());
        let e = draw_overlay(&mut c, &[0.0; 5], 2, 3, 0.5, all).unwrap_err();
        assert!(e.to_string().contains("2×3"), "{e}");
        assert!(draw_overlay(&mut c, &[], 0, 0, 0.5, all).is_err());
        assert!(draw_overlay(&mut c, &[0.0; 4], 2, 2, f32::NAN, all).is_err());
    }

    #[test]
    fn overlay_marks_only_cells_above_level_and_grows_yellow() {
        let mut c = Canvas::new(8, 4).unwrap();
        let grey = Rgb888::new(100, 100, 100);
        c.clear(grey);
        // A 4×2 grid over an 8×4 canvas: each cell is 2×2 pixels.
        let map = [0.1, 0.6, 1.0, f32::NAN, 0.0, 0.0, 0.0, 0.5];
        let all = c.area();
        draw_overlay(&mut c, &map, 4, 2, 0.5, all).unwrap();
        assert_eq!(c.pixel(0, 0), Some(grey));
        assert_eq!(c.pixel(6, 1), Some(grey), "NaN is not an anomaly");
        assert_eq!(
            c.pixel(7, 3),
            Some(grey),
            "equal to the level is not above it"
        );
        let weak = c.pixel(2, 1).unwrap();
        let strong = c.pixel(5, 0).unwrap();
        assert!(weak.r() > 150 && weak.b() < 100, "{weak:?}");
        assert!(
            strong.g() > weak.g() && strong.b() < weak.b(),
            "{strong:?} vs {weak:?}"
        );
    }
}
