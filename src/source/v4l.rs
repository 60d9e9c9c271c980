//! V4L2 camera source (feature `v4l`): FLIR Lepton on PureThermal and FLIR Boson over UVC.
//!
//! Opening negotiates a pixel format in [`NEGOTIATION_ORDER`] (Y16 first), reads the format
//! back to catch driver substitutions, and streams through mmap buffers. Each buffer is sliced
//! to `bytesused`, stripped of Lepton telemetry rows (which fill in the frame's FFC state) and
//! converted into the caller's frame without allocating.
//!
//! # Failures and reconnects
//!
//! A live camera never ends: [`FrameSource::next_into`] never returns `Ok(false)`. When a read
//! fails (unplugged: `ENODEV`; stalled: no frame within the read timeout; any other ioctl
//! error) the device is closed and reopened on the [`Backoff`] schedule (0.5 s doubling to
//! 30 s by default; reset by the next good frame). Every call sleeps until the scheduled
//! retry before reopening, so a caller looping on errors never spins. What the caller sees
//! depends on [`DisconnectPolicy`]:
//!
//! - [`DisconnectPolicy::Block`] (default): `next_into` keeps retrying inside the call and
//!   returns only with a frame; outages show up as `log` warnings and in
//!   [`V4l2Source::camera_state`] (readable between frames). Simple pipelines built on `?`
//!   survive a USB glitch.
//! - [`DisconnectPolicy::ReturnError`]: each failure is returned as [`SourceError::Camera`];
//!   calling `next_into` again waits out the backoff and retries. For callers that report
//!   health or need to shut down promptly.
//!
//! Individually bad buffers (driver error flag, short `bytesused`) are skipped; only a long
//! run of them counts as a failure.
//!
//! The `v4l` crate panics in a few places this code cannot guard: a failed `munmap`/`close`
//! on drop, a `VIDIOC_STREAMOFF` error other than `ENODEV` on drop, and a driver reporting an
//! unknown colorspace or field order. None is expected from uvcvideo.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use v4l::buffer::{Flags as BufferFlags, Type};
use v4l::capability::Flags as CapabilityFlags;
use v4l::device::Handle;
use v4l::framesize::{FrameSize, FrameSizeEnum};
use v4l::io::mmap::Stream as MmapStream;
use v4l::io::traits::CaptureStream;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC};

use super::v4l_format::{
    candidate_formats, choose_size, convert_into, detect_packed_422, fourcc_to_string,
    telemetry_layout, telemetry_row_a, Backoff, BackoffAction, BackoffConfig, CameraState,
    LeptonTelemetry, PixelFormat, TelemetryByteOrder, TelemetryLayout, TimestampMapper,
    WordOrderResolver, NEGOTIATION_ORDER,
};
use super::{FrameSource, SourceError, SourceInfo};
use crate::frame::{Clock, FrameMeta, ThermalFrame};

/// `POLLIN` from `<poll.h>` (the same value on every Linux architecture); `v4l` re-exports
/// no constant for it and this crate does not depend on `libc`.
const POLLIN: i16 = 0x0001;

/// `ENODEV`: the device node is gone (camera unplugged).
const ENODEV: i32 = 19;

/// Consecutive unusable buffers tolerated before the camera counts as failed.
const MAX_BAD_FRAMES: u32 = 30;

/// Frames to examine for a mislabelled packed 4:2:2 layout before trusting the advertised one.
const PACKED_422_CHECK_FRAMES: u32 = 30;

/// Longest read timeout accepted (the `v4l` crate panics above `i32::MAX` milliseconds).
const MAX_READ_TIMEOUT: Duration = Duration::from_secs(3600);

/// What `next_into` does when the camera fails (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DisconnectPolicy {
    /// Keep retrying inside `next_into` until a frame arrives.
    #[default]
    Block,
    /// Return each failure as [`SourceError::Camera`]; the next call retries after the backoff.
    ReturnError,
}

