//! The serial sink over a pseudo-terminal pair: the test plays the consumer (a PLC) on the master
//! side with the same codec, the sink opens the slave by path as it would open `/dev/ttyUSB0`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};
use thermal_edge::alert::nmea::{
    Ack, AlarmAck, AlertRecord, Alr, Heartbeat, Parser, Reassembler, RejectReason, Sentence,
    MAX_SENTENCE_LEN,
};
use thermal_edge::alert::serial::{AlrConfig, SerialConfig, SerialSink, SerialStats};
use thermal_edge::alert::{ulid, Alert, AlertKind, AnomalyInfo, Sink, ALERT_SCHEMA_VERSION};
use thermal_edge::score::zones::Region;

const WAIT: Duration = Duration::from_secs(15);

fn alert(seq: u64, camera: &str, zone: &str) -> Alert {
    Alert {
        schema: ALERT_SCHEMA_VERSION,
        id: ulid(1_700_000_000_000 + seq, 77),
        seq,
        site: "harbor".into(),
        camera: camera.into(),
        kind: AlertKind::AnomalyStart,
        time_us: 1_000,
        raised_us: 1_700_000_000_250_000 + seq as i64,
        anomaly: Some(AnomalyInfo {
            event: seq,
            score: 18.25 + seq as f64,
            peak_score: 19.0 + seq as f64,
            threshold: 16.0,
            regime: "all".into(),
            zone: Some(zone.into()),
            regions: vec![Region {
                bbox: [1, 2, 3, 4],
                area: 9,
                peak_error: 0.4,
                mean_error: 0.2,
                zone: Some(zone.into()),
                temperature_c: Some([48.5, 30.0]),
            }],
            frames: [1, 2],
            start_us: 0,
        }),
        detail: None,
        model: "m".into(),
        snapshot: vec![],
    }
}

fn config(port: &str) -> SerialConfig {
    SerialConfig {
        port: port.into(),
        baud: 115_200,
        heartbeat_s: 0.3,
        repeat_s: 0.4,
        reopen_s: 0.05,
        flush_timeout_s: 5.0,
        ..SerialConfig::default()
    }
}

/// The PLC side: reads the master end with the crate's own parser and reassembler.
struct Consumer {
    port: TTYPort,
    parser: Parser,
    reassembler: Reassembler,
    records: Vec<AlertRecord>,
    heartbeats: Vec<Heartbeat>,
    alrs: Vec<Alr>,
    raw: Vec<u8>,
}

impl Consumer {
    fn new(port: TTYPort) -> Self {
        Self {
            port,
            parser: Parser::default(),
            reassembler: Reassembler::new(Duration::from_secs(5), 16),
            records: Vec::new(),
            heartbeats: Vec::new(),
            alrs: Vec::new(),
            raw: Vec::new(),
        }
    }

    fn pump(&mut self) {
        let mut buf = [0u8; 1024];
        let n = match self.port.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return,
            Err(e) => panic!("consumer read: {e}"),
        };
        self.raw.extend_from_slice(&buf[..n]);
        for e in self.parser.feed(&buf[..n]) {
            match e.unwrap_or_else(|r| panic!("the sink wrote a bad sentence: {r}")) {
                Sentence::Alert(part) => {
                    if let Some(rec) = self.reassembler.push(&part, Instant::now()) {
                        self.records.push(rec.expect("alert record decodes"));
                    }
                }
                Sentence::Heartbeat(h) => self.heartbeats.push(h),
                Sentence::Alr(a) => self.alrs.push(a),
                Sentence::Hbt(_) => {}
                other => panic!("unexpected from the sink: {other:?}"),
            }
        }
    }

    fn wait_for(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.pump();
        }
    }

    fn seqs(&self) -> BTreeSet<u64> {
        self.records.iter().map(|r| r.seq).collect()
    }

    fn send(&mut self, line: &str) {
        self.port.write_all(line.as_bytes()).unwrap();
        self.port.flush().unwrap();
    }

    fn ack(&mut self, seqs: &[u64]) {
        let line = Ack {
            seqs: seqs.to_vec(),
        }
        .encode()
        .unwrap();
        self.send(&line);
    }

    /// Every line on the wire was a whole sentence of at most 82 characters ending in CR LF.
    fn check_raw_lines(&self) {
        let text = String::from_utf8(self.raw.clone()).expect("printable ASCII only");
        let complete = &text[..text.rfind("\r\n").map_or(0, |i| i + 2)];
        for line in complete.split_inclusive("\r\n") {
            assert!(line.len() <= MAX_SENTENCE_LEN, "{line:?}");
            assert!(line.starts_with('$') && line.ends_with("\r\n"), "{line:?}");
        }
    }
}

