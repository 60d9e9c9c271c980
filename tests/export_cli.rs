//! `edge-cli export` end to end: simulate footage, train a tiny model for a few steps, export a
//! bundle with int8 calibration and a parity report, open it; the same after quantization-aware
//! training (ranges from quant.json); and the errors a user meets.

use std::path::Path;
use std::process::Command;

use thermal_edge::export::bundle::Bundle;

fn edge_cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edge-cli"))
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("edge-cli runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn simulate_and_train(dir: &Path) {
    ok(edge_cli()
        .args(["simulate", "--train-clips", "2", "--test-clips", "2"])
        .args([
            "--seed", "4", "--frames", "40", "--width", "64", "--height", "48", "--out",
        ])
        .arg(dir.join("sim")));
    ok(edge_cli()
        .args([
            "train",
            "--preset",
            "tiny",
            "--epochs",
            "1",
            "--max-steps",
            "2",
            "--data",
        ])
        .arg(dir.join("sim"))
        .arg("--out")
        .arg(dir.join("run")));
}

fn export(dir: &Path, checkpoint: &str, out: &str) -> String {
    ok(edge_cli()
        .arg("export")
        .arg("--checkpoint")
        .arg(dir.join(checkpoint))
        .arg("--calib")
        .arg(dir.join("sim"))
        .arg("--out")
        .arg(dir.join(out))
        .args([
            "--calib-windows",
            "6",
            "--refine-windows",
            "2",
            "--parity-windows",
            "6",
        ]))
}

