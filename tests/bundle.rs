//! The bundle format: a written bundle opens with the same manifest, and every way a bundle can
//! be broken (corrupt, missing or unlisted file, wrong hash, bad TOML, wrong version, config
//! mismatch) is refused with an error that names the file and the cause.

use std::fs;
use std::path::Path;

use candle_core::Device;
use thermal_edge::export::bundle::{
    write_model_bundle, Bundle, BundleError, Manifest, ParityReport, QuantReport, TensorRange,
    BUNDLE_VERSION, MANIFEST_FILE, MEMORY_FILE, MODEL_F32_FILE, MODEL_INT8_FILE, WEIGHTS_F16_FILE,
};
use thermal_edge::export::f16::load_f16_store;
use thermal_edge::model::{Mnad, ModelConfig, ParamStore};

/// Writes a bundle of a freshly initialised tiny model. The loader checks hashes and sizes, not
/// what a model computes, so the int8 slot holds the f32 graph here (the real int8 export is
/// covered by tests/quant_export.rs and tests/export_cli.rs).
fn tiny_bundle(dir: &Path) -> (ParamStore, Mnad, Manifest) {
    let cfg = ModelConfig::preset("tiny").unwrap();
    let store = ParamStore::new(Device::Cpu, 7);
    let net = Mnad::new(&store, &cfg).unwrap();
    let int8 = thermal_edge::export::export_f32(&net, &store).unwrap();
    let manifest = write_model_bundle(dir, "tiny-test", &net, &store, int8).unwrap();
    (store, net, manifest)
}

fn open_err(dir: &Path) -> String {
    let e = Bundle::open(dir).expect_err("the bundle should be refused");
    e.to_string()
}

fn edit_manifest(dir: &Path, f: impl FnOnce(String) -> String) {
    let p = dir.join(MANIFEST_FILE);
    let text = fs::read_to_string(&p).unwrap();
    let new = f(text.clone());
    assert_ne!(text, new, "the edit changed nothing");
    fs::write(&p, new).unwrap();
}

#[test]
fn written_bundle_opens_with_its_manifest_and_tensors() {
    let d = tempfile::tempdir().unwrap();
    let (store, net, written) = tiny_bundle(d.path());
    let b = Bundle::open(d.path()).unwrap();
    let m = b.manifest();
    assert_eq!(m, &written);
    assert_eq!(m.format, "thermal-edge-bundle");
    assert_eq!(m.version, BUNDLE_VERSION);
    assert_eq!(
        m.producer,
        format!("thermal-edge {}", env!("CARGO_PKG_VERSION"))
    );
    let cfg = net.config();
    assert_eq!(&m.model, cfg);
    assert_eq!(
        (
            m.input.height,
            m.input.width,
            m.input.channels,
            m.input.frames
        ),
        (32, 32, 1, 4)
    );
    assert_eq!((m.memory.items, m.memory.dim), (10, cfg.memory_dim()));
    for name in [
        MODEL_F32_FILE,
        MODEL_INT8_FILE,
        WEIGHTS_F16_FILE,
        MEMORY_FILE,
    ] {
        let e = &m.files[name];
        let bytes = fs::read(d.path().join(name)).unwrap();
        assert_eq!(e.bytes, bytes.len() as u64, "{name}");
        assert_eq!(e.sha256.len(), 64, "{name}");
    }

    // The memory file holds the f32 items exactly.
    let items = net.memory.snapshot().unwrap().flatten_all().unwrap();
    assert_eq!(b.load_memory().unwrap(), items.to_vec1::<f32>().unwrap());

    // The f16 weights hold every tensor (buffers included) within f16 rounding.
    let f16 = load_f16_store(&b.weights_f16_path(), &Device::Cpu).unwrap();
    let net16 = Mnad::new(&f16, cfg).unwrap();
    f16.check_all_used().unwrap();
    drop(net16);
    let ours = store.tensors();
    let theirs = f16.tensors();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    assert!(ours.keys().any(|k| k.ends_with("running_var")));
    for (name, t) in &ours {
        let a = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = theirs[name]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (x, y) in a.iter().zip(&b) {
            // f16 has an 11-bit significand: relative error ≤ 2^-11, plus subnormals near 0.
            assert!(
                (x - y).abs() <= x.abs() / 2048.0 + 1e-7,
                "{name}: {x} vs {y}"
            );
        }
    }
    // The model input is what the preprocessing produces; anything else is refused.
    b.check_frame_size(32, 32).unwrap();
    let e = b.check_frame_size(120, 160).unwrap_err().to_string();
    assert!(
        e.contains("bundle.toml") && e.contains("32x32") && e.contains("120x160"),
        "{e}"
    );
}

