//! CPTV (Cacophony Project Thermal Video) decoder and frame source, versions 1 and 2.
//!
//! Layout, as written by The Cacophony Project's recorders (all numbers little-endian):
//!
//! ```text
//! gzip( "CPTV" version:u8
//!       'H' n:u8 field*n                      header
//!       ( 'F' n:u8 field*n  data[frame size] )*   frames
//! )
//! field = len:u8 code:u8 data[len]
//! ```
//!
//! Frame data is an `i32` followed by `width*height - 1` two's-complement values of the
//! frame's bit width, packed most significant bit first. Read along a snake scan (even rows
//! left to right, odd rows right to left), the `i32` and the running sum of the packed values
//! give each pixel's change from the previous frame (the first frame's predecessor is all
//! zeros). All pixel arithmetic is modulo 2¹⁶, as in the reference readers.
//!
//! Pixel units: the header does not say whether a Lepton ran in radiometric (TLinear) mode.
//! Lepton 3 files hold raw counts; Lepton 3.5 values look like centikelvin but that is not
//! stated anywhere in the file, so every frame is reported as [`Units::Counts`].

use std::fs;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{labels, FrameSource, MonotonicClock, SourceError, SourceInfo};
use crate::frame::{Clock, FrameMeta, ThermalFrame, Units};

const MAGIC: &[u8; 4] = b"CPTV";
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Frames wider or taller than this are corrupt headers, not cameras.
pub const MAX_DIMENSION: u32 = 4096;
/// A gzip stream that inflates past this is treated as a decompression bomb.
const MAX_DECOMPRESSED: u64 = 1 << 30;
/// Frame rate assumed when the header has none (Cacophony's nominal Lepton rate).
pub const DEFAULT_FPS: f32 = 9.0;
/// Header timestamps past 2^53 µs (year 2255) are corrupt, not recording times; the bound also
/// keeps `timestamp + frame offset` far from overflow.
const MAX_TIMESTAMP_US: u64 = 1 << 53;

/// Section and field codes.
mod code {
    pub const HEADER: u8 = b'H';
    pub const FRAME: u8 = b'F';

    pub const TIMESTAMP: u8 = b'T';
    pub const X_RESOLUTION: u8 = b'X';
    pub const Y_RESOLUTION: u8 = b'Y';
    pub const COMPRESSION: u8 = b'C';
    pub const DEVICE_NAME: u8 = b'D';
    pub const DEVICE_ID: u8 = b'I';
    pub const MOTION_CONFIG: u8 = b'M';
    pub const PREVIEW_SECS: u8 = b'P';
    pub const LATITUDE: u8 = b'L';
    pub const LONGITUDE: u8 = b'O';
    pub const LOC_TIMESTAMP: u8 = b'S';
    pub const ALTITUDE: u8 = b'A';
    pub const ACCURACY: u8 = b'U';
    pub const FPS: u8 = b'Z';
    pub const MODEL: u8 = b'E';
    pub const BRAND: u8 = b'B';
    pub const FIRMWARE: u8 = b'V';
    pub const CAMERA_SERIAL: u8 = b'N';
    pub const MIN_VALUE: u8 = b'Q';
    pub const MAX_VALUE: u8 = b'K';
    pub const NUM_FRAMES: u8 = b'J';
    pub const FRAMES_PER_IFRAME: u8 = b'G';
    /// In the header: the file stores a background frame; in a frame: this is it.
    pub const BACKGROUND_FRAME: u8 = b'g';

    pub const TIME_ON: u8 = b't';
    pub const BIT_WIDTH: u8 = b'w';
    pub const FRAME_SIZE: u8 = b'f';
    pub const LAST_FFC_TIME: u8 = b'c';
    pub const TEMP_C: u8 = b'a';
    pub const LAST_FFC_TEMP_C: u8 = b'b';
}

/// The file header of a CPTV recording (location fields are read past and dropped).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CptvHeader {
    /// Format version: 1 or 2.
    pub version: u8,
    /// Recording start in microseconds since the Unix epoch, when the header has a usable one.
    pub timestamp_us: Option<i64>,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Compression scheme (1 = delta bit-packing, the only one in use).
    pub compression: u8,
    /// Device (camera station) name.
    pub device_name: Option<String>,
    /// Device id on the Cacophony server.
    pub device_id: Option<u32>,
    /// Camera module model, e.g. `lepton3.5`.
    pub camera_model: Option<String>,
    /// Camera module brand, e.g. `flir`.
    pub brand: Option<String>,
    /// Camera module firmware version.
    pub firmware: Option<String>,
    /// Camera module serial number.
    pub camera_serial: Option<u32>,
    /// Nominal frame rate.
    pub fps: Option<u8>,
    /// Seconds recorded before motion was detected.
    pub preview_secs: Option<u8>,
    /// Smallest pixel value in the recording, when the writer stored it.
    pub min_value: Option<u16>,
    /// Largest pixel value in the recording, when the writer stored it.
    pub max_value: Option<u16>,
    /// Number of frames, when the writer stored it.
    pub frame_count: Option<u32>,
    /// Whether the recording stores a background frame (as its first frame).
    pub has_background_frame: bool,
}

/// Per-frame fields of a CPTV recording.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct CptvFrameInfo {
    /// Version 2: milliseconds since the camera powered on.
    pub time_on_ms: Option<u32>,
    /// Version 1: microseconds since the header timestamp.
    pub offset_us: Option<u32>,
    /// Version 2: `time_on_ms` of the last flat-field correction.
    pub last_ffc_time_ms: Option<u32>,
    /// Camera temperature in °C.
    pub temp_c: Option<f32>,
    /// Camera temperature at the last flat-field correction in °C.
    pub last_ffc_temp_c: Option<f32>,
    /// This frame is a stored background estimate, not a time step.
    pub is_background: bool,
    /// Bits per packed delta.
    pub bit_width: u8,
}

