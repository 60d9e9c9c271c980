//! The status screen of the running loop, drawn with [`crate::display`]: the current frame in
//! false colour with the anomaly heat overlay, the score sparkline and the event state.

use std::path::Path;

use super::Pipeline;
use crate::display::{render_status, Canvas, DisplayError, StatusView};
use crate::frame::ThermalFrame;

/// Size of the status screen PNG (a common small HDMI/SPI panel).
pub const STATUS_SIZE: (u32, u32) = (480, 320);

/// Where the status screen goes: a PNG file, a Linux framebuffer, or both. The canvas is
/// allocated once.
pub struct StatusScreen {
    canvas: Canvas,
    png: Option<std::path::PathBuf>,
    #[cfg(feature = "fbdev")]
    fb: Option<crate::display::Framebuffer>,
}

impl StatusScreen {
    /// A screen writing `png` and/or drawing on the framebuffer device `fbdev` (which needs
    /// the `fbdev` feature; the canvas then takes the screen's size).
    pub fn new(
        png: Option<std::path::PathBuf>,
        fbdev: Option<&Path>,
    ) -> Result<Self, DisplayError> {
        #[cfg(feature = "fbdev")]
        {
            let fb = fbdev.map(crate::display::Framebuffer::open).transpose()?;
            let (w, h) = fb.as_ref().map_or(STATUS_SIZE, |f| (f.width(), f.height()));
            Ok(Self {
                canvas: Canvas::new(w, h)?,
                png,
                fb,
            })
        }
        #[cfg(not(feature = "fbdev"))]
        {
            if let Some(dev) = fbdev {
                return Err(DisplayError::Device {
                    path: dev.to_path_buf(),
                    detail: "this build has no framebuffer support (build with --features fbdev)"
                        .into(),
                });
            }
            Ok(Self {
                canvas: Canvas::new(STATUS_SIZE.0, STATUS_SIZE.1)?,
                png,
            })
        }
    }

    /// Draws the current state and shows it.
    pub fn update(
        &mut self,
        pipeline: &Pipeline<'_>,
        frame: &ThermalFrame,
    ) -> Result<(), DisplayError> {
        render_into(pipeline, frame, &mut self.canvas)?;
        #[cfg(feature = "fbdev")]
        if let Some(fb) = &mut self.fb {
            fb.present(&self.canvas)?;
        }
        if let Some(p) = &self.png {
            self.canvas.save_png(p)?;
        }
        Ok(())
    }
}

/// Renders the status screen into `canvas` (also for a framebuffer).
pub fn render_into(
    pipeline: &Pipeline<'_>,
    frame: &ThermalFrame,
    canvas: &mut Canvas,
) -> Result<(), DisplayError> {
    let scores: Vec<f32> = pipeline.recent_scores().copied().collect();
    let (map, w, h) = pipeline.error_map();
    let plane = w * h;
    let error_map = (map.len() >= plane && plane > 0).then(|| (&map[..plane], w, h));
    let peak = error_map.map_or(0.0, |(m, _, _)| m.iter().copied().fold(0f32, f32::max));
    let event = pipeline
        .alerting()
        .then(|| format!("ALERT event {}", pipeline.next_event().saturating_sub(1)));
    let c = pipeline.counters();
    let backend = pipeline.scorer().backend().to_string();
    let counts = format!("{} scored, {} alerts", c.scored, c.alerts);
    let clock = clock_text(frame.meta.timestamp_us);
    let state = [backend.as_str(), counts.as_str()];
    let view = StatusView {
        site: &pipeline.id.site,
        camera: &pipeline.id.camera,
        frame,
        error_map,
        overlay_level: (peak * 0.3).max(1e-4),
        scores: &scores,
        threshold: pipeline.threshold() as f32,
        event: event.as_deref(),
        state: &state,
        clock: &clock,
    };
    render_status(&view, canvas)
}

/// `HH:MM:SS` (UTC) of a capture time in µs.
fn clock_text(t_us: i64) -> String {
    let s = t_us.div_euclid(1_000_000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}
