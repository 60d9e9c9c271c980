//! The f32 ONNX export: tract runs the exported graph with the same results as candle's
//! eval-mode forward, for every block variant, and the graph has the documented interface.

use candle_core::{Device, Tensor};
use prost::Message;
use thermal_edge::export::{
    export_f32, model_f32, ExportOptions, INPUT_FRAMES, INPUT_MEMORY, OUTPUT_PRED, OUTPUT_QUERIES,
    OUTPUT_READ_WEIGHTS,
};
use thermal_edge::model::config::Upsample;
use thermal_edge::model::{BlockVariant, Mnad, ModelConfig, ParamStore};
use thermal_edge::rng::Rng;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::{tvec, Framework, InferenceModelExt, IntoRunnable, IntoTValue};

const TOL: f32 = 1e-4;

/// Gives every batch norm non-trivial statistics and affine terms, and every layer norm a
/// non-trivial affine, so that folding mistakes show.
fn perturb_norms(store: &ParamStore, seed: u64) {
    let mut r = Rng::new(seed);
    for (name, t) in store.tensors() {
        let parent = name.rsplit('.').nth(1).unwrap_or("");
        let leaf = name.rsplit('.').next().unwrap_or("");
        let is_bn = parent.starts_with("bn");
        let is_ln = parent.starts_with("ln");
        if !(is_bn || is_ln) {
            continue;
        }
        let n = t.elem_count();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                let u = r.f32();
                match leaf {
                    "weight" => 0.6 + 0.8 * u,
                    "bias" => 0.4 * u - 0.2,
                    "running_mean" => 0.2 * u - 0.1,
                    "running_var" => 0.5 + u,
                    _ => panic!("unexpected norm tensor {name}"),
                }
            })
            .collect();
        let v = Tensor::from_vec(values, n, &Device::Cpu).unwrap();
        store.var(&name).unwrap().set(&v).unwrap();
    }
}

