//! The durable outbox: storage round trip, per-sink delivery, retry backoff on a fake clock, the
//! full-store policy, reopening, unreadable rows, and the `kill -9` acceptance test (a child
//! process appending alerts is killed at random points; every alert it reported committed must
//! come back intact and be delivered exactly once).

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use thermal_edge::alert::outbox::{
    deliver_pending, Outbox, OutboxConfig, OutboxError, OUTBOX_FILE,
};
use thermal_edge::alert::{
    ulid, Alert, AlertKind, AnomalyInfo, Sink, SinkError, ALERT_SCHEMA_VERSION,
};
use thermal_edge::rng::Rng;
use thermal_edge::score::zones::Region;

const T0_MS: i64 = 1_700_000_000_000;

/// A deterministic alert for `seq`: the same seq always gives the same alert, so a reader can
/// tell an intact row from a damaged one by regenerating it.
fn alert(seq: u64, kind: AlertKind) -> Alert {
    let anomaly = matches!(
        kind,
        AlertKind::AnomalyStart | AlertKind::AnomalyUpdate | AlertKind::AnomalyEnd
    )
    .then(|| AnomalyInfo {
        event: seq / 3 + 1,
        score: 17.25 + seq as f64,
        peak_score: 20.5 + seq as f64,
        threshold: 16.0,
        regime: "all".into(),
        zone: Some("pier-end".into()),
        regions: vec![Region {
            bbox: [3, 4, 9, 12],
            area: 40,
            peak_error: 0.75,
            mean_error: 0.25,
            zone: Some("pier-end".into()),
            temperature_c: Some([38.5, 31.25]),
        }],
        frames: [seq * 10, seq * 10 + 4],
        start_us: seq as i64 * 1_000,
    });
    let detail = matches!(kind, AlertKind::Health | AlertKind::Drift)
        .then(|| serde_json::json!({ "summary": format!("record {seq}"), "rss_kb": 4096 + seq }));
    Alert {
        schema: ALERT_SCHEMA_VERSION,
        id: ulid(T0_MS as u64 + seq, u128::from(seq) * 7919),
        seq,
        site: "harbor".into(),
        camera: "pier".into(),
        kind,
        time_us: seq as i64 * 1_000,
        raised_us: (T0_MS + seq as i64) * 1_000,
        anomaly,
        detail,
        model: "3f2a9c".into(),
        snapshot: vec![format!("snapshots/{seq}.png")],
    }
}

/// The kind the power-loss child gives `seq` (every kind appears).
fn kind_of(seq: u64) -> AlertKind {
    [
        AlertKind::AnomalyStart,
        AlertKind::AnomalyUpdate,
        AlertKind::AnomalyUpdate,
        AlertKind::AnomalyEnd,
        AlertKind::Health,
        AlertKind::Drift,
    ][(seq % 6) as usize]
}

fn config(sinks: &[&str]) -> OutboxConfig {
    OutboxConfig {
        sinks: sinks.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A sink that records what it takes and fails while told to.
#[derive(Clone)]
struct Collect {
    name: String,
    got: Arc<Mutex<Vec<Alert>>>,
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Collect {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            got: Arc::default(),
            failing: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn seqs(&self) -> Vec<u64> {
        self.got.lock().unwrap().iter().map(|a| a.seq).collect()
    }
}

impl Sink for Collect {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&mut self, alert: &Alert) -> Result<(), SinkError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(SinkError {
                sink: self.name.clone(),
                detail: "broker unreachable".into(),
            });
        }
        self.got.lock().unwrap().push(alert.clone());
        Ok(())
    }
}

fn boxed(sinks: &[&Collect]) -> Vec<Box<dyn Sink>> {
    sinks
        .iter()
        .map(|s| Box::new((*s).clone()) as Box<dyn Sink>)
        .collect()
}

fn count(list: &[(String, u64)], key: &str) -> u64 {
    list.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n)
}

