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
