//! The live status screen: false-colour frame with the anomaly overlay, score sparkline,
//! header (site, camera, clock) and status line (alert or normal).
//!
//! The layout is designed for 480×320 (common SPI/HDMI panels) and scales with the canvas;
//! drawing uses only the stack (numbers are formatted into `heapless` strings), so the loop
//! can redraw every frame without allocating.

use std::fmt::Write as _;

use embedded_graphics::mono_font::{iso_8859_1 as fonts, MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{
    Line, PrimitiveStyle, PrimitiveStyleBuilder, Rectangle, StrokeAlignment,
};
use embedded_graphics::text::{Alignment, Baseline, Text};

use super::palette::{check_error_map, check_frame, draw_frame, draw_overlay, ironbow};
use super::{Canvas, DisplayError};
use crate::frame::{centikelvin_to_celsius, ThermalFrame, Units};

/// Screen background.
pub const BACKGROUND: Rgb888 = Rgb888::new(0, 0, 0);
/// Header and status bar background.
pub const BAR: Rgb888 = Rgb888::new(32, 32, 36);
/// Sparkline background.
pub const PANEL: Rgb888 = Rgb888::new(16, 16, 20);
/// Ordinary text.
pub const TEXT: Rgb888 = Rgb888::new(220, 220, 220);
/// Alert text, the alert frame border and above-threshold scores.
pub const ALERT_RED: Rgb888 = Rgb888::new(255, 64, 64);
/// "normal" in the status line.
pub const OK_GREEN: Rgb888 = Rgb888::new(64, 220, 96);
/// Score line of the sparkline (below threshold).
pub const SCORE_LINE: Rgb888 = Rgb888::new(110, 190, 255);
/// Threshold line of the sparkline.
pub const THRESHOLD_LINE: Rgb888 = Rgb888::new(255, 160, 0);

/// Reference size the layout is designed for.
const REF_W: f32 = 480.0;
const REF_H: f32 = 320.0;

/// What the status screen shows for one frame.
#[derive(Debug, Clone, Copy)]
pub struct StatusView<'a> {
    /// Site name, e.g. `harbor-north`.
    pub site: &'a str,
    /// Camera name, e.g. `pier-cam-2`.
    pub camera: &'a str,
    /// The frame to show.
    pub frame: &'a ThermalFrame,
    /// Per-pixel error map and its grid (width, height), drawn as an overlay over the frame.
    pub error_map: Option<(&'a [f32], usize, usize)>,
    /// Error above which the overlay marks a cell.
    pub overlay_level: f32,
    /// Recent frame scores, oldest first.
    pub scores: &'a [f32],
    /// Alert threshold on the scores.
    pub threshold: f32,
    /// The current event, e.g. `ALERT pier-end #12`; `None` while everything is normal.
    pub event: Option<&'a str>,
    /// Free-form state lines for the side panel, e.g. `tract-int8`, `8.7 fps`, `drift 0.12`.
    pub state: &'a [&'a str],
    /// Wall-clock time, formatted by the caller.
    pub clock: &'a str,
}

/// Where each part of the status screen goes on a canvas of a given size.
#[derive(Debug, Clone, Copy)]
pub struct StatusLayout {
    /// Header bar (site / camera, clock).
    pub header: Rectangle,
    /// Area the frame is fitted into (aspect ratio kept, centred).
    pub frame_area: Rectangle,
    /// Side panel (colour scale, score, state lines).
    pub side: Rectangle,
    /// Score sparkline.
    pub sparkline: Rectangle,
    /// Status bar (event or "normal").
    pub status: Rectangle,
    /// Padding in pixels, scaled with the canvas.
    pub pad: u32,
    font: &'static MonoFont<'static>,
}

