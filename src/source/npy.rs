//! NumPy `.npy` arrays (also `.npy.xz`): a small reader/writer of our own, and a frame source
//! for (T, H, W) stacks of u8/u16 frames with optional per-frame labels.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{labels, FrameSource, SourceError, SourceInfo};
use crate::frame::{FrameMeta, ThermalFrame, Units};

const MAGIC: &[u8] = b"\x93NUMPY";
/// Headers larger than this are not NumPy's (it writes a few hundred bytes at most).
const MAX_HEADER: usize = 1 << 16;

/// Element data of an array, widened where NumPy's type has no exact Rust counterpart.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `|u1`
    U8(Vec<u8>),
    /// `<u2`
    U16(Vec<u16>),
    /// `|i1`, `<i2`, `<i4`, `<i8`, `|b1` (widened to i64).
    Int(Vec<i64>),
    /// `<f4`, `<f8` (widened to f64).
    Float(Vec<f64>),
}

impl NpyData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            NpyData::U8(v) => v.len(),
            NpyData::U16(v) => v.len(),
            NpyData::Int(v) => v.len(),
            NpyData::Float(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A decoded `.npy` array in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Elements in C (row-major) order.
    pub data: NpyData,
    /// The dtype descriptor as written in the file (e.g. `<u2`).
    pub descr: String,
}

fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let k = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[k + key.len() + 2..];
    let colon = rest.find(':')?;
    Some(rest[colon + 1..].trim_start())
}

fn parse_header(header: &str, path: &Path) -> Result<(String, bool, Vec<usize>), SourceError> {
    let bad = |d: &str| SourceError::invalid(path, format!("npy header {d}: {header:?}"));
    let descr_v = header_value(header, "descr").ok_or_else(|| bad("has no 'descr'"))?;
    let quote = descr_v
        .chars()
        .next()
        .filter(|c| *c == '\'' || *c == '"')
        .ok_or_else(|| bad("has a non-string 'descr'"))?;
    let end = descr_v[1..]
        .find(quote)
        .ok_or_else(|| bad("has an unterminated 'descr'"))?;
    let descr = descr_v[1..1 + end].to_string();
    let fortran_v =
        header_value(header, "fortran_order").ok_or_else(|| bad("has no 'fortran_order'"))?;
    let fortran = if fortran_v.starts_with("True") {
        true
    } else if fortran_v.starts_with("False") {
        false
    } else {
        return Err(bad("has an unreadable 'fortran_order'"));
    };
    let shape_v = header_value(header, "shape").ok_or_else(|| bad("has no 'shape'"))?;
    if !shape_v.starts_with('(') {
        return Err(bad("has a non-tuple 'shape'"));
    }
    let close = shape_v
        .find(')')
        .ok_or_else(|| bad("has an unterminated 'shape'"))?;
    let mut shape = Vec::new();
    for part in shape_v[1..close].split(',') {
        let p = part.trim();
        if p.is_empty() {
            continue;
        }
        shape.push(
            p.parse::<usize>()
                .map_err(|_| bad("has a non-integer dimension"))?,
        );
    }
    Ok((descr, fortran, shape))
}

