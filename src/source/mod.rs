//! Frame sources: the `FrameSource` trait and one implementation per file (replay formats,
//! the harbor simulator, V4L2 cameras), plus dataset readers that yield labelled clips.

pub mod cptv;
pub mod image_dir;
pub mod labels;
pub mod npy;
pub mod open;
pub mod simulator;
pub mod summary;
pub mod tre;
#[cfg(feature = "v4l")]
pub mod v4l;
pub mod v4l_format;
pub mod y16;

use std::io;
use std::path::{Path, PathBuf};

use crate::frame::{FrameMeta, ThermalFrame, Units};

pub use open::{footage_clips, open_source, replay_files, FootageClip, OpenOptions};

/// Why a source could not deliver a frame. Every variant names the file or device.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// File being read.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is not valid for its format (truncated, corrupt, wrong header...).
    #[error("{}: {detail}", path.display())]
    Invalid {
        /// File being read.
        path: PathBuf,
        /// What is wrong, in words.
        detail: String,
    },
    /// One frame of an otherwise valid file is unusable.
    #[error("{}: frame {index}: {detail}", path.display())]
    BadFrame {
        /// File being read.
        path: PathBuf,
        /// Frame index (0-based).
        index: usize,
        /// What is wrong, in words.
        detail: String,
    },
    /// A live camera failed.
    #[error("camera {device}: {detail}")]
    Camera {
        /// Device path or name.
        device: String,
        /// What went wrong.
        detail: String,
    },
}

impl SourceError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        SourceError::Io {
            path: path.into(),
            source,
        }
    }

    /// A format error on `path`.
    pub fn invalid(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        SourceError::Invalid {
            path: path.into(),
            detail: detail.into(),
        }
    }

    /// An error in frame `index` of `path`.
    pub fn bad_frame(path: impl Into<PathBuf>, index: usize, detail: impl Into<String>) -> Self {
        SourceError::BadFrame {
            path: path.into(),
            index,
            detail: detail.into(),
        }
    }
}

/// What a source delivers, known before the first frame.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceInfo {
    /// Human-readable name (file path, clip name or device).
    pub name: String,
    /// Short name of the format or driver (`cptv`, `npy`, `images`, `y16`, `v4l2`, `simulator`).
    pub kind: &'static str,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// What the pixel values mean.
    pub units: Units,
    /// Number of frames for replays; `None` for live or endless sources.
    pub frame_count: Option<usize>,
    /// Nominal frame rate when known.
    pub fps: Option<f32>,
}

impl SourceInfo {
    /// Sets the frame rate of a replay after checking it is a positive number.
    pub fn set_fps(&mut self, path: &Path, fps: f32) -> Result<(), SourceError> {
        if !(fps.is_finite() && fps > 0.0) {
            return Err(SourceError::invalid(
                path,
                format!("frame rate must be a positive number, got {fps}"),
            ));
        }
        self.fps = Some(fps);
        Ok(())
    }

    /// Checks that per-frame labels cover exactly the replay's frames.
    pub fn check_labels(&self, path: &Path, labels: &[i8]) -> Result<(), SourceError> {
        let t = self.frame_count.unwrap_or(0);
        if labels.len() != t {
            return Err(SourceError::invalid(
                path,
                format!("{} labels for {t} frames", labels.len()),
            ));
        }
        Ok(())
    }
}

/// Per-frame ground truth of a labelled clip.
pub mod label {
    /// An event (anomaly) is visible.
    pub const EVENT: i8 = 1;
    /// Nothing unusual is visible.
    pub const NORMAL: i8 = 0;
    /// Uncertain, unlabelled or not a real frame (e.g. a stored background frame).
    pub const IGNORE: i8 = -1;
}

/// A stream of thermal frames.
pub trait FrameSource {
    /// What this source delivers.
    fn info(&self) -> &SourceInfo;

    /// Reads the next frame into `frame`, reusing its buffer; `Ok(false)` at the end of a replay.
    fn next_into(&mut self, frame: &mut ThermalFrame) -> Result<bool, SourceError>;

    /// Reads the next frame into a new buffer; `Ok(None)` at the end of a replay.
    fn next_frame(&mut self) -> Result<Option<ThermalFrame>, SourceError> {
        let info = self.info();
        let mut f = ThermalFrame::zeroed(
            info.width,
            info.height,
            FrameMeta {
                units: info.units,
                ..FrameMeta::default()
            },
        );
        Ok(if self.next_into(&mut f)? {
            Some(f)
        } else {
            None
        })
    }

    /// Per-frame labels ([`label`]) when the source carries ground truth.
    fn labels(&self) -> Option<&[i8]> {
        None
    }
}

impl<S: FrameSource + ?Sized> FrameSource for Box<S> {
    fn info(&self) -> &SourceInfo {
        (**self).info()
    }
    fn next_into(&mut self, frame: &mut ThermalFrame) -> Result<bool, SourceError> {
        (**self).next_into(frame)
    }
    fn labels(&self) -> Option<&[i8]> {
        (**self).labels()
    }
}

/// Reads every remaining frame of a source.
pub fn read_all(source: &mut dyn FrameSource) -> Result<Vec<ThermalFrame>, SourceError> {
    let mut out = Vec::new();
    while let Some(f) = source.next_frame()? {
        out.push(f);
    }
    Ok(out)
}

/// Rejects timestamps that go backwards, naming the file and frame.
#[derive(Debug, Default, Clone)]
pub struct MonotonicClock {
    last: Option<i64>,
}

impl MonotonicClock {
    /// Accepts `timestamp_us` for frame `index` of `path` if it does not go back in time.
    pub fn check(
        &mut self,
        path: &Path,
        index: usize,
        timestamp_us: i64,
    ) -> Result<(), SourceError> {
        if let Some(prev) = self.last {
            if timestamp_us < prev {
                return Err(SourceError::bad_frame(
                    path,
                    index,
                    format!(
                        "timestamp {timestamp_us} µs goes back in time (previous frame {prev} µs)"
                    ),
                ));
            }
        }
        self.last = Some(timestamp_us);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_rejects_backwards_steps_with_context() {
        let mut c = MonotonicClock::default();
        c.check(Path::new("a.cptv"), 0, 100).unwrap();
        c.check(Path::new("a.cptv"), 1, 100).unwrap();
        let e = c.check(Path::new("a.cptv"), 2, 50).unwrap_err().to_string();
        assert!(
            e.contains("a.cptv") && e.contains("frame 2") && e.contains("back in time"),
            "{e}"
        );
    }
}
