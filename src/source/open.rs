//! Opening a replay or camera source from a path, choosing the reader by file type.

use std::path::{Path, PathBuf};

use super::cptv::CptvSource;
use super::image_dir::{is_image_file, ImageDirSource};
use super::npy::NpySource;
use super::y16::Y16FileSource;
use super::{FrameSource, SourceError};
use crate::frame::Units;

/// Settings for sources whose files do not say everything about themselves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenOptions {
    /// Pixel units, overriding what the format implies (e.g. centikelvin for 16-bit PNGs).
    pub units: Option<Units>,
    /// Frame width for raw Y16 files.
    pub width: Option<u32>,
    /// Frame height for raw Y16 files.
    pub height: Option<u32>,
    /// Frame rate of image directories and raw files (frames per second).
    pub fps: Option<f32>,
}

/// What kind of source a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A `.cptv` file.
    Cptv,
    /// A `.npy` or `.npy.xz` stack.
    Npy,
    /// A raw little-endian u16 stream (`.y16`, `.raw`).
    Y16,
    /// A folder of images, or one image file.
    Images,
    /// A V4L2 device (`/dev/video*`).
    V4l2,
}

/// Decides the kind of source from the path alone.
pub fn source_kind(path: &Path) -> Result<SourceKind, SourceError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if path.starts_with("/dev") && name.starts_with("video") {
        return Ok(SourceKind::V4l2);
    }
    if path.is_dir() {
        return Ok(SourceKind::Images);
    }
    if name.ends_with(".cptv") {
        Ok(SourceKind::Cptv)
    } else if name.ends_with(".npy") || name.ends_with(".npy.xz") {
        Ok(SourceKind::Npy)
    } else if name.ends_with(".y16") || name.ends_with(".raw") {
        Ok(SourceKind::Y16)
    } else if is_image_file(path) {
        Ok(SourceKind::Images)
    } else if !path.exists() {
        Err(SourceError::invalid(path, "no such file or directory"))
    } else {
        Err(SourceError::invalid(
            path,
            "unknown source type (expected .cptv, .npy, .npy.xz, .y16/.raw, an image file, a folder of images or /dev/videoN)",
        ))
    }
}

/// Opens the source a path names.
pub fn open_source(path: &Path, opts: &OpenOptions) -> Result<Box<dyn FrameSource>, SourceError> {
    let fps = opts.fps.unwrap_or(1.0);
    Ok(match source_kind(path)? {
        SourceKind::Cptv => Box::new(CptvSource::open(path)?),
        SourceKind::Npy => match opts.fps {
            Some(f) => Box::new(NpySource::open(path, opts.units)?.with_fps(f)?),
            None => Box::new(NpySource::open(path, opts.units)?),
        },
        SourceKind::Y16 => {
            let (Some(w), Some(h)) = (opts.width, opts.height) else {
                return Err(SourceError::invalid(
                    path,
                    "raw Y16 files need the frame size (--width and --height)",
                ));
            };
            let src = Y16FileSource::open(path, w, h, opts.units)?;
            match opts.fps {
                Some(f) => Box::new(src.with_fps(f)?),
                None => Box::new(src),
            }
        }
        SourceKind::Images if path.is_dir() => Box::new(ImageDirSource::open(
            path,
            opts.units.unwrap_or(Units::Counts),
            fps,
        )?),
        SourceKind::Images => {
            let files = vec![path.to_path_buf()];
            Box::new(ImageDirSource::from_files(
                path.display().to_string(),
                files,
                opts.units.unwrap_or(Units::Counts),
                fps,
            )?)
        }
        SourceKind::V4l2 => open_v4l2(path, opts)?,
    })
}

