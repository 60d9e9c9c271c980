//! `edge-cli bench` as a user runs it: the report's figures hang together, the sweep sizes a
//! model for a board, and bad input gets a clear error. (Speed itself is measured, not
//! asserted: see docs/performance.md.)

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn edge_cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edge-cli"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn json_of(c: &mut Command) -> Value {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON document")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn bench_reports_consistent_stages_for_the_shipped_model() {
    let r = json_of(edge_cli().args([
        "bench",
        "--bundle",
        "models/harbor-edge-s",
        "--backend",
        "tract-f32",
        "--frames",
        "4",
        "--warmup",
        "1",
        "--json",
    ]));
    assert_eq!(r["schema"], "thermal-edge-bench/1");
    assert_eq!(r["model"]["preset"], "edge-s");
    assert_eq!(r["model"]["input"], serde_json::json!([1, 4, 128, 160]));
    let macs = f(&r["model"]["macs"]);
    assert!(macs > 5e8 && macs < 2e9, "{macs}");
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["name"], "tract-f32");
    // The shipped bundle is calibrated: the whole on-device loop was timed.
    assert_eq!(run["path"], "pipeline");
    let st = &run["stages"];
    for stage in ["preprocess", "inference", "scoring", "frame"] {
        let s = &st[stage];
        assert_eq!(s["n"], 4, "{stage}");
        assert!(f(&s["min_ms"]) <= f(&s["p50_ms"]), "{stage}");
        assert!(f(&s["p50_ms"]) <= f(&s["p99_ms"]), "{stage}");
        assert!(f(&s["p99_ms"]) <= f(&s["max_ms"]), "{stage}");
        assert!(f(&s["min_ms"]) >= 0.0, "{stage}");
    }
    // The stages add up to the frame, frame by frame, so their means do too.
    let sum: f64 = ["preprocess", "inference", "scoring"]
        .iter()
        .map(|s| f(&st[*s]["mean_ms"]))
        .sum();
    let frame = f(&st["frame"]["mean_ms"]);
    assert!(
        (sum - frame).abs() < 1e-6 * frame.max(1.0) + 1e-9,
        "{sum} {frame}"
    );
    // GFLOP/s from the counted MACs and the median inference time.
    let want = 2.0 * macs / (f(&st["inference"]["p50_ms"]) * 1e-3) / 1e9;
    assert!((f(&run["gflops"]) - want).abs() < 1e-6 * want, "{run}");
    assert!((f(&run["fps"]) - 1e3 / f(&st["frame"]["p50_ms"])).abs() < 1e-6);
    // Model, weights and buffers are resident: tens of MiB, not a few KiB or gigabytes.
    let rss = f(&run["peak_rss_mib"]);
    assert!(rss > 10.0 && rss < 2000.0, "{rss}");
    assert!(r["peak"].is_null());
    assert_eq!(r["train"], serde_json::json!([]));
}

#[test]
fn sweep_recommends_the_largest_model_that_fits_and_times_training() {
    let d = tempfile::tempdir().unwrap();
    let board = d.path().join("board.toml");
    // Half this machine's speed, two threads for the model.
    std::fs::write(
        &board,
        "board = \"test-board\"\nspeed_factor = 0.5\n[model]\nbackend = \"tract-int8\"\nthreads = 2\n",
    )
    .unwrap();
    let sweep = |budget: &str| {
        json_of(
            edge_cli()
                .args(["bench", "--sweep", "--presets", "tiny", "--frames", "3"])
                .args(["--warmup", "1", "--json", "--budget-ms", budget, "--board"])
                .arg(&board)
                .arg("--sweep-dir")
                .arg(d.path().join("sweep")),
        )
    };
    let s = sweep("100000");
    assert_eq!(s["board"]["board"], "test-board");
    assert_eq!(f(&s["board"]["speed_factor"]), 0.5);
    let c = s["candidates"].as_array().unwrap();
    let names: Vec<_> = c.iter().map(|c| c["backend"].as_str().unwrap()).collect();
    assert_eq!(names, ["tract-f32", "tract-int8"]);
    for cand in c {
        let t1 = f(&cand["one_thread"]["stages"]["frame"]["p99_ms"]);
        let g = f(&cand["thread_gain"]);
        assert!((0.0..=1.0).contains(&g));
        // The documented prediction: t₁ / s / (1 + (k − 1)·g).
        let want = t1 / 0.5 / (1.0 + g);
        assert!((f(&cand["predicted_p99_ms"]) - want).abs() < 1e-6 * want);
        assert_eq!(cand["fits"], true);
    }
    // Equal MACs: the faster backend is recommended.
    let p99 = |c: &Value| f(&c["predicted_p99_ms"]);
    let faster = if p99(&c[0]) <= p99(&c[1]) {
        &c[0]
    } else {
        &c[1]
    };
    assert_eq!(
        s["recommended"],
        serde_json::json!(["tiny", faster["backend"].as_str().unwrap()])
    );
    // Nothing fits a microsecond.
    let s = sweep("0.001");
    assert!(s["recommended"].is_null());
    assert!(s["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["fits"] == false));

    // The sweep's timing bundle is a real bundle: bench it with the peak and a training step.
    let tiny = d.path().join("sweep/tiny");
    assert!(Path::new(&tiny).join("model.int8.onnx").is_file());
    let r = json_of(
        edge_cli()
            .args([
                "bench",
                "--backend",
                "candle-cpu",
                "--frames",
                "2",
                "--warmup",
                "0",
            ])
            .args([
                "--train",
                "--train-steps",
                "2",
                "--train-batch",
                "2",
                "--peak",
                "--json",
            ])
            .arg("--bundle")
            .arg(&tiny),
    );
    // Uncalibrated: the engine path (model and scores, no events).
    assert_eq!(r["runs"][0]["path"], "engine");
    let p = &r["peak"];
    assert!(f(&p["gflops"]) > 0.5, "{p}");
    assert_eq!(
        f(&p["gflops"]),
        f(&p["tract_gflops"]).max(f(&p["gemm_gflops"]))
    );
    let frac = f(&r["runs"][0]["fraction_of_peak"]);
    assert!(
        (frac - f(&r["runs"][0]["gflops"]) / f(&p["gflops"])).abs() < 1e-9,
        "{frac}"
    );
    let t = &r["train"][0];
    assert_eq!(t["name"], "candle-cpu-train-step");
    assert_eq!(
        (t["batch"].as_u64(), t["steps"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(f(&t["step"]["p50_ms"]) > 0.0);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let out = edge_cli()
        .args(["bench", "--bundle", "no/such/bundle", "--frames", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no/such/bundle"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = edge_cli()
        .args(["bench", "--threads", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads"));

    let d = tempfile::tempdir().unwrap();
    let board = d.path().join("board.toml");
    std::fs::write(&board, "board = \"x\"\n").unwrap();
    let out = edge_cli()
        .args(["bench", "--sweep", "--board"])
        .arg(&board)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("board.toml") && err.contains("speed_factor"),
        "{err}"
    );

    // --sweep without a board is a usage error.
    let out = edge_cli().args(["bench", "--sweep"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
