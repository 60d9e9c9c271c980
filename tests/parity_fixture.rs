//! Writes the fixtures of the PyTorch parity check (`tools/reference/check_parity.py`).
//!
//! For a handful of tiny configurations (every block variant, prediction and reconstruction,
//! both upsampling kinds) this builds a seeded model, gives every batch-norm and layer-norm
//! non-trivial statistics and affine parameters (so that eval mode and the norms are really
//! tested), and records the weights, a fixed input batch and everything the Rust model computes
//! from it: eval- and train-mode forward outputs, the memory and block losses, the batch-norm
//! running statistics after the train-mode pass and the memory items after one update.
//!
//! With `THERMAL_EDGE_PARITY_DIR` set, the fixtures go there (one sub-directory each, plus
//! `manifest.json`). Without it they go to a temporary directory and the test checks what was
//! written, so a plain `cargo test` needs no Python.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use thermal_edge::model::config::{BlockLoss, Upsample};
use thermal_edge::model::mnad::Forward;
use thermal_edge::model::{BlockVariant, Mnad, ModelConfig, ParamStore};
use thermal_edge::rng::Rng;
use thermal_edge::source::npy;

/// Batch size of the fixture inputs.
const BATCH: usize = 2;

/// One fixture: a name (its directory), the configuration and the seed of weights and input.
struct Case {
    name: &'static str,
    cfg: ModelConfig,
    seed: u64,
}

fn tiny() -> ModelConfig {
    ModelConfig::preset("tiny").expect("tiny preset")
}

/// The configurations checked: each block variant in prediction mode with transposed
/// convolutions, reconstruction mode, nearest+conv upsampling (with 3-channel frames), and one
/// transformer block without the BN+ReLU after it and with the MSE block loss.
fn cases() -> Vec<Case> {
    let mut nearest = tiny().with_block(BlockVariant::Paper);
    nearest.upsample = Upsample::NearestConv;
    nearest.channels = 3;
    let mut recon_nearest = tiny()
        .with_block(BlockVariant::ReferenceCode)
        .reconstruction();
    recon_nearest.upsample = Upsample::NearestConv;
    recon_nearest.block.keep_bn_after = false;
    recon_nearest.block.loss = BlockLoss::Mse;
    vec![
        Case {
            name: "paper-pred",
            cfg: tiny().with_block(BlockVariant::Paper),
            seed: 11,
        },
        Case {
            name: "reference-code-pred",
            cfg: tiny().with_block(BlockVariant::ReferenceCode),
            seed: 12,
        },
        Case {
            name: "sspcab-pred",
            cfg: tiny().with_block(BlockVariant::Sspcab),
            seed: 13,
        },
        Case {
            name: "none-pred",
            cfg: tiny().with_block(BlockVariant::None),
            seed: 14,
        },
        Case {
            name: "paper-recon",
            cfg: tiny().with_block(BlockVariant::Paper).reconstruction(),
            seed: 15,
        },
        Case {
            name: "sspcab-recon",
            cfg: tiny().with_block(BlockVariant::Sspcab).reconstruction(),
            seed: 16,
        },
        Case {
            name: "paper-pred-nearest-c3",
            cfg: nearest,
            seed: 17,
        },
        Case {
            name: "reference-code-recon-nearest-nobn-mse",
            cfg: recon_nearest,
            seed: 18,
        },
    ]
}

/// `.npy` bytes of a little-endian f32 array (NumPy's format 1.0, header padded to 64 bytes).
fn encode_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    assert_eq!(shape.iter().product::<usize>(), data.len());
    let dims = match shape {
        [d] => format!("{d},"),
        _ => shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    let total = 6 + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes a tensor (any shape, including a scalar) as an f32 `.npy` file.
fn write_tensor(dir: &Path, name: &str, t: &Tensor) {
    let t = t.to_dtype(DType::F32).unwrap();
    let data = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(
        data.iter().all(|v| v.is_finite()),
        "{name} has non-finite values"
    );
    let path = dir.join(format!("{name}.npy"));
    npy::write_npy(&path, &encode_f32(t.dims(), &data)).unwrap();
}

fn uniform(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(lo, hi) as f32).collect()
}