/// How to open and run a V4L2 camera.
#[derive(Debug, Clone, PartialEq)]
pub struct V4l2Config {
    /// Device frame size to request (e.g. 160×122 for a Lepton 3 with telemetry, 320×256 for a
    /// Boson 320); when absent or not offered, the largest offered size.
    pub preferred_size: Option<(u32, u32)>,
    /// Force one pixel format instead of negotiating.
    pub format: Option<PixelFormat>,
    /// Y16 pixels are centikelvin (Lepton TLinear / Boson radiometric) rather than raw counts.
    pub radiometric: bool,
    /// Strip and parse Lepton telemetry rows from Y16 frames of 160×122 or 80×63.
    pub telemetry: bool,
    /// Byte order of Lepton telemetry words.
    pub telemetry_byte_order: TelemetryByteOrder,
    /// Driver buffers to map.
    pub buffer_count: u32,
    /// How long to wait for a frame before treating the camera as stalled.
    pub read_timeout: Duration,
    /// Frame rate to request; `None` leaves the camera's (the Lepton's ~9 fps is fixed anyway).
    pub fps: Option<u32>,
    /// Skip queued frames so that each read returns the newest one (a slow consumer sees
    /// current frames rather than a backlog).
    pub keep_newest: bool,
    /// Reconnect schedule.
    pub backoff: BackoffConfig,
    /// What `next_into` does on failure.
    pub on_disconnect: DisconnectPolicy,
}

impl Default for V4l2Config {
    fn default() -> Self {
        Self {
            preferred_size: None,
            format: None,
            radiometric: false,
            telemetry: true,
            telemetry_byte_order: TelemetryByteOrder::default(),
            buffer_count: 4,
            // A Lepton pauses output for about a second during FFC; 3 s leaves margin.
            read_timeout: Duration::from_secs(3),
            fps: None,
            keep_newest: true,
            backoff: BackoffConfig::default(),
            on_disconnect: DisconnectPolicy::default(),
        }
    }
}

/// The format agreed with the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Negotiated {
    format: PixelFormat,
    /// Device frame size (including telemetry rows).
    width: u32,
    height: u32,
    /// Bytes per line as the driver reports it.
    stride: usize,
    telemetry: Option<TelemetryLayout>,
}

impl Negotiated {
    /// Rows of image in each buffer.
    fn image_rows(&self) -> u32 {
        self.telemetry.map_or(self.height, |t| t.image_rows)
    }
}

/// An open, configured device. Fields drop in order: the stream (STREAMOFF, munmap) first.
struct Live {
    stream: MmapStream<'static>,
    handle: Arc<Handle>,
    _device: Device,
}

/// Why a read produced no frame.
enum ReadError {
    /// The camera failed: close and reopen.
    Camera(String),
    /// This buffer is unusable; the next one may be fine.
    BadFrame(String),
}

/// A live V4L2 camera.
pub struct V4l2Source {
    path: PathBuf,
    config: V4l2Config,
    info: SourceInfo,
    negotiated: Negotiated,
    /// Format used for conversion: the negotiated one, or the other 4:2:2 layout when the data shows
    /// the advertised layout is wrong.
    luma_format: PixelFormat,
    packed_checks_left: u32,
    live: Option<Live>,
    backoff: Backoff,
    seq: u64,
    start: Instant,
    timestamps: TimestampMapper,
    word_order: WordOrderResolver,
    telemetry: Option<LeptonTelemetry>,
    agc_warned: bool,
    last_driver_seq: Option<u32>,
    dropped: u64,
    bad_frames: u32,
    source: Arc<str>,
}

impl fmt::Debug for V4l2Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V4l2Source")
            .field("device", &self.path)
            .field("format", &self.negotiated)
            .field("state", &self.camera_state())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

fn camera_error(path: &Path, detail: impl Into<String>) -> SourceError {
    SourceError::Camera {
        device: path.display().to_string(),
        detail: detail.into(),
    }
}