#[test]
fn alerts_round_trip_in_seq_order_and_numbering_continues() {
    fn movable_to_a_delivery_thread<T: Send>() {}
    movable_to_a_delivery_thread::<Outbox>();
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), config(&["mqtt"])).unwrap();
    assert_eq!(outbox.next_seq("pier").unwrap(), 1);
    let kinds = [
        AlertKind::AnomalyStart,
        AlertKind::AnomalyUpdate,
        AlertKind::AnomalyEnd,
        AlertKind::Health,
        AlertKind::Drift,
    ];
    let alerts: Vec<Alert> = (1..=5).map(|s| alert(s, kinds[s as usize - 1])).collect();
    // Appended out of order: delivery order is by seq, not by arrival.
    for i in [0, 2, 1, 3, 4] {
        outbox.append(&alerts[i]).unwrap();
    }
    let pending = outbox.pending("mqtt", T0_MS, 100).unwrap();
    let back: Vec<Alert> = pending.iter().map(|p| p.alert.clone()).collect();
    assert_eq!(back, alerts);
    assert!(pending
        .iter()
        .all(|p| p.attempts == 0 && p.last_error.is_none()));
    assert_eq!(outbox.pending("mqtt", T0_MS, 2).unwrap().len(), 2);
    assert!(outbox.pending("serial", T0_MS, 100).unwrap().is_empty());
    assert_eq!(outbox.next_seq("pier").unwrap(), 6);
    assert_eq!(outbox.next_seq("quay").unwrap(), 1);

    // The same alert twice, or another alert reusing a seq, is refused, naming the file.
    let again = outbox.append(&alerts[0]).unwrap_err();
    assert!(
        matches!(again, OutboxError::Duplicate { seq: 1, .. }),
        "{again}"
    );
    let mut reused = alert(2, AlertKind::Health);
    reused.id = ulid(1, 1);
    let err = outbox.append(&reused).unwrap_err();
    assert!(err.to_string().contains(OUTBOX_FILE), "{err}");

    let stats = outbox.stats().unwrap();
    assert_eq!(stats.stored, 5);
    assert_eq!(stats.pending, vec![("mqtt".to_string(), 5)]);
    assert!(stats.dropped.is_empty() && stats.refused.is_empty());
    drop(outbox);

    // What an operator's sqlite3 shell sees: WAL mode (persistent in the file) and the rows.
    let conn = rusqlite::Connection::open(dir.path().join(OUTBOX_FILE)).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let kinds: Vec<String> = conn
        .prepare("SELECT kind FROM alerts ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        kinds,
        [
            "anomaly-start",
            "anomaly-update",
            "anomaly-end",
            "health",
            "drift"
        ]
    );
    let version: i64 = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1);
}

#[test]
fn each_sink_is_acknowledged_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), config(&["mqtt", "serial"])).unwrap();
    for s in 1..=4 {
        outbox.append(&alert(s, kind_of(s))).unwrap();
    }
    let mqtt = Collect::new("mqtt");
    let serial = Collect::new("serial");
    serial.failing.store(true, Ordering::SeqCst);
    let mut sinks = boxed(&[&mqtt, &serial]);

    let got = deliver_pending(&mut outbox, &mut sinks, T0_MS).unwrap();
    assert_eq!(mqtt.seqs(), [1, 2, 3, 4]);
    assert!(serial.seqs().is_empty());
    assert_eq!((got.sinks[0].delivered, got.sinks[0].failed), (4, 0));
    // A failing sink is tried once per call, not once per alert.
    assert_eq!((got.sinks[1].delivered, got.sinks[1].failed), (0, 1));
    assert_eq!(serial.calls.load(Ordering::SeqCst), 1);
    assert_eq!(got.sinks[1].next_try_ms, Some(T0_MS + 1_000));
    let stats = outbox.stats().unwrap();
    assert_eq!(
        stats.pending,
        vec![("mqtt".to_string(), 0), ("serial".to_string(), 4)]
    );

    outbox.append(&alert(5, kind_of(5))).unwrap();
    serial.failing.store(false, Ordering::SeqCst);
    let got = deliver_pending(&mut outbox, &mut sinks, T0_MS + 1_000).unwrap();
    // Each sink gets each alert once, in seq order, however the other one fares.
    assert_eq!(mqtt.seqs(), [1, 2, 3, 4, 5]);
    assert_eq!(serial.seqs(), [1, 2, 3, 4, 5]);
    assert_eq!(got.delivered(), 6);
    assert_eq!(got.failed(), 0);
    let again = deliver_pending(&mut outbox, &mut sinks, T0_MS + 99_000).unwrap();
    assert_eq!(again.delivered(), 0);

    // Acknowledging twice is harmless and says so.
    assert!(!outbox.ack("mqtt", &alert(1, kind_of(1)).id).unwrap());

    // A sink the outbox was not opened with is a configuration error, not a silent skip.
    let mut stray = boxed(&[&Collect::new("lora")]);
    let err = deliver_pending(&mut outbox, &mut stray, T0_MS).unwrap_err();
    assert!(matches!(err, OutboxError::UnknownSink { .. }), "{err}");
}