/// Gives every batch-norm and layer-norm non-default statistics and affine parameters: running
/// means in ±0.5, running variances in [0.5, 2], scales in [0.5, 1.5], shifts in ±0.2.
fn randomize_norms(store: &ParamStore, rng: &mut Rng) -> usize {
    let mut changed = 0;
    for (name, t) in store.tensors() {
        let mut parts = name.rsplit('.');
        let (leaf, module) = (parts.next().unwrap(), parts.next().unwrap_or(""));
        if !(module.starts_with("bn") || module.starts_with("ln")) {
            continue;
        }
        let (lo, hi) = match leaf {
            "running_mean" => (-0.5, 0.5),
            "running_var" => (0.5, 2.0),
            "weight" => (0.5, 1.5),
            "bias" => (-0.2, 0.2),
            other => panic!("unexpected norm tensor {name} ({other})"),
        };
        let n = t.elem_count();
        let v = Tensor::from_vec(uniform(rng, n, lo, hi), t.dims(), &Device::Cpu).unwrap();
        store.var(&name).unwrap().set(&v).unwrap();
        changed += 1;
    }
    changed
}

/// The BN running statistics currently in the store, by name.
fn running_stats(store: &ParamStore) -> BTreeMap<String, Tensor> {
    store
        .tensors()
        .into_iter()
        .filter(|(k, _)| k.ends_with(".running_mean") || k.ends_with(".running_var"))
        .collect()
}

/// Writes one mode's forward outputs and losses under `prefix` (`eval` / `train`).
fn write_forward(dir: &Path, prefix: &str, model: &Mnad, f: &Forward) -> Vec<String> {
    let mut names = Vec::new();
    let mut put = |name: &str, t: &Tensor| {
        let full = format!("{prefix}_{name}");
        write_tensor(dir, &full, t);
        names.push(full);
    };
    put("pred", &f.pred);
    put("queries", &f.queries);
    put("scores", &f.read.scores);
    put("weights", &f.read.weights);
    put("read", &f.read.read);
    put("block_output", &f.block.output);
    if let Some(target) = &f.block.target {
        put("block_input", target);
    }
    let (compact, separate) = model.memory.losses(&f.queries, &f.read).unwrap();
    put("compactness", &compact);
    put("separateness", &separate);
    if let Some(l) = model.block().loss(&f.block).unwrap() {
        put("block_loss", &l);
    }
    names
}

/// Builds one fixture in `root/<name>` and returns the names of the arrays it wrote.
fn write_case(root: &Path, case: &Case) -> Vec<String> {
    let dir = root.join(case.name);
    fs::create_dir_all(&dir).unwrap();
    let cfg = &case.cfg;
    cfg.validate().unwrap();
    let store = ParamStore::new(Device::Cpu, case.seed);
    let model = Mnad::new(&store, cfg).unwrap();
    let mut rng = Rng::new(case.seed ^ 0x5eed_f00d);
    assert!(randomize_norms(&store, &mut rng) > 0);

    // Weights and buffers as the reference loads them: saved before the train-mode pass moves
    // the running statistics and before the memory update.
    store.save(&dir.join("model.safetensors")).unwrap();
    fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(cfg).unwrap(),
    )
    .unwrap();

    let shape = (BATCH, cfg.input_channels(), cfg.height, cfg.width);
    let n = BATCH * cfg.input_channels() * cfg.height * cfg.width;
    let x = Tensor::from_vec(uniform(&mut rng, n, -1.0, 1.0), shape, &Device::Cpu).unwrap();
    write_tensor(&dir, "input", &x);

    let before = running_stats(&store);
    let eval = model.forward(&x, false).unwrap();
    let mut names = write_forward(&dir, "eval", &model, &eval);
    // Eval mode must leave the running statistics alone.
    for (k, t) in running_stats(&store) {
        let d = (&t - &before[&k])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "eval pass changed {k}");
    }

    let train = model.forward(&x, true).unwrap();
    names.extend(write_forward(&dir, "train", &model, &train));
    let after = running_stats(&store);
    let mut moved = 0;
    for (k, t) in &after {
        let d = (t - &before[k]).unwrap().abs().unwrap().max_all().unwrap();
        if d.to_scalar::<f32>().unwrap() > 0.0 {
            moved += 1;
        }
    }
    assert_eq!(
        moved,
        after.len(),
        "every running statistic moves in train mode"
    );
    let after: HashMap<String, Tensor> = after.into_iter().collect();
    candle_core::safetensors::save(&after, dir.join("running_after_train.safetensors")).unwrap();

    // One memory update with the train-mode queries and their scores (as a training step does).
    // A copy: `items()` shares storage with the variable that `update` overwrites in place.
    let items_before = model.memory.items().copy().unwrap();
    model
        .memory
        .update(&train.queries, &train.read.scores)
        .unwrap();
    let items = model.memory.items();
    let moved = (&items - &items_before)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(moved > 1e-3, "memory update moved the items by {moved}");
    for row in items.to_vec2::<f32>().unwrap() {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "updated item norm {norm}");
    }
    write_tensor(&dir, "memory_updated", &items);
    names.push("memory_updated".into());

    // The two modes really differ (batch vs running statistics).
    let d = (&eval.pred - &train.pred)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        d > 1e-3,
        "{}: eval and train predictions coincide",
        case.name
    );
    names
}

