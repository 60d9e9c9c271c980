//! The int8 QOperator export: the sub-pixel form of the transposed convolutions is exact in
//! f32, calibration chooses sane ranges, tract runs the int8 graph with integer convolutions
//! only, and its prediction follows the f32 model's.

use candle_core::Device;
use prost::Message;
use thermal_edge::export::quant::{
    calibrate, chosen_ranges, export_int8, int8_output_error, memory_items, quant_params,
    quantize_u8, refine_by_output, spread_windows, weight_scales, window_input, CalibOptions,
    Observer, RangeMethod,
};
use thermal_edge::export::{export_f32, graph::build_graph_with, graph::GraphMode};
use thermal_edge::model::data::{Clip, FrameSet};
use thermal_edge::model::{Mnad, ModelConfig, ParamStore};
use tract_onnx::prelude::{
    tvec, DatumType, Framework, InferenceModelExt, IntoRunnable, IntoTValue, Tensor,
};

/// Smooth moving blobs on a gradient, in [-1, 1]: structured like normalised thermal frames.
fn frames(cfg: &ModelConfig, clips: usize, n: usize) -> FrameSet {
    let (h, w) = (cfg.height, cfg.width);
    let mut set = FrameSet::new(h, w);
    for c in 0..clips {
        let mut frames = Vec::with_capacity(n * h * w);
        for t in 0..n {
            let cx = (t as f32 * 0.7 + c as f32 * 5.0) % w as f32;
            let cy = h as f32 * (0.3 + 0.1 * c as f32);
            for y in 0..h {
                for x in 0..w {
                    let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
                    let v = -0.6 + 0.5 * y as f32 / h as f32 + 0.9 * (-d2 / 12.0).exp();
                    frames.push(v.clamp(-1.0, 1.0));
                }
            }
        }
        set.clips.push(Clip {
            name: format!("clip{c}"),
            frames,
            n,
        });
    }
    set
}

fn tiny(seed: u64) -> (ParamStore, Mnad, ModelConfig) {
    let cfg = ModelConfig::preset("tiny").unwrap();
    let store = ParamStore::new(Device::Cpu, seed);
    let net = Mnad::new(&store, &cfg).unwrap();
    (store, net, cfg)
}

fn run(bytes: &[u8], cfg: &ModelConfig, x: &[f32], memory: &[f32]) -> Vec<Vec<f32>> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let xt = Tensor::from_shape(&[1, cfg.input_channels(), cfg.height, cfg.width], x).unwrap();
    let mt = Tensor::from_shape(&[cfg.memory_items, cfg.memory_dim()], memory).unwrap();
    let out = model
        .run(tvec!(xt.into_tvalue(), mt.into_tvalue()))
        .unwrap();
    out.iter()
        .map(|v| {
            v.to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect()
        })
        .collect()
}

fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let mb = b.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt()
}

#[test]
fn quantization_arithmetic() {
    // Range widened to include zero; zero exact.
    let (s, zp) = quant_params(0.5, 2.55);
    assert_eq!((s, zp), (0.01, 0));
    let (s, zp) = quant_params(-1.0, 3.0);
    assert!((s - 4.0 / 255.0).abs() < 1e-9);
    assert_eq!(zp, 64); // 63.75 rounded
    assert_eq!(quantize_u8(1.0, s, zp), 64 + 64); // 63.75 -> 64
    assert_eq!(quantize_u8(0.0, s, zp), zp);
    assert_eq!(quantize_u8(5.0, s, zp), 255);
    assert_eq!(quantize_u8(-5.0, s, zp), 0);
    // Degenerate range: a usable scale.
    assert_eq!(quant_params(0.0, 0.0), (1.0, 0));
    // Per-channel scales along axis 0 and 1.
    let w = [1.0, -2.54, 0.0, 0.0, 0.5, 0.25];
    assert_eq!(
        weight_scales(&w, &[3, 2], 0),
        vec![2.54 / 127.0, 1.0, 0.5 / 127.0]
    );
    assert_eq!(
        weight_scales(&w, &[1, 3, 2], 1),
        vec![2.54 / 127.0, 1.0, 0.5 / 127.0]
    );
}

#[test]
fn observer_prefers_clipping_outliers() {
    // 10 000 values in [0, 1] and one outlier at 100: min-max wastes the range on it.
    let mut o = Observer::new(1 << 16, 1);
    let mut v: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
    v.push(100.0);
    o.observe(&v);
    let r = o.choose("x");
    assert_ne!(r.method, RangeMethod::MinMax, "{r:?}");
    assert!(r.hi < 5.0, "{r:?}");
    assert!(r.mse < o.mse(0.0, 100.0));
    // Uniform values without outliers: the chosen range covers them.
    let mut o = Observer::new(1 << 16, 1);
    o.observe(&v[..10_000]);
    let r = o.choose("y");
    assert!(r.hi > 0.95 && r.lo == 0.0, "{r:?}");
}

