//! Property tests for the file decoders: arbitrary and mutated input must give a result or an
//! error naming the file, never a panic (tests run in debug, so arithmetic overflow panics too).

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use thermal_edge::source::cptv::{
    decode_cptv_bytes, encode_cptv, CptvFrame, CptvFrameInfo, CptvHeader, CptvSource,
};
use thermal_edge::source::npy::{encode_u16, encode_u8, parse_npy, NpyData};
use thermal_edge::source::FrameSource;

const CPTV_PATH: &str = "fuzz/clip.cptv";
const NPY_PATH: &str = "fuzz/frames.npy";

/// 2000 cases per property by default (well under a minute in debug); `PROPTEST_CASES` raises it
/// for a deeper local run. Failures print their shrunk input instead of writing regression files.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(raw).unwrap();
    e.finish().unwrap()
}

fn header(version: u8, width: u32, height: u32) -> CptvHeader {
    CptvHeader {
        version,
        timestamp_us: Some(1_600_000_000_000_000),
        width,
        height,
        compression: 1,
        device_name: Some("fuzz".into()),
        device_id: Some(7),
        camera_model: Some("lepton3".into()),
        brand: None,
        firmware: None,
        camera_serial: None,
        fps: Some(9),
        preview_secs: None,
        min_value: Some(10),
        max_value: Some(60000),
        frame_count: Some(3),
        has_background_frame: version == 2,
    }
}

/// Small valid recordings (raw, not gzipped): a v2 clip with a background frame and a v1 clip.
fn valid_cptv() -> &'static [Vec<u8>] {
    static FILES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FILES.get_or_init(|| {
        [2u8, 1]
            .into_iter()
            .map(|version| {
                let (w, h) = (5, 4);
                let frames: Vec<CptvFrame> = (0..3u32)
                    .map(|t| {
                        let pixels = (0..w * h)
                            .map(|i| (3000 + i * 37 + t * 500) as u16 ^ (t as u16 * 0x4001))
                            .collect();
                        let mut info = CptvFrameInfo {
                            temp_c: Some(20.0),
                            ..CptvFrameInfo::default()
                        };
                        if version == 1 {
                            info.offset_us = Some(1000 + 114_000 * t);
                        } else if t == 0 {
                            info.is_background = true;
                        } else {
                            info.time_on_ms = Some(50_000 + 114 * t);
                            info.last_ffc_time_ms = Some(49_000);
                        }
                        CptvFrame { info, pixels }
                    })
                    .collect();
                encode_cptv(&header(version, w, h), &frames)
            })
            .collect()
    })
}

fn valid_npy() -> &'static [Vec<u8>] {
    static FILES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FILES.get_or_init(|| {
        let px: Vec<u16> = (0..24u16).map(|i| i.wrapping_mul(2731)).collect();
        vec![
            encode_u16(&[2, 3, 4], &px),
            encode_u8(&[6], &[0, 1, 2, 254, 255, 7]),
            encode_u16(&[3], &px[..3]),
        ]
    })
}

