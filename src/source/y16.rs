//! Raw Y16 stream files: little-endian u16 pixels, frames back to back with no header (what
//! `v4l2-ctl --stream-to` or a PureThermal/Boson Y16 dump writes). The caller supplies the frame
//! size, since the file does not record it.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{labels, FrameSource, SourceError, SourceInfo};
use crate::frame::{FrameMeta, ThermalFrame, Units};

/// Replays a raw Y16 stream file frame by frame.
#[derive(Debug)]
pub struct Y16FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    info: SourceInfo,
    frame_bytes: usize,
    /// One frame of file bytes, reused for every frame.
    buf: Vec<u8>,
    next: usize,
    labels: Option<Vec<i8>>,
    source: Arc<str>,
}

impl Y16FileSource {
    /// Opens `path` as frames of `width`×`height` pixels; `units` defaults to raw counts.
    ///
    /// The file size must be a whole, non-zero number of frames: a trailing partial frame
    /// usually means the width or height is wrong, so it is reported rather than dropped.
    pub fn open(
        path: &Path,
        width: u32,
        height: u32,
        units: Option<Units>,
    ) -> Result<Self, SourceError> {
        if width == 0 || height == 0 || width > u32::from(u16::MAX) || height > u32::from(u16::MAX)
        {
            return Err(SourceError::invalid(
                path,
                format!("unusable Y16 frame size {width}×{height}"),
            ));
        }
        let frame_bytes = width as usize * height as usize * 2;
        let file = File::open(path).map_err(|e| SourceError::io(path, e))?;
        let size = file.metadata().map_err(|e| SourceError::io(path, e))?.len();
        if size == 0 {
            return Err(SourceError::invalid(path, "empty Y16 file (0 bytes)"));
        }
        let frame_count = size / frame_bytes as u64;
        let rest = size % frame_bytes as u64;
        if rest != 0 {
            return Err(SourceError::invalid(
                path,
                format!(
                    "{size} bytes is not a whole number of {width}×{height} Y16 frames of {frame_bytes} bytes \
                     ({frame_count} frames and {rest} bytes over); check the frame size"
                ),
            ));
        }
        let frame_count = usize::try_from(frame_count)
            .map_err(|_| SourceError::invalid(path, format!("{frame_count} frames is too many")))?;
        let labels = labels::find_labels_for(path, frame_count)?;
        let name = path.display().to_string();
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(frame_bytes.clamp(8 * 1024, 1 << 20), file),
            info: SourceInfo {
                name: name.clone(),
                kind: "y16",
                width,
                height,
                units: units.unwrap_or(Units::Counts),
                frame_count: Some(frame_count),
                fps: None,
            },
            frame_bytes,
            buf: vec![0; frame_bytes],
            next: 0,
            labels,
            source: Arc::from(name),
        })
    }

    /// Sets the recording's frame rate, which gives frames timestamps of `seq / fps`.
    pub fn with_fps(mut self, fps: f32) -> Result<Self, SourceError> {
        self.info.set_fps(&self.path, fps)?;
        Ok(self)
    }

    /// Attaches per-frame labels, checking their count.
    pub fn with_labels(mut self, labels: Vec<i8>) -> Result<Self, SourceError> {
        self.info.check_labels(&self.path, &labels)?;
        self.labels = Some(labels);
        Ok(self)
    }

    /// Bytes per frame.
    pub fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }
}

