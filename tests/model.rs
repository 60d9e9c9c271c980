//! The model's contract: gradients reach every trainable tensor (guarding candle's fused-op
//! pitfall), output shapes for every preset and mode, bit-identical checkpoint reloads, and a
//! loss that falls when training on a small generated clip.

use candle_core::{Device, Tensor};
use thermal_edge::model::data::{Clip, FrameSet};
use thermal_edge::model::train::{self, loss, Quiet, TrainOptions};
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

#[test]
fn every_trainable_tensor_gets_a_gradient() {
    for variant in BlockVariant::ALL {
        for recon in [false, true] {
            let mut cfg = ModelConfig::preset("tiny").unwrap().with_block(variant);
            // Width 0.25 gives SSPCAB's squeeze layer 2 units; with 1 unit a dead ReLU at
            // initialisation would legitimately zero its gradient.
            cfg.width_mult = 0.25;
            if recon {
                cfg = cfg.reconstruction();
            }
            let store = ParamStore::new(Device::Cpu, 3);
            let net = Mnad::new(&store, &cfg).unwrap();
            let x = random_input(&cfg, 2, 1);
            let y = random_input(&cfg, 2, 2).narrow(1, 0, 1).unwrap();
            let fwd = net.forward(&x, true).unwrap();
            let (total, _) = loss(&net, &fwd, &y).unwrap();
            let grads = total.backward().unwrap();
            for (name, var) in store.params() {
                let g = grads
                    .get(&var)
                    .unwrap_or_else(|| panic!("{variant:?} recon={recon}: no gradient for {name}"));
                let norm = g
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(
                    norm > 0.0 && norm.is_finite(),
                    "{variant:?} recon={recon}: zero gradient for {name}"
                );
            }
        }
    }
}

