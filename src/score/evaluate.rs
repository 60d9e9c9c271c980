//! Offline evaluation of scored clips against their labels: the two scoring protocols (the
//! paper's per-clip min–max and the causal score a board runs), frame-level metrics, event-level
//! recall and false alarms per hour at the calibrated threshold, and a per-anomaly-type
//! breakdown. Sans-I/O: callers score the clips and get the report back.

use std::collections::BTreeMap;

use crate::score::calibration::{Calibration, CalibrationError, RegimeScorer};
use crate::score::events::{EventConfig, EventConfigError, EventDetector, Phase};
use crate::score::metrics::{detection, min_max_per_clip, ClipScores, Detection};
use crate::stats::{auc, roc_curve};

/// One scored frame of a clip: the score terms and the label.
#[derive(Debug, Clone, PartialEq)]
pub struct TermFrame {
    /// Frame index in the clip (frames before the stack fills are never scored).
    pub seq: u64,
    /// Capture time, µs.
    pub t_us: i64,
    /// Mean scene temperature, °C, when radiometric.
    pub scene_c: Option<f64>,
    /// MNAD's whole-frame PSNR of the prediction, dB (the paper protocol's term).
    pub psnr_frame: f64,
    /// The prediction-error term as the calibration pools and masks it, dB (the causal one's).
    pub psnr: f64,
    /// Feature distance to the memory.
    pub distance: f64,
    /// Each calibrated zone's prediction-error term (PSNR, dB); empty without zones.
    pub zones: Vec<f64>,
    /// Whether the frame is labelled anomalous.
    pub anomalous: bool,
}

/// A labelled anomaly: a run of anomalous frames, with its type when a manifest names it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LabelledEvent {
    /// Anomaly type (e.g. `car-reversing`), if known.
    pub kind: Option<String>,
    /// First anomalous frame.
    pub first: u64,
    /// Last anomalous frame (inclusive).
    pub last: u64,
}

/// A clip's scored frames and its labelled anomalies.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredClip {
    /// Clip name, for reports.
    pub name: String,
    /// Scored frames in order.
    pub frames: Vec<TermFrame>,
    /// Labelled anomalies (from a manifest, or the runs of anomalous labels).
    pub anomalies: Vec<LabelledEvent>,
}

/// How per-frame scores are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Per-clip min–max of each term (offline, looks at the whole clip; the paper's protocol).
    Paper,
    /// Terms standardised against the calibration's normal statistics, no look-ahead (the board).
    Causal,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Paper => "paper",
            Protocol::Causal => "causal",
        })
    }
}

/// The paper's anomaly score of each frame: 1 − (α·mm(PSNR) + (1 − α)·(1 − mm(distance))),
/// with mm the min–max over the clip (a constant term maps to 0, so it cannot divide by zero).
pub fn paper_scores(frames: &[TermFrame], alpha: f64) -> Vec<f64> {
    let psnr: Vec<f64> = frames.iter().map(|f| f.psnr_frame).collect();
    let dist: Vec<f64> = frames.iter().map(|f| f.distance).collect();
    let (p, d) = (min_max_per_clip(&psnr), min_max_per_clip(&dist));
    p.iter()
        .zip(&d)
        .map(|(p, d)| 1.0 - (alpha * p + (1.0 - alpha) * (1.0 - d)))
        .collect()
}

/// The calibrated causal score of each frame of one clip (the smoothing starts afresh with the
/// clip), each frame in its regime; compare with [`RegimeScorer::threshold`].
pub fn causal_scores(
    frames: &[TermFrame],
    cal: &Calibration,
) -> Result<Vec<f64>, CalibrationError> {
    let mut s = RegimeScorer::new(cal);
    frames
        .iter()
        .map(|f| {
            s.push(f.t_us, f.scene_c, f.psnr, f.distance, &f.zones)
                .map(|v| v.score)
        })
        .collect()
}

