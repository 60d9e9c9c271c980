//! NMEA 0183 framing for the serial alert line, without I/O: checksums, `^hh` field escaping, the
//! proprietary alert / heartbeat / acknowledge sentences (`$PTHEA`, `$PTHEH`, `$PTHEK`), the
//! standard `ALR`, `HBT`, `ACK` and `ACN` sentences, splitting one alert over several sentences
//! and putting it back together, and a line parser that turns any byte stream into sentences or
//! counted rejections. `docs/serial-protocol.md` is the wire contract; the serial sink
//! (`alert::serial`) is the thin I/O shell around this module.
//!
//! Nothing here panics on any input: the parser is fuzzed (`fuzz/`, `tests/nmea_props.rs`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::{Alert, AlertKind};

/// Longest sentence on the wire, `$` through CR LF (NMEA 0183).
pub const MAX_SENTENCE_LEN: usize = 82;

/// Longest sentence without its CR LF (`$` through the checksum digits).
const MAX_LINE_LEN: usize = MAX_SENTENCE_LEN - 2;

/// Manufacturer mnemonic of our proprietary sentences (`$P` + mnemonic + a type letter).
pub const MANUFACTURER: &str = "THE";

/// Address of the alert sentence.
pub const ALERT_ADDRESS: &str = "PTHEA";

/// Address of the heartbeat sentence.
pub const HEARTBEAT_ADDRESS: &str = "PTHEH";

/// Address of the acknowledge sentence the consumer sends.
pub const ACK_ADDRESS: &str = "PTHEK";

/// Most sentences one alert is split into (one digit on the wire).
pub const MAX_PARTS: usize = 9;

/// Upper bounds, in escaped characters, of the free-text fields of an alert record. They keep an
/// alert within [`MAX_PARTS`] sentences whatever the names; longer values are cut (and logged).
const CAMERA_MAX: usize = 40;
const ZONE_MAX: usize = 40;
const SITE_MAX: usize = 40;
const ID_MAX: usize = 32;
const TEXT_MAX: usize = 64;

/// Numbers beyond this are clamped so that a value always fits its field.
const NUMBER_LIMIT: f64 = 1e9;

/// Characters NMEA 0183 reserves; inside a field they are written as `^hh`.
const RESERVED: &[u8] = b"\r\n$*,!\\^~\x7f";

/// Why encoding a sentence failed (always a caller bug or an out-of-range value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NmeaError {
    /// The address field is not 1–8 upper-case letters or digits.
    #[error("invalid address {0:?}: 1 to 8 upper-case letters or digits")]
    InvalidAddress(String),
    /// A talker id is not two upper-case letters or digits.
    #[error("invalid talker id {0:?}: two upper-case letters or digits")]
    InvalidTalker(String),
    /// A field holds a reserved or non-printable character (it should have been escaped).
    #[error("field {index} of {address} holds an unescaped reserved or non-printable character")]
    UnescapedField {
        /// Sentence address.
        address: String,
        /// Field index (1 = first field after the address).
        index: usize,
    },
    /// The framed sentence would exceed [`MAX_SENTENCE_LEN`].
    #[error("{address} sentence would be {len} characters (at most {MAX_SENTENCE_LEN})")]
    TooLong {
        /// Sentence address.
        address: String,
        /// Length it would have, CR LF included.
        len: usize,
    },
    /// A time field is not `hhmmss` or `hhmmss.ss…`.
    #[error("invalid time {0:?}: hhmmss or hhmmss.ss")]
    InvalidTime(String),
    /// An alert needs more than [`MAX_PARTS`] sentences.
    #[error("alert {seq} needs {parts} sentences (at most {MAX_PARTS})")]
    TooManyParts {
        /// Alert sequence number.
        seq: u64,
        /// Sentences it would need.
        parts: usize,
    },
    /// A numeric value is out of the range its field allows.
    #[error("{what} {value} is out of range")]
    OutOfRange {
        /// The field.
        what: &'static str,
        /// The value.
        value: u64,
    },
}

/// Why a received line was rejected; every rejection is counted under one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The checksum does not match the sentence.
    BadChecksum,
    /// Longer than [`MAX_SENTENCE_LEN`] characters.
    TooLong,
    /// Broken framing or an invalid field value (no `*hh`, bad escape, text before `$`, …).
    Malformed,
    /// Holds bytes outside printable ASCII.
    NotAscii,
    /// Well framed, but not a sentence this side knows.
    UnknownSentence,
    /// A known sentence without a field it needs.
    MissingFields,
}

impl RejectReason {
    /// Every reason, in counter order.
    pub const ALL: [RejectReason; 6] = [
        RejectReason::BadChecksum,
        RejectReason::TooLong,
        RejectReason::Malformed,
        RejectReason::NotAscii,
        RejectReason::UnknownSentence,
        RejectReason::MissingFields,
    ];

    /// Stable name (logs, stats, the protocol document).
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::BadChecksum => "bad-checksum",
            RejectReason::TooLong => "too-long",
            RejectReason::Malformed => "malformed",
            RejectReason::NotAscii => "not-ascii",
            RejectReason::UnknownSentence => "unknown-sentence",
            RejectReason::MissingFields => "missing-fields",
        }
    }

    /// The reason with this [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One rejected line (or partial line) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The counted reason.
    pub reason: RejectReason,
    /// What exactly was wrong, for the log.
    pub detail: String,
    /// The start of the offending line, non-printable bytes shown as `\xHH`.
    pub line: String,
}

