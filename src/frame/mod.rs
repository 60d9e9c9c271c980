//! Thermal frames: 16-bit pixels plus capture metadata, unit conversions, normalizers and resizing.

pub mod guard;
pub mod normalize;
pub mod resize;
pub mod units;

use std::sync::Arc;

pub use normalize::{Normalizer, Preprocessor};
pub use units::{celsius_to_centikelvin, centikelvin_to_celsius, kelvin_to_celsius, Units};

/// Flat-field-correction state of the camera at capture time (Lepton telemetry vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FfcState {
    /// No FFC has run since power-on.
    Never,
    /// The camera is about to run an FFC (the shutter will close soon).
    Imminent,
    /// The shutter is closed: the image is frozen or invalid.
    InProgress,
    /// The last FFC has finished.
    Complete,
}

/// Which clock a frame's timestamp is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Clock {
    /// Microseconds since the Unix epoch (the source knows wall-clock time).
    UnixEpoch,
    /// Microseconds since the start of the source (replays without wall-clock time).
    Relative,
}

/// Capture metadata that travels with every frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameMeta {
    /// Position of the frame in its source, counting from 0.
    pub seq: u64,
    /// Capture time in microseconds on `clock`.
    pub timestamp_us: i64,
    /// Clock of `timestamp_us`.
    pub clock: Clock,
    /// Name of the source (file, clip or device) the frame came from.
    pub source: Arc<str>,
    /// What the pixel values mean.
    pub units: Units,
    /// FFC state when the camera reports it.
    pub ffc: Option<FfcState>,
    /// Milliseconds since the last FFC when the camera reports it.
    pub ms_since_ffc: Option<u32>,
}

impl Default for FrameMeta {
    fn default() -> Self {
        Self {
            seq: 0,
            timestamp_us: 0,
            clock: Clock::Relative,
            source: Arc::from(""),
            units: Units::Counts,
            ffc: None,
            ms_since_ffc: None,
        }
    }
}

/// Error for frames whose buffer does not match their declared size.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("frame buffer holds {got} pixels but {width}×{height} needs {expected}")]
pub struct SizeMismatch {
    /// Declared width.
    pub width: u32,
    /// Declared height.
    pub height: u32,
    /// `width * height`.
    pub expected: usize,
    /// Pixels actually supplied.
    pub got: usize,
}

/// One thermal frame: row-major 16-bit pixels and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ThermalFrame {
    width: u32,
    height: u32,
    pixels: Vec<u16>,
    /// Capture metadata.
    pub meta: FrameMeta,
}

impl ThermalFrame {
    /// Builds a frame from row-major pixels; the buffer length must be `width * height`.
    pub fn new(
        width: u32,
        height: u32,
        pixels: Vec<u16>,
        meta: FrameMeta,
    ) -> Result<Self, SizeMismatch> {
        let expected = width as usize * height as usize;
        if pixels.len() != expected {
            return Err(SizeMismatch {
                width,
                height,
                expected,
                got: pixels.len(),
            });
        }
        Ok(Self {
            width,
            height,
            pixels,
            meta,
        })
    }

    /// An all-zero frame, e.g. as a reusable buffer for [`crate::source::FrameSource::next_into`].
    pub fn zeroed(width: u32, height: u32, meta: FrameMeta) -> Self {
        Self {
            width,
            height,
            pixels: vec![0; width as usize * height as usize],
            meta,
        }
    }

    /// Builds a frame from 8-bit grey pixels, keeping their values (units become [`Units::Gray8`]).
    pub fn from_gray8(
        width: u32,
        height: u32,
        pixels: &[u8],
        mut meta: FrameMeta,
    ) -> Result<Self, SizeMismatch> {
        meta.units = Units::Gray8;
        Self::new(
            width,
            height,
            pixels.iter().map(|&p| u16::from(p)).collect(),
            meta,
        )
    }

    /// Builds a frame from an 8-bit grey image.
    pub fn from_luma8(img: &image::GrayImage, meta: FrameMeta) -> Self {
        let (w, h) = img.dimensions();
        Self::from_gray8(w, h, img.as_raw(), meta).expect("image buffer matches its dimensions")
    }

