//! Writes simulated clips in the Thermal Rare Event layout:
//!
//! ```text
//! D/manifest.json
//! D/train/<YYYYMMDD>/<clip_N_HHMM>/image_0001.jpg ...     normal clips only
//! D/test/<YYYYMMDD>/<clip_N_HHMM>/image_0001.jpg ...      clips with anomalies (some normal)
//! D/test_annotations_anomalies/<YYYYMMDD>/<clip_N_HHMM>.npy   u8 label per frame, 1 = anomaly
//! ```
//!
//! Frames are 8-bit JPEGs through the camera's locked window, or 16-bit PNGs of centikelvin.
//! Clips are independent (each has its own seed), so they are written in parallel and the
//! output is still byte-for-byte the same for the same seed.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};

use super::rng::{derive, Rng};
use super::{
    AnomalyEvent, AnomalyKind, GrayWindow, HarborSimulator, SceneConditions, SensorEvent,
    SimConfig, SimDate,
};
use crate::frame::{Clock, ThermalFrame, Units};
use crate::source::{npy, FrameSource, SourceError};

/// Folder of the label arrays of test clips.
pub const ANNOTATIONS_DIR: &str = "test_annotations_anomalies";
/// File name of the dataset manifest.
pub const MANIFEST: &str = "manifest.json";

/// File name of the dataset's site file (masks and zones, as `edge-cli calibrate --site` reads).
pub const SITE: &str = "site.toml";

/// What [`write_dataset`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetConfig {
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// Number of normal training clips.
    pub train_clips: usize,
    /// Number of test clips (most with anomalies).
    pub test_clips: usize,
    /// Dataset seed: same seed, same bytes.
    pub seed: u64,
    /// Frames per clip (1 per second of scene time).
    pub frames: usize,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// `Gray8` (JPEG through the camera window) or `Centikelvin` (16-bit PNG).
    pub units: Units,
    /// JPEG quality (1–100) for gray8 output.
    pub jpeg_quality: u8,
    /// Replace the dataset in a non-empty output directory.
    pub overwrite: bool,
    /// Worker threads; 0 = one per CPU.
    pub threads: usize,
}

impl DatasetConfig {
    /// Defaults: 120-frame 384×288 gray8 clips, seed 0, no clips yet.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            train_clips: 0,
            test_clips: 0,
            seed: 0,
            frames: 120,
            width: 384,
            height: 288,
            units: Units::Gray8,
            jpeg_quality: 95,
            overwrite: false,
            threads: 0,
        }
    }

    /// Checks counts, sizes and units.
    pub fn validate(&self) -> Result<(), SourceError> {
        let bad = |d: String| Err(SourceError::invalid(&self.out, d));
        if self.train_clips + self.test_clips == 0 {
            return bad("nothing to write: both the train and the test clip counts are 0".into());
        }
        if self.train_clips + self.test_clips > 100_000 {
            return bad(format!(
                "{} clips is too many (at most 100000)",
                self.train_clips + self.test_clips
            ));
        }
        if !(5..=99_999).contains(&self.frames) {
            return bad(format!(
                "{} frames per clip is out of range (5..=99999)",
                self.frames
            ));
        }
        if !(32..=4096).contains(&self.width) || !(24..=4096).contains(&self.height) {
            return bad(format!(
                "frame size {}×{} is out of range (32..=4096 × 24..=4096)",
                self.width, self.height
            ));
        }
        if !matches!(self.units, Units::Gray8 | Units::Centikelvin) {
            return bad(format!(
                "units '{}' cannot be written (use gray8 or centikelvin)",
                self.units
            ));
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return bad(format!(
                "JPEG quality {} is not in 1..=100",
                self.jpeg_quality
            ));
        }
        Ok(())
    }
}

pub use crate::source::tre::Split;

/// One clip of a dataset before it is rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipPlan {
    /// Train or test.
    pub split: Split,
    /// Clip number, unique in the dataset, from 1.
    pub number: usize,
    /// Recording date.
    pub date: SimDate,
    /// Start time, seconds since midnight.
    pub start_seconds: u32,
    /// Anomalies to stage (empty for normal clips).
    pub anomalies: Vec<AnomalyKind>,
    /// Clip seed.
    pub seed: u64,
}

impl ClipPlan {
    /// `clip_<N>_<HHMM>`.
    pub fn name(&self) -> String {
        format!(
            "clip_{}_{:02}{:02}",
            self.number,
            self.start_seconds / 3600,
            self.start_seconds / 60 % 60
        )
    }

    /// `<split>/<YYYYMMDD>/<clip_N_HHMM>`.
    pub fn rel_dir(&self) -> PathBuf {
        Path::new(self.split.dir_name())
            .join(self.date.compact())
            .join(self.name())
    }

