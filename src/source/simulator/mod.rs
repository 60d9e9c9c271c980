//! Harbor simulator: a fixed thermal camera watching a harbor front, with normal activity
//! (walkers, cyclists, dogs, one-way road traffic, passing boats) and labelled anomalies
//! (someone in the restricted pier-end zone, jumping, a car going the wrong way, a truck on the
//! pedestrian quay, people running).
//!
//! [`HarborSimulator`] is a [`FrameSource`] that renders one clip in centikelvin with per-frame
//! labels; [`dataset`] writes many clips in the Thermal Rare Event layout. Everything is a pure
//! function of the seeds: the same seed gives the same bytes on every platform.

mod actors;
mod camera;
pub mod dataset;
mod draw;
mod rng;
mod scene;
mod sensor;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use camera::Gray8Camera;
pub use dataset::{plan_clips, write_dataset, ClipPlan, DatasetConfig, DatasetSummary, Split};
pub use scene::SceneConditions;
pub use sensor::{GrayWindow, SensorEvent, SensorEventKind};

use self::actors::Actor;
use self::draw::Canvas;
use self::rng::{derive, Rng, SinTable};
use self::scene::{Site, StaticScene, View};
use self::sensor::Timeline;
use super::{label, FrameSource, SourceError, SourceInfo};
use crate::frame::{celsius_to_centikelvin, Clock, FrameMeta, ThermalFrame, Units};

/// Name of the restricted zone at the end of the pier.
pub const PIER_END_ZONE: &str = "pier-end";

/// The kinds of labelled anomaly the simulator can stage.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum AnomalyKind {
    /// A person walking, standing or sitting in the restricted pier-end zone.
    RestrictedZone,
    /// A person jumping up and down on the quay edge or pier, sometimes into the water.
    Jumping,
    /// A car on the one-way road moving the wrong way (reversing, or driving against traffic).
    CarReversing,
    /// A large warm truck on the pedestrian quay.
    TruckOnQuay,
    /// One or more people running (chasing) along the quay, much faster than walkers.
    Running,
}

impl AnomalyKind {
    /// Every kind, in a fixed order.
    pub const ALL: [AnomalyKind; 5] = [
        AnomalyKind::RestrictedZone,
        AnomalyKind::Jumping,
        AnomalyKind::CarReversing,
        AnomalyKind::TruckOnQuay,
        AnomalyKind::Running,
    ];