    /// Builds a frame from a 16-bit grey image (units as given in `meta`).
    pub fn from_luma16(
        img: &image::ImageBuffer<image::Luma<u16>, Vec<u16>>,
        meta: FrameMeta,
    ) -> Self {
        let (w, h) = img.dimensions();
        Self::new(w, h, img.as_raw().clone(), meta).expect("image buffer matches its dimensions")
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Row-major pixels.
    pub fn pixels(&self) -> &[u16] {
        &self.pixels
    }

    /// Mutable row-major pixels (the size cannot change).
    pub fn pixels_mut(&mut self) -> &mut [u16] {
        &mut self.pixels
    }

    /// Resizes the buffer in place (reuses the allocation when it is large enough) and zeroes it.
    pub fn reshape(&mut self, width: u32, height: u32) {
        self.width = width;
        self.height = height;
        self.pixels.clear();
        self.pixels.resize(width as usize * height as usize, 0);
    }

    /// Pixel at column `x`, row `y`.
    pub fn get(&self, x: u32, y: u32) -> u16 {
        self.pixels[y as usize * self.width as usize + x as usize]
    }

    /// Smallest and largest pixel value.
    pub fn min_max(&self) -> (u16, u16) {
        self.pixels
            .iter()
            .fold((u16::MAX, u16::MIN), |(lo, hi), &p| (lo.min(p), hi.max(p)))
    }

    /// Temperature of a pixel in °C when the frame is radiometric (centikelvin).
    pub fn celsius_at(&self, x: u32, y: u32) -> Option<f32> {
        match self.meta.units {
            Units::Centikelvin => Some(centikelvin_to_celsius(self.get(x, y))),
            _ => None,
        }
    }

    /// An 8-bit view: Gray8 frames as they are, others linearly stretched over their own range.
    pub fn to_gray8(&self) -> image::GrayImage {
        let (lo, hi) = match self.meta.units {
            Units::Gray8 => (0, 255),
            _ => self.min_max(),
        };
        let span = f32::from(hi.saturating_sub(lo)).max(1.0);
        let data = self
            .pixels
            .iter()
            .map(|&p| {
                ((f32::from(p.saturating_sub(lo)) / span) * 255.0)
                    .round()
                    .clamp(0.0, 255.0) as u8
            })
            .collect();
        image::GrayImage::from_raw(self.width, self.height, data)
            .expect("buffer matches dimensions")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rejects_wrong_buffer_length() {
        let err = ThermalFrame::new(4, 3, vec![0; 11], FrameMeta::default()).unwrap_err();
        assert_eq!(err.expected, 12);
        assert_eq!(err.got, 11);
        assert!(err.to_string().contains("4×3"));
    }

    #[test]
    fn gray8_conversion_keeps_values_and_sets_units() {
        let f = ThermalFrame::from_gray8(2, 2, &[0, 10, 200, 255], FrameMeta::default()).unwrap();
        assert_eq!(f.pixels(), &[0, 10, 200, 255]);
        assert_eq!(f.meta.units, Units::Gray8);
        assert_eq!(f.to_gray8().as_raw(), &[0, 10, 200, 255]);
    }

    #[test]
    fn radiometric_pixels_report_celsius() {
        let meta = FrameMeta {
            units: Units::Centikelvin,
            ..FrameMeta::default()
        };
        let f = ThermalFrame::new(2, 1, vec![27315, 30315], meta).unwrap();
        assert_eq!(f.celsius_at(0, 0), Some(0.0));
        assert!((f.celsius_at(1, 0).unwrap() - 30.0).abs() < 1e-4);
        let counts = ThermalFrame::new(1, 1, vec![3000], FrameMeta::default()).unwrap();
        assert_eq!(counts.celsius_at(0, 0), None);
    }

    #[test]
    fn sixteen_bit_view_stretches_own_range() {
        let f = ThermalFrame::new(3, 1, vec![1000, 1500, 2000], FrameMeta::default()).unwrap();
        assert_eq!(f.to_gray8().as_raw(), &[0, 128, 255]);
        assert_eq!(f.min_max(), (1000, 2000));
    }
}
