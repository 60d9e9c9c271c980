//! The serial sink: alerts as NMEA 0183 sentences to a PLC or a marine alarm panel, repeated until
//! the consumer acknowledges them, with heartbeats, optional standard `ALR`/`HBT` output, and the
//! port reopened after an unplug.
//!
//! [`Link`] is the whole delivery state (pending alerts, repeat and heartbeat timers, alarm
//! table) as a plain state machine: values in, sentences out, no I/O. [`SerialSink`] is the thin
//! shell: a worker thread that owns the port, writes what the link says is due, feeds what it reads
//! to the [`Parser`] and the link, and reopens the port when it fails. The wire protocol is in
//! `docs/serial-protocol.md`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::nmea::{
    AlertRecord, Alr, AlrOrder, Dialect, Hbt, Heartbeat, NmeaError, Parser, ParserStats, Sentence,
};
use super::{Alert, AlertKind, Sink, SinkError};

/// Alerts written per pass of the worker, so a long backlog after a reconnect does not hold the
/// line (or acknowledgements) up for long.
const MAX_ALERTS_PER_POLL: usize = 8;

/// Read timeout of the port: the worker's tick.
const READ_TIMEOUT: Duration = Duration::from_millis(50);

/// Grace on top of the transmit time before a stuck write counts as a line failure.
const WRITE_SLACK: Duration = Duration::from_secs(2);

/// Most anomaly events whose alarm number is remembered (events normally end and are forgotten).
const MAX_OPEN_EVENTS: usize = 1024;

/// Parity of the serial line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// No parity bit (NMEA 0183 default, 8N1).
    #[default]
    None,
    /// Odd parity.
    Odd,
    /// Even parity.
    Even,
}

impl From<Parity> for serialport::Parity {
    fn from(p: Parity) -> Self {
        match p {
            Parity::None => serialport::Parity::None,
            Parity::Odd => serialport::Parity::Odd,
            Parity::Even => serialport::Parity::Even,
        }
    }
}

impl std::str::FromStr for Parity {
    type Err = String;

    /// `none`, `odd` or `even`, as in the config file.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Parity::None),
            "odd" => Ok(Parity::Odd),
            "even" => Ok(Parity::Even),
            other => Err(format!("parity {other:?}: use none, odd or even")),
        }
    }
}

/// Read/write errors that only mean "nothing yet": the worker carries on.
fn transient(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::TimedOut | io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
    )
}

/// Which health alerts go on the line (the heartbeat always carries the camera state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthPolicy {
    /// Every health record.
    All,
    /// Only camera faults.
    #[default]
    Faults,
    /// None.
    None,
}

/// Standard `ALR` (and `HBT`) output for marine alarm panels.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlrConfig {
    /// Talker id of our `ALR`/`HBT` sentences.
    pub talker: String,
    /// Order of the condition and acknowledge fields (check the panel's manual).
    pub order: AlrOrder,
    /// Seconds between repeats of every active alarm.
    pub repeat_s: f64,
    /// Also send a standard `HBT` with each heartbeat.
    pub hbt: bool,
    /// Alarm numbers (1–999) by `camera/zone`, `zone`, `camera` or `camera/fault`; others get a
    /// stable number from a hash of the key (100–999).
    pub alarms: BTreeMap<String, u16>,
}

impl Default for AlrConfig {
    fn default() -> Self {
        Self {
            talker: "II".into(),
            order: AlrOrder::default(),
            repeat_s: 30.0,
            hbt: true,
            alarms: BTreeMap::new(),
        }
    }
}

