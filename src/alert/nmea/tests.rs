use super::*;
use crate::alert::{ulid, AnomalyInfo, ALERT_SCHEMA_VERSION};
use crate::score::zones::Region;

fn region(zone: &str, hi: f32) -> Region {
    Region {
        bbox: [3, 4, 10, 9],
        area: 40,
        peak_error: 0.5,
        mean_error: 0.2,
        zone: Some(zone.into()),
        temperature_c: Some([hi, hi - 10.0]),
    }
}

fn anomaly_alert(seq: u64) -> Alert {
    Alert {
        schema: ALERT_SCHEMA_VERSION,
        id: ulid(1_700_000_000_000 + seq, 42),
        seq,
        site: "harbor".into(),
        camera: "pier".into(),
        kind: AlertKind::AnomalyStart,
        time_us: 5_000_000,
        raised_us: 1_700_000_000_123_456,
        anomaly: Some(AnomalyInfo {
            event: 7,
            score: 20.004,
            peak_score: 21.5,
            threshold: 16.0,
            regime: "all".into(),
            zone: Some("pier-end".into()),
            regions: vec![region("pier-end", 45.34), region("quay", 61.26)],
            frames: [4, 5],
            start_us: 9,
        }),
        detail: None,
        model: "abc".into(),
        snapshot: vec![],
    }
}

fn lines(sentences: &[String]) -> Vec<u8> {
    sentences.concat().into_bytes()
}

fn only_sentences(events: Vec<Result<Sentence, Reject>>) -> Vec<Sentence> {
    events
        .into_iter()
        .map(|e| e.unwrap_or_else(|r| panic!("rejected: {r}")))
        .collect()
}

fn reasons(events: &[Result<Sentence, Reject>]) -> Vec<Option<RejectReason>> {
    events
        .iter()
        .map(|e| e.as_ref().err().map(|r| r.reason))
        .collect()
}

#[test]
fn checksums_match_published_sentences() {
    // Textbook sentences with their published checksums.
    for line in [
        "$GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,*76",
        "$GPRMC,081836,A,3751.65,S,14507.36,E,000.0,360.0,130998,011.3,E*62",
    ] {
        let raw = decode_frame(line.as_bytes()).unwrap();
        assert_eq!(raw.start, '$');
        assert!(raw.address.starts_with("GP"));
        let framed = frame(&raw.address, &raw.fields).unwrap();
        assert_eq!(framed, format!("{line}\r\n"));
    }
    // Lower-case hex is accepted on the way in.
    let ok = Ack { seqs: vec![12] }.encode().unwrap();
    let lower = ok
        .trim_end()
        .to_ascii_lowercase()
        .replace("$pthek", "$PTHEK");
    assert!(decode_frame(lower.as_bytes()).is_ok(), "{lower}");
}

#[test]
fn escaping_round_trips_reserved_and_non_ascii_text() {
    let text = "a,b*c$d!e\\f^g~h\r\n\x7f Kai 7 — Øst 🚢";
    let e = escape(text);
    assert!(e.bytes().all(|b| is_plain(b) || b == b'^'), "{e}");
    assert!(e.starts_with("a^2Cb^2Ac^24d^21e^5Cf^5Eg^7Eh^0D^0A^7F Kai 7 ^E2^80^94"));
    assert_eq!(unescape(&e).unwrap(), text);
    // Cuts fall between characters, never inside a multi-byte escape.
    let (cut, was_cut) = escape_bounded("ab🚢", 13);
    assert_eq!((cut.as_str(), was_cut), ("ab", true));
    let (whole, was_cut) = escape_bounded("ab🚢", 14);
    assert_eq!((whole.as_str(), was_cut), ("ab^F0^9F^9A^A2", false));
    assert_eq!(unescape("x^4").unwrap_err().reason, RejectReason::Malformed);
    assert_eq!(unescape("^zz").unwrap_err().reason, RejectReason::Malformed);
    // Bytes that are not UTF-8 (a Latin-1 PLC) still decode, replaced.
    assert_eq!(unescape("K^F8ge").unwrap(), "K\u{FFFD}ge");
}