fn wait_sink(sink: &SerialSink, what: &str, done: impl Fn(&SerialStats) -> bool) -> SerialStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = sink.stats();
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pair() -> (TTYPort, TTYPort, String) {
    let (master, slave) = TTYPort::pair().expect("a pty pair");
    let name = slave.name().expect("the slave has a path");
    (master, slave, name)
}

#[test]
fn alerts_round_trip_with_checksums_and_are_acknowledged() {
    let _ = env_logger::builder().is_test(true).try_init();
    let (master, _slave, name) = pair();
    let mut sink = SerialSink::start(config(&name)).unwrap();
    let mut plc = Consumer::new(master);
    let alerts = [
        alert(1, "pier", "pier-end"),
        alert(2, "kai, nord* — øst", "zone $1 ^ ~!"),
        alert(3, &"c".repeat(60), &"z".repeat(60)),
    ];
    for a in &alerts {
        sink.deliver(a).unwrap();
    }
    plc.wait_for("three alerts", |c| c.seqs().len() == 3);
    for a in &alerts {
        let got = plc.records.iter().find(|r| r.seq == a.seq).unwrap();
        assert_eq!(*got, AlertRecord::from_alert(a));
    }
    assert_eq!(plc.records[1].camera, "kai, nord* — øst");
    assert_eq!(plc.records[1].zone, "zone $1 ^ ~!");
    assert_eq!(plc.records[0].tmax_c, Some(48.5));
    // Unacknowledged, they come again.
    plc.wait_for("repeats", |c| c.records.len() >= 6);
    plc.ack(&[1, 2]);
    plc.ack(&[3]);
    let s = wait_sink(&sink, "acknowledgements", |s| s.pending == 0);
    assert_eq!(s.link.delivered, 3);
    assert!(s.link.repeated >= 3, "{s:?}");
    assert_eq!(s.line.parser.accepted, 2);
    assert_eq!(s.line.parser.rejected.total(), 0);
    plc.wait_for("a heartbeat after the acks", |c| {
        c.heartbeats.last().is_some_and(|h| h.pending == 0)
    });
    let hb = plc.heartbeats.last().unwrap();
    assert_eq!((hb.last_seq, hb.ok), (3, true));
    sink.flush().unwrap();
    plc.check_raw_lines();
    assert_eq!(plc.parser.stats().rejected.total(), 0);
}