impl StatusLayout {
    /// The layout for a `width`×`height` canvas; errors when the canvas is too small to hold it.
    pub fn new(width: u32, height: u32) -> Result<Self, DisplayError> {
        let s = (width as f32 / REF_W).min(height as f32 / REF_H);
        let font: &'static MonoFont<'static> = if s < 0.7 {
            &fonts::FONT_5X8
        } else if s < 1.3 {
            &fonts::FONT_7X13
        } else if s < 1.8 {
            &fonts::FONT_9X15
        } else {
            &fonts::FONT_10X20
        };
        let fh = font.character_size.height;
        let pad = ((2.0 * s).round() as u32).max(1);
        let line = fh + 2 * pad;
        let spark_h = ((height as f32 * 0.2).round() as u32).max(2 * fh);
        let side_w = ((width as f32 * 0.3).round() as u32).max(8 * char_width(font));
        let body_top = line + pad;
        let spark_top = i64::from(height) - i64::from(line + pad + spark_h);
        let frame_h = spark_top - i64::from(pad + body_top);
        let frame_w = i64::from(width) - i64::from(side_w + 3 * pad);
        if frame_h < 16 || frame_w < 16 {
            return Err(DisplayError::input(format!(
                "a {width}×{height} canvas is too small for the status screen"
            )));
        }
        let (frame_w, frame_h) = (frame_w as u32, frame_h as u32);
        let at = |x: u32, y: u32| Point::new(x as i32, y as i32);
        Ok(Self {
            header: Rectangle::new(Point::zero(), Size::new(width, line)),
            frame_area: Rectangle::new(at(pad, body_top), Size::new(frame_w, frame_h)),
            side: Rectangle::new(at(2 * pad + frame_w, body_top), Size::new(side_w, frame_h)),
            sparkline: Rectangle::new(
                at(pad, spark_top as u32),
                Size::new(width - 2 * pad, spark_h),
            ),
            status: Rectangle::new(at(0, height - line), Size::new(width, line)),
            pad,
            font,
        })
    }
}

fn char_width(font: &MonoFont<'_>) -> u32 {
    font.character_size.width + font.character_spacing
}

