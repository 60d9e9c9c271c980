//! The released **Thermal Rare Event** layout (Madan, Ristea et al., TPAMI 2023):
//!
//! ```text
//! <root>/train/<date>/<clip>/*.jpg
//! <root>/test/<date>/<clip>/*.jpg
//! <root>/test_annotations_anomalies/<date>/<clip>.npy   one label per frame, nonzero = anomalous
//! ```
//!
//! Frames are sorted naturally within a clip; labels align with that order.

use std::fs;
use std::path::{Path, PathBuf};

use super::image_dir::{list_images, natural_cmp, ImageDirSource};
use super::npy::{read_npy, NpyData};
use super::{label, SourceError};
use crate::frame::Units;

/// Name of the folder holding test labels.
pub const ANNOTATIONS_DIR: &str = "test_annotations_anomalies";

/// Which half of the dataset a clip belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Normal footage for training.
    Train,
    /// Labelled footage for evaluation.
    Test,
}

impl Split {
    /// Folder name of the split.
    pub fn dir_name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// One clip of the layout: its frames and per-frame labels.
#[derive(Debug, Clone, PartialEq)]
pub struct TreClip {
    /// Split the clip is in.
    pub split: Split,
    /// Date folder, e.g. `20200817`.
    pub date: String,
    /// Clip folder, e.g. `clip_3_1430`.
    pub name: String,
    /// Folder holding the frames.
    pub dir: PathBuf,
    /// Frame files in natural order.
    pub frames: Vec<PathBuf>,
    /// One label per frame ([`label::EVENT`] or [`label::NORMAL`]); training clips are all normal.
    pub labels: Vec<i8>,
}

impl TreClip {
    /// `date/clip`, unique within a split.
    pub fn id(&self) -> String {
        format!("{}/{}", self.date, self.name)
    }

    /// Number of anomalous frames.
    pub fn event_frames(&self) -> usize {
        self.labels.iter().filter(|&&l| l == label::EVENT).count()
    }

    /// When the clip started, as Unix seconds (local time taken as UTC), if the folder names say:
    /// a `YYYYMMDD` date folder and a clip name ending in `_HHMM`.
    pub fn start_unix_s(&self) -> Option<i64> {
        let d = self.date.as_bytes();
        if d.len() != 8 || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let num = |s: &str| s.parse::<i64>().ok();
        let (y, m, day) = (
            num(&self.date[..4])?,
            num(&self.date[4..6])?,
            num(&self.date[6..])?,
        );
        let hhmm = self.name.rsplit('_').next()?;
        if hhmm.len() != 4 || !hhmm.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (hh, mm) = (num(&hhmm[..2])?, num(&hhmm[2..])?);
        if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 {
            return None;
        }
        Some(days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60)
    }

