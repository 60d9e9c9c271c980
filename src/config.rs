//! Site configuration (`site.toml`): what a harbor site tells the detector about its view —
//! masked areas (water with waves, flags, ropes) and named zones with their own sensitivity.
//! Polygons are in normalised image coordinates (x right, y down, both in [0, 1]), so one file
//! serves any model input size.
//!
//! ```toml
//! [[mask]]
//! name = "water"
//! polygon = [[0.0, 0.72], [1.0, 0.72], [1.0, 1.0], [0.0, 1.0]]
//!
//! [[zone]]
//! name = "pier-end"
//! polygon = [[0.66, 0.70], [0.80, 0.70], [0.87, 0.86], [0.70, 0.86]]
//! sensitivity = 1.5
//! ```

use std::path::{Path, PathBuf};

use crate::score::zones::{Polygon, Zone, ZoneError, ZoneMap};

/// A masked area.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mask {
    /// What it covers, for people reading the file.
    #[serde(default)]
    pub name: Option<String>,
    /// Outline.
    pub polygon: Polygon,
}

/// A site's configuration.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Areas whose pixels never count.
    #[serde(default, rename = "mask")]
    pub masks: Vec<Mask>,
    /// Named zones, scored on their own.
    #[serde(default, rename = "zone")]
    pub zones: Vec<Zone>,
}

/// Why a site configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown fields.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (with line and column).
        message: String,
    },
    /// A mask or zone is unusable.
    #[error("{path}: {source}")]
    Zone {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: ZoneError,
    },
}

impl SiteConfig {
    /// Reads and checks a site file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks site TOML; `path` names it in errors. A full `edge-cli run`
    /// configuration is accepted too: its masks and zones are taken, the rest is checked.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let parse_err = |e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let c: SiteConfig = match toml::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                // Not a bare site file: a run configuration holds the same masks and zones.
                let run: RunConfigFile = toml::from_str(text).map_err(|_| parse_err(e))?;
                SiteConfig {
                    masks: run.mask,
                    zones: run.zone,
                }
            }
        };
        c.zone_map(4, 4).map_err(|source| ConfigError::Zone {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(c)
    }

    /// The mask polygons.
    pub fn mask_polygons(&self) -> Vec<Polygon> {
        self.masks.iter().map(|m| m.polygon.clone()).collect()
    }

    /// Masks and zones rasterised for a `width`×`height` error map.
    pub fn zone_map(&self, width: usize, height: usize) -> Result<ZoneMap, ZoneError> {
        ZoneMap::new(self.zones.clone(), &self.mask_polygons(), width, height)
    }
}

/// Where `edge-cli run` takes its frames from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum SourceConfig {
    /// A V4L2 camera (`/dev/videoN`; needs the `v4l` feature).
    Camera {
        /// Device path.
        device: PathBuf,
        /// Pixels are centikelvin (Lepton TLinear, Boson radiometric) rather than raw counts.
        #[serde(default)]
        radiometric: bool,
    },
    /// A recording: a `.cptv`, `.npy(.xz)`, raw `.y16` file or a folder of images.
    Replay {
        /// File or folder.
        path: PathBuf,
        /// Frames per second of image folders and raw files.
        #[serde(default)]
        fps: Option<f32>,
        /// Pixel units, overriding what the format implies (`gray8`, `counts`, `centikelvin`).
        #[serde(default)]
        units: Option<crate::frame::Units>,
    },
    /// The simulated harbor camera (the demo).
    Simulator(SimulatorSource),
}

/// The simulated harbor camera of the demo: one clip with a normal lead-in, then anomalies.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorSource {
    /// Clip seed.
    pub seed: u64,
    /// Seed of the simulated dataset whose camera to imitate (the shipped model's: 2024).
    pub dataset_seed: u64,
    /// Frames (seconds of scene time).
    pub frames: usize,
    /// Normal frames before any anomaly.
    pub lead_in: usize,
    /// Local hour at the first frame.
    pub start_hour: f32,
    /// Anomalies staged after the lead-in, by name (`truck-on-quay`, `car-reversing`, …).
    pub anomalies: Vec<String>,
    /// Camera artefacts (FFC freezes, AGC steps).
    pub sensor_artifacts: bool,
}

