//! Alert snapshots: a false-colour PNG with the anomaly overlay and region boxes, and the raw
//! 16-bit pixels around the regions as a NumPy `.npy` file, for the operator and for later
//! relabelling or retraining.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use embedded_graphics::mono_font::{iso_8859_1 as fonts, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};

use super::palette::{check_error_map, check_frame, draw_frame, draw_overlay};
use super::status::{inside_stroke, ALERT_RED, BAR, TEXT};
use super::{write_atomic, Canvas, DisplayError};
use crate::frame::ThermalFrame;
use crate::score::zones::Region;
use crate::source::npy;

/// Region boxes and labels: cyan appears nowhere in the ironbow map or the red/yellow overlay.
pub const BOX_COLOUR: Rgb888 = Rgb888::new(0, 255, 255);
/// Frames narrower and lower than this are drawn at 2× so boxes and captions stay legible.
const SMALL_FRAME: u32 = 320;

/// The files written for one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The false-colour picture, `<dir>/<stem>.png`.
    pub png: PathBuf,
    /// The raw 16-bit crop, `<dir>/<stem>.raw.npy`, shape (height, width), dtype `<u2`.
    pub raw: PathBuf,
    /// The crop as `[x, y, width, height]` in frame pixels.
    pub crop: [u32; 4],
}

/// A grid bounding box (inclusive, as in [`Region::bbox`]) in frame pixels, inclusive: every
/// frame pixel that any of the box's grid cells covers.
pub fn grid_box_to_frame(
    bbox: [usize; 4],
    grid_w: usize,
    grid_h: usize,
    frame_w: u32,
    frame_h: u32,
) -> [u32; 4] {
    let (fw, fh) = (u64::from(frame_w), u64::from(frame_h));
    let (gw, gh) = (grid_w.max(1) as u64, grid_h.max(1) as u64);
    let lo = |g: usize, f: u64, n: u64| ((g as u64 * f) / n).min(f - 1) as u32;
    let hi = |g: usize, f: u64, n: u64| (((g as u64 + 1) * f).div_ceil(n).clamp(1, f) - 1) as u32;
    [
        lo(bbox[0], fw, gw),
        lo(bbox[1], fh, gh),
        hi(bbox[2], fw, gw),
        hi(bbox[3], fh, gh),
    ]
}

/// Checks a file stem: one plain file name, so a snapshot never lands outside `dir`.
fn check_stem(stem: &str) -> Result<(), DisplayError> {
    if stem.is_empty() || stem == "." || stem == ".." || stem.contains(['/', '\\', '\0']) {
        return Err(DisplayError::input(format!(
            "snapshot name {stem:?} must be a plain file name"
        )));
    }
    Ok(())
}

/// The overlay level for a snapshot. The regions are what the detector reported, so the
/// overlay lights at least their above-average cells; without regions, cells far above the
/// map's typical error (median + 4 robust standard deviations) are lit.
fn overlay_level(error_map: &[f32], regions: &[Region]) -> f32 {
    let region_level = regions
        .iter()
        .map(|r| r.mean_error)
        .filter(|e| e.is_finite())
        .fold(f32::INFINITY, f32::min);
    if region_level.is_finite() {
        return region_level.next_down();
    }
    let mut v: Vec<f32> = error_map
        .iter()
        .copied()
        .filter(|e| e.is_finite())
        .collect();
    if v.is_empty() {
        return f32::MAX;
    }
    let median = |v: &mut [f32]| {
        let mid = v.len() / 2;
        *v.select_nth_unstable_by(mid, f32::total_cmp).1
    };
    let m = median(&mut v);
    for e in v.iter_mut() {
        *e = (*e - m).abs();
    }
    let mad = median(&mut v);
    m + 4.0 * 1.4826 * mad
}