impl CptvFrameInfo {
    /// Milliseconds since the last flat-field correction, when both times are known.
    pub fn ms_since_ffc(&self) -> Option<u32> {
        self.time_on_ms?.checked_sub(self.last_ffc_time_ms?)
    }
}

/// One decoded frame: its fields and row-major pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct CptvFrame {
    /// Per-frame fields.
    pub info: CptvFrameInfo,
    /// Row-major pixels, `width * height` of them.
    pub pixels: Vec<u16>,
}

/// Where a frame's fields and packed data are in the decompressed stream.
#[derive(Debug, Clone)]
struct FrameEntry {
    info: CptvFrameInfo,
    data: Range<usize>,
}

/// A parsed (not yet pixel-decoded) recording.
#[derive(Debug)]
struct Parsed {
    header: CptvHeader,
    frames: Vec<FrameEntry>,
}

fn code_name(c: u8) -> String {
    if c.is_ascii_graphic() {
        format!("'{}'", c as char)
    } else {
        format!("0x{c:02x}")
    }
}

/// Reads bytes from a slice without ever indexing past its end.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

fn fixed<const N: usize>(code: u8, data: &[u8]) -> Result<[u8; N], String> {
    data.try_into().map_err(|_| {
        format!(
            "field {} has {} bytes, expected {N}",
            code_name(code),
            data.len()
        )
    })
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .trim_end_matches('\0')
        .to_string()
}

/// Reads a section's field count and fields, calling `f(code, data)` for each.
fn read_fields<'a>(
    r: &mut Reader<'a>,
    what: &str,
    mut f: impl FnMut(u8, &'a [u8]) -> Result<(), String>,
) -> Result<(), String> {
    let n = r
        .u8()
        .ok_or_else(|| format!("{what} is truncated before its field count"))?;
    for i in 0..n {
        let (Some(len), Some(c)) = (r.u8(), r.u8()) else {
            return Err(format!(
                "{what} is truncated: field {} of {n} is missing",
                i + 1
            ));
        };
        let rem = r.remaining();
        let data = r.take(usize::from(len)).ok_or_else(|| {
            format!(
                "{what} field {} declares {len} bytes but only {rem} remain (truncated)",
                code_name(c)
            )
        })?;
        f(c, data)?;
    }
    Ok(())
}

fn parse_header(r: &mut Reader<'_>, path: &Path) -> Result<CptvHeader, SourceError> {
    let bad = |d: String| SourceError::invalid(path, d);
    let magic = r
        .take(4)
        .ok_or_else(|| bad("too short for a CPTV file".into()))?;
    if magic != MAGIC {
        return Err(bad(format!(
            "not a CPTV file (bad magic {magic:02x?}, expected \"CPTV\")"
        )));
    }
    let version = r
        .u8()
        .ok_or_else(|| bad("truncated after the magic (no version)".into()))?;
    if !(1..=2).contains(&version) {
        return Err(bad(format!(
            "unknown CPTV version {version} (expected 1 or 2)"
        )));
    }
    match r.u8() {
        Some(code::HEADER) => {}
        Some(c) => {
            return Err(bad(format!(
                "expected the header section 'H', found {}",
                code_name(c)
            )))
        }
        None => return Err(bad("truncated before the header section".into())),
    }
    let mut h = CptvHeader {
        version,
        timestamp_us: None,
        width: 0,
        height: 0,
        compression: 0,
        device_name: None,
        device_id: None,
        camera_model: None,
        brand: None,
        firmware: None,
        camera_serial: None,
        fps: None,
        preview_secs: None,
        min_value: None,
        max_value: None,
        frame_count: None,
        has_background_frame: false,
    };
    let (mut width, mut height, mut compression) = (None, None, None);
    read_fields(r, "header", |c, d| {
        match c {
            code::TIMESTAMP => {
                let t = u64::from_le_bytes(fixed(c, d)?);
                // Zero means "clock not set"; huge values are corrupt. Neither is a time.
                h.timestamp_us = (t != 0 && t < MAX_TIMESTAMP_US).then_some(t as i64);
            }
            code::X_RESOLUTION => width = Some(u32::from_le_bytes(fixed(c, d)?)),
            code::Y_RESOLUTION => height = Some(u32::from_le_bytes(fixed(c, d)?)),
            code::COMPRESSION => compression = Some(fixed::<1>(c, d)?[0]),
            code::DEVICE_NAME => h.device_name = Some(text(d)),
            code::DEVICE_ID => h.device_id = Some(u32::from_le_bytes(fixed(c, d)?)),
            code::MODEL => h.camera_model = Some(text(d)),
            code::BRAND => h.brand = Some(text(d)),
            code::FIRMWARE => h.firmware = Some(text(d)),
            code::CAMERA_SERIAL => h.camera_serial = Some(u32::from_le_bytes(fixed(c, d)?)),
            code::FPS => h.fps = Some(fixed::<1>(c, d)?[0]),
            code::PREVIEW_SECS => h.preview_secs = Some(fixed::<1>(c, d)?[0]),
            code::MIN_VALUE => h.min_value = Some(u16::from_le_bytes(fixed(c, d)?)),
            code::MAX_VALUE => h.max_value = Some(u16::from_le_bytes(fixed(c, d)?)),
            code::NUM_FRAMES => h.frame_count = Some(u32::from(u16::from_le_bytes(fixed(c, d)?))),
            code::BACKGROUND_FRAME => h.has_background_frame = fixed::<1>(c, d)?[0] != 0,
            // Location is private to the camera owner and not needed here: skipped on purpose.
            code::LATITUDE
            | code::LONGITUDE
            | code::LOC_TIMESTAMP
            | code::ALTITUDE
            | code::ACCURACY => {}
            code::MOTION_CONFIG | code::FRAMES_PER_IFRAME => {}
            other => log::debug!(
                "{}: skipping unknown CPTV header field {}",
                path.display(),
                code_name(other)
            ),
        }
        Ok(())
    })
    .map_err(bad)?;
    h.width = width.ok_or_else(|| bad("header has no X resolution field 'X'".into()))?;
    h.height = height.ok_or_else(|| bad("header has no Y resolution field 'Y'".into()))?;
    h.compression = compression.ok_or_else(|| bad("header has no compression field 'C'".into()))?;
    if h.width == 0 || h.height == 0 || h.width > MAX_DIMENSION || h.height > MAX_DIMENSION {
        return Err(bad(format!(
            "absurd frame size {}×{} in header (each side must be 1..={MAX_DIMENSION})",
            h.width, h.height
        )));
    }
    if h.compression != 1 {
        return Err(bad(format!(
            "unsupported compression scheme {} (only 1, delta bit-packing, is known)",
            h.compression
        )));
    }
    Ok(h)
}