/// One edit of a byte string; positions are taken modulo the current length.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Set { at: usize, value: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Values that tend to sit on boundaries: zero, all ones, bit widths 32/33, ASCII punctuation.
    let value = prop_oneof![
        Just(0u8),
        Just(0xff),
        Just(32),
        Just(33),
        Just(b'\''),
        Just(b')'),
        any::<u8>()
    ];
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), value).prop_map(|(at, value)| Mutation::Set { at, value }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Remove { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn mutate(bytes: &[u8], edits: &[Mutation]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for m in edits {
        let n = b.len();
        match m {
            Mutation::Flip { at, mask } if n > 0 => b[at % n] ^= mask,
            Mutation::Set { at, value } if n > 0 => b[at % n] = *value,
            Mutation::Insert { at, bytes } => {
                let at = at % (n + 1);
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Remove { at, len } if n > 0 => {
                let at = at % n;
                b.drain(at..(at + len).min(n));
            }
            Mutation::Truncate { at } => b.truncate(at % (n + 1)),
            _ => {}
        }
    }
    b
}

/// One `len code data` field; `len` may lie about the data that follows.
fn raw_field(len: u8, code: u8, data: &[u8]) -> Vec<u8> {
    [&[len, code][..], data].concat()
}

/// A structurally plausible frame: random extra fields, a bit width near the legal range and
/// packed data whose size is close to (or exactly) what the width needs, so decoding is reached.
fn random_frame(pixels: usize) -> impl Strategy<Value = Vec<u8>> {
    // Mostly well-formed known fields (times that may run backwards, background flags), some junk.
    let known = prop_oneof![
        (
            prop::sample::select(vec![b't', b'c', b'a', b'b']),
            any::<[u8; 4]>()
        )
            .prop_map(|(c, d)| raw_field(4, c, &d)),
        any::<u8>().prop_map(|v| raw_field(1, b'g', &[v])),
    ];
    let junk = (any::<u8>(), prop::collection::vec(any::<u8>(), 0..6))
        .prop_map(|(c, d)| raw_field(d.len() as u8, c, &d));
    let extra = prop::collection::vec(prop_oneof![3 => known, 1 => junk], 0..4);
    let width = prop_oneof![8 => 1u8..=32, 1 => any::<u8>()];
    let slack = prop_oneof![3 => Just(0i64), 1 => -3i64..4];
    let honest = prop::bool::weighted(0.9);
    (extra, width, slack, honest, any::<u64>()).prop_map(move |(extra, bw, slack, honest, seed)| {
        let need = 4 + ((pixels as i64 - 1) * i64::from(bw) + 7) / 8;
        let size = (need + slack).max(0) as usize;
        let mut fields = extra;
        fields.push(raw_field(1, b'w', &[bw]));
        let declared = if honest {
            size as u32
        } else {
            (seed >> 32) as u32
        };
        fields.push(raw_field(4, b'f', &declared.to_le_bytes()));
        let mut out = vec![b'F', fields.len() as u8];
        out.extend(fields.concat());
        let mut x = seed | 1;
        out.extend((0..size).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }));
        out
    })
}

/// A file with a correct small header (plus random extra header fields) and random frames.
fn random_cptv() -> impl Strategy<Value = Vec<u8>> {
    (1u32..7, 1u32..7, 1u8..=2).prop_flat_map(|(w, h, version)| {
        let extra = prop::collection::vec(
            (any::<u8>(), prop::collection::vec(any::<u8>(), 0..9)),
            0..4,
        );
        let frames = prop::collection::vec(random_frame((w * h) as usize), 1..5);
        (extra, frames).prop_map(move |(extra, frames)| {
            let mut fields = vec![
                raw_field(4, b'X', &w.to_le_bytes()),
                raw_field(4, b'Y', &h.to_le_bytes()),
                raw_field(1, b'C', &[1]),
            ];
            fields.extend(extra.iter().map(|(c, d)| raw_field(d.len() as u8, *c, d)));
            let mut out = b"CPTV".to_vec();
            out.extend_from_slice(&[version, b'H', fields.len() as u8]);
            out.extend(fields.concat());
            out.extend(frames.concat());
            out
        })
    })
}

/// Runs every CPTV entry point on `bytes`; panics only on a broken invariant.
fn exercise_cptv(bytes: &[u8]) {
    let path = Path::new(CPTV_PATH);
    match decode_cptv_bytes(bytes, path) {
        Ok((h, frames)) => {
            assert!(
                (1..=4096).contains(&h.width) && (1..=4096).contains(&h.height),
                "{h:?}"
            );
            let n = h.width as usize * h.height as usize;
            assert!(frames
                .iter()
                .all(|f| f.pixels.len() == n && (1..=32).contains(&f.info.bit_width)));
        }
        Err(e) => assert!(
            e.to_string().contains(CPTV_PATH),
            "error does not name the file: {e}"
        ),
    }
    // The source adds timestamps and buffer reuse on top of the same parser.
    match CptvSource::from_bytes(bytes, path) {
        Ok(mut s) => {
            let n = s.frame_count();
            let mut seen = 0;
            loop {
                match s.next_frame() {
                    Ok(Some(f)) => {
                        assert_eq!(f.meta.seq, seen as u64);
                        seen += 1;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        assert!(e.to_string().contains(CPTV_PATH), "{e}");
                        break;
                    }
                }
            }
            assert!(seen <= n);
        }
        Err(e) => assert!(e.to_string().contains(CPTV_PATH), "{e}"),
    }
}

fn exercise_npy(bytes: &[u8]) {
    match parse_npy(bytes, Path::new(NPY_PATH)) {
        Ok(a) => {
            let count = a
                .shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d));
            assert_eq!(
                count,
                Some(a.data.len()),
                "shape {:?} vs {} elements",
                a.shape,
                a.data.len()
            );
        }
        Err(e) => assert!(
            e.to_string().contains(NPY_PATH),
            "error does not name the file: {e}"
        ),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cptv_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        exercise_cptv(&bytes);
    }

    #[test]
    fn cptv_survives_arbitrary_bytes_after_a_magic(
        prefix in prop_oneof![Just(&b"CPTV\x02H"[..]), Just(&b"CPTV\x01H\x03"[..]), Just(&b"\x1f\x8b"[..])],
        tail in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        exercise_cptv(&[prefix, &tail[..]].concat());
    }

    #[test]
    fn cptv_survives_mutated_valid_files(
        which in 0usize..2,
        edits in prop::collection::vec(mutation(), 1..6),
    ) {
        exercise_cptv(&mutate(&valid_cptv()[which], &edits));
    }

    #[test]
    fn cptv_survives_structured_random_files(bytes in random_cptv()) {
        exercise_cptv(&bytes);
    }

    #[test]
    fn cptv_survives_mutated_gzip_files(
        which in 0usize..2,
        edits in prop::collection::vec(mutation(), 1..4),
    ) {
        exercise_cptv(&mutate(&gzip(&valid_cptv()[which]), &edits));
    }

    #[test]
    fn cptv_gzip_of_mutated_content_is_handled(
        which in 0usize..2,
        edits in prop::collection::vec(mutation(), 1..6),
    ) {
        // Valid gzip around corrupt content reaches the parser through the normal file path.
        exercise_cptv(&gzip(&mutate(&valid_cptv()[which], &edits)));
    }

    #[test]
    fn cptv_round_trips_random_frames(
        (w, h, frames) in (1u32..9, 1u32..9, 1usize..4).prop_flat_map(|(w, h, t)| {
            let px = prop::collection::vec(any::<u16>(), (w * h) as usize);
            (Just(w), Just(h), prop::collection::vec(px, t))
        }),
    ) {
        let frames: Vec<CptvFrame> = frames
            .into_iter()
            .enumerate()
            .map(|(i, pixels)| CptvFrame {
                info: CptvFrameInfo { time_on_ms: Some(1000 + 114 * i as u32), ..CptvFrameInfo::default() },
                pixels,
            })
            .collect();
        let mut hd = header(2, w, h);
        hd.has_background_frame = false;
        let (h2, got) = decode_cptv_bytes(&gzip(&encode_cptv(&hd, &frames)), Path::new(CPTV_PATH)).unwrap();
        prop_assert_eq!(h2, hd);
        prop_assert_eq!(got.len(), frames.len());
        for (g, f) in got.iter().zip(&frames) {
            prop_assert_eq!(&g.pixels, &f.pixels);
        }
    }

    #[test]
    fn npy_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        exercise_npy(&bytes);
    }

    #[test]
    fn npy_survives_arbitrary_headers(
        major in prop_oneof![Just(1u8), Just(2), Just(3), any::<u8>()],
        header in "[{}'\":(), 0-9a-zA-Z<>|=_-]{0,80}",
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut b = b"\x93NUMPY".to_vec();
        b.extend_from_slice(&[major, 0]);
        let len = header.len() as u32;
        if major == 1 {
            b.extend_from_slice(&(len as u16).to_le_bytes());
        } else {
            b.extend_from_slice(&len.to_le_bytes());
        }
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&body);
        exercise_npy(&b);
    }

    #[test]
    fn npy_survives_structured_headers(
        descr in prop_oneof![
            prop::sample::select(vec!["<u2", "|u1", "<i8", "<f4", "|b1", ">u2", "=i2", "<<u2", "", "'"])
                .prop_map(String::from),
            "[<>|=]?[uifbc][0-9]{1,2}",
        ],
        quote in prop_oneof![Just('\''), Just('"')],
        fortran in prop_oneof![Just("False"), Just("True"), Just("0"), Just("")],
        dims in prop::collection::vec(
            prop_oneof![0usize..5, Just(usize::MAX), Just(1 << 32), any::<usize>()], 0..4),
        junk in prop_oneof![Just(""), Just(","), Just(")"), Just("("), Just("x")],
        body in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let shape: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        let header = format!(
            "{{{q}descr{q}: {q}{descr}{q}, {q}fortran_order{q}: {fortran}, {q}shape{q}: ({}{junk}), }}",
            shape.join(", "),
            q = quote,
        );
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&body);
        exercise_npy(&b);
    }

    #[test]
    fn npy_survives_mutated_valid_files(
        which in 0usize..3,
        edits in prop::collection::vec(mutation(), 1..6),
    ) {
        exercise_npy(&mutate(&valid_npy()[which], &edits));
    }
}

#[test]
fn valid_samples_decode() {
    // The mutation tests start from these, so they must be valid to begin with.
    for bytes in valid_cptv() {
        let (h, frames) = decode_cptv_bytes(bytes, Path::new(CPTV_PATH)).unwrap();
        assert_eq!((h.width, h.height, frames.len()), (5, 4, 3));
        let mut s = CptvSource::from_bytes(&gzip(bytes), Path::new(CPTV_PATH)).unwrap();
        assert_eq!(thermal_edge::source::read_all(&mut s).unwrap().len(), 3);
    }
    let a = parse_npy(&valid_npy()[0], Path::new(NPY_PATH)).unwrap();
    assert_eq!(a.shape, vec![2, 3, 4]);
    assert!(matches!(a.data, NpyData::U16(ref v) if v.len() == 24));
}
