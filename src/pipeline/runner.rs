//! Drives a [`Pipeline`] from a frame source: deadline sampling, replay pacing, sinks, health
//! records, camera reconnects, SIGINT/SIGTERM, the systemd watchdog and the status screen. The
//! loop never exits on a transient fault: a failing camera is reopened with backoff, a failing
//! frame is logged and skipped, a failing sink is counted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::health::{CameraState, HealthRecord};
use super::notify::Notifier;
use super::schedule::{Offer, Pacer, Scheduler};
use super::{FrameOutcome, Pipeline};
use crate::alert::outbox::{deliver_pending, Outbox};
use crate::alert::{Alert, AlertKind, Sink};
use crate::frame::ThermalFrame;
use crate::source::{FrameSource, SourceError};

/// Opens (and reopens, after a fault) the loop's frame source.
pub trait SourceFactory {
    /// Opens the source.
    fn open(&mut self) -> Result<Box<dyn FrameSource>, SourceError>;

    /// Whether the source is a live camera (its end is a fault to recover from, and replay
    /// pacing does not apply) rather than a recording.
    fn live(&self) -> bool;

    /// What it is, for logs.
    fn describe(&self) -> String;
}

/// How the runner behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Scoring period in capture time (1 s: one frame per second).
    pub period_us: i64,
    /// Replay speed, × real time (0: as fast as possible). Ignored for live cameras.
    pub speed: f64,
    /// Stop after reading this many frames.
    pub max_frames: Option<u64>,
    /// Stop after this much wall time.
    pub max_duration: Option<Duration>,
    /// Health record interval (wall time).
    pub health_every: Duration,
    /// Send health records to the sinks (they are always logged).
    pub health_to_sinks: bool,
    /// Write the status screen to this PNG every `status_every`.
    pub status_png: Option<PathBuf>,
    /// Draw the status screen on this Linux framebuffer (`fbdev` feature) every `status_every`.
    pub status_fbdev: Option<PathBuf>,
    /// Status screen interval (wall time).
    pub status_every: Duration,
    /// The data directory (alert numbering state, snapshots).
    pub data_dir: Option<PathBuf>,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
    /// Log alerts and health records at info level (off when a stdout sink prints them).
    pub log_alerts: bool,
    /// How long the outbox keeps alerts every sink has taken.
    pub outbox_retention: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            period_us: 1_000_000,
            speed: 1.0,
            max_frames: None,
            max_duration: None,
            health_every: Duration::from_secs(60),
            health_to_sinks: true,
            status_png: None,
            status_fbdev: None,
            status_every: Duration::from_secs(10),
            data_dir: None,
            max_backoff: Duration::from_secs(30),
            log_alerts: true,
            outbox_retention: Duration::from_secs(7 * 86_400),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    /// The last health record.
    pub health: HealthRecord,
    /// Alerts raised, by kind name.
    pub alerts: Vec<(String, u64)>,
    /// Whether a signal stopped the run.
    pub interrupted: bool,
}

/// Numbering that continues across restarts (`<data dir>/state.json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Numbering {
    /// Next alert sequence number.
    pub next_seq: u64,
    /// Next event id.
    pub next_event: u64,
}

impl Numbering {
    const FILE: &'static str = "state.json";

    /// Reads the numbering of earlier runs (fresh numbering when there is none).
    pub fn load(data_dir: &Path) -> Result<Self, String> {
        let path = data_dir.join(Self::FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                next_seq: 1,
                next_event: 1,
            }),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }

    /// Writes it atomically (temporary file, then rename).
    pub fn save(&self, data_dir: &Path) -> Result<(), String> {
        let path = data_dir.join(Self::FILE);
        let tmp = data_dir.join("state.json.tmp");
        let text = serde_json::to_string(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }
}

/// Registers SIGINT and SIGTERM to set the returned flag (the loop finishes its frame, flushes
/// and exits).
pub fn stop_flag() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Sleeps for `d`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

struct Delivery<'s> {
    sinks: &'s mut [Box<dyn Sink>],
    outbox: Option<&'s mut Outbox>,
    data_dir: Option<PathBuf>,
    log_level: log::Level,
    pending: Vec<Alert>,
    by_kind: Vec<(String, u64)>,
}

