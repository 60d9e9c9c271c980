//! Export of a trained network for the runtime: an f32 ONNX graph that tract (or any ONNX
//! runtime) runs with the same results as candle's eval-mode forward.

pub mod bundle;
pub mod f16;
pub mod graph;
pub mod onnx;
pub mod parity;
pub mod quant;

use std::path::Path;

use prost::Message;
use tract_onnx::pb::ModelProto;

use crate::model::{Mnad, ParamStore};

pub use graph::{INPUT_FRAMES, INPUT_MEMORY, OUTPUT_PRED, OUTPUT_QUERIES, OUTPUT_READ_WEIGHTS};

/// Why a network could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading or transforming a tensor failed.
    #[error("tensor {name}: {source}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// Cause.
        #[source]
        source: candle_core::Error,
    },
    /// The parameter store lacks a tensor the network needs.
    #[error("missing tensor {0} in the parameter store")]
    Missing(String),
    /// A tensor's shape does not match the configuration.
    #[error("tensor {name}: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// Tensor name.
        name: String,
        /// Shape the configuration implies.
        expected: Vec<usize>,
        /// Shape in the store.
        found: Vec<usize>,
    },
    /// The configuration cannot be exported.
    #[error("cannot export: {0}")]
    Unsupported(String),
    /// The checkpoint could not be loaded.
    #[error("loading checkpoint: {0}")]
    Checkpoint(#[from] crate::model::train::TrainError),
}

/// How the graph is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// A symbolic batch (`batch`; queries `n_queries`) instead of batch 1. Off by default: the
    /// edge runtime scores one frame at a time and a fixed shape lets tract plan for it.
    pub symbolic_batch: bool,
}

/// The f32 ONNX model of `net` with the weights of `store` (eval mode, batch norm folded).
pub fn model_f32(
    net: &Mnad,
    store: &ParamStore,
    opts: ExportOptions,
) -> Result<ModelProto, ExportError> {
    let cfg = net.config();
    let doc = format!(
        "MNAD + {} block, {:?} mode, {}x{}, memory items as input '{INPUT_MEMORY}'",
        cfg.block.variant.name(),
        cfg.mode,
        cfg.height,
        cfg.width
    );
    Ok(graph::build_graph(net, store, opts.symbolic_batch)?.finish("thermal_edge_mnad", &doc))
}

/// The serialized f32 ONNX model of `net`, batch 1 (see [`model_f32`]).
pub fn export_f32(net: &Mnad, store: &ParamStore) -> Result<Vec<u8>, ExportError> {
    Ok(model_f32(net, store, ExportOptions::default())?.encode_to_vec())
}

/// The serialized f32 ONNX model of the checkpoint in `dir` (`config.json` + `model.safetensors`).
pub fn export_checkpoint_f32(dir: &Path) -> Result<Vec<u8>, ExportError> {
    let (store, net) = crate::model::train::load_model(dir, &candle_core::Device::Cpu)?;
    export_f32(&net, &store)
}