/// Settings of the serial sink.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SerialConfig {
    /// Device path (`/dev/ttyUSB0`, a `/dev/serial/by-id/…` link survives re-enumeration).
    pub port: String,
    /// Baud rate (NMEA 0183: 4800; high-speed: 38400).
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
    /// Data bits, 7 or 8.
    pub data_bits: u8,
    /// Stop bits, 1 or 2.
    pub stop_bits: u8,
    /// Seconds between heartbeats.
    pub heartbeat_s: f64,
    /// Seconds before an unacknowledged alert is sent again.
    pub repeat_s: f64,
    /// Whether alerts wait for `$PTHEK` (or an alarm acknowledgement); when off, an alert is
    /// delivered once written (write-only panels).
    pub require_ack: bool,
    /// Most alerts held unacknowledged; beyond it `deliver` fails, so the caller (the outbox)
    /// keeps the alert and offers it again.
    pub max_pending: usize,
    /// Seconds between attempts to reopen a failed port.
    pub reopen_s: f64,
    /// Seconds `flush` waits for acknowledgements at shutdown.
    pub flush_timeout_s: f64,
    /// Which health alerts are sent.
    pub health: HealthPolicy,
    /// Standard `ALR`/`HBT` output, when set.
    pub alr: Option<AlrConfig>,
}

impl Default for SerialConfig {
    fn default() -> Self {
        Self {
            port: String::new(),
            baud: 4800,
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
            heartbeat_s: 10.0,
            repeat_s: 5.0,
            require_ack: true,
            max_pending: 256,
            reopen_s: 2.0,
            flush_timeout_s: 5.0,
            health: HealthPolicy::Faults,
            alr: None,
        }
    }
}

/// Why the serial sink could not be set up or take an alert.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// A setting is invalid.
    #[error("serial config: {0}")]
    Config(String),
    /// The alert could not be framed.
    #[error("alert {seq}: {source}")]
    Encode {
        /// Alert sequence number.
        seq: u64,
        /// Cause.
        source: NmeaError,
    },
    /// Too many alerts are waiting for acknowledgement.
    #[error("{pending} alerts unacknowledged (max_pending); alert {seq} refused")]
    Full {
        /// Alerts pending.
        pending: usize,
        /// The refused alert.
        seq: u64,
    },
    /// The worker thread could not start.
    #[error("serial worker thread: {0}")]
    Thread(#[source] io::Error),
}

fn seconds(what: &str, v: f64, min: f64) -> Result<Duration, SerialError> {
    if !(v.is_finite() && v >= min) {
        return Err(SerialError::Config(format!(
            "{what} = {v}: must be at least {min}"
        )));
    }
    Duration::try_from_secs_f64(v).map_err(|e| SerialError::Config(format!("{what} = {v}: {e}")))
}

impl SerialConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), SerialError> {
        let bad = |m: String| Err(SerialError::Config(m));
        if self.port.is_empty() {
            return bad("port is empty".into());
        }
        if self.baud == 0 {
            return bad("baud must be positive".into());
        }
        if !matches!(self.data_bits, 7 | 8) {
            return bad(format!("data_bits = {}: 7 or 8", self.data_bits));
        }
        if !matches!(self.stop_bits, 1 | 2) {
            return bad(format!("stop_bits = {}: 1 or 2", self.stop_bits));
        }
        if self.max_pending == 0 {
            return bad("max_pending must be at least 1".into());
        }
        seconds("heartbeat_s", self.heartbeat_s, 0.05)?;
        seconds("repeat_s", self.repeat_s, 0.05)?;
        seconds("reopen_s", self.reopen_s, 0.01)?;
        seconds("flush_timeout_s", self.flush_timeout_s, 0.0)?;
        if let Some(alr) = &self.alr {
            seconds("alr.repeat_s", alr.repeat_s, 0.05)?;
            Hbt {
                talker: alr.talker.clone(),
                interval_s: 1.0,
                ok: true,
                seq: 0,
            }
            .encode()
            .map_err(|e| SerialError::Config(format!("alr.talker: {e}")))?;
            if let Some((k, n)) = alr.alarms.iter().find(|(_, &n)| n == 0 || n > 999) {
                return bad(format!("alr.alarms.{k:?} = {n}: 1 to 999"));
            }
        }
        Ok(())
    }
}

