//! Image directories: one frame per PNG (8- or 16-bit), JPEG or TIFF file, in natural sort order
//! (`image_2` before `image_10`).

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::DynamicImage;

use super::{FrameSource, SourceError, SourceInfo};
use crate::frame::{FrameMeta, ThermalFrame, Units};

/// File extensions read as frames (lower case).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "tif", "tiff"];

/// Whether a path names an image file this source reads.
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Compares names so that runs of digits order by value: `a2` < `a10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (&a[..da], &b[..db]);
                // Compare by value: strip leading zeros, then length, then digits.
                let ta = &na[na.iter().take_while(|&&c| c == b'0').count()..];
                let tb = &nb[nb.iter().take_while(|&&c| c == b'0').count()..];
                let ord = ta
                    .len()
                    .cmp(&tb.len())
                    .then_with(|| ta.cmp(tb))
                    .then_with(|| da.cmp(&db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

/// Lists the image files of a directory in natural order; an empty directory is an error.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let rd = fs::read_dir(dir).map_err(|e| SourceError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in rd {
        let p = entry.map_err(|e| SourceError::io(dir, e))?.path();
        if p.is_file() && is_image_file(&p) {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(SourceError::invalid(
            dir,
            "no image files (png, jpg, jpeg, tif, tiff) in directory",
        ));
    }
    files.sort_by(|a, b| {
        natural_cmp(
            &a.file_name().unwrap_or_default().to_string_lossy(),
            &b.file_name().unwrap_or_default().to_string_lossy(),
        )
    });
    Ok(files)
}

/// Decodes one image file into grey 16-bit pixels and the units they are in.
///
/// 8-bit images (grey, or colour with identical channels as in the LTD JPEGs) become
/// [`Units::Gray8`]; 16-bit images keep their values in `units16`.
pub fn decode_image(
    path: &Path,
    units16: Units,
) -> Result<(u32, u32, Vec<u16>, Units), SourceError> {
    let img = image::ImageReader::open(path)
        .map_err(|e| SourceError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| SourceError::io(path, e))?
        .decode()
        .map_err(|e| SourceError::invalid(path, format!("cannot decode image: {e}")))?;
    let (w, h) = (img.width(), img.height());
    Ok(match img {
        DynamicImage::ImageLuma16(g) => (w, h, g.into_raw(), units16),
        DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_) => (w, h, img.to_luma16().into_raw(), units16),
        DynamicImage::ImageLuma8(g) => (
            w,
            h,
            g.into_raw().into_iter().map(u16::from).collect(),
            Units::Gray8,
        ),
        other => (
            w,
            h,
            other
                .to_luma8()
                .into_raw()
                .into_iter()
                .map(u16::from)
                .collect(),
            Units::Gray8,
        ),
    })
}

/// Replays a directory of image files (or an explicit list of files) as frames.
#[derive(Debug)]
pub struct ImageDirSource {
    files: Vec<PathBuf>,
    info: SourceInfo,
    units16: Units,
    next: usize,
    labels: Option<Vec<i8>>,
    source: Arc<str>,
    start_us: i64,
}

impl ImageDirSource {
    /// Opens a directory; 16-bit images are taken to be in `units16`, frames are `fps` apart.
    pub fn open(dir: &Path, units16: Units, fps: f32) -> Result<Self, SourceError> {
        Self::from_files(dir.display().to_string(), list_images(dir)?, units16, fps)
    }

    /// Replays the given files in the given order; the first file sets the frame size.
    pub fn from_files(
        name: String,
        files: Vec<PathBuf>,
        units16: Units,
        fps: f32,
    ) -> Result<Self, SourceError> {
        let first = files
            .first()
            .ok_or_else(|| SourceError::invalid(&name, "no image files"))?;
        if !(fps.is_finite() && fps > 0.0) {
            return Err(SourceError::invalid(
                &name,
                format!("frame rate must be positive, got {fps}"),
            ));
        }
        let (width, height, _, units) = decode_image(first, units16)?;
        let info = SourceInfo {
            name: name.clone(),
            kind: "images",
            width,
            height,
            units,
            frame_count: Some(files.len()),
            fps: Some(fps),
        };
        Ok(Self {
            files,
            info,
            units16,
            next: 0,
            labels: None,
            source: Arc::from(name),
            start_us: 0,
        })
    }

    /// Attaches per-frame labels, which must match the number of files.
    pub fn with_labels(mut self, labels: Vec<i8>) -> Result<Self, SourceError> {
        if labels.len() != self.files.len() {
            return Err(SourceError::invalid(
                self.info.name.as_str(),
                format!("{} labels for {} frames", labels.len(), self.files.len()),
            ));
        }
        self.labels = Some(labels);
        Ok(self)
    }

    /// Sets the capture time of the first frame (Unix µs; frames follow at the frame rate), for
    /// clips whose recording time is known from elsewhere (e.g. their folder names).
    pub fn with_start_us(mut self, start_us: i64) -> Self {
        self.start_us = start_us;
        self
    }

    /// The files in replay order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl FrameSource for ImageDirSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_into(&mut self, frame: &mut ThermalFrame) -> Result<bool, SourceError> {
        let Some(path) = self.files.get(self.next) else {
            return Ok(false);
        };
        let index = self.next;
        // Advance first: after a bad file the caller may log it and go on with the next one.
        self.next += 1;
        let (w, h, px, units) = decode_image(path, self.units16)?;
        if (w, h) != (self.info.width, self.info.height) {
            return Err(SourceError::bad_frame(
                path,
                index,
                format!(
                    "image is {w}×{h} but the sequence is {}×{}",
                    self.info.width, self.info.height
                ),
            ));
        }
        if units != self.info.units {
            return Err(SourceError::bad_frame(
                path,
                index,
                format!("image is {units} but the sequence is {}", self.info.units),
            ));
        }
        frame.reshape(w, h);
        frame.pixels_mut().copy_from_slice(&px);
        let fps = self.info.fps.unwrap_or(1.0);
        frame.meta = FrameMeta {
            seq: index as u64,
            timestamp_us: self.start_us + (index as f64 * 1e6 / f64::from(fps)).round() as i64,
            source: self.source.clone(),
            units,
            ..FrameMeta::default()
        };
        Ok(true)
    }

    fn labels(&self) -> Option<&[i8]> {
        self.labels.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageBuffer, Luma};

    #[test]
    fn natural_order_sorts_numbers_by_value() {
        let mut v = vec!["img10.png", "img2.png", "img1.png", "img02.png", "a.png"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec!["a.png", "img1.png", "img2.png", "img02.png", "img10.png"]
        );
    }

    #[test]
    fn reads_8_and_16_bit_frames_in_natural_order() {
        let d = tempfile::tempdir().unwrap();
        for i in [1u16, 2, 10] {
            let img: ImageBuffer<Luma<u16>, Vec<u16>> =
                ImageBuffer::from_fn(4, 3, |x, y| Luma([i * 1000 + (y * 4 + x) as u16]));
            img.save(d.path().join(format!("f{i}.png"))).unwrap();
        }
        let mut s = ImageDirSource::open(d.path(), Units::Centikelvin, 1.0).unwrap();
        assert_eq!(s.info().units, Units::Centikelvin);
        let frames = crate::source::read_all(&mut s).unwrap();
        let firsts: Vec<u16> = frames.iter().map(|f| f.pixels()[0]).collect();
        assert_eq!(firsts, vec![1000, 2000, 10000]);
        assert_eq!(frames[2].meta.timestamp_us, 2_000_000);

        let e = tempfile::tempdir().unwrap();
        GrayImage::from_fn(5, 2, |x, _| Luma([x as u8 * 50]))
            .save(e.path().join("a.jpg"))
            .unwrap();
        let mut s = ImageDirSource::open(e.path(), Units::Counts, 1.0).unwrap();
        let f = s.next_frame().unwrap().unwrap();
        assert_eq!(f.meta.units, Units::Gray8);
        assert!(f.pixels()[4] > 180, "{:?}", f.pixels());
    }

    #[test]
    fn empty_dir_mismatched_sizes_and_corrupt_files_are_named_errors() {
        let d = tempfile::tempdir().unwrap();
        let e = ImageDirSource::open(d.path(), Units::Counts, 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no image files"), "{e}");

        GrayImage::new(4, 4).save(d.path().join("a1.png")).unwrap();
        GrayImage::new(5, 4).save(d.path().join("a2.png")).unwrap();
        fs::write(d.path().join("a3.png"), b"\x89PNG garbage").unwrap();
        let mut s = ImageDirSource::open(d.path(), Units::Counts, 1.0).unwrap();
        s.next_frame().unwrap().unwrap();
        let e = s.next_frame().unwrap_err().to_string();
        assert!(e.contains("a2.png") && e.contains("5×4"), "{e}");
        let e = s.next_frame().unwrap_err().to_string();
        assert!(e.contains("a3.png") && e.contains("cannot decode"), "{e}");
    }
}