/// The runs of anomalous frames, as labelled events without a type (for sources whose labels
/// are all there is). Consecutive scored frames form a run even across unscored gaps.
pub fn label_runs(frames: &[TermFrame]) -> Vec<LabelledEvent> {
    let mut out: Vec<LabelledEvent> = Vec::new();
    let mut open = false;
    for f in frames {
        match (f.anomalous, open) {
            (true, true) => {
                if let Some(e) = out.last_mut() {
                    e.last = f.seq;
                }
            }
            (true, false) => out.push(LabelledEvent {
                kind: None,
                first: f.seq,
                last: f.seq,
            }),
            _ => {}
        }
        open = f.anomalous;
    }
    out
}

/// How alarms are raised in the evaluation (as on the board).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlarmSettings {
    /// The event detector: enter/exit thresholds, minimum frames, cooldown.
    pub events: EventConfig,
    /// Frames per second of the footage, for rates per hour.
    pub fps: f64,
    /// Frames after a labelled anomaly's last frame in which an alarm still counts as a
    /// detection (a prediction model keeps erring while the anomaly is in its input frames).
    pub slack_frames: u64,
}

/// An alarm raised on a clip.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Alarm {
    /// First frame.
    pub first: u64,
    /// Last frame.
    pub last: u64,
    /// Peak score.
    pub peak: f64,
    /// Whether it overlaps a labelled anomaly.
    pub true_alarm: bool,
}

/// Event-level results at the alarm threshold.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EventMetrics {
    /// The settings used.
    pub settings: AlarmSettings,
    /// Labelled anomalies.
    pub labelled: usize,
    /// Labelled anomalies overlapped by at least one alarm.
    pub detected: usize,
    /// detected / labelled (None without labelled anomalies).
    pub recall: Option<f64>,
    /// Alarms raised.
    pub alarms: usize,
    /// Alarms overlapping no labelled anomaly.
    pub false_alarms: usize,
    /// Hours of footage evaluated (scored frames / fps).
    pub hours: f64,
    /// False alarms per hour of footage.
    pub false_alarms_per_hour: f64,
    /// Mean frames from a detected anomaly's first frame to the first alarm frame on it.
    pub mean_delay_frames: Option<f64>,
    /// Fraction of anomalous frames at or above the enter threshold.
    pub frame_tpr: Option<f64>,
    /// Fraction of normal frames at or above the enter threshold.
    pub frame_fpr: Option<f64>,
}

/// One clip's line in the report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClipReport {
    /// Clip name.
    pub name: String,
    /// Frames scored.
    pub frames: usize,
    /// Anomalous frames among them.
    pub anomalous_frames: usize,
    /// The clip's AUC (None with one class only).
    pub auc: Option<f64>,
    /// Labelled anomalies.
    pub labelled: usize,
    /// Of them detected (with alarm settings).
    pub detected: Option<usize>,
    /// Alarms raised (with alarm settings).
    pub alarms: Option<Vec<Alarm>>,
}

/// Results for one anomaly type.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TypeReport {
    /// Labelled anomalies of the type.
    pub events: usize,
    /// Of them detected (with alarm settings).
    pub detected: Option<usize>,
    /// Frames of the type.
    pub frames: usize,
    /// AUC of this type's frames against all normal frames.
    pub auc: Option<f64>,
}

/// The evaluation of one protocol.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProtocolReport {
    /// Protocol.
    pub protocol: Protocol,
    /// Micro/macro AUC and average precision.
    pub detection: Detection,
    /// Event-level results (when an alarm threshold was given).
    pub events: Option<EventMetrics>,
    /// Per anomaly type (labelled events with a type only).
    pub by_type: BTreeMap<String, TypeReport>,
    /// Per clip.
    pub clips: Vec<ClipReport>,
    /// ROC curve over all frames (false-positive rate, true-positive rate), thinned for plots.
    pub roc: Vec<(f64, f64)>,
}