impl Delivery<'_> {
    fn deliver(&mut self, pipeline: &mut Pipeline<'_>) {
        if self.pending.is_empty() {
            return;
        }
        // Numbering first: a restart after a crash must not reuse a delivered number.
        if let Some(dir) = &self.data_dir {
            let n = Numbering {
                next_seq: pipeline.next_seq(),
                next_event: pipeline.next_event(),
            };
            if let Err(e) = n.save(dir) {
                log::warn!("{e}");
            }
        }
        let mut direct = Vec::new();
        for alert in self.pending.drain(..) {
            match self
                .by_kind
                .iter_mut()
                .find(|(k, _)| k == alert.kind.name())
            {
                Some((_, n)) => *n += 1,
                None => self.by_kind.push((alert.kind.name().to_string(), 1)),
            }
            if alert.kind != AlertKind::Health {
                log::log!(self.log_level, "{}", alert.summary());
            }
            match self.outbox.as_deref_mut() {
                // Stored (and fsynced) before any sink sees it.
                Some(outbox) => {
                    if let Err(e) = outbox.append(&alert) {
                        log::error!("alert {}: {e}; handing it to the sinks directly", alert.id);
                        direct.push(alert);
                    }
                }
                None => direct.push(alert),
            }
        }
        for alert in &direct {
            for sink in self.sinks.iter_mut() {
                if let Err(e) = sink.deliver(alert) {
                    pipeline.counters_mut().sink_errors += 1;
                    log::warn!("alert {}: {e}", alert.id);
                }
            }
        }
        self.retry(pipeline);
    }

    /// Hands the outbox's due alerts to the sinks (new ones, and retries of failed ones).
    fn retry(&mut self, pipeline: &mut Pipeline<'_>) {
        let Some(outbox) = self.outbox.as_deref_mut() else {
            return;
        };
        match deliver_pending(outbox, self.sinks, now_us() / 1000) {
            Ok(stats) => pipeline.counters_mut().sink_errors += stats.failed(),
            Err(e) => log::error!("outbox delivery: {e}"),
        }
    }
}

/// Runs the loop until the source ends (replays), a limit is reached or `stop` is set.
pub fn run(
    pipeline: &mut Pipeline<'_>,
    factory: &mut dyn SourceFactory,
    sinks: &mut [Box<dyn Sink>],
    outbox: Option<&mut Outbox>,
    opts: &RunOptions,
    stop: &AtomicBool,
) -> RunReport {
    let started = Instant::now();
    let mut notifier = Notifier::from_env();
    let live = factory.live();
    let mut scheduler = Scheduler::new(opts.period_us);
    let mut pacer = Pacer::new(if live { 0.0 } else { opts.speed });
    let mut out = Delivery {
        sinks,
        outbox,
        data_dir: opts.data_dir.clone(),
        log_level: if opts.log_alerts {
            log::Level::Info
        } else {
            log::Level::Debug
        },
        pending: Vec::with_capacity(16),
        by_kind: Vec::new(),
    };
    let mut frame = ThermalFrame::zeroed(1, 1, Default::default());
    let mut camera = CameraState::Reconnecting;
    let mut source: Option<Box<dyn FrameSource>> = None;
    let mut backoff = Duration::from_secs(1);
    let mut last_health = Instant::now();
    let mut last_retry = Instant::now();
    let mut last_prune = Instant::now();
    let mut last_status: Option<Instant> = None;
    let mut screen = if opts.status_png.is_some() || opts.status_fbdev.is_some() {
        match super::status::StatusScreen::new(
            opts.status_png.clone(),
            opts.status_fbdev.as_deref(),
        ) {
            Ok(s) => Some(s),
            Err(e) => {
                // The loop matters more than its screen.
                log::warn!("status screen disabled: {e}");
                None
            }
        }
    } else {
        None
    };
    let mut frames_read = 0u64;
    let mut ready = false;
    let mut t_us = 0i64;
    loop {
        if stop.load(Ordering::Relaxed) {
            log::info!("stop requested: finishing");
            break;
        }
        if opts.max_frames.is_some_and(|m| frames_read >= m)
            || opts.max_duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        let now = Instant::now();
        notifier.pet(now);
        if now.duration_since(last_retry) >= Duration::from_secs(1) {
            last_retry = now;
            out.retry(pipeline);
            if now.duration_since(last_prune) >= Duration::from_secs(3600) {
                last_prune = now;
                if let Some(o) = out.outbox.as_deref_mut() {
                    match o.prune(now_us() / 1000, opts.outbox_retention) {
                        Ok(n) if n > 0 => log::info!("outbox: pruned {n} delivered alerts"),
                        Ok(_) => {}
                        Err(e) => log::warn!("outbox: {e}"),
                    }
                }
            }
        }
        if now.duration_since(last_health) >= opts.health_every {
            last_health = now;
            emit_health(pipeline, &mut out, opts, started, camera, t_us);
        }
        let src = match &mut source {
            Some(s) => s,
            None => match factory.open() {
                Ok(s) => {
                    log::info!("source open: {}", factory.describe());
                    camera = CameraState::Streaming;
                    backoff = Duration::from_secs(1);
                    source.insert(s)
                }
                Err(e) => {
                    fault(pipeline, &mut out, &e.to_string(), t_us);
                    if !live {
                        // A recording that cannot be opened will not open later either.
                        camera = CameraState::Ended;
                        break;
                    }
                    sleep_unless(stop, backoff);
                    backoff = (backoff * 2).min(opts.max_backoff);
                    continue;
                }
            },
        };
        if !ready {
            notifier.send("READY=1");
            ready = true;
        }
        match src.next_into(&mut frame) {
            Ok(true) => {}
            Ok(false) if !live => {
                camera = CameraState::Ended;
                break;
            }
            Ok(false) => {
                fault(
                    pipeline,
                    &mut out,
                    "the camera stopped delivering frames",
                    t_us,
                );
                source = None;
                camera = CameraState::Reconnecting;
                pipeline.restart();
                scheduler.reset();
                continue;
            }
            Err(e) => {
                fault(pipeline, &mut out, &e.to_string(), t_us);
                source = None;
                camera = CameraState::Reconnecting;
                pipeline.restart();
                scheduler.reset();
                if !live {
                    camera = CameraState::Ended;
                    break;
                }
                continue;
            }
        }
        frames_read += 1;
        pipeline.counters_mut().frames_in += 1;
        t_us = frame.meta.timestamp_us;
        if scheduler.offer(t_us) == Offer::Skip {
            pipeline.counters_mut().skipped = scheduler.skipped();
            continue;
        }
        pipeline.counters_mut().dropped_late = scheduler.late();
        sleep_unless(stop, pacer.wait(t_us, Instant::now()));
        let before = out.pending.len();
        let pending = &mut out.pending;
        match pipeline.process(&frame, now_us(), &mut |a| pending.push(a)) {
            Ok(FrameOutcome::Scored { .. } | FrameOutcome::Warming | FrameOutcome::Paused(_)) => {}
            Err(e) => {
                log::warn!("frame {}: {e}; restarting the history", frame.meta.seq);
                pipeline.restart();
            }
        }
        if out.pending.len() > before {
            out.deliver(pipeline);
        }
        if let Some(screen) = &mut screen {
            if last_status.is_none_or(|t| t.elapsed() >= opts.status_every) {
                last_status = Some(Instant::now());
                if let Err(e) = screen.update(pipeline, &frame) {
                    log::warn!("status screen: {e}");
                }
            }
        }
    }
    notifier.send("STOPPING=1");
    let pending = &mut out.pending;
    pipeline.finish(now_us(), &mut |a| pending.push(a));
    out.deliver(pipeline);
    emit_health(pipeline, &mut out, opts, started, camera, t_us);
    for sink in out.sinks.iter_mut() {
        if let Err(e) = sink.flush() {
            log::warn!("{e}");
        }
    }
    RunReport {
        health: pipeline.health(started.elapsed().as_secs_f64(), camera),
        alerts: out.by_kind,
        interrupted: stop.load(Ordering::Relaxed),
    }
}