/// The longest prefix of `s` that fits in `max_chars` characters (the fonts are monospaced).
fn fit(s: &str, max_chars: u32) -> &str {
    match s.char_indices().nth(max_chars as usize) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A stroke that stays inside a rectangle's bounds (embedded-graphics centres it by default),
/// so a box drawn around a region never covers the pixels next to it.
pub(crate) fn inside_stroke(colour: Rgb888, width: u32) -> PrimitiveStyle<Rgb888> {
    PrimitiveStyleBuilder::new()
        .stroke_color(colour)
        .stroke_width(width)
        .stroke_alignment(StrokeAlignment::Inside)
        .build()
}

/// The largest rectangle with the aspect ratio `w`:`h` that fits in `area`, centred.
pub fn fit_rect(w: u32, h: u32, area: Rectangle) -> Rectangle {
    let (aw, ah) = (u64::from(area.size.width), u64::from(area.size.height));
    let (w, h) = (u64::from(w.max(1)), u64::from(h.max(1)));
    let (fw, fh) = if aw * h <= ah * w {
        (aw, (aw * h / w).max(1))
    } else {
        ((ah * w / h).max(1), ah)
    };
    let off = Point::new(((aw - fw) / 2) as i32, ((ah - fh) / 2) as i32);
    Rectangle::new(area.top_left + off, Size::new(fw as u32, fh as u32))
}

/// Draws `text` at `pos` (top-left), clipped to `max_chars`; returns where the next text goes.
fn text(
    canvas: &mut Canvas,
    s: &str,
    pos: Point,
    style: MonoTextStyle<'_, Rgb888>,
    max_chars: u32,
) -> Point {
    let Ok(next) = Text::with_baseline(fit(s, max_chars), pos, style, Baseline::Top).draw(canvas);
    next
}

/// Draws a score history into `area`: scores as a line (red where above `threshold`), the
/// threshold as a horizontal line; the newest score is at the right edge. Non-finite scores
/// leave gaps; with more scores than pixel columns, only the newest are shown.
pub fn draw_sparkline(canvas: &mut Canvas, area: Rectangle, scores: &[f32], threshold: f32) {
    let Ok(()) = area
        .into_styled(PrimitiveStyle::with_fill(PANEL))
        .draw(canvas);
    let (w, h) = (area.size.width, area.size.height);
    if w < 2 || h < 2 {
        return;
    }
    let scores = &scores[scores.len().saturating_sub(w as usize)..];
    let finite = || scores.iter().copied().filter(|v| v.is_finite());
    let mut lo = finite().fold(0f32, f32::min);
    let mut hi = finite().fold(f32::NEG_INFINITY, f32::max);
    if threshold.is_finite() {
        // Headroom above the threshold, so a quiet history does not hug the top edge.
        hi = hi.max(threshold + 0.5 * threshold.abs());
        lo = lo.min(threshold);
    }
    if hi.is_nan() || hi <= lo {
        hi = lo + 1.0;
    }
    let bottom = area.top_left.y + h as i32 - 1;
    let y_of = |v: f32| bottom - (((v - lo) / (hi - lo)) * (h - 1) as f32).round() as i32;
    let n = scores.len();
    let x_of = |i: usize| {
        let right = area.top_left.x + w as i32 - 1;
        if n < 2 {
            right
        } else {
            area.top_left.x + (i as u64 * u64::from(w - 1) / (n as u64 - 1)) as i32
        }
    };
    if threshold.is_finite() {
        let y = y_of(threshold);
        let line = Line::new(
            Point::new(area.top_left.x, y),
            Point::new(area.top_left.x + w as i32 - 1, y),
        );
        let Ok(()) = line
            .into_styled(PrimitiveStyle::with_stroke(THRESHOLD_LINE, 1))
            .draw(canvas);
    }
    let colour = |v: f32| {
        if threshold.is_finite() && v > threshold {
            ALERT_RED
        } else {
            SCORE_LINE
        }
    };
    let mut prev: Option<Point> = None;
    for (i, &v) in scores.iter().enumerate() {
        if !v.is_finite() {
            prev = None;
            continue;
        }
        let p = Point::new(x_of(i), y_of(v));
        match prev {
            Some(q) => {
                let Ok(()) = Line::new(q, p)
                    .into_styled(PrimitiveStyle::with_stroke(colour(v), 1))
                    .draw(canvas);
            }
            None => canvas.set_pixel(p.x, p.y, colour(v)),
        }
        prev = Some(p);
    }
}

/// A label for a pixel value: °C for radiometric frames, the raw value otherwise.
fn value_label(v: u16, units: Units) -> heapless::String<24> {
    let mut s = heapless::String::new();
    let _ = match units {
        Units::Centikelvin => write!(s, "{:.1}°C", centikelvin_to_celsius(v)),
        Units::Counts | Units::Gray8 => write!(s, "{v}"),
    };
    s
}

/// Draws the whole status screen for `view` onto `canvas` (any size from about 160×110 up).
pub fn render_status(view: &StatusView<'_>, canvas: &mut Canvas) -> Result<(), DisplayError> {
    // Validate everything before drawing, so a bad input never leaves a half-drawn screen.
    check_frame(view.frame)?;
    if let Some((map, gw, gh)) = view.error_map {
        check_error_map(map, gw, gh)?;
        if !view.overlay_level.is_finite() {
            return Err(DisplayError::input(format!(
                "overlay level must be a finite number, got {}",
                view.overlay_level
            )));
        }
    }
    let layout = StatusLayout::new(canvas.width(), canvas.height())?;
    let font = layout.font;
    let (cw, fh, pad) = (char_width(font), font.character_size.height, layout.pad);
    let style = |c: Rgb888| MonoTextStyle::new(font, c);
    let chars = |px: u32| px / cw;
    canvas.clear(BACKGROUND);

    // Frame, overlay and (when alerting) a red border around them.
    let frame_rect = fit_rect(view.frame.width(), view.frame.height(), layout.frame_area);
    let (lo, hi) = draw_frame(canvas, view.frame, frame_rect)?;
    if let Some((map, gw, gh)) = view.error_map {
        draw_overlay(canvas, map, gw, gh, view.overlay_level, frame_rect)?;
    }
    if view.event.is_some() {
        let border = Rectangle::new(
            frame_rect.top_left - Point::new(pad as i32, pad as i32),
            frame_rect.size + Size::new(2 * pad, 2 * pad),
        );
        let Ok(()) = border
            .into_styled(inside_stroke(ALERT_RED, pad))
            .draw(canvas);
    }

    // Header: site / camera on the left, the clock on the right.
    let Ok(()) = layout
        .header
        .into_styled(PrimitiveStyle::with_fill(BAR))
        .draw(canvas);
    let width = canvas.width();
    let clock_chars = view.clock.chars().count() as u32;
    let left_chars = chars(width.saturating_sub(3 * pad)).saturating_sub(clock_chars + 1);
    let mut at = Point::new(pad as i32, pad as i32);
    for part in [view.site, " / ", view.camera] {
        let used = ((at.x as u32).saturating_sub(pad)) / cw;
        at = text(
            canvas,
            part,
            at,
            style(TEXT),
            left_chars.saturating_sub(used),
        );
    }
    let Ok(_) = Text::with_text_style(
        fit(view.clock, chars(width.saturating_sub(2 * pad))),
        Point::new((width - pad) as i32, pad as i32),
        style(TEXT),
        embedded_graphics::text::TextStyleBuilder::new()
            .alignment(Alignment::Right)
            .baseline(Baseline::Top)
            .build(),
    )
    .draw(canvas);

    // Side panel: colour scale with its range, the latest score, then the caller's state lines.
    let side = layout.side;
    let bar_w = (4 * pad).max(4);
    let lut = ironbow();
    let bar_h = side.size.height;
    for dy in 0..bar_h {
        let i = 255 - (u64::from(dy) * 255 / u64::from((bar_h - 1).max(1))) as usize;
        let y = side.top_left.y + dy as i32;
        let Ok(()) = canvas.fill_solid(
            &Rectangle::new(Point::new(side.top_left.x, y), Size::new(bar_w, 1)),
            lut[i],
        );
    }
    let tx = side.top_left.x + (bar_w + 2 * pad) as i32;
    let text_chars = chars(side.size.width.saturating_sub(bar_w + 2 * pad));
    let line_h = (fh + pad) as i32;
    let last_y = side.top_left.y + bar_h as i32 - fh as i32;
    text(
        canvas,
        &value_label(hi, view.frame.meta.units),
        Point::new(tx, side.top_left.y),
        style(TEXT),
        text_chars,
    );
    text(
        canvas,
        &value_label(lo, view.frame.meta.units),
        Point::new(tx, last_y),
        style(TEXT),
        text_chars,
    );
    let mut y = side.top_left.y + 2 * line_h;
    if let Some(&latest) = view.scores.last() {
        let mut s: heapless::String<48> = heapless::String::new();
        let _ = write!(s, "score {latest:.4}");
        let c = if latest > view.threshold {
            ALERT_RED
        } else {
            TEXT
        };
        text(canvas, &s, Point::new(tx, y), style(c), text_chars);
        y += line_h;
    }
    let mut s: heapless::String<48> = heapless::String::new();
    let _ = write!(s, "thr   {:.4}", view.threshold);
    text(
        canvas,
        &s,
        Point::new(tx, y),
        style(THRESHOLD_LINE),
        text_chars,
    );
    y += 2 * line_h;
    for line in view.state {
        if y + line_h > last_y {
            break;
        }
        text(canvas, line, Point::new(tx, y), style(TEXT), text_chars);
        y += line_h;
    }

    draw_sparkline(canvas, layout.sparkline, view.scores, view.threshold);

    // Status bar: the event in red, or "normal" in green.
    let Ok(()) = layout
        .status
        .into_styled(PrimitiveStyle::with_fill(BAR))
        .draw(canvas);
    let (msg, colour) = match view.event {
        Some(e) => (e, ALERT_RED),
        None => ("normal", OK_GREEN),
    };
    text(
        canvas,
        msg,
        layout.status.top_left + Point::new(pad as i32, pad as i32),
        style(colour),
        chars(width.saturating_sub(2 * pad)),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameMeta;

    fn scene(w: u32, h: u32) -> ThermalFrame {
        let px = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| {
                if (100..120).contains(&x) && (40..60).contains(&y) {
                    31_315 // 40 °C
                } else {
                    28_815 + (x % 7) as u16 // about 15 °C
                }
            })
            .collect();
        let meta = FrameMeta {
            units: Units::Centikelvin,
            ..FrameMeta::default()
        };
        ThermalFrame::new(w, h, px, meta).unwrap()
    }

    fn count(canvas: &Canvas, area: Rectangle, colour: Rgb888) -> usize {
        area.points()
            .filter(|p| canvas.pixel(p.x, p.y) == Some(colour))
            .count()
    }

    fn view<'a>(
        frame: &'a ThermalFrame,
        scores: &'a [f32],
        event: Option<&'a str>,
    ) -> StatusView<'a> {
        StatusView {
            site: "harbor-north",
            camera: "pier-cam-2",
            frame,
            error_map: None,
            overlay_level: 0.5,
            scores,
            threshold: 0.5,
            event,
            state: &["tract-int8", "8.7 fps", "drift 0.12"],
            clock: "2026-05-01 12:34:56",
        }
    }

    #[test]
    fn layouts_fit_inside_common_canvases_and_tiny_ones_are_errors() {
        for (w, h) in [(480, 320), (320, 240), (800, 480), (1024, 600), (240, 160)] {
            let l = StatusLayout::new(w, h).unwrap();
            let whole = Rectangle::new(Point::zero(), Size::new(w, h));
            for r in [l.header, l.frame_area, l.side, l.sparkline, l.status] {
                assert_eq!(r.intersection(&whole), r, "{w}×{h}: {r:?}");
            }
            // The parts are stacked top to bottom without overlapping.
            assert!(l.frame_area.top_left.y >= l.header.size.height as i32);
            let frame_bottom = l.frame_area.top_left.y + l.frame_area.size.height as i32;
            assert!(frame_bottom <= l.sparkline.top_left.y);
            let spark_bottom = l.sparkline.top_left.y + l.sparkline.size.height as i32;
            assert!(spark_bottom <= l.status.top_left.y);
        }
        assert!(StatusLayout::new(40, 30).is_err());
    }

    #[test]
    fn fit_rect_keeps_aspect_and_centres() {
        let area = Rectangle::new(Point::new(10, 20), Size::new(300, 200));
        let r = fit_rect(160, 120, area);
        assert_eq!(r.size, Size::new(266, 200));
        assert_eq!(r.top_left, Point::new(10 + 17, 20));
        let tall = fit_rect(100, 400, area);
        assert_eq!(tall.size, Size::new(50, 200));
    }

    #[test]
    fn alert_shows_red_status_and_border_normal_shows_green() {
        let f = scene(160, 120);
        let scores = [0.1, 0.2, 0.9];
        let mut c = Canvas::new(480, 320).unwrap();
        let l = StatusLayout::new(480, 320).unwrap();

        render_status(&view(&f, &scores, None), &mut c).unwrap();
        assert!(count(&c, l.status, OK_GREEN) > 20);
        assert_eq!(count(&c, l.status, ALERT_RED), 0);
        let frame_rect = fit_rect(160, 120, l.frame_area);
        let around = Rectangle::new(
            frame_rect.top_left - Point::new(l.pad as i32, l.pad as i32),
            frame_rect.size + Size::new(2 * l.pad, 2 * l.pad),
        );
        assert_eq!(count(&c, around, ALERT_RED), 0);
        // The header has text in it.
        assert!(count(&c, l.header, TEXT) > 50);

        render_status(&view(&f, &scores, Some("ALERT pier-end #12")), &mut c).unwrap();
        assert!(count(&c, l.status, ALERT_RED) > 50);
        assert_eq!(count(&c, l.status, OK_GREEN), 0);
        assert!(count(&c, around, ALERT_RED) > 2 * frame_rect.size.width as usize);
    }

    #[test]
    fn frame_and_overlay_are_drawn_in_the_frame_area() {
        let f = scene(160, 120);
        let mut c = Canvas::new(480, 320).unwrap();
        let l = StatusLayout::new(480, 320).unwrap();
        let r = fit_rect(160, 120, l.frame_area);
        // Canvas position of frame pixel (fx, fy).
        let at = |fx: u32, fy: u32| {
            (
                r.top_left.x + (fx * r.size.width / 160) as i32,
                r.top_left.y + (fy * r.size.height / 120) as i32,
            )
        };
        let (hx, hy) = at(110, 50);
        let (bx, by) = at(20, 100);
        render_status(&view(&f, &[], None), &mut c).unwrap();
        assert_eq!(c.pixel(hx, hy), Some(ironbow()[255]));
        let bg = c.pixel(bx, by).unwrap();
        assert!(bg.r() < 100, "{bg:?}");

        // A 16×12 error map with one hot cell over the background at frame (20, 100).
        let mut map = vec![0.0f32; 16 * 12];
        map[10 * 16 + 2] = 2.0;
        let mut v = view(&f, &[], None);
        v.error_map = Some((&map, 16, 12));
        render_status(&v, &mut c).unwrap();
        let marked = c.pixel(bx, by).unwrap();
        assert!(marked.r() > 200 && marked.g() > 150, "{marked:?}");
        assert_eq!(
            c.pixel(hx, hy),
            Some(ironbow()[255]),
            "cells below level untouched"
        );

        v.error_map = Some((&map[..100], 16, 12));
        assert!(render_status(&v, &mut c).is_err());
        let empty = ThermalFrame::new(0, 0, vec![], FrameMeta::default()).unwrap();
        assert!(render_status(&view(&empty, &[], None), &mut c).is_err());
    }

    /// Topmost row in column `x` of `area` with one of `colours`.
    fn top_of_line(c: &Canvas, area: Rectangle, x: i32, colours: &[Rgb888]) -> Option<i32> {
        (area.top_left.y..area.top_left.y + area.size.height as i32)
            .find(|&y| c.pixel(x, y).is_some_and(|p| colours.contains(&p)))
    }

    #[test]
    fn sparkline_puts_higher_scores_higher_and_marks_the_threshold() {
        let mut c = Canvas::new(120, 60).unwrap();
        let area = Rectangle::new(Point::new(10, 5), Size::new(100, 50));
        let scores: Vec<f32> = (0..=20).map(|i| i as f32 * 0.05).collect(); // 0 … 1
        draw_sparkline(&mut c, area, &scores, 0.5);
        let line = [SCORE_LINE, ALERT_RED];
        let left = top_of_line(&c, area, 11, &line).unwrap();
        let mid = top_of_line(&c, area, 60, &line).unwrap();
        let right = top_of_line(&c, area, 109, &line).unwrap();
        assert!(left > mid && mid > right, "{left} {mid} {right}");
        // Range 0 … 1 over 50 rows: score 1.0 at the top row, 0 at the bottom.
        assert_eq!(right, 5);
        assert_eq!(top_of_line(&c, area, 10, &line), Some(54));
        // The threshold 0.5 lies at mid-height, across the whole width.
        let thr_y = 54 - (0.5f32 * 49.0).round() as i32;
        for x in [10, 40, 109] {
            let p = c.pixel(x, thr_y).unwrap();
            assert!(
                p == THRESHOLD_LINE || line.contains(&p),
                "({x}, {thr_y}): {p:?}"
            );
        }
        // Above the threshold the line is red, below it blue.
        assert_eq!(c.pixel(109, 5), Some(ALERT_RED));
        assert_eq!(c.pixel(10, 54), Some(SCORE_LINE));
        // Nothing outside the area.
        assert_eq!(c.pixel(5, 30), Some(Rgb888::BLACK));
        assert_eq!(c.pixel(115, 30), Some(Rgb888::BLACK));
    }

    #[test]
    fn sparkline_survives_empty_single_and_non_finite_histories() {
        let mut c = Canvas::new(50, 30).unwrap();
        let area = Rectangle::new(Point::new(0, 0), Size::new(50, 30));
        draw_sparkline(&mut c, area, &[], 0.5);
        draw_sparkline(&mut c, area, &[0.3], f32::NAN);
        // One score, no threshold: a single point at the right edge, at the top of its range.
        assert_eq!(c.pixel(49, 0), Some(SCORE_LINE));
        draw_sparkline(
            &mut c,
            area,
            &[f32::NAN, f32::INFINITY, 0.2, f32::NAN, 0.4],
            0.3,
        );
        // Many more scores than columns: only the newest 50 are drawn, the last at the right.
        let long: Vec<f32> = (0..1000).map(|i| if i < 950 { 5.0 } else { 0.1 }).collect();
        draw_sparkline(&mut c, area, &long, 0.5);
        assert!(top_of_line(&c, area, 25, &[SCORE_LINE, ALERT_RED]).unwrap() > 20);
    }

    #[test]
    fn renders_at_other_sizes_without_error() {
        let f = scene(160, 120);
        let scores: Vec<f32> = (0..300).map(|i| (i as f32 * 0.1).sin().abs()).collect();
        for (w, h) in [(240, 160), (320, 240), (800, 480), (1280, 720)] {
            let mut c = Canvas::new(w, h).unwrap();
            let mut v = view(
                &f,
                &scores,
                Some("ALERT pier-end #12 with a very long zone name indeed"),
            );
            v.site = "a site name far too long to fit into the header of a small screen";
            render_status(&v, &mut c).unwrap();
            let l = StatusLayout::new(w, h).unwrap();
            assert!(count(&c, l.status, ALERT_RED) > 0, "{w}×{h}");
        }
        assert!(
            render_status(&view(&f, &scores, None), &mut Canvas::new(60, 40).unwrap()).is_err()
        );
    }
}