/// Alarms of one clip's scores.
fn alarms(
    clip: &ScoredClip,
    scores: &[f64],
    s: &AlarmSettings,
) -> Result<Vec<Alarm>, EventConfigError> {
    let mut det = EventDetector::new(s.events.clone(), 0)?;
    let mut out = Vec::new();
    let mut handle = |u: crate::score::events::EventUpdate| {
        if u.phase == Phase::End {
            let true_alarm = clip
                .anomalies
                .iter()
                .any(|a| u.first_frame <= a.last + s.slack_frames && u.last_frame >= a.first);
            out.push(Alarm {
                first: u.first_frame,
                last: u.last_frame,
                peak: u.peak_score,
                true_alarm,
            });
        }
    };
    for (f, &score) in clip.frames.iter().zip(scores) {
        if let Some(u) = det.push(f.seq, f.t_us, score) {
            handle(u);
        }
    }
    if let Some(u) = det.finish() {
        handle(u);
    }
    Ok(out)
}

/// Keeps at most `max` points of a curve (always its ends), for plots and reports.
fn thin(curve: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if curve.len() <= max || max < 2 {
        return curve;
    }
    let step = (curve.len() - 1) as f64 / (max - 1) as f64;
    (0..max)
        .map(|i| curve[((i as f64 * step).round() as usize).min(curve.len() - 1)])
        .collect()
}