/// Bytes of packed data a frame of `pixels` pixels needs at `bit_width` bits.
fn packed_len(pixels: usize, bit_width: u8) -> u64 {
    let bits = (pixels as u64).saturating_sub(1) * u64::from(bit_width);
    4 + bits.div_ceil(8)
}

/// Parses the header and locates every frame, validating sizes without decoding pixels.
fn parse(raw: &[u8], path: &Path) -> Result<Parsed, SourceError> {
    let mut r = Reader { buf: raw, pos: 0 };
    let header = parse_header(&mut r, path)?;
    let pixels = header.width as usize * header.height as usize;
    let mut frames = Vec::new();
    while r.remaining() > 0 {
        let index = frames.len();
        let bad = |d: String| SourceError::bad_frame(path, index, d);
        let start = r.pos;
        let section = r.u8().unwrap_or_default();
        if section != code::FRAME {
            return Err(bad(format!(
                "expected a frame section 'F' at byte {start}, found {}",
                code_name(section)
            )));
        }
        let mut info = CptvFrameInfo::default();
        let (mut bit_width, mut frame_size) = (None, None);
        read_fields(&mut r, "frame", |c, d| {
            match c {
                code::TIME_ON => {
                    let t = u32::from_le_bytes(fixed(c, d)?);
                    if header.version == 1 {
                        info.offset_us = Some(t);
                    } else {
                        info.time_on_ms = Some(t);
                    }
                }
                code::LAST_FFC_TIME => {
                    info.last_ffc_time_ms = Some(u32::from_le_bytes(fixed(c, d)?))
                }
                code::TEMP_C => info.temp_c = Some(f32::from_le_bytes(fixed(c, d)?)),
                code::LAST_FFC_TEMP_C => {
                    info.last_ffc_temp_c = Some(f32::from_le_bytes(fixed(c, d)?))
                }
                code::BACKGROUND_FRAME => info.is_background = fixed::<1>(c, d)?[0] != 0,
                code::BIT_WIDTH => bit_width = Some(fixed::<1>(c, d)?[0]),
                code::FRAME_SIZE => frame_size = Some(u32::from_le_bytes(fixed(c, d)?)),
                other => log::debug!(
                    "{}: frame {index}: skipping unknown field {}",
                    path.display(),
                    code_name(other)
                ),
            }
            Ok(())
        })
        .map_err(bad)?;
        let bw = bit_width.ok_or_else(|| bad("frame has no bit width field 'w'".into()))?;
        let size = frame_size.ok_or_else(|| bad("frame has no frame size field 'f'".into()))?;
        // Encoders always spend at least the sign bit; 0 would let a few bytes claim a whole frame.
        if bw == 0 || bw > 32 {
            return Err(bad(format!("impossible bit width {bw} (must be 1..=32)")));
        }
        let need = packed_len(pixels, bw);
        if u64::from(size) < need {
            return Err(bad(format!(
                "frame size mismatch: {size} bytes declared but {}×{} pixels at {bw} bits need {need}",
                header.width, header.height
            )));
        }
        // Some writers store more bytes than the packing needs (DOC-AI firmware's 16-bit frames
        // declare 8 bytes a pixel); the reference readers decode the start and skip the rest.
        let rem = r.remaining();
        let data_start = r.pos;
        r.take(size as usize).ok_or_else(|| {
            bad(format!("frame data shorter than declared: {size} bytes declared, only {rem} left (truncated file)"))
        })?;
        info.bit_width = bw;
        frames.push(FrameEntry {
            info,
            data: data_start..data_start + need as usize,
        });
    }
    if let Some(n) = header.frame_count {
        if n as usize != frames.len() {
            log::warn!(
                "{}: header says {n} frames but the file holds {}",
                path.display(),
                frames.len()
            );
        }
    }
    Ok(Parsed { header, frames })
}

/// Inflates gzip data, or passes through data that already starts with the CPTV magic.
fn decompress(bytes: &[u8], path: &Path) -> Result<Vec<u8>, SourceError> {
    if bytes.starts_with(MAGIC) {
        return Ok(bytes.to_vec());
    }
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Err(SourceError::invalid(
            path,
            "not a CPTV file (neither gzip data nor the \"CPTV\" magic)",
        ));
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            SourceError::invalid(path, format!("gzip stream is truncated or corrupt: {e}"))
        })?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(SourceError::invalid(
            path,
            format!("gzip stream inflates past {MAX_DECOMPRESSED} bytes"),
        ));
    }
    Ok(out)
}

/// Pulls two's-complement values of a fixed width, most significant bit first.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    nbits: u32,
    width: u32,
}

impl BitReader<'_> {
    fn next(&mut self) -> Option<i32> {
        while self.nbits < self.width {
            let b = *self.data.get(self.pos)?;
            self.pos += 1;
            self.buf = (self.buf << 8) | u64::from(b);
            self.nbits += 8;
        }
        self.nbits -= self.width;
        let v = (self.buf >> self.nbits) as u32;
        // Keep only unread bits so the buffer never exceeds width + 7 bits.
        self.buf &= (1u64 << self.nbits) - 1;
        let shift = 32 - self.width;
        Some(((v << shift) as i32) >> shift)
    }
}