impl Reject {
    fn new(reason: RejectReason, detail: impl Into<String>, line: &[u8]) -> Self {
        Self {
            reason,
            detail: detail.into(),
            line: excerpt(line),
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({:?})", self.reason, self.detail, self.line)
    }
}

/// Counters per rejection reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectCounts {
    /// Checksum mismatches.
    pub bad_checksum: u64,
    /// Over-long lines.
    pub too_long: u64,
    /// Broken framing or field values.
    pub malformed: u64,
    /// Lines with bytes outside printable ASCII.
    pub not_ascii: u64,
    /// Unknown sentences.
    pub unknown_sentence: u64,
    /// Sentences missing fields.
    pub missing_fields: u64,
}

impl RejectCounts {
    /// The counter for `reason`.
    pub fn get(&self, reason: RejectReason) -> u64 {
        match reason {
            RejectReason::BadChecksum => self.bad_checksum,
            RejectReason::TooLong => self.too_long,
            RejectReason::Malformed => self.malformed,
            RejectReason::NotAscii => self.not_ascii,
            RejectReason::UnknownSentence => self.unknown_sentence,
            RejectReason::MissingFields => self.missing_fields,
        }
    }

    /// Counts one rejection.
    pub fn count(&mut self, reason: RejectReason) {
        let c = match reason {
            RejectReason::BadChecksum => &mut self.bad_checksum,
            RejectReason::TooLong => &mut self.too_long,
            RejectReason::Malformed => &mut self.malformed,
            RejectReason::NotAscii => &mut self.not_ascii,
            RejectReason::UnknownSentence => &mut self.unknown_sentence,
            RejectReason::MissingFields => &mut self.missing_fields,
        };
        *c = c.saturating_add(1);
    }

    /// All rejections.
    pub fn total(&self) -> u64 {
        RejectReason::ALL.iter().map(|&r| self.get(r)).sum()
    }
}

/// XOR of the bytes strictly between `$`/`!` and `*`: the NMEA 0183 checksum.
pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0, |acc, b| acc ^ b)
}

fn is_plain(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && !RESERVED.contains(&b)
}

/// `text` as one NMEA field: reserved, control and non-ASCII characters become `^hh` per UTF-8 byte.
pub fn escape(text: &str) -> String {
    escape_bounded(text, usize::MAX).0
}

/// [`escape`], cut at a character boundary so the result has at most `max_len` characters; the
/// flag says whether anything was cut.
pub fn escape_bounded(text: &str, max_len: usize) -> (String, bool) {
    let mut out = String::with_capacity(text.len().min(max_len));
    let mut buf = [0u8; 4];
    for ch in text.chars() {
        let bytes = ch.encode_utf8(&mut buf).as_bytes();
        let need = if bytes.len() == 1 && is_plain(bytes[0]) {
            1
        } else {
            3 * bytes.len()
        };
        if out.len() + need > max_len {
            return (out, true);
        }
        if need == 1 {
            out.push(ch);
        } else {
            for b in bytes.iter() {
                let _ = write!(out, "^{b:02X}");
            }
        }
    }
    (out, false)
}

/// The text of a field, `^hh` escapes resolved (invalid UTF-8 becomes U+FFFD).
pub fn unescape(field: &str) -> Result<String, Reject> {
    let raw = field.as_bytes();
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'^' {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .filter(|_| raw[i + 1].is_ascii_hexdigit() && raw[i + 2].is_ascii_hexdigit());
            match hex {
                Some(b) => bytes.push(b),
                None => {
                    return Err(Reject::new(
                        RejectReason::Malformed,
                        "'^' not followed by two hex digits",
                        raw,
                    ))
                }
            }
            i += 3;
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn valid_address(address: &str) -> bool {
    (1..=8).contains(&address.len())
        && address
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn check_talker(talker: &str) -> Result<(), NmeaError> {
    if talker.len() == 2
        && talker
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(NmeaError::InvalidTalker(talker.to_string()))
    }
}

/// One framed sentence, `$address,field,…*HH` CR LF; fields must already be escaped.
pub fn frame<S: AsRef<str>>(address: &str, fields: &[S]) -> Result<String, NmeaError> {
    if !valid_address(address) {
        return Err(NmeaError::InvalidAddress(address.to_string()));
    }
    let mut body = String::with_capacity(MAX_SENTENCE_LEN);
    body.push_str(address);
    for (i, f) in fields.iter().enumerate() {
        let f = f.as_ref();
        if !f.bytes().all(|b| is_plain(b) || b == b'^') || (f.contains('^') && unescape(f).is_err())
        {
            return Err(NmeaError::UnescapedField {
                address: address.to_string(),
                index: i + 1,
            });
        }
        body.push(',');
        body.push_str(f);
    }
    let len = body.len() + 6;
    if len > MAX_SENTENCE_LEN {
        return Err(NmeaError::TooLong {
            address: address.to_string(),
            len,
        });
    }
    let sum = checksum(body.as_bytes());
    Ok(format!("${body}*{sum:02X}\r\n"))
}

/// A framed sentence taken apart: start character, address and raw (still escaped) fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSentence {
    /// `$` (parametric) or `!` (encapsulation).
    pub start: char,
    /// Address field: talker + formatter, or `P` + manufacturer + type.
    pub address: String,
    /// Fields after the address, still escaped.
    pub fields: Vec<String>,
}

/// Checks the framing and checksum of one line (without its line ending) and splits it.
pub fn decode_frame(line: &[u8]) -> Result<RawSentence, Reject> {
    if line.len() > MAX_LINE_LEN {
        return Err(Reject::new(
            RejectReason::TooLong,
            format!(
                "{} characters before CR LF (at most {MAX_LINE_LEN})",
                line.len()
            ),
            line,
        ));
    }
    if let Some(b) = line.iter().find(|b| !(0x20..0x7f).contains(*b)) {
        return Err(Reject::new(
            RejectReason::NotAscii,
            format!("byte {b:#04x}"),
            line,
        ));
    }
    let malformed = |detail: &str| Err(Reject::new(RejectReason::Malformed, detail, line));
    let start = match line.first() {
        Some(b'$') => '$',
        Some(b'!') => '!',
        _ => return malformed("does not start with '$' or '!'"),
    };
    if line.len() < 5 || line[line.len() - 3] != b'*' {
        return malformed("no '*hh' checksum at the end");
    }
    let (d1, d2) = (line[line.len() - 2], line[line.len() - 1]);
    let (Some(h1), Some(h2)) = (hex_value(d1), hex_value(d2)) else {
        return malformed("checksum is not two hex digits");
    };
    let body = &line[1..line.len() - 3];
    if body.iter().any(|b| b"$!*\\~".contains(b)) {
        return malformed("reserved character inside the sentence");
    }
    let sent = (h1 << 4) | h2;
    let computed = checksum(body);
    if sent != computed {
        return Err(Reject::new(
            RejectReason::BadChecksum,
            format!("checksum {sent:02X}, computed {computed:02X}"),
            line,
        ));
    }
    // The body is printable ASCII (checked above), so it is valid UTF-8.
    let body = String::from_utf8_lossy(body);
    let mut parts = body.split(',');
    let address = parts.next().unwrap_or_default();
    if !valid_address(address) {
        return malformed("address is not 1 to 8 upper-case letters or digits");
    }
    Ok(RawSentence {
        start,
        address: address.to_string(),
        fields: parts.map(str::to_string).collect(),
    })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn excerpt(line: &[u8]) -> String {
    let mut s = String::new();
    for &b in line.iter().take(MAX_SENTENCE_LEN + 8) {
        if (0x20..0x7f).contains(&b) {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02X}");
        }
    }
    if line.len() > MAX_SENTENCE_LEN + 8 {
        s.push('…');
    }
    s
}

/// Order of the condition and acknowledge fields in `ALR` (vendor manuals disagree).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlrOrder {
    /// `time,number,condition,acknowledged,text` (IEC 61162-1).
    #[default]
    ConditionFirst,
    /// `time,number,acknowledged,condition,text`.
    AckFirst,
}

