//! `edge-cli train`: train the model on normal footage.

use std::path::PathBuf;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::frame::{Normalizer, Units};
use crate::model::config::Upsample;
use crate::model::data::FrameSet;
use crate::model::qat;
use crate::model::train::{self, EpochReport, LossTerms, Progress, TrainOptions};
use crate::model::{BlockVariant, ModelConfig};
use crate::source::OpenOptions;

/// Arguments of `edge-cli train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Normal footage: a Thermal Rare Event dataset (its train/ split), a folder of .cptv/.npy
    /// clips, or one source. Labelled clips contribute only their normal frames.
    #[arg(long)]
    pub data: PathBuf,
    /// Model preset: paper (256×256, width 1), edge-m (192×256, 0.5) or edge-s (128×160, 0.25).
    #[arg(long, default_value = "edge-s")]
    pub preset: String,
    /// Self-supervised block: paper, reference-code, sspcab or none.
    #[arg(long, default_value = "paper")]
    pub block: BlockVariant,
    /// Train the reconstruction variant instead of next-frame prediction.
    #[arg(long)]
    pub reconstruction: bool,
    /// Decoder upsampling: transpose (MNAD) or nearest-conv.
    #[arg(long, value_parser = ["transpose", "nearest-conv"], default_value = "transpose")]
    pub upsample: String,
    /// Input normalisation: gray8 (x/127.5 − 1), percentile (1–99 % per frame), or
    /// kelvin:MIN:MAX (°C window, radiometric cameras).
    #[arg(long)]
    pub normalizer: Option<String>,
    /// Units of 16-bit PNG frames: centikelvin, counts or gray8.
    #[arg(long)]
    pub units: Option<Units>,
    /// Epochs (the cosine learning-rate schedule spans them) [default: 60; with --qat: 6].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Samples per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Initial learning rate [default: 2e-4; with --qat: 2e-5].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of the footage held out to report PSNR each epoch.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Cap on steps per epoch (quick runs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Run folder for checkpoints and the log.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the run folder's latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Quantization-aware training: fine-tune the checkpoint given by --from with fake int8
    /// quantization (the int8 exporter's scheme) and write one checkpoint with quant.json into
    /// --out. The model options (--preset, --block, ...) come from the checkpoint.
    #[arg(long)]
    pub qat: bool,
    /// The trained checkpoint (or run folder) that --qat starts from.
    #[arg(long, requires = "qat")]
    pub from: Option<PathBuf>,
    /// cpu, or cuda (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Parses a `--normalizer` value.
pub fn parse_normalizer(s: &str) -> anyhow::Result<Normalizer> {
    Ok(match s {
        "gray8" => Normalizer::gray8(),
        "percentile" => Normalizer::Percentile {
            low: 1.0,
            high: 99.0,
        },
        _ => match s
            .strip_prefix("kelvin:")
            .map(|r| r.split(':').collect::<Vec<_>>())
        {
            Some(p) if p.len() == 2 => Normalizer::KelvinWindow {
                min_c: p[0].parse().context("kelvin window minimum")?,
                max_c: p[1].parse().context("kelvin window maximum")?,
            },
            _ => bail!("unknown normalizer '{s}' (expected gray8, percentile or kelvin:MIN:MAX)"),
        },
    })
}

/// The compute device named on the command line.
pub fn device(name: &str) -> anyhow::Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => {
            #[cfg(feature = "cuda")]
            {
                Ok(candle_core::Device::new_cuda(0)?)
            }
            #[cfg(not(feature = "cuda"))]
            bail!("this edge-cli was built without CUDA; rebuild with `--features cuda`")
        }
        _ => bail!("unknown device '{name}' (expected cpu or cuda)"),
    }
}

struct Bar {
    bar: Option<ProgressBar>,
    acc: LossTerms,
    n: usize,
}