/// Parses `.npy` bytes; `path` is only used in error messages.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<NpyArray, SourceError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(SourceError::invalid(
            path,
            "not a NumPy .npy file (bad magic)",
        ));
    }
    let major = bytes[6];
    let (hlen, hstart) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(SourceError::invalid(path, "truncated .npy header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => {
            return Err(SourceError::invalid(
                path,
                format!("unsupported .npy format version {v}"),
            ))
        }
    };
    if hlen > MAX_HEADER || hstart + hlen > bytes.len() {
        return Err(SourceError::invalid(
            path,
            format!("truncated .npy header ({hlen} bytes declared)"),
        ));
    }
    let header = std::str::from_utf8(&bytes[hstart..hstart + hlen])
        .map_err(|_| SourceError::invalid(path, "npy header is not text"))?;
    let (descr, fortran, shape) = parse_header(header, path)?;
    if fortran {
        return Err(SourceError::invalid(
            path,
            "Fortran-order arrays are not supported (save with C order)",
        ));
    }
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| SourceError::invalid(path, format!("npy shape {shape:?} is too large")))?;
    let body = &bytes[hstart + hlen..];
    let (size, _) = dtype_size(&descr).ok_or_else(|| {
        SourceError::invalid(path, format!("unsupported npy dtype '{descr}' (expected u1, u2, i1-i8, b1, f4 or f8, little-endian)"))
    })?;
    let need = count
        .checked_mul(size)
        .ok_or_else(|| SourceError::invalid(path, "npy shape is too large"))?;
    if body.len() < need {
        return Err(SourceError::invalid(
            path,
            format!(
                "truncated .npy data: shape {shape:?} of '{descr}' needs {need} bytes, file has {}",
                body.len()
            ),
        ));
    }
    let body = &body[..need];
    let data = match descr.trim_start_matches(['<', '|', '=']) {
        "u1" => NpyData::U8(body.to_vec()),
        "u2" => NpyData::U16(
            body.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        "i1" => NpyData::Int(body.iter().map(|&b| i64::from(b as i8)).collect()),
        "b1" => NpyData::Int(body.iter().map(|&b| i64::from(b != 0)).collect()),
        "i2" => NpyData::Int(
            body.chunks_exact(2)
                .map(|c| i64::from(i16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        "i4" => NpyData::Int(
            body.chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes(c.try_into().expect("4 bytes"))))
                .collect(),
        ),
        "i8" => NpyData::Int(
            body.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ),
        "f4" => NpyData::Float(
            body.chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes"))))
                .collect(),
        ),
        "f8" => NpyData::Float(
            body.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ),
        _ => unreachable!("dtype_size accepted only the types above"),
    };
    Ok(NpyArray { shape, data, descr })
}

fn dtype_size(descr: &str) -> Option<(usize, ())> {
    if descr.starts_with('>') {
        return None;
    }
    match descr.trim_start_matches(['<', '|', '=']) {
        "u1" | "i1" | "b1" => Some((1, ())),
        "u2" | "i2" => Some((2, ())),
        "i4" | "f4" => Some((4, ())),
        "i8" | "f8" => Some((8, ())),
        _ => None,
    }
}

/// Reads a file, decompressing it when its name ends in `.xz`.
pub fn read_maybe_xz(path: &Path) -> Result<Vec<u8>, SourceError> {
    let raw = fs::read(path).map_err(|e| SourceError::io(path, e))?;
    if path.extension().is_some_and(|e| e == "xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut raw.as_slice(), &mut out)
            .map_err(|e| SourceError::invalid(path, format!("xz decompression failed: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Reads a `.npy` or `.npy.xz` file.
pub fn read_npy(path: &Path) -> Result<NpyArray, SourceError> {
    parse_npy(&read_maybe_xz(path)?, path)
}

fn header_bytes(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [d] => format!("{d},"),
        _ => shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    // Pad so that magic + version + length + header + '\n' is a multiple of 64, as NumPy does.
    let total = MAGIC.len() + 4 + h.len() + 1;
    h.push_str(&" ".repeat((64 - total % 64) % 64));
    h.push('\n');
    let mut out = Vec::with_capacity(10 + h.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out
}

/// Encodes a u8 array as `.npy` bytes.
pub fn encode_u8(shape: &[usize], data: &[u8]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "npy shape matches data"
    );
    let mut out = header_bytes("|u1", shape);
    out.extend_from_slice(data);
    out
}

/// Encodes a u16 array as `.npy` bytes (little-endian).
pub fn encode_u16(shape: &[usize], data: &[u16]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "npy shape matches data"
    );
    let mut out = header_bytes("<u2", shape);
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Encodes an f32 array as `.npy` bytes (`<f4`, little-endian).
pub fn encode_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "npy shape matches data"
    );
    let mut out = header_bytes("<f4", shape);
    out.reserve(data.len() * 4);
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes `.npy` bytes to `path`.
pub fn write_npy(path: &Path, bytes: &[u8]) -> Result<(), SourceError> {
    let mut f = fs::File::create(path).map_err(|e| SourceError::io(path, e))?;
    f.write_all(bytes).map_err(|e| SourceError::io(path, e))
}

/// Replays a (T, H, W) u8 or u16 `.npy`/`.npy.xz` stack as frames.
#[derive(Debug)]
pub struct NpySource {
    path: PathBuf,
    info: SourceInfo,
    data: NpyData,
    next: usize,
    labels: Option<Vec<i8>>,
    source: Arc<str>,
}

impl NpySource {
    /// Opens a stack; `units` defaults to gray8 for u8 and counts for u16 arrays.
    pub fn open(path: &Path, units: Option<Units>) -> Result<Self, SourceError> {
        let arr = read_npy(path)?;
        let [t, h, w] = arr.shape[..] else {
            return Err(SourceError::invalid(
                path,
                format!(
                    "expected a (frames, height, width) array, got shape {:?}",
                    arr.shape
                ),
            ));
        };
        if h == 0 || w == 0 || h > u16::MAX as usize || w > u16::MAX as usize {
            return Err(SourceError::invalid(
                path,
                format!("unusable frame size {w}×{h}"),
            ));
        }
        let default_units = match &arr.data {
            NpyData::U8(_) => Units::Gray8,
            NpyData::U16(_) => Units::Counts,
            _ => {
                return Err(SourceError::invalid(
                    path,
                    format!("frames must be u1 or u2, got '{}'", arr.descr),
                ))
            }
        };
        let labels = labels::find_labels_for(path, t)?;
        let name = path.display().to_string();
        Ok(Self {
            path: path.to_path_buf(),
            info: SourceInfo {
                name: name.clone(),
                kind: "npy",
                width: w as u32,
                height: h as u32,
                units: units.unwrap_or(default_units),
                frame_count: Some(t),
                fps: None,
            },
            data: arr.data,
            next: 0,
            labels,
            source: Arc::from(name),
        })
    }

    /// Sets the frame rate, which spaces the frames' timestamps.
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
}

impl FrameSource for NpySource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_into(&mut self, frame: &mut ThermalFrame) -> Result<bool, SourceError> {
        let t = self.info.frame_count.unwrap_or(0);
        if self.next >= t {
            return Ok(false);
        }
        let (w, h) = (self.info.width, self.info.height);
        let n = w as usize * h as usize;
        let i = self.next;
        frame.reshape(w, h);
        let dst = frame.pixels_mut();
        match &self.data {
            NpyData::U8(v) => dst
                .iter_mut()
                .zip(&v[i * n..(i + 1) * n])
                .for_each(|(d, &s)| *d = u16::from(s)),
            NpyData::U16(v) => dst.copy_from_slice(&v[i * n..(i + 1) * n]),
            _ => unreachable!("open accepts only u8/u16"),
        }
        frame.meta = FrameMeta {
            seq: i as u64,
            // Without a known rate, frames are spaced one second apart.
            timestamp_us: (i as f64 * 1e6 / f64::from(self.info.fps.unwrap_or(1.0))).round() as i64,
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

    #[test]
    fn round_trips_u8_and_u16() {
        let p = Path::new("x.npy");
        let a = parse_npy(&encode_u8(&[2, 3], &[1, 2, 3, 4, 5, 6]), p).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, NpyData::U8(vec![1, 2, 3, 4, 5, 6]));
        let b = parse_npy(&encode_u16(&[3], &[0, 513, 65535]), p).unwrap();
        assert_eq!(b.shape, vec![3]);
        assert_eq!(b.data, NpyData::U16(vec![0, 513, 65535]));
        // NumPy aligns the data start to 64 bytes.
        assert_eq!((encode_u8(&[1], &[0]).len() - 1) % 64, 0);
    }

    #[test]
    fn encodes_f32_with_numpy_header() {
        let data = [0.5f32, -1.25, 3.0e-7, f32::MAX, 0.0, -0.0];
        let bytes = encode_f32(&[2, 1, 3], &data);
        // Exactly what numpy 2.x writes for np.zeros((2, 1, 3), np.float32): version 1.0,
        // header padded with spaces to end on a 64-byte boundary with '\n'.
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 3), }";
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let hlen = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        assert_eq!((10 + hlen) % 64, 0);
        let text = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
        assert_eq!(text.trim_end_matches('\n').trim_end(), header);
        assert!(text.ends_with('\n'));
        assert_eq!(bytes.len(), 10 + hlen + 4 * data.len());
        let a = parse_npy(&bytes, Path::new("f.npy")).unwrap();
        assert_eq!(a.shape, vec![2, 1, 3]);
        assert_eq!(a.descr, "<f4");
        let back: Vec<f32> = match a.data {
            NpyData::Float(v) => v.into_iter().map(|x| x as f32).collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            data.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        // A 1-D shape keeps NumPy's trailing comma.
        let one = encode_f32(&[1], &[1.0]);
        assert!(std::str::from_utf8(&one[10..one.len() - 4])
            .unwrap()
            .contains("'shape': (1,)"));
    }

    #[test]
    fn reads_numpy_written_header_with_int64() {
        // Header exactly as numpy 1.x writes np.array([0, 1, 1], dtype=np.int64).
        let mut bytes =
            b"\x93NUMPY\x01\x00v\x00{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }"
                .to_vec();
        while bytes.len() < 127 {
            bytes.push(b' ');
        }
        bytes.push(b'\n');
        for v in [0i64, 1, 1] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let a = parse_npy(&bytes, Path::new("l.npy")).unwrap();
        assert_eq!(a.data, NpyData::Int(vec![0, 1, 1]));
    }

    #[test]
    fn truncated_and_corrupt_files_name_the_file() {
        let p = Path::new("clip.npy");
        let good = encode_u16(&[2, 2, 2], &[1; 8]);
        let e = parse_npy(&good[..good.len() - 3], p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("clip.npy") && e.contains("truncated"), "{e}");
        let e = parse_npy(b"hello world", p).unwrap_err().to_string();
        assert!(e.contains("bad magic"), "{e}");
        let mut big_endian = good.clone();
        let pos = big_endian.windows(3).position(|w| w == b"<u2").unwrap();
        big_endian[pos] = b'>';
        assert!(parse_npy(&big_endian, p)
            .unwrap_err()
            .to_string()
            .contains("unsupported npy dtype"));
        let mut fortran = good;
        let pos = fortran.windows(5).position(|w| w == b"False").unwrap();
        fortran[pos..pos + 5].copy_from_slice(b"True ");
        assert!(parse_npy(&fortran, p)
            .unwrap_err()
            .to_string()
            .contains("Fortran"));
    }

    #[test]
    fn source_replays_frames_and_rejects_wrong_rank() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.npy");
        write_npy(&p, &encode_u16(&[2, 1, 3], &[1, 2, 3, 4, 5, 6])).unwrap();
        let mut s = NpySource::open(&p, None).unwrap();
        assert_eq!(
            (s.info().width, s.info().height, s.info().frame_count),
            (3, 1, Some(2))
        );
        let f0 = s.next_frame().unwrap().unwrap();
        let f1 = s.next_frame().unwrap().unwrap();
        assert_eq!(f0.pixels(), &[1, 2, 3]);
        assert_eq!(f1.pixels(), &[4, 5, 6]);
        assert_eq!(f1.meta.seq, 1);
        assert!(s.next_frame().unwrap().is_none());
        let q = dir.path().join("flat.npy");
        write_npy(&q, &encode_u16(&[6], &[1; 6])).unwrap();
        assert!(NpySource::open(&q, None)
            .unwrap_err()
            .to_string()
            .contains("(frames, height, width)"));
    }
}