#[test]
fn unplugging_and_replugging_the_line_loses_nothing() {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().unwrap();
    // Like /dev/serial/by-id/…: a stable link that follows the device when it comes back.
    let link = dir.path().join("ttyPLC");
    let (master, slave, name) = pair();
    std::os::unix::fs::symlink(&name, &link).unwrap();
    let mut sink = SerialSink::start(config(link.to_str().unwrap())).unwrap();
    let mut plc = Consumer::new(master);

    sink.deliver(&alert(1, "pier", "quay")).unwrap();
    plc.wait_for("alert 1", |c| c.seqs().contains(&1));
    plc.ack(&[1]);
    wait_sink(&sink, "ack of 1", |s| s.pending == 0);
    // Alert 2 reaches the consumer, but the line goes before it can acknowledge.
    sink.deliver(&alert(2, "pier", "quay")).unwrap();
    plc.wait_for("alert 2", |c| c.seqs().contains(&2));
    plc.check_raw_lines();
    let mut seen = plc.seqs();
    drop(plc);
    drop(slave);
    wait_sink(&sink, "the unplug", |s| {
        !s.line.connected && s.line.io_errors >= 1
    });
    // Alerts raised while unplugged are taken and held.
    sink.deliver(&alert(3, "pier", "quay")).unwrap();
    sink.deliver(&alert(4, "pier", "quay")).unwrap();
    wait_sink(&sink, "failed reopens", |s| s.line.open_failures >= 1);
    assert_eq!(sink.stats().pending, 3);

    let (master, _slave, name) = pair();
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&name, &link).unwrap();
    let mut plc = Consumer::new(master);
    plc.wait_for("alerts 2, 3 and 4", |c| {
        [2, 3, 4].iter().all(|s| c.seqs().contains(s))
    });
    plc.ack(&[2, 3, 4]);
    let s = wait_sink(&sink, "acks after the replug", |s| s.pending == 0);
    assert_eq!(s.link.delivered, 4);
    assert!(s.line.opens >= 2, "{s:?}");
    seen.extend(plc.seqs());
    assert_eq!(seen, (1..=4).collect());
    plc.check_raw_lines();
    sink.flush().unwrap();
}

#[test]
fn bad_sentences_from_the_consumer_are_rejected_with_counted_reasons() {
    let _ = env_logger::builder().is_test(true).try_init();
    let (master, _slave, name) = pair();
    let mut sink = SerialSink::start(config(&name)).unwrap();
    let mut plc = Consumer::new(master);
    sink.deliver(&alert(1, "pier", "quay")).unwrap();
    plc.wait_for("alert 1", |c| c.seqs().contains(&1));

    let good = Ack { seqs: vec![1] }.encode().unwrap();
    let bad_checksum = format!("{}00\r\n", &good[..good.len() - 4]);
    plc.send(&bad_checksum);
    plc.send(&format!("$PTHEK,{}*00\r\n", "1,".repeat(60)));
    plc.send("hello there\r\n");
    plc.send("$PTHEK,1\r\n");
    plc.send("$PTHEK,\u{b5}1*00\r\n");
    plc.send(&thermal_edge::alert::nmea::frame("GPGGA", &["1"]).unwrap());
    plc.send(&thermal_edge::alert::nmea::frame("PTHEK", &[""]).unwrap());
    let s = wait_sink(&sink, "six kinds of rejection", |s| {
        RejectReason::ALL
            .iter()
            .all(|&r| s.line.parser.rejected.get(r) >= 1)
    });
    let r = s.line.parser.rejected;
    assert_eq!(
        (
            r.bad_checksum,
            r.too_long,
            r.not_ascii,
            r.unknown_sentence,
            r.missing_fields
        ),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(r.malformed, 2);
    assert_eq!(s.line.parser.accepted, 0);
    // None of it acknowledged the alert: it is still pending and repeated.
    assert_eq!(s.pending, 1);
    let before = plc.records.len();
    plc.wait_for("a repeat", |c| c.records.len() > before);
    plc.send(&good);
    let s = wait_sink(&sink, "the good ack", |s| s.pending == 0);
    assert_eq!(s.line.parser.accepted, 1);
}

#[test]
fn an_alarm_panel_sees_alr_and_acknowledges_with_ack() {
    let _ = env_logger::builder().is_test(true).try_init();
    let (master, _slave, name) = pair();
    let cfg = SerialConfig {
        alr: Some(AlrConfig {
            repeat_s: 0.5,
            alarms: [("pier/quay".to_string(), 12u16)].into_iter().collect(),
            ..AlrConfig::default()
        }),
        ..config(&name)
    };
    let mut sink = SerialSink::start(cfg).unwrap();
    let mut panel = Consumer::new(master);
    sink.deliver(&alert(1, "pier", "quay")).unwrap();
    panel.wait_for("ALR 012", |c| c.alrs.iter().any(|a| a.number == 12));
    let a = panel.alrs.iter().find(|a| a.number == 12).unwrap().clone();
    assert!(a.active && !a.acknowledged);
    assert_eq!(a.talker, "II");
    assert!(
        a.text.starts_with("THERMAL pier/quay 19.2>16.0 48.5C"),
        "{}",
        a.text
    );
    let line = AlarmAck {
        talker: "VR".into(),
        number: 12,
    }
    .encode()
    .unwrap();
    panel.send(&line);
    panel.wait_for("ALR 012 acknowledged", |c| {
        c.alrs.iter().any(|a| a.number == 12 && a.acknowledged)
    });
    let s = wait_sink(&sink, "delivery by alarm ack", |s| s.pending == 0);
    assert_eq!((s.link.alarm_acks, s.link.delivered), (1, 1));
    sink.flush().unwrap();
}

#[test]
fn a_missing_port_is_retried_and_alerts_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    let mut sink = SerialSink::start(SerialConfig {
        flush_timeout_s: 0.2,
        ..config(path.to_str().unwrap())
    })
    .unwrap();
    sink.deliver(&alert(1, "pier", "quay")).unwrap();
    let s = wait_sink(&sink, "open failures", |s| s.line.open_failures >= 2);
    assert!(!s.line.connected);
    let err = sink.flush().unwrap_err();
    assert!(
        err.detail.contains("1 alerts still unacknowledged"),
        "{err}"
    );
}