impl Progress for Bar {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        let b = ProgressBar::new(steps as u64);
        b.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_prefix(format!("{epoch}/{epochs}"));
        self.bar = Some(b);
        self.acc = LossTerms::default();
        self.n = 0;
    }

    fn step(&mut self, t: &LossTerms) {
        self.n += 1;
        let k = 1.0 / self.n as f32;
        self.acc.total += (t.total - self.acc.total) * k;
        self.acc.pixel += (t.pixel - self.acc.pixel) * k;
        self.acc.compact += (t.compact - self.acc.compact) * k;
        self.acc.separate += (t.separate - self.acc.separate) * k;
        self.acc.block += (t.block - self.acc.block) * k;
        if let Some(b) = &self.bar {
            let a = &self.acc;
            let msg = format!(
                "loss {:.4} pix {:.4} cmp {:.4} sep {:.4} blk {:.4}",
                a.total, a.pixel, a.compact, a.separate, a.block
            );
            b.inc(1);
            // Without a terminal (a log file, systemd) the bar is hidden: log progress instead.
            if b.is_hidden() && (self.n.is_multiple_of(25) || Some(self.n as u64) == b.length()) {
                log::info!("{}/{} steps: {msg}", self.n, b.length().unwrap_or(0));
            }
            b.set_message(msg);
        }
    }

    fn epoch_end(&mut self, r: &EpochReport) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let psnr = r
            .val_psnr
            .map(|p| format!("{p:.2} dB"))
            .unwrap_or_else(|| "n/a".into());
        println!(
            "epoch {:>3}: loss {:.4} (pixel {:.4}, compact {:.4}, separate {:.4}, block {:.4}) lr {:.2e} held-out PSNR {psnr} [{:.0} s]",
            r.epoch, r.loss.total, r.loss.pixel, r.loss.compact, r.loss.separate, r.loss.block, r.lr, r.seconds
        );
    }
}

/// Runs `edge-cli train`.
pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    // Keep freed tensor memory: a step reuses the same buffer sizes.
    crate::alloc::mimalloc_purge_delay(-1);
    if args.qat {
        return run_qat(args);
    }
    let mut cfg = ModelConfig::preset(&args.preset)?.with_block(args.block);
    if args.reconstruction {
        cfg = cfg.reconstruction();
    }
    if args.upsample == "nearest-conv" {
        cfg.upsample = Upsample::NearestConv;
    }
    if let Some(n) = &args.normalizer {
        cfg.normalizer = parse_normalizer(n)?;
    }
    let dev = device(&args.device)?;
    let opts = OpenOptions {
        units: args.units,
        ..OpenOptions::default()
    };
    let data = FrameSet::load(&args.data, &cfg, &opts)
        .with_context(|| format!("loading {}", args.data.display()))?;
    println!(
        "model {cfg}; {} params; data {} frames in {} clips from {}",
        crate::model::cost::cost(&cfg).params,
        data.frame_count(),
        data.clips.len(),
        args.data.display()
    );
    let topts = TrainOptions {
        epochs: args.epochs.unwrap_or(60),
        batch_size: args.batch,
        lr: args.lr.unwrap_or(2e-4),
        seed: args.seed,
        val_fraction: args.val_fraction,
        max_steps_per_epoch: args.max_steps,
    };
    let mut bar = Bar {
        bar: None,
        acc: LossTerms::default(),
        n: 0,
    };
    let reports = train::train(&cfg, data, &topts, &args.out, args.resume, &dev, &mut bar)?;
    if let Some(last) = reports.last() {
        println!(
            "done: {} epochs; checkpoints in {}",
            last.epoch,
            args.out.display()
        );
    }
    Ok(())
}

/// Runs `edge-cli train --qat --from CHECKPOINT`.
fn run_qat(args: &TrainArgs) -> anyhow::Result<()> {
    let Some(from) = &args.from else {
        bail!(
            "--qat needs --from <checkpoint dir>: quantization-aware training fine-tunes a trained model"
        );
    };
    if args.resume {
        bail!("--qat does not resume; start it again from the trained checkpoint");
    }
    let dir = train::latest_checkpoint(from)?;
    let cfg = train::read_config(&dir)?;
    let dev = device(&args.device)?;
    let opts = OpenOptions {
        units: args.units,
        ..OpenOptions::default()
    };
    let data = FrameSet::load(&args.data, &cfg, &opts)
        .with_context(|| format!("loading {}", args.data.display()))?;
    let qopts = qat::QatOptions {
        train: TrainOptions {
            epochs: args.epochs.unwrap_or(qat::DEFAULT_EPOCHS),
            batch_size: args.batch,
            lr: args.lr.unwrap_or(qat::DEFAULT_LR),
            seed: args.seed,
            val_fraction: args.val_fraction,
            max_steps_per_epoch: args.max_steps,
        },
        ..qat::QatOptions::default()
    };
    println!(
        "QAT of {} (model {cfg}); data {} frames in {} clips from {}; lr {:.1e}, {} epochs",
        dir.display(),
        data.frame_count(),
        data.clips.len(),
        args.data.display(),
        qopts.train.lr,
        qopts.train.epochs
    );
    let mut bar = Bar {
        bar: None,
        acc: LossTerms::default(),
        n: 0,
    };
    let (reports, ranges) = qat::train_qat(from, data, &qopts, &args.out, &dev, &mut bar)?;
    println!(
        "done: {} QAT epochs; checkpoint in {} with {} activation ranges ({})",
        reports.len(),
        args.out.display(),
        ranges.ranges.len(),
        qat::RANGES_FILE
    );
    Ok(())
}
