//! Per-frame labels stored beside replay files, as JSON in the Cacophony layout
//! (`labels/<clip>.json` with `per_frame.label`) or a plain `{"labels": [...]}` file.

use std::fs;
use std::path::{Path, PathBuf};

use super::{label, SourceError};

/// The clip id of a replay file: its name without `.npy.xz`, `.npy`, `.cptv` and the like.
pub fn clip_id(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for ext in [".npy.xz", ".npy", ".cptv", ".y16", ".raw", ".json"] {
        if let Some(stem) = name.strip_suffix(ext) {
            return stem.to_string();
        }
    }
    name
}

/// Where labels for a replay file may be: `<clip>.json` beside it, or `../labels/<clip>.json`.
pub fn candidate_paths(path: &Path) -> Vec<PathBuf> {
    let id = clip_id(path);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = vec![dir.join(format!("{id}.json"))];
    if let Some(up) = dir.parent() {
        out.push(up.join("labels").join(format!("{id}.json")));
    }
    out
}

/// Parses a labels JSON document; values other than 1, 0 and −1 are errors.
pub fn parse_labels_json(text: &str, path: &Path) -> Result<Vec<i8>, SourceError> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| SourceError::invalid(path, format!("labels JSON: {e}")))?;
    let arr = v
        .pointer("/per_frame/label")
        .or_else(|| v.get("labels"))
        .and_then(|a| a.as_array())
        .ok_or_else(|| {
            SourceError::invalid(
                path,
                "labels JSON has neither per_frame.label nor labels array",
            )
        })?;
    arr.iter()
        .enumerate()
        .map(|(i, x)| match x.as_i64() {
            Some(1) => Ok(label::EVENT),
            Some(0) => Ok(label::NORMAL),
            Some(-1) => Ok(label::IGNORE),
            _ => Err(SourceError::invalid(
                path,
                format!("label {i} is {x}, expected 1, 0 or -1"),
            )),
        })
        .collect()
}

/// Loads labels for a replay file of `n_frames` frames if a labels file exists for it.
pub fn find_labels_for(path: &Path, n_frames: usize) -> Result<Option<Vec<i8>>, SourceError> {
    for cand in candidate_paths(path) {
        if !cand.is_file() {
            continue;
        }
        let text = fs::read_to_string(&cand).map_err(|e| SourceError::io(&cand, e))?;
        let labels = parse_labels_json(&text, &cand)?;
        if labels.len() != n_frames {
            return Err(SourceError::invalid(
                &cand,
                format!(
                    "{} labels but {} has {n_frames} frames",
                    labels.len(),
                    path.display()
                ),
            ));
        }
        return Ok(Some(labels));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_ids_strip_known_extensions() {
        assert_eq!(clip_id(Path::new("a/frames/cp_possum.npy.xz")), "cp_possum");
        assert_eq!(clip_id(Path::new("b/tr_rat.cptv")), "tr_rat");
        assert_eq!(clip_id(Path::new("x.npy")), "x");
    }

    #[test]
    fn finds_cacophony_layout_and_checks_count() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("frames")).unwrap();
        fs::create_dir_all(d.path().join("labels")).unwrap();
        let clip = d.path().join("frames/c1.npy.xz");
        fs::write(
            d.path().join("labels/c1.json"),
            r#"{"per_frame":{"label":[1,0,-1]}}"#,
        )
        .unwrap();
        assert_eq!(find_labels_for(&clip, 3).unwrap(), Some(vec![1, 0, -1]));
        let e = find_labels_for(&clip, 4).unwrap_err().to_string();
        assert!(e.contains("c1.json") && e.contains("3 labels"), "{e}");
        assert_eq!(
            find_labels_for(&d.path().join("frames/other.npy"), 3).unwrap(),
            None
        );
    }

    #[test]
    fn rejects_bad_values() {
        let e = parse_labels_json(r#"{"labels":[0,2]}"#, Path::new("l.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 1 is 2"), "{e}");
        assert!(parse_labels_json("{", Path::new("l.json")).is_err());
    }
}