#[test]
fn framing_refuses_unescaped_fields_and_over_long_sentences() {
    assert!(matches!(
        frame("PTHEK", &["1,2"]),
        Err(NmeaError::UnescapedField { index: 1, .. })
    ));
    assert!(matches!(
        frame("PTHEK", &["1", "a^G1"]),
        Err(NmeaError::UnescapedField { index: 2, .. })
    ));
    assert!(matches!(
        frame("pthek", &["1"]),
        Err(NmeaError::InvalidAddress(_))
    ));
    // `$` + address + `,` + field + `*hh` CR LF = 82 exactly is fine, 83 is not.
    let fits = "x".repeat(82 - 1 - 5 - 1 - 5);
    assert_eq!(frame("PTHEA", &[fits.as_str()]).unwrap().len(), 82);
    let over = format!("{fits}x");
    assert!(matches!(
        frame("PTHEA", &[over.as_str()]),
        Err(NmeaError::TooLong { len: 83, .. })
    ));
}

#[test]
fn the_parser_takes_any_line_ending_and_any_chunking() {
    let a = Ack { seqs: vec![1] }.encode().unwrap();
    let b = Ack { seqs: vec![2, 3] }.encode().unwrap();
    let (a, b) = (a.trim_end(), b.trim_end());
    for stream in [
        format!("{a}\r\n{b}\r\n"),
        format!("{a}\n{b}\n"),
        format!("{a}\r{b}\r"),
        format!("\r\n\r\n{a}\n\r{b}\r\n\n"),
        // A lost line end: the next `$` still starts a new sentence.
        format!("{a}{b}\r\n"),
    ] {
        for chunk in [1, 2, 7, 1000] {
            let mut p = Parser::default();
            let mut got = Vec::new();
            for piece in stream.as_bytes().chunks(chunk) {
                got.extend(p.feed(piece));
            }
            let got = only_sentences(got);
            assert_eq!(
                got,
                vec![
                    Sentence::Ack(Ack { seqs: vec![1] }),
                    Sentence::Ack(Ack { seqs: vec![2, 3] })
                ],
                "{stream:?} in chunks of {chunk}"
            );
            assert_eq!(p.stats().accepted, 2);
            assert_eq!(p.stats().rejected.total(), 0);
            assert_eq!(p.pending_len(), 0);
        }
    }
}

#[test]
fn every_kind_of_bad_line_is_rejected_with_its_counted_reason() {
    let good = Ack { seqs: vec![9] }.encode().unwrap();
    let good = good.trim_end();
    let bad_sum = good.replace(&good[good.len() - 2..], "00");
    let too_long = format!("$PTHEK,{}*00", "1".repeat(90));
    let unknown = frame("GPGGA", &["1"]).unwrap();
    let missing = frame("PTHEH", &["A", "1"]).unwrap();
    let bad_value = frame("PTHEK", &["12a"]).unwrap();
    let bad_parts = frame("PTHEA", &["5", "3", "2", "S"]).unwrap();
    let bad_hbt = frame("IIHBT", &["10", "A", "12"]).unwrap();
    let stream = format!(
        "{bad_sum}\r\n{too_long}\r\nhello\r\n$PTHEK,1\r\n$PTH\u{e9}K,1*00\r\n\x00\x01\r\n{unknown}{missing}{bad_value}{bad_parts}{bad_hbt}junk{good}\r\n!AIVDM,1*00\r\n"
    );
    let mut p = Parser::default();
    let events = p.feed(stream.as_bytes());
    use RejectReason::*;
    assert_eq!(
        reasons(&events),
        vec![
            Some(BadChecksum),
            Some(TooLong),
            Some(Malformed),
            Some(Malformed),
            Some(NotAscii),
            Some(NotAscii),
            Some(UnknownSentence),
            Some(MissingFields),
            Some(Malformed),
            Some(Malformed),
            Some(Malformed),
            Some(Malformed),
            None,
            Some(BadChecksum),
        ]
    );
    let s = p.stats();
    assert_eq!(s.accepted, 1);
    assert_eq!(s.rejected.bad_checksum, 2);
    assert_eq!(s.rejected.too_long, 1);
    assert_eq!(s.rejected.malformed, 6);
    assert_eq!(s.rejected.not_ascii, 2);
    assert_eq!(s.rejected.unknown_sentence, 1);
    assert_eq!(s.rejected.missing_fields, 1);
    assert_eq!(s.rejected.total() + s.accepted, events.len() as u64);
    let detail = events[0].as_ref().unwrap_err();
    assert!(detail.detail.contains("checksum 00"), "{detail}");
    // A valid `!` frame that nothing here uses.
    let vdm = frame("AIVDM", &["1"]).unwrap().replacen('$', "!", 1);
    let e = p.feed(vdm.as_bytes());
    assert_eq!(reasons(&e), vec![Some(UnknownSentence)]);
}