#[test]
fn export_writes_a_verified_bundle_with_int8_and_parity_and_uses_qat_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    simulate_and_train(dir);

    let text = export(dir, "run", "bundle");
    assert!(text.contains("parity on"), "{text}");
    let b = Bundle::open(&dir.join("bundle")).unwrap();
    let m = b.manifest();
    assert_eq!(m.name, "bundle");
    for f in [
        "model.onnx",
        "model.int8.onnx",
        "model.f16.safetensors",
        "memory.safetensors",
    ] {
        assert!(
            m.files.contains_key(f),
            "{f} missing from {:?}",
            m.files.keys()
        );
    }
    let q = m.quantization.as_ref().expect("quantization report");
    assert_eq!(q.scheme, "u8s8-per-channel-v1");
    assert!(q.frames > 0);
    // The sites the int8 graph uses: every conv output and the inputs not fed by another conv.
    assert!(q.tensors.len() >= 20, "{} ranges", q.tensors.len());
    assert!(q
        .tensors
        .iter()
        .all(|t| t.method != "qat" && t.lo <= 0.0 && t.hi >= 0.0));
    let p = m.parity.as_ref().expect("parity report");
    assert!(
        p.f32_max_abs_diff <= p.f32_bound && p.f32_bound == 1e-4,
        "{p:?}"
    );
    assert!(p.frames > 0);
    // The simulated dataset has labelled test clips: AUCs are measured.
    assert!(p.f32_auc.is_some() && p.int8_auc.is_some(), "{p:?}");
    let int8 = std::fs::read(b.model_int8_path()).unwrap();
    assert!(int8
        .windows(b"QLinearConv".len())
        .any(|w| w == b"QLinearConv"));

    // Calibrate on the normal training clips with the simulator's site file (the water
    // masked, the pier end a zone with its own term): [calibration] lands in bundle.toml, the
    // file hashes still verify.
    let text = ok(edge_cli()
        .args([
            "calibrate",
            "--alerts-per-day",
            "500",
            "--backend",
            "tract-int8",
            "--bundle",
        ])
        .arg(dir.join("bundle"))
        .arg("--source")
        .arg(dir.join("sim"))
        .arg("--site")
        .arg(dir.join("sim/site.toml")));
    assert!(text.contains("threshold"), "{text}");
    assert!(text.contains("zone pier-end"), "{text}");
    let b = Bundle::open(&dir.join("bundle")).unwrap();
    let cal = b.manifest().calibration.clone().expect("calibration table");
    assert_eq!(cal["version"].as_integer(), Some(2));
    let fit = &cal["fits"].as_array().unwrap()[0];
    assert_eq!(fit["regime"].as_str(), Some("all"));
    let threshold = fit["threshold"]["threshold"].as_float().unwrap();
    assert!(threshold.is_finite());
    assert_eq!(cal["backend"].as_str(), Some("tract-int8"));
    assert!(fit["score"]["psnr"]["sigma"].as_float().unwrap() > 0.0);
    let zones = cal["zones"].as_array().unwrap();
    assert_eq!(zones.len(), 1);
    assert_eq!(zones[0]["name"].as_str(), Some("pier-end"));
    let zone_stats = &fit["zones"].as_array().unwrap()[0];
    assert!(zone_stats["median"].as_float().unwrap().is_finite());

    // Evaluate on the labelled test clips: both protocols, alarms at the calibrated threshold,
    // the per-type breakdown from the simulator's manifest, plots.
    let rep = dir.join("report");
    let text = ok(edge_cli()
        .args(["eval", "--bundle"])
        .arg(dir.join("bundle"))
        .arg("--data")
        .arg(dir.join("sim"))
        .arg("--out")
        .arg(&rep));
    assert!(
        text.contains("micro AUC") && text.contains("causal"),
        "{text}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rep.join("report.json")).unwrap()).unwrap();
    let protocols = report["protocols"].as_array().unwrap();
    assert_eq!(protocols.len(), 2);
    assert_eq!(protocols[0]["protocol"], "paper");
    assert_eq!(report["calibration"]["zones"][0]["name"], "pier-end");
    let causal = &protocols[1];
    assert_eq!(causal["protocol"], "causal");
    assert!(
        causal["detection"]["micro_auc"].as_f64().is_some(),
        "{causal}"
    );
    // (TOML's float parsing may differ from JSON's in the last bit.)
    let enter = causal["events"]["settings"]["events"]["enter"]
        .as_f64()
        .unwrap();
    assert!(
        (enter - threshold).abs() <= 1e-12 * threshold.abs().max(1.0),
        "{enter} vs {threshold}"
    );
    assert!(causal["events"]["labelled"].as_u64().unwrap() > 0);
    assert!(
        !causal["by_type"].as_object().unwrap().is_empty(),
        "{causal}"
    );
    assert!(rep.join("roc.png").is_file() && rep.join("scores.csv").is_file());
    let timelines = std::fs::read_dir(rep.join("timelines")).unwrap().count();
    assert_eq!(timelines as u64, report["clips"].as_u64().unwrap());

    // The false-alarm budget holds on fresh normal footage: calibrate on normal-only footage
    // (seed 11), count alarms (runs of threshold exceedances) on other normal footage (seed
    // 12); the rate per day lies within the calibration's reported 90 % interval.
    for (seed, name) in [("11", "normal-a"), ("12", "normal-b")] {
        ok(edge_cli()
            .args(["simulate", "--train-clips", "16", "--test-clips", "0"])
            .args([
                "--frames", "60", "--width", "64", "--height", "48", "--seed", seed,
            ])
            .arg("--out")
            .arg(dir.join(name)));
    }
    ok(edge_cli()
        .args(["calibrate", "--alerts-per-day", "2000", "--bundle"])
        .arg(dir.join("bundle"))
        .arg("--source")
        .arg(dir.join("normal-a")));
    let b = Bundle::open(&dir.join("bundle")).unwrap();
    let cal = b.manifest().calibration.clone().unwrap();
    let fit = &cal["fits"].as_array().unwrap()[0]["threshold"];
    let interval: Vec<f64> = fit["interval_per_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_float().unwrap())
        .collect();
    let rep = dir.join("report-normal");
    ok(edge_cli()
        .args(["eval", "--protocol", "causal", "--no-plots", "--bundle"])
        .arg(dir.join("bundle"))
        .arg("--data")
        .arg(dir.join("normal-b"))
        .arg("--out")
        .arg(&rep));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rep.join("report.json")).unwrap()).unwrap();
    let events = &report["protocols"][0]["events"];
    assert_eq!(events["labelled"].as_u64(), Some(0));
    let per_day = events["alarms"].as_f64().unwrap() / events["hours"].as_f64().unwrap() * 24.0;
    eprintln!("fresh normal footage: {per_day:.0} alarms/day; calibration 90 % interval {interval:?} (budget 2000)");
    assert!(
        interval[0] <= per_day && per_day <= interval[1],
        "fresh normal footage: {per_day:.0} exceedances/day, calibration interval {interval:?} (budget 2000)"
    );
    // Alarms are runs of exceedances: never more of them than exceeding frames.
    let frames = report["frames"].as_f64().unwrap();
    assert!(events["alarms"].as_f64().unwrap() <= events["frame_fpr"].as_f64().unwrap() * frames);

    // Quantization-aware fine-tuning, then export with its ranges.
    ok(edge_cli()
        .args([
            "train",
            "--qat",
            "--epochs",
            "1",
            "--max-steps",
            "2",
            "--from",
        ])
        .arg(dir.join("run"))
        .arg("--data")
        .arg(dir.join("sim"))
        .arg("--out")
        .arg(dir.join("qat")));
    let text = export(dir, "qat", "bundle-qat");
    assert!(text.contains("quant.json"), "{text}");
    let b = Bundle::open(&dir.join("bundle-qat")).unwrap();
    let q = b.manifest().quantization.clone().unwrap();
    assert!(q.tensors.iter().all(|t| t.method == "qat"), "{q:?}");
    assert_eq!(q.frames, 0, "no calibration frames with QAT ranges");
}

#[test]
fn export_errors_name_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    // No --calib: a usage error.
    let out = edge_cli()
        .args(["export", "--checkpoint", "x", "--out"])
        .arg(tmp.path().join("b"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--calib"));
    // A checkpoint that does not exist: exit 1, the path named.
    let missing = tmp.path().join("no-such-run");
    let out = edge_cli()
        .arg("export")
        .arg("--checkpoint")
        .arg(&missing)
        .arg("--calib")
        .arg(tmp.path())
        .arg("--out")
        .arg(tmp.path().join("b"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-run"), "{err}");
}