/// Receiver settings that the wire does not carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dialect {
    /// How to read the condition/acknowledge fields of `ALR`.
    pub alr_order: AlrOrder,
}

/// One part of an alert (`$PTHEA`): the record's text is split over `parts` sentences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertPart {
    /// Alert sequence number (the key for reassembly and acknowledgement).
    pub seq: u64,
    /// This part's number, 1 to `parts`.
    pub part: u8,
    /// How many parts the alert has (1 to [`MAX_PARTS`]).
    pub parts: u8,
    /// This part's share of the record text (still escaped, commas included).
    pub data: String,
}

/// Our heartbeat (`$PTHEH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Camera streaming and nothing faulty (`A`), or not (`V`).
    pub ok: bool,
    /// Sequence number of the latest alert handed to the line (0: none yet).
    pub last_seq: u64,
    /// Alerts sent but not yet acknowledged.
    pub pending: u64,
    /// Seconds since the sink started.
    pub uptime_s: u64,
    /// Seconds until the next heartbeat.
    pub interval_s: u32,
}

impl Heartbeat {
    /// The framed sentence.
    pub fn encode(&self) -> Result<String, NmeaError> {
        frame(
            HEARTBEAT_ADDRESS,
            &[
                status_char(self.ok).to_string(),
                self.last_seq.to_string(),
                self.pending.to_string(),
                self.uptime_s.to_string(),
                self.interval_s.to_string(),
            ],
        )
    }
}

/// The consumer's acknowledgement (`$PTHEK`) of one or more alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Sequence numbers acknowledged.
    pub seqs: Vec<u64>,
}

impl Ack {
    /// The framed sentence (fails if the numbers do not fit one sentence).
    pub fn encode(&self) -> Result<String, NmeaError> {
        let fields: Vec<String> = self.seqs.iter().map(u64::to_string).collect();
        frame(ACK_ADDRESS, &fields)
    }
}

/// Standard alarm sentence `$--ALR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alr {
    /// Talker id (two characters).
    pub talker: String,
    /// UTC time of the alarm's last change, `hhmmss.ss` (may be empty).
    pub time: String,
    /// Alarm number, 0 to 999.
    pub number: u16,
    /// Threshold exceeded (`A`) or not (`V`).
    pub active: bool,
    /// Acknowledged (`A`) or not (`V`).
    pub acknowledged: bool,
    /// Description (unescaped).
    pub text: String,
}

impl Alr {
    /// The framed sentence with the fields in `order`; the text is cut to fit 82 characters.
    pub fn encode(&self, order: AlrOrder) -> Result<String, NmeaError> {
        check_talker(&self.talker)?;
        if self.number > 999 {
            return Err(NmeaError::OutOfRange {
                what: "alarm number",
                value: u64::from(self.number),
            });
        }
        if !self.time.is_empty() && !is_nmea_time(&self.time) {
            return Err(NmeaError::InvalidTime(self.time.clone()));
        }
        let (c, a) = (status_char(self.active), status_char(self.acknowledged));
        let (f3, f4) = match order {
            AlrOrder::ConditionFirst => (c, a),
            AlrOrder::AckFirst => (a, c),
        };
        // `$ttALR,` + time + `,nnn,x,x,` + text + `*hh` CR LF
        let fixed = 7 + self.time.len() + 9 + 5;
        let (text, cut) = escape_bounded(&self.text, MAX_SENTENCE_LEN.saturating_sub(fixed));
        if cut {
            log::debug!("ALR {:03} text cut to {text:?}", self.number);
        }
        frame(
            &format!("{}ALR", self.talker),
            &[
                self.time.clone(),
                format!("{:03}", self.number),
                f3.to_string(),
                f4.to_string(),
                text,
            ],
        )
    }
}

