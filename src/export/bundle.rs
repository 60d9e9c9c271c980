//! The model bundle: one directory with everything a board needs to score frames.
//!
//! | file | what |
//! |---|---|
//! | `model.onnx` | f32 ONNX graph (tract) |
//! | `model.int8.onnx` | int8 ONNX graph (tract) |
//! | `model.f16.safetensors` | every checkpoint tensor as f16 (candle) |
//! | `memory.safetensors` | tensor `memory`, f32 (M, D): the trained memory items |
//! | `bundle.toml` | the [`Manifest`]: config, input, file hashes, reports, calibration |
//!
//! `bundle.toml` is written last (through a temporary file and a rename), so a bundle whose
//! writing was interrupted has no manifest and does not open.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

use crate::frame::Normalizer;
use crate::model::{Mnad, ModelConfig, ParamStore};

/// File name of the manifest.
pub const MANIFEST_FILE: &str = "bundle.toml";
/// File name of the f32 ONNX model.
pub const MODEL_F32_FILE: &str = "model.onnx";
/// File name of the int8 ONNX model.
pub const MODEL_INT8_FILE: &str = "model.int8.onnx";
/// File name of the f16 weights for candle.
pub const WEIGHTS_F16_FILE: &str = "model.f16.safetensors";
/// File name of the initial memory items.
pub const MEMORY_FILE: &str = "memory.safetensors";
/// Name of the tensor in [`MEMORY_FILE`].
pub const MEMORY_TENSOR: &str = "memory";
/// Value of the manifest's `format` key.
pub const FORMAT: &str = "thermal-edge-bundle";
/// Manifest version this build writes (and the newest it reads).
pub const BUNDLE_VERSION: u32 = 1;
/// Files every bundle has besides the manifest (the memory file's name comes from the manifest).
pub const REQUIRED_FILES: [&str; 3] = [MODEL_F32_FILE, MODEL_INT8_FILE, WEIGHTS_F16_FILE];

/// Why a bundle could not be written or opened. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is not valid TOML or lacks a key.
    #[error("{}: {detail}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// toml's message, with line and column.
        detail: String,
    },
    /// The manifest is not a thermal-edge bundle manifest.
    #[error("{}: format is '{found}', expected '{FORMAT}'", path.display())]
    Format {
        /// The manifest.
        path: PathBuf,
        /// Format found.
        found: String,
    },
    /// The manifest version is not one this build reads.
    #[error(
        "{}: bundle version {found} is not supported (this build reads version {BUNDLE_VERSION}); \
         re-export the bundle or update edge-cli",
        path.display()
    )]
    Version {
        /// The manifest.
        path: PathBuf,
        /// Version found.
        found: i64,
    },
    /// A required file is not listed in the manifest's `files`.
    #[error("{}: required file {name} is not listed under [files]", path.display())]
    Unlisted {
        /// The manifest.
        path: PathBuf,
        /// File name.
        name: String,
    },
    /// A listed file is absent.
    #[error("{}: missing (listed in {MANIFEST_FILE})", path.display())]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// A file's size differs from the manifest's.
    #[error("{}: size {found} bytes, {MANIFEST_FILE} says {expected}", path.display())]
    Size {
        /// The file.
        path: PathBuf,
        /// Size in the manifest.
        expected: u64,
        /// Size on disk.
        found: u64,
    },
    /// A file's SHA-256 differs from the manifest's (corrupt or replaced).
    #[error("{}: sha256 mismatch: {MANIFEST_FILE} says {expected}, file has {found}", path.display())]
    Hash {
        /// The file.
        path: PathBuf,
        /// Hash in the manifest.
        expected: String,
        /// Hash of the file.
        found: String,
    },
    /// The model config is invalid or the manifest's `input` / `memory` disagree with it.
    #[error("{}: {detail}", path.display())]
    Config {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Frames of a size the model cannot take.
    #[error(
        "{}: model input is {}x{} (HxW) but frames are {}x{}; frames must be resized to the model input",
        path.display(), expected.0, expected.1, found.0, found.1
    )]
    FrameSize {
        /// The manifest.
        path: PathBuf,
        /// Model input (height, width).
        expected: (usize, usize),
        /// Frame size (height, width).
        found: (usize, usize),
    },
    /// The model could not be exported into the bundle.
    #[error("{}: exporting the model: {detail}", path.display())]
    Export {
        /// The bundle directory.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A tensor file could not be encoded or decoded, or has the wrong shape.
    #[error("{}: {detail}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// The model input the bundle expects (what the scorer receives, after preprocessing).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InputSpec {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Channels per frame.
    pub channels: usize,
    /// Frames fed to the network: t − 1 (prediction) or 1 (reconstruction).
    pub frames: usize,
    /// How raw frames become [−1, 1] input.
    pub normalizer: Normalizer,
}