/// Words for an I/O error from the device.
fn describe_io(what: &str, e: &io::Error, timeout: Duration) -> String {
    if e.raw_os_error() == Some(ENODEV) {
        format!("{what}: device disconnected (ENODEV)")
    } else if e.kind() == io::ErrorKind::TimedOut {
        format!("{what}: no frame within {:.1} s", timeout.as_secs_f32())
    } else if e.kind() == io::ErrorKind::PermissionDenied {
        format!("{what}: {e} (is this user in the `video` group?)")
    } else {
        format!("{what}: {e}")
    }
}

/// Candidate sizes from a driver's frame-size list: discrete sizes as they are; for stepwise
/// or continuous ranges, the largest size and `preferred` when the range allows it.
fn offered_sizes(sizes: &[FrameSize], preferred: Option<(u32, u32)>) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for s in sizes {
        match &s.size {
            FrameSizeEnum::Discrete(d) => out.push((d.width, d.height)),
            FrameSizeEnum::Stepwise(r) => {
                out.push((r.max_width, r.max_height));
                if let Some((w, h)) = preferred {
                    let fits = |v: u32, min: u32, max: u32, step: u32| {
                        (min..=max).contains(&v) && (step <= 1 || (v - min).is_multiple_of(step))
                    };
                    if fits(w, r.min_width, r.max_width, r.step_width)
                        && fits(h, r.min_height, r.max_height, r.step_height)
                    {
                        out.push((w, h));
                    }
                }
            }
        }
    }
    out
}

/// Requests `format` at `size`, reads the format back and checks the driver kept it.
fn apply_format(
    dev: &Device,
    format: PixelFormat,
    (width, height): (u32, u32),
    config: &V4l2Config,
) -> Result<Negotiated, String> {
    let fourcc = FourCC::new(&format.fourcc());
    dev.set_format(&Format::new(width, height, fourcc))
        .map_err(|e| format!("VIDIOC_S_FMT {width}×{height}: {e}"))?;
    // Drivers substitute what they cannot do rather than fail, so check what is in force.
    let actual = dev.format().map_err(|e| format!("VIDIOC_G_FMT: {e}"))?;
    if actual.fourcc != fourcc || actual.width != width || actual.height != height {
        return Err(format!(
            "driver substituted {} {}×{} for {width}×{height}",
            fourcc_to_string(actual.fourcc.repr),
            actual.width,
            actual.height
        ));
    }
    let min = format.min_bytes_per_line(width);
    let stride = if actual.stride == 0 {
        min
    } else {
        actual.stride as usize
    };
    if stride < min {
        return Err(format!(
            "driver reports {stride} bytes per line, less than {min} for width {width}"
        ));
    }
    let telemetry = if format == PixelFormat::Y16 && config.telemetry {
        telemetry_layout(width, height)
    } else {
        None
    };
    Ok(Negotiated {
        format,
        width,
        height,
        stride,
        telemetry,
    })
}

