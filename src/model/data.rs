//! Training data: normal footage preprocessed once to the model's input size, cut into
//! windows of t consecutive frames (t − 1 inputs and the frame to predict).

use std::path::Path;

use candle_core::{Device, Result as CResult, Tensor};

use super::config::{Mode, ModelConfig};
use crate::frame::{Preprocessor, ThermalFrame};
use crate::source::{label, FrameSource, OpenOptions, SourceError};

/// One run of consecutive frames, normalised to [−1, 1] at the model's size.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    /// Where the frames came from (clip id, file, or file + frame range).
    pub name: String,
    /// `n` planes of H×W values, frame-major.
    pub frames: Vec<f32>,
    /// Number of frames.
    pub n: usize,
}

/// Why training data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Preprocessing failed.
    #[error("{path}: {source}")]
    Normalize {
        /// Source being read.
        path: String,
        /// Cause.
        #[source]
        source: crate::frame::normalize::NormalizeError,
    },
    /// Nothing usable was found.
    #[error("{0}")]
    Empty(String),
}

/// A set of clips at the model's input size.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameSet {
    /// Plane height.
    pub height: usize,
    /// Plane width.
    pub width: usize,
    /// The clips.
    pub clips: Vec<Clip>,
}

/// Splits labels into runs of normal frames `[start, end)` of at least `min_len` frames.
pub fn normal_runs(labels: &[i8], min_len: usize) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, &l) in labels
        .iter()
        .chain(std::iter::once(&label::EVENT))
        .enumerate()
    {
        match (l == label::NORMAL, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s >= min_len {
                    runs.push((s, i));
                }
                start = None;
            }
            _ => {}
        }
    }
    runs
}