fn random_input(cfg: &ModelConfig, batch: usize, seed: u64) -> (Vec<usize>, Vec<f32>) {
    let shape = vec![batch, cfg.input_channels(), cfg.height, cfg.width];
    let mut r = Rng::new(seed);
    let data = (0..shape.iter().product::<usize>())
        .map(|_| r.f32() * 2.0 - 1.0)
        .collect();
    (shape, data)
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Max abs differences (pred, queries, read_weights) between candle and tract on `cfg`, with
/// a batch-1 graph, or with a symbolic-batch graph run on `batch` frames.
fn compare(cfg: &ModelConfig, seed: u64, symbolic: Option<usize>) -> [f32; 3] {
    let batch = symbolic.unwrap_or(1);
    let store = ParamStore::new(Device::Cpu, seed);
    let net = Mnad::new(&store, cfg).unwrap();
    perturb_norms(&store, seed + 1);
    let (shape, data) = random_input(cfg, batch, seed + 2);
    let x = Tensor::from_vec(data.clone(), shape.as_slice(), &Device::Cpu).unwrap();
    let fwd = net.forward(&x, false).unwrap();
    let items = net.memory.snapshot().unwrap();
    let (m, d) = items.dims2().unwrap();

    let opts = ExportOptions {
        symbolic_batch: symbolic.is_some(),
    };
    let bytes = model_f32(&net, &store, opts).unwrap().encode_to_vec();
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let frames = tract_onnx::prelude::Tensor::from_shape(&shape, &data).unwrap();
    let memory = tract_onnx::prelude::Tensor::from_shape(&[m, d], &to_vec(&items)).unwrap();
    let out = model
        .run(tvec!(frames.into_tvalue(), memory.into_tvalue()))
        .unwrap();
    assert_eq!(out.len(), 3);
    let (qh, qw) = cfg.query_size();
    let expected_shapes = [
        vec![batch, cfg.channels, cfg.height, cfg.width],
        vec![batch * qh * qw, d],
        vec![batch * qh * qw, m],
    ];
    let theirs = [&fwd.pred, &fwd.queries, &fwd.read.weights];
    let mut diffs = [0f32; 3];
    for i in 0..3 {
        assert_eq!(out[i].shape(), expected_shapes[i].as_slice(), "output {i}");
        let got: Vec<f32> = out[i]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        diffs[i] = max_diff(&got, &to_vec(theirs[i]));
    }
    diffs
}

fn check(label: &str, cfg: &ModelConfig, seed: u64) {
    check_batch(label, cfg, seed, None);
}

fn check_batch(label: &str, cfg: &ModelConfig, seed: u64, symbolic: Option<usize>) {
    let d = compare(cfg, seed, symbolic);
    eprintln!(
        "{label}: max |candle − tract| pred {:.2e}, queries {:.2e}, read_weights {:.2e}",
        d[0], d[1], d[2]
    );
    assert!(d.iter().all(|v| *v <= TOL), "{label}: {d:?} exceeds {TOL}");
}

fn tiny(variant: BlockVariant) -> ModelConfig {
    ModelConfig::preset("tiny").unwrap().with_block(variant)
}

#[test]
fn tract_matches_candle_paper_block() {
    check("tiny/paper", &tiny(BlockVariant::Paper), 11);
}

#[test]
fn tract_matches_candle_reference_code_block() {
    check(
        "tiny/reference-code",
        &tiny(BlockVariant::ReferenceCode),
        12,
    );
}

#[test]
fn tract_matches_candle_sspcab_block() {
    check("tiny/sspcab", &tiny(BlockVariant::Sspcab), 13);
}

#[test]
fn tract_matches_candle_plain_conv_block() {
    check("tiny/none", &tiny(BlockVariant::None), 14);
}

#[test]
fn tract_matches_candle_without_bn_after_block() {
    let mut cfg = tiny(BlockVariant::Paper);
    cfg.block.keep_bn_after = false;
    check("tiny/paper/no-bn-after", &cfg, 15);
}

#[test]
fn tract_matches_candle_nearest_conv_upsampling() {
    let mut cfg = tiny(BlockVariant::Paper);
    cfg.upsample = Upsample::NearestConv;
    check("tiny/paper/nearest-conv", &cfg, 16);
}

#[test]
fn tract_matches_candle_reconstruction_mode() {
    check(
        "tiny/paper/reconstruction",
        &tiny(BlockVariant::Paper).reconstruction(),
        17,
    );
}

#[test]
fn tract_matches_candle_edge_s_paper_block() {
    check("edge-s/paper", &ModelConfig::preset("edge-s").unwrap(), 18);
}

#[test]
fn symbolic_batch_graph_matches_candle_on_three_frames() {
    check_batch(
        "tiny/paper/batch-3",
        &tiny(BlockVariant::Paper),
        19,
        Some(3),
    );
    check_batch(
        "tiny/sspcab/batch-3",
        &tiny(BlockVariant::Sspcab),
        20,
        Some(3),
    );
}

#[test]
fn exported_graph_has_the_interface_and_no_batch_norm() {
    let cfg = tiny(BlockVariant::Paper);
    let store = ParamStore::new(Device::Cpu, 3);
    let net = Mnad::new(&store, &cfg).unwrap();
    let bytes = export_f32(&net, &store).unwrap();
    let model = ModelProto::decode(bytes.as_slice()).unwrap();
    assert_eq!(model.ir_version, 8);
    assert_eq!(model.opset_import[0].version, 17);
    let graph = model.graph.unwrap();
    let names = |v: &[tract_onnx::pb::ValueInfoProto]| -> Vec<String> {
        v.iter().map(|i| i.name.clone()).collect()
    };
    assert_eq!(names(&graph.input), [INPUT_FRAMES, INPUT_MEMORY]);
    assert_eq!(
        names(&graph.output),
        [OUTPUT_PRED, OUTPUT_QUERIES, OUTPUT_READ_WEIGHTS]
    );
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
    assert!(!ops.contains(&"BatchNormalization"), "{ops:?}");
    // The memory is state the runtime owns: an input, never an initializer.
    assert!(graph.initializer.iter().all(|t| t.name != INPUT_MEMORY));
    // Every op is one tract supports.
    for op in &ops {
        assert!(
            [
                "Conv",
                "ConvTranspose",
                "Relu",
                "MaxPool",
                "Mul",
                "ReduceSum",
                "Sqrt",
                "Max",
                "Div",
                "Transpose",
                "Reshape",
                "MatMul",
                "Softmax",
                "Concat",
                "GlobalAveragePool",
                "Add",
                "LayerNormalization",
                "ReduceMean",
                "Sigmoid",
                "Tanh",
            ]
            .contains(op),
            "unexpected op {op}"
        );
    }
    assert_eq!(ops.iter().filter(|o| **o == "ConvTranspose").count(), 3);
    assert_eq!(ops.iter().filter(|o| **o == "Tanh").count(), 1);
    // With k' = 1 the masked convolution is a 2×2 kernel dilated to the corners of the
    // (2k' + 2d + 1)² window: 4 taps, not 25 (the parity tests show it computes the same).
    assert_eq!(cfg.block.k_prime, 1);
    let ints = |n: &tract_onnx::pb::NodeProto, a: &str| -> Vec<i64> {
        n.attribute
            .iter()
            .find(|x| x.name == a)
            .map(|x| x.ints.clone())
            .unwrap_or_default()
    };
    let dilated: Vec<_> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Conv" && ints(n, "dilations") != [1, 1])
        .collect();
    assert_eq!(dilated.len(), 1, "one dilated Conv: the masked convolution");
    let span = 2 * (cfg.block.k_prime + cfg.block.dilation) as i64;
    assert_eq!(ints(dilated[0], "kernel_shape"), [2, 2]);
    assert_eq!(ints(dilated[0], "dilations"), [span, span]);
    assert_eq!(ints(dilated[0], "pads"), [span / 2; 4]);
}

#[test]
fn edge_cli_export_writes_a_model_tract_loads() {
    let d = tempfile::tempdir().unwrap();
    let ckpt = d.path().join("epoch-0001");
    std::fs::create_dir_all(&ckpt).unwrap();
    let cfg = tiny(BlockVariant::Sspcab);
    let store = ParamStore::new(Device::Cpu, 4);
    let net = Mnad::new(&store, &cfg).unwrap();
    store.save(&ckpt.join("model.safetensors")).unwrap();
    std::fs::write(
        ckpt.join("config.json"),
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();
    std::fs::write(d.path().join("latest"), "epoch-0001\n").unwrap();
    // Calibration footage: 12 frames of a warm blob drifting over a gradient, 8-bit values.
    let (h, w, n) = (cfg.height, cfg.width, 12);
    let px: Vec<u16> = (0..n * h * w)
        .map(|i| {
            let (t, y, x) = (i / (h * w), (i / w) % h, i % w);
            let r2 = (x as f32 - 4.0 - t as f32).powi(2) + (y as f32 - h as f32 / 2.0).powi(2);
            (40.0 + 3.0 * y as f32 + 150.0 * (-r2 / 20.0).exp()) as u16
        })
        .collect();
    let calib = d.path().join("calib.npy");
    thermal_edge::source::npy::write_npy(
        &calib,
        &thermal_edge::source::npy::encode_u16(&[n, h, w], &px),
    )
    .unwrap();
    let out_dir = d.path().join("bundle");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-cli"))
        .args(["export", "--checkpoint"])
        .arg(d.path())
        .arg("--calib")
        .arg(&calib)
        .args([
            "--calib-windows",
            "4",
            "--refine-windows",
            "0",
            "--parity-windows",
            "4",
        ])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(out_dir.join("model.onnx")).unwrap();
    assert_eq!(bytes, export_f32(&net, &store).unwrap());
    tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .unwrap()
        .into_optimized()
        .unwrap();

    // A folder without a checkpoint fails with exit code 1 and names the folder.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-cli"))
        .args(["export", "--checkpoint"])
        .arg(&out_dir)
        .arg("--calib")
        .arg(&calib)
        .arg("--out")
        .arg(d.path().join("x"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bundle"), "{err}");
}
