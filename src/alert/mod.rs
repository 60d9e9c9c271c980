//! Alerts: the versioned JSON records the board hands to its sinks, the [`Sink`] seam they go
//! through, the durable outbox in front of the sinks, the stdout sink, and the serial line's
//! NMEA codec and sink, and the MQTT sink.

pub mod listen;
pub mod mqtt;
pub mod nmea;
pub mod outbox;
pub mod serial;
pub mod stdout;

use std::fmt::Write as _;

use crate::score::zones::Region;

/// Version of the alert schema; bumped on any incompatible change.
pub const ALERT_SCHEMA_VERSION: u32 = 1;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// An anomaly event started.
    AnomalyStart,
    /// A running anomaly event reached a new peak.
    AnomalyUpdate,
    /// An anomaly event ended.
    AnomalyEnd,
    /// A periodic health record, or a camera fault.
    Health,
    /// The drift monitor changed state.
    Drift,
}

impl AlertKind {
    /// Stable name (as in the JSON).
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::AnomalyStart => "anomaly-start",
            AlertKind::AnomalyUpdate => "anomaly-update",
            AlertKind::AnomalyEnd => "anomaly-end",
            AlertKind::Health => "health",
            AlertKind::Drift => "drift",
        }
    }
}

/// The anomaly part of an alert.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AnomalyInfo {
    /// Event id, the same for the start, updates and end of one event.
    pub event: u64,
    /// Score of the frame that raised this alert (robust σ, or margin over the regime's
    /// threshold when the calibration has several regimes).
    pub score: f64,
    /// Highest score of the event so far.
    pub peak_score: f64,
    /// The alarm threshold the score is compared with.
    pub threshold: f64,
    /// Calibration regime in force (e.g. `day`, `all`).
    pub regime: String,
    /// Zone holding the largest region, if any.
    pub zone: Option<String>,
    /// Anomalous regions on the model's grid (boxes, areas, temperatures when radiometric).
    pub regions: Vec<Region>,
    /// First and latest frame of the event.
    pub frames: [u64; 2],
    /// Capture time of the event's first frame, µs since the Unix epoch (or stream start).
    pub start_us: i64,
}

/// One alert, as every sink receives it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Alert {
    /// Schema version ([`ALERT_SCHEMA_VERSION`]).
    pub schema: u32,
    /// Unique, time-sortable id (ULID).
    pub id: String,
    /// Sequence number per camera, from 1, never reused across restarts of the same data dir.
    pub seq: u64,
    /// Site name.
    pub site: String,
    /// Camera name.
    pub camera: String,
    /// What it is about.
    pub kind: AlertKind,
    /// Capture time of the frame it is about, µs.
    pub time_us: i64,
    /// Wall-clock time it was raised, µs since the Unix epoch.
    pub raised_us: i64,
    /// Anomaly details for anomaly alerts.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub anomaly: Option<AnomalyInfo>,
    /// Health or drift details (free-form JSON object).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<serde_json::Value>,
    /// Short hash of the model file that scored the frame.
    pub model: String,
    /// Snapshot files (PNG, raw 16-bit crop), relative to the data directory.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub snapshot: Vec<String>,
}

impl Alert {
    /// A one-line human summary (stdout sink, logs).
    pub fn summary(&self) -> String {
        let mut s = format!("[{}] {} #{}", self.camera, self.kind.name(), self.seq);
        if let Some(a) = &self.anomaly {
            let _ = write!(
                s,
                " event {} score {:.1} (peak {:.1}, threshold {:.1}, {})",
                a.event, a.score, a.peak_score, a.threshold, a.regime
            );
            if let Some(z) = &a.zone {
                let _ = write!(s, " zone {z}");
            }
            if let Some(r) = a.regions.first() {
                let _ = write!(
                    s,
                    " region {}x{}@({},{})",
                    r.bbox[2] + 1 - r.bbox[0],
                    r.bbox[3] + 1 - r.bbox[1],
                    r.bbox[0],
                    r.bbox[1]
                );
                if let Some([hi, _]) = r.temperature_c {
                    let _ = write!(s, " {hi:.1}°C");
                }
            }
        }
        if let Some(d) = &self.detail {
            match d.get("summary").and_then(|v| v.as_str()) {
                Some(line) => {
                    let _ = write!(s, " {line}");
                }
                None => {
                    let _ = write!(s, " {d}");
                }
            }
        }
        if let Some(p) = self.snapshot.first() {
            let _ = write!(s, " snapshot {p}");
        }
        s
    }
}