impl FrameSet {
    /// An empty set of planes of the given size.
    pub fn new(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            clips: Vec::new(),
        }
    }

    /// Total frames.
    pub fn frame_count(&self) -> usize {
        self.clips.iter().map(|c| c.n).sum()
    }

    /// Reads a whole source; with labels, keeps only runs of normal frames (training uses
    /// normal footage only) of at least `min_len` frames.
    pub fn add_source(
        &mut self,
        src: &mut dyn FrameSource,
        pre: &mut Preprocessor,
        min_len: usize,
    ) -> Result<(), DataError> {
        let name = src.info().name.clone();
        let plane = self.height * self.width;
        let mut frames = Vec::new();
        let mut frame =
            ThermalFrame::zeroed(src.info().width, src.info().height, Default::default());
        let mut n = 0;
        while src.next_into(&mut frame)? {
            frames.resize((n + 1) * plane, 0.0);
            pre.run(&frame, &mut frames[n * plane..])
                .map_err(|e| DataError::Normalize {
                    path: name.clone(),
                    source: e,
                })?;
            n += 1;
        }
        let runs = match src.labels() {
            Some(l) => normal_runs(&l[..n.min(l.len())], min_len),
            None if n >= min_len => vec![(0, n)],
            None => Vec::new(),
        };
        let whole = runs.len() == 1 && runs[0] == (0, n);
        for (s, e) in runs {
            self.clips.push(Clip {
                name: if whole {
                    name.clone()
                } else {
                    format!("{name}[{s}..{e}]")
                },
                frames: frames[s * plane..e * plane].to_vec(),
                n: e - s,
            });
        }
        Ok(())
    }

    /// Loads normal training footage from a path: a Thermal Rare Event dataset (its `train/`
    /// split), a folder of replay files (`.cptv`, `.npy`, `.npy.xz`), or one source.
    pub fn load(path: &Path, cfg: &ModelConfig, opts: &OpenOptions) -> Result<Self, DataError> {
        let mut pre = Preprocessor::new(cfg.normalizer, cfg.width, cfg.height).map_err(|e| {
            DataError::Normalize {
                path: path.display().to_string(),
                source: e,
            }
        })?;
        let mut set = FrameSet::new(cfg.height, cfg.width);
        let min_len = cfg.t_length;
        for clip in crate::source::footage_clips(path)? {
            let mut src = clip.open(opts)?;
            set.add_source(src.as_mut(), &mut pre, min_len)?;
        }
        if set.clips.is_empty() {
            return Err(DataError::Empty(format!(
                "{}: no runs of at least {min_len} normal frames to train on",
                path.display()
            )));
        }
        Ok(set)
    }

    /// All windows (clip, first frame) of `t` consecutive frames.
    pub fn windows(&self, t: usize) -> Vec<(usize, usize)> {
        self.clips
            .iter()
            .enumerate()
            .flat_map(|(ci, c)| (0..(c.n + 1).saturating_sub(t)).map(move |s| (ci, s)))
            .collect()
    }

    /// Holds out whole clips (the last ones) for validation when there are several, else the
    /// tail of each clip; `fraction` of the frames, at least one window's worth.
    pub fn split_holdout(mut self, fraction: f64, t: usize) -> (FrameSet, FrameSet) {
        let mut val = FrameSet::new(self.height, self.width);
        if fraction <= 0.0 {
            return (self, val);
        }
        let total = self.frame_count();
        let want = ((total as f64 * fraction).ceil() as usize).max(t);
        if self.clips.len() >= 2 {
            while val.frame_count() < want && self.clips.len() > 1 {
                val.clips
                    .insert(0, self.clips.pop().expect("more than one clip"));
            }
        } else if let Some(c) = self.clips.first_mut() {
            let keep = c.n.saturating_sub(want);
            if keep >= t {
                let plane = self.height * self.width;
                val.clips.push(Clip {
                    name: format!("{} (tail)", c.name),
                    frames: c.frames[keep * plane..].to_vec(),
                    n: c.n - keep,
                });
                c.frames.truncate(keep * plane);
                c.n = keep;
            }
        }
        (self, val)
    }

    /// Stacks windows into (input (B, t−1, H, W) or (B, 1, H, W), target (B, 1, H, W)).
    pub fn batch(
        &self,
        windows: &[(usize, usize)],
        cfg: &ModelConfig,
        device: &Device,
    ) -> CResult<(Tensor, Tensor)> {
        let plane = self.height * self.width;
        let t = cfg.t_length;
        let inputs = cfg.input_frames();
        let mut x = Vec::with_capacity(windows.len() * inputs * plane);
        let mut y = Vec::with_capacity(windows.len() * plane);
        for &(ci, s) in windows {
            let c = &self.clips[ci];
            match cfg.mode {
                Mode::Prediction => {
                    x.extend_from_slice(&c.frames[s * plane..(s + t - 1) * plane]);
                    y.extend_from_slice(&c.frames[(s + t - 1) * plane..(s + t) * plane]);
                }
                Mode::Reconstruction => {
                    x.extend_from_slice(&c.frames[s * plane..(s + 1) * plane]);
                    y.extend_from_slice(&c.frames[s * plane..(s + 1) * plane]);
                }
            }
        }
        let b = windows.len();
        Ok((
            Tensor::from_vec(
                x,
                (b, inputs * cfg.channels, self.height, self.width),
                device,
            )?,
            Tensor::from_vec(y, (b, cfg.channels, self.height, self.width), device)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_runs_skip_events_and_short_runs() {
        let l = [0, 0, 0, 1, 0, 0, -1, 0, 0, 0, 0];
        assert_eq!(normal_runs(&l, 3), vec![(0, 3), (7, 11)]);
        assert_eq!(normal_runs(&l, 2), vec![(0, 3), (4, 6), (7, 11)]);
    }

    #[test]
    fn windows_batches_and_holdout() {
        let mut s = FrameSet::new(1, 2);
        for (k, n) in [(0.0f32, 6usize), (100.0, 5)] {
            s.clips.push(Clip {
                name: format!("c{k}"),
                frames: (0..n * 2).map(|i| k + i as f32).collect(),
                n,
            });
        }
        let cfg = ModelConfig::preset("tiny").unwrap();
        assert_eq!(s.windows(5), vec![(0, 0), (0, 1), (1, 0)]);
        let (x, y) = s.batch(&[(0, 1)], &cfg, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[1, 4, 1, 2]);
        assert_eq!(
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![2., 3., 4., 5., 6., 7., 8., 9.]
        );
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![10., 11.]
        );
        let (train, val) = s.clone().split_holdout(0.3, 5);
        assert_eq!((train.clips.len(), val.clips.len()), (1, 1));
        assert_eq!(val.clips[0].name, "c100");
        let mut one = FrameSet::new(1, 2);
        one.clips.push(s.clips[0].clone());
        one.clips[0].n = 6;
        let single = Clip {
            n: 20,
            frames: vec![0.0; 40],
            name: "x".into(),
        };
        one.clips[0] = single;
        let (t, v) = one.split_holdout(0.25, 5);
        assert_eq!((t.clips[0].n, v.clips[0].n), (15, 5));
    }
}