#[test]
fn output_shapes_for_every_preset_and_mode() {
    for preset in ModelConfig::PRESETS {
        for recon in [false, true] {
            let mut cfg = ModelConfig::preset(preset).unwrap();
            if recon {
                cfg = cfg.reconstruction();
            }
            let store = ParamStore::new(Device::Cpu, 1);
            let net = Mnad::new(&store, &cfg).unwrap();
            let fwd = net.forward(&random_input(&cfg, 1, 4), false).unwrap();
            assert_eq!(
                fwd.pred.dims(),
                &[1, 1, cfg.height, cfg.width],
                "{preset} recon={recon}"
            );
            let (qh, qw) = cfg.query_size();
            assert_eq!(fwd.queries.dims(), &[qh * qw, cfg.memory_dim()]);
            assert_eq!(fwd.read.weights.dims(), &[qh * qw, cfg.memory_items]);
            let p = fwd.pred.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(
                p.iter().all(|v| (-1.0..=1.0).contains(v)),
                "tanh output in [-1, 1]"
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

#[test]
fn loss_falls_and_checkpoints_reload_bit_identically() {
    let cfg = ModelConfig::preset("tiny").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = TrainOptions {
        epochs: 3,
        batch_size: 4,
        lr: 2e-3,
        seed: 7,
        val_fraction: 0.15,
        max_steps_per_epoch: Some(14),
    };
    let reports = train::train(
        &cfg,
        moving_blob(80),
        &opts,
        dir.path(),
        false,
        &Device::Cpu,
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(reports.len(), 3);
    let (first, last) = (reports[0].loss.total, reports[2].loss.total);
    assert!(last < 0.7 * first, "loss did not fall: {first} -> {last}");
    let (p1, p3) = (reports[0].val_psnr.unwrap(), reports[2].val_psnr.unwrap());
    assert!(p3 > p1, "held-out PSNR did not rise: {p1} -> {p3}");

    // Reload the last checkpoint twice: identical outputs, and identical to the live weights.
    let ck = train::latest_checkpoint(dir.path()).unwrap();
    assert!(ck.ends_with("epoch-0003"));
    let (_, a) = train::load_model(&ck, &Device::Cpu).unwrap();
    let (_, b) = train::load_model(&ck, &Device::Cpu).unwrap();
    let x = random_input(&cfg, 2, 9);
    let ya = a
        .forward(&x, false)
        .unwrap()
        .pred
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let yb = b
        .forward(&x, false)
        .unwrap()
        .pred
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(ya, yb);
    assert_eq!(
        a.memory.items().to_vec2::<f32>().unwrap(),
        b.memory.items().to_vec2::<f32>().unwrap()
    );

    // Resume runs the remaining epochs from the saved state, like one uninterrupted run.
    let opts5 = TrainOptions {
        epochs: 4,
        ..opts.clone()
    };
    let resumed = train::train(
        &cfg,
        moving_blob(80),
        &opts5,
        dir.path(),
        true,
        &Device::Cpu,
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(resumed.len(), 4);
    assert_eq!(resumed[2].loss, reports[2].loss);
}

#[test]
fn training_is_deterministic_on_cpu() {
    let cfg = ModelConfig::preset("tiny").unwrap();
    let opts = TrainOptions {
        epochs: 1,
        batch_size: 2,
        lr: 1e-3,
        seed: 3,
        val_fraction: 0.0,
        max_steps_per_epoch: Some(4),
    };
    let run = |d: &std::path::Path| {
        train::train(
            &cfg,
            moving_blob(30),
            &opts,
            d,
            false,
            &Device::Cpu,
            &mut Quiet,
        )
        .unwrap()
    };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert_eq!(run(d1.path())[0].loss, run(d2.path())[0].loss);
    let w1 = std::fs::read(d1.path().join("epoch-0001/model.safetensors")).unwrap();
    let w2 = std::fs::read(d2.path().join("epoch-0001/model.safetensors")).unwrap();
    assert!(w1 == w2, "weights differ between identical runs");
}

#[test]
fn corrupt_checkpoints_give_clear_errors() {
    let cfg = ModelConfig::preset("tiny").unwrap();
    let d = tempfile::tempdir().unwrap();
    let opts = TrainOptions {
        epochs: 1,
        batch_size: 2,
        lr: 1e-3,
        seed: 3,
        val_fraction: 0.0,
        max_steps_per_epoch: Some(1),
    };
    train::train(
        &cfg,
        moving_blob(20),
        &opts,
        d.path(),
        false,
        &Device::Cpu,
        &mut Quiet,
    )
    .unwrap();
    let ck = d.path().join("epoch-0001");
    std::fs::write(ck.join("config.json"), "{").unwrap();
    let e = train::load_model(&ck, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("config.json") && e.contains("not a model config"),
        "{e}"
    );
    let mut other = ModelConfig::preset("tiny")
        .unwrap()
        .with_block(BlockVariant::Sspcab);
    other.preset = None;
    std::fs::write(ck.join("config.json"), serde_json::to_vec(&other).unwrap()).unwrap();
    let e = train::load_model(&ck, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("model.safetensors"), "{e}");
}

/// candle's backward for the stride-2 transposed convolution (with output padding) agrees with
/// finite differences, so the decoder trains on true gradients.
#[test]
fn transposed_conv_gradients_match_finite_differences() {
    use candle_core::Var;
    let dev = Device::Cpu;
    let mut r = Rng::new(11);
    let mut rand = |n: usize| -> Vec<f64> { (0..n).map(|_| r.f64() * 2.0 - 1.0).collect() };
    let x = Var::from_vec(rand(2 * 3 * 4 * 5), (2, 3, 4, 5), &dev).unwrap();
    let w = Var::from_vec(rand(3 * 2 * 3 * 3), (3, 2, 3, 3), &dev).unwrap();
    let weights = Tensor::from_vec(rand(2 * 2 * 8 * 10), (2, 2, 8, 10), &dev).unwrap();
    let f = |x: &Tensor, w: &Tensor| -> Tensor {
        x.conv_transpose2d(w, 1, 1, 2, 1)
            .unwrap()
            .mul(&weights)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let grads = f(x.as_tensor(), w.as_tensor()).backward().unwrap();
    for (var, g) in [(&x, grads.get(&x).unwrap()), (&w, grads.get(&w).unwrap())] {
        let base = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for i in (0..base.len()).step_by(7) {
            let eps = 1e-6;
            let mut plus = base.clone();
            plus[i] += eps;
            let mut minus = base.clone();
            minus[i] -= eps;
            let shape = var.as_tensor().shape().clone();
            let eval = |v: Vec<f64>| -> f64 {
                let t = Tensor::from_vec(v, shape.clone(), &dev).unwrap();
                let out = if std::ptr::eq(var, &x) {
                    f(&t, w.as_tensor())
                } else {
                    f(x.as_tensor(), &t)
                };
                out.to_scalar::<f64>().unwrap()
            };
            let numeric = (eval(plus) - eval(minus)) / (2.0 * eps);
            assert!(
                (numeric - g[i]).abs() < 1e-6,
                "element {i}: numeric {numeric} vs autograd {}",
                g[i]
            );
        }
    }
}
