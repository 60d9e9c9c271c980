//! `edge-cli listen`: the consumer side of alert delivery. Subscribes to an MQTT broker or reads a
//! serial line, validates checksums and the alert schema, drops duplicates by id, prints alerts
//! (a summary line or `--json`) and acknowledges them on the serial line. With `--outbox DIR` it
//! instead reports what a board's outbox holds, read-only.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rumqttc::{Client, Event, Packet, QoS};

use crate::alert::listen::{Received, Receiver};
use crate::alert::mqtt::{
    describe_connection_error, mqtt_options, read_password, tls_files, BrokerSettings,
};
use crate::alert::nmea::{Ack, AlertRecord, Parser, Reassembler, Sentence};
use crate::alert::outbox::{inspect, OutboxReport, OUTBOX_FILE};
use crate::alert::serial::Parity;

/// Arguments of `edge-cli listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// MQTT broker to subscribe to, `HOST` or `HOST:PORT` (1883, or 8883 with --ca-file).
    #[arg(long, value_name = "HOST[:PORT]", conflicts_with_all = ["serial", "outbox"])]
    pub mqtt: Option<String>,
    /// Topic prefix to listen under: alerts on `<prefix>/+/+/events`, availability on
    /// `<prefix>/+/+/availability` (the boards' default layout).
    #[arg(long, default_value = "thermal-edge")]
    pub prefix: String,
    /// Subscribe to this exact events topic instead (for a board with its own `topic_prefix`,
    /// give `<topic_prefix>/events`).
    #[arg(long)]
    pub topic: Option<String>,
    /// PEM file of the broker's CA (turns TLS on).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for brokers that want one.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM key of --client-cert.
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// MQTT user name.
    #[arg(long)]
    pub username: Option<String>,
    /// Environment variable holding the MQTT password.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// File holding the MQTT password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// MQTT client id; with --persistent the broker keeps alerts for it while it is away.
    #[arg(long)]
    pub client_id: Option<String>,
    /// Persistent MQTT session (clean session off): the broker queues alerts while this
    /// listener is disconnected. Needs a stable --client-id.
    #[arg(long, requires = "client_id")]
    pub persistent: bool,
    /// Serial port to read (`/dev/ttyUSB0`).
    #[arg(long, value_name = "PORT", conflicts_with = "outbox")]
    pub serial: Option<String>,
    /// Serial baud rate.
    #[arg(long, default_value_t = 4800)]
    pub baud: u32,
    /// Serial parity: none, odd or even.
    #[arg(long, default_value = "none")]
    pub parity: String,
    /// Do not acknowledge alerts on the serial line (watch a line someone else acknowledges).
    #[arg(long)]
    pub no_ack: bool,
    /// Report what the outbox in DIR holds (the board's `<data_dir>/outbox`), read-only.
    #[arg(long, value_name = "DIR")]
    pub outbox: Option<PathBuf>,
    /// Print alerts as JSON lines (the alert as sent over MQTT; serial records as objects).
    #[arg(long)]
    pub json: bool,
    /// Exit after this many distinct alerts.
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit after this many seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Also print duplicates, rejected messages, heartbeats and availability changes.
    #[arg(long, short)]
    pub verbose: bool,
}