/// Evaluates `scores` (one vector per clip, aligned with its frames) of `protocol`; with
/// `alarm` also at the event level.
pub fn evaluate(
    clips: &[ScoredClip],
    scores: &[Vec<f64>],
    protocol: Protocol,
    alarm: Option<&AlarmSettings>,
) -> Result<ProtocolReport, EventConfigError> {
    let clip_scores: Vec<ClipScores> = clips
        .iter()
        .zip(scores)
        .map(|(c, s)| ClipScores {
            name: c.name.clone(),
            scores: s.clone(),
            labels: c.frames.iter().map(|f| f.anomalous).collect(),
        })
        .collect();
    let det = detection(&clip_scores);
    let all_s: Vec<f64> = clip_scores.iter().flat_map(|c| c.scores.clone()).collect();
    let all_l: Vec<bool> = clip_scores.iter().flat_map(|c| c.labels.clone()).collect();

    let mut reports = Vec::new();
    let mut by_type: BTreeMap<String, TypeReport> = BTreeMap::new();
    let (mut labelled, mut detected, mut n_alarms, mut false_alarms) = (0, 0, 0, 0);
    let mut delays = Vec::new();
    for (c, s) in clips.iter().zip(scores) {
        let labels: Vec<bool> = c.frames.iter().map(|f| f.anomalous).collect();
        let clip_alarms = alarm.map(|a| alarms(c, s, a)).transpose()?;
        let mut clip_detected = 0;
        for a in &c.anomalies {
            let hit = clip_alarms.as_ref().and_then(|al| {
                al.iter()
                    .filter(|x| {
                        x.first <= a.last + alarm.map_or(0, |s| s.slack_frames) && x.last >= a.first
                    })
                    .map(|x| x.first.max(a.first) - a.first)
                    .min()
            });
            if let Some(d) = hit {
                clip_detected += 1;
                delays.push(d as f64);
            }
            if let Some(kind) = &a.kind {
                let t = by_type.entry(kind.clone()).or_insert(TypeReport {
                    events: 0,
                    detected: alarm.map(|_| 0),
                    frames: 0,
                    auc: None,
                });
                t.events += 1;
                if hit.is_some() {
                    t.detected = t.detected.map(|d| d + 1);
                }
            }
        }
        labelled += c.anomalies.len();
        detected += clip_detected;
        if let Some(al) = &clip_alarms {
            n_alarms += al.len();
            false_alarms += al.iter().filter(|a| !a.true_alarm).count();
        }
        reports.push(ClipReport {
            name: c.name.clone(),
            frames: c.frames.len(),
            anomalous_frames: labels.iter().filter(|&&l| l).count(),
            auc: auc(s, &labels),
            labelled: c.anomalies.len(),
            detected: clip_alarms.as_ref().map(|_| clip_detected),
            alarms: clip_alarms,
        });
    }

    // Per type: that type's frames against every normal frame.
    let normal: Vec<f64> = all_s
        .iter()
        .zip(&all_l)
        .filter(|(_, &l)| !l)
        .map(|(s, _)| *s)
        .collect();
    for (kind, t) in by_type.iter_mut() {
        let mut pos = Vec::new();
        for (c, s) in clips.iter().zip(scores) {
            for a in c.anomalies.iter().filter(|a| a.kind.as_ref() == Some(kind)) {
                for (f, v) in c.frames.iter().zip(s) {
                    if f.anomalous && (a.first..=a.last).contains(&f.seq) {
                        pos.push(*v);
                    }
                }
            }
        }
        t.frames = pos.len();
        let mut sc = normal.clone();
        let mut lb = vec![false; normal.len()];
        sc.extend_from_slice(&pos);
        lb.extend(std::iter::repeat_n(true, pos.len()));
        t.auc = auc(&sc, &lb);
    }

    let events = alarm.map(|a| {
        let hours = all_s.len() as f64 / a.fps / 3600.0;
        let rate = |want: bool| {
            let n = all_l.iter().filter(|&&l| l == want).count();
            (n > 0).then(|| {
                all_s
                    .iter()
                    .zip(&all_l)
                    .filter(|(s, &l)| l == want && **s >= a.events.enter)
                    .count() as f64
                    / n as f64
            })
        };
        EventMetrics {
            settings: a.clone(),
            labelled,
            detected,
            recall: (labelled > 0).then(|| detected as f64 / labelled as f64),
            alarms: n_alarms,
            false_alarms,
            hours,
            false_alarms_per_hour: if hours > 0.0 {
                false_alarms as f64 / hours
            } else {
                0.0
            },
            mean_delay_frames: (!delays.is_empty())
                .then(|| delays.iter().sum::<f64>() / delays.len() as f64),
            frame_tpr: rate(true),
            frame_fpr: rate(false),
        }
    });
    Ok(ProtocolReport {
        protocol,
        detection: det,
        events,
        by_type,
        clips: reports,
        roc: thin(roc_curve(&all_s, &all_l).unwrap_or_default(), 512),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(psnr: &[f64], labels: &[u8]) -> Vec<TermFrame> {
        psnr.iter()
            .zip(labels)
            .enumerate()
            .map(|(i, (&p, &l))| TermFrame {
                seq: i as u64 + 4,
                t_us: (i as i64 + 4) * 1_000_000,
                scene_c: None,
                psnr_frame: p,
                psnr: p,
                distance: 0.0,
                zones: vec![],
                anomalous: l == 1,
            })
            .collect()
    }

    #[test]
    fn paper_scores_min_max_each_clip() {
        let f = frames(&[30.0, 20.0, 25.0], &[0, 1, 0]);
        // α = 1: anomaly = 1 − mm(PSNR) -> 0, 1, 0.5.
        assert_eq!(paper_scores(&f, 1.0), vec![0.0, 1.0, 0.5]);
        // Constant distance maps to 0, so the (1 − α) term contributes 1 − α to normality.
        let s = paper_scores(&f, 0.6);
        assert!((s[0] - 0.0).abs() < 1e-12 && (s[1] - 0.6).abs() < 1e-12);
    }

    #[test]
    fn label_runs_split_at_normal_frames() {
        let f = frames(&[0.0; 7], &[0, 1, 1, 0, 1, 0, 0]);
        let runs = label_runs(&f);
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].first, runs[0].last), (5, 6));
        assert_eq!((runs[1].first, runs[1].last), (8, 8));
    }

    fn settings(enter: f64) -> AlarmSettings {
        AlarmSettings {
            events: EventConfig {
                enter,
                exit: enter,
                min_frames: 1,
                cooldown_frames: 0,
                zone: None,
            },
            fps: 1.0,
            slack_frames: 1,
        }
    }

    #[test]
    fn events_count_detections_false_alarms_and_types() {
        // Clip a: anomaly at frames 6..=7 (indices 2, 3) is caught one frame late; a false alarm
        // at index 6. Clip b: an anomaly that is never caught.
        let a = ScoredClip {
            name: "a".into(),
            frames: frames(&[0.0; 8], &[0, 0, 1, 1, 0, 0, 0, 0]),
            anomalies: vec![LabelledEvent {
                kind: Some("running".into()),
                first: 6,
                last: 7,
            }],
        };
        let b = ScoredClip {
            name: "b".into(),
            frames: frames(&[0.0; 4], &[0, 1, 1, 0]),
            anomalies: vec![LabelledEvent {
                kind: Some("jumping".into()),
                first: 5,
                last: 6,
            }],
        };
        let sa = vec![0.1, 0.2, 0.3, 0.9, 0.2, 0.1, 0.95, 0.1];
        let sb = vec![0.1, 0.2, 0.3, 0.1];
        let r = evaluate(&[a, b], &[sa, sb], Protocol::Causal, Some(&settings(0.5))).unwrap();
        let e = r.events.as_ref().unwrap();
        assert_eq!(
            (e.labelled, e.detected, e.alarms, e.false_alarms),
            (2, 1, 2, 1)
        );
        assert_eq!(e.recall, Some(0.5));
        assert_eq!(e.mean_delay_frames, Some(1.0));
        assert!((e.hours - 12.0 / 3600.0).abs() < 1e-12);
        assert!((e.false_alarms_per_hour - 300.0).abs() < 1e-9);
        // 1 of 4 anomalous frames and 1 of 8 normal frames reach 0.5.
        assert_eq!((e.frame_tpr, e.frame_fpr), (Some(0.25), Some(0.125)));
        assert_eq!(r.by_type["running"].detected, Some(1));
        assert_eq!(r.by_type["jumping"].detected, Some(0));
        assert_eq!(r.by_type["running"].frames, 2);
        // Running frames 0.3 and 0.9 against normal 0.1 0.2 0.2 0.1 0.95 0.1 0.1 0.1:
        // 0.3 beats 7 of 8, 0.9 beats 7 of 8 -> 14/16.
        assert_eq!(r.by_type["running"].auc, Some(14.0 / 16.0));
        assert_eq!(r.clips[0].detected, Some(1));
        assert_eq!(r.clips[1].auc, Some(1.0));
        assert_eq!(r.roc.first(), Some(&(0.0, 0.0)));
        assert_eq!(r.roc.last(), Some(&(1.0, 1.0)));
    }

    #[test]
    fn alarm_within_slack_after_the_anomaly_still_counts() {
        let c = ScoredClip {
            name: "c".into(),
            frames: frames(&[0.0; 6], &[0, 1, 0, 0, 0, 0]),
            anomalies: vec![LabelledEvent {
                kind: None,
                first: 5,
                last: 5,
            }],
        };
        // Alarm at index 2 = frame 6: one frame after the anomaly, inside slack 1.
        let s = vec![0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        let r = evaluate(
            std::slice::from_ref(&c),
            std::slice::from_ref(&s),
            Protocol::Causal,
            Some(&settings(0.5)),
        )
        .unwrap();
        assert_eq!(r.events.as_ref().unwrap().detected, 1);
        // Two frames late: outside.
        let s = vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let r = evaluate(&[c], &[s], Protocol::Causal, Some(&settings(0.5))).unwrap();
        let e = r.events.unwrap();
        assert_eq!((e.detected, e.false_alarms), (0, 1));
    }
}