#[test]
fn endless_garbage_stays_bounded_and_counts_once() {
    let mut p = Parser::default();
    let noise: Vec<u8> = (0..100_000u32).map(|i| (i % 250) as u8 | 0x80).collect();
    assert!(p.feed(&noise).is_empty());
    assert!(p.pending_len() >= noise.len());
    assert!(p.line.capacity() <= 2 * MAX_SENTENCE_LEN);
    let e = p.feed(b"\n");
    assert_eq!(reasons(&e), vec![Some(RejectReason::TooLong)]);
    // A reconnect cuts a partial line: counted as malformed, nothing carried over.
    p.feed(b"$PTHEK,4");
    let r = p.reset().unwrap();
    assert_eq!(r.reason, RejectReason::Malformed);
    assert_eq!(p.reset(), None);
    let ack = Ack { seqs: vec![5] }.encode().unwrap();
    let got = only_sentences(p.feed(ack.as_bytes()));
    assert_eq!(got, vec![Sentence::Ack(Ack { seqs: vec![5] })]);
}

fn reassemble_all(sentences: &[String]) -> Vec<AlertRecord> {
    let mut p = Parser::default();
    let mut r = Reassembler::new(Duration::from_secs(10), 8);
    let now = Instant::now();
    only_sentences(p.feed(&lines(sentences)))
        .into_iter()
        .filter_map(|s| match s {
            Sentence::Alert(part) => r.push(&part, now),
            other => panic!("unexpected {other:?}"),
        })
        .map(|res| res.unwrap())
        .collect()
}

#[test]
fn an_anomaly_alert_round_trips_through_sentences() {
    let alert = anomaly_alert(12);
    let rec = AlertRecord::from_alert(&alert);
    assert_eq!(rec.kind, AlertKind::AnomalyStart);
    assert_eq!(rec.score, Some(20.0));
    assert_eq!(rec.peak, Some(21.5));
    assert_eq!(rec.threshold, Some(16.0));
    assert_eq!(rec.tmax_c, Some(61.3));
    assert_eq!(rec.zone, "pier-end");
    assert_eq!(
        (rec.time.as_str(), rec.date.as_str()),
        ("221320.12", "141123")
    );
    let sentences = rec.encode().unwrap();
    assert_eq!(sentences.len(), 2, "{sentences:?}");
    for s in &sentences {
        assert!(s.len() <= MAX_SENTENCE_LEN && s.ends_with("\r\n"), "{s:?}");
    }
    // The first part holds the fields a short reader needs, whole.
    assert!(
        sentences[0].starts_with("$PTHEA,12,1,2,S,pier,pier-end,7,20.00,16.00,21.50,61.3,"),
        "{}",
        sentences[0]
    );
    assert_eq!(reassemble_all(&sentences), vec![rec]);
}

#[test]
fn health_and_drift_alerts_carry_their_summary() {
    let mut alert = anomaly_alert(3);
    alert.kind = AlertKind::Health;
    alert.anomaly = None;
    alert.detail = Some(serde_json::json!({"camera": "fault", "error": "read timed out, 5 s"}));
    let rec = AlertRecord::from_alert(&alert);
    assert_eq!(rec.text, "camera fault: read timed out, 5 s");
    assert_eq!((rec.event, rec.score, rec.tmax_c), (None, None, None));
    assert_eq!(reassemble_all(&rec.encode().unwrap()), vec![rec]);

    alert.kind = AlertKind::Drift;
    alert.detail = Some(serde_json::json!({"summary": "day: warn (mean score up 40 %)"}));
    let rec = AlertRecord::from_alert(&alert);
    assert_eq!(rec.text, "day: warn (mean score up 40 %)");
    assert_eq!(reassemble_all(&rec.encode().unwrap()), vec![rec]);
}