/// FNV-1a, for stable alarm numbers across restarts and builds.
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The alarm number of `keys` (most specific first): the configured one, or 100–999 from a hash of
/// the first key.
fn alarm_number(cfg: &AlrConfig, keys: &[String]) -> u16 {
    keys.iter()
        .find_map(|k| cfg.alarms.get(k).copied())
        .unwrap_or_else(|| 100 + (fnv1a(&keys[0]) % 900) as u16)
}

/// Counters of a [`Link`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Alerts taken for the line.
    pub submitted: u64,
    /// Alerts not meant for the line (health policy).
    pub filtered: u64,
    /// Alerts refused because too many were pending.
    pub refused: u64,
    /// First transmissions.
    pub sent: u64,
    /// Repeated transmissions.
    pub repeated: u64,
    /// Alerts acknowledged (or written, without `require_ack`).
    pub delivered: u64,
    /// Acknowledgements of nothing pending (duplicates after repeats, stale numbers).
    pub unknown_acks: u64,
    /// Alarm acknowledgements (`ACK`, `ACN`).
    pub alarm_acks: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// `ALR` sentences sent.
    pub alr_sent: u64,
    /// Other valid sentences received and ignored.
    pub ignored: u64,
}

#[derive(Debug, Clone)]
struct Pending {
    seq: u64,
    id: String,
    lines: Vec<String>,
    alarm: Option<u16>,
    sent: Option<Instant>,
    sends: u32,
}

#[derive(Debug, Clone, Default)]
struct Alarm {
    events: BTreeSet<u64>,
    fault: bool,
    acknowledged: bool,
    time: String,
    text: String,
    version: u64,
    sent_version: u64,
}

impl Alarm {
    fn active(&self) -> bool {
        self.fault || !self.events.is_empty()
    }
}

/// What the link wants written now; hand it back to [`Link::written`] once it is on the wire.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// Framed sentences, CR LF included, in order.
    pub lines: Vec<String>,
    alerts: Vec<(u64, String)>,
    alarms: Vec<(u16, u64)>,
    alr_cycle: bool,
    heartbeat: bool,
}

