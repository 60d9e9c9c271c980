//! Training: losses, the epoch loop (Adam, cosine schedule, memory updates), held-out PSNR,
//! checkpoints every epoch and resuming from the last one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::config::ModelConfig;
use super::data::FrameSet;
use super::mnad::{Forward, Mnad};
use super::optim::{cosine_lr, Adam};
use super::params::{ParamError, ParamStore};
use crate::rng::Rng;

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Parameters could not be created or loaded.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// A checkpoint file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint file is malformed.
    #[error("{}: {detail}", path.display())]
    Checkpoint {
        /// File.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The options or data do not allow training.
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The loss terms of one step (means over the batch).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossTerms {
    /// Total loss optimised.
    pub total: f32,
    /// Pixel MSE between prediction and target.
    pub pixel: f32,
    /// Memory compactness.
    pub compact: f32,
    /// Memory separateness.
    pub separate: f32,
    /// SSMCTB block loss (0 for the plain-conv variant).
    pub block: f32,
}

impl LossTerms {
    pub(crate) fn add(&mut self, o: &LossTerms) {
        self.total += o.total;
        self.pixel += o.pixel;
        self.compact += o.compact;
        self.separate += o.separate;
        self.block += o.block;
    }

    pub(crate) fn scale(&mut self, k: f32) {
        self.total *= k;
        self.pixel *= k;
        self.compact *= k;
        self.separate *= k;
        self.block *= k;
    }
}

/// The total loss of a forward pass: pixel MSE + w_c·compactness + w_s·separateness + λ·block.
pub fn loss(
    net: &Mnad,
    fwd: &Forward,
    target: &Tensor,
) -> candle_core::Result<(Tensor, LossTerms)> {
    let cfg = net.config();
    let pixel = (&fwd.pred - target)?.sqr()?.mean_all()?;
    let (compact, separate) = net.memory.losses(&fwd.queries, &fwd.read)?;
    let mut total = ((&pixel + (&compact * f64::from(cfg.compactness_weight))?)?
        + (&separate * f64::from(cfg.separateness_weight))?)?;
    let mut block_v = 0.0;
    if let Some(b) = net.block().loss(&fwd.block)? {
        block_v = b.to_scalar::<f32>()?;
        total = (total + (b * f64::from(cfg.block.loss_weight))?)?;
    }
    let terms = LossTerms {
        total: total.to_scalar()?,
        pixel: pixel.to_scalar()?,
        compact: compact.to_scalar()?,
        separate: separate.to_scalar()?,
        block: block_v,
    };
    Ok((total, terms))
}

/// PSNR of a predicted frame against its target, both in [−1, 1]: 10·log10(1 / MSE in [0, 1]).
pub fn psnr(pred: &Tensor, target: &Tensor) -> candle_core::Result<Vec<f32>> {
    let b = pred.dim(0)?;
    let mse = ((pred - target)? / 2.0)?
        .sqr()?
        .reshape((b, ()))?
        .mean(1)?
        .to_vec1::<f32>()?;
    Ok(mse
        .into_iter()
        .map(|m| 10.0 * (1.0 / m.max(1e-10)).log10())
        .collect())
}

/// How to train.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainOptions {
    /// Epochs in total (the cosine schedule spans them).
    pub epochs: usize,
    /// Samples per step (MNAD: 4; the last incomplete batch is dropped).
    pub batch_size: usize,
    /// Initial learning rate (MNAD: 2e-4).
    pub lr: f64,
    /// Seed of initialisation and shuffling.
    pub seed: u64,
    /// Fraction of the footage held out for the per-epoch PSNR.
    pub val_fraction: f64,
    /// Stop an epoch after this many steps (for quick runs), if set.
    pub max_steps_per_epoch: Option<usize>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 60,
            batch_size: 4,
            lr: 2e-4,
            seed: 0,
            val_fraction: 0.1,
            max_steps_per_epoch: None,
        }
    }
}

/// Summary of one epoch, as logged to `train.jsonl`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EpochReport {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Optimizer steps in the epoch.
    pub steps: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean loss terms over the epoch.
    pub loss: LossTerms,
    /// Mean PSNR (dB) on the held-out normal footage, if any.
    pub val_psnr: Option<f32>,
    /// Wall time of the epoch in seconds.
    pub seconds: f64,
}

/// What a checkpoint's `state.json` holds besides the tensors.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainState {
    /// Last completed epoch.
    pub epoch: usize,
    /// Steps taken so far.
    pub global_step: u64,
    /// Shuffling RNG state after this epoch.
    pub rng: [u64; 4],
    /// Options the run was started with.
    pub options: TrainOptions,
    /// Reports of all epochs so far.
    pub history: Vec<EpochReport>,
}