#[test]
fn subpixel_transposed_conv_is_exact_in_f32() {
    let (store, net, cfg) = tiny(3);
    let set = frames(&cfg, 1, cfg.t_length);
    let x = window_input(&set, &cfg, (0, 0));
    let memory = memory_items(&store).unwrap();
    let f32_model = export_f32(&net, &store).unwrap();
    let (b, _) = build_graph_with(&net, &store, GraphMode::Calibrate).unwrap();
    let sub = b.finish("sub", "").encode_to_vec();
    let a = run(&f32_model, &cfg, &x, &memory);
    let c = run(&sub, &cfg, &x, &memory);
    for (u, v) in a.iter().zip(&c) {
        let d = u
            .iter()
            .zip(v)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-5, "sub-pixel form differs by {d}");
    }
}

#[test]
fn int8_model_runs_integer_convolutions_and_follows_f32() {
    let (store, net, cfg) = tiny(5);
    let set = frames(&cfg, 3, 24);
    let windows = spread_windows(&set, cfg.t_length, 16);
    let mut cal = calibrate(
        &net,
        &store,
        &set,
        &windows,
        CalibOptions::default(),
        |_, _| {},
    )
    .unwrap();
    // Choosing by the output error never ends worse than the per-tensor choice it starts from.
    let inputs: Vec<Vec<f32>> = windows[..3]
        .iter()
        .map(|&w| window_input(&set, &cfg, w))
        .collect();
    let before = int8_output_error(&net, &store, &chosen_ranges(&cal), &inputs).unwrap();
    let after = refine_by_output(&net, &store, &mut cal, &inputs, |_, _| {}).unwrap();
    eprintln!("int8 output error: per-tensor ranges {before:.3e}, chosen by output {after:.3e}");
    assert!(after <= before, "{after} > {before}");
    let check = int8_output_error(&net, &store, &chosen_ranges(&cal), &inputs).unwrap();
    assert!(
        (check - after).abs() <= 1e-12 * after.max(1.0),
        "{check} vs {after}"
    );
    let ranges = chosen_ranges(&cal);
    // Every conv has an input and an output site.
    assert!(ranges.iter().any(|r| r.name == "enc.b1.c1.in"));
    assert!(ranges.iter().any(|r| r.name == "dec.gen.block.masked.out"));
    assert!(ranges.iter().any(|r| r.name == "dec.up2.t.out"));
    for r in &ranges {
        assert!(r.lo <= 0.0 && r.hi >= 0.0 && r.hi > r.lo, "{r:?}");
        if r.name.ends_with(".out") && !r.name.contains("c3") && !r.name.contains("b4.c2") {
            assert_eq!(r.lo, 0.0, "ReLU output {r:?}");
        }
    }
    let int8 = export_int8(&net, &store, &ranges).unwrap();

    // Integer kernels: after decluttering, every convolution takes uint8 input.
    let model = tract_onnx::onnx()
        .model_for_read(&mut &int8[..])
        .unwrap()
        .into_typed()
        .unwrap()
        .into_decluttered()
        .unwrap();
    let mut convs = 0;
    for node in model.nodes() {
        if node.op.name().contains("Conv") {
            convs += 1;
            let fact = model.outlet_fact(node.inputs[0]).unwrap();
            assert!(
                matches!(fact.datum_type.unquantized(), DatumType::U8 | DatumType::I8),
                "{} ({}) runs on {:?}",
                node.name,
                node.op.name(),
                fact.datum_type
            );
        }
    }
    // 8 encoder, 2 + 2 + 2 decoder, 3 up (sub-pixel), gen c1, masked, c3.
    assert_eq!(convs, 20, "convolutions in the int8 graph");

    // What tract finally runs (for the record: `cargo test --release --test quant_export --
    // --nocapture`).
    let optimized = model.into_optimized().unwrap();
    let mut ops: Vec<String> = optimized
        .nodes()
        .iter()
        .map(|n| n.op.name().to_string())
        .collect();
    ops.sort();
    ops.dedup();
    eprintln!("int8 optimized graph ops: {}", ops.join(", "));
    // Every convolution's patch extraction works on 8-bit data.
    let mut im2col = 0;
    for node in optimized.nodes() {
        if node.op.name() == "Im2col" {
            im2col += 1;
            let dt = optimized.outlet_fact(node.inputs[0]).unwrap().datum_type;
            assert!(
                matches!(dt.unquantized(), DatumType::U8 | DatumType::I8),
                "{} im2col on {dt:?}",
                node.name
            );
        }
    }
    assert!(im2col > 0, "no Im2col in the optimized int8 graph: {ops:?}");

    // The int8 prediction follows the f32 one.
    let memory = memory_items(&store).unwrap();
    let f32_model = export_f32(&net, &store).unwrap();
    let x = window_input(&set, &cfg, windows[3]);
    let a = run(&f32_model, &cfg, &x, &memory);
    let q = run(&int8, &cfg, &x, &memory);
    let r = pearson(&a[0], &q[0]);
    let max = a[0]
        .iter()
        .zip(&q[0])
        .map(|(p, v)| (p - v).abs())
        .fold(0f32, f32::max);
    eprintln!("int8 vs f32 prediction: pearson {r:.5}, max abs diff {max:.4}");
    assert!(r > 0.99, "pearson {r}");
    assert!(max < 0.1, "max abs diff {max}");
    // Queries are unit vectors either way and nearly the same.
    let qr = pearson(&a[1], &q[1]);
    assert!(qr > 0.98, "queries pearson {qr}");
}
