//! Property tests for the NMEA codec, the stable-toolchain stand-in for the cargo-fuzz target in
//! `fuzz/`: arbitrary and mutated byte streams must never panic the parser (tests run in debug
//! too, so arithmetic overflow would panic), every line is accounted for by exactly one counter,
//! the result does not depend on how the stream is chunked, and every alert the encoder can
//! produce comes back whole.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use thermal_edge::alert::nmea::{
    escape, unescape, Ack, AlertPart, AlertRecord, Alr, AlrOrder, Dialect, Heartbeat, Parser,
    Reassembler, Reject, Sentence, MAX_PARTS, MAX_SENTENCE_LEN,
};
use thermal_edge::alert::{Alert, AlertKind, AnomalyInfo, ALERT_SCHEMA_VERSION};
use thermal_edge::score::zones::Region;

/// 1000 cases per property by default; `PROPTEST_CASES` raises it for a deeper local run.
/// Failures print their shrunk input instead of writing regression files.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

type Events = Vec<Result<Sentence, Reject>>;

/// Feeds `bytes` in pieces of the given sizes (cycled), then checks the counters against the events.
fn feed_chunked(bytes: &[u8], sizes: &[usize], dialect: Dialect) -> (Events, Parser) {
    let mut p = Parser::new(dialect);
    let mut events = Vec::new();
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .clamp(1, rest.len());
        p.feed_into(&rest[..n], &mut events);
        rest = &rest[n..];
        i += 1;
    }
    let s = p.stats();
    let rejected = events.iter().filter(|e| e.is_err()).count() as u64;
    assert_eq!(s.accepted + s.rejected.total(), events.len() as u64);
    assert_eq!(s.rejected.total(), rejected);
    for e in events.iter().filter_map(|e| e.as_ref().err()) {
        assert!(!e.detail.is_empty());
    }
    (events, p)
}

/// Bytes with the structure of NMEA: starts, separators, hex, line ends, and some noise.
fn nmea_ish() -> impl Strategy<Value = Vec<u8>> {
    let alphabet: Vec<u8> = b"$!*,^\r\n0123456789ABCDEFPTHEAKLRVIIGN.-~\\ \x00\xff\xc3".to_vec();
    prop::collection::vec(prop::sample::select(alphabet), 0..600)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9 _-]{0,12}",
        ".{0,50}",
        prop::collection::vec(any::<char>(), 0..80).prop_map(|v| v.into_iter().collect()),
    ]
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![-100.0..100.0f64, any::<f64>()]
}

fn alert() -> impl Strategy<Value = Alert> {
    let kind = prop::sample::select(vec![
        AlertKind::AnomalyStart,
        AlertKind::AnomalyUpdate,
        AlertKind::AnomalyEnd,
        AlertKind::Health,
        AlertKind::Drift,
    ]);
    (
        (any::<u64>(), kind, text(), text(), text(), text()),
        (any::<bool>(), any::<u64>(), number(), number(), number()),
        (
            prop::collection::vec(any::<f32>(), 0..3),
            any::<i64>(),
            prop::option::of(text()),
        ),
    )
        .prop_map(
            |(
                (seq, kind, camera, zone, site, id),
                (has_anomaly, event, score, peak, threshold),
                (temps, raised_us, summary),
            )| Alert {
                schema: ALERT_SCHEMA_VERSION,
                id,
                seq,
                site,
                camera,
                kind,
                time_us: 0,
                raised_us,
                anomaly: has_anomaly.then(|| AnomalyInfo {
                    event,
                    score,
                    peak_score: peak,
                    threshold,
                    regime: "all".into(),
                    zone: (!zone.is_empty()).then_some(zone),
                    regions: temps
                        .into_iter()
                        .map(|t| Region {
                            bbox: [0, 0, 1, 1],
                            area: 4,
                            peak_error: 0.1,
                            mean_error: 0.1,
                            zone: None,
                            temperature_c: Some([t, t]),
                        })
                        .collect(),
                    frames: [0, 1],
                    start_us: 0,
                }),
                detail: summary.map(|s| serde_json::json!({ "summary": s })),
                model: "m".into(),
                snapshot: vec![],
            },
        )
}

/// Valid sentences of every kind this side writes or reads.
fn valid_stream() -> impl Strategy<Value = Vec<String>> {
    let one = prop_oneof![
        alert().prop_map(|a| AlertRecord::from_alert(&a).encode().unwrap()),
        prop::collection::vec(any::<u64>(), 1..4)
            .prop_map(|seqs| vec![Ack { seqs }.encode().unwrap()]),
        (
            any::<bool>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(
                |(ok, last_seq, pending, uptime_s, interval_s)| vec![Heartbeat {
                    ok,
                    last_seq,
                    pending: u64::from(pending),
                    uptime_s: u64::from(uptime_s),
                    interval_s
                }
                .encode()
                .unwrap()]
            ),
        (0u16..1000, any::<bool>(), any::<bool>(), text()).prop_map(|(number, a, k, text)| {
            vec![Alr {
                talker: "II".into(),
                time: "120000.00".into(),
                number,
                active: a,
                acknowledged: k,
                text,
            }
            .encode(AlrOrder::ConditionFirst)
            .unwrap()]
        }),
    ];
    prop::collection::vec(one, 0..6).prop_map(|v| v.concat())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Delete(usize),
    Insert(usize, u8),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..200).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match *m {
        Mutation::Flip(i, b) if len > 0 => bytes[i % len] ^= b | 1,
        Mutation::Delete(i) if len > 0 => {
            bytes.remove(i % len);
        }
        Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
        Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
        Mutation::Duplicate(i, n) if len > 0 => {
            let start = i % len;
            let piece = bytes[start..(start + n).min(len)].to_vec();
            bytes.splice(start..start, piece);
        }
        _ => {}
    }
}