/// File names inside a checkpoint folder.
pub mod files {
    /// Weights, batch-norm statistics and memory items.
    pub const MODEL: &str = "model.safetensors";
    /// The model configuration.
    pub const CONFIG: &str = "config.json";
    /// Adam moments.
    pub const OPTIMIZER: &str = "optimizer.safetensors";
    /// Epoch, RNG and history.
    pub const STATE: &str = "state.json";
    /// In a run folder: the name of the newest checkpoint folder.
    pub const LATEST: &str = "latest";
    /// In a run folder: one JSON line per step and per epoch.
    pub const LOG: &str = "train.jsonl";
}

/// Writes a checkpoint folder.
pub fn save_checkpoint(
    dir: &Path,
    store: &ParamStore,
    cfg: &ModelConfig,
    opt: Option<&Adam>,
    state: &TrainState,
) -> Result<(), TrainError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    store.save(&dir.join(files::MODEL))?;
    let cfg_path = dir.join(files::CONFIG);
    fs::write(
        &cfg_path,
        serde_json::to_vec_pretty(cfg).expect("config serialises"),
    )
    .map_err(io_err(&cfg_path))?;
    if let Some(o) = opt {
        o.save(&dir.join(files::OPTIMIZER))?;
    }
    let st = dir.join(files::STATE);
    fs::write(
        &st,
        serde_json::to_vec_pretty(state).expect("state serialises"),
    )
    .map_err(io_err(&st))?;
    Ok(())
}

/// Reads a checkpoint's configuration.
pub fn read_config(dir: &Path) -> Result<ModelConfig, TrainError> {
    let p = dir.join(files::CONFIG);
    let text = fs::read(&p).map_err(io_err(&p))?;
    let cfg: ModelConfig = serde_json::from_slice(&text).map_err(|e| TrainError::Checkpoint {
        path: p.clone(),
        detail: format!("not a model config: {e}"),
    })?;
    cfg.validate().map_err(|e| TrainError::Checkpoint {
        path: p,
        detail: e.to_string(),
    })?;
    Ok(cfg)
}

/// Loads a trained network from a checkpoint folder.
pub fn load_model(dir: &Path, device: &Device) -> Result<(ParamStore, Mnad), TrainError> {
    let cfg = read_config(dir)?;
    let store = ParamStore::from_safetensors(device.clone(), &dir.join(files::MODEL))?;
    let net = Mnad::new(&store, &cfg)?;
    store.check_all_used()?;
    Ok((store, net))
}

/// The newest checkpoint folder of a run folder (or the folder itself if it is a checkpoint).
pub fn latest_checkpoint(run: &Path) -> Result<PathBuf, TrainError> {
    if run.join(files::MODEL).is_file() {
        return Ok(run.to_path_buf());
    }
    let p = run.join(files::LATEST);
    let name = fs::read_to_string(&p).map_err(io_err(&p))?;
    Ok(run.join(name.trim()))
}

/// Progress notifications from the training loop.
pub trait Progress {
    /// An epoch starts with `steps` steps.
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// A step finished.
    fn step(&mut self, _terms: &LossTerms) {}
    /// An epoch finished.
    fn epoch_end(&mut self, _report: &EpochReport) {}
}

