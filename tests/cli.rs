//! The `edge-cli` binary as a user runs it: help, `info` and its errors.

use std::process::Command;

use thermal_edge::source::npy::{encode_u16, write_npy};

fn edge_cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edge-cli"))
}

#[test]
fn help_lists_every_subcommand() {
    let out = edge_cli().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "run",
        "train",
        "export",
        "calibrate",
        "eval",
        "bench",
        "simulate",
        "listen",
        "info",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(cmd)),
            "--help lacks {cmd}:\n{text}"
        );
    }
}

#[test]
fn info_describes_an_npy_stack() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("clip.npy");
    let px: Vec<u16> = (0..3 * 4 * 5).map(|i| 2000 + i as u16).collect();
    write_npy(&p, &encode_u16(&[3, 4, 5], &px)).unwrap();
    std::fs::write(d.path().join("clip.json"), r#"{"labels":[0,1,1]}"#).unwrap();
    let out = edge_cli()
        .args(["info", "--json", "--fps", "9"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["frames"], 3);
    assert_eq!(v["info"]["width"], 5);
    assert_eq!(v["info"]["height"], 4);
    assert_eq!(v["min"], 2000);
    assert_eq!(v["max"], 2059);
    assert_eq!(v["labels"]["event"], 2);
}

#[test]
fn info_on_bad_input_names_the_file_and_exits_1() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("broken.npy");
    std::fs::write(&p, b"\x93NUMPY\x01\x00\x10\x00{'descr': '<u2'").unwrap();
    let out = edge_cli().arg("info").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.npy") && err.contains("truncated"),
        "{err}"
    );

    let out = edge_cli()
        .arg("info")
        .arg(d.path().join("missing.cptv"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.cptv"));

    let out = edge_cli().arg("info").arg(d.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no image files"));
}