/// Standard heartbeat `$--HBT`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hbt {
    /// Talker id.
    pub talker: String,
    /// Seconds between heartbeats.
    pub interval_s: f64,
    /// Equipment status normal (`A`) or not (`V`).
    pub ok: bool,
    /// Sequential identifier, 0 to 9.
    pub seq: u8,
}

impl Hbt {
    /// The framed sentence.
    pub fn encode(&self) -> Result<String, NmeaError> {
        check_talker(&self.talker)?;
        if self.seq > 9 {
            return Err(NmeaError::OutOfRange {
                what: "HBT sequence",
                value: u64::from(self.seq),
            });
        }
        frame(
            &format!("{}HBT", self.talker),
            &[
                fmt_number(self.interval_s, 1),
                status_char(self.ok).to_string(),
                self.seq.to_string(),
            ],
        )
    }
}

/// Standard alarm acknowledgement `$--ACK,xxx` (from an alarm panel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmAck {
    /// Talker id.
    pub talker: String,
    /// Alarm number acknowledged.
    pub number: u16,
}

impl AlarmAck {
    /// The framed sentence.
    pub fn encode(&self) -> Result<String, NmeaError> {
        check_talker(&self.talker)?;
        frame(
            &format!("{}ACK", self.talker),
            &[format!("{:03}", self.number)],
        )
    }
}

/// Bridge alert management command `$--ACN` (acknowledge, silence, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acn {
    /// Talker id.
    pub talker: String,
    /// UTC time `hhmmss.ss` (may be empty).
    pub time: String,
    /// Manufacturer mnemonic (empty for standard alerts).
    pub manufacturer: String,
    /// Alert identifier: for us, the ALR alarm number.
    pub identifier: u32,
    /// Alert instance, if given.
    pub instance: Option<u32>,
    /// `A` acknowledge, `Q` request/repeat, `O` responsibility transfer, `S` silence.
    pub command: char,
}

impl Acn {
    /// Whether this command acknowledges the alert.
    pub fn is_acknowledge(&self) -> bool {
        self.command == 'A'
    }

    /// The framed sentence.
    pub fn encode(&self) -> Result<String, NmeaError> {
        check_talker(&self.talker)?;
        frame(
            &format!("{}ACN", self.talker),
            &[
                self.time.clone(),
                escape(&self.manufacturer),
                self.identifier.to_string(),
                self.instance.map(|i| i.to_string()).unwrap_or_default(),
                escape(&self.command.to_string()),
                "C".to_string(),
            ],
        )
    }
}

/// A sentence this codec understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Sentence {
    /// `$PTHEA`: one part of an alert.
    Alert(AlertPart),
    /// `$PTHEH`: our heartbeat.
    Heartbeat(Heartbeat),
    /// `$PTHEK`: the consumer acknowledges alerts.
    Ack(Ack),
    /// `$--ALR`: alarm state.
    Alr(Alr),
    /// `$--HBT`: standard heartbeat.
    Hbt(Hbt),
    /// `$--ACK`: an alarm panel acknowledges an alarm.
    AlarmAck(AlarmAck),
    /// `$--ACN`: bridge alert management command.
    Acn(Acn),
}

fn status_char(ok: bool) -> char {
    if ok {
        'A'
    } else {
        'V'
    }
}

fn is_nmea_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 6
        && b[..6].iter().all(u8::is_ascii_digit)
        && (b.len() == 6 || (b[6] == b'.' && b.len() > 7 && b[7..].iter().all(u8::is_ascii_digit)))
}