#[test]
fn the_longest_possible_alert_fits_the_part_limit() {
    let mut alert = anomaly_alert(u64::MAX);
    let huge = "Ø,*$".repeat(200);
    alert.camera = huge.clone();
    alert.site = huge.clone();
    alert.id = huge.clone();
    let a = alert.anomaly.as_mut().unwrap();
    a.zone = Some(huge.clone());
    a.event = u64::MAX;
    a.score = -1e300;
    a.peak_score = f64::NAN;
    a.threshold = 1e300;
    alert.kind = AlertKind::Drift;
    alert.detail = Some(serde_json::json!({ "summary": huge }));
    let rec = AlertRecord::from_alert(&alert);
    assert!(rec.camera.starts_with("Ø,*$") && rec.camera.len() < huge.len());
    assert_eq!(rec.score, Some(-1e9));
    assert_eq!(rec.peak, None);
    let sentences = rec.encode().unwrap();
    assert!(sentences.len() <= MAX_PARTS, "{}", sentences.len());
    for s in &sentences {
        assert!(s.len() <= MAX_SENTENCE_LEN, "{s:?}");
        // No `^hh` escape is split between two sentences.
        let data = s.trim_end().rsplit_once('*').unwrap().0;
        assert!(
            !data.ends_with('^') && data.as_bytes()[data.len() - 2] != b'^',
            "{s}"
        );
    }
    assert_eq!(reassemble_all(&sentences), vec![rec]);
}

#[test]
fn parts_reassemble_in_any_order_and_stale_ones_expire() {
    let mut alert = anomaly_alert(40);
    alert.camera = "a-camera-with-a-rather-long-name-for-splitting".into();
    let rec = AlertRecord::from_alert(&alert);
    let sentences = rec.encode().unwrap();
    assert!(sentences.len() >= 3, "{sentences:?}");
    let mut p = Parser::default();
    let parts: Vec<AlertPart> = only_sentences(p.feed(&lines(&sentences)))
        .into_iter()
        .map(|s| match s {
            Sentence::Alert(a) => a,
            other => panic!("{other:?}"),
        })
        .collect();
    let t0 = Instant::now();
    let mut r = Reassembler::new(Duration::from_secs(5), 2);
    for part in parts.iter().rev().skip(1) {
        assert!(r.push(part, t0).is_none());
    }
    assert_eq!(r.push(&parts[parts.len() - 1], t0), Some(Ok(rec.clone())));
    assert_eq!(r.unfinished(), 0);
    // A repeat of one part alone never completes; it expires.
    assert!(r.push(&parts[0], t0).is_none());
    r.expire(t0 + Duration::from_secs(6));
    assert_eq!((r.unfinished(), r.stats().expired), (0, 1));
    // Capacity: a third unfinished alert evicts the oldest.
    for seq in [1, 2, 3] {
        let part = AlertPart {
            seq,
            ..parts[0].clone()
        };
        assert!(r.push(&part, t0).is_none());
    }
    assert_eq!((r.unfinished(), r.stats().evicted), (2, 1));
    // A part that disagrees on the count restarts that alert.
    let odd = AlertPart {
        seq: 3,
        part: 1,
        parts: 2,
        data: "S,".into(),
    };
    assert!(r.push(&odd, t0).is_none());
    assert_eq!(r.stats().restarted, 1);
    // A completed alert whose record is short is rejected with a reason.
    let short = AlertPart {
        seq: 9,
        part: 1,
        parts: 1,
        data: "S,pier".into(),
    };
    let res = r.push(&short, t0).unwrap().unwrap_err();
    assert_eq!(res.reason, RejectReason::MissingFields);
    let bad = AlertPart {
        seq: 9,
        part: 1,
        parts: 1,
        data: "Q,,,,,,,,,,,,".into(),
    };
    assert_eq!(
        r.push(&bad, t0).unwrap().unwrap_err().reason,
        RejectReason::Malformed
    );
    assert_eq!(r.stats().rejected.total(), 2);
}

#[test]
fn alr_fields_follow_the_configured_order() {
    let alr = Alr {
        talker: "II".into(),
        time: "221320.12".into(),
        number: 7,
        active: true,
        acknowledged: false,
        text: "THERMAL pier/pier-end 20.0>16.0 61.3C".into(),
    };
    let std = alr.encode(AlrOrder::ConditionFirst).unwrap();
    assert!(
        std.starts_with("$IIALR,221320.12,007,A,V,THERMAL pier/pier-end 20.0>16.0 61.3C*"),
        "{std}"
    );
    let swapped = alr.encode(AlrOrder::AckFirst).unwrap();
    assert!(
        swapped.starts_with("$IIALR,221320.12,007,V,A,"),
        "{swapped}"
    );
    for (line, order) in [
        (&std, AlrOrder::ConditionFirst),
        (&swapped, AlrOrder::AckFirst),
    ] {
        let mut p = Parser::new(Dialect { alr_order: order });
        assert_eq!(
            only_sentences(p.feed(line.as_bytes())),
            vec![Sentence::Alr(alr.clone())]
        );
    }
    // Read with the wrong order, the flags come out swapped: the order must match the device.
    let mut p = Parser::new(Dialect {
        alr_order: AlrOrder::AckFirst,
    });
    match &only_sentences(p.feed(std.as_bytes()))[0] {
        Sentence::Alr(a) => assert!(!a.active && a.acknowledged),
        other => panic!("{other:?}"),
    }
    // Long text is cut to keep 82 characters.
    let long = Alr {
        text: "x".repeat(200),
        ..alr.clone()
    };
    let s = long.encode(AlrOrder::ConditionFirst).unwrap();
    assert_eq!(s.len(), MAX_SENTENCE_LEN);
    assert!(matches!(
        Alr {
            number: 1000,
            ..alr.clone()
        }
        .encode(AlrOrder::ConditionFirst),
        Err(NmeaError::OutOfRange { .. })
    ));
    assert!(matches!(
        Alr {
            talker: "I".into(),
            ..alr
        }
        .encode(AlrOrder::ConditionFirst),
        Err(NmeaError::InvalidTalker(_))
    ));
}

