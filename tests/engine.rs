//! The scorers: tract (f32 ONNX) and candle (f16 weights, or the f32 network itself) score the
//! same frames the same way; the MNAD memory update runs only when the rule says; bad stacks
//! are refused; and `edge-cli infer` scores a labelled replay end to end.

use std::path::Path;
use std::process::Command;

use candle_core::Device;
use thermal_edge::engine::{
    open_scorer, Backend, CandleScorer, EngineError, FrameStack, Precision, Scorer, TractScorer,
};
use thermal_edge::export::bundle::{write_model_bundle, Bundle};
use thermal_edge::frame::{FrameMeta, ThermalFrame, Units};
use thermal_edge::model::memory::update_items;
use thermal_edge::model::{Mnad, ModelConfig, ParamStore};
use thermal_edge::source::npy::{encode_u16, write_npy};

/// A tiny model and its bundle, the int8 model calibrated on the test frames.
fn tiny_bundle(dir: &Path) -> (Mnad, Bundle) {
    use thermal_edge::export::quant::{calibrate, chosen_ranges, export_int8, spread_windows};
    use thermal_edge::model::data::{Clip, FrameSet};
    let cfg = ModelConfig::preset("tiny").unwrap();
    let store = ParamStore::new(Device::Cpu, 21);
    let net = Mnad::new(&store, &cfg).unwrap();
    let mut pre =
        thermal_edge::frame::Preprocessor::new(cfg.normalizer, cfg.width, cfg.height).unwrap();
    let plane = cfg.width * cfg.height;
    let n = 16;
    let mut frames = vec![0f32; n * plane];
    for i in 0..n {
        pre.run(&frame(i), &mut frames[i * plane..(i + 1) * plane])
            .unwrap();
    }
    let mut set = FrameSet::new(cfg.height, cfg.width);
    set.clips.push(Clip {
        name: "blob".into(),
        frames,
        n,
    });
    let windows = spread_windows(&set, cfg.t_length, 8);
    let cal = calibrate(&net, &store, &set, &windows, Default::default(), |_, _| {}).unwrap();
    let int8 = export_int8(&net, &store, &chosen_ranges(&cal)).unwrap();
    write_model_bundle(dir, "tiny-engine", &net, &store, int8).unwrap();
    (net, Bundle::open(dir).unwrap())
}

/// A moving warm blob on a gradient, 8-bit, 48×40 (the stack resizes it to 32×32).
fn frame(i: usize) -> ThermalFrame {
    let (w, h) = (48u32, 40u32);
    let px = (0..h)
        .flat_map(|y| {
            (0..w).map(move |x| {
                let (cx, cy) = (10.0 + 3.0 * i as f32, 20.0);
                let r2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
                (60.0 + 2.0 * y as f32 + 120.0 * (-r2 / 30.0).exp()) as u16
            })
        })
        .collect();
    let meta = FrameMeta {
        seq: i as u64,
        units: Units::Gray8,
        ..FrameMeta::default()
    };
    ThermalFrame::new(w, h, px, meta).unwrap()
}