/// Writes `<stem>.png` (false colour, heat overlay, region boxes, caption with score and
/// threshold) and `<stem>.raw.npy` (the frame's raw pixels around the regions, or the whole
/// frame without regions) into `dir`, creating it if needed; each file appears atomically.
#[allow(clippy::too_many_arguments)]
pub fn write_snapshot(
    dir: &Path,
    stem: &str,
    frame: &ThermalFrame,
    error_map: &[f32],
    grid_w: usize,
    grid_h: usize,
    regions: &[Region],
    score: f64,
    threshold: f64,
) -> Result<Snapshot, DisplayError> {
    check_stem(stem)?;
    check_frame(frame)?;
    check_error_map(error_map, grid_w, grid_h)?;
    for r in regions {
        let [x0, y0, x1, y1] = r.bbox;
        if x0 > x1 || y0 > y1 || x1 >= grid_w || y1 >= grid_h {
            return Err(DisplayError::input(format!(
                "region box {:?} does not fit the {grid_w}×{grid_h} error grid",
                r.bbox
            )));
        }
    }
    let (fw, fh) = (frame.width(), frame.height());
    let boxes = || {
        regions
            .iter()
            .map(|r| grid_box_to_frame(r.bbox, grid_w, grid_h, fw, fh))
    };

    // The picture.
    let s = if fw.max(fh) < SMALL_FRAME { 2 } else { 1 };
    let font = if fw * s >= 640 {
        &fonts::FONT_9X15
    } else {
        &fonts::FONT_6X10
    };
    let caption_h = font.character_size.height + 4;
    let mut canvas = Canvas::new(fw * s, fh * s + caption_h)?;
    let image = Rectangle::new(Point::zero(), Size::new(fw * s, fh * s));
    draw_frame(&mut canvas, frame, image)?;
    draw_overlay(
        &mut canvas,
        error_map,
        grid_w,
        grid_h,
        overlay_level(error_map, regions),
        image,
    )?;
    let label = MonoTextStyle::new(font, BOX_COLOUR);
    for (r, [x0, y0, x1, y1]) in regions.iter().zip(boxes()) {
        let rect = Rectangle::new(
            Point::new((x0 * s) as i32, (y0 * s) as i32),
            Size::new((x1 - x0 + 1) * s, (y1 - y0 + 1) * s),
        );
        let Ok(()) = rect
            .into_styled(inside_stroke(BOX_COLOUR, s))
            .draw(&mut canvas);
        if let Some(zone) = &r.zone {
            // Above the box when there is room, otherwise just inside it.
            let h = font.character_size.height;
            let y = if rect.top_left.y > h as i32 {
                rect.top_left.y - h as i32 - 1
            } else {
                rect.top_left.y + s as i32 + 1
            };
            let at = Point::new(rect.top_left.x, y);
            let Ok(_) = Text::with_baseline(zone, at, label, Baseline::Top).draw(&mut canvas);
        }
    }
    let strip = Rectangle::new(Point::new(0, (fh * s) as i32), Size::new(fw * s, caption_h));
    let Ok(()) = strip
        .into_styled(PrimitiveStyle::with_fill(BAR))
        .draw(&mut canvas);
    let mut caption = String::new();
    let _ = write!(
        caption,
        "#{} score {score:.4} thr {threshold:.4}",
        frame.meta.seq
    );
    match regions.len() {
        0 => {}
        1 => caption.push_str(" (1 region)"),
        n => {
            let _ = write!(caption, " ({n} regions)");
        }
    }
    let colour = if score > threshold { ALERT_RED } else { TEXT };
    let Ok(_) = Text::with_baseline(
        &caption,
        strip.top_left + Point::new(2, 2),
        MonoTextStyle::new(font, colour),
        Baseline::Top,
    )
    .draw(&mut canvas);

    // The crop: the union of the region boxes, widened by a quarter of its larger side (at
    // least 4 pixels) so the surroundings are there for relabelling.
    let crop = match boxes().reduce(|a, b| {
        [
            a[0].min(b[0]),
            a[1].min(b[1]),
            a[2].max(b[2]),
            a[3].max(b[3]),
        ]
    }) {
        None => [0, 0, fw, fh],
        Some([x0, y0, x1, y1]) => {
            let margin = ((x1 - x0 + 1).max(y1 - y0 + 1) / 4).max(4);
            let (cx0, cy0) = (x0.saturating_sub(margin), y0.saturating_sub(margin));
            let (cx1, cy1) = ((x1 + margin).min(fw - 1), (y1 + margin).min(fh - 1));
            [cx0, cy0, cx1 - cx0 + 1, cy1 - cy0 + 1]
        }
    };
    let [cx, cy, cw, ch] = crop.map(|v| v as usize);
    let mut raw = Vec::with_capacity(cw * ch);
    for row in frame.pixels().chunks_exact(fw as usize).skip(cy).take(ch) {
        raw.extend_from_slice(&row[cx..cx + cw]);
    }

    fs::create_dir_all(dir).map_err(|e| DisplayError::io(dir, e))?;
    let png = dir.join(format!("{stem}.png"));
    let raw_path = dir.join(format!("{stem}.raw.npy"));
    canvas.save_png(&png)?;
    if let Err(e) = write_atomic(&raw_path, &npy::encode_u16(&[ch, cw], &raw)) {
        // Half a snapshot is worse than none: an alert would point at a picture without data.
        let _ = fs::remove_file(&png);
        return Err(e);
    }
    log::debug!(
        "snapshot {}: {} regions, crop {crop:?}",
        png.display(),
        regions.len()
    );
    Ok(Snapshot {
        png,
        raw: raw_path,
        crop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameMeta;
    use crate::source::npy::{read_npy, NpyData};

    fn luma(p: &image::Rgb<u8>) -> f32 {
        0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
    }

    /// A 160×120 scene: a gentle gradient with a hot 20×20 blob at (60..80, 40..60).
    fn scene(w: u32, h: u32) -> ThermalFrame {
        let px = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| {
                if (60..80).contains(&x) && (40..60).contains(&y) {
                    4000
                } else {
                    1000 + ((x + 3 * y) % 50) as u16
                }
            })
            .collect();
        ThermalFrame::new(w, h, px, FrameMeta::default()).unwrap()
    }

    fn region(bbox: [usize; 4], zone: Option<&str>) -> Region {
        Region {
            bbox,
            area: (bbox[2] - bbox[0] + 1) * (bbox[3] - bbox[1] + 1),
            peak_error: 1.0,
            mean_error: 0.8,
            zone: zone.map(str::to_string),
            temperature_c: None,
        }
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn hot_blob_is_warmer_in_the_png_and_small_frames_are_doubled() {
        let dir = tempfile::tempdir().unwrap();
        let f = scene(160, 120);
        let map = vec![0.0f32; 16 * 12];
        let snap = write_snapshot(dir.path(), "a1", &f, &map, 16, 12, &[], 0.2, 0.5).unwrap();
        assert_eq!(snap.png, dir.path().join("a1.png"));
        assert_eq!(snap.raw, dir.path().join("a1.raw.npy"));
        assert_eq!(files_in(dir.path()), ["a1.png", "a1.raw.npy"]);
        let img = image::open(&snap.png).unwrap().to_rgb8();
        assert_eq!(img.width(), 320);
        assert!(img.height() > 240, "caption strip below the picture");
        // Frame (70, 50) is in the blob; (20, 100) is background. At 2×: (140, 100), (40, 200).
        let hot = img.get_pixel(140, 100);
        let cold = img.get_pixel(40, 200);
        assert!(luma(hot) > luma(cold) + 100.0, "{hot:?} vs {cold:?}");
        assert!(hot[0] > cold[0]);
        // The caption holds text.
        let caption_pixels = (242..img.height())
            .flat_map(|y| (0..img.width()).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0 == [TEXT.r(), TEXT.g(), TEXT.b()])
            .count();
        assert!(caption_pixels > 50);
        // No regions: the crop is the whole frame.
        assert_eq!(snap.crop, [0, 0, 160, 120]);
        let a = read_npy(&snap.raw).unwrap();
        assert_eq!((a.shape.clone(), a.descr.as_str()), (vec![120, 160], "<u2"));
        assert_eq!(a.data, NpyData::U16(f.pixels().to_vec()));
    }

    #[test]
    fn region_box_is_drawn_at_the_scaled_position_over_the_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let f = scene(160, 120);
        let mut map = vec![0.05f32; 16 * 12];
        for gy in 3..=5 {
            for gx in 4..=6 {
                map[gy * 16 + gx] = 0.9;
            }
        }
        let r = region([4, 3, 6, 5], Some("pier-end"));
        let snap = write_snapshot(dir.path(), "b", &f, &map, 16, 12, &[r], 0.9, 0.5).unwrap();
        let img = image::open(&snap.png).unwrap().to_rgb8();
        let cyan = [BOX_COLOUR.r(), BOX_COLOUR.g(), BOX_COLOUR.b()];
        let is_box = |x: u32, y: u32| img.get_pixel(x, y).0 == cyan;
        // Grid cells 4..=6 × 3..=5 of 10 px → frame x 40..=69, y 30..=59 → PNG (2×) x 80..=139,
        // y 60..=119, drawn with a 2-pixel stroke inside.
        for (x, y) in [
            (80, 90),
            (81, 90),
            (139, 90),
            (138, 90),
            (110, 60),
            (110, 119),
        ] {
            assert!(is_box(x, y), "({x}, {y}) should be on the box");
        }
        for (x, y) in [
            (79, 90),
            (140, 90),
            (110, 59),
            (110, 120),
            (110, 90),
            (82, 90),
        ] {
            assert!(!is_box(x, y), "({x}, {y}) should be off the box");
        }
        // Inside, the overlay marks the anomalous cells; outside, the frame is untouched.
        let inside = img.get_pixel(110, 90);
        assert!(inside[0] > 120 && inside[2] < 60, "{inside:?}");
        let outside = img.get_pixel(20, 200);
        assert!(outside[0] < 120, "{outside:?}");
        // The zone name is written just above the box.
        let label = (49..60)
            .flat_map(|y| (80..140).map(move |x| (x, y)))
            .filter(|&(x, y)| is_box(x, y))
            .count();
        assert!(label > 20, "{label} label pixels");
    }

    #[test]
    fn crop_round_trips_and_covers_the_regions() {
        let dir = tempfile::tempdir().unwrap();
        let f = scene(160, 120);
        let map = vec![0.0f32; 16 * 12];
        let regions = [region([6, 4, 7, 5], None), region([9, 4, 9, 4], None)];
        let snap = write_snapshot(dir.path(), "c", &f, &map, 16, 12, &regions, 1.0, 0.5).unwrap();
        let [x, y, w, h] = snap.crop;
        // The union covers frame x 60..=99, y 40..=59; margin max(40 / 4, 4) = 10.
        assert_eq!(snap.crop, [50, 30, 60, 40]);
        assert!(x <= 60 && y <= 40 && x + w >= 100 && y + h >= 60);
        let a = read_npy(&snap.raw).unwrap();
        assert_eq!(a.shape, vec![h as usize, w as usize]);
        let NpyData::U16(px) = a.data else {
            panic!("expected u16 data, got {}", a.descr);
        };
        for cy in 0..h {
            for cx in 0..w {
                assert_eq!(px[(cy * w + cx) as usize], f.get(x + cx, y + cy));
            }
        }
        // The blob is inside the crop with its raw value.
        assert_eq!(px[((50 - y) * w + (70 - x)) as usize], 4000);
    }

    #[test]
    fn crop_is_clamped_at_the_frame_edges() {
        let dir = tempfile::tempdir().unwrap();
        let f = scene(100, 75);
        let map = vec![0.0f32; 16 * 12];
        // Grid 16×12 over 100×75: cells are 6.25 px wide, so boxes cover partial pixels.
        let snap = write_snapshot(
            dir.path(),
            "d",
            &f,
            &map,
            16,
            12,
            &[region([0, 0, 1, 0], None), region([15, 11, 15, 11], None)],
            0.1,
            0.5,
        )
        .unwrap();
        assert_eq!(snap.crop, [0, 0, 100, 75]);
        let snap = write_snapshot(
            dir.path(),
            "e",
            &f,
            &map,
            16,
            12,
            &[region([15, 0, 15, 0], None)],
            0.1,
            0.5,
        )
        .unwrap();
        // Cell 15 covers x 93.75..100 → 93..=99; row 0 covers y 0..6.25 → 0..=6; margin 4.
        assert_eq!(snap.crop, [89, 0, 11, 11]);
    }

    #[test]
    fn grid_boxes_scale_to_frame_pixels() {
        assert_eq!(
            grid_box_to_frame([4, 3, 6, 5], 16, 12, 160, 120),
            [40, 30, 69, 59]
        );
        assert_eq!(
            grid_box_to_frame([0, 0, 0, 0], 16, 12, 100, 75),
            [0, 0, 6, 6]
        );
        assert_eq!(
            grid_box_to_frame([15, 11, 15, 11], 16, 12, 100, 75),
            [93, 68, 99, 74]
        );
        // A grid finer than the frame still maps into it.
        assert_eq!(grid_box_to_frame([7, 7, 7, 7], 8, 8, 4, 4), [3, 3, 3, 3]);
    }

    #[test]
    fn large_frames_are_drawn_at_their_own_size() {
        let dir = tempfile::tempdir().unwrap();
        let f = scene(320, 256);
        let map = vec![0.0f32; 4];
        let snap = write_snapshot(dir.path(), "big", &f, &map, 2, 2, &[], 0.1, 0.5).unwrap();
        let img = image::open(&snap.png).unwrap();
        assert_eq!(img.width(), 320);
    }

    #[test]
    fn bad_input_is_an_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("snaps");
        let f = scene(160, 120);
        let map = vec![0.0f32; 16 * 12];
        let empty = ThermalFrame::new(0, 0, vec![], FrameMeta::default()).unwrap();
        let cases: Vec<(&str, Result<Snapshot, DisplayError>)> = vec![
            (
                "map size",
                write_snapshot(&out, "x", &f, &map[..100], 16, 12, &[], 0.0, 0.5),
            ),
            (
                "empty frame",
                write_snapshot(&out, "x", &empty, &map, 16, 12, &[], 0.0, 0.5),
            ),
            (
                "stem",
                write_snapshot(&out, "../x", &f, &map, 16, 12, &[], 0.0, 0.5),
            ),
            (
                "empty stem",
                write_snapshot(&out, "", &f, &map, 16, 12, &[], 0.0, 0.5),
            ),
            (
                "region",
                write_snapshot(
                    &out,
                    "x",
                    &f,
                    &map,
                    16,
                    12,
                    &[region([10, 0, 16, 2], None)],
                    0.0,
                    0.5,
                ),
            ),
        ];
        for (what, r) in cases {
            assert!(matches!(r, Err(DisplayError::Input(_))), "{what}: {r:?}");
        }
        assert!(!out.exists());
        // An unwritable directory is named in the error.
        let file = dir.path().join("plain-file");
        fs::write(&file, b"x").unwrap();
        let e = write_snapshot(&file, "x", &f, &map, 16, 12, &[], 0.0, 0.5).unwrap_err();
        assert!(e.to_string().contains("plain-file"), "{e}");
    }
}