/// Turns successive frames' packed deltas back into pixels.
#[derive(Debug)]
struct Decoder {
    width: usize,
    pixels: usize,
    /// The last decoded frame (row-major); allocated on the first frame, once its data is known to fit.
    current: Vec<u16>,
}

impl Decoder {
    fn new(header: &CptvHeader) -> Self {
        let width = header.width as usize;
        Self {
            width,
            pixels: width * header.height as usize,
            current: Vec::new(),
        }
    }

    /// Applies one frame's packed data to `current`.
    fn apply(&mut self, data: &[u8], bit_width: u8) -> Result<(), String> {
        let short = || {
            format!(
                "frame data ends early ({} bytes at {bit_width} bits)",
                data.len()
            )
        };
        let (first, rest) = data.split_first_chunk::<4>().ok_or_else(short)?;
        if self.current.len() != self.pixels {
            self.current = vec![0; self.pixels];
        }
        let mut bits = BitReader {
            data: rest,
            pos: 0,
            buf: 0,
            nbits: 0,
            width: u32::from(bit_width),
        };
        let mut acc = i32::from_le_bytes(*first);
        for (y, row) in self.current.chunks_exact_mut(self.width.max(1)).enumerate() {
            let mut apply = |p: &mut u16, first_pixel: bool| -> Result<(), String> {
                if !first_pixel {
                    acc = acc.wrapping_add(bits.next().ok_or_else(short)?);
                }
                *p = p.wrapping_add(acc as u16);
                Ok(())
            };
            if y % 2 == 0 {
                for (x, p) in row.iter_mut().enumerate() {
                    apply(p, y == 0 && x == 0)?;
                }
            } else {
                for p in row.iter_mut().rev() {
                    apply(p, false)?;
                }
            }
        }
        Ok(())
    }
}

/// Decodes a whole CPTV recording from its bytes (gzipped, or already inflated);
/// `path` is only used in error messages.
pub fn decode_cptv_bytes(
    bytes: &[u8],
    path: &Path,
) -> Result<(CptvHeader, Vec<CptvFrame>), SourceError> {
    let raw = decompress(bytes, path)?;
    let parsed = parse(&raw, path)?;
    let mut dec = Decoder::new(&parsed.header);
    let mut out = Vec::with_capacity(parsed.frames.len());
    for (i, f) in parsed.frames.iter().enumerate() {
        let data = raw
            .get(f.data.clone())
            .ok_or_else(|| SourceError::bad_frame(path, i, "frame data out of range"))?;
        dec.apply(data, f.info.bit_width)
            .map_err(|d| SourceError::bad_frame(path, i, d))?;
        out.push(CptvFrame {
            info: f.info.clone(),
            pixels: dec.current.clone(),
        });
    }
    Ok((parsed.header, out))
}

fn put_field(out: &mut Vec<u8>, c: u8, data: &[u8]) {
    let len = data.len().min(255);
    out.push(len as u8);
    out.push(c);
    out.extend_from_slice(&data[..len]);
}