impl Outgoing {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// The serial line's delivery state without I/O: which alerts wait for acknowledgement and when
/// they are due again, heartbeats, and the `ALR` alarm table.
#[derive(Debug, Clone)]
pub struct Link {
    cfg: SerialConfig,
    heartbeat: Duration,
    repeat: Duration,
    alr_repeat: Duration,
    started: Instant,
    pending: VecDeque<Pending>,
    alarms: BTreeMap<u16, Alarm>,
    event_alarm: BTreeMap<(String, u64), u16>,
    last_seq: u64,
    ok: bool,
    hb_last: Option<Instant>,
    hbt_seq: u8,
    alr_last: Option<Instant>,
    stats: LinkStats,
}

impl Link {
    /// A link with nothing pending; `now` starts the uptime.
    pub fn new(cfg: SerialConfig, now: Instant) -> Result<Self, SerialError> {
        cfg.validate()?;
        Ok(Self {
            heartbeat: seconds("heartbeat_s", cfg.heartbeat_s, 0.05)?,
            repeat: seconds("repeat_s", cfg.repeat_s, 0.05)?,
            alr_repeat: match &cfg.alr {
                Some(a) => seconds("alr.repeat_s", a.repeat_s, 0.05)?,
                None => Duration::MAX,
            },
            cfg,
            started: now,
            pending: VecDeque::new(),
            alarms: BTreeMap::new(),
            event_alarm: BTreeMap::new(),
            last_seq: 0,
            ok: true,
            hb_last: None,
            hbt_seq: 0,
            alr_last: None,
            stats: LinkStats::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Alerts waiting for acknowledgement (or for their first write).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Sequence numbers pending, oldest first.
    pub fn pending_seqs(&self) -> Vec<u64> {
        self.pending.iter().map(|p| p.seq).collect()
    }

    /// Whether the heartbeat reports normal status (no camera fault).
    pub fn status_ok(&self) -> bool {
        self.ok
    }

    /// Takes an alert: queues its sentences, updates the alarm table and the heartbeat status.
    /// Refuses it (the caller keeps it) when `max_pending` alerts wait already.
    pub fn submit(&mut self, alert: &Alert) -> Result<(), SerialError> {
        let camera_state = alert
            .detail
            .as_ref()
            .and_then(|d| d.get("camera"))
            .and_then(|v| v.as_str());
        let send = match (alert.kind, self.cfg.health) {
            (AlertKind::Health, HealthPolicy::All) => true,
            (AlertKind::Health, HealthPolicy::Faults) => camera_state == Some("fault"),
            (AlertKind::Health, HealthPolicy::None) => false,
            _ => true,
        };
        let mut lines = Vec::new();
        if send {
            if self
                .pending
                .iter()
                .any(|p| p.id == alert.id && p.seq == alert.seq)
            {
                log::debug!("serial: alert {} already pending", alert.seq);
                return Ok(());
            }
            if self.pending.len() >= self.cfg.max_pending {
                self.stats.refused += 1;
                return Err(SerialError::Full {
                    pending: self.pending.len(),
                    seq: alert.seq,
                });
            }
            lines =
                AlertRecord::from_alert(alert)
                    .encode()
                    .map_err(|source| SerialError::Encode {
                        seq: alert.seq,
                        source,
                    })?;
        }
        if alert.kind == AlertKind::Health {
            match camera_state {
                Some("fault" | "reconnecting") => self.ok = false,
                Some("streaming") => self.ok = true,
                _ => {}
            }
        }
        let alarm = self.update_alarms(alert, camera_state);
        if !send {
            self.stats.filtered += 1;
            return Ok(());
        }
        self.stats.submitted += 1;
        self.last_seq = alert.seq;
        self.pending.push_back(Pending {
            seq: alert.seq,
            id: alert.id.clone(),
            lines,
            alarm,
            sent: None,
            sends: 0,
        });
        Ok(())
    }

    /// Applies an alert to the alarm table; returns its alarm number.
    fn update_alarms(&mut self, alert: &Alert, camera_state: Option<&str>) -> Option<u16> {
        let cfg = self.cfg.alr.as_ref()?;
        let (time, _) = super::nmea::utc_time_date(alert.raised_us);
        let cam = alert.camera.as_str();
        match (alert.kind, &alert.anomaly) {
            (AlertKind::AnomalyStart | AlertKind::AnomalyUpdate, Some(a)) => {
                let key = (cam.to_string(), a.event);
                let number = match self.event_alarm.get(&key) {
                    Some(&n) => n,
                    None => {
                        let mut keys = Vec::new();
                        if let Some(z) = &a.zone {
                            keys.push(format!("{cam}/{z}"));
                            keys.push(z.clone());
                        }
                        keys.push(cam.to_string());
                        let n = alarm_number(cfg, &keys);
                        if self.event_alarm.len() >= MAX_OPEN_EVENTS {
                            log::warn!("serial: {MAX_OPEN_EVENTS} anomaly events never ended; forgetting them");
                            self.event_alarm.clear();
                        }
                        self.event_alarm.insert(key, n);
                        n
                    }
                };
                let alarm = self.alarms.entry(number).or_default();
                if alert.kind == AlertKind::AnomalyStart && !alarm.active() {
                    alarm.acknowledged = false;
                }
                alarm.events.insert(a.event);
                alarm.time = time;
                let mut text = format!("THERMAL {cam}");
                if let Some(z) = &a.zone {
                    text.push('/');
                    text.push_str(z);
                }
                text.push_str(&format!(" {:.1}>{:.1}", a.score, a.threshold));
                let tmax = a
                    .regions
                    .iter()
                    .filter_map(|r| r.temperature_c.map(|[hi, _]| hi))
                    .reduce(f32::max);
                if let Some(t) = tmax {
                    text.push_str(&format!(" {t:.1}C"));
                }
                alarm.text = text;
                alarm.version += 1;
                Some(number)
            }
            (AlertKind::AnomalyEnd, Some(a)) => {
                let number = self.event_alarm.remove(&(cam.to_string(), a.event))?;
                if let Some(alarm) = self.alarms.get_mut(&number) {
                    alarm.events.remove(&a.event);
                    if !alarm.active() {
                        alarm.time = time;
                        alarm.version += 1;
                    }
                }
                Some(number)
            }
            (AlertKind::Health, _) => {
                let key = format!("{cam}/fault");
                let number = alarm_number(cfg, std::slice::from_ref(&key));
                match camera_state {
                    Some("fault") => {
                        let alarm = self.alarms.entry(number).or_default();
                        if !alarm.active() {
                            alarm.acknowledged = false;
                        }
                        alarm.fault = true;
                        alarm.time = time;
                        alarm.text = format!("CAMERA FAULT {cam}");
                        alarm.version += 1;
                        Some(number)
                    }
                    Some("streaming") => {
                        let alarm = self.alarms.get_mut(&number)?;
                        if alarm.fault {
                            alarm.fault = false;
                            alarm.time = time;
                            alarm.version += 1;
                        }
                        Some(number)
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Takes a sentence from the consumer: acknowledgements of alerts and of alarms.
    pub fn on_sentence(&mut self, sentence: &Sentence) {
        match sentence {
            Sentence::Ack(ack) => {
                for &seq in &ack.seqs {
                    // Only what went out can be acknowledged: a stale number from before a restart
                    // must not swallow an alert the consumer never saw.
                    let before = self.pending.len();
                    self.pending.retain(|p| !(p.seq == seq && p.sends > 0));
                    let acked = before - self.pending.len();
                    if acked == 0 {
                        self.stats.unknown_acks += 1;
                        log::debug!("serial: acknowledgement of {seq}, which is not pending");
                    } else {
                        self.stats.delivered += acked as u64;
                        log::debug!("serial: alert {seq} acknowledged");
                    }
                }
            }
            Sentence::AlarmAck(a) => self.acknowledge_alarm(a.number),
            Sentence::Acn(a) if a.is_acknowledge() => match u16::try_from(a.identifier) {
                Ok(n) if n <= 999 => self.acknowledge_alarm(n),
                _ => self.stats.ignored += 1,
            },
            _ => self.stats.ignored += 1,
        }
    }

    fn acknowledge_alarm(&mut self, number: u16) {
        self.stats.alarm_acks += 1;
        if let Some(alarm) = self.alarms.get_mut(&number) {
            if !alarm.acknowledged {
                alarm.acknowledged = true;
                alarm.version += 1;
            }
        }
        // Someone on the bridge saw the alarm: its alerts count as delivered.
        let before = self.pending.len();
        self.pending
            .retain(|p| !(p.alarm == Some(number) && p.sends > 0));
        self.stats.delivered += (before - self.pending.len()) as u64;
    }

    /// The port was (re)opened: everything pending, the alarm cycle and a heartbeat are due now.
    pub fn reconnected(&mut self) {
        for p in &mut self.pending {
            p.sent = None;
        }
        self.hb_last = None;
        self.alr_last = None;
    }

    /// What is due at `now`: new and repeated alerts (oldest first, a bounded batch), changed and
    /// periodic alarms, the heartbeat. Nothing changes until [`written`](Self::written).
    pub fn poll(&self, now: Instant) -> Outgoing {
        let mut out = Outgoing::default();
        let due = |last: Option<Instant>, every: Duration| {
            last.is_none_or(|t| now.saturating_duration_since(t) >= every)
        };
        for p in self
            .pending
            .iter()
            .filter(|p| due(p.sent, self.repeat))
            .take(MAX_ALERTS_PER_POLL)
        {
            out.lines.extend(p.lines.iter().cloned());
            out.alerts.push((p.seq, p.id.clone()));
        }
        if let Some(alr) = &self.cfg.alr {
            out.alr_cycle = due(self.alr_last, self.alr_repeat);
            for (&number, a) in &self.alarms {
                if a.version == a.sent_version && !(out.alr_cycle && a.active()) {
                    continue;
                }
                let sentence = Alr {
                    talker: alr.talker.clone(),
                    time: a.time.clone(),
                    number,
                    active: a.active(),
                    acknowledged: a.acknowledged,
                    text: a.text.clone(),
                };
                match sentence.encode(alr.order) {
                    Ok(line) => {
                        out.lines.push(line);
                        out.alarms.push((number, a.version));
                    }
                    Err(e) => log::error!("serial: ALR {number}: {e}"),
                }
            }
        }
        if due(self.hb_last, self.heartbeat) {
            out.heartbeat = true;
            let interval_s = self.cfg.heartbeat_s.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
            let hb = Heartbeat {
                ok: self.ok,
                last_seq: self.last_seq,
                pending: self.pending.len() as u64,
                uptime_s: now.saturating_duration_since(self.started).as_secs(),
                interval_s,
            };
            match hb.encode() {
                Ok(line) => out.lines.push(line),
                Err(e) => log::error!("serial: heartbeat: {e}"),
            }
            if let Some(alr) = self.cfg.alr.as_ref().filter(|a| a.hbt) {
                let hbt = Hbt {
                    talker: alr.talker.clone(),
                    interval_s: self.cfg.heartbeat_s,
                    ok: self.ok,
                    seq: self.hbt_seq,
                };
                match hbt.encode() {
                    Ok(line) => out.lines.push(line),
                    Err(e) => log::error!("serial: HBT: {e}"),
                }
            }
        }
        out
    }

    /// Records that `out` (from [`poll`](Self::poll)) is on the wire.
    pub fn written(&mut self, out: &Outgoing, now: Instant) {
        for (seq, id) in &out.alerts {
            let Some(i) = self
                .pending
                .iter()
                .position(|p| p.seq == *seq && p.id == *id)
            else {
                continue;
            };
            let p = &mut self.pending[i];
            if p.sends == 0 {
                self.stats.sent += 1;
            } else {
                self.stats.repeated += 1;
            }
            p.sent = Some(now);
            p.sends = p.sends.saturating_add(1);
            if !self.cfg.require_ack {
                self.pending.remove(i);
                self.stats.delivered += 1;
            }
        }
        for &(number, version) in &out.alarms {
            self.stats.alr_sent += 1;
            let Some(a) = self.alarms.get_mut(&number) else {
                continue;
            };
            // A change made after the poll is still unsent.
            if a.version == version {
                a.sent_version = version;
                if !a.active() {
                    self.alarms.remove(&number);
                }
            }
        }
        if out.alr_cycle {
            self.alr_last = Some(now);
        }
        if out.heartbeat {
            self.hb_last = Some(now);
            self.hbt_seq = (self.hbt_seq + 1) % 10;
            self.stats.heartbeats += 1;
        }
    }
}

/// State of the port, as the worker last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineStats {
    /// The port is open.
    pub connected: bool,
    /// Successful opens (the first and every reopen).
    pub opens: u64,
    /// Failed attempts to open.
    pub open_failures: u64,
    /// Read or write failures that closed the port.
    pub io_errors: u64,
    /// The latest failure.
    pub last_error: Option<String>,
    /// What the parser made of the consumer's bytes.
    pub parser: ParserStats,
}

/// A snapshot of the sink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SerialStats {
    /// The port.
    pub line: LineStats,
    /// Delivery counters.
    pub link: LinkStats,
    /// Alerts waiting for acknowledgement.
    pub pending: usize,
}

struct Shared {
    link: Mutex<Link>,
    line: Mutex<LineStats>,
    stop: AtomicBool,
}

/// A poisoned lock means the worker panicked mid-update (a bug); the state is still the best there is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Alerts to a serial port as NMEA 0183 sentences (see the module docs).
pub struct SerialSink {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
    flush_timeout: Duration,
}

impl SerialSink {
    /// Starts the worker; the port need not exist yet (it is opened, and reopened, in the background).
    pub fn start(cfg: SerialConfig) -> Result<Self, SerialError> {
        let link = Link::new(cfg.clone(), Instant::now())?;
        let flush_timeout = seconds("flush_timeout_s", cfg.flush_timeout_s, 0.0)?;
        let shared = Arc::new(Shared {
            link: Mutex::new(link),
            line: Mutex::new(LineStats::default()),
            stop: AtomicBool::new(false),
        });
        let worker_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("serial-sink".into())
            .spawn(move || Worker::new(cfg, worker_shared).run())
            .map_err(SerialError::Thread)?;
        Ok(Self {
            shared,
            worker: Some(worker),
            flush_timeout,
        })
    }

    /// Counters and the port state now.
    pub fn stats(&self) -> SerialStats {
        let link = lock(&self.shared.link);
        SerialStats {
            line: lock(&self.shared.line).clone(),
            link: link.stats(),
            pending: link.pending(),
        }
    }
}

impl Sink for SerialSink {
    fn name(&self) -> &str {
        "serial"
    }

    fn deliver(&mut self, alert: &Alert) -> Result<(), SinkError> {
        lock(&self.shared.link)
            .submit(alert)
            .map_err(|e| SinkError {
                sink: "serial".into(),
                detail: e.to_string(),
            })
    }

    /// Waits up to `flush_timeout_s` for every pending alert to be acknowledged.
    fn flush(&mut self) -> Result<(), SinkError> {
        let deadline = Instant::now() + self.flush_timeout;
        loop {
            let pending = lock(&self.shared.link).pending();
            if pending == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SinkError {
                    sink: "serial".into(),
                    detail: format!(
                        "{pending} alerts still unacknowledged after {:.1} s",
                        self.flush_timeout.as_secs_f64()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SerialSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            if w.join().is_err() {
                log::error!("serial: the worker thread panicked");
            }
        }
    }
}

/// The I/O shell: owns the port and the parser.
struct Worker {
    cfg: SerialConfig,
    shared: Arc<Shared>,
    parser: Parser,
    reopen: Duration,
    /// Logged once per outage, not once per attempt.
    outage_logged: bool,
}

impl Worker {
    fn new(cfg: SerialConfig, shared: Arc<Shared>) -> Self {
        let dialect = Dialect {
            alr_order: cfg.alr.as_ref().map(|a| a.order).unwrap_or_default(),
        };
        Self {
            // Validated by Link::new before the worker starts.
            reopen: Duration::try_from_secs_f64(cfg.reopen_s).unwrap_or(Duration::from_secs(2)),
            cfg,
            shared,
            parser: Parser::new(dialect),
            outage_logged: false,
        }
    }

    fn open(&self) -> Result<Box<dyn serialport::SerialPort>, serialport::Error> {
        let parity = serialport::Parity::from(self.cfg.parity);
        let data_bits = match self.cfg.data_bits {
            7 => serialport::DataBits::Seven,
            _ => serialport::DataBits::Eight,
        };
        let stop_bits = match self.cfg.stop_bits {
            2 => serialport::StopBits::Two,
            _ => serialport::StopBits::One,
        };
        serialport::new(self.cfg.port.as_str(), self.cfg.baud)
            .parity(parity)
            .data_bits(data_bits)
            .stop_bits(stop_bits)
            .flow_control(serialport::FlowControl::None)
            .timeout(READ_TIMEOUT)
            .open()
    }

    fn run(mut self) {
        let mut port: Option<Box<dyn serialport::SerialPort>> = None;
        let mut next_open = Instant::now();
        let mut buf = [0u8; 512];
        let mut events = Vec::new();
        while !self.shared.stop.load(Ordering::Relaxed) {
            let Some(p) = port.as_mut() else {
                if Instant::now() >= next_open {
                    port = self.try_open();
                    next_open = Instant::now() + self.reopen;
                } else {
                    std::thread::sleep(READ_TIMEOUT.min(self.reopen));
                }
                continue;
            };
            let out = lock(&self.shared.link).poll(Instant::now());
            if !out.is_empty() {
                if let Err(e) = self.write(p.as_mut(), &out.lines) {
                    self.failed("write", &e);
                    port = None;
                    next_open = Instant::now() + self.reopen;
                    continue;
                }
                lock(&self.shared.link).written(&out, Instant::now());
            }
            match p.read(&mut buf) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "end of file");
                    self.failed("read", &e);
                    port = None;
                    next_open = Instant::now() + self.reopen;
                }
                Ok(n) => {
                    events.clear();
                    self.parser.feed_into(&buf[..n], &mut events);
                    let mut link = lock(&self.shared.link);
                    for e in &events {
                        match e {
                            Ok(s) => link.on_sentence(s),
                            Err(r) => log::debug!("serial {}: rejected {r}", self.cfg.port),
                        }
                    }
                    drop(link);
                    lock(&self.shared.line).parser = self.parser.stats();
                }
                Err(e) if transient(e.kind()) => {}
                Err(e) => {
                    self.failed("read", &e);
                    port = None;
                    next_open = Instant::now() + self.reopen;
                }
            }
        }
        log::debug!("serial {}: worker stopped", self.cfg.port);
    }

    fn try_open(&mut self) -> Option<Box<dyn serialport::SerialPort>> {
        match self.open() {
            Ok(p) => {
                log::info!(
                    "serial {}: open at {} baud, parity {:?}",
                    self.cfg.port,
                    self.cfg.baud,
                    self.cfg.parity
                );
                self.outage_logged = false;
                if let Some(r) = self.parser.reset() {
                    log::debug!("serial {}: dropped {r}", self.cfg.port);
                }
                lock(&self.shared.link).reconnected();
                let mut line = lock(&self.shared.line);
                line.connected = true;
                line.opens += 1;
                line.parser = self.parser.stats();
                Some(p)
            }
            Err(e) => {
                if self.outage_logged {
                    log::debug!("serial {}: still cannot open: {e}", self.cfg.port);
                } else {
                    log::warn!(
                        "serial {}: cannot open ({e}); retrying every {:.1} s",
                        self.cfg.port,
                        self.reopen.as_secs_f64()
                    );
                    self.outage_logged = true;
                }
                let mut line = lock(&self.shared.line);
                line.open_failures += 1;
                line.last_error = Some(format!("open: {e}"));
                None
            }
        }
    }

    fn failed(&mut self, what: &str, e: &io::Error) {
        log::warn!(
            "serial {}: {what} failed ({e}); closing and reopening, unacknowledged alerts will be repeated",
            self.cfg.port
        );
        self.outage_logged = true;
        let mut line = lock(&self.shared.line);
        line.connected = false;
        line.io_errors += 1;
        line.last_error = Some(format!("{what}: {e}"));
    }

    /// Writes every line; a line that cannot take them within their transmit time plus slack failed.
    fn write(&self, port: &mut dyn serialport::SerialPort, lines: &[String]) -> io::Result<()> {
        let bytes = lines.concat();
        // 10 or more bits per character on the wire.
        let transmit =
            Duration::from_secs_f64(bytes.len() as f64 * 12.0 / f64::from(self.cfg.baud));
        let deadline = Instant::now() + transmit + WRITE_SLACK;
        let mut rest = bytes.as_bytes();
        while !rest.is_empty() {
            match port.write(rest) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote nothing")),
                Ok(n) => rest = &rest[n..],
                Err(e) if transient(e.kind()) && Instant::now() < deadline => {}
                Err(e) => return Err(e),
            }
        }
        port.flush()
    }
}

#[cfg(test)]
mod tests;