    /// Stable kebab-case name (as in manifests and on the command line).
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::RestrictedZone => "restricted-zone",
            AnomalyKind::Jumping => "jumping",
            AnomalyKind::CarReversing => "car-reversing",
            AnomalyKind::TruckOnQuay => "truck-on-quay",
            AnomalyKind::Running => "running",
        }
    }

    /// The named zone the anomaly is about, if any.
    pub fn zone(self) -> Option<&'static str> {
        match self {
            AnomalyKind::RestrictedZone => Some(PIER_END_ZONE),
            _ => None,
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AnomalyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AnomalyKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = AnomalyKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown anomaly '{s}' (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// A calendar date (proleptic Gregorian) for simulated clip start times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimDate {
    /// Year, e.g. 2020.
    pub year: i32,
    /// Month, 1–12.
    pub month: u32,
    /// Day of month, 1–31.
    pub day: u32,
}

impl SimDate {
    /// A date, or `None` if it does not exist.
    pub fn new(year: i32, month: u32, day: u32) -> Option<Self> {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        (1..=days)
            .contains(&day)
            .then_some(Self { year, month, day })
    }

    /// Days since 1970-01-01.
    pub fn days_since_epoch(&self) -> i64 {
        // Howard Hinnant's days_from_civil.
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// `YYYYMMDD`, as used for dataset folder names.
    pub fn compact(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

impl fmt::Display for SimDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl serde::Serialize for SimDate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What one simulated clip shows.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames in the clip (1 per second of scene time).
    pub frames: usize,
    /// Anomalies to stage, spread over the clip after the lead-in in this order; empty for a
    /// normal clip.
    pub anomalies: Vec<AnomalyKind>,
    /// Frames at the start where no anomaly is staged (a normal lead-in, e.g. for a demo).
    pub lead_in: usize,
    /// Date of the clip (used for Unix timestamps).
    pub date: SimDate,
    /// Local time at the first frame, hours since midnight (sets day/night levels and traffic).
    pub start_hour: f32,
    /// Clock of the frame timestamps: `Relative` (from 0) or `UnixEpoch` (from date and hour).
    pub clock: Clock,
    /// Seed of the camera's fixed-pattern noise: keep it the same for clips from one camera.
    pub camera_seed: u64,
    /// Seed of the harbor layout (skyline): keep it the same for clips of one site.
    pub site_seed: u64,
    /// Simulate FFC freezes/steps and AGC steps.
    pub sensor_artifacts: bool,
    /// Multiplier on the amount of normal activity (1.0 = typical).
    pub activity: f32,
    /// Source name reported in [`SourceInfo`] and frame metadata; a default is derived if `None`.
    pub name: Option<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            width: 384,
            height: 288,
            frames: 120,
            anomalies: Vec::new(),
            lead_in: 0,
            date: SimDate {
                year: 2020,
                month: 8,
                day: 17,
            },
            start_hour: 12.0,
            clock: Clock::Relative,
            camera_seed: 0x7E12_A1ED,
            site_seed: 0x4A12_B0B5,
            sensor_artifacts: true,
            activity: 1.0,
            name: None,
        }
    }
}

impl SimConfig {
    /// Start time as whole seconds since midnight.
    pub fn start_seconds(&self) -> u32 {
        ((self.start_hour * 3600.0).round() as u32).min(86_399)
    }

    fn validate(&self) -> Result<(), SourceError> {
        let bad = |d: String| Err(SourceError::invalid("simulator", d));
        if !(16..=4096).contains(&self.width) || !(12..=4096).contains(&self.height) {
            return bad(format!(
                "frame size {}×{} is out of range (16..4096 × 12..4096)",
                self.width, self.height
            ));
        }
        if self.frames == 0 {
            return bad("a clip needs at least one frame".into());
        }
        if !self.anomalies.is_empty() && self.lead_in > 0 && self.lead_in + 8 > self.frames {
            return bad(format!(
                "a lead-in of {} frames leaves too little of a {}-frame clip for the anomalies",
                self.lead_in, self.frames
            ));
        }
        if !(0.0..24.0).contains(&self.start_hour) {
            return bad(format!("start hour {} is not in 0..24", self.start_hour));
        }
        if !(0.0..=10.0).contains(&self.activity) {
            return bad(format!("activity {} is not in 0..10", self.activity));
        }
        if SimDate::new(self.date.year, self.date.month, self.date.day).is_none() {
            return bad(format!("date {} does not exist", self.date));
        }
        Ok(())
    }
}

/// One staged anomaly and the frames where it is visible.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AnomalyEvent {
    /// What happens.
    #[serde(rename = "type")]
    pub kind: AnomalyKind,
    /// How it happens (e.g. `sit`, `into-water`, `wrong-way`, `chase`).
    pub variant: &'static str,
    /// First frame (0-based) where it is visible.
    pub first_frame: usize,
    /// Last frame (0-based, inclusive) where it is visible.
    pub last_frame: usize,
    /// Number of frames where it is visible (it may leave view and come back).
    pub frames: usize,
    /// The named zone involved, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<&'static str>,
}

/// A simulated clip of the harbor camera, replayed as a [`FrameSource`] in centikelvin.
#[derive(Debug)]
pub struct HarborSimulator {
    config: SimConfig,
    seed: u64,
    info: SourceInfo,
    view: View,
    cond: SceneConditions,
    scene: StaticScene,
    fixed: Vec<f32>,
    timeline: Timeline,
    actors: Vec<Actor>,
    events: Vec<AnomalyEvent>,
    labels: Vec<i8>,
    sin: SinTable,
    noise_seed: u64,
    source: Arc<str>,
    next: usize,
    work: Vec<f32>,
}

