//! Evaluation plots as PNG files: ROC curves and per-clip score timelines with the labelled
//! anomalies shaded. Drawn with plotters into an RGB buffer and encoded with `image`; text uses
//! an embedded DejaVu Sans, so no system fonts are needed on a board.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

/// The font family name plots use (registered once from the embedded file).
const FAMILY: &str = "sans-serif";
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Drawing failed.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The plot file.
        path: String,
        /// What plotters said.
        message: String,
    },
    /// Encoding or writing the PNG failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The plot file.
        path: String,
        /// The cause.
        source: image::ImageError,
    },
}

fn register_font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .map_err(|_| "the embedded font does not parse".to_string())
    })
    .clone()
}

/// Renders into a `w`×`h` RGB buffer with `draw`, then writes the PNG.
fn render(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<(), PlotError> {
    let draw_err = |message: String| PlotError::Draw {
        path: path.display().to_string(),
        message,
    };
    register_font().map_err(draw_err)?;
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
        draw(&root).map_err(draw_err)?;
        root.present().map_err(|e| draw_err(e.to_string()))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).expect("buffer sized w·h·3");
    img.save(path).map_err(|source| PlotError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// One ROC curve of a plot.
#[derive(Debug, Clone)]
pub struct RocCurve<'a> {
    /// Legend text (e.g. "causal, AUC 0.912").
    pub label: String,
    /// (false-positive rate, true-positive rate) points.
    pub points: &'a [(f64, f64)],
}

const PALETTE: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Writes ROC curves (with the chance diagonal) to `path`.
pub fn roc_png(path: &Path, title: &str, curves: &[RocCurve<'_>]) -> Result<(), PlotError> {
    render(path, (640, 600), |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(54)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("false-positive rate (normal frames)")
            .y_desc("true-positive rate (anomalous frames)")
            .label_style((FAMILY, 14))
            .draw()
            .map_err(|x| e(&x))?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                4,
                4,
                BLACK.mix(0.4).stroke_width(1),
            ))
            .map_err(|x| e(&x))?;
        for (i, c) in curves.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    c.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|x| e(&x))?
                .label(c.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FAMILY, 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
        Ok(())
    })
}

/// What a score timeline shows.
#[derive(Debug, Clone)]
pub struct Timeline<'a> {
    /// Title (clip name and protocol).
    pub title: String,
    /// (frame index, score) per scored frame.
    pub scores: &'a [(u64, f64)],
    /// Labelled anomalous frame spans (first, last), shaded red.
    pub labelled: &'a [(u64, u64)],
    /// Alarm spans (first, last), drawn as orange bars along the top.
    pub alarms: &'a [(u64, u64)],
    /// Alarm threshold, drawn as a line.
    pub threshold: Option<f64>,
    /// Y axis label.
    pub y_desc: String,
}

/// Writes a score timeline to `path`.
pub fn timeline_png(path: &Path, t: &Timeline<'_>) -> Result<(), PlotError> {
    render(path, (960, 360), |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let x0 = t.scores.first().map_or(0, |s| s.0) as f64 - 0.5;
        let x1 = t.scores.last().map_or(1, |s| s.0) as f64 + 0.5;
        let finite = t.scores.iter().map(|s| s.1).filter(|v| v.is_finite());
        let (mut lo, mut hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        if let Some(th) = t.threshold.filter(|v| v.is_finite()) {
            lo = lo.min(th);
            hi = hi.max(th);
        }
        if !(lo.is_finite() && hi.is_finite()) {
            (lo, hi) = (0.0, 1.0);
        }
        let pad = ((hi - lo) * 0.08).max(1e-6);
        let (lo, hi) = (lo - pad, hi + 2.0 * pad);
        let mut chart = ChartBuilder::on(root)
            .caption(&t.title, (FAMILY, 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, lo..hi)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("frame")
            .y_desc(t.y_desc.as_str())
            .label_style((FAMILY, 13))
            .draw()
            .map_err(|x| e(&x))?;
        let red = RGBColor(214, 39, 40);
        chart
            .draw_series(t.labelled.iter().map(|&(a, b)| {
                Rectangle::new(
                    [(a as f64 - 0.5, lo), (b as f64 + 0.5, hi)],
                    red.mix(0.18).filled(),
                )
            }))
            .map_err(|x| e(&x))?
            .label("labelled anomaly")
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 16, y + 5)], red.mix(0.3).filled())
            });
        let orange = RGBColor(255, 127, 14);
        let bar = (hi - lo) * 0.03;
        chart
            .draw_series(t.alarms.iter().map(|&(a, b)| {
                Rectangle::new(
                    [(a as f64 - 0.5, hi - bar), (b as f64 + 0.5, hi)],
                    orange.filled(),
                )
            }))
            .map_err(|x| e(&x))?
            .label("alarm")
            .legend(move |(x, y)| Rectangle::new([(x, y - 3), (x + 16, y + 3)], orange.filled()));
        if let Some(th) = t.threshold {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x0, th), (x1, th)],
                    6,
                    4,
                    BLACK.stroke_width(1),
                ))
                .map_err(|x| e(&x))?
                .label("threshold")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
        }
        let blue = PALETTE[0];
        chart
            .draw_series(LineSeries::new(
                t.scores.iter().map(|&(i, s)| (i as f64, s)),
                blue.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label("score")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], blue));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.5))
            .draw()
            .map_err(|x| e(&x))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn red_pixels(path: &Path) -> (usize, (u32, u32)) {
        let img = image::open(path).unwrap().to_rgb8();
        let n = img
            .pixels()
            .filter(|p| p[0] > 200 && p[1] < 230 && p[1] > 150 && p[2] < 230 && p[0] > p[2] + 15)
            .count();
        (n, img.dimensions())
    }

    #[test]
    fn plots_are_written_and_show_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let roc = dir.path().join("roc.png");
        let pts = [(0.0, 0.0), (0.1, 0.8), (1.0, 1.0)];
        roc_png(
            &roc,
            "ROC",
            &[RocCurve {
                label: "causal, AUC 0.950".into(),
                points: &pts,
            }],
        )
        .unwrap();
        let img = image::open(&roc).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (640, 600));
        // The curve's blue is there, and text was drawn (dark pixels beyond the axes).
        assert!(img.pixels().any(|p| p.0 == [31, 119, 180]));

        let scores: Vec<(u64, f64)> = (4..60).map(|i| (i, (i as f64 * 0.3).sin())).collect();
        let shaded = dir.path().join("shaded.png");
        let plain = dir.path().join("plain.png");
        let mut t = Timeline {
            title: "clip".into(),
            scores: &scores,
            labelled: &[(20, 40)],
            alarms: &[(22, 30)],
            threshold: Some(0.5),
            y_desc: "score".into(),
        };
        timeline_png(&shaded, &t).unwrap();
        t.labelled = &[];
        timeline_png(&plain, &t).unwrap();
        // The shaded span covers a large block of light red that the unshaded plot lacks.
        let (with, dims) = red_pixels(&shaded);
        let (without, _) = red_pixels(&plain);
        assert_eq!(dims, (960, 360));
        assert!(with > without + 10_000, "{with} vs {without}");
    }

    #[test]
    fn unwritable_path_is_a_named_error() {
        let err = roc_png(Path::new("/nonexistent-dir/roc.png"), "ROC", &[]).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-dir/roc.png"),
            "{err}"
        );
    }
}
