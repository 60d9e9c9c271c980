//! candle backend: builds the network from the bundle's f16 weights (upcast to f32) and runs its
//! eval-mode forward pass on the CPU or a CUDA GPU.

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use super::{score_forward, split_stack, Backend, EngineError, MemoryState, ScoreOutput, Scorer};
use crate::export::bundle::Bundle;
use crate::export::f16::load_f16_store;
use crate::model::{Mnad, ModelConfig};

/// Scores with candle's [`Mnad::forward`] (eval mode).
#[derive(Debug)]
pub struct CandleScorer {
    net: Mnad,
    device: Device,
    cfg: ModelConfig,
    memory: MemoryState,
    /// Time of the last forward pass (uploads, the network and the copies out).
    last_forward: Duration,
}

fn candle_err(context: impl Into<String>) -> impl FnOnce(candle_core::Error) -> EngineError {
    let context = context.into();
    move |source| EngineError::Candle { context, source }
}

impl CandleScorer {
    /// Loads `model.f16.safetensors` on `device` (upcast to f32) and the bundle's memory items.
    pub fn new(bundle: &Bundle, device: Device) -> Result<Self, EngineError> {
        let path = bundle.weights_f16_path();
        let ctx = format!("loading {}", path.display());
        let store = load_f16_store(&path, &device)
            .map_err(|e| candle_err(ctx.clone())(candle_core::Error::Msg(e.to_string())))?;
        let net = Mnad::new(&store, bundle.config())
            .map_err(|e| candle_err(ctx.clone())(candle_core::Error::Msg(e.to_string())))?;
        store
            .check_all_used()
            .map_err(|e| candle_err(ctx)(candle_core::Error::Msg(e.to_string())))?;
        // The f32 memory file, not the f16 copy of the items in the weights: both backends
        // start from exactly the same memory.
        let memory = MemoryState::new(bundle.config(), bundle.load_memory()?)?;
        Ok(Self {
            cfg: bundle.config().clone(),
            net,
            device,
            memory,
            last_forward: Duration::ZERO,
        })
    }

    /// A scorer on CUDA GPU `ordinal`.
    #[cfg(feature = "cuda")]
    pub fn cuda(bundle: &Bundle, ordinal: usize) -> Result<Self, EngineError> {
        let device = Device::new_cuda(ordinal)
            .map_err(candle_err(format!("opening CUDA device {ordinal}")))?;
        Self::new(bundle, device)
    }

    /// A scorer on CUDA GPU `ordinal`: unavailable, this build has no CUDA support.
    #[cfg(not(feature = "cuda"))]
    pub fn cuda(_bundle: &Bundle, _ordinal: usize) -> Result<Self, EngineError> {
        Err(EngineError::Unsupported(
            "backend candle-cuda: this edge-cli was built without the cuda feature (rebuild with `--features cuda`)"
                .into(),
        ))
    }

    /// A scorer running an already-built network with its own f32 weights and memory (for
    /// parity checks against the exported models). The network's memory variable is
    /// overwritten by the scorer's memory before every forward pass.
    pub fn from_net(net: Mnad) -> Result<Self, EngineError> {
        let items = net
            .memory
            .snapshot()
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(candle_err("reading the memory items"))?;
        let device = net.memory.items.device().clone();
        let cfg = net.config().clone();
        Ok(Self {
            memory: MemoryState::new(&cfg, items)?,
            cfg,
            net,
            device,
            last_forward: Duration::ZERO,
        })
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

fn to_vec(t: &Tensor, what: &str) -> Result<Vec<f32>, EngineError> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(candle_err(format!("reading {what}")))
}

impl Scorer for CandleScorer {
    fn backend(&self) -> Backend {
        if self.device.is_cuda() {
            Backend::CandleCuda
        } else {
            Backend::CandleCpu
        }
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn score(&mut self, stack: &[f32]) -> Result<ScoreOutput, EngineError> {
        let cfg = &self.cfg;
        let (input, target) = split_stack(cfg, stack)?;
        let started = Instant::now();
        let (m, d) = self.memory.shape();
        // The memory may have been updated or replaced since the last frame; M×D is small.
        let items = Tensor::from_slice(self.memory.items(), (m, d), &self.device)
            .map_err(candle_err("uploading the memory"))?;
        self.net
            .memory
            .items
            .set(&items)
            .map_err(candle_err("setting the memory"))?;
        let x = Tensor::from_slice(
            input,
            (1, cfg.input_channels(), cfg.height, cfg.width),
            &self.device,
        )
        .map_err(candle_err("uploading the frames"))?;
        let fwd = self
            .net
            .forward(&x, false)
            .map_err(candle_err("running the model"))?;
        // Copying out also waits for a GPU to finish, so the time covers the whole pass.
        let pred = to_vec(&fwd.pred, "pred")?;
        let queries = to_vec(&fwd.queries, "queries")?;
        let weights = to_vec(&fwd.read.weights, "read weights")?;
        self.last_forward = started.elapsed();
        Ok(score_forward(
            pred,
            target,
            queries,
            weights,
            self.memory.items(),
            d,
        ))
    }

    fn last_forward(&self) -> Option<Duration> {
        Some(self.last_forward)
    }

    fn memory_state(&self) -> &MemoryState {
        &self.memory
    }

    fn memory_state_mut(&mut self) -> &mut MemoryState {
        &mut self.memory
    }
}
