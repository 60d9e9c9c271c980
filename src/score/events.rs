//! Events from per-frame anomaly scores: a sans-I/O state machine with hysteresis (an event
//! starts at the enter threshold and lasts while the score stays at or above the lower exit
//! threshold), a minimum duration (short blips never become events) and a cooldown after an
//! event ends. Each event has a stable id and a `start` / `update` / `end` lifecycle.

/// How scores become events.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventConfig {
    /// Score at or above which an event may start.
    pub enter: f64,
    /// Score below which a running event ends (≤ `enter`).
    pub exit: f64,
    /// Consecutive frames at or above `exit`, with one reaching `enter`, before an event starts.
    pub min_frames: usize,
    /// Frames after an event's end during which no new event starts.
    pub cooldown_frames: usize,
    /// Zone the events belong to (None: the whole frame).
    #[serde(default)]
    pub zone: Option<String>,
}

/// Why an event configuration is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventConfigError {
    /// The exit threshold lies above the enter threshold.
    #[error("event thresholds: exit {exit} must not exceed enter {enter}")]
    Thresholds {
        /// Enter threshold.
        enter: f64,
        /// Exit threshold.
        exit: f64,
    },
    /// A threshold is not a finite number.
    #[error("event thresholds must be finite (enter {enter}, exit {exit})")]
    NotFinite {
        /// Enter threshold.
        enter: f64,
        /// Exit threshold.
        exit: f64,
    },
    /// `min_frames` is 0.
    #[error("event min_frames must be at least 1")]
    MinFrames,
}

impl EventConfig {
    /// Checks the thresholds and durations.
    pub fn validate(&self) -> Result<(), EventConfigError> {
        let (enter, exit) = (self.enter, self.exit);
        if !(enter.is_finite() && exit.is_finite()) {
            return Err(EventConfigError::NotFinite { enter, exit });
        }
        if exit > enter {
            return Err(EventConfigError::Thresholds { enter, exit });
        }
        if self.min_frames == 0 {
            return Err(EventConfigError::MinFrames);
        }
        Ok(())
    }
}

/// Where an event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The event has just been confirmed.
    Start,
    /// The event reached a new peak score.
    Update,
    /// The score fell below the exit threshold (or the stream ended).
    End,
}

/// One lifecycle step of an event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventUpdate {
    /// Stable id, the same for the start, updates and end of one event.
    pub id: u64,
    /// Lifecycle step.
    pub phase: Phase,
    /// Zone, when the detector watches one.
    pub zone: Option<String>,
    /// First frame of the event (where the score first stayed above the exit threshold).
    pub first_frame: u64,
    /// Latest frame of the event.
    pub last_frame: u64,
    /// Capture time of the first frame, µs.
    pub start_us: i64,
    /// Capture time of the latest frame, µs.
    pub last_us: i64,
    /// Highest score so far.
    pub peak_score: f64,
    /// Frame of the highest score.
    pub peak_frame: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Run {
    first_frame: u64,
    start_us: i64,
    last_frame: u64,
    last_us: i64,
    frames: usize,
    peak_score: f64,
    peak_frame: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Idle,
    Pending(Run),
    Active(u64, Run),
}

/// Turns a stream of (frame, time, score) into event updates.
#[derive(Debug, Clone)]
pub struct EventDetector {
    cfg: EventConfig,
    state: State,
    next_id: u64,
    /// No event starts before this frame.
    quiet_until: u64,
}

impl EventDetector {
    /// A detector with a validated configuration; ids start at `first_id` (persist the next id
    /// across restarts to keep ids unique).
    pub fn new(cfg: EventConfig, first_id: u64) -> Result<Self, EventConfigError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            state: State::Idle,
            next_id: first_id,
            quiet_until: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EventConfig {
        &self.cfg
    }

    /// Whether an event is running.
    pub fn active(&self) -> bool {
        matches!(self.state, State::Active(..))
    }

    /// The id the next event will get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    fn update(&self, id: u64, phase: Phase, r: &Run) -> EventUpdate {
        EventUpdate {
            id,
            phase,
            zone: self.cfg.zone.clone(),
            first_frame: r.first_frame,
            last_frame: r.last_frame,
            start_us: r.start_us,
            last_us: r.last_us,
            peak_score: r.peak_score,
            peak_frame: r.peak_frame,
        }
    }

    /// Feeds one frame's score; returns the event update it causes, if any. A non-finite score
    /// counts as below every threshold.
    pub fn push(&mut self, frame: u64, t_us: i64, score: f64) -> Option<EventUpdate> {
        let score = if score.is_finite() {
            score
        } else {
            f64::NEG_INFINITY
        };
        let above_exit = score >= self.cfg.exit;
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => {
                if score >= self.cfg.enter && frame >= self.quiet_until {
                    let run = Run {
                        first_frame: frame,
                        start_us: t_us,
                        last_frame: frame,
                        last_us: t_us,
                        frames: 1,
                        peak_score: score,
                        peak_frame: frame,
                    };
                    return self.confirm_or_wait(run);
                }
                None
            }
            State::Pending(mut run) => {
                if !above_exit {
                    return None;
                }
                extend(&mut run, frame, t_us, score);
                self.confirm_or_wait(run)
            }
            State::Active(id, mut run) => {
                if !above_exit {
                    self.quiet_until = frame + self.cfg.cooldown_frames as u64;
                    return Some(self.update(id, Phase::End, &run));
                }
                let new_peak = score > run.peak_score;
                extend(&mut run, frame, t_us, score);
                let out = new_peak.then(|| self.update(id, Phase::Update, &run));
                self.state = State::Active(id, run);
                out
            }
        }
    }

    fn confirm_or_wait(&mut self, run: Run) -> Option<EventUpdate> {
        if run.frames >= self.cfg.min_frames && run.peak_score >= self.cfg.enter {
            let id = self.next_id;
            self.next_id += 1;
            let out = self.update(id, Phase::Start, &run);
            self.state = State::Active(id, run);
            Some(out)
        } else {
            self.state = State::Pending(run);
            None
        }
    }

    /// Ends a running event (the stream stopped); a pending one is dropped.
    pub fn finish(&mut self) -> Option<EventUpdate> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Active(id, run) => Some(self.update(id, Phase::End, &run)),
            _ => None,
        }
    }
}

