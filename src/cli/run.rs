//! `edge-cli run`: the on-device loop. With no arguments it runs the demo: a simulated harbor
//! camera replayed through the shipped model at 20× speed for four minutes of scene time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::alert::mqtt::{DeviceInfo, MqttSink};
use crate::alert::outbox::{Outbox, OutboxConfig};
use crate::alert::serial::SerialSink;
use crate::alert::stdout::StdoutSink;
use crate::alert::Sink;
use crate::config::{RunConfig, SimulatorSource, SourceConfig};
use crate::engine::{open_scorer, Backend};
use crate::export::bundle::Bundle;
use crate::pipeline::runner::{self, Numbering, RunOptions, SourceFactory};
use crate::pipeline::{Identity, Pipeline};
use crate::score::calibration::Calibration;
use crate::source::open::{open_source, source_kind, OpenOptions, SourceKind};
use crate::source::simulator::{dataset::camera_seed, AnomalyKind, Gray8Camera, SimConfig};
use crate::source::{FrameSource, SourceError};

/// Arguments of `edge-cli run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Site configuration (TOML: site, camera, source, model, events, masks, zones, …).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Board profile merged under the site configuration (e.g. boards/raspberry-pi-4.toml).
    #[arg(long)]
    pub board: Option<PathBuf>,
    /// Replay this recording (or read this /dev/videoN camera) instead of the configured source.
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// Model bundle, overriding the configuration.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Backend, overriding the configuration.
    #[arg(long)]
    pub backend: Option<Backend>,
    /// Threads for tract, overriding the configuration.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Replay speed (× real time; 0 = as fast as possible), overriding the configuration.
    #[arg(long)]
    pub speed: Option<f64>,
    /// Stop after reading this many frames.
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// Stop after this many seconds of wall time.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Data directory (alert numbering, snapshots, status screen), overriding the configuration.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print alerts as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Seconds between health records, overriding the configuration.
    #[arg(long)]
    pub health_every: Option<f64>,
    /// Print the resolved configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Data directory of the demo (relative to the working directory).
const DEMO_DATA_DIR: &str = "edge-demo";
/// Replay speed of the demo.
const DEMO_SPEED: f64 = 20.0;

/// Opens the simulated camera of the demo.
struct SimulatorFactory(SimulatorSource);

impl SourceFactory for SimulatorFactory {
    fn open(&mut self) -> Result<Box<dyn FrameSource>, SourceError> {
        let s = &self.0;
        let anomalies = s
            .anomalies
            .iter()
            .map(|a| a.parse::<AnomalyKind>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SourceError::invalid("simulator", e))?;
        let cfg = SimConfig {
            frames: s.frames,
            anomalies,
            lead_in: s.lead_in,
            start_hour: s.start_hour,
            clock: crate::frame::Clock::UnixEpoch,
            camera_seed: camera_seed(s.dataset_seed),
            sensor_artifacts: s.sensor_artifacts,
            name: Some(format!("simulated harbor camera (clip seed {})", s.seed)),
            ..SimConfig::default()
        };
        Ok(Box::new(Gray8Camera::new(cfg, s.seed)?))
    }

    fn live(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!(
            "simulated harbor camera: {} frames, {} normal, then {}",
            self.0.frames,
            self.0.lead_in,
            self.0.anomalies.join(", ")
        )
    }
}

/// Opens a recording or a camera by path.
struct PathFactory {
    path: PathBuf,
    opts: OpenOptions,
    live: bool,
}

impl SourceFactory for PathFactory {
    fn open(&mut self) -> Result<Box<dyn FrameSource>, SourceError> {
        open_source(&self.path, &self.opts)
    }