#[test]
fn heartbeats_and_panel_acknowledgements_parse() {
    let hb = Heartbeat {
        ok: false,
        last_seq: 41,
        pending: 2,
        uptime_s: 3600,
        interval_s: 10,
    };
    let hbt = Hbt {
        talker: "II".into(),
        interval_s: 10.0,
        ok: true,
        seq: 3,
    };
    let ack = AlarmAck {
        talker: "VR".into(),
        number: 7,
    };
    let acn = Acn {
        talker: "VR".into(),
        time: "120000.00".into(),
        manufacturer: String::new(),
        identifier: 7,
        instance: Some(1),
        command: 'A',
    };
    let stream = [
        hb.encode().unwrap(),
        hbt.encode().unwrap(),
        ack.encode().unwrap(),
        acn.encode().unwrap(),
    ];
    assert!(stream[0].starts_with("$PTHEH,V,41,2,3600,10*"));
    assert!(stream[1].starts_with("$IIHBT,10.0,A,3*"));
    assert!(stream[2].starts_with("$VRACK,007*"));
    assert!(stream[3].starts_with("$VRACN,120000.00,,7,1,A,C*"));
    let mut p = Parser::default();
    assert_eq!(
        only_sentences(p.feed(&lines(&stream))),
        vec![
            Sentence::Heartbeat(hb),
            Sentence::Hbt(hbt),
            Sentence::AlarmAck(ack),
            Sentence::Acn(acn.clone()),
        ]
    );
    assert!(acn.is_acknowledge());
    // ACN without the identifier is missing a field.
    let bad = frame("VRACN", &["120000.00", "", "", "", "A", "C"]).unwrap();
    assert_eq!(
        reasons(&p.feed(bad.as_bytes())),
        vec![Some(RejectReason::MissingFields)]
    );
}

#[test]
fn utc_fields_follow_the_calendar() {
    assert_eq!(
        utc_time_date(1_700_000_000_000_000),
        ("221320.00".to_string(), "141123".to_string())
    );
    // 2000-02-29 (leap day) 23:59:59.99
    assert_eq!(
        utc_time_date(951_868_799_990_000),
        ("235959.99".to_string(), "290200".to_string())
    );
    assert_eq!(utc_time_date(0), (String::new(), String::new()));
    assert_eq!(utc_time_date(i64::MAX).0.len(), 9);
}

/// The protocol document, whose examples must be what this code writes and reads.
const PROTOCOL_DOC: &str = include_str!("../../../docs/serial-protocol.md");

/// Lines of the fenced blocks whose info string is `tag`.
fn doc_block_lines(tag: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in PROTOCOL_DOC.lines() {
        let t = line.trim();
        if let Some(info) = t.strip_prefix("```") {
            inside = !inside && info.trim() == tag;
            continue;
        }
        if inside && !t.is_empty() && !t.starts_with('#') {
            out.push(t);
        }
    }
    out
}