/// Copies bytes both ways between two pty masters, so two programs can each open a slave by
/// path as if a null-modem cable joined them.
fn null_modem() -> (String, String) {
    let (m1, _s1) = TTYPort::pair().expect("a pty pair");
    let (m2, _s2) = TTYPort::pair().expect("a pty pair");
    let (n1, n2) = (_s1.name().unwrap(), _s2.name().unwrap());
    for (mut from, mut to) in [
        (
            m1.try_clone_native().unwrap(),
            m2.try_clone_native().unwrap(),
        ),
        (m2, m1),
    ] {
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            from.set_timeout(Duration::from_millis(20)).unwrap();
            loop {
                match from.read(&mut buf) {
                    Ok(0) => std::thread::sleep(Duration::from_millis(5)),
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    // A slave with nobody holding it open reads as EIO: wait for the reopen.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }
    // Keep the slaves open for the test's lifetime so the masters never see a hang-up.
    std::mem::forget(_s1);
    std::mem::forget(_s2);
    (n1, n2)
}

#[test]
fn edge_cli_listen_receives_and_acknowledges_alerts_on_a_serial_line() {
    let (board_end, panel_end) = null_modem();
    let mut sink = SerialSink::start(config(&board_end)).unwrap();
    let listen = std::process::Command::new(env!("CARGO_BIN_EXE_edge-cli"))
        .args([
            "listen",
            "--json",
            "--count",
            "3",
            "--timeout",
            "30",
            "--baud",
            "115200",
        ])
        .arg("--serial")
        .arg(&panel_end)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let alerts = [
        alert(1, "pier", "pier-end"),
        alert(2, "quay", "ramp"),
        alert(3, &"c".repeat(60), &"z".repeat(60)),
    ];
    for a in &alerts {
        sink.deliver(a).unwrap();
    }
    // Delivered only once `listen` acknowledged every one.
    let s = wait_sink(&sink, "acknowledgements from edge-cli listen", |s| {
        s.pending == 0
    });
    assert_eq!(s.link.delivered, 3, "{s:?}");
    let out = listen.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let printed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Each alert printed once, repeats dropped as duplicates.
    assert_eq!(printed.len(), 3, "{printed:?}\n{stderr}");
    for (p, a) in printed.iter().zip(&alerts) {
        assert_eq!(p["id"], a.id.as_str());
        assert_eq!(p["seq"], a.seq);
        // Long names are shortened on the wire, as the protocol document says.
        assert_eq!(p["camera"], AlertRecord::from_alert(a).camera.as_str());
        assert_eq!(p["kind"], "anomaly-start");
    }
    assert!(stderr.contains("3 alerts"), "{stderr}");
}
