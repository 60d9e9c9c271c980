//! Summaries of sources and datasets, as `edge-cli info` prints them.

use std::path::Path;

use super::tre::{TreClip, TreDataset};
use super::{label, FrameSource, SourceError, SourceInfo};
use crate::frame::{centikelvin_to_celsius, ThermalFrame, Units};

/// Counts of per-frame labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LabelCounts {
    /// Frames with an event.
    pub event: usize,
    /// Normal frames.
    pub normal: usize,
    /// Frames to ignore.
    pub ignore: usize,
}

impl LabelCounts {
    /// Counts the labels of a clip.
    pub fn of(labels: &[i8]) -> Self {
        let mut c = LabelCounts::default();
        for &l in labels {
            match l {
                label::EVENT => c.event += 1,
                label::NORMAL => c.normal += 1,
                _ => c.ignore += 1,
            }
        }
        c
    }

    fn add(&mut self, o: LabelCounts) {
        self.event += o.event;
        self.normal += o.normal;
        self.ignore += o.ignore;
    }
}

/// What a whole replay holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceSummary {
    /// The source's own description.
    pub info: SourceInfo,
    /// Frames actually read.
    pub frames: usize,
    /// Smallest pixel value over all frames.
    pub min: u16,
    /// Largest pixel value over all frames.
    pub max: u16,
    /// The range in °C when the frames are radiometric.
    pub celsius: Option<(f32, f32)>,
    /// Time from first to last frame, seconds.
    pub duration_s: f64,
    /// Label counts when the source carries labels.
    pub labels: Option<LabelCounts>,
}

#[derive(Default)]
struct Range {
    min: u16,
    max: u16,
    any: bool,
}

impl Range {
    fn add(&mut self, f: &ThermalFrame) {
        let (lo, hi) = f.min_max();
        if self.any {
            self.min = self.min.min(lo);
            self.max = self.max.max(hi);
        } else {
            (self.min, self.max, self.any) = (lo, hi, true);
        }
    }
}

fn celsius(units: Units, r: &Range) -> Option<(f32, f32)> {
    (units == Units::Centikelvin && r.any)
        .then(|| (centikelvin_to_celsius(r.min), centikelvin_to_celsius(r.max)))
}

/// Reads a source to its end and summarises it (replays only: a live camera never ends).
pub fn summarize_source(src: &mut dyn FrameSource) -> Result<SourceSummary, SourceError> {
    let info = src.info().clone();
    let mut frame = ThermalFrame::zeroed(info.width, info.height, Default::default());
    let mut range = Range::default();
    let (mut n, mut first, mut last) = (0usize, 0i64, 0i64);
    while src.next_into(&mut frame)? {
        range.add(&frame);
        if n == 0 {
            first = frame.meta.timestamp_us;
        }
        last = frame.meta.timestamp_us;
        n += 1;
    }
    Ok(SourceSummary {
        celsius: celsius(info.units, &range),
        frames: n,
        min: range.min,
        max: range.max,
        duration_s: (last - first) as f64 / 1e6,
        labels: src.labels().map(LabelCounts::of),
        info,
    })
}

/// One clip's line in a dataset summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClipSummary {
    /// `date/clip`.
    pub id: String,
    /// Frames in the clip.
    pub frames: usize,
    /// Its labels.
    pub labels: LabelCounts,
}

/// One split's totals in a dataset summary.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SplitSummary {
    /// Number of clips.
    pub clips: usize,
    /// Number of frames.
    pub frames: usize,
    /// Label totals.
    pub labels: LabelCounts,
    /// Clips with at least one event frame.
    pub clips_with_events: usize,
    /// Per-clip lines.
    pub per_clip: Vec<ClipSummary>,
}

/// What a Thermal Rare Event dataset holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DatasetSummary {
    /// Dataset root.
    pub root: String,
    /// Frame width (from the first clip).
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Units of the frames.
    pub units: Units,
    /// Smallest pixel value over all frames read.
    pub min: u16,
    /// Largest pixel value over all frames read.
    pub max: u16,
    /// The range in °C when the frames are radiometric.
    pub celsius: Option<(f32, f32)>,
    /// Training split totals.
    pub train: SplitSummary,
    /// Test split totals.
    pub test: SplitSummary,
}

fn split_summary(clips: &[TreClip]) -> SplitSummary {
    let mut s = SplitSummary::default();
    for c in clips {
        let l = LabelCounts::of(&c.labels);
        s.clips += 1;
        s.frames += c.frames.len();
        s.labels.add(l);
        s.clips_with_events += usize::from(l.event > 0);
        s.per_clip.push(ClipSummary {
            id: c.id(),
            frames: c.frames.len(),
            labels: l,
        });
    }
    s
}

/// Summarises a dataset, decoding every frame to check sizes and find the value range.
pub fn summarize_dataset(ds: &TreDataset, units16: Units) -> Result<DatasetSummary, SourceError> {
    let first = ds
        .train
        .first()
        .or(ds.test.first())
        .ok_or_else(|| SourceError::invalid(&ds.root, "dataset has no clips"))?;
    let probe = first.open(units16)?;
    let (width, height, units) = (probe.info().width, probe.info().height, probe.info().units);
    let mut range = Range::default();
    let mut frame = ThermalFrame::zeroed(width, height, Default::default());
    for clip in ds.train.iter().chain(&ds.test) {
        let mut src = clip.open(units16)?;
        if (src.info().width, src.info().height) != (width, height) {
            return Err(SourceError::invalid(
                &clip.dir,
                format!(
                    "clip is {}×{} but the dataset is {width}×{height}",
                    src.info().width,
                    src.info().height
                ),
            ));
        }
        while src.next_into(&mut frame)? {
            range.add(&frame);
        }
    }
    Ok(DatasetSummary {
        root: ds.root.display().to_string(),
        width,
        height,
        units,
        min: range.min,
        max: range.max,
        celsius: celsius(units, &range),
        train: split_summary(&ds.train),
        test: split_summary(&ds.test),
    })
}

/// Convenience for callers holding a path: whether it should be summarised as a dataset.
pub fn is_dataset(path: &Path) -> bool {
    path.is_dir() && super::tre::looks_like_tre(path)
}