#[test]
fn failed_deliveries_back_off_exponentially_to_the_cap_and_keep_order() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OutboxConfig {
        max_backoff: Duration::from_secs(8),
        ..config(&["mqtt"])
    };
    let mut outbox = Outbox::open(dir.path(), cfg).unwrap();
    for s in 1..=3 {
        outbox.append(&alert(s, kind_of(s))).unwrap();
    }
    let head = alert(1, kind_of(1)).id;
    let mut now = T0_MS;
    let mut waits = Vec::new();
    for _ in 0..6 {
        let next = outbox.fail("mqtt", &head, now, "timeout").unwrap().unwrap();
        waits.push(next - now);
        // Nothing is handed out before the head's retry time, not even the alerts behind it.
        assert!(outbox.pending("mqtt", next - 1, 10).unwrap().is_empty());
        let due = outbox.pending("mqtt", next, 10).unwrap();
        assert_eq!(due.len(), 3);
        assert_eq!(due[0].last_error.as_deref(), Some("timeout"));
        now = next;
    }
    assert_eq!(waits, [1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
    assert_eq!(outbox.pending("mqtt", now, 1).unwrap()[0].attempts, 6);

    // A retry further ahead than the cap means the clock went back (no RTC, before NTP): due.
    let behind = outbox.pending("mqtt", T0_MS - 86_400_000, 10).unwrap();
    assert_eq!(behind.len(), 3);

    // deliver_pending leaves a failing sink alone until its retry time.
    let mqtt = Collect::new("mqtt");
    mqtt.failing.store(true, Ordering::SeqCst);
    let mut sinks = boxed(&[&mqtt]);
    let t = now + 8_000;
    let got = deliver_pending(&mut outbox, &mut sinks, t).unwrap();
    assert_eq!(got.sinks[0].next_try_ms, Some(t + 8_000));
    deliver_pending(&mut outbox, &mut sinks, t + 7_999).unwrap();
    assert_eq!(mqtt.calls.load(Ordering::SeqCst), 1);
    mqtt.failing.store(false, Ordering::SeqCst);
    deliver_pending(&mut outbox, &mut sinks, t + 8_000).unwrap();
    assert_eq!(mqtt.seqs(), [1, 2, 3]);

    // Failing an alert that is no longer pending says so.
    assert_eq!(outbox.fail("mqtt", &head, now, "late").unwrap(), None);
}

#[test]
fn a_full_store_drops_updates_then_health_and_refuses_rather_than_drop_start_or_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OutboxConfig {
        max_alerts: 6,
        ..config(&["mqtt"])
    };
    let mut outbox = Outbox::open(dir.path(), cfg).unwrap();
    use AlertKind::*;
    let first = [
        AnomalyStart,
        AnomalyUpdate,
        Health,
        AnomalyUpdate,
        AnomalyEnd,
        Drift,
    ];
    for (i, k) in first.into_iter().enumerate() {
        outbox.append(&alert(i as u64 + 1, k)).unwrap();
    }
    let stored = |o: &Outbox| -> Vec<u64> {
        o.pending("mqtt", T0_MS, 100)
            .unwrap()
            .iter()
            .map(|p| p.alert.seq)
            .collect()
    };
    outbox.append(&alert(7, AnomalyStart)).unwrap();
    assert_eq!(
        stored(&outbox),
        [1, 3, 4, 5, 6, 7],
        "oldest update goes first"
    );
    outbox.append(&alert(8, AnomalyEnd)).unwrap();
    assert_eq!(stored(&outbox), [1, 3, 5, 6, 7, 8]);
    outbox.append(&alert(9, AnomalyStart)).unwrap();
    assert_eq!(stored(&outbox), [1, 5, 6, 7, 8, 9], "then health");

    let err = outbox.append(&alert(10, AnomalyUpdate)).unwrap_err();
    assert!(
        matches!(
            err,
            OutboxError::Full {
                seq: 10,
                kind: "anomaly-update",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(OUTBOX_FILE), "{err}");
    assert!(outbox.append(&alert(11, AnomalyEnd)).is_err());
    assert_eq!(
        stored(&outbox),
        [1, 5, 6, 7, 8, 9],
        "nothing undroppable went"
    );

    let stats = outbox.stats().unwrap();
    assert_eq!(stats.stored, 6);
    assert_eq!(count(&stats.dropped, "anomaly-update"), 2);
    assert_eq!(count(&stats.dropped, "health"), 1);
    assert_eq!(count(&stats.refused, "anomaly-update"), 1);
    assert_eq!(count(&stats.refused, "anomaly-end"), 1);
    assert_eq!(stats.evicted_delivered, 0);
    // A refused seq is not burnt: the caller may retry it once there is room.
    assert_eq!(outbox.next_seq("pier").unwrap(), 10);

    // Once delivered, alerts make room before anything undelivered is touched.
    let mqtt = Collect::new("mqtt");
    deliver_pending(&mut outbox, &mut boxed(&[&mqtt]), T0_MS).unwrap();
    for s in 10..=13 {
        outbox.append(&alert(s, AnomalyUpdate)).unwrap();
    }
    let stats = outbox.stats().unwrap();
    assert_eq!(stats.evicted_delivered, 4);
    assert_eq!(count(&stats.dropped, "anomaly-update"), 2);
    assert_eq!(stats.pending, vec![("mqtt".to_string(), 4)]);
}

#[test]
fn reopening_keeps_pending_rows_retries_numbering_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OutboxConfig {
        max_alerts: 4,
        ..config(&["mqtt", "serial"])
    };
    use AlertKind::*;
    let kinds = [AnomalyStart, AnomalyUpdate, AnomalyEnd, Health, Drift];
    let alerts: Vec<Alert> = (1..=5).map(|s| alert(s, kinds[s as usize - 1])).collect();
    {
        let mut outbox = Outbox::open(dir.path(), cfg.clone()).unwrap();
        for a in &alerts[..4] {
            outbox.append(a).unwrap();
        }
        assert!(outbox.ack("serial", &alerts[0].id).unwrap());
        outbox
            .fail("mqtt", &alerts[0].id, T0_MS, "timeout")
            .unwrap();
        // Full: the update (seq 2) makes room for the drift alert.
        outbox.append(&alerts[4]).unwrap();
    }
    let mut outbox = Outbox::open(dir.path(), cfg).unwrap();
    let mqtt = outbox.pending("mqtt", T0_MS + 1_000, 100).unwrap();
    assert_eq!(
        mqtt.iter().map(|p| p.alert.seq).collect::<Vec<_>>(),
        [1, 3, 4, 5]
    );
    assert_eq!((mqtt[0].attempts, mqtt[0].next_try_ms), (1, T0_MS + 1_000));
    let serial = outbox.pending("serial", T0_MS, 100).unwrap();
    assert_eq!(
        serial.iter().map(|p| p.alert.seq).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert_eq!(outbox.next_seq("pier").unwrap(), 6);
    let stats = outbox.stats().unwrap();
    assert_eq!(count(&stats.dropped, "anomaly-update"), 1);

    // Delivered and pruned away, the numbering still continues where it was.
    let (a, b) = (Collect::new("mqtt"), Collect::new("serial"));
    deliver_pending(&mut outbox, &mut boxed(&[&a, &b]), T0_MS + 1_000).unwrap();
    assert_eq!(outbox.prune(T0_MS + 1_000, Duration::ZERO).unwrap(), 4);
    drop(outbox);
    let outbox = Outbox::open(dir.path(), config(&["mqtt", "serial"])).unwrap();
    assert_eq!(outbox.stats().unwrap().stored, 0);
    assert_eq!(outbox.next_seq("pier").unwrap(), 6);
}

#[test]
fn pruning_keeps_undelivered_and_recent_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), config(&["mqtt", "serial"])).unwrap();
    for s in 1..=4 {
        outbox.append(&alert(s, kind_of(s))).unwrap();
    }
    for s in 1..=3 {
        outbox.ack("mqtt", &alert(s, kind_of(s)).id).unwrap();
    }
    for s in 2..=4 {
        outbox.ack("serial", &alert(s, kind_of(s)).id).unwrap();
    }
    // Alert s was raised at T0 + s ms; a retention of 1 ms at T0 + 4 keeps seq 3 and 4.
    assert_eq!(
        outbox.prune(T0_MS + 4, Duration::from_millis(1)).unwrap(),
        1
    );
    assert_eq!(outbox.stats().unwrap().stored, 3);
    assert_eq!(outbox.prune(T0_MS + 100, Duration::ZERO).unwrap(), 1);
    let left: Vec<u64> = [
        outbox.pending("mqtt", T0_MS, 10).unwrap(),
        outbox.pending("serial", T0_MS, 10).unwrap(),
    ]
    .concat()
    .iter()
    .map(|p| p.alert.seq)
    .collect();
    assert_eq!(left, [4, 1]);
    drop(outbox);

    // A sink dropped from the configuration no longer holds its alerts.
    let mut outbox = Outbox::open(dir.path(), config(&["serial"])).unwrap();
    let stats = outbox.stats().unwrap();
    assert_eq!(
        stats.pending,
        vec![("serial".to_string(), 1), ("mqtt".to_string(), 1)]
    );
    assert_eq!(outbox.prune(T0_MS + 100, Duration::ZERO).unwrap(), 1);
    assert_eq!(outbox.stats().unwrap().stored, 1);
}