fn is_nmea_date(s: &str) -> bool {
    s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Decodes a checked frame into a typed sentence.
pub fn decode_sentence(raw: &RawSentence, dialect: Dialect) -> Result<Sentence, Reject> {
    let addr = raw.address.as_str();
    let line = || format!("${},{}", raw.address, raw.fields.join(","));
    let reject = |reason, detail: String| Err(Reject::new(reason, detail, line().as_bytes()));
    let f = &raw.fields;
    // `len` fields at least, those at `required` non-empty.
    let need = |len: usize, required: &[usize]| -> Result<(), Reject> {
        if f.len() < len
            || required
                .iter()
                .any(|&i| f.get(i).is_none_or(String::is_empty))
        {
            Err(Reject::new(
                RejectReason::MissingFields,
                format!("{addr} needs {len} fields, has {}", f.len()),
                line().as_bytes(),
            ))
        } else {
            Ok(())
        }
    };
    let num = |i: usize, what: &str| -> Result<u64, Reject> {
        parse_uint(&f[i]).ok_or_else(|| {
            Reject::new(
                RejectReason::Malformed,
                format!("{addr} field {} ({what}) is not a number", i + 1),
                line().as_bytes(),
            )
        })
    };
    let status = |i: usize, what: &str| -> Result<bool, Reject> {
        match f[i].as_str() {
            "A" => Ok(true),
            "V" => Ok(false),
            _ => Err(Reject::new(
                RejectReason::Malformed,
                format!("{addr} field {} ({what}) is not A or V", i + 1),
                line().as_bytes(),
            )),
        }
    };
    if raw.start != '$' {
        return reject(
            RejectReason::UnknownSentence,
            format!("!{addr}: no encapsulated sentences are used"),
        );
    }
    match addr {
        ALERT_ADDRESS => {
            need(4, &[0, 1, 2])?;
            let seq = num(0, "seq")?;
            let (part, parts) = (num(1, "part")?, num(2, "parts")?);
            if parts == 0 || parts > MAX_PARTS as u64 || part == 0 || part > parts {
                return reject(
                    RejectReason::Malformed,
                    format!("part {part} of {parts} (at most {MAX_PARTS} parts)"),
                );
            }
            Ok(Sentence::Alert(AlertPart {
                seq,
                part: part as u8,
                parts: parts as u8,
                data: f[3..].join(","),
            }))
        }
        HEARTBEAT_ADDRESS => {
            need(5, &[0, 1, 2, 3, 4])?;
            let interval = num(4, "interval")?;
            Ok(Sentence::Heartbeat(Heartbeat {
                ok: status(0, "status")?,
                last_seq: num(1, "last seq")?,
                pending: num(2, "pending")?,
                uptime_s: num(3, "uptime")?,
                interval_s: u32::try_from(interval).unwrap_or(u32::MAX),
            }))
        }
        ACK_ADDRESS => {
            need(1, &[0])?;
            let seqs = (0..f.len())
                .filter(|&i| !f[i].is_empty())
                .map(|i| num(i, "seq"))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Sentence::Ack(Ack { seqs }))
        }
        _ if addr.len() == 5 && !addr.starts_with('P') => {
            let talker = addr[..2].to_string();
            match &addr[2..] {
                "ALR" => {
                    need(4, &[1, 2, 3])?;
                    if !f[0].is_empty() && !is_nmea_time(&f[0]) {
                        return reject(RejectReason::Malformed, "ALR time".into());
                    }
                    let number = num(1, "alarm number")?;
                    if number > 999 {
                        return reject(RejectReason::Malformed, "ALR alarm number".into());
                    }
                    let (c, a) = match dialect.alr_order {
                        AlrOrder::ConditionFirst => (2, 3),
                        AlrOrder::AckFirst => (3, 2),
                    };
                    Ok(Sentence::Alr(Alr {
                        talker,
                        time: f[0].clone(),
                        number: number as u16,
                        active: status(c, "condition")?,
                        acknowledged: status(a, "acknowledged")?,
                        text: match f.get(4) {
                            Some(t) => unescape(t)?,
                            None => String::new(),
                        },
                    }))
                }
                "HBT" => {
                    need(3, &[0, 1, 2])?;
                    let interval_s = f[0].parse::<f64>().ok().filter(|v| {
                        v.is_finite()
                            && *v >= 0.0
                            && f[0].bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    });
                    let Some(interval_s) = interval_s else {
                        return reject(RejectReason::Malformed, "HBT interval".into());
                    };
                    let seq = num(2, "sequence")?;
                    if seq > 9 {
                        return reject(RejectReason::Malformed, "HBT sequence above 9".into());
                    }
                    Ok(Sentence::Hbt(Hbt {
                        talker,
                        interval_s,
                        ok: status(1, "status")?,
                        seq: seq as u8,
                    }))
                }
                "ACK" => {
                    need(1, &[0])?;
                    let number = num(0, "alarm number")?;
                    if number > 999 {
                        return reject(RejectReason::Malformed, "ACK alarm number".into());
                    }
                    Ok(Sentence::AlarmAck(AlarmAck {
                        talker,
                        number: number as u16,
                    }))
                }
                "ACN" => {
                    if f.len() < 5 || f[2].is_empty() || f[4].is_empty() {
                        return reject(
                            RejectReason::MissingFields,
                            "ACN needs the alert identifier and command".into(),
                        );
                    }
                    if !f[0].is_empty() && !is_nmea_time(&f[0]) {
                        return reject(RejectReason::Malformed, "ACN time".into());
                    }
                    let identifier = u32::try_from(num(2, "alert identifier")?).ok();
                    let instance = match f[3].as_str() {
                        "" => Some(None),
                        s => parse_uint(s).and_then(|v| u32::try_from(v).ok()).map(Some),
                    };
                    let command = unescape(&f[4])?;
                    let mut chars = command.chars();
                    let (Some(identifier), Some(instance), Some(command), None) =
                        (identifier, instance, chars.next(), chars.next())
                    else {
                        return reject(RejectReason::Malformed, "ACN field values".into());
                    };
                    Ok(Sentence::Acn(Acn {
                        talker,
                        time: f[0].clone(),
                        manufacturer: unescape(&f[1])?,
                        identifier,
                        instance,
                        command,
                    }))
                }
                other => reject(RejectReason::UnknownSentence, format!("formatter {other}")),
            }
        }
        _ => reject(RejectReason::UnknownSentence, format!("address {addr}")),
    }
}