    /// `test_annotations_anomalies/<YYYYMMDD>/<clip_N_HHMM>.npy` for test clips.
    pub fn labels_path(&self) -> Option<PathBuf> {
        (self.split == Split::Test).then(|| {
            Path::new(ANNOTATIONS_DIR)
                .join(self.date.compact())
                .join(format!("{}.npy", self.name()))
        })
    }
}

/// Plans the clips of a dataset: dates cycling through 2020-08-17..23, start times spread over day and night,
/// anomaly kinds cycled over the test clips (every sixth test clip is normal, a quarter have a
/// second anomaly). Train clips do not depend on the number of test clips.
pub fn plan_clips(cfg: &DatasetConfig) -> Vec<ClipPlan> {
    let mut rng = Rng::new(derive(cfg.seed, 0xDA7A));
    let mut kinds = AnomalyKind::ALL;
    rng.shuffle(&mut kinds);
    let mut out = Vec::new();
    let mut number = 1;
    for (split, n) in [
        (Split::Train, cfg.train_clips),
        (Split::Test, cfg.test_clips),
    ] {
        let mut split_rng = Rng::new(derive(cfg.seed, 0x5EED + split as u64));
        let mut slots: Vec<usize> = (0..n).collect();
        split_rng.shuffle(&mut slots);
        let mut next_kind = 0;
        let first_day = split_rng.below(7);
        for (j, slot) in slots.into_iter().enumerate() {
            let secs =
                ((slot as f64 + f64::from(split_rng.unit())) / n as f64 * 86_400.0) as u32 % 86_400;
            let day = 17 + ((first_day + j) % 7) as u32;
            let mut anomalies = Vec::new();
            if split == Split::Test && j % 6 != 5 {
                let k = kinds[next_kind % kinds.len()];
                next_kind += 1;
                anomalies.push(k);
                if split_rng.chance(0.25) {
                    let other = kinds[(next_kind + split_rng.below(kinds.len() - 1)) % kinds.len()];
                    if other != k {
                        anomalies.push(other);
                    }
                }
            }
            out.push(ClipPlan {
                split,
                number,
                date: SimDate {
                    year: 2020,
                    month: 8,
                    day,
                },
                start_seconds: secs,
                anomalies,
                seed: derive(cfg.seed, number as u64),
            });
            number += 1;
        }
    }
    out
}

/// What the manifest records about one clip.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClipRecord {
    /// Train or test.
    pub split: Split,
    /// Folder name (`clip_N_HHMM`).
    pub name: String,
    /// Frame folder relative to the dataset root.
    pub path: String,
    /// Label file relative to the dataset root (test clips).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    /// Number of frames.
    pub frames: usize,
    /// Local start time, `YYYY-MM-DDTHH:MM:SS`.
    pub start: String,
    /// Start time as Unix seconds (local time taken as UTC).
    pub start_unix_s: i64,
    /// Clip seed.
    pub seed: u64,
    /// Frames labelled anomalous.
    pub anomalous_frames: usize,
    /// Staged anomalies with their visible frames (0-based indices into the sorted frames).
    pub events: Vec<AnomalyEvent>,
    /// Weather and time-of-day levels.
    pub conditions: SceneConditions,
    /// FFC freezes and AGC steps (labelled normal).
    pub sensor_events: Vec<SensorEvent>,
}

#[derive(serde::Serialize)]
struct Zone {
    name: &'static str,
    polygon_px: Vec<[f32; 2]>,
}

#[derive(serde::Serialize)]
struct TypeTotals {
    events: usize,
    frames: usize,
}

#[derive(serde::Serialize)]
struct Manifest<'a> {
    format: &'static str,
    generator: String,
    seed: u64,
    width: u32,
    height: u32,
    units: Units,
    fps: f32,
    frames_per_clip: usize,
    frame_files: String,
    frame_index_base: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    gray_window_c: Option<GrayWindow>,
    labels: &'static str,
    anomaly_types: Vec<&'static str>,
    zones: Vec<Zone>,
    train_clips: usize,
    test_clips: usize,
    anomalous_frames: usize,
    by_type: BTreeMap<&'static str, TypeTotals>,
    clips: &'a [ClipRecord],
}

/// What [`write_dataset`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSummary {
    /// Dataset root.
    pub out: PathBuf,
    /// Normal training clips written.
    pub train_clips: usize,
    /// Test clips written.
    pub test_clips: usize,
    /// Frames written in all clips.
    pub frames: usize,
    /// Frames labelled anomalous.
    pub anomalous_frames: usize,
    /// Per anomaly kind: (events, frames where it is visible).
    pub by_type: BTreeMap<AnomalyKind, (usize, usize)>,
}

fn frame_name(i: usize, frames: usize, units: Units) -> String {
    let digits = frames.to_string().len().max(4);
    let ext = if units == Units::Gray8 { "jpg" } else { "png" };
    format!("image_{:0digits$}.{ext}", i + 1)
}

