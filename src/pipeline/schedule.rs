//! Which captured frames the loop scores: a deadline scheduler on the frames' own capture times
//! (one frame per period, no drift, no backlog), and the pacer that replays recorded footage at
//! an accelerated rate on the wall clock.

use std::time::{Duration, Instant};

/// What the scheduler says about a captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Score it.
    Take,
    /// Not due yet: skip it (the camera runs faster than the scoring rate).
    Skip,
}

/// Picks one frame per period by capture time. Deadlines advance by whole periods from the first
/// frame, so the rate does not drift with capture jitter; when frames arrive late (processing
/// fell behind, the camera stalled), the missed periods are counted and dropped, never caught
/// up in a burst.
#[derive(Debug, Clone)]
pub struct Scheduler {
    period_us: i64,
    tolerance_us: i64,
    next_due: Option<i64>,
    last_t: Option<i64>,
    skipped: u64,
    late: u64,
}

impl Scheduler {
    /// One frame every `period_us` of capture time (≤ 0: every frame).
    pub fn new(period_us: i64) -> Self {
        Self {
            period_us,
            // Capture jitter: a frame a twentieth of a period early still counts as on time.
            tolerance_us: period_us.max(0) / 20,
            next_due: None,
            last_t: None,
            skipped: 0,
            late: 0,
        }
    }

    /// Decides about a frame captured at `t_us`.
    pub fn offer(&mut self, t_us: i64) -> Offer {
        if self.period_us <= 0 {
            return Offer::Take;
        }
        if self.last_t.is_some_and(|last| t_us < last) {
            // The clock went backwards (a reconnect, a new replay file): start afresh.
            self.next_due = None;
        }
        self.last_t = Some(t_us);
        let Some(due) = self.next_due else {
            self.next_due = Some(t_us + self.period_us);
            return Offer::Take;
        };
        if t_us < due - self.tolerance_us {
            self.skipped += 1;
            return Offer::Skip;
        }
        let missed = (t_us - due + self.tolerance_us) / self.period_us;
        self.late += missed.max(0) as u64;
        self.next_due = Some(due + (missed.max(0) + 1) * self.period_us);
        Offer::Take
    }

    /// Frames skipped because they were not due.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Periods whose frame came too late and was dropped.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Forgets the deadline (after a reconnect).
    pub fn reset(&mut self) {
        self.next_due = None;
        self.last_t = None;
    }
}

/// Replays recorded frames on the wall clock at `speed` times real time (0: as fast as
/// possible).
#[derive(Debug, Clone)]
pub struct Pacer {
    speed: f64,
    origin: Option<(Instant, i64)>,
}

impl Pacer {
    /// A pacer at `speed`× real time.
    pub fn new(speed: f64) -> Self {
        Self {
            speed,
            origin: None,
        }
    }

    /// How long to wait before handing over a frame captured at `t_us`.
    pub fn wait(&mut self, t_us: i64, now: Instant) -> Duration {
        if !(self.speed > 0.0 && self.speed.is_finite()) {
            return Duration::ZERO;
        }
        let (start, t0) = *self.origin.get_or_insert((now, t_us));
        if t_us < t0 {
            self.origin = Some((now, t_us));
            return Duration::ZERO;
        }
        let due = start + Duration::from_secs_f64((t_us - t0) as f64 / 1e6 / self.speed);
        due.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn takes(s: &mut Scheduler, times: &[i64]) -> Vec<i64> {
        times
            .iter()
            .copied()
            .filter(|&t| s.offer(t) == Offer::Take)
            .collect()
    }

    #[test]
    fn one_frame_per_period_without_drift() {
        // A 9 fps camera with ±10 ms jitter: exactly one frame per second is taken, and the
        // deadlines stay on the first frame's grid.
        let mut s = Scheduler::new(1_000_000);
        let times: Vec<i64> = (0..90)
            .map(|i| i * 111_111 + if i % 2 == 0 { 10_000 } else { -10_000 })
            .collect();
        let taken = takes(&mut s, &times);
        assert_eq!(taken.len(), 10);
        for (k, t) in taken.iter().enumerate() {
            let grid = k as i64 * 1_000_000;
            assert!((t - grid).abs() < 120_000, "frame {k} at {t}");
        }
        assert_eq!(s.late(), 0);
        assert_eq!(s.skipped(), 80);
    }

    #[test]
    fn late_frames_are_counted_and_not_caught_up() {
        let mut s = Scheduler::new(1_000_000);
        // A 3.5 s stall after the second frame, then frames every 0.25 s again.
        let mut times = vec![0, 1_000_000];
        times.extend((0..12).map(|i| 4_500_000 + i * 250_000));
        let taken = takes(&mut s, &times);
        // 2 and 3 s were missed; 4 s is served by the 4.5 s frame; then 5, 6, 7 s.
        assert_eq!(
            taken,
            vec![0, 1_000_000, 4_500_000, 5_000_000, 6_000_000, 7_000_000]
        );
        assert_eq!(s.late(), 2);
    }

    #[test]
    fn a_clock_going_backwards_restarts_the_schedule() {
        let mut s = Scheduler::new(1_000_000);
        assert_eq!(takes(&mut s, &[0, 500_000, 1_000_000]), vec![0, 1_000_000]);
        assert_eq!(
            takes(&mut s, &[200_000, 700_000, 1_200_000]),
            vec![200_000, 1_200_000]
        );
        let mut every = Scheduler::new(0);
        assert_eq!(takes(&mut every, &[5, 5, 6]).len(), 3);
    }

    #[test]
    fn the_pacer_spaces_frames_by_scene_time_over_speed() {
        let mut p = Pacer::new(10.0);
        let now = Instant::now();
        assert_eq!(p.wait(1_000_000, now), Duration::ZERO);
        let w = p.wait(3_000_000, now);
        assert_eq!(w, Duration::from_millis(200));
        assert_eq!(Pacer::new(0.0).wait(9_000_000, now), Duration::ZERO);
    }
}
