//! The consumer side of alert delivery, without I/O: validates alerts received over MQTT (JSON)
//! or a serial line (reassembled NMEA records) and drops duplicates by id. `edge-cli listen`
//! wraps it around a broker subscription or a serial port.

use std::collections::{BTreeMap, HashSet, VecDeque};

use super::nmea::AlertRecord;
use super::{Alert, AlertKind, ALERT_SCHEMA_VERSION};

/// Ids remembered for deduplication; a re-sent alert older than this many newer ones would be
/// shown again (the outbox re-sends within minutes, long before).
pub const DEDUP_WINDOW: usize = 100_000;

/// What one received message turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Received<T> {
    /// A valid alert not seen before.
    New(T),
    /// A valid alert already seen (same id): re-sent after a reconnect or a lost ack.
    Duplicate(String),
    /// Not a valid alert; the reason names the field.
    Invalid(String),
}

/// Counts of what was received.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ListenStats {
    /// Valid, new alerts.
    pub new: u64,
    /// Valid alerts seen before.
    pub duplicates: u64,
    /// Rejected messages, by reason (the text before the first colon).
    pub invalid: BTreeMap<String, u64>,
}

/// Validation and deduplication state.
#[derive(Debug, Default)]
pub struct Receiver {
    seen: HashSet<String>,
    order: VecDeque<String>,
    stats: ListenStats,
}

/// Checks an alert beyond what its JSON shape guarantees.
pub fn validate(alert: &Alert) -> Result<(), String> {
    if alert.schema != ALERT_SCHEMA_VERSION {
        return Err(format!(
            "schema: version {} (this listener reads {ALERT_SCHEMA_VERSION})",
            alert.schema
        ));
    }
    validate_id(&alert.id)?;
    if alert.seq == 0 {
        return Err("seq: 0 (numbers start at 1)".into());
    }
    if alert.camera.is_empty() {
        return Err("camera: empty".into());
    }
    let anomaly_kind = matches!(
        alert.kind,
        AlertKind::AnomalyStart | AlertKind::AnomalyUpdate | AlertKind::AnomalyEnd
    );
    match (&alert.anomaly, anomaly_kind) {
        (None, true) => return Err(format!("anomaly: missing in a {} alert", alert.kind.name())),
        (Some(_), false) => {
            return Err(format!("anomaly: present in a {} alert", alert.kind.name()))
        }
        (Some(a), true) => {
            if !(a.score.is_finite() && a.threshold.is_finite() && a.peak_score.is_finite()) {
                return Err("anomaly: score, peak_score and threshold must be numbers".into());
            }
            if a.frames[0] > a.frames[1] {
                return Err(format!(
                    "anomaly.frames: first {} after latest {}",
                    a.frames[0], a.frames[1]
                ));
            }
        }
        (None, false) => {}
    }
    Ok(())
}

/// A ULID: 26 Crockford base32 characters.
pub fn validate_id(id: &str) -> Result<(), String> {
    const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    if id.len() != 26 || !id.chars().all(|c| CROCKFORD.contains(c)) {
        return Err(format!("id: {id:?} is not a ULID"));
    }
    Ok(())
}

impl Receiver {
    /// An empty receiver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts so far.
    pub fn stats(&self) -> &ListenStats {
        &self.stats
    }

    fn reject<T>(&mut self, why: String) -> Received<T> {
        let key = why.split(':').next().unwrap_or("other").trim().to_string();
        *self.stats.invalid.entry(key).or_default() += 1;
        Received::Invalid(why)
    }

    /// Remembers `id`; false if it was already there.
    fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            self.stats.duplicates += 1;
            return false;
        }
        if self.order.len() >= DEDUP_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(id.to_string());
        self.order.push_back(id.to_string());
        self.stats.new += 1;
        true
    }

    /// Takes one MQTT `events` payload.
    pub fn accept_json(&mut self, payload: &[u8]) -> Received<Alert> {
        let alert: Alert = match serde_json::from_slice(payload) {
            Ok(a) => a,
            Err(e) => return self.reject(format!("json: {e}")),
        };
        if let Err(e) = validate(&alert) {
            return self.reject(e);
        }
        if self.first_time(&alert.id) {
            Received::New(alert)
        } else {
            Received::Duplicate(alert.id)
        }
    }

    /// Takes one alert reassembled from the serial line (checksums were checked by the parser).
    pub fn accept_record(&mut self, rec: AlertRecord) -> Received<AlertRecord> {
        if let Err(e) = validate_id(&rec.id) {
            return self.reject(e);
        }
        if rec.seq == 0 {
            return self.reject("seq: 0 (numbers start at 1)".into());
        }
        if self.first_time(&rec.id) {
            Received::New(rec)
        } else {
            Received::Duplicate(rec.id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(seq: u64, kind: AlertKind) -> Alert {
        crate::alert::sample_alert(kind, seq, 20.0)
    }

    #[test]
    fn duplicates_are_recognised_by_id() {
        let mut r = Receiver::new();
        let a = serde_json::to_vec(&alert(1, AlertKind::AnomalyStart)).unwrap();
        assert!(matches!(r.accept_json(&a), Received::New(_)));
        assert!(matches!(r.accept_json(&a), Received::Duplicate(_)));
        let b = serde_json::to_vec(&alert(2, AlertKind::Health)).unwrap();
        assert!(matches!(r.accept_json(&b), Received::New(_)));
        assert_eq!((r.stats().new, r.stats().duplicates), (2, 1));
    }

    #[test]
    fn invalid_alerts_are_rejected_with_the_field_named() {
        let mut r = Receiver::new();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{not json".to_vec(), "json"),
            (
                {
                    let mut a = alert(1, AlertKind::AnomalyStart);
                    a.schema = 99;
                    serde_json::to_vec(&a).unwrap()
                },
                "schema",
            ),
            (
                {
                    let mut a = alert(1, AlertKind::AnomalyStart);
                    a.id = "not-an-id".into();
                    serde_json::to_vec(&a).unwrap()
                },
                "id",
            ),
            (
                {
                    let mut a = alert(1, AlertKind::AnomalyEnd);
                    a.anomaly = None;
                    serde_json::to_vec(&a).unwrap()
                },
                "anomaly",
            ),
            (
                {
                    let mut a = alert(0, AlertKind::Health);
                    a.seq = 0;
                    serde_json::to_vec(&a).unwrap()
                },
                "seq",
            ),
        ];
        for (payload, field) in &cases {
            match r.accept_json(payload) {
                Received::Invalid(why) => assert!(why.starts_with(field), "{why}"),
                other => panic!("{field}: accepted {other:?}"),
            }
        }
        assert_eq!(r.stats().invalid.values().sum::<u64>(), cases.len() as u64);
        assert_eq!(r.stats().new, 0);
    }

    #[test]
    fn the_dedup_window_is_bounded() {
        let mut r = Receiver::new();
        for i in 0..(DEDUP_WINDOW + 10) {
            assert!(r.first_time(&format!("{i}")));
        }
        assert_eq!(r.seen.len(), DEDUP_WINDOW);
        assert!(r.first_time("0"), "the oldest id was forgotten");
        assert!(!r.first_time(&format!("{}", DEDUP_WINDOW + 9)));
    }
}