/// Runs `edge-cli listen`.
pub fn run(a: &ListenArgs) -> Result<()> {
    if let Some(dir) = &a.outbox {
        // Accept the data directory too (the outbox lives in its `outbox/` folder).
        let nested = dir.join("outbox");
        let dir = if !dir.join(OUTBOX_FILE).exists() && nested.join(OUTBOX_FILE).exists() {
            &nested
        } else {
            dir
        };
        let report =
            inspect(dir).with_context(|| format!("reading the outbox in {}", dir.display()))?;
        print_report(&report, a.json)?;
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let deadline = a
        .timeout
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut receiver = Receiver::new();
    let result = match (&a.mqtt, &a.serial) {
        (Some(addr), None) => listen_mqtt(a, addr, &mut receiver, &stop, deadline),
        (None, Some(port)) => listen_serial(a, port, &mut receiver, &stop, deadline),
        _ => bail!("say where to listen: --mqtt HOST[:PORT], --serial PORT, or --outbox DIR"),
    };
    let s = receiver.stats();
    let invalid: u64 = s.invalid.values().sum();
    eprintln!(
        "listen: {} alerts, {} duplicates dropped, {invalid} rejected{}",
        s.new,
        s.duplicates,
        if invalid > 0 {
            format!(
                " ({})",
                s.invalid
                    .iter()
                    .map(|(k, n)| format!("{k}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        }
    );
    result
}

fn done(a: &ListenArgs, r: &Receiver, stop: &AtomicBool, deadline: Option<Instant>) -> bool {
    stop.load(Ordering::Relaxed)
        || a.count.is_some_and(|n| r.stats().new >= n)
        || deadline.is_some_and(|d| Instant::now() >= d)
}

fn print_line(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

fn broker(a: &ListenArgs, addr: &str) -> Result<BrokerSettings> {
    let tls = tls_files(
        a.ca_file.as_deref(),
        a.client_cert.as_deref(),
        a.client_key.as_deref(),
    )?;
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.ends_with(':') => (
            h.trim_matches(['[', ']']).to_string(),
            p.parse::<u16>()
                .with_context(|| format!("--mqtt {addr}: {p:?} is not a port number"))?,
        ),
        _ => (addr.to_string(), if tls.is_some() { 8883 } else { 1883 }),
    };
    let password = read_password(a.password_env.as_deref(), a.password_file.as_deref())?;
    if password.is_some() && a.username.is_none() {
        bail!("a password is given (--password-env/--password-file) but no --username");
    }
    Ok(BrokerSettings {
        tls,
        credentials: a
            .username
            .clone()
            .map(|u| (u, password.unwrap_or_default())),
        ..BrokerSettings::plain(&host, port)
    })
}

fn listen_mqtt(
    a: &ListenArgs,
    addr: &str,
    receiver: &mut Receiver,
    stop: &AtomicBool,
    deadline: Option<Instant>,
) -> Result<()> {
    let broker = broker(a, addr)?;
    let client_id = a
        .client_id
        .clone()
        .unwrap_or_else(|| format!("edge-cli-listen-{}", std::process::id()));
    let mut options = mqtt_options(&broker, &client_id)?;
    options.set_clean_session(!a.persistent);
    let (events_filter, availability_filter) = match &a.topic {
        Some(t) => (t.clone(), None),
        None => {
            let p = a.prefix.trim_end_matches('/');
            (
                format!("{p}/+/+/events"),
                Some(format!("{p}/+/+/availability")),
            )
        }
    };
    let (client, mut conn) = Client::new(options, 64);
    let mut ever_connected = false;
    let mut last_error: Option<String> = None;
    log::info!("listening on {} for {events_filter}", broker.address());
    while !done(a, receiver, stop, deadline) {
        let event = match conn.recv_timeout(Duration::from_millis(100)) {
            Err(rumqttc::RecvTimeoutError::Timeout) => continue,
            Err(rumqttc::RecvTimeoutError::Disconnected) => break,
            Ok(Err(e)) => {
                let why = describe_connection_error(&broker, &e);
                // A broker that never answered (wrong CA, refused credentials, nothing
                // listening) is a configuration error; one that went away is retried.
                if !ever_connected && !matches!(e, rumqttc::ConnectionError::Io(_)) {
                    bail!("{why}");
                }
                if last_error.as_deref() != Some(why.as_str()) {
                    eprintln!("listen: {why}; retrying");
                    last_error = Some(why);
                }
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            Ok(Ok(ev)) => ev,
        };
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                ever_connected = true;
                last_error = None;
                log::info!("connected to {}", broker.address());
                client
                    .subscribe(events_filter.clone(), QoS::AtLeastOnce)
                    .context("subscribing")?;
                if let Some(f) = &availability_filter {
                    client
                        .subscribe(f.clone(), QoS::AtLeastOnce)
                        .context("subscribing")?;
                }
            }
            Event::Incoming(Packet::SubAck(_)) => {
                // Scripts (and tests) wait for this line before they expect alerts.
                eprintln!(
                    "listen: subscribed to {events_filter} on {}",
                    broker.address()
                );
            }
            Event::Incoming(Packet::Publish(p)) => {
                if p.topic.ends_with("/availability") {
                    let state = String::from_utf8_lossy(&p.payload);
                    let camera = p.topic.trim_end_matches("/availability");
                    if a.json {
                        print_line(
                            &serde_json::json!({"availability": state, "camera": camera})
                                .to_string(),
                        )?;
                    } else {
                        print_line(&format!("{camera}: {state}"))?;
                    }
                    continue;
                }
                match receiver.accept_json(&p.payload) {
                    Received::New(alert) => {
                        if a.json {
                            print_line(
                                &serde_json::to_string(&alert).context("printing an alert")?,
                            )?;
                        } else {
                            print_line(&format!("{} {}", alert.site, alert.summary()))?;
                        }
                    }
                    Received::Duplicate(id) => {
                        if a.verbose {
                            eprintln!("listen: duplicate {id} dropped");
                        }
                    }
                    Received::Invalid(why) => {
                        eprintln!("listen: rejected a message on {}: {why}", p.topic)
                    }
                }
            }
            _ => {}
        }
    }
    let _ = client.try_disconnect();
    Ok(())
}

fn record_json(r: &AlertRecord) -> serde_json::Value {
    serde_json::json!({
        "id": r.id, "seq": r.seq, "kind": r.kind.name(), "site": r.site, "camera": r.camera,
        "zone": r.zone, "event": r.event, "score": r.score, "threshold": r.threshold,
        "peak": r.peak, "tmax_c": r.tmax_c, "time": r.time, "date": r.date, "text": r.text,
    })
}

fn record_line(r: &AlertRecord) -> String {
    let mut s = format!("{} [{}] {} #{}", r.site, r.camera, r.kind.name(), r.seq);
    if let Some(e) = r.event {
        s.push_str(&format!(" event {e}"));
    }
    if let (Some(sc), Some(th)) = (r.score, r.threshold) {
        s.push_str(&format!(" score {sc:.1} (threshold {th:.1})"));
    }
    if !r.zone.is_empty() {
        s.push_str(&format!(" zone {}", r.zone));
    }
    if let Some(t) = r.tmax_c {
        s.push_str(&format!(" {t:.1}°C"));
    }
    if !r.text.is_empty() {
        s.push_str(&format!(" {}", r.text));
    }
    s
}

fn listen_serial(
    a: &ListenArgs,
    path: &str,
    receiver: &mut Receiver,
    stop: &AtomicBool,
    deadline: Option<Instant>,
) -> Result<()> {
    let parity: Parity = a
        .parity
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--{e}"))?;
    let sp_parity = serialport::Parity::from(parity);
    let mut parser = Parser::default();
    let mut reassembler = Reassembler::new(Duration::from_secs(10), 64);
    let mut sentences = Vec::new();
    let mut port: Option<Box<dyn serialport::SerialPort>> = None;
    let mut ever_opened = false;
    let mut buf = [0u8; 512];
    while !done(a, receiver, stop, deadline) {
        let Some(p) = port.as_mut() else {
            match serialport::new(path, a.baud)
                .parity(sp_parity)
                .timeout(Duration::from_millis(100))
                .open()
            {
                Ok(p) => {
                    if ever_opened {
                        eprintln!("listen: {path} reopened");
                    }
                    ever_opened = true;
                    parser.reset();
                    port = Some(p);
                }
                Err(e) if !ever_opened => bail!("opening {path}: {e}"),
                Err(e) => {
                    log::debug!("reopening {path}: {e}");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
            continue;
        };
        let n = match p.read(&mut buf) {
            Ok(0) => continue,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => {
                eprintln!("listen: {path}: {e}; reopening");
                port = None;
                continue;
            }
        };
        sentences.clear();
        parser.feed_into(&buf[..n], &mut sentences);
        let mut acks = Vec::new();
        for s in sentences.drain(..) {
            match s {
                Err(reject) => {
                    if a.verbose {
                        eprintln!("listen: rejected a sentence: {reject}");
                    }
                }
                Ok(Sentence::Alert(part)) => match reassembler.push(&part, Instant::now()) {
                    None => {}
                    Some(Err(reject)) => eprintln!("listen: rejected an alert: {reject}"),
                    Some(Ok(rec)) => {
                        let seq = rec.seq;
                        match receiver.accept_record(rec) {
                            Received::New(rec) => {
                                acks.push(seq);
                                if a.json {
                                    print_line(&record_json(&rec).to_string())?;
                                } else {
                                    print_line(&record_line(&rec))?;
                                }
                            }
                            // Re-sent because our ack was lost: acknowledge again.
                            Received::Duplicate(id) => {
                                acks.push(seq);
                                if a.verbose {
                                    eprintln!("listen: duplicate {id} (seq {seq}) dropped");
                                }
                            }
                            Received::Invalid(why) => eprintln!("listen: rejected: {why}"),
                        }
                    }
                },
                Ok(Sentence::Heartbeat(h)) if a.verbose => eprintln!(
                    "listen: heartbeat: {} last seq {} pending {}",
                    if h.ok { "ok" } else { "FAULT" },
                    h.last_seq,
                    h.pending
                ),
                Ok(_) => {}
            }
        }
        if !a.no_ack && !acks.is_empty() {
            for chunk in acks.chunks(8) {
                let line = Ack {
                    seqs: chunk.to_vec(),
                }
                .encode()
                .context("encoding an acknowledgement")?;
                if let Err(e) = p.write_all(line.as_bytes()).and_then(|()| p.flush()) {
                    eprintln!("listen: {path}: {e}; reopening");
                    port = None;
                    break;
                }
            }
        }
    }
    let stats = parser.stats();
    if a.verbose || stats.rejected.total() > 0 {
        eprintln!("listen: serial parser: {stats:?}");
    }
    Ok(())
}

fn print_report(r: &OutboxReport, json: bool) -> Result<()> {
    if json {
        return print_line(&serde_json::to_string_pretty(r).context("printing the report")?);
    }
    print_line(&format!(
        "outbox {}: {} alerts stored",
        r.path.display(),
        r.stored
    ))?;
    for (camera, seq) in &r.last_seq {
        print_line(&format!("  camera {camera}: last sequence number {seq}"))?;
    }
    for s in &r.sinks {
        let mut line = format!(
            "  sink {}: {} delivered, {} pending",
            s.sink, s.delivered, s.pending
        );
        if let Some((camera, seq)) = &s.oldest_pending {
            line.push_str(&format!(
                ", oldest {camera} #{seq}, up to {} attempts",
                s.max_attempts
            ));
        }
        if let Some(e) = &s.last_error {
            line.push_str(&format!("; last error: {e}"));
        }
        print_line(&line)?;
    }
    for (name, n) in &r.counters {
        print_line(&format!("  {name}: {n}"))?;
    }
    Ok(())
}