/// Encodes frames as (uncompressed) CPTV bytes of `header.version`; gzip them to get a `.cptv` file.
///
/// Strings longer than 255 bytes are cut. Panics if a frame's pixel count is not
/// `header.width * header.height`, as that is a bug in the caller.
pub fn encode_cptv(header: &CptvHeader, frames: &[CptvFrame]) -> Vec<u8> {
    let n = header.width as usize * header.height as usize;
    let mut out = MAGIC.to_vec();
    out.push(header.version);
    let mut fields = Vec::new();
    let mut count = 0u8;
    let mut field = |c: u8, d: &[u8]| {
        put_field(&mut fields, c, d);
        count += 1;
    };
    if let Some(t) = header.timestamp_us {
        field(code::TIMESTAMP, &(t as u64).to_le_bytes());
    }
    field(code::X_RESOLUTION, &header.width.to_le_bytes());
    field(code::Y_RESOLUTION, &header.height.to_le_bytes());
    field(code::COMPRESSION, &[header.compression]);
    let strings = [
        (code::DEVICE_NAME, &header.device_name),
        (code::MODEL, &header.camera_model),
        (code::BRAND, &header.brand),
        (code::FIRMWARE, &header.firmware),
    ];
    for (c, s) in strings {
        if let Some(s) = s {
            field(c, s.as_bytes());
        }
    }
    for (c, v) in [
        (code::DEVICE_ID, header.device_id),
        (code::CAMERA_SERIAL, header.camera_serial),
    ] {
        if let Some(v) = v {
            field(c, &v.to_le_bytes());
        }
    }
    for (c, v) in [
        (code::FPS, header.fps),
        (code::PREVIEW_SECS, header.preview_secs),
    ] {
        if let Some(v) = v {
            field(c, &[v]);
        }
    }
    for (c, v) in [
        (code::MIN_VALUE, header.min_value),
        (code::MAX_VALUE, header.max_value),
    ] {
        if let Some(v) = v {
            field(c, &v.to_le_bytes());
        }
    }
    if let Some(v) = header.frame_count {
        field(
            code::NUM_FRAMES,
            &(v.min(u32::from(u16::MAX)) as u16).to_le_bytes(),
        );
    }
    if header.has_background_frame {
        field(code::BACKGROUND_FRAME, &[1]);
    }
    out.extend_from_slice(&[code::HEADER, count]);
    out.extend_from_slice(&fields);

    let mut prev = vec![0u16; n];
    let mut deltas = Vec::with_capacity(n);
    let w = (header.width as usize).max(1);
    for f in frames {
        assert_eq!(
            f.pixels.len(),
            n,
            "CPTV frame has {} pixels, header says {n}",
            f.pixels.len()
        );
        deltas.clear();
        for (y, (cur, old)) in f
            .pixels
            .chunks_exact(w)
            .zip(prev.chunks_exact(w))
            .enumerate()
        {
            let d = cur
                .iter()
                .zip(old)
                .map(|(&c, &o)| i32::from(c) - i32::from(o));
            if y % 2 == 0 {
                deltas.extend(d);
            } else {
                deltas.extend(d.rev());
            }
        }
        prev.copy_from_slice(&f.pixels);
        let dd: Vec<i32> = deltas.windows(2).map(|p| p[1] - p[0]).collect();
        let max = dd.iter().map(|d| d.unsigned_abs()).max().unwrap_or(0);
        let bw = (32 - max.leading_zeros() + 1) as u8;
        let mut packed = deltas.first().copied().unwrap_or(0).to_le_bytes().to_vec();
        let (mut acc, mut nbits) = (0u64, 0u32);
        for d in dd {
            acc = (acc << bw) | (u64::from(d as u32) & ((1u64 << bw) - 1));
            nbits += u32::from(bw);
            while nbits >= 8 {
                nbits -= 8;
                packed.push((acc >> nbits) as u8);
            }
            acc &= (1u64 << nbits) - 1;
        }
        if nbits > 0 {
            packed.push((acc << (8 - nbits)) as u8);
        }
        let mut ff = Vec::new();
        let mut fcount = 0u8;
        let mut ffield = |c: u8, d: &[u8]| {
            put_field(&mut ff, c, d);
            fcount += 1;
        };
        let t = if header.version == 1 {
            f.info.offset_us
        } else {
            f.info.time_on_ms
        };
        if let Some(t) = t {
            ffield(code::TIME_ON, &t.to_le_bytes());
        }
        if let Some(c) = f.info.last_ffc_time_ms {
            ffield(code::LAST_FFC_TIME, &c.to_le_bytes());
        }
        if let Some(v) = f.info.temp_c {
            ffield(code::TEMP_C, &v.to_le_bytes());
        }
        if let Some(v) = f.info.last_ffc_temp_c {
            ffield(code::LAST_FFC_TEMP_C, &v.to_le_bytes());
        }
        if f.info.is_background {
            ffield(code::BACKGROUND_FRAME, &[1]);
        }
        ffield(code::BIT_WIDTH, &[bw]);
        ffield(code::FRAME_SIZE, &(packed.len() as u32).to_le_bytes());
        out.extend_from_slice(&[code::FRAME, fcount]);
        out.extend_from_slice(&ff);
        out.extend_from_slice(&packed);
    }
    out
}

/// How frame timestamps are derived for a recording.
#[derive(Debug, Clone, Copy)]
enum Timing {
    /// From per-frame times: `base + offset` on `clock`; v2 offsets count from `ref_ms`.
    Times {
        base: i64,
        clock: Clock,
        ref_ms: Option<u32>,
    },
    /// No per-frame times: frame index over the frame rate, from 0.
    Rate { fps: f64 },
}

/// Replays a `.cptv` recording frame by frame (pixels are decoded lazily, into the caller's buffer).
#[derive(Debug)]
pub struct CptvSource {
    path: PathBuf,
    info: SourceInfo,
    header: CptvHeader,
    raw: Vec<u8>,
    frames: Vec<FrameEntry>,
    decoder: Decoder,
    timing: Timing,
    clock_check: MonotonicClock,
    last_ts: Option<i64>,
    next: usize,
    labels: Option<Vec<i8>>,
    source: Arc<str>,
}

impl CptvSource {
    /// Opens a recording, indexes its frames and loads labels found beside it.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let bytes = fs::read(path).map_err(|e| SourceError::io(path, e))?;
        let mut s = Self::from_bytes(&bytes, path)?;
        s.labels = labels::find_labels_for(path, s.frames.len())?;
        Ok(s)
    }

    /// Builds a source from file bytes (gzipped or inflated); `path` names it in errors and
    /// metadata. No labels are looked up.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, SourceError> {
        let raw = decompress(bytes, path)?;
        let Parsed { header, frames } = parse(&raw, path)?;
        let fps = header.fps.filter(|&f| f > 0).map_or(DEFAULT_FPS, f32::from);
        let ref_ms = frames
            .iter()
            .filter(|f| !f.info.is_background)
            .find_map(|f| f.info.time_on_ms);
        let timed = frames.iter().any(|f| {
            !f.info.is_background && (f.info.offset_us.is_some() || f.info.time_on_ms.is_some())
        });
        let timing = if timed {
            match header.timestamp_us {
                Some(base) => Timing::Times {
                    base,
                    clock: Clock::UnixEpoch,
                    ref_ms,
                },
                None => Timing::Times {
                    base: 0,
                    clock: Clock::Relative,
                    ref_ms,
                },
            }
        } else {
            Timing::Rate {
                fps: f64::from(fps),
            }
        };
        let name = path.display().to_string();
        Ok(Self {
            path: path.to_path_buf(),
            info: SourceInfo {
                name: name.clone(),
                kind: "cptv",
                width: header.width,
                height: header.height,
                units: Units::Counts,
                frame_count: Some(frames.len()),
                fps: Some(fps),
            },
            decoder: Decoder::new(&header),
            header,
            raw,
            frames,
            timing,
            clock_check: MonotonicClock::default(),
            last_ts: None,
            next: 0,
            labels: None,
            source: Arc::from(name),
        })
    }

    /// The file header.
    pub fn header(&self) -> &CptvHeader {
        &self.header
    }

    /// Number of frames in the recording.
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    /// Per-frame fields of frame `index`, if it exists.
    pub fn frame_info(&self, index: usize) -> Option<&CptvFrameInfo> {
        self.frames.get(index).map(|f| &f.info)
    }

    /// Whether frame `index` is a stored background estimate rather than a time step.
    pub fn is_background_frame(&self, index: usize) -> bool {
        self.frames.get(index).is_some_and(|f| f.info.is_background)
    }

    /// Timestamp of frame `index` in µs and its clock; `prev` is the previous frame's timestamp.
    fn timestamp(&self, index: usize, info: &CptvFrameInfo, prev: Option<i64>) -> (i64, Clock) {
        match self.timing {
            Timing::Rate { fps } => ((index as f64 * 1e6 / fps).round() as i64, Clock::Relative),
            Timing::Times {
                base,
                clock,
                ref_ms,
            } => {
                let offset = if info.is_background {
                    None
                } else if let Some(us) = info.offset_us {
                    Some(i64::from(us))
                } else {
                    info.time_on_ms
                        .zip(ref_ms)
                        .map(|(t, r)| (i64::from(t) - i64::from(r)) * 1000)
                };
                // Background frames and frames without a time sit at the previous frame's time.
                let ts = offset.map_or(prev.unwrap_or(base), |o| base.saturating_add(o));
                (ts, clock)
            }
        }
    }
}