#[test]
fn unreadable_rows_are_clear_errors_and_are_quarantined_by_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), config(&["mqtt"])).unwrap();
    for s in 1..=3 {
        outbox.append(&alert(s, kind_of(s))).unwrap();
    }
    let bad = alert(2, kind_of(2)).id;
    {
        // Damage behind the outbox's back, as a bad manual edit or bit rot would.
        let conn = rusqlite::Connection::open(dir.path().join(OUTBOX_FILE)).unwrap();
        conn.execute(
            "UPDATE alerts SET json = '{\"schema\":1,\"id\":' WHERE seq = 2",
            [],
        )
        .unwrap();
    }
    let err = outbox.pending("mqtt", T0_MS, 10).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OutboxError::Corrupt { .. }), "{msg}");
    assert!(msg.contains(OUTBOX_FILE) && msg.contains(&bad), "{msg}");

    let mqtt = Collect::new("mqtt");
    let got = deliver_pending(&mut outbox, &mut boxed(&[&mqtt]), T0_MS).unwrap();
    assert_eq!(mqtt.seqs(), [1, 3]);
    assert_eq!(got.sinks[0].quarantined, 1);
    assert_eq!(outbox.stats().unwrap().quarantined, 1);
    let conn = rusqlite::Connection::open(dir.path().join(OUTBOX_FILE)).unwrap();
    let kept: String = conn
        .query_row("SELECT id FROM quarantine", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, bad);

    // A row whose JSON belongs to another alert is caught too.
    outbox.append(&alert(4, kind_of(4))).unwrap();
    conn.execute(
        "UPDATE alerts SET seq = 40 WHERE id = ?1",
        [alert(4, kind_of(4)).id],
    )
    .unwrap();
    let err = outbox.pending("mqtt", T0_MS, 10).unwrap_err();
    assert!(err.to_string().contains("seq 40"), "{err}");
}

