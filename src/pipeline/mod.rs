//! The on-device loop: source → guards → frame history → model → causal score → events →
//! alerts. [`Pipeline`] is the per-frame core, sans I/O (it is handed frames and hands back
//! alerts); [`runner`] drives it from a camera or a replay with pacing, health records, sinks,
//! signals and the systemd watchdog.

pub mod health;
pub mod notify;
pub mod runner;
pub mod schedule;
pub mod status;

use std::path::PathBuf;

use heapless::HistoryBuf;

use crate::alert::{ulid, Alert, AlertKind, AnomalyInfo, ALERT_SCHEMA_VERSION};
use crate::engine::{split_stack, EngineError, FrameStack, ScoreOutput, Scorer};
use crate::frame::guard::{FrameGuard, GuardConfig, PauseReason, Verdict};
use crate::frame::{ThermalFrame, Units};
use crate::score::calibration::{Calibration, CalibrationError, RegimeDrift, RegimeScorer};
use crate::score::drift::{DriftConfig, DriftError, DriftState};
use crate::score::events::{EventConfig, EventConfigError, EventDetector, EventUpdate, Phase};
use crate::score::footage::TermLayout;
use crate::score::terms::{frame_psnr_with, TermScratch};
use crate::score::zones::{Region, ZoneMap};

use self::health::{CameraState, Counters, HealthRecord, LatencyWindow};

/// Scores kept for the status screen's sparkline.
pub const SCORE_HISTORY: usize = 120;

/// How the loop turns scores into events and what it does besides.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoopSettings {
    /// Frames an event must last before it starts (short blips are not events).
    pub min_frames: usize,
    /// Hysteresis: an event ends when the score falls this far below the threshold.
    pub exit_margin: f64,
    /// Frames after an event's end during which no new event starts.
    pub cooldown_frames: usize,
    /// Send an `anomaly-update` alert when a running event reaches a new peak.
    pub updates: bool,
    /// Apply MNAD's test-time memory update after normal frames.
    pub memory_update: bool,
    /// Smallest region (model-grid pixels) reported in an alert.
    pub min_region_area: usize,
}

impl Default for LoopSettings {
    fn default() -> Self {
        Self {
            min_frames: 2,
            exit_margin: 1.0,
            cooldown_frames: 10,
            updates: true,
            memory_update: true,
            min_region_area: 2,
        }
    }
}

/// Who is watching: names that go into every alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Site name.
    pub site: String,
    /// Camera name.
    pub camera: String,
    /// Short hash of the model file.
    pub model: String,
}

/// Why the loop could not process a frame.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The model failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The calibration could not place the frame (e.g. a temperature regime without a
    /// radiometric camera).
    #[error(transparent)]
    Calibration(#[from] CalibrationError),
    /// The event settings are unusable.
    #[error("event settings: {0}")]
    Events(#[from] EventConfigError),
    /// The drift monitor could not be set up from the calibration.
    #[error("drift monitor: {0}")]
    Drift(#[from] DriftError),
    /// The calibration's masks or zones do not rasterise.
    #[error("calibration masks and zones: {0}")]
    Masks(String),
    /// The bundle has no calibration.
    #[error("the bundle has no calibration: run `edge-cli calibrate --bundle B --source <normal footage>` first")]
    Uncalibrated,
}

/// What happened to one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FrameOutcome {
    /// A guard held it back.
    Paused(PauseReason),
    /// It went into the history, which is not full yet.
    Warming,
    /// It was scored.
    Scored {
        /// Its score.
        score: f64,
        /// Whether an event is running after it.
        alerting: bool,
    },
}

/// The per-frame core of the loop.
pub struct Pipeline<'a> {
    id: Identity,
    settings: LoopSettings,
    scorer: Box<dyn Scorer + 'a>,
    stack: FrameStack,
    out: ScoreOutput,
    scratch: TermScratch,
    layout: TermLayout,
    zone_psnr: Vec<f64>,
    /// The calibrated zone whose own term set the last score, if one did.
    last_zone: Option<&'a str>,
    zones: ZoneMap,
    regime: RegimeScorer<'a>,
    drift: RegimeDrift<'a>,
    drift_state: DriftState,
    events: EventDetector,
    threshold: f64,
    guard: FrameGuard,
    scores: HistoryBuf<f32, SCORE_HISTORY>,
    last_regime: &'a str,
    next_seq: u64,
    counters: Counters,
    latency: LatencyWindow,
    snapshot_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    compensated: Option<ThermalFrame>,
    times: StageTimes,
}