/// The replay clips a folder holds, when it is a folder of replay files (`.cptv`, `.npy`,
/// `.npy.xz`) rather than a folder of images (one clip): sorted in natural order; None for a
/// file or a folder of images.
pub fn replay_files(path: &Path) -> Result<Option<Vec<PathBuf>>, SourceError> {
    if !path.is_dir() {
        return Ok(None);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| SourceError::io(path, e))? {
        let p = entry.map_err(|e| SourceError::io(path, e))?.path();
        if is_image_file(&p) {
            return Ok(None);
        }
        let n = p.to_string_lossy();
        if n.ends_with(".cptv") || n.ends_with(".npy") || n.ends_with(".npy.xz") {
            files.push(p);
        }
    }
    files.sort_by(|a, b| super::image_dir::natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(Some(files))
}

/// One clip of normal footage a path names, opened when needed.
#[derive(Debug, Clone, PartialEq)]
pub enum FootageClip {
    /// A clip of a Thermal Rare Event dataset.
    Tre(super::tre::TreClip),
    /// A replay file or an image folder.
    Path(PathBuf),
}

impl FootageClip {
    /// Opens the clip (TRE clips with their labels and folder-name timestamps).
    pub fn open(&self, opts: &OpenOptions) -> Result<Box<dyn FrameSource>, SourceError> {
        match self {
            FootageClip::Tre(c) => Ok(Box::new(c.open(opts.units.unwrap_or(Units::Counts))?)),
            FootageClip::Path(p) => open_source(p, opts),
        }
    }
}

/// The clips of normal footage `path` names: a Thermal Rare Event dataset's `train/` split (its
/// `test/` split when there is no other), a folder of replay files, or one source.
pub fn footage_clips(path: &Path) -> Result<Vec<FootageClip>, SourceError> {
    if super::tre::looks_like_tre(path) {
        let ds = super::tre::open_dataset(path)?;
        let clips = if ds.train.is_empty() {
            ds.test
        } else {
            ds.train
        };
        return Ok(clips.into_iter().map(FootageClip::Tre).collect());
    }
    Ok(match replay_files(path)? {
        Some(files) => files.into_iter().map(FootageClip::Path).collect(),
        None => vec![FootageClip::Path(path.to_path_buf())],
    })
}

#[cfg(feature = "v4l")]
fn open_v4l2(path: &Path, opts: &OpenOptions) -> Result<Box<dyn FrameSource>, SourceError> {
    let config = super::v4l::V4l2Config {
        preferred_size: opts.width.zip(opts.height),
        radiometric: opts.units == Some(Units::Centikelvin),
        fps: opts.fps.map(|f| f.round().max(1.0) as u32),
        ..Default::default()
    };
    Ok(Box::new(super::v4l::V4l2Source::open(path, config)?))
}

#[cfg(not(feature = "v4l"))]
fn open_v4l2(path: &Path, _opts: &OpenOptions) -> Result<Box<dyn FrameSource>, SourceError> {
    Err(SourceError::Camera {
        device: path.display().to_string(),
        detail: "this edge-cli was built without V4L2 support; rebuild with `--features v4l`"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_extensions() {
        assert_eq!(
            source_kind(Path::new("a/b.cptv")).unwrap(),
            SourceKind::Cptv
        );
        assert_eq!(source_kind(Path::new("b.npy.xz")).unwrap(), SourceKind::Npy);
        assert_eq!(source_kind(Path::new("b.NPY")).unwrap(), SourceKind::Npy);
        assert_eq!(source_kind(Path::new("c.y16")).unwrap(), SourceKind::Y16);
        assert_eq!(source_kind(Path::new("d.png")).unwrap(), SourceKind::Images);
        assert_eq!(
            source_kind(Path::new("/dev/video0")).unwrap(),
            SourceKind::V4l2
        );
        let e = source_kind(Path::new("/nonexistent/x.mp4"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.mp4") && e.contains("no such file"), "{e}");
    }

    #[test]
    fn raw_files_need_a_size() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.y16");
        std::fs::write(&p, [0u8; 8]).unwrap();
        let e = open_source(&p, &OpenOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--width"), "{e}");
    }
}