    /// Opens the clip as a frame source at 1 FPS with its labels (16-bit PNGs read as `units16`),
    /// timestamped from [`TreClip::start_unix_s`] when the names give it.
    pub fn open(&self, units16: Units) -> Result<ImageDirSource, SourceError> {
        let src = ImageDirSource::from_files(
            self.dir.display().to_string(),
            self.frames.clone(),
            units16,
            1.0,
        )?
        .with_labels(self.labels.clone())?;
        Ok(match self.start_unix_s() {
            Some(s) => src.with_start_us(s * 1_000_000),
            None => src,
        })
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A dataset in the Thermal Rare Event layout.
#[derive(Debug, Clone, PartialEq)]
pub struct TreDataset {
    /// Root folder (holding `train/` and/or `test/`).
    pub root: PathBuf,
    /// Training clips (may be empty).
    pub train: Vec<TreClip>,
    /// Test clips with labels (may be empty).
    pub test: Vec<TreClip>,
}

/// Whether `path` is a dataset root or one of its split folders.
pub fn looks_like_tre(path: &Path) -> bool {
    split_of(path).is_some() || path.join("train").is_dir() || path.join("test").is_dir()
}

/// The split a folder is, if it is named `train` or `test`.
fn split_of(path: &Path) -> Option<Split> {
    match path.file_name()?.to_str()? {
        "train" => Some(Split::Train),
        "test" => Some(Split::Test),
        _ => None,
    }
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| SourceError::io(dir, e))? {
        let p = entry.map_err(|e| SourceError::io(dir, e))?.path();
        if p.is_dir() {
            out.push(p);
        }
    }
    out.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(out)
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads the per-frame labels of one test clip; the length must match its frames.
pub fn read_clip_labels(path: &Path, n_frames: usize) -> Result<Vec<i8>, SourceError> {
    let arr = read_npy(path)?;
    let values: Vec<bool> = match &arr.data {
        NpyData::U8(v) => v.iter().map(|&x| x != 0).collect(),
        NpyData::U16(v) => v.iter().map(|&x| x != 0).collect(),
        NpyData::Int(v) => v.iter().map(|&x| x != 0).collect(),
        NpyData::Float(v) => v.iter().map(|&x| x != 0.0).collect(),
    };
    // The released files are 1-D; MNAD-style (1, N) arrays are accepted too.
    if arr.shape.iter().filter(|&&d| d != 1).count() > 1 {
        return Err(SourceError::invalid(
            path,
            format!("labels must be one-dimensional, got shape {:?}", arr.shape),
        ));
    }
    if values.len() != n_frames {
        return Err(SourceError::invalid(
            path,
            format!("{} labels but the clip has {n_frames} frames", values.len()),
        ));
    }
    Ok(values
        .into_iter()
        .map(|v| if v { label::EVENT } else { label::NORMAL })
        .collect())
}

/// Reads one split folder (`<root>/train` or `<root>/test`).
pub fn read_split(root: &Path, split: Split) -> Result<Vec<TreClip>, SourceError> {
    let split_dir = root.join(split.dir_name());
    let mut clips = Vec::new();
    for date_dir in sorted_subdirs(&split_dir)? {
        for clip_dir in sorted_subdirs(&date_dir)? {
            let frames = list_images(&clip_dir)?;
            let (date, name) = (name_of(&date_dir), name_of(&clip_dir));
            let labels = match split {
                Split::Train => vec![label::NORMAL; frames.len()],
                Split::Test => {
                    let p = root
                        .join(ANNOTATIONS_DIR)
                        .join(&date)
                        .join(format!("{name}.npy"));
                    if !p.is_file() {
                        return Err(SourceError::invalid(
                            &clip_dir,
                            format!("test clip has no labels: expected {}", p.display()),
                        ));
                    }
                    read_clip_labels(&p, frames.len())?
                }
            };
            clips.push(TreClip {
                split,
                date,
                name,
                dir: clip_dir,
                frames,
                labels,
            });
        }
    }
    if clips.is_empty() {
        return Err(SourceError::invalid(
            &split_dir,
            "no clips: expected <date>/<clip>/ folders of images",
        ));
    }
    Ok(clips)
}

/// Opens a dataset from its root, or from one split folder (then only that split is read).
pub fn open_dataset(path: &Path) -> Result<TreDataset, SourceError> {
    if let Some(split) = split_of(path) {
        let root = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let clips = read_split(&root, split)?;
        let (train, test) = match split {
            Split::Train => (clips, Vec::new()),
            Split::Test => (Vec::new(), clips),
        };
        return Ok(TreDataset { root, train, test });
    }
    let (has_train, has_test) = (path.join("train").is_dir(), path.join("test").is_dir());
    if !has_train && !has_test {
        return Err(SourceError::invalid(
            path,
            "not a Thermal Rare Event dataset: no train/ or test/ folder",
        ));
    }
    Ok(TreDataset {
        root: path.to_path_buf(),
        train: if has_train {
            read_split(path, Split::Train)?
        } else {
            Vec::new()
        },
        test: if has_test {
            read_split(path, Split::Test)?
        } else {
            Vec::new()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::npy::{encode_u8, write_npy};
    use crate::source::FrameSource;
    use image::{GrayImage, Luma};

    fn clip(root: &Path, split: &str, date: &str, name: &str, n: usize) {
        let d = root.join(split).join(date).join(name);
        fs::create_dir_all(&d).unwrap();
        for i in 1..=n {
            GrayImage::from_pixel(6, 4, Luma([i as u8]))
                .save(d.join(format!("image_{i}.jpg")))
                .unwrap();
        }
    }

    fn labels(root: &Path, date: &str, name: &str, l: &[u8]) {
        let d = root.join(ANNOTATIONS_DIR).join(date);
        fs::create_dir_all(&d).unwrap();
        write_npy(&d.join(format!("{name}.npy")), &encode_u8(&[l.len()], l)).unwrap();
    }

    #[test]
    fn reads_both_splits_with_aligned_labels() {
        let t = tempfile::tempdir().unwrap();
        clip(t.path(), "train", "20200817", "clip_1_0100", 3);
        clip(t.path(), "train", "20200818", "clip_2_0200", 2);
        clip(t.path(), "test", "20200819", "clip_3_0300", 12);
        labels(
            t.path(),
            "20200819",
            "clip_3_0300",
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 5, 0],
        );
        let ds = open_dataset(t.path()).unwrap();
        assert_eq!(ds.train.len(), 2);
        assert_eq!(ds.test.len(), 1);
        let c = &ds.test[0];
        assert_eq!(c.id(), "20200819/clip_3_0300");
        // Natural order: image_10 after image_9, so labels follow frame numbers.
        assert!(c.frames[9].ends_with("image_10.jpg"));
        assert_eq!(c.event_frames(), 2);
        assert_eq!(c.labels[9], label::EVENT);
        let mut s = c.open(Units::Counts).unwrap();
        assert_eq!(s.labels().unwrap().len(), 12);
        let f = crate::source::read_all(&mut s).unwrap();
        assert_eq!(f.len(), 12);
        assert!(
            (i32::from(f[9].pixels()[0]) - 10).abs() <= 2,
            "frame order follows natural sort"
        );
        // Frames are timestamped from the folder names: 2020-08-19 03:00 UTC = 1597806000 s.
        assert_eq!(c.start_unix_s(), Some(1_597_806_000));
        assert_eq!(f[0].meta.timestamp_us, 1_597_806_000_000_000);
        assert_eq!(f[2].meta.timestamp_us, 1_597_806_002_000_000);
        // A split folder alone opens too.
        let only_test = open_dataset(&t.path().join("test")).unwrap();
        assert!(only_test.train.is_empty() && only_test.test.len() == 1);
    }

    #[test]
    fn start_times_need_a_date_folder_and_an_hhmm_suffix() {
        let mk = |date: &str, name: &str| TreClip {
            split: Split::Test,
            date: date.into(),
            name: name.into(),
            dir: PathBuf::new(),
            frames: vec![],
            labels: vec![],
        };
        assert_eq!(mk("19700101", "c_0000").start_unix_s(), Some(0));
        assert_eq!(mk("20000301", "x_2359").start_unix_s(), Some(951_955_140));
        assert_eq!(mk("2020081", "c_0100").start_unix_s(), None);
        assert_eq!(mk("20200818", "clip").start_unix_s(), None);
        assert_eq!(mk("20200818", "c_2460").start_unix_s(), None);
        assert_eq!(mk("20201318", "c_0100").start_unix_s(), None);
    }

    #[test]
    fn missing_or_mismatched_labels_are_named_errors() {
        let t = tempfile::tempdir().unwrap();
        clip(t.path(), "test", "20200819", "clip_3_0300", 3);
        let e = open_dataset(t.path()).unwrap_err().to_string();
        assert!(e.contains("clip_3_0300") && e.contains("no labels"), "{e}");
        labels(t.path(), "20200819", "clip_3_0300", &[0, 1]);
        let e = open_dataset(t.path()).unwrap_err().to_string();
        assert!(
            e.contains("clip_3_0300.npy") && e.contains("2 labels") && e.contains("3 frames"),
            "{e}"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(open_dataset(empty.path())
            .unwrap_err()
            .to_string()
            .contains("no train/ or test/"));
        fs::create_dir_all(empty.path().join("train/20200101/clip")).unwrap();
        assert!(open_dataset(empty.path())
            .unwrap_err()
            .to_string()
            .contains("no image files"));
    }
}