impl Default for SimulatorSource {
    fn default() -> Self {
        Self {
            seed: 3,
            dataset_seed: 2024,
            frames: 240,
            lead_in: 120,
            start_hour: 22.0,
            anomalies: vec!["truck-on-quay".into()],
            sensor_artifacts: true,
        }
    }
}

/// The model and how it runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Bundle directory.
    pub bundle: PathBuf,
    /// `tract-f32`, `tract-int8`, `candle-cpu`, `candle-cuda`.
    pub backend: String,
    /// Threads for tract's matrix products.
    pub threads: usize,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            bundle: PathBuf::from("models/harbor-edge-s"),
            backend: "tract-f32".into(),
            threads: 1,
        }
    }
}

/// Sampling and replay pacing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingSection {
    /// Seconds of capture time between scored frames (1: one frame per second).
    pub period_s: f64,
    /// Replay speed, × real time (0: as fast as possible); live cameras ignore it.
    pub speed: f64,
}

impl Default for SamplingSection {
    fn default() -> Self {
        Self {
            period_s: 1.0,
            speed: 1.0,
        }
    }
}

/// Health records.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// Seconds between health records.
    pub every_s: f64,
    /// Also send them to the alert sinks (they always go to the log).
    pub to_sinks: bool,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            every_s: 60.0,
            to_sinks: true,
        }
    }
}

/// The status screen.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DisplaySection {
    /// Write the status screen to this PNG (relative paths are under the data directory).
    pub png: Option<PathBuf>,
    /// Seconds between status screens (default 10).
    pub every_s: Option<f64>,
    /// Draw it on this Linux framebuffer (`/dev/fb0`; needs the `fbdev` feature).
    pub fbdev: Option<PathBuf>,
}

/// Where alerts go: stdout, an MQTT broker (`[alerts.mqtt]`), a serial line (`[alerts.serial]`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    /// Print alerts on stdout.
    pub stdout: bool,
    /// Print them as JSON lines instead of summaries.
    pub json: bool,
    /// Write snapshots (PNG + raw 16-bit crop) for each event start.
    pub snapshots: bool,
    /// Publish to an MQTT broker (present = on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<crate::alert::mqtt::MqttSection>,
    /// NMEA 0183 sentences on a serial port (present = on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<crate::alert::serial::SerialConfig>,
}

impl Default for AlertsSection {
    fn default() -> Self {
        Self {
            stdout: true,
            json: false,
            snapshots: true,
            mqtt: None,
            serial: None,
        }
    }
}

/// The durable outbox every alert passes through (`<data_dir>/outbox/outbox.sqlite`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSection {
    /// Store alerts before delivery (needs a data directory).
    pub enabled: bool,
    /// Most alerts kept; when full, undelivered updates and health records go first.
    pub max_alerts: usize,
    /// Longest wait between delivery retries to a failing sink, seconds.
    pub max_backoff_s: f64,
    /// Hours an alert every sink has taken is kept (for inspection).
    pub retention_h: f64,
}

impl Default for OutboxSection {
    fn default() -> Self {
        Self {
            enabled: true,
            max_alerts: 20_000,
            max_backoff_s: 300.0,
            retention_h: 168.0,
        }
    }
}