#[test]
fn reports_and_calibration_survive_save_manifest() {
    let d = tempfile::tempdir().unwrap();
    tiny_bundle(d.path());
    let mut b = Bundle::open(d.path()).unwrap();
    let m = b.manifest_mut();
    m.quantization = Some(QuantReport {
        scheme: "qdq-per-channel".into(),
        source: "sim/train".into(),
        frames: 64,
        tensors: vec![TensorRange {
            name: "enc.b1.c1".into(),
            method: "percentile-99.99".into(),
            lo: -1.5,
            hi: 2.25,
            mse: 1e-5,
        }],
    });
    m.parity = Some(ParityReport {
        source: "sim/test".into(),
        frames: 100,
        f32_max_abs_diff: 1e-5,
        f32_bound: 1e-4,
        int8_max_abs_diff: 0.03,
        psnr_pearson: 0.998,
        score_pearson: 0.99,
        f32_auc: Some(0.9),
        int8_auc: None,
        auc_diff: None,
    });
    let mut cal = toml::Table::new();
    cal.insert("threshold".into(), toml::Value::Float(0.75));
    m.calibration = Some(cal);
    b.save_manifest().unwrap();
    let again = Bundle::open(d.path()).unwrap();
    assert_eq!(again.manifest(), b.manifest());
    assert_eq!(
        again.manifest().calibration.as_ref().unwrap()["threshold"].as_float(),
        Some(0.75)
    );
}

#[test]
fn a_flipped_byte_is_a_hash_error_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let (_, _, m) = tiny_bundle(d.path());
    let p = d.path().join(MODEL_F32_FILE);
    let mut bytes = fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&p, &bytes).unwrap();
    let e = Bundle::open(d.path()).unwrap_err();
    assert!(matches!(e, BundleError::Hash { .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("model.onnx") && e.contains("sha256"), "{e}");
    assert!(e.contains(&m.files[MODEL_F32_FILE].sha256), "{e}");
}

#[test]
fn a_missing_file_is_named() {
    let d = tempfile::tempdir().unwrap();
    tiny_bundle(d.path());
    fs::remove_file(d.path().join(MEMORY_FILE)).unwrap();
    let e = open_err(d.path());
    assert!(
        e.contains("memory.safetensors") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn an_unlisted_required_file_is_named() {
    let d = tempfile::tempdir().unwrap();
    tiny_bundle(d.path());
    edit_manifest(d.path(), |t| {
        let start = t.find("[files.\"model.int8.onnx\"]").unwrap();
        let end = start + t[start..].find("bytes =").unwrap();
        let end = end + t[end..].find('\n').unwrap() + 1;
        format!("{}{}", &t[..start], &t[end..])
    });
    let e = open_err(d.path());
    assert!(
        e.contains("model.int8.onnx") && e.contains("not listed"),
        "{e}"
    );
}

#[test]
fn a_wrong_hash_in_the_manifest_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (_, _, m) = tiny_bundle(d.path());
    let good = m.files[WEIGHTS_F16_FILE].sha256.clone();
    let bad: String = good
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    edit_manifest(d.path(), |t| t.replace(&good, &bad));
    let e = open_err(d.path());
    assert!(
        e.contains("model.f16.safetensors") && e.contains(&bad) && e.contains(&good),
        "{e}"
    );
}

#[test]
fn malformed_toml_names_bundle_toml_and_the_line() {
    let d = tempfile::tempdir().unwrap();
    tiny_bundle(d.path());
    edit_manifest(d.path(), |t| t.replacen("name = ", "name = = ", 1));
    let e = open_err(d.path());
    assert!(e.contains("bundle.toml") && e.contains("line"), "{e}");
}

#[test]
fn an_unsupported_version_is_named() {
    let d = tempfile::tempdir().unwrap();
    tiny_bundle(d.path());
    edit_manifest(d.path(), |t| {
        t.replacen("version = 1\n", "version = 7\n", 1)
    });
    let e = open_err(d.path());
    assert!(
        e.contains("bundle.toml") && e.contains("version 7") && e.contains("not supported"),
        "{e}"
    );
}

#[test]
fn an_input_that_disagrees_with_the_model_is_refused() {
    let d = tempfile::tempdir().unwrap();
    tiny_bundle(d.path());
    edit_manifest(d.path(), |t| {
        let start = t.find("[input]").unwrap();
        let (head, tail) = t.split_at(start);
        format!("{head}{}", tail.replacen("height = 32", "height = 48", 1))
    });
    let e = open_err(d.path());
    assert!(
        e.contains("bundle.toml") && e.contains("[input]") && e.contains("48"),
        "{e}"
    );
}

#[test]
fn a_foreign_manifest_is_not_a_bundle() {
    let d = tempfile::tempdir().unwrap();
    tiny_bundle(d.path());
    edit_manifest(d.path(), |t| {
        t.replacen("thermal-edge-bundle", "something-else", 1)
    });
    let e = open_err(d.path());
    assert!(
        e.contains("bundle.toml") && e.contains("something-else"),
        "{e}"
    );
}