impl FrameSource for Y16FileSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_into(&mut self, frame: &mut ThermalFrame) -> Result<bool, SourceError> {
        let i = self.next;
        if i >= self.info.frame_count.unwrap_or(0) {
            return Ok(false);
        }
        self.reader.read_exact(&mut self.buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                // The size was checked at open, so the file shrank while we read it.
                SourceError::bad_frame(
                    &self.path,
                    i,
                    format!(
                        "file ended inside the frame ({} bytes each)",
                        self.frame_bytes
                    ),
                )
            } else {
                SourceError::io(&self.path, e)
            }
        })?;
        let (w, h) = (self.info.width, self.info.height);
        if frame.width() != w || frame.height() != h {
            frame.reshape(w, h);
        }
        for (d, px) in frame.pixels_mut().iter_mut().zip(self.buf.chunks_exact(2)) {
            *d = u16::from_le_bytes([px[0], px[1]]);
        }
        let timestamp_us = self
            .info
            .fps
            .map_or(0, |fps| (i as f64 * 1e6 / f64::from(fps)).round() as i64);
        frame.meta = FrameMeta {
            seq: i as u64,
            timestamp_us,
            source: self.source.clone(),
            units: self.info.units,
            ..FrameMeta::default()
        };
        self.next += 1;
        Ok(true)
    }

    fn labels(&self) -> Option<&[i8]> {
        self.labels.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::read_all;

    fn write_y16(path: &Path, values: &[u16]) {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn replays_frames_in_order_with_units_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dock.y16");
        let values: Vec<u16> = (0..18).map(|i| 29_000 + i * 300).collect();
        write_y16(&p, &values);
        let mut s = Y16FileSource::open(&p, 3, 2, Some(Units::Centikelvin))
            .unwrap()
            .with_fps(9.0)
            .unwrap();
        assert_eq!(s.info().kind, "y16");
        assert_eq!(
            (s.info().width, s.info().height, s.info().frame_count),
            (3, 2, Some(3))
        );
        assert_eq!(s.info().fps, Some(9.0));
        assert_eq!(s.frame_bytes(), 12);
        // One reusable buffer of the wrong size is reshaped, then reused.
        let mut f = ThermalFrame::zeroed(1, 1, FrameMeta::default());
        for i in 0..3 {
            assert!(s.next_into(&mut f).unwrap());
            assert_eq!(f.pixels(), &values[i * 6..(i + 1) * 6]);
            assert_eq!(f.meta.seq, i as u64);
            assert_eq!(f.meta.units, Units::Centikelvin);
            assert_eq!(f.meta.timestamp_us, (i as f64 * 1e6 / 9.0).round() as i64);
            assert_eq!(&*f.meta.source, p.display().to_string());
        }
        assert!(!s.next_into(&mut f).unwrap());
        assert!(!s.next_into(&mut f).unwrap());
        assert!(s.labels().is_none());
    }

    #[test]
    fn default_units_are_counts_and_read_all_works() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("raw.y16");
        write_y16(&p, &[1, 2, 65535, 4]);
        let mut s = Y16FileSource::open(&p, 2, 1, None).unwrap();
        assert_eq!(s.info().units, Units::Counts);
        let frames = read_all(&mut s).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].pixels(), &[65535, 4]);
        assert_eq!(frames[1].meta.timestamp_us, 0);
    }

    #[test]
    fn trailing_partial_frame_is_an_error_naming_file_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cut.y16");
        std::fs::write(&p, vec![0u8; 160 * 120 * 2 * 2 + 100]).unwrap();
        let e = Y16FileSource::open(&p, 160, 120, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cut.y16"), "{e}");
        assert!(
            e.contains("76900 bytes") && e.contains("38400 bytes") && e.contains("100 bytes over"),
            "{e}"
        );
        assert!(e.contains("2 frames"), "{e}");
        // Wrong dimensions show up the same way.
        let q = dir.path().join("lepton.y16");
        std::fs::write(&q, vec![0u8; 160 * 120 * 2 * 3]).unwrap();
        assert!(Y16FileSource::open(&q, 640, 512, None)
            .unwrap_err()
            .to_string()
            .contains("check the frame size"));
        assert!(Y16FileSource::open(&q, 160, 120, None).is_ok());
    }

    #[test]
    fn empty_files_bad_sizes_missing_files_and_bad_fps_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.y16");
        std::fs::write(&p, b"").unwrap();
        let e = Y16FileSource::open(&p, 160, 120, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty.y16") && e.contains("empty"), "{e}");
        let q = dir.path().join("ok.y16");
        write_y16(&q, &[0; 4]);
        for (w, h) in [(0, 2), (2, 0), (70_000, 1)] {
            let e = Y16FileSource::open(&q, w, h, None).unwrap_err().to_string();
            assert!(
                e.contains("ok.y16") && e.contains("frame size"),
                "{w}×{h}: {e}"
            );
        }
        let e = Y16FileSource::open(&dir.path().join("missing.y16"), 2, 2, None).unwrap_err();
        assert!(
            matches!(e, SourceError::Io { .. }) && e.to_string().contains("missing.y16"),
            "{e}"
        );
        let s = Y16FileSource::open(&q, 2, 2, None).unwrap();
        assert!(s
            .with_fps(0.0)
            .unwrap_err()
            .to_string()
            .contains("frame rate"));
    }

    #[test]
    fn file_shrinking_after_open_names_the_frame() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("shrink.y16");
        write_y16(&p, &[7; 8]);
        let mut s = Y16FileSource::open(&p, 2, 2, None).unwrap();
        std::fs::write(&p, [0u8; 10]).unwrap();
        assert!(s.next_frame().unwrap().is_some());
        let e = s.next_frame().unwrap_err().to_string();
        assert!(e.contains("shrink.y16") && e.contains("frame 1"), "{e}");
    }

    #[test]
    fn labels_beside_the_file_are_loaded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clip.y16");
        write_y16(&p, &[0; 6]);
        std::fs::write(dir.path().join("clip.json"), r#"{"labels": [0, 1, -1]}"#).unwrap();
        let s = Y16FileSource::open(&p, 2, 1, None).unwrap();
        assert_eq!(s.labels(), Some(&[0i8, 1, -1][..]));
        std::fs::write(dir.path().join("clip.json"), r#"{"labels": [0, 1]}"#).unwrap();
        let e = Y16FileSource::open(&p, 2, 1, None).unwrap_err().to_string();
        assert!(e.contains("2 labels") && e.contains("3 frames"), "{e}");
        std::fs::remove_file(dir.path().join("clip.json")).unwrap();
        let s = Y16FileSource::open(&p, 1, 1, None).unwrap();
        assert!(s
            .with_labels(vec![0; 5])
            .unwrap_err()
            .to_string()
            .contains("5 labels for 6 frames"));
    }
}
