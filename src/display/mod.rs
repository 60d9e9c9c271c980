//! The on-device status screen and alert snapshots, drawn with `embedded-graphics`.
//!
//! Everything is drawn into a [`Canvas`], our own RGB888 framebuffer, which is then written as
//! a PNG ([`Canvas::save_png`]) or, with the `fbdev` feature, copied to a Linux framebuffer
//! device (`fbdev::Framebuffer`). Thermal frames are shown in false colour ([`palette`]) with
//! the model's per-pixel error as a red/yellow overlay; [`status`] lays out the live screen
//! and [`snapshot`] writes the PNG and raw 16-bit crop that accompany an alert.

pub mod canvas;
pub mod fbdev;
pub mod palette;
pub mod snapshot;
pub mod status;

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use canvas::Canvas;
#[cfg(feature = "fbdev")]
pub use fbdev::Framebuffer;
pub use fbdev::PixelLayout;
pub use palette::{draw_frame, draw_overlay, ironbow, robust_range};
pub use snapshot::{write_snapshot, Snapshot};
pub use status::{draw_sparkline, render_status, StatusLayout, StatusView};

/// Why drawing, writing or presenting an image failed.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    /// Reading or writing a file or device failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// File or device.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// Encoding a PNG failed.
    #[error("{}: PNG encoding failed: {source}", path.display())]
    Png {
        /// File being written.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: image::ImageError,
    },
    /// A framebuffer device cannot be used (ioctl failed, unsupported pixel format...).
    #[error("{}: {detail}", path.display())]
    Device {
        /// Device path, e.g. `/dev/fb0`.
        path: PathBuf,
        /// What is wrong, in words.
        detail: String,
    },
    /// The caller's data cannot be drawn (empty frame, error map of the wrong size...).
    #[error("{0}")]
    Input(String),
}

impl DisplayError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Unusable input, described in words.
    pub fn input(detail: impl Into<String>) -> Self {
        Self::Input(detail.into())
    }
}

/// `path` with `.tmp` appended to its file name (`a.png` → `a.png.tmp`).
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(OsString::from).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` through a `.tmp` sibling and a rename, so that readers (an alert
/// sink, an operator's browser) see either the old file or the whole new one, never a part.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DisplayError> {
    let tmp = tmp_path(path);
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        // Without this a crash right after the rename can leave an empty file under the final name.
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(DisplayError::io(&tmp, e));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        DisplayError::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_leaves_only_the_final_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.raw.npy");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("a.raw.npy")]);
        assert_eq!(tmp_path(&p), dir.path().join("a.raw.npy.tmp"));
    }

    #[test]
    fn write_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing").join("x.png");
        let e = write_atomic(&p, b"x").unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("x.png.tmp"), "{e}");
    }
}