#[test]
fn files_that_are_not_outboxes_are_refused_naming_the_file() {
    let garbage = tempfile::tempdir().unwrap();
    std::fs::write(garbage.path().join(OUTBOX_FILE), vec![0x5a_u8; 8192]).unwrap();
    let err = Outbox::open(garbage.path(), config(&["mqtt"]))
        .err()
        .unwrap();
    assert!(err.to_string().contains(OUTBOX_FILE), "{err}");

    let newer = tempfile::tempdir().unwrap();
    drop(Outbox::open(newer.path(), config(&["mqtt"])).unwrap());
    rusqlite::Connection::open(newer.path().join(OUTBOX_FILE))
        .unwrap()
        .execute("UPDATE schema_version SET version = 2", [])
        .unwrap();
    let err = Outbox::open(newer.path(), config(&["mqtt"])).err().unwrap();
    assert!(
        matches!(err, OutboxError::Version { found: 2, .. }),
        "{err}"
    );

    let other = tempfile::tempdir().unwrap();
    rusqlite::Connection::open(other.path().join(OUTBOX_FILE))
        .unwrap()
        .execute("CREATE TABLE t (x)", [])
        .unwrap();
    let err = Outbox::open(other.path(), config(&["mqtt"])).err().unwrap();
    assert!(err.to_string().contains("not an outbox"), "{err}");

    let err = Outbox::open(other.path(), config(&["mqtt", "mqtt"]))
        .err()
        .unwrap();
    assert!(matches!(err, OutboxError::Invalid { .. }), "{err}");
}

