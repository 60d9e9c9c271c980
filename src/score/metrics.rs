//! Detection metrics over labelled clips, as the evaluation protocol defines them: micro AUC
//! (all frames concatenated), macro AUC (mean over clips with both classes; the others are
//! skipped and counted) and average precision.

use crate::stats::{auc, average_precision};

/// One clip's per-frame anomaly scores and labels (true = anomalous).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipScores {
    /// Clip name, for reports.
    pub name: String,
    /// Anomaly score per frame (higher = more anomalous).
    pub scores: Vec<f64>,
    /// Label per frame.
    pub labels: Vec<bool>,
}

/// The metrics of a set of clips.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Detection {
    /// AUC over all frames of all clips together (None without both classes).
    pub micro_auc: Option<f64>,
    /// Mean AUC over the clips that have both classes.
    pub macro_auc: Option<f64>,
    /// Clips left out of the macro AUC for having one class only.
    pub macro_skipped: usize,
    /// Average precision over all frames.
    pub average_precision: Option<f64>,
    /// Frames in total.
    pub frames: usize,
    /// Anomalous frames in total.
    pub anomalous_frames: usize,
}

/// Computes micro/macro AUC and average precision over `clips`.
pub fn detection(clips: &[ClipScores]) -> Detection {
    let mut all_s = Vec::new();
    let mut all_l = Vec::new();
    let mut per_clip = Vec::new();
    let mut skipped = 0;
    for c in clips {
        let n = c.scores.len().min(c.labels.len());
        all_s.extend_from_slice(&c.scores[..n]);
        all_l.extend_from_slice(&c.labels[..n]);
        match auc(&c.scores[..n], &c.labels[..n]) {
            Some(a) => per_clip.push(a),
            None => skipped += 1,
        }
    }
    Detection {
        micro_auc: auc(&all_s, &all_l),
        macro_auc: (!per_clip.is_empty())
            .then(|| per_clip.iter().sum::<f64>() / per_clip.len() as f64),
        macro_skipped: skipped,
        average_precision: average_precision(&all_s, &all_l),
        frames: all_s.len(),
        anomalous_frames: all_l.iter().filter(|&&l| l).count(),
    }
}

/// Per-clip min–max normalisation (the paper's offline protocol): each clip's scores mapped to
/// [0, 1]; a constant clip maps to 0.
pub fn min_max_per_clip(scores: &[f64]) -> Vec<f64> {
    crate::stats::min_max(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(name: &str, scores: &[f64], labels: &[u8]) -> ClipScores {
        ClipScores {
            name: name.into(),
            scores: scores.to_vec(),
            labels: labels.iter().map(|&l| l == 1).collect(),
        }
    }

    #[test]
    fn micro_and_macro_differ_as_defined() {
        // Clip a ranks perfectly (AUC 1) but on a higher score scale than clip b (AUC 0.5 with
        // a tie); a third clip is all normal and is skipped by the macro mean.
        let clips = [
            clip("a", &[0.6, 0.9], &[0, 1]),
            clip("b", &[0.1, 0.1], &[0, 1]),
            clip("c", &[0.2, 0.3], &[0, 0]),
        ];
        let d = detection(&clips);
        assert_eq!(d.macro_auc, Some(0.75));
        assert_eq!(d.macro_skipped, 1);
        // Micro: scores 0.6 0.9 0.1 0.1 0.2 0.3 with labels 0 1 0 1 0 0. Positives 0.9 (beats
        // all 4 negatives) and 0.1 (ties one negative 0.1: half) -> (4 + 0.5) / 8.
        assert_eq!(d.micro_auc, Some(4.5 / 8.0));
        assert_eq!((d.frames, d.anomalous_frames), (6, 2));
        assert!(d.average_precision.is_some());
    }

    #[test]
    fn min_max_per_clip_maps_to_unit_range() {
        assert_eq!(min_max_per_clip(&[2.0, 4.0, 3.0]), vec![0.0, 1.0, 0.5]);
        assert_eq!(min_max_per_clip(&[5.0, 5.0]), vec![0.0, 0.0]);
    }
}