/// A decimal unsigned integer of at most 20 digits, nothing else (no sign, no spaces).
fn parse_uint(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Counters of a [`Parser`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParserStats {
    /// Sentences accepted.
    pub accepted: u64,
    /// Rejections per reason.
    pub rejected: RejectCounts,
}

/// Turns a byte stream into sentences and counted rejections. Lines end at CR, LF or CR LF; a
/// `$` or `!` starts a new sentence even without a line ending before it, so one lost line end
/// costs one sentence, not two. Memory is bounded by one sentence.
#[derive(Debug, Clone, Default)]
pub struct Parser {
    dialect: Dialect,
    line: Vec<u8>,
    /// Bytes of the current line beyond the longest legal sentence (dropped, only counted).
    overflow: usize,
    stats: ParserStats,
}

impl Parser {
    /// A parser reading `ALR` per `dialect`.
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            line: Vec::with_capacity(MAX_LINE_LEN),
            overflow: 0,
            stats: ParserStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ParserStats {
        self.stats
    }

    /// Bytes of an unfinished line held.
    pub fn pending_len(&self) -> usize {
        self.line.len() + self.overflow
    }

    /// Feeds bytes; returns the sentences and rejections completed by them, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Result<Sentence, Reject>> {
        let mut out = Vec::new();
        self.feed_into(bytes, &mut out);
        out
    }

    /// [`feed`](Self::feed) into a caller's buffer.
    pub fn feed_into(&mut self, bytes: &[u8], out: &mut Vec<Result<Sentence, Reject>>) {
        for &b in bytes {
            match b {
                b'\r' | b'\n' => self.end_line(out),
                b'$' | b'!' => {
                    self.end_line(out);
                    self.line.push(b);
                }
                _ if self.line.len() < MAX_LINE_LEN => self.line.push(b),
                _ => self.overflow = self.overflow.saturating_add(1),
            }
        }
    }

    /// Drops an unfinished line (the port was reopened); it is counted as malformed.
    pub fn reset(&mut self) -> Option<Reject> {
        if self.line.is_empty() && self.overflow == 0 {
            return None;
        }
        let r = Reject::new(
            RejectReason::Malformed,
            "line cut off by a reconnect",
            &self.line,
        );
        self.stats.rejected.count(r.reason);
        self.line.clear();
        self.overflow = 0;
        Some(r)
    }

    fn end_line(&mut self, out: &mut Vec<Result<Sentence, Reject>>) {
        if self.line.is_empty() && self.overflow == 0 {
            return;
        }
        let result = if self.overflow > 0 {
            Err(Reject::new(
                RejectReason::TooLong,
                format!(
                    "{} characters before the line end (at most {MAX_LINE_LEN})",
                    self.line.len() + self.overflow
                ),
                &self.line,
            ))
        } else {
            decode_frame(&self.line).and_then(|raw| decode_sentence(&raw, self.dialect))
        };
        match &result {
            Ok(_) => self.stats.accepted = self.stats.accepted.saturating_add(1),
            Err(r) => self.stats.rejected.count(r.reason),
        }
        out.push(result);
        self.line.clear();
        self.overflow = 0;
    }
}

/// One alert as it travels in `$PTHEA` sentences: the record fields in wire order.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    /// Alert sequence number.
    pub seq: u64,
    /// What it is about.
    pub kind: AlertKind,
    /// Camera name.
    pub camera: String,
    /// Zone of the largest region (empty: none).
    pub zone: String,
    /// Event id (anomaly alerts).
    pub event: Option<u64>,
    /// Score of the frame that raised the alert.
    pub score: Option<f64>,
    /// Alarm threshold.
    pub threshold: Option<f64>,
    /// Highest score of the event so far.
    pub peak: Option<f64>,
    /// Highest temperature in the anomalous regions, °C (radiometric cameras).
    pub tmax_c: Option<f64>,
    /// UTC time the alert was raised, `hhmmss.ss` (empty: unknown).
    pub time: String,
    /// UTC date the alert was raised, `ddmmyy` (empty: unknown).
    pub date: String,
    /// Site name.
    pub site: String,
    /// Alert id (ULID).
    pub id: String,
    /// Health or drift summary; empty for anomalies.
    pub text: String,
}

/// Fields in an alert record.
const RECORD_FIELDS: usize = 13;

fn kind_code(kind: AlertKind) -> char {
    match kind {
        AlertKind::AnomalyStart => 'S',
        AlertKind::AnomalyUpdate => 'U',
        AlertKind::AnomalyEnd => 'E',
        AlertKind::Health => 'H',
        AlertKind::Drift => 'D',
    }
}

fn kind_from_code(code: &str) -> Option<AlertKind> {
    Some(match code {
        "S" => AlertKind::AnomalyStart,
        "U" => AlertKind::AnomalyUpdate,
        "E" => AlertKind::AnomalyEnd,
        "H" => AlertKind::Health,
        "D" => AlertKind::Drift,
        _ => return None,
    })
}

/// `v` rounded to `decimals` places the way it will read back from the wire; non-finite is None.
fn quantize(v: f64, decimals: i32) -> Option<f64> {
    if !v.is_finite() {
        return None;
    }
    let scale = 10f64.powi(decimals);
    Some((v.clamp(-NUMBER_LIMIT, NUMBER_LIMIT) * scale).round() / scale)
}

fn fmt_number(v: f64, decimals: usize) -> String {
    format!("{:.*}", decimals, v.clamp(-NUMBER_LIMIT, NUMBER_LIMIT))
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.filter(|v| v.is_finite())
        .map(|v| fmt_number(v, decimals))
        .unwrap_or_default()
}

fn parse_decimal(s: &str) -> Option<Option<f64>> {
    if s.is_empty() {
        return Some(None);
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    let ok = !digits.is_empty()
        && digits.len() <= 24
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|&b| b == b'.').count() <= 1;
    if !ok {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite()).map(Some)
}