fn full_stack(bundle: &Bundle, first: usize) -> Vec<f32> {
    let mut s = FrameStack::for_bundle(bundle).unwrap();
    let mut full = false;
    for i in first..first + s.capacity() {
        full = s.push(&frame(i)).unwrap();
    }
    assert!(full);
    s.as_slice().to_vec()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn tract_on_a_thread_pool_scores_like_one_thread() {
    let d = tempfile::tempdir().unwrap();
    let (_, bundle) = tiny_bundle(d.path());
    let stack = full_stack(&bundle, 0);
    for precision in [Precision::F32, Precision::Int8] {
        let one = TractScorer::new(&bundle, precision, 1)
            .unwrap()
            .score(&stack)
            .unwrap();
        let three = TractScorer::new(&bundle, precision, 3)
            .unwrap()
            .score(&stack)
            .unwrap();
        let d = max_diff(&one.pred, &three.pred);
        assert!(
            d < 1e-5,
            "{precision:?}: threads change the prediction by {d}"
        );
    }
}

#[test]
fn tract_and_candle_score_alike() {
    let d = tempfile::tempdir().unwrap();
    let (net, bundle) = tiny_bundle(d.path());
    let stack = full_stack(&bundle, 0);

    let mut tract = TractScorer::new(&bundle, Precision::F32, 1).unwrap();
    let mut candle32 = CandleScorer::from_net(net).unwrap();
    let mut candle16 = open_scorer(&bundle, Backend::CandleCpu, 1).unwrap();
    let mut int8 = open_scorer(&bundle, Backend::TractInt8, 1).unwrap();
    assert_eq!(tract.backend(), Backend::TractF32);
    assert_eq!(candle16.backend(), Backend::CandleCpu);
    assert_eq!(int8.backend(), Backend::TractInt8);
    assert_eq!(tract.memory(), candle16.memory());
    assert_eq!(tract.memory(), candle32.memory());

    let t = tract.score(&stack).unwrap();
    let c32 = candle32.score(&stack).unwrap();
    let c16 = candle16.score(&stack).unwrap();
    let i8_ = int8.score(&stack).unwrap();
    assert!(t.psnr.is_finite() && t.psnr > 0.0, "{}", t.psnr);
    assert_eq!(t.error_map.len(), 32 * 32);
    assert_eq!(t.queries.len(), 16 * tract.config().memory_dim());
    assert_eq!(t.read_weights.len(), 16 * 10);

    // Same f32 weights: only float summation order differs (the export folds batch norm).
    assert!(max_diff(&t.pred, &c32.pred) < 1e-4);
    assert!(max_diff(&t.queries, &c32.queries) < 1e-4);
    assert!(
        (t.psnr - c32.psnr).abs() < 1e-3,
        "{} vs {}",
        t.psnr,
        c32.psnr
    );
    assert!(
        (t.feature_distance - c32.feature_distance).abs() < 1e-6 + 1e-4 * t.feature_distance,
        "{} vs {}",
        t.feature_distance,
        c32.feature_distance
    );
    // f16 weights: every weight is off by up to 2^-11 relative; through this network that
    // moves the prediction by ~1e-4, PSNR by ~1e-3 dB and the distance by ~2e-5 relative
    // (measured), bounded here with a 20x margin. Bigger is a real difference, not rounding.
    let pd = max_diff(&c16.pred, &c32.pred);
    assert!(pd > 0.0 && pd < 2e-3, "f16 pred diff {pd}");
    assert!(
        (c16.psnr - c32.psnr).abs() < 0.02,
        "{} vs {}",
        c16.psnr,
        c32.psnr
    );
    assert!(
        (c16.feature_distance - c32.feature_distance).abs() < 5e-4 * c32.feature_distance + 1e-7,
        "{} vs {}",
        c16.feature_distance,
        c32.feature_distance
    );
    // The int8 model: close to f32, not identical.
    let qd = max_diff(&i8_.pred, &t.pred);
    assert!(qd > 0.0 && qd < 0.05, "int8 pred diff {qd}");
    assert!(
        (i8_.psnr - t.psnr).abs() < 0.5,
        "{} vs {}",
        i8_.psnr,
        t.psnr
    );
}

/// Scoring `stack` with its target replaced by `target`.
fn with_target(stack: &[f32], target: &[f32]) -> Vec<f32> {
    let mut s = stack.to_vec();
    let n = s.len();
    s[n - target.len()..].copy_from_slice(target);
    s
}

fn check_update_rule(scorer: &mut dyn Scorer, stack: &[f32]) -> Vec<f32> {
    let first = scorer.score(stack).unwrap();
    let before = scorer.memory().to_vec();
    // Target far from the prediction: an anomaly for the rule, memory untouched.
    let far: Vec<f32> = first
        .pred
        .iter()
        .map(|p| if *p > 0.0 { -1.0 } else { 1.0 })
        .collect();
    let out = scorer.score(&with_target(stack, &far)).unwrap();
    assert!(out.point_score > 0.01, "{}", out.point_score);
    assert!(!scorer.update_memory(&out).unwrap());
    assert_eq!(scorer.memory(), before.as_slice());
    // Target = the prediction: point score 0, memory moves toward this frame's queries.
    let out = scorer.score(&with_target(stack, &first.pred)).unwrap();
    assert!(out.point_score < 1e-6, "{}", out.point_score);
    assert!(scorer.update_memory(&out).unwrap());
    let after = scorer.memory().to_vec();
    assert_ne!(after, before);
    // Exactly MNAD's rule with the cosine scores against the memory before the update.
    let (m, d) = (10, scorer.config().memory_dim());
    let scores: Vec<f32> = out
        .queries
        .chunks(d)
        .flat_map(|q| {
            before
                .chunks(d)
                .map(|it| q.iter().zip(it).map(|(a, b)| a * b).sum::<f32>())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut expect = before.clone();
    update_items(&mut expect, m, d, &out.queries, &scores);
    assert!(max_diff(&after, &expect) < 1e-6);
    for row in after.chunks(d) {
        let n: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5);
    }
    // The next score reads the updated memory.
    let again = scorer.score(stack).unwrap();
    assert_ne!(again.read_weights, first.read_weights);
    after
}

#[test]
fn memory_updates_only_when_the_frame_looks_normal() {
    let d = tempfile::tempdir().unwrap();
    let (_, bundle) = tiny_bundle(d.path());
    let stack = full_stack(&bundle, 3);
    let mut tract = open_scorer(&bundle, Backend::TractF32, 1).unwrap();
    let mut candle = open_scorer(&bundle, Backend::CandleCpu, 1).unwrap();
    let a = check_update_rule(tract.as_mut(), &stack);
    let b = check_update_rule(candle.as_mut(), &stack);
    assert!(max_diff(&a, &b) < 1e-2);

    // set_memory replaces the items (and checks their size).
    let init = bundle.load_memory().unwrap();
    tract.set_memory(&init).unwrap();
    assert_eq!(tract.memory(), init.as_slice());
    let e = tract.set_memory(&init[1..]).unwrap_err().to_string();
    assert!(e.contains("memory holds"), "{e}");
}

#[test]
fn a_stack_of_the_wrong_size_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (_, bundle) = tiny_bundle(d.path());
    let stack = full_stack(&bundle, 0);
    for backend in [Backend::TractF32, Backend::CandleCpu] {
        let mut s = open_scorer(&bundle, backend, 1).unwrap();
        let e = s.score(&stack[32 * 32..]).unwrap_err();
        assert!(matches!(e, EngineError::StackSize { .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("4096 values") && e.contains("5 frames") && e.contains("5120"),
            "{e}"
        );
    }
    // A half-filled frame stack is not full and holds only what was pushed.
    let mut fs = FrameStack::for_bundle(&bundle).unwrap();
    assert!(!fs.push(&frame(0)).unwrap());
    assert_eq!(fs.as_slice().len(), 32 * 32);
}

#[test]
fn the_frame_stack_slides_and_preprocesses_once() {
    let d = tempfile::tempdir().unwrap();
    let (_, bundle) = tiny_bundle(d.path());
    let plane = 32 * 32;
    let mut s = FrameStack::for_bundle(&bundle).unwrap();
    for i in 0..7 {
        s.push(&frame(i)).unwrap();
    }
    assert!(s.is_full());
    assert_eq!(s.len(), 5);
    // After 7 pushes the stack holds frames 2..7, oldest first: same as pushing 2..7 afresh.
    let fresh = full_stack(&bundle, 2);
    assert_eq!(s.as_slice(), fresh.as_slice());
    assert_ne!(&fresh[..plane], &fresh[plane..2 * plane]);
    assert!(fresh.iter().all(|v| (-1.0..=1.0).contains(v)));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn candle_cuda_without_the_feature_says_so() {
    let d = tempfile::tempdir().unwrap();
    let (_, bundle) = tiny_bundle(d.path());
    let e = open_scorer(&bundle, Backend::CandleCuda, 1).err().unwrap();
    assert!(
        e.to_string().contains("built without the cuda feature"),
        "{e}"
    );
}

fn edge_cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edge-cli"))
}

#[test]
fn infer_scores_a_labelled_replay() {
    let d = tempfile::tempdir().unwrap();
    let bdir = d.path().join("bundle");
    tiny_bundle(&bdir);
    let n = 9;
    let mut px = Vec::new();
    for i in 0..n {
        px.extend_from_slice(frame(i).pixels());
    }
    let clip = d.path().join("clip.npy");
    write_npy(&clip, &encode_u16(&[n, 40, 48], &px)).unwrap();
    std::fs::write(
        d.path().join("clip.json"),
        r#"{"labels":[0,0,0,0,0,0,1,1,0]}"#,
    )
    .unwrap();

    let out = edge_cli()
        .args(["infer", "--json", "--backend", "tract-f32", "--bundle"])
        .arg(&bdir)
        .arg("--source")
        .arg(&clip)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The first t − 1 = 4 frames only fill the stack.
    assert_eq!(lines.len(), n - 4);
    assert_eq!(lines[0]["seq"], 4);
    assert_eq!(lines[2]["label"], 1);
    assert_eq!(lines[4]["label"], 0);
    for l in &lines {
        assert!(l["psnr"].as_f64().unwrap() > 0.0, "{l}");
        assert!(l["feature_distance"].as_f64().unwrap() >= 0.0, "{l}");
        assert!(l["t_us"].is_i64(), "{l}");
    }
    assert!(stderr.contains("9 frames read, 5 scored"), "{stderr}");

    // Text output, candle, a frame cap; then the errors a user meets.
    let out = edge_cli()
        .args([
            "infer",
            "--backend",
            "candle-cpu",
            "--max-frames",
            "6",
            "--bundle",
        ])
        .arg(&bdir)
        .arg("--source")
        .arg(&clip)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().filter(|l| l.contains("psnr")).count(),
        2,
        "{text}"
    );
    assert!(text.contains("6 frames read, 2 scored"), "{text}");

    let out = edge_cli()
        .args(["infer", "--backend", "tract-f16", "--bundle"])
        .arg(&bdir)
        .arg("--source")
        .arg(&clip)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tract-f32"));

    std::fs::remove_file(bdir.join("model.onnx")).unwrap();
    let out = edge_cli()
        .args(["infer", "--bundle"])
        .arg(&bdir)
        .arg("--source")
        .arg(&clip)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model.onnx") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn infer_scores_a_simulated_clip_of_another_size() {
    let d = tempfile::tempdir().unwrap();
    let bdir = d.path().join("bundle");
    tiny_bundle(&bdir);
    let sim = d.path().join("sim");
    let out = edge_cli()
        .args([
            "simulate",
            "--train-clips",
            "1",
            "--test-clips",
            "1",
            "--frames",
            "8",
            "--width",
            "64",
            "--height",
            "48",
            "--seed",
            "2",
            "--out",
        ])
        .arg(&sim)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // test/<date>/<clip>/: one folder of 64×48 JPEGs, resized to the 32×32 model input.
    let date = std::fs::read_dir(sim.join("test"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let clip = std::fs::read_dir(date.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let out = edge_cli()
        .args(["infer", "--json", "--backend", "tract-int8", "--bundle"])
        .arg(&bdir)
        .arg("--source")
        .arg(clip.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![4, 5, 6, 7]);
    // An image folder carries no labels; timestamps advance at the folder's 1 FPS.
    assert!(lines.iter().all(|l| l["label"].is_null()));
    assert_eq!(
        lines[1]["t_us"].as_i64().unwrap() - lines[0]["t_us"].as_i64().unwrap(),
        1_000_000
    );
}

fn npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = thermal_edge::source::npy::read_npy(path).unwrap();
    assert_eq!(a.descr, "<f4", "{}", path.display());
    match a.data {
        thermal_edge::source::npy::NpyData::Float(v) => {
            (a.shape, v.into_iter().map(|x| x as f32).collect())
        }
        other => panic!("{}: {other:?}", path.display()),
    }
}

#[test]
fn infer_dump_records_what_tract_scored() {
    let d = tempfile::tempdir().unwrap();
    let bdir = d.path().join("bundle");
    let (_, bundle) = tiny_bundle(&bdir);
    let cfg = bundle.config().clone();
    let n = 9;
    let mut px = Vec::new();
    for i in 0..n {
        px.extend_from_slice(frame(i).pixels());
    }
    let clip = d.path().join("clip.npy");
    write_npy(&clip, &encode_u16(&[n, 40, 48], &px)).unwrap();

    let dump = d.path().join("dump");
    let out = edge_cli()
        .args([
            "infer",
            "--json",
            "--backend",
            "tract-f32",
            "--max-frames",
            "8",
            "--bundle",
        ])
        .arg(&bdir)
        .arg("--source")
        .arg(&clip)
        .arg("--dump")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 8 frames read, the first t − 1 = 4 only fill the stack.
    let f = lines.len();
    assert_eq!(f, 4);

    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dump.join("dump.json")).unwrap()).unwrap();
    assert_eq!(meta["backend"], "tract-f32");
    assert_eq!(meta["model"], "model.onnx");
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(meta["seqs"], serde_json::json!(seqs));

    let (m, dim) = (cfg.memory_items, cfg.memory_dim());
    let (qh, qw) = cfg.query_size();
    let q = qh * qw;
    let (c, h, w) = (cfg.channels, cfg.height, cfg.width);
    let (s_in, inputs) = npy_f32(&dump.join("inputs.npy"));
    let (s_mem, memory) = npy_f32(&dump.join("memory.npy"));
    let (s_tgt, targets) = npy_f32(&dump.join("targets.npy"));
    let (s_pred, pred) = npy_f32(&dump.join("pred.npy"));
    let (s_q, queries) = npy_f32(&dump.join("queries.npy"));
    let (s_w, weights) = npy_f32(&dump.join("read_weights.npy"));
    assert_eq!(s_in, vec![f, 1, cfg.input_channels(), h, w]);
    assert_eq!(s_mem, vec![f, m, dim]);
    assert_eq!(s_tgt, vec![f, 1, c, h, w]);
    assert_eq!(s_pred, vec![f, 1, c, h, w]);
    assert_eq!(s_q, vec![f, q, dim]);
    assert_eq!(s_w, vec![f, q, m]);

    let plane = c * h * w;
    let cin = cfg.input_channels() * h * w;
    // The first frame read the bundle's memory.
    assert_eq!(&memory[..m * dim], bundle.load_memory().unwrap().as_slice());
    let mut tract = TractScorer::new(&bundle, Precision::F32, 1).unwrap();
    for (i, line) in lines.iter().enumerate() {
        // The stack of frames i..i+t, split into the input frames and the target.
        let stack = full_stack(&bundle, i);
        assert_eq!(&inputs[i * cin..(i + 1) * cin], &stack[..cin]);
        assert_eq!(&targets[i * plane..(i + 1) * plane], &stack[cin..]);
        // PSNR recomputed from pred and targets is the printed one.
        let p = &pred[i * plane..(i + 1) * plane];
        let t = &targets[i * plane..(i + 1) * plane];
        let mse = p
            .iter()
            .zip(t)
            .map(|(a, b)| f64::from((a - b) * 0.5).powi(2))
            .sum::<f64>()
            / plane as f64;
        let psnr = 10.0 * (1.0 / mse.max(1e-10)).log10();
        let printed = line["psnr"].as_f64().unwrap();
        assert!(
            (psnr - printed).abs() < 1e-3,
            "frame {i}: {psnr} vs {printed}"
        );
        // Scoring the dumped inputs with the dumped memory gives the dumped outputs exactly.
        tract
            .set_memory(&memory[i * m * dim..(i + 1) * m * dim])
            .unwrap();
        let again = tract.score(&stack).unwrap();
        assert_eq!(again.pred.as_slice(), p);
        assert_eq!(
            again.queries.as_slice(),
            &queries[i * q * dim..(i + 1) * q * dim]
        );
        assert_eq!(
            again.read_weights.as_slice(),
            &weights[i * q * m..(i + 1) * q * m]
        );
        // Each query's read weights are a softmax over the items.
        for row in weights[i * q * m..(i + 1) * q * m].chunks_exact(m) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        }
    }

    // int8: the dump names the int8 model; a dump folder that cannot be made is an error.
    let dump8 = d.path().join("dump8");
    let out = edge_cli()
        .args(["infer", "--backend", "tract-int8", "--max-frames", "6"])
        .arg("--bundle")
        .arg(&bdir)
        .arg("--source")
        .arg(&clip)
        .arg("--dump")
        .arg(&dump8)
        .output()
        .unwrap();
    assert!(out.status.success());
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dump8.join("dump.json")).unwrap()).unwrap();
    assert_eq!(meta["backend"], "tract-int8");
    assert_eq!(meta["model"], "model.int8.onnx");
    assert_eq!(meta["seqs"], serde_json::json!([4, 5]));
    let out = edge_cli()
        .args(["infer", "--max-frames", "6", "--bundle"])
        .arg(&bdir)
        .arg("--source")
        .arg(&clip)
        .arg("--dump")
        .arg(clip.join("x"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dump"));
}
