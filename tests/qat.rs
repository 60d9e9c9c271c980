//! Quantization-aware training: the fake-quantized forward equals the eval forward when
//! nothing is rounded (so the folding and the sites are right), stays close to it with 8-bit
//! weights and activations, passes gradients to every trainable tensor, and a short QAT run
//! writes a loadable, exportable checkpoint with a range for every activation site.

use std::process::Command;

use candle_core::{Device, Tensor};
use thermal_edge::model::config::Upsample;
use thermal_edge::model::data::{Clip, FrameSet};
use thermal_edge::model::qat::{self, QatOptions, QatState, QuantRanges, RangePhase};
use thermal_edge::model::train::{self, loss, Quiet, TrainOptions, TrainState};
use thermal_edge::model::{BlockVariant, Mnad, ModelConfig, ParamStore};
use thermal_edge::rng::Rng;

fn random_input(cfg: &ModelConfig, b: usize, seed: u64) -> Tensor {
    let mut r = Rng::new(seed);
    let n = b * cfg.input_channels() * cfg.height * cfg.width;
    let v: Vec<f32> = (0..n).map(|_| r.f32() * 2.0 - 1.0).collect();
    Tensor::from_vec(
        v,
        (b, cfg.input_channels(), cfg.height, cfg.width),
        &Device::Cpu,
    )
    .unwrap()
}