/// Why a sink could not take an alert.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {detail}")]
pub struct SinkError {
    /// The sink's name.
    pub sink: String,
    /// What went wrong.
    pub detail: String,
}

/// Somewhere alerts go. Sinks must not block the loop for long; durable delivery with retries
/// lives behind this seam (the outbox).
pub trait Sink: Send {
    /// The sink's name (logs, stats).
    fn name(&self) -> &str;

    /// Takes one alert.
    fn deliver(&mut self, alert: &Alert) -> Result<(), SinkError>;

    /// Delivers whatever is pending (shutdown).
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// True once after the sink (re)connected to its consumer: the loop then re-sends the
    /// outbox's backlog at once instead of waiting out the retry backoff.
    fn reconnected(&mut self) -> bool {
        false
    }
}

/// Crockford base32 alphabet (ULIDs).
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A ULID: 48 bits of milliseconds since the Unix epoch, then 80 bits of `entropy`; sorting the
/// strings sorts by time.
pub fn ulid(unix_ms: u64, entropy: u128) -> String {
    let v: u128 = (u128::from(unix_ms & 0xFFFF_FFFF_FFFF) << 80) | (entropy & ((1u128 << 80) - 1));
    (0..26)
        .map(|i| {
            let shift = 125 - 5 * i;
            CROCKFORD[((v >> shift) & 31) as usize] as char
        })
        .collect()
}

/// A small valid alert for unit tests: `anomaly` filled for the anomaly kinds only.
#[cfg(test)]
pub(crate) fn sample_alert(kind: AlertKind, seq: u64, score: f64) -> Alert {
    let anomalous = matches!(
        kind,
        AlertKind::AnomalyStart | AlertKind::AnomalyUpdate | AlertKind::AnomalyEnd
    );
    Alert {
        schema: ALERT_SCHEMA_VERSION,
        id: ulid(1_700_000_000_000 + seq, 7),
        seq,
        site: "harbor".into(),
        camera: "pier".into(),
        kind,
        time_us: seq as i64,
        raised_us: 0,
        anomaly: anomalous.then(|| AnomalyInfo {
            event: 4,
            score,
            peak_score: score,
            threshold: 16.0,
            regime: "all".into(),
            zone: None,
            regions: vec![],
            frames: [1, 2],
            start_us: 0,
        }),
        detail: None,
        model: "m".into(),
        snapshot: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_sort_by_time_and_use_crockford_base32() {
        let a = ulid(1_700_000_000_000, 5);
        let b = ulid(1_700_000_000_001, 0);
        let c = ulid(1_700_000_000_001, 1);
        assert_eq!(a.len(), 26);
        assert!(a < b && b < c);
        assert!(a.bytes().all(|ch| CROCKFORD.contains(&ch)));
        // The reference ULID spec example: time 0 and entropy 0 is all zeros.
        assert_eq!(ulid(0, 0), "0".repeat(26));
        assert_eq!(&ulid(u64::MAX, 0)[..10], "7ZZZZZZZZZ");
    }

    #[test]
    fn alerts_round_trip_through_json_with_kebab_case_kinds() {
        let alert = Alert {
            schema: ALERT_SCHEMA_VERSION,
            id: ulid(1, 2),
            seq: 3,
            site: "harbor".into(),
            camera: "pier".into(),
            kind: AlertKind::AnomalyStart,
            time_us: 10,
            raised_us: 11,
            anomaly: Some(AnomalyInfo {
                event: 7,
                score: 20.0,
                peak_score: 21.0,
                threshold: 16.0,
                regime: "all".into(),
                zone: Some("pier-end".into()),
                regions: vec![],
                frames: [4, 5],
                start_us: 9,
            }),
            detail: None,
            model: "abc".into(),
            snapshot: vec!["snapshots/x.png".into()],
        };
        let json = serde_json::to_string(&alert).unwrap();
        assert!(json.contains("\"kind\":\"anomaly-start\""), "{json}");
        let back: Alert = serde_json::from_str(&json).unwrap();
        assert_eq!(back, alert);
        let line = alert.summary();
        assert!(
            line.contains("anomaly-start #3") && line.contains("zone pier-end"),
            "{line}"
        );
    }
}
