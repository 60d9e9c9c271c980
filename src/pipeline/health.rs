//! The loop's health record: counters, latency percentiles over a fixed window, camera state,
//! backend, model, drift, uptime. Published every N seconds to the log and the sinks.

use heapless::HistoryBuf;

/// Frames whose latency the percentiles cover.
pub const LATENCY_WINDOW: usize = 256;

/// Per-frame latencies (µs) of the last [`LATENCY_WINDOW`] scored frames, without allocating.
#[derive(Debug, Clone, Default)]
pub struct LatencyWindow {
    buf: HistoryBuf<u32, LATENCY_WINDOW>,
}

impl LatencyWindow {
    /// Records one frame's latency.
    pub fn push(&mut self, us: u32) {
        self.buf.write(us);
    }

    /// The p-th percentile (0–100, nearest rank) in milliseconds; None before any frame.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        let n = self.buf.len();
        if n == 0 {
            return None;
        }
        let mut v = [0u32; LATENCY_WINDOW];
        v[..n].copy_from_slice(self.buf.as_slice());
        let v = &mut v[..n];
        v.sort_unstable();
        let rank = ((p / 100.0) * n as f64).ceil().clamp(1.0, n as f64) as usize;
        Some(f64::from(v[rank - 1]) / 1e3)
    }
}

/// Where the camera stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CameraState {
    /// Frames are arriving.
    Streaming,
    /// The camera failed; the loop is reconnecting.
    Reconnecting,
    /// A replay reached its end.
    Ended,
}

impl CameraState {
    /// Stable name (as in the JSON).
    pub fn name(self) -> &'static str {
        match self {
            CameraState::Streaming => "streaming",
            CameraState::Reconnecting => "reconnecting",
            CameraState::Ended => "ended",
        }
    }
}

/// Counters of the loop since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Frames captured (read from the source).
    pub frames_in: u64,
    /// Frames the scheduler skipped because they were not due.
    pub skipped: u64,
    /// Periods dropped because their frame came late.
    pub dropped_late: u64,
    /// Frames the guards held back (frozen, FFC, steps).
    pub paused: u64,
    /// Frames that filled the history before scoring could start or restart.
    pub warming: u64,
    /// Frames scored.
    pub scored: u64,
    /// Memory updates applied.
    pub memory_updates: u64,
    /// Alerts raised.
    pub alerts: u64,
    /// Alerts a sink failed to take.
    pub sink_errors: u64,
    /// Camera faults (each followed by a reconnect).
    pub camera_faults: u64,
}

/// One health record.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HealthRecord {
    /// Seconds since the loop started.
    pub uptime_s: f64,
    /// Counters.
    pub counters: Counters,
    /// Median whole-frame latency (preprocess, score, events), ms.
    pub latency_p50_ms: Option<f64>,
    /// 99th-percentile whole-frame latency, ms.
    pub latency_p99_ms: Option<f64>,
    /// Camera state.
    pub camera: CameraState,
    /// Backend running the model.
    pub backend: String,
    /// Short hash of the model file.
    pub model: String,
    /// Drift state of the current regime (`ok`, `warn`, `recalibrate`), with its reason.
    pub drift: String,
    /// Frames held back by each guard.
    pub guards: crate::frame::guard::GuardCounts,
    /// Resident memory of the process, KiB (Linux; None elsewhere).
    pub rss_kib: Option<u64>,
    /// Open file descriptors of the process (Linux; None elsewhere).
    pub open_fds: Option<usize>,
    /// Score of the latest scored frame (robust σ), for dashboards between events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_score: Option<f64>,
    /// The forward pass's memory plan (tract backends): calls served from its arena, calls
    /// that differed, arena size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_plan: Option<crate::alloc::PlanStats>,
}

/// Resident set size of this process in KiB, from `/proc/self/statm`.
pub fn rss_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()? / 1024)
}

/// Number of open file descriptors of this process, from `/proc/self/fd`.
pub fn open_fds() -> Option<usize> {
    // The directory handle itself is one of the entries while it is being read.
    Some(
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .count()
            .saturating_sub(1),
    )
}

impl HealthRecord {
    /// A one-line summary for the log.
    pub fn summary(&self) -> String {
        let c = &self.counters;
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        format!(
            "up {:.0} s: {} in, {} scored, {} skipped, {} late, {} paused, {} alerts; latency p50 {} ms p99 {} ms; camera {}; {} {}; drift {}; RSS {} MiB, {} fds",
            self.uptime_s,
            c.frames_in,
            c.scored,
            c.skipped,
            c.dropped_late,
            c.paused,
            c.alerts,
            ms(self.latency_p50_ms),
            ms(self.latency_p99_ms),
            self.camera.name(),
            self.backend,
            self.model,
            self.drift,
            self.rss_kib
                .map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0)),
            self.open_fds.map_or("-".to_string(), |n| n.to_string())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank_over_the_last_window() {
        let mut w = LatencyWindow::default();
        assert_eq!(w.percentile_ms(50.0), None);
        for us in 1..=100u32 {
            w.push(us * 1000);
        }
        assert_eq!(w.percentile_ms(50.0), Some(50.0));
        assert_eq!(w.percentile_ms(99.0), Some(99.0));
        assert_eq!(w.percentile_ms(100.0), Some(100.0));
        // Older frames fall out of the window.
        for _ in 0..LATENCY_WINDOW {
            w.push(7_000);
        }
        assert_eq!(w.percentile_ms(99.0), Some(7.0));
    }
}