    fn live(&self) -> bool {
        self.live
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

fn factory(source: &SourceConfig) -> Result<Box<dyn SourceFactory>> {
    Ok(match source {
        SourceConfig::Simulator(s) => Box::new(SimulatorFactory(s.clone())),
        SourceConfig::Replay { path, fps, units } => Box::new(PathFactory {
            live: source_kind(path).is_ok_and(|k| k == SourceKind::V4l2),
            path: path.clone(),
            opts: OpenOptions {
                units: *units,
                fps: *fps,
                ..OpenOptions::default()
            },
        }),
        SourceConfig::Camera {
            device,
            radiometric,
        } => Box::new(PathFactory {
            path: device.clone(),
            opts: OpenOptions {
                units: radiometric.then_some(crate::frame::Units::Centikelvin),
                ..OpenOptions::default()
            },
            live: true,
        }),
    })
}

/// The resolved configuration with the command line's overrides applied.
fn configure(a: &RunArgs) -> Result<(RunConfig, bool)> {
    let mut cfg = RunConfig::load(a.board.as_deref(), a.config.as_deref())?;
    let demo = a.config.is_none() && a.replay.is_none();
    if demo {
        cfg.sampling.speed = DEMO_SPEED;
        cfg.health.every_s = 5.0;
        if cfg.data_dir.is_none() {
            cfg.data_dir = Some(PathBuf::from(DEMO_DATA_DIR));
        }
    }
    if let Some(p) = &a.replay {
        cfg.source = SourceConfig::Replay {
            path: p.clone(),
            fps: None,
            units: None,
        };
    }
    if let Some(b) = &a.bundle {
        cfg.model.bundle = b.clone();
    }
    if let Some(b) = a.backend {
        cfg.model.backend = b.to_string();
    }
    if let Some(t) = a.threads {
        cfg.model.threads = t;
    }
    if let Some(s) = a.speed {
        if !(s >= 0.0 && s.is_finite()) {
            bail!("--speed {s} must be a finite number ≥ 0");
        }
        cfg.sampling.speed = s;
    }
    if let Some(d) = &a.data_dir {
        cfg.data_dir = Some(d.clone());
    }
    if let Some(h) = a.health_every {
        if !(h > 0.0 && h.is_finite()) {
            bail!("--health-every {h} must be > 0");
        }
        cfg.health.every_s = h;
    }
    if a.json {
        cfg.alerts.json = true;
    }
    Ok((cfg, demo))
}

/// Short hash of the model file the backend runs.
fn model_hash(bundle: &Bundle, backend: Backend) -> String {
    let file = match backend {
        Backend::TractF32 => "model.onnx",
        Backend::TractInt8 => "model.int8.onnx",
        Backend::CandleCpu | Backend::CandleCuda => "model.f16.safetensors",
    };
    bundle
        .manifest()
        .files
        .get(file)
        .map_or_else(|| "unknown".into(), |f| f.sha256.chars().take(12).collect())
}

fn relative_to(dir: &Option<PathBuf>, p: &Path) -> PathBuf {
    match dir {
        Some(d) if p.is_relative() => d.join(p),
        _ => p.to_path_buf(),
    }
}

/// Runs `edge-cli run`.
pub fn run(a: &RunArgs) -> Result<()> {
    let (cfg, demo) = configure(a)?;
    if a.print_config {
        print!(
            "{}",
            toml::to_string_pretty(&cfg).context("printing the configuration")?
        );
        return Ok(());
    }
    let backend: Backend = cfg
        .model
        .backend
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let bundle = Bundle::open(&cfg.model.bundle)
        .with_context(|| format!("opening the bundle {}", cfg.model.bundle.display()))?;
    let cal_table = bundle.manifest().calibration.clone().with_context(|| {
        format!(
            "{} has no calibration: run `edge-cli calibrate --bundle {} --source <normal footage>` first",
            cfg.model.bundle.display(),
            cfg.model.bundle.display()
        )
    })?;
    let cal = Calibration::from_table(&cal_table)
        .with_context(|| format!("reading the calibration of {}", cfg.model.bundle.display()))?;
    let model_cfg = bundle.config().clone();
    let zones = cfg
        .site_zones
        .zone_map(model_cfg.width, model_cfg.height)
        .context("masks and zones")?;
    let site_masks = cfg.site_zones.mask_polygons();
    if site_masks != cal.masks {
        log::warn!(
            "the site's masks differ from the calibration's ({} vs {} polygons): scores use the calibration's; recalibrate with --site to apply the site's",
            site_masks.len(),
            cal.masks.len()
        );
    }
    if cfg.site_zones.zones != cal.zones {
        let names = |z: &[crate::score::zones::Zone]| {
            z.iter()
                .map(|z| z.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        log::warn!(
            "the site's zones [{}] differ from the calibration's [{}]: only the calibration's have their own term (the site's name regions); recalibrate with --site to score the site's",
            names(&cfg.site_zones.zones),
            names(&cal.zones)
        );
    }
    let scorer = open_scorer(&bundle, backend, cfg.model.threads.max(1))
        .with_context(|| format!("opening the {backend} scorer"))?;
    if let Some(d) = &cfg.data_dir {
        std::fs::create_dir_all(d)
            .with_context(|| format!("creating the data directory {}", d.display()))?;
    }
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if cfg.alerts.stdout {
        sinks.push(Box::new(StdoutSink::new(cfg.alerts.json)));
    }
    if let Some(m) = &cfg.alerts.mqtt {
        let dev = DeviceInfo {
            site: cfg.site.clone(),
            camera: cfg.camera.clone(),
            model: model_hash(&bundle, backend),
        };
        let sink = MqttSink::start(m, dev, cfg.data_dir.clone()).context("[alerts.mqtt]")?;
        log::info!("MQTT: publishing under {}/", sink.topics().prefix);
        sinks.push(Box::new(sink));
    }
    if let Some(s) = &cfg.alerts.serial {
        let sink = SerialSink::start(s.clone())
            .with_context(|| format!("[alerts.serial] on {}", s.port))?;
        sinks.push(Box::new(sink));
    }
    let mut outbox = match (&cfg.data_dir, cfg.outbox.enabled) {
        (Some(d), true) => {
            let dir = d.join("outbox");
            let ob = Outbox::open(
                &dir,
                OutboxConfig {
                    sinks: sinks.iter().map(|s| s.name().to_string()).collect(),
                    max_alerts: cfg.outbox.max_alerts,
                    max_backoff: Duration::from_secs_f64(cfg.outbox.max_backoff_s),
                    ..OutboxConfig::default()
                },
            )
            .with_context(|| format!("opening the alert outbox in {}", dir.display()))?;
            Some(ob)
        }
        (None, true) => {
            log::warn!("no data directory: alerts are not stored before delivery (set data_dir)");
            None
        }
        _ => None,
    };
    let mut numbering = match &cfg.data_dir {
        Some(d) => Numbering::load(d).map_err(anyhow::Error::msg)?,
        None => Numbering {
            next_seq: 1,
            next_event: 1,
        },
    };
    if let Some(ob) = &outbox {
        // The outbox is written before state.json: after a crash it may know a later number.
        let stored = ob.next_seq(&cfg.camera).context("reading the outbox")?;
        numbering.next_seq = numbering.next_seq.max(stored);
    }
    let mut pipeline = Pipeline::new(
        Identity {
            site: cfg.site.clone(),
            camera: cfg.camera.clone(),
            model: model_hash(&bundle, backend),
        },
        scorer,
        &cal,
        zones,
        cfg.events.clone(),
        cfg.guard.clone(),
        &cfg.drift,
        numbering.next_seq,
        numbering.next_event,
    )?;
    if cfg.alerts.snapshots {
        pipeline.set_data_dir(cfg.data_dir.clone());
    }
    let mut source = factory(&cfg.source)?;
    if source.live() && !cfg!(feature = "v4l") {
        // Not a transient fault to retry: this binary can never open the camera.
        bail!(
            "{} is a camera, but this edge-cli was built without V4L2 support: rebuild with `cargo build --release --features v4l`",
            source.describe()
        );
    }
    let status_png = cfg
        .display
        .png
        .as_ref()
        .map(|p| relative_to(&cfg.data_dir, p))
        .or_else(|| {
            // The demo shows its status screen too.
            demo.then(|| cfg.data_dir.as_ref().map(|d| d.join("status.png")))
                .flatten()
        });
    if cfg.display.fbdev.is_some() {
        log::warn!(
            "display.fbdev: the framebuffer screen is not wired into the loop yet; use display.png"
        );
    }
    let opts = RunOptions {
        period_us: (cfg.sampling.period_s * 1e6) as i64,
        speed: cfg.sampling.speed,
        max_frames: a.max_frames,
        max_duration: a.duration.map(Duration::from_secs_f64),
        health_every: Duration::from_secs_f64(cfg.health.every_s),
        health_to_sinks: cfg.health.to_sinks,
        status_png: status_png.clone(),
        status_fbdev: cfg.display.fbdev.clone(),
        status_every: Duration::from_secs_f64(cfg.display.every_s.unwrap_or(10.0).max(0.1)),
        data_dir: cfg.data_dir.clone(),
        max_backoff: Duration::from_secs(30),
        log_alerts: !cfg.alerts.stdout,
        outbox_retention: Duration::from_secs_f64(cfg.outbox.retention_h * 3600.0),
    };
    let stop = runner::stop_flag().context("installing the SIGINT/SIGTERM handlers")?;
    eprintln!(
        "edge-cli run: {} / {} — {} with {} ({}), threshold {:.2}, {}",
        cfg.site,
        cfg.camera,
        source.describe(),
        cfg.model.bundle.display(),
        backend,
        pipeline.threshold(),
        if source.live() {
            format!("live, one frame every {} s", cfg.sampling.period_s)
        } else if cfg.sampling.speed > 0.0 {
            format!("replay at {}× real time", cfg.sampling.speed)
        } else {
            "replay as fast as possible".into()
        }
    );
    let report = runner::run(
        &mut pipeline,
        source.as_mut(),
        &mut sinks,
        outbox.as_mut(),
        &opts,
        &stop,
    );
    let h = &report.health;
    let anomalies = report
        .alerts
        .iter()
        .find(|(k, _)| k == "anomaly-start")
        .map_or(0, |(_, n)| *n);
    eprintln!(
        "edge-cli run: {} frames in, {} scored, {} paused by guards, {} anomaly events; latency p50 {} ms, p99 {} ms{}",
        h.counters.frames_in,
        h.counters.scored,
        h.counters.paused,
        anomalies,
        h.latency_p50_ms.map_or("-".into(), |v| format!("{v:.1}")),
        h.latency_p99_ms.map_or("-".into(), |v| format!("{v:.1}")),
        if report.interrupted { " (stopped by signal)" } else { "" }
    );
    if let Some(d) = &cfg.data_dir {
        eprintln!(
            "edge-cli run: snapshots, status screen and alert numbering in {}",
            d.display()
        );
    }
    if demo {
        eprintln!(
            "\nThis was the demo: a simulated harbor camera at {DEMO_SPEED}× speed. To watch a real camera:\n  \
             edge-cli run --config site.toml --board boards/raspberry-pi-4.toml\n\
             with `[source] kind = \"camera\"` and `device = \"/dev/video0\"` in site.toml (build with --features v4l),\n\
             or replay a recording with `edge-cli run --replay clip.cptv --speed 0`. See README.md, \"Running on a board\"."
        );
    }
    Ok(())
}