/// Where the last scored frame's time went (for `edge-cli bench`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Guards, preprocessing (normalize, resize) and the frame history.
    pub preprocess: std::time::Duration,
    /// The model's forward pass, when the backend reports it.
    pub inference: Option<std::time::Duration>,
    /// The whole frame: all of the above, the scores, events, drift and the memory update.
    pub frame: std::time::Duration,
}

impl<'a> Pipeline<'a> {
    /// A loop for `scorer` under `cal`, with masks and zones from `zones` (on the model grid).
    /// `next_seq` and `next_event` continue the alert and event numbering of earlier runs.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: Identity,
        scorer: Box<dyn Scorer + 'a>,
        cal: &'a Calibration,
        zones: ZoneMap,
        settings: LoopSettings,
        guard: GuardConfig,
        drift: &DriftConfig,
        next_seq: u64,
        next_event: u64,
    ) -> Result<Self, PipelineError> {
        let stack = FrameStack::new(scorer.config())?;
        let regime = RegimeScorer::new(cal);
        let threshold = regime.threshold();
        let events = EventDetector::new(
            EventConfig {
                enter: threshold,
                exit: threshold - settings.exit_margin.max(0.0),
                min_frames: settings.min_frames,
                cooldown_frames: settings.cooldown_frames,
                zone: None,
            },
            next_event,
        )?;
        let cfg = scorer.config();
        // The prediction error is masked and zoned exactly as the calibration's statistics
        // were: the site's masks and zones shape regions, the calibration's shape scores.
        let layout = TermLayout::for_calibration(cal, cfg.width, cfg.height)
            .map_err(|e| PipelineError::Masks(e.to_string()))?;
        Ok(Self {
            id,
            settings,
            stack,
            out: ScoreOutput::default(),
            scratch: TermScratch::default(),
            zone_psnr: Vec::with_capacity(layout.zones.len()),
            layout,
            last_zone: None,
            zones,
            regime,
            drift: RegimeDrift::new(cal, drift)?,
            drift_state: DriftState::Ok,
            events,
            threshold,
            guard: FrameGuard::new(guard),
            scores: HistoryBuf::new(),
            last_regime: "",
            next_seq: next_seq.max(1),
            counters: Counters::default(),
            latency: LatencyWindow::default(),
            snapshot_dir: None,
            data_dir: None,
            compensated: None,
            times: StageTimes::default(),
            scorer,
        })
    }

    /// Writes alert snapshots under `data_dir/snapshots/` (referenced relative to `data_dir`).
    pub fn set_data_dir(&mut self, data_dir: Option<PathBuf>) {
        self.snapshot_dir = data_dir.as_ref().map(|d| d.join("snapshots"));
        self.data_dir = data_dir;
    }

    /// The alarm threshold scores are compared with.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The next alert sequence number (persist it to continue after a restart).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next event id (persist it to continue after a restart).
    pub fn next_event(&self) -> u64 {
        self.events.next_id()
    }

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Counters, for the runner's own (frames in, skipped, sink errors, faults).
    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// Recent scores, oldest first.
    pub fn recent_scores(&self) -> impl Iterator<Item = &f32> {
        self.scores.oldest_ordered()
    }

    /// The last scored frame's error map (model grid, c×H×W) and the grid size.
    pub fn error_map(&self) -> (&[f32], usize, usize) {
        let cfg = self.scorer.config();
        (&self.out.error_map, cfg.width, cfg.height)
    }

    /// Whether an event is running.
    pub fn alerting(&self) -> bool {
        self.events.active()
    }

    /// Where the last scored frame's time went.
    pub fn stage_times(&self) -> StageTimes {
        self.times
    }

    /// The scorer (backend, config).
    pub fn scorer(&self) -> &dyn Scorer {
        self.scorer.as_ref()
    }

    /// Restarts the frame history and score smoothing (a reconnect, a gap in the stream).
    pub fn restart(&mut self) {
        self.stack.clear();
        self.regime.reset();
        self.drift.reset();
        self.guard.reset();
    }

    /// Processes one sampled frame; alerts go to `emit`. `now_us` is the wall clock (µs since
    /// the Unix epoch) for the alerts' raise times and ids.
    pub fn process(
        &mut self,
        frame: &ThermalFrame,
        now_us: i64,
        emit: &mut dyn FnMut(Alert),
    ) -> Result<FrameOutcome, PipelineError> {
        let start = std::time::Instant::now();
        match self.guard.check(frame) {
            Verdict::Score => {}
            Verdict::Pause { reason, restart } => {
                if restart {
                    self.stack.clear();
                    self.regime.reset();
                    self.drift.reset();
                }
                self.counters.paused += 1;
                log::debug!("frame {}: paused ({})", frame.meta.seq, reason.name());
                return Ok(FrameOutcome::Paused(reason));
            }
        }
        if self.guard.offset() == 0 {
            return self.score_frame(frame, start, now_us, emit);
        }
        // The buffer is taken out while it is scored (no allocation once it exists).
        let mut comp = self
            .compensated
            .take()
            .unwrap_or_else(|| ThermalFrame::zeroed(1, 1, Default::default()));
        self.guard.compensate(frame, &mut comp);
        let result = self.score_frame(&comp, start, now_us, emit);
        self.compensated = Some(comp);
        result
    }

    /// Everything after the guards: history, model, score, events, drift, memory update.
    fn score_frame(
        &mut self,
        frame: &ThermalFrame,
        start: std::time::Instant,
        now_us: i64,
        emit: &mut dyn FnMut(Alert),
    ) -> Result<FrameOutcome, PipelineError> {
        if !self.stack.push(frame)? {
            self.counters.warming += 1;
            return Ok(FrameOutcome::Warming);
        }
        let preprocess = start.elapsed();
        self.scorer
            .score_into(self.stack.as_slice(), &mut self.out)?;
        let inference = self.scorer.last_forward();
        let cfg = self.scorer.config();
        let psnr = if self.layout.is_plain() {
            f64::from(self.out.psnr)
        } else {
            let (_, target) = split_stack(cfg, self.stack.as_slice())?;
            let psnr = frame_psnr_with(
                &mut self.scratch,
                &self.out.pred,
                target,
                cfg.width,
                cfg.height,
                &self.layout.terms,
                self.layout.masked.as_deref(),
            );
            self.layout
                .zones
                .psnrs_into(self.scratch.squared_error(), &mut self.zone_psnr);
            psnr
        };
        let distance = f64::from(self.out.feature_distance);
        let scene_c = crate::engine::scene_celsius(frame).map(f64::from);
        let t_us = frame.meta.timestamp_us;
        let scored = self
            .regime
            .push(t_us, scene_c, psnr, distance, &self.zone_psnr)?;
        let (score, regime) = (scored.score, scored.regime);
        self.last_regime = regime;
        self.last_zone = scored.zone;
        log::debug!(
            "frame {}: score {score:.2} (PSNR {psnr:.2} dB, distance {distance:.3e}, {regime})",
            frame.meta.seq
        );
        self.scores.write(score as f32);
        self.counters.scored += 1;
        if let Some(update) = self.events.push(frame.meta.seq, t_us, score) {
            self.raise_event(&update, score, frame, now_us, emit);
        }
        let alerting = self.events.active();
        let status = self.drift.push(t_us, scene_c, psnr, distance, alerting)?;
        if status.state != self.drift_state {
            let detail = serde_json::json!({
                "state": status.state.to_string(),
                "previous": self.drift_state.to_string(),
                "regime": regime,
                "reason": status.reason,
            });
            self.drift_state = status.state;
            let alert = self.alert(AlertKind::Drift, t_us, now_us, None, Some(detail));
            emit(alert);
        }
        if self.settings.memory_update && !alerting && score < self.threshold {
            self.counters.memory_updates += u64::from(self.scorer.update_memory(&self.out)?);
        }
        let frame_time = start.elapsed();
        self.times = StageTimes {
            preprocess,
            inference,
            frame: frame_time,
        };
        self.latency
            .push(frame_time.as_micros().min(u128::from(u32::MAX)) as u32);
        Ok(FrameOutcome::Scored { score, alerting })
    }

    /// Ends a running event (shutdown, end of a replay).
    pub fn finish(&mut self, now_us: i64, emit: &mut dyn FnMut(Alert)) {
        if let Some(update) = self.events.finish() {
            let frame = ThermalFrame::zeroed(1, 1, Default::default());
            self.raise_event(&update, update.peak_score, &frame, now_us, emit);
        }
    }

    /// The health record now.
    pub fn health(&self, uptime_s: f64, camera: CameraState) -> HealthRecord {
        let drift = self
            .drift
            .statuses()
            .into_iter()
            .find(|(r, _)| r == self.last_regime)
            .map_or_else(
                || "warming up".to_string(),
                |(r, s)| format!("{} ({r}: {})", s.state, s.reason),
            );
        HealthRecord {
            uptime_s,
            counters: self.counters,
            latency_p50_ms: self.latency.percentile_ms(50.0),
            latency_p99_ms: self.latency.percentile_ms(99.0),
            camera,
            backend: self.scorer.backend().to_string(),
            model: self.id.model.clone(),
            drift,
            guards: self.guard.counts(),
            rss_kib: health::rss_kib(),
            open_fds: health::open_fds(),
            last_score: self.scores.recent().map(|&s| f64::from(s)),
            memory_plan: self.scorer.memory_plan(),
        }
    }

    /// A health alert carrying `record` (or any detail).
    pub fn health_alert(&mut self, t_us: i64, now_us: i64, detail: serde_json::Value) -> Alert {
        self.alert(AlertKind::Health, t_us, now_us, None, Some(detail))
    }

    fn raise_event(
        &mut self,
        u: &EventUpdate,
        score: f64,
        frame: &ThermalFrame,
        now_us: i64,
        emit: &mut dyn FnMut(Alert),
    ) {
        let kind = match u.phase {
            Phase::Start => AlertKind::AnomalyStart,
            Phase::Update => AlertKind::AnomalyUpdate,
            Phase::End => AlertKind::AnomalyEnd,
        };
        if kind == AlertKind::AnomalyUpdate && !self.settings.updates {
            return;
        }
        let regions = if kind == AlertKind::AnomalyEnd {
            Vec::new()
        } else {
            self.regions(frame)
        };
        // A zone whose own term raised the score names the event; else the largest region's.
        let zone = self.last_zone.map(str::to_string).or_else(|| {
            regions
                .iter()
                .filter(|r| r.zone.is_some())
                .max_by_key(|r| r.area)
                .and_then(|r| r.zone.clone())
        });
        let mut snapshot = Vec::new();
        if kind == AlertKind::AnomalyStart {
            snapshot = self.snapshot(frame, u, &regions, score);
        }
        let info = AnomalyInfo {
            event: u.id,
            score,
            peak_score: u.peak_score,
            threshold: self.threshold,
            regime: self.last_regime.to_string(),
            zone,
            regions,
            frames: [u.first_frame, u.last_frame],
            start_us: u.start_us,
        };
        let mut alert = self.alert(kind, u.last_us, now_us, Some(info), None);
        alert.snapshot = snapshot;
        emit(alert);
    }

    /// Regions of the current error map, with temperatures when the camera is radiometric.
    fn regions(&self, frame: &ThermalFrame) -> Vec<Region> {
        let cfg = self.scorer.config();
        let plane = cfg.width * cfg.height;
        let Some(map) = self.out.error_map.get(..plane) else {
            return Vec::new();
        };
        let mean = map.iter().map(|&e| f64::from(e)).sum::<f64>() / plane.max(1) as f64;
        let peak = map.iter().copied().fold(0f32, f32::max);
        // Regions are where the error stands well above this frame's own level.
        let level = (peak * 0.3).max((mean * 6.0) as f32).max(1e-6);
        let temps = grid_temperatures(frame, cfg.width, cfg.height);
        let mut regions =
            self.zones
                .regions(map, level, self.settings.min_region_area, temps.as_deref());
        regions.sort_by(|a, b| b.peak_error.total_cmp(&a.peak_error));
        regions.truncate(8);
        regions
    }

    fn snapshot(
        &self,
        frame: &ThermalFrame,
        u: &EventUpdate,
        regions: &[Region],
        score: f64,
    ) -> Vec<String> {
        let (Some(dir), Some(data)) = (&self.snapshot_dir, &self.data_dir) else {
            return Vec::new();
        };
        if frame.pixels().len() <= 1 {
            return Vec::new();
        }
        let cfg = self.scorer.config();
        let stem = format!("{}-event{}-frame{}", self.id.camera, u.id, u.last_frame);
        match crate::display::write_snapshot(
            dir,
            &stem,
            frame,
            &self.out.error_map[..cfg.width * cfg.height],
            cfg.width,
            cfg.height,
            regions,
            score,
            self.threshold,
        ) {
            Ok(s) => [s.png, s.raw]
                .iter()
                .map(|p| {
                    p.strip_prefix(data)
                        .unwrap_or(p)
                        .to_string_lossy()
                        .into_owned()
                })
                .collect(),
            Err(e) => {
                log::warn!("event {}: snapshot failed: {e}", u.id);
                Vec::new()
            }
        }
    }

    fn alert(
        &mut self,
        kind: AlertKind,
        t_us: i64,
        now_us: i64,
        anomaly: Option<AnomalyInfo>,
        detail: Option<serde_json::Value>,
    ) -> Alert {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.counters.alerts += 1;
        // The entropy part keeps ids unique across cameras raising alerts in the same ms.
        let entropy = u128::from(crate::rng::splitmix64(&mut (seq ^ now_us as u64))) << 16
            ^ u128::from(seq & 0xFFFF);
        Alert {
            schema: ALERT_SCHEMA_VERSION,
            id: ulid(now_us.max(0) as u64 / 1000, entropy),
            seq,
            site: self.id.site.clone(),
            camera: self.id.camera.clone(),
            kind,
            time_us: t_us,
            raised_us: now_us,
            anomaly,
            detail,
            model: self.id.model.clone(),
            snapshot: Vec::new(),
        }
    }
}

/// Temperatures (°C) sampled at the model grid's pixel centres (radiometric frames only).
fn grid_temperatures(frame: &ThermalFrame, w: usize, h: usize) -> Option<Vec<f32>> {
    if frame.meta.units != Units::Centikelvin || frame.pixels().len() <= 1 {
        return None;
    }
    let (fw, fh) = (frame.width() as usize, frame.height() as usize);
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let sy = ((y as f64 + 0.5) * fh as f64 / h as f64) as usize;
        for x in 0..w {
            let sx = ((x as f64 + 0.5) * fw as f64 / w as f64) as usize;
            let ck = frame.pixels()[sy.min(fh - 1) * fw + sx.min(fw - 1)];
            out.push(crate::frame::centikelvin_to_celsius(ck));
        }
    }
    Some(out)
}
