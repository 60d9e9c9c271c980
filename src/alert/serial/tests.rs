use super::*;
use crate::alert::nmea::{Ack, AlarmAck, Reassembler};
use crate::alert::{ulid, AnomalyInfo, ALERT_SCHEMA_VERSION};

fn cfg() -> SerialConfig {
    SerialConfig {
        port: "/dev/null-test".into(),
        heartbeat_s: 10.0,
        repeat_s: 5.0,
        ..SerialConfig::default()
    }
}

fn alr_cfg() -> SerialConfig {
    SerialConfig {
        alr: Some(AlrConfig {
            repeat_s: 30.0,
            alarms: [("pier/pier-end".to_string(), 7u16)].into_iter().collect(),
            ..AlrConfig::default()
        }),
        ..cfg()
    }
}

fn anomaly(seq: u64, kind: AlertKind, event: u64, zone: &str) -> Alert {
    Alert {
        schema: ALERT_SCHEMA_VERSION,
        id: ulid(1_700_000_000_000 + seq, 9),
        seq,
        site: "harbor".into(),
        camera: "pier".into(),
        kind,
        time_us: 1,
        raised_us: 1_700_000_000_000_000 + seq as i64 * 1_000_000,
        anomaly: Some(AnomalyInfo {
            event,
            score: 20.0,
            peak_score: 21.0,
            threshold: 16.0,
            regime: "all".into(),
            zone: Some(zone.into()),
            regions: vec![],
            frames: [1, 2],
            start_us: 0,
        }),
        detail: None,
        model: "m".into(),
        snapshot: vec![],
    }
}

fn health(seq: u64, camera: &str) -> Alert {
    Alert {
        kind: AlertKind::Health,
        anomaly: None,
        detail: Some(serde_json::json!({ "camera": camera, "summary": "up 10 s" })),
        ..anomaly(seq, AlertKind::Health, 0, "")
    }
}

/// What a consumer would make of `out`: completed alert seqs, heartbeats, ALRs, HBTs.
#[derive(Debug, Default)]
struct Seen {
    alerts: Vec<u64>,
    heartbeats: Vec<Heartbeat>,
    alrs: Vec<Alr>,
    hbts: usize,
}