#[test]
fn write_parity_fixtures() {
    let (root, _tmp): (PathBuf, Option<tempfile::TempDir>) =
        match std::env::var_os("THERMAL_EDGE_PARITY_DIR") {
            Some(d) => (PathBuf::from(d), None),
            None => {
                let t = tempfile::tempdir().unwrap();
                (t.path().to_path_buf(), Some(t))
            }
        };
    fs::create_dir_all(&root).unwrap();
    let mut manifest = serde_json::Map::new();
    for case in cases() {
        let names = write_case(&root, &case);
        let dir = root.join(case.name);
        for f in [
            "model.safetensors",
            "config.json",
            "running_after_train.safetensors",
        ] {
            assert!(dir.join(f).is_file(), "{}: {f} missing", case.name);
        }
        // Every array reads back through the crate's own .npy parser with the right size.
        for name in names.iter().chain(std::iter::once(&"input".to_string())) {
            let path = dir.join(format!("{name}.npy"));
            let arr = npy::read_npy(&path).unwrap();
            assert_eq!(arr.descr, "<f4", "{}", path.display());
            assert_eq!(arr.data.len(), arr.shape.iter().product::<usize>());
        }
        // The saved weights rebuild the same model.
        let loaded =
            ParamStore::from_safetensors(Device::Cpu, &dir.join("model.safetensors")).unwrap();
        Mnad::new(&loaded, &case.cfg).unwrap();
        loaded.check_all_used().unwrap();
        println!(
            "parity fixture {:<40} {} arrays -> {}",
            case.name,
            names.len() + 1,
            dir.display()
        );
        manifest.insert(case.name.to_string(), serde_json::json!(names));
    }
    fs::write(
        root.join("manifest.json"),
        serde_json::to_string_pretty(&serde_json::json!({ "fixtures": manifest })).unwrap(),
    )
    .unwrap();
}

#[test]
fn f32_npy_round_trips_through_the_crate_parser() {
    let data = [1.5f32, -2.25, 0.0, 3.0e-7, 7.0, 8.0];
    for shape in [&[6][..], &[2, 3], &[1, 2, 3]] {
        let bytes = encode_f32(shape, &data);
        assert_eq!(bytes.iter().position(|&b| b == b'\n').unwrap() % 64, 63);
        let arr = npy::parse_npy(&bytes, Path::new("mem.npy")).unwrap();
        assert_eq!(arr.shape, shape);
        match arr.data {
            npy::NpyData::Float(v) => {
                assert_eq!(v, data.iter().map(|&x| f64::from(x)).collect::<Vec<_>>())
            }
            other => panic!("read back as {other:?}"),
        }
    }
    let scalar = encode_f32(&[], &[0.5]);
    let arr = npy::parse_npy(&scalar, Path::new("s.npy")).unwrap();
    assert!(arr.shape.is_empty());
}