/// Removes what an earlier run wrote (only the dataset's own entries) so no stale clips remain.
fn prepare_out(cfg: &DatasetConfig) -> Result<(), SourceError> {
    let out = &cfg.out;
    if out.exists() {
        if !out.is_dir() {
            return Err(SourceError::invalid(out, "exists and is not a directory"));
        }
        let mut entries = fs::read_dir(out).map_err(|e| SourceError::io(out, e))?;
        if entries.next().is_some() {
            if !cfg.overwrite {
                return Err(SourceError::invalid(
                    out,
                    "directory is not empty; refusing to write into it (use --force to replace the dataset there)",
                ));
            }
            for dir in [
                Split::Train.dir_name(),
                Split::Test.dir_name(),
                ANNOTATIONS_DIR,
            ] {
                let p = out.join(dir);
                if p.exists() {
                    fs::remove_dir_all(&p).map_err(|e| SourceError::io(&p, e))?;
                }
            }
            let m = out.join(MANIFEST);
            if m.exists() {
                fs::remove_file(&m).map_err(|e| SourceError::io(&m, e))?;
            }
        }
    }
    fs::create_dir_all(out).map_err(|e| SourceError::io(out, e))
}

fn write_frame(
    path: &Path,
    sim: &HarborSimulator,
    frame: &ThermalFrame,
    cfg: &DatasetConfig,
) -> Result<(), SourceError> {
    let file = fs::File::create(path).map_err(|e| SourceError::io(path, e))?;
    let mut w = BufWriter::new(file);
    let encoded = if cfg.units == Units::Gray8 {
        let grey = sim.to_gray8(frame);
        JpegEncoder::new_with_quality(&mut w, cfg.jpeg_quality).encode(
            grey.as_raw(),
            frame.width(),
            frame.height(),
            ExtendedColorType::L8,
        )
    } else {
        let bytes: Vec<u8> = frame
            .pixels()
            .iter()
            .flat_map(|p| p.to_ne_bytes())
            .collect();
        PngEncoder::new_with_quality(&mut w, CompressionType::Fast, FilterType::Adaptive)
            .write_image(
                &bytes,
                frame.width(),
                frame.height(),
                ExtendedColorType::L16,
            )
    };
    encoded.map_err(|e| SourceError::invalid(path, format!("encoding failed: {e}")))?;
    w.flush().map_err(|e| SourceError::io(path, e))
}

/// The camera (fixed-pattern noise) seed of every clip of dataset `seed`: a live simulated
/// camera with this seed looks like that dataset's camera.
pub fn camera_seed(dataset_seed: u64) -> u64 {
    derive(dataset_seed, 0xCA3E)
}

fn write_clip(cfg: &DatasetConfig, plan: &ClipPlan) -> Result<ClipRecord, SourceError> {
    let config = SimConfig {
        width: cfg.width,
        height: cfg.height,
        frames: cfg.frames,
        anomalies: plan.anomalies.clone(),
        date: plan.date,
        start_hour: plan.start_seconds as f32 / 3600.0,
        clock: Clock::UnixEpoch,
        camera_seed: camera_seed(cfg.seed),
        name: Some(plan.rel_dir().display().to_string()),
        ..SimConfig::default()
    };
    let mut sim = HarborSimulator::new(config, plan.seed)?;
    let dir = cfg.out.join(plan.rel_dir());
    fs::create_dir_all(&dir).map_err(|e| SourceError::io(&dir, e))?;
    let mut frame = ThermalFrame::zeroed(cfg.width, cfg.height, Default::default());
    let mut i = 0;
    while sim.next_into(&mut frame)? {
        write_frame(
            &dir.join(frame_name(i, cfg.frames, cfg.units)),
            &sim,
            &frame,
            cfg,
        )?;
        i += 1;
    }
    let labels = sim.labels().unwrap_or_default();
    if let Some(rel) = plan.labels_path() {
        let path = cfg.out.join(&rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| SourceError::io(parent, e))?;
        }
        let bytes: Vec<u8> = labels.iter().map(|&l| u8::from(l > 0)).collect();
        npy::write_npy(&path, &npy::encode_u8(&[bytes.len()], &bytes))?;
    }
    let s = plan.start_seconds;
    Ok(ClipRecord {
        split: plan.split,
        name: plan.name(),
        path: plan.rel_dir().to_string_lossy().replace('\\', "/"),
        labels: plan
            .labels_path()
            .map(|p| p.to_string_lossy().replace('\\', "/")),
        frames: cfg.frames,
        start: format!(
            "{}T{:02}:{:02}:{:02}",
            plan.date,
            s / 3600,
            s / 60 % 60,
            s % 60
        ),
        start_unix_s: plan.date.days_since_epoch() * 86_400 + i64::from(s),
        seed: plan.seed,
        anomalous_frames: labels.iter().filter(|&&l| l > 0).count(),
        events: sim.events().to_vec(),
        conditions: *sim.conditions(),
        sensor_events: sim.sensor_events().to_vec(),
    })
}

