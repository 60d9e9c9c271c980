//! The shipped demo model (`models/harbor-edge-s/checkpoint`) loads and predicts fresh
//! simulated normal footage well: it must keep working as the code evolves.

use std::path::Path;
use std::process::Command;

use candle_core::Device;
use thermal_edge::model::data::FrameSet;
use thermal_edge::model::train::{load_model, psnr};
use thermal_edge::source::OpenOptions;

#[test]
fn demo_model_predicts_unseen_normal_footage() {
    let ck = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/harbor-edge-s/checkpoint");
    let (_, net) = load_model(&ck, &Device::Cpu).unwrap();
    let cfg = net.config().clone();
    assert_eq!(cfg.preset.as_deref(), Some("edge-s"));

    // A seed the model was not trained on.
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("sim");
    let st = Command::new(env!("CARGO_BIN_EXE_edge-cli"))
        .args([
            "simulate",
            "--train-clips",
            "2",
            "--test-clips",
            "0",
            "--frames",
            "12",
            "--seed",
            "99",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let set = FrameSet::load(&out, &cfg, &OpenOptions::default()).unwrap();
    let windows = set.windows(cfg.t_length);
    let (x, y) = set.batch(&windows[..4], &cfg, &Device::Cpu).unwrap();
    let fwd = net.forward(&x, false).unwrap();
    let p = psnr(&fwd.pred, &y).unwrap();
    let mean = p.iter().sum::<f32>() / p.len() as f32;
    // An untrained network scores about 15 dB here.
    assert!(
        mean > 28.0,
        "PSNR on unseen normal footage {mean:.2} dB ({p:?})"
    );
}

/// The shipped bundle (`models/harbor-edge-s/`) opens with verified hashes and scores the same
/// unseen normal footage with every CPU backend: tract f32 and int8, candle (f16 weights).
/// Scoring goes through `edge-cli infer --json`, as a user runs it: in this test binary
/// (system allocator) the in-process version crashed with SIGSEGV in about 15 % of runs, which
/// the CLI (mimalloc) never did in 36 runs — recorded in the issue notes for investigation.
#[test]
fn shipped_bundle_scores_with_tract_and_candle() {
    use thermal_edge::export::bundle::Bundle;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/harbor-edge-s");
    let bundle = Bundle::open(&dir).unwrap();
    let parity = bundle.manifest().parity.clone().expect("parity report");
    assert!(parity.f32_max_abs_diff <= 1e-4, "{parity:?}");
    assert!(parity.score_pearson >= 0.99, "{parity:?}");

    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("sim");
    let st = Command::new(env!("CARGO_BIN_EXE_edge-cli"))
        .args([
            "simulate",
            "--train-clips",
            "1",
            "--test-clips",
            "0",
            "--frames",
            "12",
        ])
        .args(["--seed", "98", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let clip = std::fs::read_dir(out.join("train"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut results = Vec::new();
    for backend in ["tract-f32", "tract-int8", "candle-cpu"] {
        let o = Command::new(env!("CARGO_BIN_EXE_edge-cli"))
            .args(["infer", "--json", "--backend", backend, "--bundle"])
            .arg(&dir)
            .arg("--source")
            .arg(&clip)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let psnr: Vec<f64> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["psnr"].as_f64().unwrap()
            })
            .collect();
        assert_eq!(psnr.len(), 12 - 4, "{backend}");
        let mean = psnr.iter().sum::<f64>() / psnr.len() as f64;
        assert!(mean > 28.0, "{backend}: mean PSNR {mean:.2} dB ({psnr:?})");
        results.push(psnr);
    }
    // f16 weights on candle: within 0.05 dB of tract f32; int8 within 1 dB on normal footage.
    for i in 0..results[0].len() {
        let f = results[0][i];
        assert!((results[2][i] - f).abs() < 0.05, "candle {results:?}");
        assert!((results[1][i] - f).abs() < 1.0, "int8 {results:?}");
    }
}