#[test]
fn append_latency_with_synchronous_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(dir.path(), config(&["mqtt", "serial"])).unwrap();
    let n = 200;
    let mut times: Vec<Duration> = (1..=n)
        .map(|s| {
            let a = alert(s, kind_of(s));
            let t = Instant::now();
            outbox.append(&a).unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    let mean = times.iter().sum::<Duration>() / n as u32;
    let p = |q: f64| times[((n as f64 - 1.0) * q) as usize];
    println!(
        "outbox append ({} sinks, synchronous=FULL): mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms, \
         max {:.2} ms over {n} appends",
        2,
        mean.as_secs_f64() * 1e3,
        p(0.5).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
    assert_eq!(outbox.stats().unwrap().stored, n);
    // Loose: one fsynced transaction per alert must not stall the frame loop for long.
    assert!(mean < Duration::from_millis(100), "mean append {mean:?}");
}

const CHILD_ENV: &str = "THERMAL_EDGE_OUTBOX_CHILD";
const POWER_LOSS_TEST: &str = "kill_9_at_random_points_loses_no_committed_alert";
/// Far enough ahead that every retry the child scheduled is due.
const LATER_MS: i64 = i64::MAX / 4;

/// The child: appends alerts forever, reporting each seq on stdout only once `append` returned
/// (committed), and records failed attempts now and then so that kills also land in updates.
fn run_child(dir: &Path) -> ! {
    let mut outbox = Outbox::open(dir, config(&["mqtt"])).expect("child: open");
    let mut seq = outbox.next_seq("pier").expect("child: next_seq");
    let mut out = std::io::stdout().lock();
    loop {
        let a = alert(seq, kind_of(seq));
        outbox.append(&a).expect("child: append");
        writeln!(out, "COMMITTED {seq}").expect("child: stdout");
        out.flush().expect("child: stdout");
        if seq.is_multiple_of(4) {
            outbox
                .fail("mqtt", &a.id, T0_MS, "simulated")
                .expect("child: fail");
        }
        seq += 1;
    }
}

#[test]
fn kill_9_at_random_points_loses_no_committed_alert() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        run_child(Path::new(&dir));
    }
    use std::os::unix::process::ExitStatusExt;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let stderr_log = dir.path().join("child-stderr.log");
    let store = dir.path().join("outbox");
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::new(20_260_601);
    let mut delivered: HashMap<String, u32> = HashMap::new();
    let mut reported: BTreeSet<u64> = BTreeSet::new();
    for round in 0..20 {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_log)
            .unwrap();
        let mut child = Command::new(&exe)
            .args([
                POWER_LOSS_TEST,
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &store)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<u64>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest's "test NAME ... " has no newline, so the first report shares its line.
                if let Some((_, seq)) = line.split_once("COMMITTED ") {
                    tx.send(seq.parse().expect("child printed a bad seq")).ok();
                }
            }
        });
        let child_log = || std::fs::read_to_string(&stderr_log).unwrap_or_default();
        // Wait for the first commit so the kill lands while the child is writing, not starting.
        let first = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("round {round}: child committed nothing:\n{}", child_log()));
        let mut seen = vec![first];
        let how = if rng.next_u64().is_multiple_of(2) {
            let ms = 5 + rng.next_u64() % 76;
            std::thread::sleep(Duration::from_millis(ms));
            format!("after {ms} ms")
        } else {
            let lines = 1 + (rng.next_u64() % 60) as usize;
            while seen.len() < lines {
                seen.push(rx.recv_timeout(Duration::from_secs(20)).unwrap());
            }
            format!("after {lines} lines")
        };
        // std's kill is SIGKILL on Unix: no destructor, no flush, no SQLite cleanup runs.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "round {round}: {status}"
        );
        reader.join().unwrap();
        seen.extend(rx.try_iter());
        reported.extend(&seen);

        let mut outbox = Outbox::open(&store, config(&["mqtt"]))
            .unwrap_or_else(|e| panic!("round {round} ({how}): reopen: {e}"));
        let pending = outbox
            .pending("mqtt", LATER_MS, usize::MAX)
            .unwrap_or_else(|e| panic!("round {round} ({how}): a row does not read back: {e}"));
        let seqs: Vec<u64> = pending.iter().map(|p| p.alert.seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "round {round}: seqs not unique: {seqs:?}"
        );
        for p in &pending {
            assert_eq!(
                p.alert,
                alert(p.alert.seq, kind_of(p.alert.seq)),
                "round {round}: alert {} damaged",
                p.alert.seq
            );
        }
        let present: BTreeSet<u64> = seqs.iter().copied().collect();
        let lost: Vec<u64> = seen
            .iter()
            .filter(|s| !present.contains(s))
            .copied()
            .collect();
        assert!(
            lost.is_empty(),
            "round {round} ({how}): committed alerts lost: {lost:?}"
        );
        assert_eq!(outbox.stats().unwrap().stored, pending.len() as u64);
        if let Some(last) = seqs.last() {
            assert_eq!(outbox.next_seq("pier").unwrap(), last + 1);
        }

        let sink = Collect::new("mqtt");
        let cfg_batch = outbox.config().batch;
        let mut sinks = boxed(&[&sink]);
        while deliver_pending(&mut outbox, &mut sinks, LATER_MS)
            .unwrap()
            .delivered()
            == cfg_batch as u64
        {}
        assert_eq!(sink.seqs(), seqs, "round {round}: delivered out of order");
        for a in sink.got.lock().unwrap().iter() {
            *delivered.entry(a.id.clone()).or_default() += 1;
        }
        assert!(outbox.pending("mqtt", LATER_MS, 1).unwrap().is_empty());
        // Delivered rows go, so the next child numbers from the sequences table alone.
        outbox.prune(LATER_MS, Duration::ZERO).unwrap();
        assert_eq!(outbox.stats().unwrap().stored, 0);
    }
    let twice: Vec<&String> = delivered
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for seq in &reported {
        let id = alert(*seq, kind_of(*seq)).id;
        assert_eq!(delivered.get(&id), Some(&1), "seq {seq} never delivered");
    }
    println!(
        "kill -9: 20 rounds, {} alerts reported committed, {} delivered, {:.1} s",
        reported.len(),
        delivered.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(reported.len() >= 20);
    // Only a kill between a commit and its report leaves an alert unreported: one per round.
    assert!(
        delivered.len() <= reported.len() + 20,
        "{} delivered but {} reported",
        delivered.len(),
        reported.len()
    );
}