/// The sentences the document shows, built by the code.
fn doc_examples() -> Vec<String> {
    let mut alert = anomaly_alert(1042);
    alert.camera = "pier".into();
    alert.site = "harbor-north".into();
    alert.id = ulid(1_764_511_509_250, 0x5EED);
    alert.raised_us = 1_764_511_509_250_000;
    let a = alert.anomaly.as_mut().unwrap();
    a.event = 17;
    a.score = 21.37;
    a.peak_score = 23.1;
    a.regions = vec![region("pier-end", 61.3)];
    let mut out = AlertRecord::from_alert(&alert).encode().unwrap();
    let mut fault = anomaly_alert(1043);
    fault.camera = "pier".into();
    fault.site = "harbor-north".into();
    fault.id = ulid(1_764_511_512_000, 0xF00D);
    fault.raised_us = 1_764_511_512_000_000;
    fault.kind = AlertKind::Health;
    fault.anomaly = None;
    fault.detail = Some(serde_json::json!({"camera": "fault", "error": "no frame for 5 s"}));
    out.extend(AlertRecord::from_alert(&fault).encode().unwrap());
    out.push(Ack { seqs: vec![1042] }.encode().unwrap());
    out.push(
        Ack {
            seqs: vec![1042, 1043],
        }
        .encode()
        .unwrap(),
    );
    out.push(
        Heartbeat {
            ok: true,
            last_seq: 1043,
            pending: 0,
            uptime_s: 86_400,
            interval_s: 10,
        }
        .encode()
        .unwrap(),
    );
    out.push(
        Heartbeat {
            ok: false,
            last_seq: 1043,
            pending: 2,
            uptime_s: 86_412,
            interval_s: 10,
        }
        .encode()
        .unwrap(),
    );
    let alr = Alr {
        talker: "II".into(),
        time: "140509.25".into(),
        number: 7,
        active: true,
        acknowledged: false,
        text: "THERMAL pier/pier-end 21.4>16.0 61.3C".into(),
    };
    out.push(alr.encode(AlrOrder::ConditionFirst).unwrap());
    out.push(alr.encode(AlrOrder::AckFirst).unwrap());
    out.push(
        Alr {
            acknowledged: true,
            ..alr.clone()
        }
        .encode(AlrOrder::ConditionFirst)
        .unwrap(),
    );
    out.push(
        Alr {
            time: "141730.00".into(),
            active: false,
            acknowledged: true,
            ..alr
        }
        .encode(AlrOrder::ConditionFirst)
        .unwrap(),
    );
    out.push(
        Hbt {
            talker: "II".into(),
            interval_s: 10.0,
            ok: true,
            seq: 4,
        }
        .encode()
        .unwrap(),
    );
    out.push(
        AlarmAck {
            talker: "VR".into(),
            number: 7,
        }
        .encode()
        .unwrap(),
    );
    out.push(
        Acn {
            talker: "VR".into(),
            time: "140602.00".into(),
            manufacturer: String::new(),
            identifier: 7,
            instance: None,
            command: 'A',
        }
        .encode()
        .unwrap(),
    );
    out
}

#[test]
fn the_protocol_document_shows_what_the_code_writes() {
    let examples = doc_examples();
    let shown = doc_block_lines("nmea");
    let missing: Vec<&str> = examples
        .iter()
        .map(|s| s.trim_end())
        .filter(|s| !shown.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/serial-protocol.md:\n{}",
        missing.join("\n")
    );
    // Every example shown parses, in either ALR order where it is an ALR.
    let mut p = Parser::default();
    let mut swapped = Parser::new(Dialect {
        alr_order: AlrOrder::AckFirst,
    });
    for line in &shown {
        let bytes = format!("{line}\r\n");
        let ok = p.feed(bytes.as_bytes());
        let ok2 = swapped.feed(bytes.as_bytes());
        assert!(
            ok.iter().chain(&ok2).any(Result::is_ok),
            "doc example does not parse: {line} ({ok:?})"
        );
    }
    // The reassembled alert example carries the documented values.
    let recs = reassemble_all(&examples[..2]);
    assert_eq!(recs[0].score, Some(21.37));
    assert_eq!(
        (recs[0].time.as_str(), recs[0].date.as_str()),
        ("140509.25", "301125")
    );
    // Every rejected example is rejected for the reason written before it.
    let rejected = doc_block_lines("nmea-rejected");
    assert!(rejected.len() >= 6);
    let mut seen = std::collections::BTreeSet::new();
    for line in rejected {
        let (reason, sentence) = line.split_once(' ').unwrap();
        let reason = RejectReason::from_name(reason).unwrap_or_else(|| panic!("{reason}"));
        let mut p = Parser::default();
        let got = p.feed(format!("{}\r\n", sentence.trim_start()).as_bytes());
        assert_eq!(reasons(&got), vec![Some(reason)], "{line}");
        seen.insert(reason);
    }
    assert_eq!(seen.len(), RejectReason::ALL.len());
}