/// One configuration file of `edge-cli run` as written: every section optional, so that a
/// board profile and a site file can each hold a part (the site file wins where both do).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfigFile {
    /// Board name (board profiles).
    pub board: Option<String>,
    /// What the board profile says about the board, for people.
    pub description: Option<String>,
    /// Speed of this board relative to the x86-64 development machine (sizing).
    pub speed_factor: Option<f64>,
    /// Site name.
    pub site: Option<String>,
    /// Camera name.
    pub camera: Option<String>,
    /// Data directory (alert numbering, snapshots, status screen).
    pub data_dir: Option<PathBuf>,
    /// Frame source.
    pub source: Option<SourceConfig>,
    /// Model.
    pub model: Option<ModelSection>,
    /// Sampling.
    pub sampling: Option<SamplingSection>,
    /// Events.
    pub events: Option<crate::pipeline::LoopSettings>,
    /// Guards.
    pub guard: Option<crate::frame::guard::GuardConfig>,
    /// Drift monitor.
    pub drift: Option<crate::score::drift::DriftConfig>,
    /// Health records.
    pub health: Option<HealthSection>,
    /// Status screen.
    pub display: Option<DisplaySection>,
    /// Alert sinks.
    pub alerts: Option<AlertsSection>,
    /// The durable outbox.
    pub outbox: Option<OutboxSection>,
    /// Masked areas.
    #[serde(default)]
    pub mask: Vec<Mask>,
    /// Named zones.
    #[serde(default)]
    pub zone: Vec<Zone>,
}

/// The resolved configuration of `edge-cli run`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunConfig {
    /// Board name, when a profile was merged.
    pub board: Option<String>,
    /// Site name.
    pub site: String,
    /// Camera name.
    pub camera: String,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Frame source.
    pub source: SourceConfig,
    /// Model.
    pub model: ModelSection,
    /// Sampling.
    pub sampling: SamplingSection,
    /// Events.
    pub events: crate::pipeline::LoopSettings,
    /// Guards.
    pub guard: crate::frame::guard::GuardConfig,
    /// Drift monitor.
    pub drift: crate::score::drift::DriftConfig,
    /// Health records.
    pub health: HealthSection,
    /// Status screen.
    pub display: DisplaySection,
    /// Alert sinks.
    pub alerts: AlertsSection,
    /// The durable outbox.
    pub outbox: OutboxSection,
    /// Masks and zones.
    pub site_zones: SiteConfig,
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let parse = |message: String| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    };
    // Typed first: unknown keys and wrong types are reported with this file's line and column.
    toml::from_str::<RunConfigFile>(&text).map_err(|e| parse(e.to_string()))?;
    toml::from_str::<toml::Table>(&text).map_err(|e| parse(e.to_string()))
}