/// The memory items' shape and file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemorySpec {
    /// Items M.
    pub items: usize,
    /// Dimension D.
    pub dim: usize,
    /// File holding tensor `memory` (f32, M×D).
    pub file: String,
}

/// Hash and size of one bundle file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileEntry {
    /// SHA-256 of the contents, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// How the int8 model was quantized.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantReport {
    /// Quantization scheme (`u8s8-per-channel-v1`: QLinearConv, see `export::quant`).
    pub scheme: String,
    /// Calibration footage.
    pub source: String,
    /// Calibration frames used.
    pub frames: usize,
    /// Range chosen for each quantized tensor.
    pub tensors: Vec<TensorRange>,
}

/// The quantization range of one tensor.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TensorRange {
    /// Tensor name in the graph.
    pub name: String,
    /// How the range was chosen (min-max, percentile, MSE search...).
    pub method: String,
    /// Low end of the range.
    pub lo: f32,
    /// High end of the range.
    pub hi: f32,
    /// Quantization MSE of the tensor with this range.
    pub mse: f64,
}

/// How closely the exported models match candle on real footage.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ParityReport {
    /// Footage compared on.
    pub source: String,
    /// Frames compared.
    pub frames: usize,
    /// Largest |f32 ONNX (tract) − candle f32| over the predicted frames.
    pub f32_max_abs_diff: f32,
    /// The bound the f32 difference had to stay under.
    pub f32_bound: f32,
    /// Largest |int8 ONNX − f32 ONNX| over the predicted frames.
    pub int8_max_abs_diff: f32,
    /// Pearson correlation of per-frame PSNR, int8 vs f32.
    pub psnr_pearson: f64,
    /// Pearson correlation of per-frame anomaly scores, int8 vs f32.
    pub score_pearson: f64,
    /// ROC-AUC with the f32 model, when the footage is labelled.
    pub f32_auc: Option<f64>,
    /// ROC-AUC with the int8 model, when the footage is labelled.
    pub int8_auc: Option<f64>,
    /// int8 AUC − f32 AUC.
    pub auc_diff: Option<f64>,
}

/// The contents of `bundle.toml`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Manifest version ([`BUNDLE_VERSION`]).
    pub version: u32,
    /// Name of the model.
    pub name: String,
    /// Crate name and version that wrote the bundle.
    pub producer: String,
    /// The full model configuration.
    pub model: ModelConfig,
    /// The model input.
    pub input: InputSpec,
    /// The memory items.
    pub memory: MemorySpec,
    /// Every file of the bundle by name.
    pub files: BTreeMap<String, FileEntry>,
    /// How the int8 model was quantized, when the exporter made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantReport>,
    /// Exported-model parity against candle, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parity: Option<ParityReport>,
    /// Score calibration written by `edge-cli calibrate` (opaque here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<toml::Table>,
}

impl Manifest {
    /// A manifest for a model called `name` with configuration `cfg`; `files` is filled by
    /// [`write_bundle`].
    pub fn new(name: &str, cfg: &ModelConfig) -> Self {
        Self {
            format: FORMAT.into(),
            version: BUNDLE_VERSION,
            name: name.into(),
            producer: concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION")).into(),
            model: cfg.clone(),
            input: InputSpec {
                height: cfg.height,
                width: cfg.width,
                channels: cfg.channels,
                frames: cfg.input_frames(),
                normalizer: cfg.normalizer,
            },
            memory: MemorySpec {
                items: cfg.memory_items,
                dim: cfg.memory_dim(),
                file: MEMORY_FILE.into(),
            },
            files: BTreeMap::new(),
            quantization: None,
            parity: None,
            calibration: None,
        }
    }

    /// Checks the model config and that `input` and `memory` agree with it.
    fn check_config(&self, path: &Path) -> Result<(), BundleError> {
        let err = |detail: String| BundleError::Config {
            path: path.to_path_buf(),
            detail,
        };
        let c = &self.model;
        c.validate().map_err(|e| err(e.to_string()))?;
        let want = (c.height, c.width, c.channels, c.input_frames());
        let i = &self.input;
        let got = (i.height, i.width, i.channels, i.frames);
        if want != got {
            return Err(err(format!(
                "[input] height, width, channels, frames = {got:?} but the model takes {want:?}"
            )));
        }
        if i.normalizer != c.normalizer {
            return Err(err(format!(
                "[input] normalizer {:?} differs from the model's {:?}",
                i.normalizer, c.normalizer
            )));
        }
        let (m, d) = (c.memory_items, c.memory_dim());
        if (self.memory.items, self.memory.dim) != (m, d) {
            return Err(err(format!(
                "[memory] is {}x{} but the model has {m}x{d} items",
                self.memory.items, self.memory.dim
            )));
        }
        Ok(())
    }

