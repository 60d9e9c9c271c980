//! Recording what a scorer received and produced, frame by frame, as NumPy arrays (for
//! `edge-cli infer --dump DIR`, read by `tools/check_onnx.py`).
//!
//! Files written into the directory, F being the frames scored:
//!
//! | file               | shape (all f32)    | content                                            |
//! |--------------------|--------------------|----------------------------------------------------|
//! | `inputs.npy`       | (F, 1, C_in, H, W) | ONNX input `frames`: the input frames only         |
//! | `memory.npy`       | (F, M, D)          | ONNX input `memory`: the items before the update   |
//! | `targets.npy`      | (F, 1, c, H, W)    | the frame the prediction is scored against         |
//! | `pred.npy`         | (F, 1, c, H, W)    | output `pred`                                      |
//! | `queries.npy`      | (F, N, D)          | output `queries`                                   |
//! | `read_weights.npy` | (F, N, M)          | output `read_weights`                              |
//! | `dump.json`        |                    | `backend`, `model`, `mode`, `frames`, `seqs`, `psnr` |
//!
//! The frames are held in memory until written: limit long sources with `--max-frames`.

use std::path::Path;

use super::{split_stack, Backend, EngineError, ScoredFrame};
use crate::model::ModelConfig;
use crate::source::npy::{encode_f32, write_npy};
use crate::source::SourceError;

/// Names of the arrays a dump holds, in the order written.
pub const DUMP_ARRAYS: [&str; 6] = [
    "inputs",
    "memory",
    "targets",
    "pred",
    "queries",
    "read_weights",
];

/// Frames recorded for a dump, kept in memory until [`ScoreDump::write`].
#[derive(Debug, Clone)]
pub struct ScoreDump {
    cfg: ModelConfig,
    seqs: Vec<u64>,
    psnr: Vec<f32>,
    inputs: Vec<f32>,
    memory: Vec<f32>,
    targets: Vec<f32>,
    pred: Vec<f32>,
    queries: Vec<f32>,
    read_weights: Vec<f32>,
}

impl ScoreDump {
    /// An empty dump for a model of `cfg`.
    pub fn new(cfg: &ModelConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            seqs: Vec::new(),
            psnr: Vec::new(),
            inputs: Vec::new(),
            memory: Vec::new(),
            targets: Vec::new(),
            pred: Vec::new(),
            queries: Vec::new(),
            read_weights: Vec::new(),
        }
    }

    /// Frames recorded.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// Whether no frame was recorded.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    fn dims(&self) -> (usize, usize, usize, usize) {
        let (qh, qw) = self.cfg.query_size();
        (
            self.cfg.memory_items,
            self.cfg.memory_dim(),
            qh * qw,
            self.cfg.channels * self.cfg.height * self.cfg.width,
        )
    }

    /// Records one scored frame, checking every array's size.
    pub fn push(&mut self, f: &ScoredFrame<'_>) -> Result<(), EngineError> {
        let (m, d, n, plane) = self.dims();
        let (input, target) = split_stack(&self.cfg, f.stack)?;
        let check = |name: &'static str, got: usize, expected: usize| {
            if got == expected {
                Ok(())
            } else {
                Err(EngineError::Output {
                    name,
                    detail: format!("{got} values, expected {expected}"),
                })
            }
        };
        check("memory", f.memory.len(), m * d)?;
        check("pred", f.out.pred.len(), plane)?;
        check("queries", f.out.queries.len(), n * d)?;
        check("read_weights", f.out.read_weights.len(), n * m)?;
        self.seqs.push(f.seq);
        self.psnr.push(f.out.psnr);
        self.inputs.extend_from_slice(input);
        self.memory.extend_from_slice(f.memory);
        self.targets.extend_from_slice(target);
        self.pred.extend_from_slice(&f.out.pred);
        self.queries.extend_from_slice(&f.out.queries);
        self.read_weights.extend_from_slice(&f.out.read_weights);
        Ok(())
    }

    /// Writes the six arrays and `dump.json` into `dir` (created if needed). `model` is the
    /// bundle file the backend ran (e.g. `model.int8.onnx`).
    pub fn write(&self, dir: &Path, backend: Backend, model: &str) -> Result<(), EngineError> {
        std::fs::create_dir_all(dir).map_err(|e| SourceError::io(dir, e))?;
        let cfg = &self.cfg;
        let (m, d, n, _) = self.dims();
        let f = self.len();
        let (c, h, w) = (cfg.channels, cfg.height, cfg.width);
        let arrays: [(&str, Vec<usize>, &[f32]); 6] = [
            (
                "inputs",
                vec![f, 1, cfg.input_channels(), h, w],
                &self.inputs,
            ),
            ("memory", vec![f, m, d], &self.memory),
            ("targets", vec![f, 1, c, h, w], &self.targets),
            ("pred", vec![f, 1, c, h, w], &self.pred),
            ("queries", vec![f, n, d], &self.queries),
            ("read_weights", vec![f, n, m], &self.read_weights),
        ];
        for (name, shape, data) in arrays {
            let path = dir.join(format!("{name}.npy"));
            write_npy(&path, &encode_f32(&shape, data))?;
        }
        let meta = serde_json::json!({
            "backend": backend.name(),
            "model": model,
            "mode": cfg.mode,
            "frames": f,
            "seqs": self.seqs,
            "psnr": self.psnr,
        });
        let path = dir.join("dump.json");
        let text = serde_json::to_string_pretty(&meta).expect("JSON of plain values");
        std::fs::write(&path, text + "\n").map_err(|e| SourceError::io(&path, e))?;
        Ok(())
    }
}