/// Progress that reports nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// Trains from scratch (or resumes when `run/latest` exists and `resume` is set), writing
/// `run/epoch-NNNN/` checkpoints and `run/train.jsonl`. Returns the epoch reports.
pub fn train(
    cfg: &ModelConfig,
    data: FrameSet,
    opts: &TrainOptions,
    run: &Path,
    resume: bool,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<Vec<EpochReport>, TrainError> {
    cfg.validate()
        .map_err(|e| TrainError::Invalid(e.to_string()))?;
    if opts.batch_size == 0 || opts.epochs == 0 {
        return Err(TrainError::Invalid(
            "batch size and epochs must be at least 1".into(),
        ));
    }
    if (data.height, data.width) != (cfg.height, cfg.width) {
        return Err(TrainError::Invalid(format!(
            "data is {}×{}, model needs {}×{}",
            data.height, data.width, cfg.height, cfg.width
        )));
    }
    fs::create_dir_all(run).map_err(io_err(run))?;
    let (train_set, val_set) = data.split_holdout(opts.val_fraction, cfg.t_length);
    let windows = train_set.windows(cfg.t_length);
    if windows.len() < opts.batch_size {
        return Err(TrainError::Invalid(format!(
            "only {} training windows of {} frames, fewer than one batch of {}",
            windows.len(),
            cfg.t_length,
            opts.batch_size
        )));
    }
    let val_windows = val_set.windows(cfg.t_length);

    let (store, net, mut state, opt_path) =
        if resume && run.join(files::LATEST).is_file() {
            let dir = latest_checkpoint(run)?;
            let (store, net) = load_model(&dir, device)?;
            if net.config() != cfg {
                return Err(TrainError::Invalid(format!(
                    "{}: checkpoint config differs from the requested model",
                    dir.display()
                )));
            }
            let sp = dir.join(files::STATE);
            let st: TrainState = serde_json::from_slice(&fs::read(&sp).map_err(io_err(&sp))?)
                .map_err(|e| TrainError::Checkpoint {
                    path: sp.clone(),
                    detail: e.to_string(),
                })?;
            log::info!("resuming from {} (epoch {})", dir.display(), st.epoch);
            (store, net, st, Some(dir.join(files::OPTIMIZER)))
        } else {
            let store = ParamStore::new(device.clone(), opts.seed);
            let net = Mnad::new(&store, cfg)?;
            let st = TrainState {
                epoch: 0,
                global_step: 0,
                rng: Rng::new(opts.seed ^ 0x5EED_DA7A).state(),
                options: opts.clone(),
                history: Vec::new(),
            };
            (store, net, st, None)
        };
    let mut adam = Adam::new(store.params(), opts.lr);
    if let Some(p) = opt_path {
        adam.load(&p)?;
    }
    let log_path = run.join(files::LOG);
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err(&log_path))?;
    let mut rng = Rng::from_state(state.rng);

    for epoch in state.epoch + 1..=opts.epochs {
        let started = Instant::now();
        adam.lr = cosine_lr(opts.lr, epoch - 1, opts.epochs);
        let mut order = windows.clone();
        rng.shuffle(&mut order);
        let mut steps = order.len() / opts.batch_size;
        if let Some(m) = opts.max_steps_per_epoch {
            steps = steps.min(m);
        }
        progress.epoch_start(epoch, opts.epochs, steps);
        let mut sum = LossTerms::default();
        for batch in order.chunks_exact(opts.batch_size).take(steps) {
            let (x, y) = train_set.batch(batch, cfg, device)?;
            let fwd = net.forward(&x, true)?;
            let (total, terms) = loss(&net, &fwd, &y)?;
            let grads = total.backward()?;
            adam.step(&grads)?;
            // Update after the losses, with the memory as it was during this step.
            net.memory.update(&fwd.queries, &fwd.read.scores)?;
            state.global_step += 1;
            sum.add(&terms);
            progress.step(&terms);
            let line = serde_json::json!({"kind": "step", "epoch": epoch, "step": state.global_step, "loss": terms});
            writeln!(log, "{line}").map_err(io_err(&log_path))?;
        }
        sum.scale(1.0 / steps.max(1) as f32);
        let val_psnr = validate(&net, &val_set, &val_windows, cfg, device)?;
        let report = EpochReport {
            epoch,
            steps,
            lr: adam.lr,
            loss: sum,
            val_psnr,
            seconds: started.elapsed().as_secs_f64(),
        };
        writeln!(
            log,
            "{}",
            serde_json::json!({"kind": "epoch", "report": report})
        )
        .map_err(io_err(&log_path))?;
        state.epoch = epoch;
        state.rng = rng.state();
        state.history.push(report.clone());
        let name = format!("epoch-{epoch:04}");
        save_checkpoint(&run.join(&name), &store, cfg, Some(&adam), &state)?;
        let latest = run.join(files::LATEST);
        fs::write(&latest, &name).map_err(io_err(&latest))?;
        progress.epoch_end(&report);
    }
    Ok(state.history)
}

/// Mean PSNR over held-out windows in eval mode (no memory updates).
pub fn validate(
    net: &Mnad,
    set: &FrameSet,
    windows: &[(usize, usize)],
    cfg: &ModelConfig,
    device: &Device,
) -> candle_core::Result<Option<f32>> {
    if windows.is_empty() {
        return Ok(None);
    }
    let mut all = Vec::with_capacity(windows.len());
    for chunk in windows.chunks(8) {
        let (x, y) = set.batch(chunk, cfg, device)?;
        let fwd = net.forward(&x, false)?;
        all.extend(psnr(&fwd.pred, &y)?);
    }
    Ok(Some(all.iter().sum::<f32>() / all.len() as f32))
}
