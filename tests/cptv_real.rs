//! Real-data check: every clip of the `cacophony-cptv` data set, decoded by our CPTV reader,
//! must equal bit for bit the frames that the reference reader (PyPI `cptv` 1.5.5) produced.
//!
//! The data lives outside the repository: `$THERMAL_EDGE_DATA` (the `cacophony-cptv` folder) or
//! `../shared/data/thermal/cacophony-cptv` beside the crate. Without it the test is skipped.

use std::fs;
use std::path::{Path, PathBuf};

use thermal_edge::frame::{FrameMeta, ThermalFrame};
use thermal_edge::source::cptv::CptvSource;
use thermal_edge::source::npy::{read_npy, NpyData};
use thermal_edge::source::FrameSource;

fn data_dir() -> PathBuf {
    match std::env::var_os("THERMAL_EDGE_DATA") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/thermal/cacophony-cptv"),
    }
}

/// Per-frame reference fields of a clip's labels JSON: (is_background_frame, ms_since_ffc).
fn reference_frame_fields(json: &Path) -> Result<Vec<(bool, Option<u64>)>, String> {
    let text = fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
    let array = |key: &str| {
        v.pointer(&format!("/per_frame/{key}"))
            .and_then(|a| a.as_array())
            .ok_or_else(|| format!("{}: no per_frame.{key} array", json.display()))
    };
    let (bg, ffc) = (array("is_background_frame")?, array("ms_since_ffc")?);
    if bg.len() != ffc.len() {
        return Err(format!(
            "{}: per_frame arrays differ in length",
            json.display()
        ));
    }
    Ok(bg
        .iter()
        .zip(ffc)
        .map(|(b, f)| (b.as_bool() == Some(true), f.as_u64()))
        .collect())
}

/// Compares one clip; returns (frames compared, labels checked) or a description of the mismatch.
fn check_clip(dir: &Path, cptv: &Path) -> Result<(usize, bool), String> {
    let id = cptv.file_stem().unwrap().to_string_lossy().into_owned();
    let mut src = CptvSource::open(cptv).map_err(|e| e.to_string())?;
    let want =
        read_npy(&dir.join("frames").join(format!("{id}.npy.xz"))).map_err(|e| e.to_string())?;
    let (w, h) = (src.info().width as usize, src.info().height as usize);
    let n = src.frame_count();
    if want.shape != [n, h, w] {
        return Err(format!(
            "{id}: decoded {n}×{h}×{w}, reference shape {:?}",
            want.shape
        ));
    }
    let NpyData::U16(want) = want.data else {
        return Err(format!("{id}: reference is not u16"));
    };
    let mut frame = ThermalFrame::zeroed(w as u32, h as u32, FrameMeta::default());
    let mut metas = Vec::with_capacity(n);
    let mut i = 0;
    while src.next_into(&mut frame).map_err(|e| e.to_string())? {
        let reference = &want[i * w * h..(i + 1) * w * h];
        if frame.pixels() != reference {
            let (k, (got, exp)) = frame
                .pixels()
                .iter()
                .zip(reference)
                .enumerate()
                .find(|(_, (a, b))| a != b)
                .unwrap();
            let diffs = frame
                .pixels()
                .iter()
                .zip(reference)
                .filter(|(a, b)| a != b)
                .count();
            return Err(format!(
                "{id}: frame {i} differs at x={} y={} (got {got}, reference {exp}); {diffs} pixels differ",
                k % w,
                k / w
            ));
        }
        metas.push(frame.meta.clone());
        i += 1;
    }
    if i != n {
        return Err(format!("{id}: source yielded {i} of {n} frames"));
    }
    let labels_json = dir.join("labels").join(format!("{id}.json"));
    if !labels_json.is_file() {
        return Ok((n, false));
    }
    let labels = src
        .labels()
        .ok_or_else(|| format!("{id}: labels JSON exists but no labels were loaded"))?;
    if labels.len() != n {
        return Err(format!("{id}: {} labels for {n} frames", labels.len()));
    }
    let reference = reference_frame_fields(&labels_json)?;
    if reference.len() != n {
        return Err(format!(
            "{id}: labels JSON describes {} frames, clip has {n}",
            reference.len()
        ));
    }
    for (i, (bg, ffc)) in reference.into_iter().enumerate() {
        if src.is_background_frame(i) != bg {
            return Err(format!(
                "{id}: frame {i}: background flag {} but labels say {bg}",
                !bg
            ));
        }
        let ours = metas[i].ms_since_ffc.map(u64::from);
        if ours != ffc {
            return Err(format!(
                "{id}: frame {i}: ms_since_ffc {ours:?} but labels say {ffc:?}"
            ));
        }
    }
    Ok((n, true))
}

#[test]
fn every_real_cptv_clip_matches_reference_frames() {
    let dir = data_dir();
    if !dir.join("cptv").is_dir() || !dir.join("frames").is_dir() {
        println!(
            "SKIPPED: cacophony-cptv data not found at {}",
            dir.display()
        );
        return;
    }
    let mut clips: Vec<PathBuf> = fs::read_dir(dir.join("cptv"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cptv"))
        .collect();
    clips.sort();
    assert!(
        !clips.is_empty(),
        "no .cptv files in {}",
        dir.join("cptv").display()
    );

    let (mut frames, mut labelled, mut failures) = (0, 0, Vec::new());
    for clip in &clips {
        match check_clip(&dir, clip) {
            Ok((n, has_labels)) => {
                frames += n;
                labelled += usize::from(has_labels);
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} clips failed:\n{}",
        failures.len(),
        clips.len(),
        failures.join("\n")
    );
    println!(
        "compared {} CPTV clips, {frames} frames: all identical",
        clips.len()
    );
    println!("labels loaded for {labelled} clips, each with one label per frame");
}