/// Runs the parser's output through a reassembler, as a consumer would.
fn reassemble(events: &Events) -> Vec<Result<AlertRecord, Reject>> {
    let mut r = Reassembler::new(Duration::from_secs(5), 4);
    let now = Instant::now();
    let mut out = Vec::new();
    for e in events {
        if let Ok(Sentence::Alert(part)) = e {
            out.extend(r.push(part, now));
        }
        assert!(r.unfinished() <= 4);
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_and_every_line_is_counted(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        sizes in prop::collection::vec(1usize..64, 1..8),
    ) {
        let (events, _) = feed_chunked(&bytes, &sizes, Dialect::default());
        let (whole, _) = feed_chunked(&bytes, &[usize::MAX], Dialect::default());
        prop_assert_eq!(&events, &whole);
        reassemble(&events);
    }

    #[test]
    fn nmea_like_noise_never_panics_and_does_not_depend_on_chunking(
        bytes in nmea_ish(),
        sizes in prop::collection::vec(1usize..16, 1..8),
        ack_first in any::<bool>(),
    ) {
        let dialect = Dialect {
            alr_order: if ack_first { AlrOrder::AckFirst } else { AlrOrder::ConditionFirst },
        };
        let (events, _) = feed_chunked(&bytes, &sizes, dialect);
        let (whole, _) = feed_chunked(&bytes, &[usize::MAX], dialect);
        prop_assert_eq!(&events, &whole);
        reassemble(&events);
    }

    #[test]
    fn valid_sentences_are_all_accepted_and_survive_mutation(
        stream in valid_stream(),
        mutations in prop::collection::vec(mutation(), 0..6),
        sizes in prop::collection::vec(1usize..100, 1..4),
    ) {
        for line in &stream {
            prop_assert!(line.len() <= MAX_SENTENCE_LEN, "{:?}", line);
        }
        let clean = stream.concat().into_bytes();
        let (events, p) = feed_chunked(&clean, &sizes, Dialect::default());
        prop_assert_eq!(p.stats().accepted, stream.len() as u64);
        prop_assert_eq!(p.stats().rejected.total(), 0);
        prop_assert!(reassemble(&events).iter().all(|r| r.is_ok()));

        let mut bytes = clean;
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        let (events, _) = feed_chunked(&bytes, &sizes, Dialect::default());
        let (whole, _) = feed_chunked(&bytes, &[usize::MAX], Dialect::default());
        prop_assert_eq!(&events, &whole);
        reassemble(&events);
    }

    #[test]
    fn every_alert_fits_and_comes_back_whole(alert in alert(), sizes in prop::collection::vec(1usize..40, 1..4)) {
        let rec = AlertRecord::from_alert(&alert);
        let sentences = rec.encode().unwrap();
        prop_assert!(!sentences.is_empty() && sentences.len() <= MAX_PARTS);
        for s in &sentences {
            prop_assert!(s.len() <= MAX_SENTENCE_LEN && s.ends_with("\r\n"), "{:?}", s);
        }
        let (events, _) = feed_chunked(sentences.concat().as_bytes(), &sizes, Dialect::default());
        let back = reassemble(&events);
        prop_assert_eq!(back.len(), 1);
        prop_assert_eq!(back[0].as_ref().unwrap(), &rec);
    }

    #[test]
    fn arbitrary_parts_never_panic_the_reassembler(
        parts in prop::collection::vec(
            (0u64..4, any::<u8>(), any::<u8>(), ".{0,40}", 0u64..20),
            0..50,
        ),
    ) {
        let mut r = Reassembler::new(Duration::from_secs(5), 3);
        let t0 = Instant::now();
        for (seq, part, n, data, t) in parts {
            let _ = r.push(&AlertPart { seq, part, parts: n, data }, t0 + Duration::from_secs(t));
            prop_assert!(r.unfinished() <= 3);
        }
    }

    #[test]
    fn escaping_round_trips_and_unescaping_never_panics(s in any::<String>(), raw in ".{0,60}") {
        let e = escape(&s);
        prop_assert!(e.bytes().all(|b| (0x20..0x7f).contains(&b) && !b"$*,!\\~".contains(&b)));
        prop_assert_eq!(unescape(&e).unwrap(), s);
        let _ = unescape(&raw);
    }
}