/// Non-trivial batch-norm statistics and affine terms, so that folding mistakes show.
fn perturb_norms(store: &ParamStore, seed: u64) {
    let mut r = Rng::new(seed);
    for (name, t) in store.tensors() {
        let parent = name.rsplit('.').nth(1).unwrap_or("");
        let leaf = name.rsplit('.').next().unwrap_or("");
        if !parent.starts_with("bn") {
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

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The configurations the tests cover: every block variant, both upsamplings, both modes.
fn configs() -> Vec<(String, ModelConfig)> {
    let mut v = Vec::new();
    for variant in BlockVariant::ALL {
        let mut cfg = ModelConfig::preset("tiny").unwrap().with_block(variant);
        // Width 0.25 gives SSPCAB's squeeze layer 2 units (see tests/model.rs).
        cfg.width_mult = 0.25;
        v.push((format!("{variant:?}"), cfg));
    }
    let base = ModelConfig::preset("tiny").unwrap();
    let mut nearest = base.clone();
    nearest.upsample = Upsample::NearestConv;
    v.push(("nearest-conv".into(), nearest));
    v.push(("reconstruction".into(), base.clone().reconstruction()));
    let mut no_bn = base;
    no_bn.block.keep_bn_after = false;
    v.push(("no-bn-after-block".into(), no_bn));
    v
}

#[test]
fn unrounded_qat_forward_equals_the_eval_forward() {
    for (label, cfg) in configs() {
        let store = ParamStore::new(Device::Cpu, 3);
        let net = Mnad::new(&store, &cfg).unwrap();
        perturb_norms(&store, 4);
        let x = random_input(&cfg, 2, 1);
        let mut q = QatState::new();
        q.quantize_weights = false;
        q.quantize_acts = false;
        let a = net.forward_qat(&x, &q).unwrap();
        let b = net.forward(&x, false).unwrap();
        for (what, p, r) in [
            ("pred", &a.pred, &b.pred),
            ("queries", &a.queries, &b.queries),
        ] {
            let d = to_vec(p)
                .iter()
                .zip(to_vec(r))
                .map(|(u, v)| (u - v).abs())
                .fold(0f32, f32::max);
            assert!(d < 1e-4, "{label}: {what} differs by {d}");
        }
        // Calibration saw exactly the documented sites, and ReLU'd outputs start at 0.
        let ranges = q.ranges().ranges;
        let want = qat::sites(&cfg);
        assert_eq!(
            ranges
                .keys()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>(),
            want.iter().cloned().collect(),
            "{label}"
        );
        assert_eq!(want.len(), 2 * qat::quantized_convs(&cfg).len());
        for (site, [lo, hi]) in &ranges {
            assert!(lo <= hi, "{label}: {site}");
            let relu_free = site == "enc.b4.c2.out" || site == "dec.gen.c3.out";
            if site.ends_with(".out") && !relu_free {
                assert!(*lo >= 0.0, "{label}: {site} after a ReLU has lo {lo}");
            }
        }
    }
}

#[test]
fn fake_quantized_forward_is_close_to_the_f32_forward() {
    let cfg = ModelConfig::preset("tiny").unwrap();
    let store = ParamStore::new(Device::Cpu, 5);
    let net = Mnad::new(&store, &cfg).unwrap();
    perturb_norms(&store, 6);
    let x = random_input(&cfg, 2, 2);
    let q = QatState::new();
    net.forward_qat(&x, &q).unwrap(); // calibrate on this input
                                      // Widen every range by 10 %: nothing clips, the step grows a little. (Measured: mean
                                      // |Δ| 6e-4, max 2e-3 at a mean |y| of 0.32.)
    let mut r = q.ranges();
    for v in r.ranges.values_mut() {
        let w = 0.05 * (v[1] - v[0]);
        *v = [v[0] - w, v[1] + w];
    }
    let q = QatState::with_ranges(&r);
    assert_eq!(q.phase(), RangePhase::Frozen);
    let a = to_vec(&net.forward_qat(&x, &q).unwrap().pred);
    let b = to_vec(&net.forward(&x, false).unwrap().pred);
    let mean = a.iter().zip(&b).map(|(u, v)| (u - v).abs()).sum::<f32>() / a.len() as f32;
    let max = a
        .iter()
        .zip(&b)
        .map(|(u, v)| (u - v).abs())
        .fold(0f32, f32::max);
    let spread = b.iter().map(|v| v.abs()).sum::<f32>() / b.len() as f32;
    assert!(
        mean < 0.02 * spread && max < 0.02,
        "int8 forward too far from f32: mean {mean}, max {max}, output mean |y| {spread}"
    );
    assert!(mean > 0.0, "nothing was quantized");
    // Frozen ranges do not move; a site without one is an error that names it.
    assert_eq!(q.ranges(), r);
    let mut missing = r.clone();
    missing.ranges.remove("dec.gen.c1.in");
    let e = net
        .forward_qat(&x, &QatState::with_ranges(&missing))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("dec.gen.c1.in"), "{e}");
}

#[test]
fn every_trainable_tensor_gets_a_gradient_in_qat_mode() {
    for (label, cfg) in configs() {
        let store = ParamStore::new(Device::Cpu, 3);
        let net = Mnad::new(&store, &cfg).unwrap();
        let x = random_input(&cfg, 2, 1);
        let y = random_input(&cfg, 2, 2).narrow(1, 0, 1).unwrap();
        let q = QatState::new();
        net.forward_qat(&x, &q).unwrap();
        q.set_phase(RangePhase::Ema);
        let fwd = net.forward_qat(&x, &q).unwrap();
        let (total, _) = loss(&net, &fwd, &y).unwrap();
        let grads = total.backward().unwrap();
        for (name, var) in store.params() {
            let g = grads
                .get(&var)
                .unwrap_or_else(|| panic!("{label}: no gradient for {name}"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{label}: zero gradient for {name}"
            );
        }
    }
}

/// A 32×32 clip of a warm blob moving on a textured background.
fn moving_blob(n: usize) -> FrameSet {
    let (h, w) = (32, 32);
    let mut frames = Vec::with_capacity(n * h * w);
    for t in 0..n {
        let (cx, cy) = (4.0 + (t % 24) as f32, 10.0 + 6.0 * ((t as f32) * 0.3).sin());
        for y in 0..h {
            for x in 0..w {
                let bg = -0.6 + 0.2 * ((x / 4 + y / 4) % 2) as f32;
                let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
                frames.push(bg + 1.2 * (-d2 / 8.0).exp());
            }
        }
    }
    FrameSet {
        height: h,
        width: w,
        clips: vec![Clip {
            name: "blob".into(),
            frames,
            n,
        }],
    }
}

/// A freshly initialised checkpoint of `cfg` in `dir` (QAT only needs the weights and config).
fn fresh_checkpoint(cfg: &ModelConfig, dir: &std::path::Path) {
    let store = ParamStore::new(Device::Cpu, 1);
    Mnad::new(&store, cfg).unwrap();
    perturb_norms(&store, 2);
    let state = TrainState {
        epoch: 0,
        global_step: 0,
        rng: [1, 2, 3, 4],
        options: TrainOptions::default(),
        history: Vec::new(),
    };
    train::save_checkpoint(dir, &store, cfg, None, &state).unwrap();
}

#[test]
fn short_qat_run_writes_a_checkpoint_with_every_range() {
    let cfg = ModelConfig::preset("tiny").unwrap();
    let d = tempfile::tempdir().unwrap();
    let (from, out) = (d.path().join("trained"), d.path().join("qat"));
    fresh_checkpoint(&cfg, &from);
    let opts = QatOptions {
        train: TrainOptions {
            epochs: 2,
            batch_size: 2,
            lr: 1e-4,
            seed: 3,
            val_fraction: 0.15,
            max_steps_per_epoch: Some(5),
        },
        calibration_batches: 2,
        ..QatOptions::default()
    };
    let (reports, ranges) = qat::train_qat(
        &from,
        moving_blob(40),
        &opts,
        &out,
        &Device::Cpu,
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert_eq!(r.steps, 5);
        assert!(r.loss.total.is_finite() && r.loss.total > 0.0, "{r:?}");
        assert!(r.val_psnr.unwrap().is_finite());
    }
    // quant.json: the scheme and a finite range for every site.
    let saved = QuantRanges::load(&out)
        .unwrap()
        .expect("quant.json written");
    assert_eq!(saved, ranges);
    assert_eq!(saved.scheme, "u8s8-per-channel-v1");
    let keys: Vec<String> = saved.ranges.keys().cloned().collect();
    let mut want = qat::sites(&cfg);
    want.sort();
    assert_eq!(keys, want);
    assert!(saved
        .ranges
        .values()
        .all(|r| r[0].is_finite() && r[1].is_finite() && r[0] <= r[1]));
    // A normal checkpoint: loads with load_model, exports with the f32 exporter; the weights
    // moved, the batch-norm statistics did not.
    let (store, net) = train::load_model(&out, &Device::Cpu).unwrap();
    let (before, _) = train::load_model(&from, &Device::Cpu).unwrap();
    let (a, b) = (store.tensors(), before.tensors());
    assert_eq!(
        to_vec(&a["enc.b1.bn1.running_var"]),
        to_vec(&b["enc.b1.bn1.running_var"])
    );
    assert_ne!(
        to_vec(&a["enc.b1.c1.weight"]),
        to_vec(&b["enc.b1.c1.weight"])
    );
    for f in ["config.json", "model.safetensors", "state.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let onnx = thermal_edge::export::export_checkpoint_f32(&out).unwrap();
    assert!(!onnx.is_empty());
    // The saved ranges drive a frozen fake-quantized forward of the saved model.
    let q = QatState::with_ranges(&saved);
    let p = net.forward_qat(&random_input(&cfg, 1, 8), &q).unwrap().pred;
    assert!(to_vec(&p).iter().all(|v| v.is_finite()));
}

#[test]
fn cli_qat_needs_a_checkpoint() {
    let cli = || Command::new(env!("CARGO_BIN_EXE_edge-cli"));
    let d = tempfile::tempdir().unwrap();
    let out = cli()
        .args(["train", "--qat", "--data"])
        .arg(d.path())
        .arg("--out")
        .arg(d.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--qat needs --from"), "{err}");
    let out = cli()
        .args(["train", "--from"])
        .arg(d.path())
        .arg("--data")
        .arg(d.path())
        .arg("--out")
        .arg(d.path().join("run"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--qat"));
}