/// Renders and writes every planned clip, then the manifest; `progress(done, total)` is called
/// after each clip (from worker threads).
pub fn write_dataset(
    cfg: &DatasetConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<DatasetSummary, SourceError> {
    cfg.validate()?;
    prepare_out(cfg)?;
    let plans = plan_clips(cfg);
    let total = plans.len();
    let threads = if cfg.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.threads
    }
    .clamp(1, total);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<ClipRecord, SourceError>>>> =
        plans.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= total {
                    break;
                }
                let r = write_clip(cfg, &plans[k]);
                let failed = r.is_err();
                *results[k].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                if failed {
                    // Stop handing out work; clips already running finish.
                    next.store(total, Ordering::SeqCst);
                    break;
                }
                progress(done.fetch_add(1, Ordering::SeqCst) + 1, total);
            });
        }
    });
    let mut records = Vec::with_capacity(total);
    for r in results {
        match r.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(Ok(rec)) => records.push(rec),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }

    let mut by_type: BTreeMap<AnomalyKind, (usize, usize)> = BTreeMap::new();
    for e in records.iter().flat_map(|r| &r.events) {
        let entry = by_type.entry(e.kind).or_default();
        entry.0 += 1;
        entry.1 += e.frames;
    }
    let summary = DatasetSummary {
        out: cfg.out.clone(),
        train_clips: records.iter().filter(|r| r.split == Split::Train).count(),
        test_clips: records.iter().filter(|r| r.split == Split::Test).count(),
        frames: records.iter().map(|r| r.frames).sum(),
        anomalous_frames: records.iter().map(|r| r.anomalous_frames).sum(),
        by_type,
    };
    let view = super::scene::View::new(cfg.width, cfg.height);
    let manifest = Manifest {
        format: "thermal-rare-event",
        generator: format!("thermal-edge {} simulate", env!("CARGO_PKG_VERSION")),
        seed: cfg.seed,
        width: cfg.width,
        height: cfg.height,
        units: cfg.units,
        fps: 1.0,
        frames_per_clip: cfg.frames,
        frame_files: frame_name(0, cfg.frames, cfg.units).replace("0001", "NNNN"),
        frame_index_base: 0,
        gray_window_c: (cfg.units == Units::Gray8).then_some(GrayWindow::HARBOR),
        labels: "u8 per frame in sorted frame order: 1 = anomaly visible, 0 = normal",
        anomaly_types: AnomalyKind::ALL.iter().map(|k| k.name()).collect(),
        zones: vec![Zone {
            name: super::PIER_END_ZONE,
            polygon_px: view
                .zone_polygon()
                .into_iter()
                .map(|(x, y)| [x, y])
                .collect(),
        }],
        train_clips: summary.train_clips,
        test_clips: summary.test_clips,
        anomalous_frames: summary.anomalous_frames,
        by_type: summary
            .by_type
            .iter()
            .map(|(k, (events, frames))| {
                (
                    k.name(),
                    TypeTotals {
                        events: *events,
                        frames: *frames,
                    },
                )
            })
            .collect(),
        clips: &records,
    };
    // A site file for `calibrate --site`/`run`: the water masked, the pier end as a zone.
    let norm = |pts: Vec<(f32, f32)>| {
        pts.iter()
            .map(|(x, y)| {
                format!(
                    "[{:.4}, {:.4}]",
                    (x / cfg.width as f32).clamp(0.0, 1.0),
                    (y / cfg.height as f32).clamp(0.0, 1.0)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let site = format!(
        "# Site file of the simulated harbor (edge-cli calibrate --site, edge-cli run).\n\
         # Polygons in normalised image coordinates (x right, y down).\n\n\
         [[mask]]\nname = \"water\"\npolygon = [{}]\n\n\
         [[zone]]\nname = \"{}\"\npolygon = [{}]\nsensitivity = 1.0\n",
        norm(view.water_polygon()),
        super::PIER_END_ZONE,
        norm(view.zone_polygon())
    );
    let site_path = cfg.out.join(SITE);
    fs::write(&site_path, site).map_err(|e| SourceError::io(&site_path, e))?;
    let path = cfg.out.join(MANIFEST);
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| SourceError::invalid(&path, format!("manifest serialization failed: {e}")))?;
    fs::write(&path, text + "\n").map_err(|e| SourceError::io(&path, e))?;
    log::debug!("simulated dataset written to {}", cfg.out.display());
    Ok(summary)
}