impl FrameSource for CptvSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_into(&mut self, frame: &mut ThermalFrame) -> Result<bool, SourceError> {
        let index = self.next;
        let Some(entry) = self.frames.get(index) else {
            return Ok(false);
        };
        // A failed frame leaves the delta chain broken, so any error ends the replay.
        self.next = self.frames.len();
        let (ts, clock) = self.timestamp(index, &entry.info, self.last_ts);
        self.clock_check.check(&self.path, index, ts)?;
        let data = self
            .raw
            .get(entry.data.clone())
            .ok_or_else(|| SourceError::bad_frame(&self.path, index, "frame data out of range"))?;
        self.decoder
            .apply(data, entry.info.bit_width)
            .map_err(|d| SourceError::bad_frame(&self.path, index, d))?;
        frame.reshape(self.header.width, self.header.height);
        frame.pixels_mut().copy_from_slice(&self.decoder.current);
        frame.meta = FrameMeta {
            seq: index as u64,
            timestamp_us: ts,
            clock,
            source: self.source.clone(),
            units: self.info.units,
            ffc: None,
            ms_since_ffc: if entry.info.is_background {
                None
            } else {
                entry.info.ms_since_ffc()
            },
        };
        self.last_ts = Some(ts);
        self.next = index + 1;
        Ok(true)
    }

    fn labels(&self) -> Option<&[i8]> {
        self.labels.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::source::read_all;

    fn header(w: u32, h: u32) -> CptvHeader {
        CptvHeader {
            version: 2,
            timestamp_us: Some(1_700_000_000_000_000),
            width: w,
            height: h,
            compression: 1,
            device_name: Some("harbor-01".into()),
            device_id: Some(42),
            camera_model: Some("lepton3.5".into()),
            brand: Some("flir".into()),
            firmware: Some("3.3.26".into()),
            camera_serial: Some(1234),
            fps: Some(9),
            preview_secs: Some(5),
            min_value: None,
            max_value: None,
            frame_count: None,
            has_background_frame: false,
        }
    }

    fn gzip(raw: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(raw).unwrap();
        e.finish().unwrap()
    }

    /// Deterministic frames with smooth structure, big jumps and wrap-around-sized steps.
    fn frames(w: u32, h: u32, n: usize) -> Vec<CptvFrame> {
        let mut seed = 0x2545_f491_u32;
        (0..n)
            .map(|t| {
                let pixels = (0..w * h)
                    .map(|i| {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        match t % 3 {
                            0 => 3000 + (i % w) as u16 * 3 + (seed % 8) as u16,
                            1 => 28000 + (seed % 400) as u16,
                            _ => {
                                if i % 7 == 0 {
                                    u16::MAX
                                } else {
                                    (seed % 5) as u16
                                }
                            }
                        }
                    })
                    .collect();
                let info = CptvFrameInfo {
                    time_on_ms: Some(1_000_000 + 114 * t as u32),
                    last_ffc_time_ms: Some(990_000),
                    temp_c: Some(21.5),
                    last_ffc_temp_c: Some(21.25),
                    ..CptvFrameInfo::default()
                };
                CptvFrame { info, pixels }
            })
            .collect()
    }

    /// Fills in `bit_width` the way the decoder reports it, for comparisons.
    fn strip_bw(mut v: Vec<CptvFrame>) -> Vec<CptvFrame> {
        v.iter_mut().for_each(|f| f.info.bit_width = 0);
        v
    }

    #[test]
    fn round_trips_gzipped_and_raw_v2() {
        let (w, h) = (7, 5);
        let hd = header(w, h);
        let fr = frames(w, h, 6);
        let raw = encode_cptv(&hd, &fr);
        let p = Path::new("rt.cptv");
        for bytes in [raw.clone(), gzip(&raw)] {
            let (h2, f2) = decode_cptv_bytes(&bytes, p).unwrap();
            assert_eq!(h2, hd);
            assert!(f2.iter().all(|f| (1..=32).contains(&f.info.bit_width)));
            assert_eq!(strip_bw(f2), fr);
        }
    }

    #[test]
    fn round_trips_odd_shapes_and_v1() {
        for (w, h) in [(1, 1), (1, 6), (6, 1), (3, 3), (160, 120)] {
            let mut hd = header(w, h);
            hd.version = 1;
            let mut fr = frames(w, h, 3);
            for (i, f) in fr.iter_mut().enumerate() {
                f.info = CptvFrameInfo {
                    offset_us: Some(1500 + 114_000 * i as u32),
                    ..CptvFrameInfo::default()
                };
            }
            let (h2, f2) =
                decode_cptv_bytes(&gzip(&encode_cptv(&hd, &fr)), Path::new("v1.cptv")).unwrap();
            assert_eq!(h2, hd, "{w}×{h}");
            assert_eq!(strip_bw(f2), fr, "{w}×{h}");
        }
    }

    #[test]
    fn packs_all_bit_widths_up_to_32() {
        // A hand-built frame of 3 pixels at each width: first value, then deltas +1 and -(2^(bw-1)).
        for bw in 1u8..=32 {
            let min = if bw == 32 {
                i32::MIN
            } else {
                -(1i32 << (bw - 1))
            };
            let vals = [if bw == 1 { -1 } else { 1 }, min];
            let mut packed = 7i32.to_le_bytes().to_vec();
            let mut bits: u128 = 0;
            for v in vals {
                bits = (bits << bw) | u128::from(v as u32 & (u32::MAX >> (32 - bw)));
            }
            let total = 2 * u32::from(bw);
            let nbytes = total.div_ceil(8);
            bits <<= nbytes * 8 - total;
            for i in (0..nbytes).rev() {
                packed.push((bits >> (i * 8)) as u8);
            }
            let mut raw =
                b"CPTV\x02H\x03\x04X\x03\x00\x00\x00\x04Y\x01\x00\x00\x00\x01C\x01F\x02\x01w"
                    .to_vec();
            raw.push(bw);
            raw.extend_from_slice(&[4, b'f']);
            raw.extend_from_slice(&(packed.len() as u32).to_le_bytes());
            raw.extend_from_slice(&packed);
            let (_, f) = decode_cptv_bytes(&raw, Path::new("bw.cptv")).unwrap();
            let a = 7i32.wrapping_add(vals[0]);
            let b = a.wrapping_add(vals[1]);
            assert_eq!(f[0].pixels, vec![7, a as u16, b as u16], "bit width {bw}");
        }
    }

    #[test]
    fn source_reports_meta_timestamps_and_background_frames() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clip.cptv");
        let mut hd = header(4, 3);
        hd.has_background_frame = true;
        hd.frame_count = Some(4);
        let mut fr = frames(4, 3, 4);
        fr[0].info = CptvFrameInfo {
            is_background: true,
            ..CptvFrameInfo::default()
        };
        fs::write(&p, gzip(&encode_cptv(&hd, &fr))).unwrap();
        let mut s = CptvSource::open(&p).unwrap();
        assert_eq!(s.info().kind, "cptv");
        assert_eq!(
            (s.info().width, s.info().height, s.info().frame_count),
            (4, 3, Some(4))
        );
        assert_eq!(s.info().fps, Some(9.0));
        assert_eq!(s.info().units, Units::Counts);
        assert_eq!(s.header().device_name.as_deref(), Some("harbor-01"));
        assert!(
            s.is_background_frame(0) && !s.is_background_frame(1) && !s.is_background_frame(99)
        );
        assert_eq!(s.labels(), None);
        let got = read_all(&mut s).unwrap();
        assert_eq!(got.len(), 4);
        let base = hd.timestamp_us.unwrap();
        for (i, f) in got.iter().enumerate() {
            assert_eq!(f.pixels(), fr[i].pixels.as_slice());
            assert_eq!(f.meta.seq, i as u64);
            assert_eq!(f.meta.clock, Clock::UnixEpoch);
            assert_eq!(f.meta.ffc, None);
        }
        // The background frame sits at the recording start; real frames count from the first one.
        assert_eq!(got[0].meta.timestamp_us, base);
        assert_eq!(got[1].meta.timestamp_us, base);
        assert_eq!(got[3].meta.timestamp_us, base + 2 * 114_000);
        assert_eq!(got[0].meta.ms_since_ffc, None);
        assert_eq!(
            got[2].meta.ms_since_ffc,
            Some(1_000_000 + 2 * 114 - 990_000)
        );
    }

    #[test]
    fn source_without_times_uses_frame_rate_and_reuses_buffer() {
        let mut hd = header(3, 2);
        hd.timestamp_us = None;
        hd.fps = None;
        let mut fr = frames(3, 2, 3);
        fr.iter_mut()
            .for_each(|f| f.info = CptvFrameInfo::default());
        let mut s =
            CptvSource::from_bytes(&encode_cptv(&hd, &fr), Path::new("notime.cptv")).unwrap();
        assert_eq!(s.info().fps, Some(DEFAULT_FPS));
        let mut buf = ThermalFrame::zeroed(3, 2, FrameMeta::default());
        let ptr = buf.pixels().as_ptr();
        let mut times = Vec::new();
        while s.next_into(&mut buf).unwrap() {
            assert_eq!(buf.meta.clock, Clock::Relative);
            assert_eq!(buf.pixels().as_ptr(), ptr, "buffer reused");
            times.push(buf.meta.timestamp_us);
        }
        assert_eq!(times, vec![0, 111_111, 222_222]);
        assert!(!s.next_into(&mut buf).unwrap());
    }

    #[test]
    fn time_going_backwards_is_a_bad_frame() {
        let hd = header(2, 2);
        let mut fr = frames(2, 2, 3);
        fr[2].info.time_on_ms = Some(5);
        let mut s = CptvSource::from_bytes(&encode_cptv(&hd, &fr), Path::new("back.cptv")).unwrap();
        s.next_frame().unwrap().unwrap();
        s.next_frame().unwrap().unwrap();
        let e = s.next_frame().unwrap_err();
        assert!(matches!(e, SourceError::BadFrame { index: 2, .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("back.cptv") && e.contains("frame 2") && e.contains("back in time"),
            "{e}"
        );
        assert!(
            s.next_frame().unwrap().is_none(),
            "replay ends after an error"
        );
    }

    #[test]
    fn loads_labels_beside_the_clip() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("cptv")).unwrap();
        fs::create_dir_all(dir.path().join("labels")).unwrap();
        let p = dir.path().join("cptv/c1.cptv");
        fs::write(&p, gzip(&encode_cptv(&header(2, 2), &frames(2, 2, 3)))).unwrap();
        fs::write(
            dir.path().join("labels/c1.json"),
            r#"{"per_frame":{"label":[-1,0,1]}}"#,
        )
        .unwrap();
        let s = CptvSource::open(&p).unwrap();
        assert_eq!(s.labels(), Some(&[-1i8, 0, 1][..]));
        fs::write(
            dir.path().join("labels/c1.json"),
            r#"{"per_frame":{"label":[0,1]}}"#,
        )
        .unwrap();
        let e = CptvSource::open(&p).unwrap_err().to_string();
        assert!(e.contains("c1.json") && e.contains("2 labels"), "{e}");
    }

    fn err(bytes: &[u8]) -> String {
        let e = decode_cptv_bytes(bytes, Path::new("bad/clip.cptv"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad/clip.cptv"),
            "error does not name the file: {e}"
        );
        e
    }

    #[test]
    fn corrupt_files_give_errors_naming_file_and_problem() {
        let hd = header(5, 4);
        let raw = encode_cptv(&hd, &frames(5, 4, 2));
        let gz = gzip(&raw);
        assert!(err(&gz[..gz.len() - 9]).contains("gzip"), "truncated gzip");
        assert!(err(&gz[..gz.len() / 2]).contains("truncated"));
        assert!(err(b"hello world").contains("neither gzip"));
        assert!(err(b"CPT").contains("neither gzip"));
        let mut m = raw.clone();
        m[4] = 3;
        assert!(err(&m).contains("unknown CPTV version 3"));
        assert!(err(&gzip(b"CPTX\x02")).contains("bad magic"));
        assert!(err(b"CPTV\x02G\x00").contains("expected the header section"));
        // Header field running past the end.
        assert!(err(b"CPTV\x02H\x01\x08T\x01\x02").contains("declares 8 bytes but only 2 remain"));
        assert!(err(b"CPTV\x02H\x02\x04X\x01\x00\x00\x00").contains("field 2 of 2 is missing"));
        assert!(err(b"CPTV\x02H\x01\x02X\x01\x00").contains("field 'X' has 2 bytes, expected 4"));
        assert!(err(b"CPTV\x02H\x02\x04X\x01\x00\x00\x00\x01C\x01").contains("no Y resolution"));
        for (x, y) in [(0u32, 120u32), (160, 0), (5000, 120), (160, u32::MAX)] {
            let mut b = b"CPTV\x02H\x03\x04X".to_vec();
            b.extend_from_slice(&x.to_le_bytes());
            b.extend_from_slice(b"\x04Y");
            b.extend_from_slice(&y.to_le_bytes());
            b.extend_from_slice(b"\x01C\x01");
            assert!(err(&b).contains("absurd frame size"), "{x}×{y}");
        }
        let mut c0 = hd.clone();
        c0.compression = 0;
        assert!(err(&encode_cptv(&c0, &[])).contains("unsupported compression scheme 0"));
        // Frame data truncated mid-frame (raw, so no gzip error masks it).
        let e = err(&raw[..raw.len() - 3]);
        assert!(
            e.contains("frame 1") && e.contains("shorter than declared"),
            "{e}"
        );
        assert!(err(&[&raw[..], b"X"].concat()).contains("frame 2: expected a frame section"));
    }

    /// Raw bytes of a 5×4 header plus one frame with the given fields and data.
    fn one_frame(fields: &[(u8, &[u8])], data: &[u8]) -> Vec<u8> {
        let mut b = encode_cptv(&header(5, 4), &[]);
        b.extend_from_slice(&[b'F', fields.len() as u8]);
        for (c, d) in fields {
            put_field(&mut b, *c, d);
        }
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn bad_frame_fields_are_reported() {
        let size = |n: u32| n.to_le_bytes();
        // 20 pixels at 8 bits need 4 + 19 bytes.
        let ok = one_frame(&[(b'w', &[8]), (b'f', &size(23))], &[0; 23]);
        assert_eq!(
            decode_cptv_bytes(&ok, Path::new("ok.cptv"))
                .unwrap()
                .1
                .len(),
            1
        );
        for bw in [0u8, 33, 255] {
            let e = err(&one_frame(&[(b'w', &[bw]), (b'f', &size(23))], &[0; 23]));
            assert!(
                e.contains("frame 0") && e.contains(&format!("impossible bit width {bw}")),
                "{e}"
            );
        }
        let e = err(&one_frame(&[(b'w', &[8]), (b'f', &size(22))], &[0; 22]));
        assert!(
            e.contains("frame size mismatch") && e.contains("need 23"),
            "{e}"
        );
        let e = err(&one_frame(
            &[(b'w', &[8]), (b'f', &size(u32::MAX))],
            &[0; 23],
        ));
        assert!(e.contains("shorter than declared"), "{e}");
        assert!(err(&one_frame(&[(b'f', &size(23))], &[0; 23])).contains("no bit width"));
        assert!(err(&one_frame(&[(b'w', &[8])], &[0; 23])).contains("no frame size"));
        assert!(
            err(&one_frame(&[(b'w', &[8, 8])], &[])).contains("field 'w' has 2 bytes, expected 1")
        );
        // Extra bytes after the packed data are tolerated (real writers pad).
        let padded = one_frame(&[(b'w', &[8]), (b'f', &size(40))], &[1; 40]);
        let (_, f) = decode_cptv_bytes(&padded, Path::new("pad.cptv")).unwrap();
        assert_eq!(f[0].pixels[0], 0x0101_0101_u32 as u16);
    }

    #[test]
    fn open_reports_io_errors_with_path() {
        let e = CptvSource::open(Path::new("/nonexistent/x.cptv")).unwrap_err();
        assert!(matches!(e, SourceError::Io { .. }));
        assert!(e.to_string().contains("/nonexistent/x.cptv"));
    }
}