fn extend(run: &mut Run, frame: u64, t_us: i64, score: f64) {
    run.last_frame = frame;
    run.last_us = t_us;
    run.frames += 1;
    if score > run.peak_score {
        run.peak_score = score;
        run.peak_frame = frame;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min_frames: usize, cooldown: usize) -> EventConfig {
        EventConfig {
            enter: 0.8,
            exit: 0.5,
            min_frames,
            cooldown_frames: cooldown,
            zone: Some("pier-end".into()),
        }
    }

    /// Feeds scores at 1 fps (frame i at i seconds) and collects (frame, id, phase).
    fn run(d: &mut EventDetector, scores: &[f64]) -> Vec<(u64, u64, Phase)> {
        let mut out = Vec::new();
        for (i, &s) in scores.iter().enumerate() {
            if let Some(u) = d.push(i as u64, i as i64 * 1_000_000, s) {
                out.push((i as u64, u.id, u.phase));
            }
        }
        out
    }

    #[test]
    fn hysteresis_keeps_an_event_between_exit_and_enter() {
        let mut d = EventDetector::new(cfg(1, 0), 7).unwrap();
        let ev = run(&mut d, &[0.1, 0.9, 0.6, 0.55, 0.95, 0.4, 0.1]);
        assert_eq!(
            ev,
            vec![
                (1, 7, Phase::Start),
                (4, 7, Phase::Update),
                (5, 7, Phase::End)
            ]
        );
        assert_eq!(d.next_id(), 8);
        assert!(!d.active());
    }

    #[test]
    fn short_blips_are_not_events_and_the_start_reports_the_first_frame() {
        let mut d = EventDetector::new(cfg(3, 0), 0).unwrap();
        // Two frames above: a blip. Then three (0.6 ≥ exit counts once 0.9 reached enter).
        let ev = run(&mut d, &[0.9, 0.9, 0.1, 0.9, 0.6, 0.7, 0.2]);
        assert_eq!(ev, vec![(5, 0, Phase::Start), (6, 0, Phase::End)]);
        let mut d = EventDetector::new(cfg(3, 0), 0).unwrap();
        let mut first = None;
        for (i, s) in [0.1, 0.85, 0.6, 0.99].into_iter().enumerate() {
            if let Some(u) = d.push(i as u64, 10 * i as i64, s) {
                first = Some(u);
            }
        }
        let u = first.unwrap();
        assert_eq!((u.first_frame, u.start_us, u.last_frame), (1, 10, 3));
        assert_eq!((u.peak_score, u.peak_frame), (0.99, 3));
        assert_eq!(u.zone.as_deref(), Some("pier-end"));
    }

    #[test]
    fn cooldown_suppresses_an_immediate_restart() {
        let mut d = EventDetector::new(cfg(1, 3), 0).unwrap();
        // Event 0 ends at frame 2; frames 3 and 4 are within the cooldown (until frame 5).
        let ev = run(&mut d, &[0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.1]);
        assert_eq!(
            ev,
            vec![
                (0, 0, Phase::Start),
                (2, 0, Phase::End),
                (5, 1, Phase::Start),
                (6, 1, Phase::End)
            ]
        );
    }

    #[test]
    fn finish_ends_a_running_event_and_bad_configs_are_refused() {
        let mut d = EventDetector::new(cfg(1, 0), 0).unwrap();
        assert!(d.push(0, 0, f64::NAN).is_none());
        d.push(1, 1, 0.9);
        let end = d.finish().unwrap();
        assert_eq!((end.id, end.phase), (0, Phase::End));
        assert!(d.finish().is_none());
        let mut bad = cfg(1, 0);
        bad.exit = 0.9;
        assert!(matches!(
            EventDetector::new(bad, 0),
            Err(EventConfigError::Thresholds { .. })
        ));
        assert_eq!(
            EventDetector::new(cfg(0, 0), 0).unwrap_err(),
            EventConfigError::MinFrames
        );
        let mut nan = cfg(1, 0);
        nan.enter = f64::NAN;
        assert!(EventDetector::new(nan, 0).is_err());
    }
}