    fn to_toml(&self, path: &Path) -> Result<String, BundleError> {
        toml::to_string_pretty(self).map_err(|e| BundleError::Manifest {
            path: path.to_path_buf(),
            detail: format!("cannot serialize the manifest: {e}"),
        })
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so readers never see half.
fn write_atomic(path: &Path, text: &[u8]) -> Result<(), BundleError> {
    let tmp = path.with_extension("toml.tmp");
    fs::write(&tmp, text).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Writes a bundle into `dir` (created if needed): each of `files`, then `bundle.toml` with
/// their hashes and sizes added to `manifest.files`.
pub fn write_bundle(
    dir: &Path,
    manifest: &mut Manifest,
    files: &[(&str, Vec<u8>)],
) -> Result<(), BundleError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    for (name, bytes) in files {
        let path = dir.join(name);
        fs::write(&path, bytes).map_err(io_err(&path))?;
        manifest.files.insert(
            (*name).to_string(),
            FileEntry {
                sha256: sha256_hex(bytes),
                bytes: bytes.len() as u64,
            },
        );
    }
    let path = dir.join(MANIFEST_FILE);
    let text = manifest.to_toml(&path)?;
    write_atomic(&path, text.as_bytes())?;
    log::info!("wrote bundle {} ({} files)", dir.display(), files.len());
    Ok(())
}

/// `memory.safetensors` bytes: tensor `memory`, f32 (M, D).
pub fn memory_safetensors(items: &Tensor) -> candle_core::Result<Vec<u8>> {
    let t = items
        .to_device(&Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .contiguous()?;
    safetensors::serialize([(MEMORY_TENSOR, t)], None)
        .map_err(|e| candle_core::Error::Msg(format!("serializing memory safetensors: {e}")))
}

/// The f32 model, the f16 weights and the memory of `net` (weights from `store`), named for
/// [`write_bundle`]. The int8 model is the caller's to add (see `export::quant`).
pub fn model_files(
    net: &Mnad,
    store: &ParamStore,
) -> Result<Vec<(&'static str, Vec<u8>)>, super::ExportError> {
    let tensor_err = |name: &str| {
        let name = name.to_string();
        move |source| super::ExportError::Tensor { name, source }
    };
    let onnx = super::export_f32(net, store)?;
    let f16 = super::f16::store_to_f16_safetensors(store).map_err(tensor_err(WEIGHTS_F16_FILE))?;
    let items = net.memory.snapshot().map_err(tensor_err(MEMORY_FILE))?;
    let memory = memory_safetensors(&items).map_err(tensor_err(MEMORY_FILE))?;
    Ok(vec![
        (MODEL_F32_FILE, onnx),
        (WEIGHTS_F16_FILE, f16),
        (MEMORY_FILE, memory),
    ])
}

/// Writes a complete bundle of `net` (weights in `store`) called `name` into `dir`, with
/// `int8_onnx` as `model.int8.onnx`, and returns its manifest.
pub fn write_model_bundle(
    dir: &Path,
    name: &str,
    net: &Mnad,
    store: &ParamStore,
    int8_onnx: Vec<u8>,
) -> Result<Manifest, BundleError> {
    let mut files = model_files(net, store).map_err(|e| BundleError::Export {
        path: dir.to_path_buf(),
        detail: e.to_string(),
    })?;
    files.push((MODEL_INT8_FILE, int8_onnx));
    let mut manifest = Manifest::new(name, net.config());
    write_bundle(dir, &mut manifest, &files)?;
    Ok(manifest)
}

/// An opened bundle: manifest parsed and every file checked against its hash.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
    manifest: Manifest,
}

/// Reads manifest version 1 (the current in-memory type).
fn parse_v1(text: &str, path: &Path) -> Result<Manifest, BundleError> {
    toml::from_str(text).map_err(|e| BundleError::Manifest {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Parses `bundle.toml`: format and version first, then the loader for that version.
fn parse_manifest(text: &str, path: &Path) -> Result<Manifest, BundleError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| BundleError::Manifest {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    let format = table.get("format").and_then(|v| v.as_str());
    if format != Some(FORMAT) {
        return Err(BundleError::Format {
            path: path.to_path_buf(),
            found: format.unwrap_or("(missing)").to_string(),
        });
    }
    let version = table
        .get("version")
        .and_then(|v| v.as_integer())
        .ok_or_else(|| BundleError::Manifest {
            path: path.to_path_buf(),
            detail: "missing integer key 'version'".into(),
        })?;
    match version {
        1 => parse_v1(text, path),
        found => Err(BundleError::Version {
            path: path.to_path_buf(),
            found,
        }),
    }
}

/// Checks one listed file's size and hash.
fn verify_file(path: &Path, entry: &FileEntry) -> Result<(), BundleError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BundleError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    if bytes.len() as u64 != entry.bytes {
        return Err(BundleError::Size {
            path: path.to_path_buf(),
            expected: entry.bytes,
            found: bytes.len() as u64,
        });
    }
    let found = sha256_hex(&bytes);
    if !found.eq_ignore_ascii_case(&entry.sha256) {
        return Err(BundleError::Hash {
            path: path.to_path_buf(),
            expected: entry.sha256.clone(),
            found,
        });
    }
    Ok(())
}

impl Bundle {
    /// Opens the bundle in `dir`: parses `bundle.toml`, checks format, version and config, and
    /// verifies the size and SHA-256 of every listed file (the required ones must be listed).
    pub fn open(dir: &Path) -> Result<Self, BundleError> {
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        let manifest = parse_manifest(&text, &path)?;
        manifest.check_config(&path)?;
        let required = REQUIRED_FILES
            .iter()
            .copied()
            .chain([manifest.memory.file.as_str()]);
        for name in required {
            if !manifest.files.contains_key(name) {
                return Err(BundleError::Unlisted {
                    path: path.clone(),
                    name: name.to_string(),
                });
            }
        }
        for (name, entry) in &manifest.files {
            if name.contains('/') || name.contains('\\') || name.starts_with('.') {
                return Err(BundleError::Config {
                    path: path.clone(),
                    detail: format!("file name '{name}' must be a plain name inside the bundle"),
                });
            }
            verify_file(&dir.join(name), entry)?;
        }
        log::debug!(
            "opened bundle {} ({}, {} files verified)",
            dir.display(),
            manifest.model,
            manifest.files.len()
        );
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest, for changes saved with [`Bundle::save_manifest`] (e.g. calibration).
    pub fn manifest_mut(&mut self) -> &mut Manifest {
        &mut self.manifest
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.manifest.model
    }

    /// Path of a file in the bundle.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Path of `bundle.toml`.
    pub fn manifest_path(&self) -> PathBuf {
        self.path(MANIFEST_FILE)
    }

    /// Path of the f32 ONNX model.
    pub fn model_f32_path(&self) -> PathBuf {
        self.path(MODEL_F32_FILE)
    }

    /// Path of the int8 ONNX model.
    pub fn model_int8_path(&self) -> PathBuf {
        self.path(MODEL_INT8_FILE)
    }

    /// Path of the f16 weights.
    pub fn weights_f16_path(&self) -> PathBuf {
        self.path(WEIGHTS_F16_FILE)
    }

    /// Path of the memory items.
    pub fn memory_path(&self) -> PathBuf {
        self.path(&self.manifest.memory.file)
    }

    /// Checks that preprocessed frames of `height`×`width` are what the model takes.
    ///
    /// Source frames of any size are resized to the model input by the preprocessing
    /// ([`crate::frame::Preprocessor`], used by [`crate::engine::FrameStack`]), as in training;
    /// this checks the size after that step, the input the scorer receives, and refuses any
    /// other size instead of letting the network run on a wrong shape.
    pub fn check_frame_size(&self, height: usize, width: usize) -> Result<(), BundleError> {
        let expected = (self.manifest.input.height, self.manifest.input.width);
        if (height, width) != expected {
            return Err(BundleError::FrameSize {
                path: self.manifest_path(),
                expected,
                found: (height, width),
            });
        }
        Ok(())
    }

    /// The initial memory items, row-major f32 (M×D), checked against the manifest's shape.
    pub fn load_memory(&self) -> Result<Vec<f32>, BundleError> {
        let path = self.memory_path();
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let terr = |detail: String| BundleError::Tensor {
            path: path.clone(),
            detail,
        };
        let map: HashMap<String, Tensor> =
            candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
                .map_err(|e| terr(e.to_string()))?;
        let t = map
            .get(MEMORY_TENSOR)
            .ok_or_else(|| terr(format!("no tensor '{MEMORY_TENSOR}'")))?;
        let want = [self.manifest.memory.items, self.manifest.memory.dim];
        if t.dims() != want {
            return Err(terr(format!(
                "tensor '{MEMORY_TENSOR}' has shape {:?}, the manifest says {want:?}",
                t.dims()
            )));
        }
        t.to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| terr(e.to_string()))
    }

    /// Rewrites `bundle.toml` from the (possibly changed) manifest, keeping the file hashes.
    pub fn save_manifest(&self) -> Result<(), BundleError> {
        let path = self.manifest_path();
        let text = self.manifest.to_toml(&path)?;
        write_atomic(&path, text.as_bytes())
    }
}