/// UTC `hhmmss.ss` and `ddmmyy` of a time in µs since the Unix epoch (empty when not positive).
pub fn utc_time_date(unix_us: i64) -> (String, String) {
    if unix_us <= 0 {
        return (String::new(), String::new());
    }
    let cs = unix_us / 10_000;
    let days = cs / 8_640_000;
    let cs_of_day = cs % 8_640_000;
    let (h, m, s, c) = (
        cs_of_day / 360_000,
        cs_of_day / 6_000 % 60,
        cs_of_day / 100 % 60,
        cs_of_day % 100,
    );
    let (y, mo, d) = civil_from_days(days);
    (
        format!("{h:02}{m:02}{s:02}.{c:02}"),
        format!("{d:02}{mo:02}{:02}", y.rem_euclid(100)),
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Text of an alert's detail: its `summary`, a camera fault's error, or the compact JSON.
fn detail_text(alert: &Alert) -> String {
    let Some(d) = &alert.detail else {
        return String::new();
    };
    if let Some(s) = d.get("summary").and_then(|v| v.as_str()) {
        return s.to_string();
    }
    if d.get("camera").and_then(|v| v.as_str()) == Some("fault") {
        let err = d.get("error").and_then(|v| v.as_str()).unwrap_or("?");
        return format!("camera fault: {err}");
    }
    d.to_string()
}

impl AlertRecord {
    /// The wire record of `alert`; numbers are rounded as they will travel, long texts cut.
    pub fn from_alert(alert: &Alert) -> Self {
        let a = alert.anomaly.as_ref();
        let tmax = a.and_then(|a| {
            a.regions
                .iter()
                .filter_map(|r| r.temperature_c.map(|[hi, _]| f64::from(hi)))
                .filter(|t| t.is_finite())
                .reduce(f64::max)
        });
        let (time, date) = utc_time_date(alert.raised_us);
        let bounded = |what: &str, text: &str, max: usize| {
            let (escaped, cut) = escape_bounded(text, max);
            if cut {
                log::warn!(
                    "alert {}: {what} cut to {max} characters on the serial line",
                    alert.seq
                );
            }
            // Escaping is undone on the way back in; escape_bounded only emits valid escapes.
            unescape(&escaped).unwrap_or_default()
        };
        Self {
            seq: alert.seq,
            kind: alert.kind,
            camera: bounded("camera", &alert.camera, CAMERA_MAX),
            zone: bounded(
                "zone",
                a.and_then(|a| a.zone.as_deref()).unwrap_or(""),
                ZONE_MAX,
            ),
            event: a.map(|a| a.event),
            score: a.and_then(|a| quantize(a.score, 2)),
            threshold: a.and_then(|a| quantize(a.threshold, 2)),
            peak: a.and_then(|a| quantize(a.peak_score, 2)),
            tmax_c: tmax.and_then(|t| quantize(t, 1)),
            time,
            date,
            site: bounded("site", &alert.site, SITE_MAX),
            id: bounded("id", &alert.id, ID_MAX),
            text: bounded("text", &detail_text(alert), TEXT_MAX),
        }
    }

    /// The record text: escaped fields joined by commas, in wire order.
    pub fn payload(&self) -> String {
        [
            kind_code(self.kind).to_string(),
            escape_bounded(&self.camera, CAMERA_MAX).0,
            escape_bounded(&self.zone, ZONE_MAX).0,
            self.event.map(|e| e.to_string()).unwrap_or_default(),
            fmt_opt(self.score, 2),
            fmt_opt(self.threshold, 2),
            fmt_opt(self.peak, 2),
            fmt_opt(self.tmax_c, 1),
            if is_nmea_time(&self.time) {
                self.time.clone()
            } else {
                String::new()
            },
            if is_nmea_date(&self.date) {
                self.date.clone()
            } else {
                String::new()
            },
            escape_bounded(&self.site, SITE_MAX).0,
            escape_bounded(&self.id, ID_MAX).0,
            escape_bounded(&self.text, TEXT_MAX).0,
        ]
        .join(",")
    }

    /// The record from the reassembled text of alert `seq`.
    pub fn parse_payload(seq: u64, payload: &str) -> Result<Self, Reject> {
        let f: Vec<&str> = payload.split(',').collect();
        let bad = |reason, detail: String| Err(Reject::new(reason, detail, payload.as_bytes()));
        // Newer senders may append fields; older receivers ignore them.
        if f.len() < RECORD_FIELDS {
            return bad(
                RejectReason::MissingFields,
                format!(
                    "alert {seq}: {} of {} record fields",
                    f.len(),
                    RECORD_FIELDS
                ),
            );
        }
        let Some(kind) = kind_from_code(f[0]) else {
            return bad(
                RejectReason::Malformed,
                format!("alert {seq}: kind {:?}", f[0]),
            );
        };
        let event = match f[3] {
            "" => None,
            s => match parse_uint(s) {
                Some(v) => Some(v),
                None => return bad(RejectReason::Malformed, format!("alert {seq}: event")),
            },
        };
        let mut nums = [None; 4];
        for (slot, (i, what)) in
            nums.iter_mut()
                .zip([(4, "score"), (5, "threshold"), (6, "peak"), (7, "tmax")])
        {
            match parse_decimal(f[i]) {
                Some(v) => *slot = v,
                None => return bad(RejectReason::Malformed, format!("alert {seq}: {what}")),
            }
        }
        if !f[8].is_empty() && !is_nmea_time(f[8]) {
            return bad(RejectReason::Malformed, format!("alert {seq}: time"));
        }
        if !f[9].is_empty() && !is_nmea_date(f[9]) {
            return bad(RejectReason::Malformed, format!("alert {seq}: date"));
        }
        Ok(Self {
            seq,
            kind,
            camera: unescape(f[1])?,
            zone: unescape(f[2])?,
            event,
            score: nums[0],
            threshold: nums[1],
            peak: nums[2],
            tmax_c: nums[3],
            time: f[8].to_string(),
            date: f[9].to_string(),
            site: unescape(f[10])?,
            id: unescape(f[11])?,
            text: match f.get(12) {
                Some(t) => unescape(t)?,
                None => String::new(),
            },
        })
    }

    /// The `$PTHEA` sentences carrying this record, CR LF included.
    pub fn encode(&self) -> Result<Vec<String>, NmeaError> {
        let payload = self.payload();
        let seq = self.seq.to_string();
        // `$PTHEA,` + seq + `,k,n,` + data + `*hh` CR LF, with k and n one digit each.
        let budget = MAX_SENTENCE_LEN - (1 + ALERT_ADDRESS.len() + 1 + seq.len() + 5 + 5);
        let mut chunks = split_payload(&payload, budget, true);
        if chunks.len() > MAX_PARTS {
            // Whole fields per part cost space; pathological records are packed tight instead.
            chunks = split_payload(&payload, budget, false);
        }
        if chunks.len() > MAX_PARTS {
            return Err(NmeaError::TooManyParts {
                seq: self.seq,
                parts: chunks.len(),
            });
        }
        let n = chunks.len().to_string();
        chunks
            .iter()
            .enumerate()
            .map(|(k, chunk)| {
                let part = (k + 1).to_string();
                let fields: Vec<&str> = [seq.as_str(), &part, &n]
                    .into_iter()
                    .chain(chunk.split(','))
                    .collect();
                frame(ALERT_ADDRESS, &fields)
            })
            .collect()
    }
}

/// Cuts the escaped record text into chunks of at most `budget` characters, never inside a `^hh`
/// escape and, with `at_commas`, preferably just after a comma (so a short reader sees whole
/// fields).
fn split_payload(payload: &str, budget: usize, at_commas: bool) -> Vec<&str> {
    let budget = budget.max(4);
    let mut chunks = Vec::new();
    let mut rest = payload;
    while rest.len() > budget {
        let bytes = rest.as_bytes();
        let mut cut = match rest[..budget].rfind(',') {
            Some(i) if at_commas && i + 1 >= budget / 2 => i + 1,
            _ => budget,
        };
        if bytes[cut - 1] == b'^' && cut > 1 {
            cut -= 1;
        } else if bytes[cut - 2] == b'^' && cut > 2 {
            cut -= 2;
        }
        chunks.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    chunks.push(rest);
    chunks
}

/// Counters of a [`Reassembler`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Alerts completed and decoded.
    pub completed: u64,
    /// Unfinished alerts dropped after the timeout.
    pub expired: u64,
    /// Unfinished alerts dropped to make room.
    pub evicted: u64,
    /// Unfinished alerts restarted because a part disagreed on the part count.
    pub restarted: u64,
    /// Completed alerts whose record did not decode, per reason.
    pub rejected: RejectCounts,
}

#[derive(Debug, Clone)]
struct Partial {
    seq: u64,
    parts: Vec<Option<String>>,
    first_seen: Instant,
}

/// Puts multi-part alerts back together, keyed by sequence number, holding at most `capacity`
/// unfinished alerts for at most `timeout` each. Repeated alerts complete again: acknowledge
/// every completion, deduplicate by id.
#[derive(Debug, Clone)]
pub struct Reassembler {
    timeout: Duration,
    capacity: usize,
    pending: Vec<Partial>,
    stats: ReassemblyStats,
}

impl Reassembler {
    /// A reassembler holding up to `capacity` (at least 1) unfinished alerts for `timeout`.
    pub fn new(timeout: Duration, capacity: usize) -> Self {
        Self {
            timeout,
            capacity: capacity.max(1),
            pending: Vec::new(),
            stats: ReassemblyStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Unfinished alerts held.
    pub fn unfinished(&self) -> usize {
        self.pending.len()
    }

    /// Drops unfinished alerts older than the timeout.
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.timeout;
        let before = self.pending.len();
        self.pending
            .retain(|p| now.saturating_duration_since(p.first_seen) < timeout);
        self.stats.expired += (before - self.pending.len()) as u64;
    }

    /// Takes one part; returns the alert when this part completes it.
    pub fn push(&mut self, part: &AlertPart, now: Instant) -> Option<Result<AlertRecord, Reject>> {
        self.expire(now);
        let (k, n) = (usize::from(part.part), usize::from(part.parts));
        if k == 0 || k > n || n > MAX_PARTS {
            let r = Reject::new(
                RejectReason::Malformed,
                format!("part {k} of {n}"),
                part.data.as_bytes(),
            );
            self.stats.rejected.count(r.reason);
            return Some(Err(r));
        }
        let idx = match self.pending.iter().position(|p| p.seq == part.seq) {
            Some(i) if self.pending[i].parts.len() == n => i,
            Some(i) => {
                self.stats.restarted += 1;
                self.pending.remove(i);
                self.insert(part.seq, n, now)
            }
            None => self.insert(part.seq, n, now),
        };
        self.pending[idx].parts[k - 1] = Some(part.data.clone());
        if self.pending[idx].parts.iter().any(Option::is_none) {
            return None;
        }
        let done = self.pending.remove(idx);
        let payload: String = done.parts.into_iter().flatten().collect();
        let result = AlertRecord::parse_payload(part.seq, &payload);
        match &result {
            Ok(_) => self.stats.completed += 1,
            Err(r) => self.stats.rejected.count(r.reason),
        }
        Some(result)
    }

    fn insert(&mut self, seq: u64, n: usize, now: Instant) -> usize {
        if self.pending.len() >= self.capacity {
            // Oldest first: `pending` is in arrival order.
            self.pending.remove(0);
            self.stats.evicted += 1;
        }
        self.pending.push(Partial {
            seq,
            parts: vec![None; n],
            first_seen: now,
        });
        self.pending.len() - 1
    }
}

#[cfg(test)]
mod tests;