impl HarborSimulator {
    /// Prepares clip `seed` of `config` (weather, activity, anomalies, camera events).
    pub fn new(config: SimConfig, seed: u64) -> Result<Self, SourceError> {
        config.validate()?;
        let (w, h) = (config.width as usize, config.height as usize);
        let view = View::new(config.width, config.height);
        let cond = SceneConditions::sample(config.start_hour, &mut Rng::new(derive(seed, 1)));
        let scene = StaticScene::build(
            &Site::new(config.site_seed),
            view,
            &cond,
            &mut Rng::new(derive(seed, 2)),
        );
        let fixed = sensor::fixed_pattern(w, h, config.camera_seed);
        let timeline = Timeline::new(
            config.frames,
            &mut Rng::new(derive(seed, 3)),
            config.sensor_artifacts,
        );
        let mut actors = actors::normal_activity(
            &view,
            &cond,
            &mut Rng::new(derive(seed, 4)),
            config.frames,
            config.activity,
        );
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| format!("simulator:{seed}"));
        let mut sim = Self {
            info: SourceInfo {
                name: name.clone(),
                kind: "simulator",
                width: config.width,
                height: config.height,
                units: Units::Centikelvin,
                frame_count: Some(config.frames),
                fps: Some(1.0),
            },
            seed,
            view,
            cond,
            scene,
            fixed,
            timeline,
            actors: Vec::new(),
            events: Vec::new(),
            labels: vec![label::NORMAL; config.frames],
            sin: SinTable::new(),
            noise_seed: derive(seed, 6),
            source: Arc::from(name),
            next: 0,
            work: vec![0.0; w * h],
            config,
        };
        let mut arng = Rng::new(derive(seed, 5));
        let kinds = sim.config.anomalies.clone();
        let (n, total) = (kinds.len().max(1) as f32, sim.config.frames as f32);
        let lead = sim.config.lead_in as f32;
        for (e, kind) in kinds.into_iter().enumerate() {
            let part = (total - lead) / n;
            let mut placed = None;
            for _ in 0..12 {
                let ts = (lead + e as f32 * part + part * arng.range(0.08, 0.6))
                    .min((total - 2.0).max(0.0));
                let (staged, variant) = actors::anomaly(kind, e, ts, &view, &cond, &mut arng);
                let visible = sim.visibility(&staged, e);
                if visible.iter().any(|&v| v) {
                    placed = Some((staged, variant, visible));
                    break;
                }
            }
            let Some((staged, variant, visible)) = placed else {
                return Err(SourceError::invalid(
                    "simulator",
                    format!(
                        "could not stage a visible '{kind}' in a {}-frame clip",
                        sim.config.frames
                    ),
                ));
            };
            let frames: Vec<usize> = (0..visible.len()).filter(|&i| visible[i]).collect();
            for &i in &frames {
                sim.labels[i] = label::EVENT;
            }
            sim.events.push(AnomalyEvent {
                kind,
                variant,
                first_frame: frames[0],
                last_frame: frames[frames.len() - 1],
                frames: frames.len(),
                zone: kind.zone(),
            });
            actors.extend(staged);
        }
        sim.actors = actors;
        log::debug!(
            "simulator clip {seed}: {} actors, {} events, {:.1} °C air at {:.2} h",
            sim.actors.len(),
            sim.events.len(),
            sim.cond.air_c,
            sim.config.start_hour
        );
        Ok(sim)
    }

    /// Frames (after frozen-frame copying) where event `e` of `staged` covers at least one pixel.
    fn visibility(&self, staged: &[Actor], e: usize) -> Vec<bool> {
        let (w, h) = (self.config.width as usize, self.config.height as usize);
        let mut raw = vec![false; self.config.frames];
        for (i, v) in raw.iter_mut().enumerate() {
            let t = i as f32;
            let mut c = Canvas::counter(w, h, &self.scene.occ);
            for a in staged {
                if let Some(p) = a.pose_at(t, &self.view).filter(|p| p.flag == Some(e)) {
                    actors::draw(&mut c, &self.view, &self.cond, &self.sin, a, &p);
                }
            }
            *v = c.painted > 0;
        }
        (0..raw.len())
            .map(|i| {
                if self.timeline.frozen(i) && i > 0 {
                    raw[i - 1]
                } else {
                    raw[i]
                }
            })
            .collect()
    }

    /// The configuration of this clip.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The clip seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Staged anomalies with their visible frames.
    pub fn events(&self) -> &[AnomalyEvent] {
        &self.events
    }

    /// Weather and time-of-day levels of the clip.
    pub fn conditions(&self) -> &SceneConditions {
        &self.cond
    }

    /// Camera events (FFC freezes, AGC steps) of the clip.
    pub fn sensor_events(&self) -> &[SensorEvent] {
        &self.timeline.events
    }

    /// Corners (pixels) of the restricted pier-end zone.
    pub fn zone_polygon(&self) -> Vec<(f32, f32)> {
        self.view.zone_polygon()
    }

    /// The camera's 8-bit window at frame `index` (it moves after an AGC step).
    pub fn gray_window(&self, index: usize) -> GrayWindow {
        let i = index.min(self.config.frames.saturating_sub(1));
        GrayWindow::HARBOR.shifted(self.timeline.agc(i))
    }

    /// The camera's 8-bit output for a frame of this clip (uses the frame's `seq`).
    pub fn to_gray8(&self, frame: &ThermalFrame) -> image::GrayImage {
        let win = self.gray_window(frame.meta.seq as usize);
        let data = frame.pixels().iter().map(|&p| win.level_ck(p)).collect();
        image::GrayImage::from_raw(frame.width(), frame.height(), data)
            .expect("buffer matches dimensions")
    }

    /// Frame `index` (random access), or `None` past the end.
    pub fn frame(&self, index: usize) -> Option<ThermalFrame> {
        let mut buf = vec![0.0; self.work.len()];
        self.frame_with(index, true, &mut buf)
    }

    /// Frame `index` as it would look without the staged anomalies (same noise and traffic).
    pub fn frame_without_anomalies(&self, index: usize) -> Option<ThermalFrame> {
        let mut buf = vec![0.0; self.work.len()];
        self.frame_with(index, false, &mut buf)
    }

    /// Starts the replay again from the first frame.
    pub fn rewind(&mut self) {
        self.next = 0;
    }

    fn frame_with(&self, index: usize, anomalies: bool, buf: &mut [f32]) -> Option<ThermalFrame> {
        if index >= self.config.frames {
            return None;
        }
        self.render_celsius(index, anomalies, buf);
        let mut f = ThermalFrame::zeroed(self.config.width, self.config.height, self.meta(index));
        f.pixels_mut()
            .iter_mut()
            .zip(buf.iter())
            .for_each(|(p, c)| *p = celsius_to_centikelvin(*c));
        Some(f)
    }

    fn meta(&self, i: usize) -> FrameMeta {
        let (ffc, ms) = self.timeline.ffc(i);
        let rel = i as i64 * 1_000_000;
        let timestamp_us = match self.config.clock {
            Clock::Relative => rel,
            Clock::UnixEpoch => {
                (self.config.date.days_since_epoch() * 86_400
                    + i64::from(self.config.start_seconds()))
                    * 1_000_000
                    + rel
            }
        };
        FrameMeta {
            seq: i as u64,
            timestamp_us,
            clock: self.config.clock,
            source: self.source.clone(),
            units: Units::Centikelvin,
            ffc: Some(ffc),
            ms_since_ffc: Some(ms),
        }
    }

    /// Renders frame `i` in °C; a frozen (FFC) frame repeats frame `i − 1` exactly.
    pub(crate) fn render_celsius(&self, i: usize, anomalies: bool, out: &mut [f32]) {
        let src = if i > 0 && self.timeline.frozen(i) {
            i - 1
        } else {
            i
        };
        let t = src as f32;
        self.scene
            .render_into(out, t, self.cond.drift_c_per_s() * t, &self.sin);
        let mut poses: Vec<(usize, actors::Pose)> = self
            .actors
            .iter()
            .enumerate()
            .filter_map(|(k, a)| a.pose_at(t, &self.view).map(|p| (k, p)))
            .filter(|(_, p)| anomalies || p.flag.is_none())
            .collect();
        // Far to near, so nearer things cover farther ones.
        poses.sort_by(|a, b| a.1.yn.total_cmp(&b.1.yn).then(a.0.cmp(&b.0)));
        let (w, h) = (self.config.width as usize, self.config.height as usize);
        let mut c = Canvas::actors(w, h, out, &self.scene.occ);
        for (k, p) in &poses {
            actors::draw(
                &mut c,
                &self.view,
                &self.cond,
                &self.sin,
                &self.actors[*k],
                p,
            );
        }
        self.timeline
            .apply(out, &self.fixed, w, src, self.noise_seed);
    }
}

impl FrameSource for HarborSimulator {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_into(&mut self, frame: &mut ThermalFrame) -> Result<bool, SourceError> {
        let i = self.next;
        if i >= self.config.frames {
            return Ok(false);
        }
        let mut work = std::mem::take(&mut self.work);
        self.render_celsius(i, true, &mut work);
        frame.reshape(self.config.width, self.config.height);
        frame
            .pixels_mut()
            .iter_mut()
            .zip(work.iter())
            .for_each(|(p, c)| *p = celsius_to_centikelvin(*c));
        frame.meta = self.meta(i);
        self.work = work;
        self.next += 1;
        Ok(true)
    }

    fn labels(&self) -> Option<&[i8]> {
        Some(&self.labels)
    }
}

#[cfg(test)]
mod tests;