/// Opens the device and negotiates a format; with `expect`, insists on that exact format
/// (reconnects must not change the frame size under the caller).
fn open_device(
    path: &Path,
    config: &V4l2Config,
    expect: Option<&Negotiated>,
) -> Result<(Live, Negotiated, Option<f32>), String> {
    let dev =
        Device::with_path(path).map_err(|e| describe_io("cannot open", &e, config.read_timeout))?;
    let caps = dev
        .query_caps()
        .map_err(|e| format!("not a V4L2 device (VIDIOC_QUERYCAP: {e})"))?;
    let needed = CapabilityFlags::VIDEO_CAPTURE | CapabilityFlags::STREAMING;
    if !caps.capabilities.contains(needed) {
        return Err(format!(
            "{} ({}) is not a streaming single-planar capture device (capabilities: {})",
            caps.card, caps.driver, caps.capabilities
        ));
    }
    let advertised: Vec<[u8; 4]> = dev
        .enum_formats()
        .map_err(|e| format!("VIDIOC_ENUM_FMT: {e}"))?
        .iter()
        .map(|d| d.fourcc.repr)
        .collect();
    let offered = || {
        advertised
            .iter()
            .map(|c| fourcc_to_string(*c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let candidates = match (expect, config.format) {
        (Some(n), _) => vec![n.format],
        (None, Some(f)) => vec![f],
        (None, None) => candidate_formats(&advertised),
    };
    if candidates.is_empty() {
        let ours = NEGOTIATION_ORDER
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(format!(
            "{} offers none of the formats we read ({ours}); it offers: {}",
            caps.card,
            offered()
        ));
    }
    let mut failures = Vec::new();
    let mut chosen = None;
    for format in candidates {
        if !advertised.contains(&format.fourcc()) {
            failures.push(format!("{format} is not offered (offered: {})", offered()));
            continue;
        }
        let size = match expect {
            Some(n) => Some((n.width, n.height)),
            None => {
                let sizes = dev
                    .enum_framesizes(FourCC::new(&format.fourcc()))
                    .unwrap_or_default();
                let mut candidates = offered_sizes(&sizes, config.preferred_size);
                if candidates.is_empty() {
                    // Drivers without VIDIOC_ENUM_FRAMESIZES: the request, else what is set now.
                    candidates.extend(config.preferred_size);
                    candidates.extend(dev.format().ok().map(|f| (f.width, f.height)));
                }
                choose_size(&candidates, config.preferred_size)
            }
        };
        let Some(size) = size else {
            failures.push(format!("{format}: no frame size offered"));
            continue;
        };
        match apply_format(&dev, format, size, config) {
            Ok(n) => {
                chosen = Some(n);
                break;
            }
            Err(e) => failures.push(format!("{format}: {e}")),
        }
    }
    let Some(negotiated) = chosen else {
        return Err(format!("no usable format: {}", failures.join("; ")));
    };
    if let Some(n) = expect {
        if *n != negotiated {
            return Err(format!(
                "camera came back with a different format ({negotiated:?}, expected {n:?})"
            ));
        }
    }
    if !failures.is_empty() {
        log::warn!(
            "{}: fell back to {}: {}",
            path.display(),
            negotiated.format,
            failures.join("; ")
        );
    }
    if let Some(fps) = config.fps {
        // Fixed-rate cameras (Lepton) refuse or ignore this; the frame rate is then what it is.
        match dev.set_params(&Parameters::with_fps(fps)) {
            Ok(p) => log::debug!("{}: frame interval now {}", path.display(), p.interval),
            Err(e) => log::debug!("{}: cannot set {fps} fps: {e}", path.display()),
        }
    }
    let fps = dev.params().ok().and_then(|p| {
        let i = p.interval;
        (i.numerator > 0 && i.denominator > 0).then(|| i.denominator as f32 / i.numerator as f32)
    });
    let mut stream = MmapStream::with_buffers(&dev, Type::VideoCapture, config.buffer_count)
        .map_err(|e| describe_io("cannot map buffers", &e, config.read_timeout))?;
    stream.set_timeout(config.read_timeout);
    let handle = stream.handle();
    log::info!(
        "{}: {} ({}) streaming {} {}×{}, {} bytes/line{}",
        path.display(),
        caps.card,
        caps.driver,
        negotiated.format,
        negotiated.width,
        negotiated.height,
        negotiated.stride,
        if negotiated.telemetry.is_some() {
            ", Lepton telemetry footer"
        } else {
            ""
        }
    );
    Ok((
        Live {
            stream,
            handle,
            _device: dev,
        },
        negotiated,
        fps,
    ))
}

impl V4l2Source {
    /// Opens the camera at `path` (e.g. `/dev/video0`) and negotiates a format. Failing to open
    /// is an error here; only failures after a successful open lead to reconnecting.
    pub fn open(path: impl AsRef<Path>, config: V4l2Config) -> Result<Self, SourceError> {
        let path = path.as_ref();
        if config.buffer_count == 0 || config.buffer_count > 32 {
            return Err(camera_error(
                path,
                format!("buffer count {} is not in 1..=32", config.buffer_count),
            ));
        }
        if config.read_timeout < Duration::from_millis(1) || config.read_timeout > MAX_READ_TIMEOUT
        {
            return Err(camera_error(
                path,
                format!(
                    "read timeout {:?} is not in 1 ms..={MAX_READ_TIMEOUT:?}",
                    config.read_timeout
                ),
            ));
        }
        let (live, negotiated, fps) =
            open_device(path, &config, None).map_err(|d| camera_error(path, d))?;
        let name = path.display().to_string();
        let info = SourceInfo {
            name: name.clone(),
            kind: "v4l2",
            width: negotiated.width,
            height: negotiated.image_rows(),
            units: negotiated.format.units(config.radiometric),
            frame_count: None,
            fps,
        };
        Ok(Self {
            path: path.to_path_buf(),
            info,
            negotiated,
            luma_format: negotiated.format,
            packed_checks_left: PACKED_422_CHECK_FRAMES,
            live: Some(live),
            backoff: Backoff::new(config.backoff),
            seq: 0,
            start: Instant::now(),
            timestamps: TimestampMapper::default(),
            word_order: WordOrderResolver::new(config.telemetry_byte_order),
            telemetry: None,
            agc_warned: false,
            last_driver_seq: None,
            dropped: 0,
            bad_frames: 0,
            source: Arc::from(name),
            config,
        })
    }

    /// What the camera is doing now (starting, streaming, or reconnecting with the last error).
    pub fn camera_state(&self) -> CameraState {
        self.backoff.state(Instant::now())
    }

    /// The negotiated pixel format.
    pub fn pixel_format(&self) -> PixelFormat {
        self.negotiated.format
    }

    /// The device frame size, including any telemetry rows.
    pub fn device_size(&self) -> (u32, u32) {
        (self.negotiated.width, self.negotiated.height)
    }

    /// Telemetry of the last frame, when the camera sends it.
    pub fn telemetry(&self) -> Option<&LeptonTelemetry> {
        self.telemetry.as_ref()
    }

    /// Frames lost so far: skipped to stay current, or dropped by the driver.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped
    }

    /// The configuration the source was opened with.
    pub fn config(&self) -> &V4l2Config {
        &self.config
    }

    fn reopen(&mut self) -> Result<(), String> {
        let (live, _, _) = open_device(&self.path, &self.config, Some(&self.negotiated))?;
        self.live = Some(live);
        // Buffer timestamps and sequence numbers restart with the new stream.
        self.last_driver_seq = None;
        self.bad_frames = 0;
        Ok(())
    }

    /// Reads one frame from the open stream into `frame`.
    fn read_frame(&mut self, frame: &mut ThermalFrame) -> Result<(), ReadError> {
        let Some(live) = self.live.as_mut() else {
            return Err(ReadError::Camera("camera is closed".into()));
        };
        let timeout = self.config.read_timeout;
        let mut skipped = 0u32;
        loop {
            let (buf, meta) = live
                .stream
                .next()
                .map_err(|e| ReadError::Camera(describe_io("read failed", &e, timeout)))?;
            if let Some(prev) = self.last_driver_seq {
                self.dropped += u64::from(meta.sequence.wrapping_sub(prev).saturating_sub(1));
            }
            self.last_driver_seq = Some(meta.sequence);
            // A newer buffer is already waiting: take that one instead.
            if self.config.keep_newest
                && skipped < self.config.buffer_count
                && live.handle.poll(POLLIN, 0).unwrap_or(0) > 0
            {
                skipped += 1;
                self.dropped += 1;
                continue;
            }
            if meta.flags.contains(BufferFlags::ERROR) {
                return Err(ReadError::BadFrame(format!(
                    "driver flagged buffer {} as corrupt",
                    meta.sequence
                )));
            }
            // The mapping is the whole buffer; only `bytesused` of it is this frame.
            let data = &buf[..(meta.bytesused as usize).min(buf.len())];
            let n = self.negotiated;
            let (w, h) = (n.width, n.image_rows());
            if frame.width() != w || frame.height() != h {
                frame.reshape(w, h);
            }
            if self.packed_checks_left > 0
                && matches!(n.format, PixelFormat::Yuyv | PixelFormat::Uyvy)
            {
                self.packed_checks_left -= 1;
                if let Some(actual) = detect_packed_422(data, w, h, n.stride) {
                    if actual != n.format {
                        log::warn!(
                            "{}: advertised {} but the data is {}; reading it as {}",
                            self.path.display(),
                            n.format,
                            actual,
                            actual
                        );
                    }
                    self.luma_format = actual;
                    self.packed_checks_left = 0;
                }
            }
            convert_into(self.luma_format, data, w, h, n.stride, frame.pixels_mut())
                .map_err(|e| ReadError::BadFrame(format!("buffer {}: {e}", meta.sequence)))?;
            self.telemetry = match n.telemetry {
                Some(layout) => {
                    let parsed = telemetry_row_a(data, layout, n.stride)
                        .and_then(|row| LeptonTelemetry::parse(row, self.word_order.resolve(row)));
                    match parsed {
                        Ok(t) => Some(t),
                        Err(e) => {
                            return Err(ReadError::BadFrame(format!(
                                "buffer {}: {e}",
                                meta.sequence
                            )))
                        }
                    }
                }
                None => None,
            };
            if let Some(t) = &self.telemetry {
                if t.agc_enabled && self.config.radiometric && !self.agc_warned {
                    self.agc_warned = true;
                    log::warn!(
                        "{}: Lepton reports AGC on, so Y16 values are not temperatures",
                        self.path.display()
                    );
                }
            }
            // uvcvideo stamps buffers on CLOCK_MONOTONIC; other clocks are not comparable.
            let device_us = (meta.flags & BufferFlags::TIMESTAMP_MASK
                == BufferFlags::TIMESTAMP_MONOTONIC)
                .then(|| Duration::from(meta.timestamp).as_micros())
                .and_then(|us| i64::try_from(us).ok())
                .filter(|&us| us > 0);
            let host_us = i64::try_from(self.start.elapsed().as_micros()).unwrap_or(i64::MAX);
            frame.meta = FrameMeta {
                seq: self.seq,
                timestamp_us: self.timestamps.map(device_us, host_us),
                clock: Clock::Relative,
                source: self.source.clone(),
                units: self.info.units,
                ffc: self.telemetry.map(|t| t.ffc_state),
                ms_since_ffc: self.telemetry.and_then(|t| t.ms_since_ffc()),
            };
            self.seq += 1;
            return Ok(());
        }
    }

    /// Closes the camera and schedules a reopen; returns the error to report.
    fn fail(&mut self, detail: String) -> SourceError {
        self.live = None;
        self.telemetry = None;
        let delay = self.backoff.on_failure(Instant::now(), detail.clone());
        log::warn!(
            "{}: {detail}; reopening in {:.1} s (attempt {})",
            self.path.display(),
            delay.as_secs_f32(),
            self.backoff.attempt()
        );
        camera_error(&self.path, detail)
    }
}

impl FrameSource for V4l2Source {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    /// Reads the newest frame; never returns `Ok(false)`. See the module documentation for
    /// what happens when the camera fails.
    fn next_into(&mut self, frame: &mut ThermalFrame) -> Result<bool, SourceError> {
        loop {
            if self.live.is_none() {
                if let BackoffAction::Wait(d) = self.backoff.next_action(Instant::now()) {
                    thread::sleep(d);
                }
                if let Err(detail) = self.reopen() {
                    let e = self.fail(detail);
                    if self.config.on_disconnect == DisconnectPolicy::ReturnError {
                        return Err(e);
                    }
                    continue;
                }
                log::info!(
                    "{}: reopened after {} failures",
                    self.path.display(),
                    self.backoff.attempt()
                );
            }
            match self.read_frame(frame) {
                Ok(()) => {
                    self.bad_frames = 0;
                    let recovered = self.backoff.on_frame();
                    if recovered > 0 {
                        log::info!(
                            "{}: streaming again after {recovered} failures",
                            self.path.display()
                        );
                    }
                    return Ok(true);
                }
                Err(ReadError::BadFrame(detail)) => {
                    self.bad_frames += 1;
                    log::debug!("{}: skipped frame: {detail}", self.path.display());
                    if self.bad_frames >= MAX_BAD_FRAMES {
                        self.bad_frames = 0;
                        let e = self.fail(format!(
                            "{MAX_BAD_FRAMES} unusable frames in a row, last: {detail}"
                        ));
                        if self.config.on_disconnect == DisconnectPolicy::ReturnError {
                            return Err(e);
                        }
                    }
                }
                Err(ReadError::Camera(detail)) => {
                    let e = self.fail(detail);
                    if self.config.on_disconnect == DisconnectPolicy::ReturnError {
                        return Err(e);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v4l::framesize::{Discrete, Stepwise};

    #[test]
    fn missing_device_is_a_camera_error_naming_it() {
        let e =
            V4l2Source::open("/dev/video-thermal-edge-test-99", V4l2Config::default()).unwrap_err();
        assert!(
            matches!(&e, SourceError::Camera { device, .. } if device == "/dev/video-thermal-edge-test-99")
        );
        let msg = e.to_string();
        assert!(
            msg.contains("/dev/video-thermal-edge-test-99") && msg.contains("cannot open"),
            "{msg}"
        );
    }

    #[test]
    fn non_v4l2_file_is_rejected_clearly() {
        let e = V4l2Source::open("/dev/null", V4l2Config::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/dev/null") && e.contains("not a V4L2 device"),
            "{e}"
        );
    }

    #[test]
    fn bad_configuration_is_rejected_before_opening() {
        let cfg = V4l2Config {
            buffer_count: 0,
            ..V4l2Config::default()
        };
        let e = V4l2Source::open("/dev/video0", cfg)
            .unwrap_err()
            .to_string();
        assert!(e.contains("buffer count 0"), "{e}");
        let cfg = V4l2Config {
            read_timeout: Duration::ZERO,
            ..V4l2Config::default()
        };
        assert!(V4l2Source::open("/dev/video0", cfg)
            .unwrap_err()
            .to_string()
            .contains("read timeout"));
    }

    #[test]
    fn stepwise_sizes_offer_maximum_and_fitting_preference() {
        let fourcc = FourCC::new(b"Y16 ");
        let discrete = |width, height| FrameSize {
            index: 0,
            fourcc,
            typ: 1,
            size: FrameSizeEnum::Discrete(Discrete { width, height }),
        };
        let lepton = [discrete(160, 120), discrete(160, 122)];
        assert_eq!(offered_sizes(&lepton, None), vec![(160, 120), (160, 122)]);
        let range = FrameSize {
            index: 0,
            fourcc,
            typ: 2,
            size: FrameSizeEnum::Stepwise(Stepwise {
                min_width: 16,
                max_width: 640,
                step_width: 16,
                min_height: 16,
                max_height: 512,
                step_height: 0,
            }),
        };
        assert_eq!(
            offered_sizes(std::slice::from_ref(&range), Some((320, 256))),
            vec![(640, 512), (320, 256)]
        );
        assert_eq!(
            offered_sizes(std::slice::from_ref(&range), Some((321, 256))),
            vec![(640, 512)]
        );
        assert_eq!(
            offered_sizes(std::slice::from_ref(&range), Some((800, 600))),
            vec![(640, 512)]
        );
    }

    #[test]
    fn source_can_move_to_a_capture_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<V4l2Source>();
    }

    #[test]
    fn io_errors_are_described() {
        let t = Duration::from_secs(3);
        assert!(
            describe_io("read failed", &io::Error::from_raw_os_error(ENODEV), t)
                .contains("disconnected")
        );
        let timeout = io::Error::new(io::ErrorKind::TimedOut, "VIDIOC_DQBUF");
        assert!(describe_io("read failed", &timeout, t).contains("no frame within 3.0 s"));
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(describe_io("cannot open", &denied, t).contains("video` group"));
    }
}