fn seen(out: &Outgoing) -> Seen {
    let mut p = Parser::default();
    let mut r = Reassembler::new(Duration::from_secs(5), 8);
    let mut s = Seen::default();
    for e in p.feed(out.lines.concat().as_bytes()) {
        match e.expect("the link writes valid sentences") {
            Sentence::Alert(part) => {
                if let Some(rec) = r.push(&part, Instant::now()) {
                    s.alerts.push(rec.unwrap().seq);
                }
            }
            Sentence::Heartbeat(h) => s.heartbeats.push(h),
            Sentence::Alr(a) => s.alrs.push(a),
            Sentence::Hbt(_) => s.hbts += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    s
}

fn step(link: &mut Link, now: Instant) -> Seen {
    let out = link.poll(now);
    link.written(&out, now);
    seen(&out)
}

fn ack(link: &mut Link, seqs: &[u64]) {
    link.on_sentence(&Sentence::Ack(Ack {
        seqs: seqs.to_vec(),
    }));
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn alerts_repeat_until_acknowledged_and_heartbeats_tick() {
    let t0 = Instant::now();
    let mut link = Link::new(cfg(), t0).unwrap();
    link.submit(&anomaly(1, AlertKind::AnomalyStart, 3, "quay"))
        .unwrap();
    let s = step(&mut link, t0);
    assert_eq!(s.alerts, vec![1]);
    assert_eq!(s.heartbeats.len(), 1);
    assert_eq!(
        (
            s.heartbeats[0].last_seq,
            s.heartbeats[0].pending,
            s.heartbeats[0].ok
        ),
        (1, 1, true)
    );
    // Nothing is due before the repeat interval.
    assert!(link.poll(t0 + secs(4)).is_empty());
    let s = step(&mut link, t0 + secs(5));
    assert_eq!((s.alerts, s.heartbeats.len()), (vec![1], 0));
    assert_eq!((link.stats().sent, link.stats().repeated), (1, 1));
    ack(&mut link, &[1]);
    assert_eq!(link.pending(), 0);
    let s = step(&mut link, t0 + secs(10));
    assert!(s.alerts.is_empty());
    assert_eq!(s.heartbeats[0].pending, 0);
    assert_eq!(s.heartbeats[0].uptime_s, 10);
    assert_eq!(link.stats().delivered, 1);
    // A second acknowledgement (the consumer saw a repeat) is harmless.
    ack(&mut link, &[1]);
    assert_eq!(link.stats().unknown_acks, 1);
    assert_eq!(link.stats().delivered, 1);
}

#[test]
fn an_acknowledgement_of_an_alert_never_sent_does_not_count() {
    let t0 = Instant::now();
    let mut link = Link::new(cfg(), t0).unwrap();
    link.submit(&anomaly(5, AlertKind::AnomalyStart, 1, "quay"))
        .unwrap();
    // A stale ack (e.g. from before a restart) arrives before the alert went out.
    ack(&mut link, &[5]);
    assert_eq!(link.pending_seqs(), vec![5]);
    assert_eq!(step(&mut link, t0).alerts, vec![5]);
    ack(&mut link, &[5]);
    assert_eq!(link.pending(), 0);
}

#[test]
fn a_full_link_refuses_alerts_and_duplicates_are_taken_once() {
    let t0 = Instant::now();
    let mut link = Link::new(
        SerialConfig {
            max_pending: 2,
            ..cfg()
        },
        t0,
    )
    .unwrap();
    let a1 = anomaly(1, AlertKind::AnomalyStart, 1, "quay");
    link.submit(&a1).unwrap();
    link.submit(&a1).unwrap();
    link.submit(&anomaly(2, AlertKind::AnomalyEnd, 1, "quay"))
        .unwrap();
    let err = link
        .submit(&anomaly(3, AlertKind::AnomalyStart, 2, "quay"))
        .unwrap_err();
    assert!(
        matches!(err, SerialError::Full { pending: 2, seq: 3 }),
        "{err}"
    );
    assert_eq!(link.stats().refused, 1);
    step(&mut link, t0);
    ack(&mut link, &[1, 2]);
    link.submit(&anomaly(3, AlertKind::AnomalyStart, 2, "quay"))
        .unwrap();
    assert_eq!(link.pending_seqs(), vec![3]);
}

#[test]
fn a_backlog_goes_out_in_bounded_batches_oldest_first() {
    let t0 = Instant::now();
    let mut link = Link::new(cfg(), t0).unwrap();
    for seq in 1..=20 {
        link.submit(&anomaly(seq, AlertKind::AnomalyUpdate, 1, "quay"))
            .unwrap();
    }
    assert_eq!(step(&mut link, t0).alerts, (1..=8).collect::<Vec<_>>());
    assert_eq!(step(&mut link, t0).alerts, (9..=16).collect::<Vec<_>>());
    assert_eq!(step(&mut link, t0).alerts, (17..=20).collect::<Vec<_>>());
    assert!(link.poll(t0).is_empty());
    // After a reconnect everything unacknowledged is due at once (still in batches).
    ack(&mut link, &(1..=18).collect::<Vec<_>>());
    link.reconnected();
    let s = step(&mut link, t0 + secs(1));
    assert_eq!((s.alerts, s.heartbeats.len()), (vec![19, 20], 1));
}

#[test]
fn an_alert_submitted_between_poll_and_write_is_still_sent() {
    let t0 = Instant::now();
    let mut link = Link::new(cfg(), t0).unwrap();
    link.submit(&anomaly(1, AlertKind::AnomalyStart, 1, "quay"))
        .unwrap();
    let out = link.poll(t0);
    link.submit(&anomaly(2, AlertKind::AnomalyUpdate, 1, "quay"))
        .unwrap();
    link.written(&out, t0);
    assert_eq!(seen(&link.poll(t0)).alerts, vec![2]);
}

#[test]
fn without_acknowledgements_a_written_alert_is_delivered() {
    let t0 = Instant::now();
    let mut link = Link::new(
        SerialConfig {
            require_ack: false,
            ..cfg()
        },
        t0,
    )
    .unwrap();
    link.submit(&anomaly(1, AlertKind::AnomalyStart, 1, "quay"))
        .unwrap();
    // Polled but never written (the write failed): still pending.
    let _ = link.poll(t0);
    assert_eq!(link.pending(), 1);
    step(&mut link, t0);
    assert_eq!((link.pending(), link.stats().delivered), (0, 1));
}

#[test]
fn health_records_set_the_heartbeat_status_and_only_faults_are_sent() {
    let t0 = Instant::now();
    let mut link = Link::new(cfg(), t0).unwrap();
    link.submit(&health(1, "streaming")).unwrap();
    assert_eq!((link.pending(), link.stats().filtered), (0, 1));
    link.submit(&health(2, "fault")).unwrap();
    let s = step(&mut link, t0);
    assert_eq!(s.alerts, vec![2]);
    assert!(!s.heartbeats[0].ok);
    link.submit(&health(3, "streaming")).unwrap();
    assert!(link.status_ok());
    let mut all = Link::new(
        SerialConfig {
            health: HealthPolicy::All,
            ..cfg()
        },
        t0,
    )
    .unwrap();
    all.submit(&health(1, "streaming")).unwrap();
    assert_eq!(all.pending(), 1);
}

#[test]
fn alr_follows_anomaly_events_and_panel_acknowledgements() {
    let t0 = Instant::now();
    let mut link = Link::new(alr_cfg(), t0).unwrap();
    link.submit(&anomaly(1, AlertKind::AnomalyStart, 4, "pier-end"))
        .unwrap();
    let s = step(&mut link, t0);
    assert_eq!(s.alerts, vec![1]);
    assert_eq!(s.hbts, 1);
    assert_eq!(s.alrs.len(), 1);
    let a = &s.alrs[0];
    assert_eq!((a.number, a.active, a.acknowledged), (7, true, false));
    assert_eq!(a.text, "THERMAL pier/pier-end 20.0>16.0");
    assert_eq!(a.time, "221321.00");
    // Unchanged alarms wait for the cycle.
    assert!(seen(&link.poll(t0 + secs(1))).alrs.is_empty());
    let s = step(&mut link, t0 + secs(30));
    assert_eq!(s.alrs.len(), 1);
    assert_eq!(s.alerts, vec![1]);
    // The panel acknowledges alarm 7: the alarm goes out acknowledged, its alert is delivered.
    link.on_sentence(&Sentence::AlarmAck(AlarmAck {
        talker: "VR".into(),
        number: 7,
    }));
    assert_eq!(link.pending(), 0);
    let s = step(&mut link, t0 + secs(31));
    assert_eq!(s.alrs.len(), 1);
    assert!(s.alrs[0].active && s.alrs[0].acknowledged);
    // The event ends on another zone: the alarm it started on clears, once.
    link.submit(&anomaly(2, AlertKind::AnomalyEnd, 4, "quay"))
        .unwrap();
    let s = step(&mut link, t0 + secs(32));
    assert_eq!(s.alrs.len(), 1);
    assert_eq!((s.alrs[0].number, s.alrs[0].active), (7, false));
    let s = step(&mut link, t0 + secs(90));
    assert!(s.alrs.is_empty());
}

#[test]
fn unconfigured_zones_get_stable_alarm_numbers_and_faults_their_own() {
    let t0 = Instant::now();
    let mut link = Link::new(alr_cfg(), t0).unwrap();
    link.submit(&anomaly(1, AlertKind::AnomalyStart, 1, "quay"))
        .unwrap();
    link.submit(&health(2, "fault")).unwrap();
    let s = step(&mut link, t0);
    let numbers: Vec<u16> = s.alrs.iter().map(|a| a.number).collect();
    let quay = alarm_number(&AlrConfig::default(), &["pier/quay".into()]);
    let fault = alarm_number(&AlrConfig::default(), &["pier/fault".into()]);
    assert!((100..=999).contains(&quay) && (100..=999).contains(&fault));
    assert_ne!(quay, fault);
    let mut expected = vec![quay, fault];
    expected.sort();
    assert_eq!(numbers, expected);
    // The same key always maps to the same number (a restart keeps the panel's alarm list).
    assert_eq!(
        alarm_number(&AlrConfig::default(), &["pier/quay".into()]),
        quay
    );
    let fault_alr = s.alrs.iter().find(|a| a.number == fault).unwrap();
    assert_eq!(fault_alr.text, "CAMERA FAULT pier");
    link.submit(&health(3, "streaming")).unwrap();
    let s = step(&mut link, t0 + secs(1));
    assert_eq!(s.alrs.len(), 1);
    assert_eq!((s.alrs[0].number, s.alrs[0].active), (fault, false));
}

#[test]
fn invalid_settings_are_named() {
    let bad = [
        SerialConfig {
            port: String::new(),
            ..cfg()
        },
        SerialConfig { baud: 0, ..cfg() },
        SerialConfig {
            data_bits: 9,
            ..cfg()
        },
        SerialConfig {
            heartbeat_s: f64::NAN,
            ..cfg()
        },
        SerialConfig {
            repeat_s: -1.0,
            ..cfg()
        },
        SerialConfig {
            alr: Some(AlrConfig {
                talker: "i".into(),
                ..AlrConfig::default()
            }),
            ..cfg()
        },
        SerialConfig {
            alr: Some(AlrConfig {
                alarms: [("x".to_string(), 1000u16)].into_iter().collect(),
                ..AlrConfig::default()
            }),
            ..cfg()
        },
    ];
    for c in bad {
        assert!(matches!(c.validate(), Err(SerialError::Config(_))), "{c:?}");
    }
    // The TOML form a config file would use.
    let c: SerialConfig = toml::from_str(
        r#"
        port = "/dev/ttyUSB0"
        baud = 38400
        parity = "even"
        [alr]
        talker = "FD"
        order = "ack-first"
        alarms = { "pier/quay" = 12 }
        "#,
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!((c.baud, c.parity), (38400, Parity::Even));
    assert_eq!(c.alr.unwrap().order, AlrOrder::AckFirst);
}