fn emit_health(
    pipeline: &mut Pipeline<'_>,
    out: &mut Delivery<'_>,
    opts: &RunOptions,
    started: Instant,
    camera: CameraState,
    t_us: i64,
) {
    let record = pipeline.health(started.elapsed().as_secs_f64(), camera);
    let outbox = out.outbox.as_deref().and_then(|o| match o.stats() {
        Ok(s) => Some(serde_json::json!({
            "stored": s.stored,
            "pending": s.pending.iter().map(|(k, n)| (k.clone(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
            "dropped": s.dropped.iter().map(|(k, n)| (k.clone(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
            "refused": s.refused.iter().map(|(k, n)| (k.clone(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
        })),
        Err(e) => {
            log::warn!("outbox: {e}");
            None
        }
    });
    log::log!(out.log_level, "health: {}", record.summary());
    if opts.health_to_sinks {
        let mut detail = serde_json::to_value(&record).unwrap_or_default();
        if let Some(obj) = detail.as_object_mut() {
            obj.insert("summary".into(), record.summary().into());
            if let Some(o) = outbox {
                obj.insert("outbox".into(), o);
            }
        }
        let alert = pipeline.health_alert(t_us, now_us(), detail);
        out.pending.push(alert);
        out.deliver(pipeline);
    }
}

fn fault(pipeline: &mut Pipeline<'_>, out: &mut Delivery<'_>, what: &str, t_us: i64) {
    pipeline.counters_mut().camera_faults += 1;
    log::warn!("camera fault: {what}");
    let alert = pipeline.health_alert(
        t_us,
        now_us(),
        serde_json::json!({ "camera": "fault", "error": what }),
    );
    out.pending.push(alert);
    out.deliver(pipeline);
}