/// Merges `over` into `base`: tables merge key by key, anything else is replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl RunConfig {
    /// Loads a run configuration: the board profile (if any), then the site file over it
    /// (if any), then defaults for whatever neither says.
    pub fn load(board: Option<&Path>, site: Option<&Path>) -> Result<Self, ConfigError> {
        let mut table = toml::Table::new();
        let mut origin = PathBuf::from("(defaults)");
        for path in [board, site].into_iter().flatten() {
            merge(&mut table, read_table(path)?);
            origin = path.to_path_buf();
        }
        let file: RunConfigFile =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: origin.clone(),
                    message: format!("after merging the board profile: {e}"),
                })?;
        Self::resolve(file, &origin)
    }

    /// Fills defaults and checks what serde cannot.
    pub fn resolve(f: RunConfigFile, origin: &Path) -> Result<Self, ConfigError> {
        let site_zones = SiteConfig {
            masks: f.mask,
            zones: f.zone,
        };
        site_zones
            .zone_map(4, 4)
            .map_err(|source| ConfigError::Zone {
                path: origin.to_path_buf(),
                source,
            })?;
        let cfg = Self {
            board: f.board,
            site: f.site.unwrap_or_else(|| "harbor".into()),
            camera: f.camera.unwrap_or_else(|| "camera-1".into()),
            data_dir: f.data_dir,
            source: f
                .source
                .unwrap_or(SourceConfig::Simulator(SimulatorSource::default())),
            model: f.model.unwrap_or_default(),
            sampling: f.sampling.unwrap_or_default(),
            events: f.events.unwrap_or_default(),
            guard: f.guard.unwrap_or_default(),
            drift: f.drift.unwrap_or_default(),
            health: f.health.unwrap_or_default(),
            display: f.display.unwrap_or_default(),
            alerts: f.alerts.unwrap_or_default(),
            outbox: f.outbox.unwrap_or_default(),
            site_zones,
        };
        let bad = |message: String| {
            Err(ConfigError::Parse {
                path: origin.to_path_buf(),
                message,
            })
        };
        if !(cfg.sampling.period_s >= 0.0 && cfg.sampling.period_s.is_finite()) {
            return bad(format!(
                "sampling.period_s = {} must be a finite number ≥ 0",
                cfg.sampling.period_s
            ));
        }
        if cfg.sampling.speed.is_nan() || cfg.sampling.speed < 0.0 {
            return bad(format!(
                "sampling.speed = {} must be ≥ 0",
                cfg.sampling.speed
            ));
        }
        if !(cfg.health.every_s > 0.0 && cfg.health.every_s.is_finite()) {
            return bad(format!(
                "health.every_s = {} must be > 0",
                cfg.health.every_s
            ));
        }
        if let Err(e) = cfg.model.backend.parse::<crate::engine::Backend>() {
            return bad(format!("model.backend: {e}"));
        }
        if !(cfg.outbox.max_backoff_s > 0.0 && cfg.outbox.retention_h >= 0.0)
            || cfg.outbox.max_alerts < 16
        {
            return bad(format!(
                "outbox: max_backoff_s {} must be > 0, retention_h {} ≥ 0 and max_alerts {} ≥ 16",
                cfg.outbox.max_backoff_s, cfg.outbox.retention_h, cfg.outbox.max_alerts
            ));
        }
        if cfg.events.min_frames == 0 {
            return bad("events.min_frames must be at least 1".into());
        }
        for name in match &cfg.source {
            SourceConfig::Simulator(s) => s.anomalies.as_slice(),
            _ => &[],
        } {
            if let Err(e) = name.parse::<crate::source::simulator::AnomalyKind>() {
                return bad(format!("source.anomalies: {e}"));
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_masks_and_zones() {
        let c = SiteConfig::parse(
            r#"
[[mask]]
name = "water"
polygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]

[[zone]]
name = "pier-end"
polygon = [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]]
sensitivity = 2.0
"#,
            Path::new("site.toml"),
        )
        .unwrap();
        assert_eq!(c.masks.len(), 1);
        assert_eq!(c.zones[0].name, "pier-end");
        assert_eq!(c.zones[0].sensitivity, 2.0);
        // The lower half of a 4×4 grid is masked.
        let m = c.zone_map(4, 4).unwrap();
        assert_eq!((0..16).filter(|&i| m.is_masked(i)).count(), 8);
        assert!(m.is_masked(15) && !m.is_masked(0));
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let p = Path::new("harbor/site.toml");
        let e = SiteConfig::parse("[[mask]]\npolygon = [[0.0, 0.0], [1.0, 0.0]]\n", p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("harbor/site.toml") && e.contains("at least 3 points"),
            "{e}"
        );
        let e = SiteConfig::parse(
            "[[zone]]\nname = \"a\"\npolygon = [[0.0, 0.0], [1.5, 0.0], [1.0, 1.0]]\n",
            p,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("zone a") && e.contains("1.5"), "{e}");
        let e = SiteConfig::parse("[[masks]]\n", p).unwrap_err().to_string();
        assert!(e.contains("harbor/site.toml") && e.contains("masks"), "{e}");
        let e = SiteConfig::load(Path::new("/nonexistent/site.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/site.toml"), "{e}");
    }

    #[test]
    fn run_config_merges_the_site_file_over_the_board_profile() {
        let dir = tempfile::tempdir().unwrap();
        let board = dir.path().join("board.toml");
        let site = dir.path().join("site.toml");
        std::fs::write(
            &board,
            "board = \"pi\"\n[model]\nbackend = \"tract-int8\"\nthreads = 3\n[sampling]\nperiod_s = 2.0\n",
        )
        .unwrap();
        std::fs::write(
            &site,
            r#"
site = "north-quay"
camera = "pier"
[source]
kind = "replay"
path = "clip.cptv"
[model]
bundle = "models/x"
threads = 2
[[zone]]
name = "pier-end"
polygon = [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]]
"#,
        )
        .unwrap();
        let c = RunConfig::load(Some(&board), Some(&site)).unwrap();
        assert_eq!(c.board.as_deref(), Some("pi"));
        assert_eq!(c.site, "north-quay");
        // Tables merge key by key: the board's backend stays, the site's threads win.
        assert_eq!(c.model.backend, "tract-int8");
        assert_eq!(c.model.threads, 2);
        assert_eq!(c.model.bundle, PathBuf::from("models/x"));
        assert_eq!(c.sampling.period_s, 2.0);
        assert_eq!(c.sampling.speed, 1.0);
        assert_eq!(c.site_zones.zones[0].name, "pier-end");
        assert!(matches!(c.source, SourceConfig::Replay { .. }));
        // The same file serves as calibrate's --site file.
        let zones = SiteConfig::load(&site).unwrap();
        assert_eq!(zones.zones.len(), 1);
    }

    #[test]
    fn alert_sinks_are_configured_in_alerts_mqtt_and_alerts_serial() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site.toml");
        std::fs::write(
            &site,
            r#"
[alerts.mqtt]
host = "mqtt.harbor.lan"
username = "edge"
password_env = "MQTT_PASS"
[alerts.serial]
port = "/dev/ttyUSB0"
baud = 38400
parity = "even"
"#,
        )
        .unwrap();
        let c = RunConfig::load(None, Some(&site)).unwrap();
        let m = c.alerts.mqtt.as_ref().unwrap();
        assert_eq!(m.host, "mqtt.harbor.lan");
        assert_eq!(m.password_env.as_deref(), Some("MQTT_PASS"));
        assert_eq!(m.discovery_prefix, "homeassistant");
        let s = c.alerts.serial.as_ref().unwrap();
        assert_eq!((s.port.as_str(), s.baud), ("/dev/ttyUSB0", 38400));
        // A typo in a sink's section names the file and the key.
        std::fs::write(
            &site,
            "[alerts.mqtt]
hots = \"x\"\n",
        )
        .unwrap();
        let e = format!("{:#}", RunConfig::load(None, Some(&site)).unwrap_err());
        assert!(e.contains("site.toml") && e.contains("hots"), "{e}");
    }

    #[test]
    fn run_config_errors_name_the_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site.toml");
        std::fs::write(
            &site,
            "site = \"a\"\n[sampling]\nperiod_s = 1.0\nsped = 3\n",
        )
        .unwrap();
        let e = RunConfig::load(None, Some(&site)).unwrap_err().to_string();
        assert!(
            e.contains("site.toml") && e.contains("line 4") && e.contains("sped"),
            "{e}"
        );
        std::fs::write(&site, "[model]\nbackend = \"tract-f64\"\n").unwrap();
        let e = RunConfig::load(None, Some(&site)).unwrap_err().to_string();
        assert!(
            e.contains("model.backend") && e.contains("tract-f64"),
            "{e}"
        );
        std::fs::write(
            &site,
            "[source]\nkind = \"simulator\"\nanomalies = [\"ufo\"]\n",
        )
        .unwrap();
        let e = RunConfig::load(None, Some(&site)).unwrap_err().to_string();
        assert!(e.contains("ufo"), "{e}");
        let missing = dir.path().join("nope.toml");
        let e = RunConfig::load(Some(&missing), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.toml"), "{e}");
    }

    #[test]
    fn shipped_board_profiles_load() {
        let boards = Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
        let mut n = 0;
        for entry in std::fs::read_dir(&boards).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let c = RunConfig::load(Some(&path), None)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(c.board.is_some(), "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 5);
    }
}
