//! MQTT delivery end to end.
//!
//! - 1,000 alerts go through the outbox and the MQTT sink while the broker goes away three
//!   times; a subscriber must receive every id (duplicates only as the same id). Against an
//!   in-process `rumqttd` (the broker "dies" behind a TCP proxy that drops every connection and
//!   refuses new ones: rumqttd cannot be stopped in-process), and against Debian's `mosquitto`,
//!   stopped with SIGTERM and started again (persistence on, the subscriber in a persistent
//!   session, as a site would run it).
//! - `edge-cli run` publishes alerts, retained state, Home Assistant discovery (checked against
//!   the documented keys) and `offline` on a clean stop; `kill -9` makes the broker publish the
//!   last will `offline`; `edge-cli listen` receives what `run` printed and reports the outbox.
//! - TLS against mosquitto with a generated CA and client certificate; a wrong CA fails with an
//!   error that names the CA file.
//!
//! The mosquitto tests need `/usr/sbin/mosquitto` (and `openssl` for TLS). Without them they
//! say so and pass, unless `THERMAL_EDGE_REQUIRE_MOSQUITTO=1` (set by `.ci/run`) makes that a
//! failure.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use thermal_edge::alert::mqtt::{validate_discovery, DeviceInfo, MqttSection, MqttSink};
use thermal_edge::alert::outbox::{deliver_pending, Outbox, OutboxConfig};
use thermal_edge::alert::{ulid, Alert, AlertKind, AnomalyInfo, Sink, ALERT_SCHEMA_VERSION};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

fn edge_cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edge-cli"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, what: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "{what} did not listen on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Starts an in-process rumqttd on a free loopback port (it runs until the test process ends).
fn rumqttd() -> u16 {
    let port = free_port();
    let cfg = format!(
        r#"
id = 0
[router]
max_connections = 100
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 4194304
max_inflight_count = 100
dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&cfg).expect("rumqttd config");
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        let _ = broker.start();
    });
    wait_port(port, "rumqttd");
    port
}

/// A TCP proxy in front of a broker that can "kill" it: drop every connection through it and
/// refuse new ones until restarted.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (d, c) = (down.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut list = c.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { port, down, conns }
    }
}

/// A broker the test can take away and bring back.
trait Outage {
    fn kill(&mut self);
    fn restart(&mut self);
}

impl Outage for Proxy {
    fn kill(&mut self) {
        self.down.store(true, Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
    fn restart(&mut self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

/// A mosquitto process with its own configuration, port and persistence directory.
struct Mosquitto {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn mosquitto_available(test: &str) -> bool {
    if Path::new(MOSQUITTO).is_file() {
        return true;
    }
    assert!(
        std::env::var_os("THERMAL_EDGE_REQUIRE_MOSQUITTO").is_none(),
        "{test}: {MOSQUITTO} is missing but THERMAL_EDGE_REQUIRE_MOSQUITTO is set"
    );
    eprintln!("{test}: SKIPPED: {MOSQUITTO} not installed (apt-get install mosquitto)");
    false
}

impl Mosquitto {
    /// `listener` lines go first; the rest is shared.
    fn start(dir: &Path, listener_conf: &str) -> Self {
        let port = free_port();
        let anonymous = if listener_conf.contains("allow_anonymous") {
            ""
        } else {
            "allow_anonymous true\n"
        };
        let conf = format!(
            "listener {port} 127.0.0.1\n{listener_conf}\n{anonymous}\
             persistence true\npersistence_location {}/\nmax_queued_messages 100000\n\
             log_dest file {}/mosquitto.log\nuser root\n",
            dir.display(),
            dir.display()
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        let mut m = Self {
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        m.restart();
        m
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Outage for Mosquitto {
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            c.wait().unwrap();
        }
    }
    fn restart(&mut self) {
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < end,
                "mosquitto did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Messages a subscriber received: (topic, payload).
type Inbox = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A plain rumqttc subscriber on its own thread.
struct Subscriber {
    inbox: Inbox,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    fn start(port: u16, filters: &[&str], client_id: &str, persistent: bool) -> Self {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(!persistent);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(8 << 20, 1 << 16);
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let inbox: Inbox = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let subscribed = Arc::new(AtomicBool::new(false));
        let (i, s, sub) = (inbox.clone(), stop.clone(), subscribed.clone());
        let handle = std::thread::spawn(move || {
            let (client, mut conn) = Client::new(o, 64);
            while !s.load(Ordering::SeqCst) {
                match conn.recv_timeout(Duration::from_millis(100)) {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        for f in &filters {
                            client.subscribe(f.clone(), QoS::AtLeastOnce).unwrap();
                        }
                    }
                    Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => sub.store(true, Ordering::SeqCst),
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => i
                        .lock()
                        .unwrap()
                        .push((p.topic.clone(), p.payload.to_vec())),
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                    _ => {}
                }
            }
            let _ = client.try_disconnect();
            let _ = conn.recv_timeout(Duration::from_millis(200));
        });
        let end = Instant::now() + Duration::from_secs(20);
        while !subscribed.load(Ordering::SeqCst) {
            assert!(Instant::now() < end, "the subscriber did not subscribe");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            inbox,
            stop,
            handle: Some(handle),
        }
    }

    fn messages(&self) -> Vec<(String, Vec<u8>)> {
        self.inbox.lock().unwrap().clone()
    }

    fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&[(String, Vec<u8>)]) -> bool) {
        let end = Instant::now() + timeout;
        loop {
            if done(&self.inbox.lock().unwrap()) {
                return;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Starts `edge-cli listen` and returns once it says it subscribed; the thread collects the
/// rest of its stderr.
fn spawn_listen(cmd: &mut Command) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let handle = std::thread::spawn(move || {
        let mut text = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            if line.contains("listen: subscribed to") {
                let _ = tx.send(());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    if rx.recv_timeout(Duration::from_secs(20)).is_err() {
        let _ = child.kill();
        panic!(
            "edge-cli listen did not subscribe:\n{}",
            handle.join().unwrap()
        );
    }
    (child, handle)
}

fn alert(seq: u64) -> Alert {
    let kind = match seq % 3 {
        1 => AlertKind::AnomalyStart,
        2 => AlertKind::AnomalyUpdate,
        _ => AlertKind::AnomalyEnd,
    };
    Alert {
        schema: ALERT_SCHEMA_VERSION,
        id: ulid(1_700_000_000_000 + seq, u128::from(seq)),
        seq,
        site: "harbor".into(),
        camera: "pier".into(),
        kind,
        time_us: seq as i64 * 1_000_000,
        raised_us: seq as i64 * 1_000_000,
        anomaly: Some(AnomalyInfo {
            event: seq / 3 + 1,
            score: 20.0,
            peak_score: 21.0,
            threshold: 16.0,
            regime: "all".into(),
            zone: None,
            regions: vec![],
            frames: [seq, seq],
            start_us: 0,
        }),
        detail: None,
        model: "test".into(),
        snapshot: vec![],
    }
}

fn section(port: u16, prefix: &str) -> MqttSection {
    MqttSection {
        host: "127.0.0.1".into(),
        port: Some(port),
        topic_prefix: Some(prefix.into()),
        ack_timeout_s: 2.0,
        keep_alive_s: 5,
        discovery: false,
        snapshots: false,
        ..MqttSection::default()
    }
}

fn device() -> DeviceInfo {
    DeviceInfo {
        site: "harbor".into(),
        camera: "pier".into(),
        model: "test".into(),
    }
}

/// Publishes 1,000 alerts through the outbox while `broker` goes away three times; the
/// subscriber must end up with every id.
fn thousand_alerts_through_outages(
    publish_port: u16,
    broker: &mut (dyn Outage + Send),
    subscriber: &Subscriber,
    prefix: &str,
    listen_args: &[&str],
) {
    const N: u64 = 1000;
    // `edge-cli listen` as a second consumer: it must print each of the 1,000 once.
    let (listen, listen_err) = spawn_listen(
        edge_cli()
            .args([
                "listen",
                "--json",
                "--count",
                "1000",
                "--timeout",
                "180",
                "--topic",
            ])
            .arg(format!("{prefix}/events"))
            .args(listen_args),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(
        dir.path(),
        OutboxConfig {
            sinks: vec!["mqtt".into()],
            max_alerts: 5000,
            max_backoff: Duration::from_secs(2),
            ..OutboxConfig::default()
        },
    )
    .unwrap();
    let sink = MqttSink::start(&section(publish_port, prefix), device(), None).unwrap();
    assert!(
        sink.wait_connected(Duration::from_secs(20)),
        "never connected"
    );
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(sink)];
    let started = Instant::now();
    let mut failures = 0;
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // The broker goes away at moments unrelated to the publisher's work (mid-publish, mid-
        // acknowledgement), three times, for 1.5 s each.
        let chaos = scope.spawn(|| {
            let mut outages = 0;
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(1200));
                broker.kill();
                outages += 1;
                std::thread::sleep(Duration::from_millis(1500));
                broker.restart();
            }
            done.store(true, Ordering::SeqCst);
            outages
        });
        for seq in 1..=N {
            outbox.append(&alert(seq)).unwrap();
            let stats = deliver_pending(&mut outbox, &mut sinks, now_ms()).unwrap();
            failures += stats.failed();
            // Spread the alerts over the outages (about 8 s).
            if !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(7));
            }
        }
        assert_eq!(chaos.join().unwrap(), 3);
    });
    // The outages were felt: deliveries failed and were retried later.
    assert!(failures >= 3, "only {failures} failed deliveries");
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        deliver_pending(&mut outbox, &mut sinks, now_ms()).unwrap();
        let pending = outbox.stats().unwrap().pending[0].1;
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < end, "{pending} alerts still undelivered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let expected: BTreeSet<String> = (1..=N).map(|s| alert(s).id).collect();
    let events = format!("{prefix}/events");
    let received = |msgs: &[(String, Vec<u8>)]| -> BTreeMap<String, usize> {
        let mut ids = BTreeMap::new();
        for (topic, payload) in msgs.iter().filter(|(t, _)| *t == events) {
            let a: Alert = serde_json::from_slice(payload)
                .unwrap_or_else(|e| panic!("{topic}: not an alert: {e}"));
            assert_eq!(a, alert(a.seq), "an alert arrived changed");
            *ids.entry(a.id).or_insert(0) += 1;
        }
        ids
    };
    subscriber.wait_for("all 1,000 ids", Duration::from_secs(60), |m| {
        received(m).len() >= expected.len()
    });
    let got = received(&subscriber.messages());
    let ids: BTreeSet<String> = got.keys().cloned().collect();
    assert_eq!(ids, expected, "the ids received differ from those sent");
    let dupes: usize = got.values().map(|n| n - 1).sum();
    let out = listen.wait_with_output().unwrap();
    let stderr = listen_err.join().unwrap();
    assert!(out.status.success(), "edge-cli listen: {stderr}");
    let printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Alert>(l)
                .expect("listen prints alerts")
                .id
        })
        .collect();
    let unique: BTreeSet<String> = printed.iter().cloned().collect();
    assert_eq!(printed.len(), unique.len(), "listen printed a duplicate");
    assert_eq!(unique, expected, "edge-cli listen: {stderr}");
    eprintln!(
        "1,000 alerts, 3 outages: all delivered in {:.1} s, {failures} failed attempts retried, \
         {dupes} duplicates (same id)",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_thousand_alerts_survive_three_outages_of_an_in_process_broker() {
    let port = rumqttd();
    let mut proxy = Proxy::start(port);
    // The subscriber talks to the broker directly; the publisher goes through the proxy.
    let sub = Subscriber::start(port, &["edge/a/#"], "sub-rumqttd", false);
    let proxy_port = proxy.port;
    let direct = format!("127.0.0.1:{port}");
    thousand_alerts_through_outages(proxy_port, &mut proxy, &sub, "edge/a", &["--mqtt", &direct]);
}

#[test]
fn a_thousand_alerts_survive_three_mosquitto_restarts() {
    if !mosquitto_available("a_thousand_alerts_survive_three_mosquitto_restarts") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut m = Mosquitto::start(dir.path(), "");
    let port = m.port;
    let sub = Subscriber::start(port, &["edge/m/#"], "sub-mosquitto", true);
    let addr = format!("127.0.0.1:{port}");
    let args = [
        "--mqtt",
        &addr,
        "--persistent",
        "--client-id",
        "listen-mosquitto",
    ];
    thousand_alerts_through_outages(port, &mut m, &sub, "edge/m", &args);
}

fn write_site(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let site = dir.join("site.toml");
    std::fs::write(
        &site,
        format!(
            "site = \"harbor\"\ncamera = \"pier\"\ndata_dir = \"{}\"\n[alerts]\njson = true\n\
             [alerts.mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n{extra}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    site
}

#[test]
fn edge_cli_run_publishes_alerts_state_and_discovery_and_listen_receives_them() {
    let port = rumqttd();
    let sub = Subscriber::start(port, &["#"], "sub-run", false);
    let dir = tempfile::tempdir().unwrap();
    let site = write_site(dir.path(), port, "");
    let (listen, listen_err) = spawn_listen(
        edge_cli()
            .args(["listen", "--json", "--timeout", "120", "--mqtt"])
            .arg(format!("127.0.0.1:{port}")),
    );
    let out = edge_cli()
        .args(["run", "--speed", "20", "--config"])
        .arg(&site)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed:\n{stderr}");
    let printed: Vec<Alert> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let starts: Vec<&Alert> = printed
        .iter()
        .filter(|a| a.kind == AlertKind::AnomalyStart)
        .collect();
    assert!(!starts.is_empty(), "the demo raised no event:\n{stderr}");

    // Every alert run printed reached the broker's events topic.
    let events = "thermal-edge/harbor/pier/events";
    let ids = |m: &[(String, Vec<u8>)]| -> BTreeSet<String> {
        m.iter()
            .filter(|(t, _)| t == events)
            .filter_map(|(_, p)| serde_json::from_slice::<Alert>(p).ok())
            .map(|a| a.id)
            .collect()
    };
    let printed_ids: BTreeSet<String> = printed.iter().map(|a| a.id.clone()).collect();
    sub.wait_for("the run's alerts on MQTT", Duration::from_secs(10), |m| {
        ids(m).is_superset(&printed_ids)
    });

    // A clean stop leaves `offline`, and the retained topics hold state, snapshot and discovery.
    let late = Subscriber::start(port, &["thermal-edge/#", "homeassistant/#"], "late", false);
    late.wait_for("retained topics", Duration::from_secs(10), |m| {
        let topics: BTreeSet<&str> = m.iter().map(|(t, _)| t.as_str()).collect();
        topics.contains("thermal-edge/harbor/pier/availability")
            && topics.contains("thermal-edge/harbor/pier/state")
            && topics.contains("thermal-edge/harbor/pier/snapshot")
            && topics
                .iter()
                .filter(|t| t.starts_with("homeassistant/"))
                .count()
                == 4
    });
    let retained = late.messages();
    let get = |topic: &str| {
        retained
            .iter()
            .rev()
            .find(|(t, _)| t == topic)
            .map(|(_, p)| p.clone())
            .unwrap()
    };
    assert_eq!(get("thermal-edge/harbor/pier/availability"), b"offline");
    let state: serde_json::Value =
        serde_json::from_slice(&get("thermal-edge/harbor/pier/state")).unwrap();
    assert!(
        state["state"] == "idle" || state["state"] == "alert",
        "{state}"
    );
    assert!(state["seq"].as_u64().unwrap() > 0, "{state}");
    assert!(
        get("thermal-edge/harbor/pier/snapshot").starts_with(b"\x89PNG"),
        "the snapshot is not a PNG"
    );
    for (topic, payload) in retained
        .iter()
        .filter(|(t, _)| t.starts_with("homeassistant/"))
    {
        let component = topic.split('/').nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        validate_discovery(component, &v).unwrap_or_else(|e| panic!("{topic}: {e}"));
        assert!(v["state_topic"]
            .as_str()
            .unwrap()
            .starts_with("thermal-edge/harbor/pier/"));
    }
    // Stats carry the frame rate for the HA sensor.
    let stats: Vec<serde_json::Value> = sub
        .messages()
        .iter()
        .filter(|(t, _)| t == "thermal-edge/harbor/pier/stats")
        .map(|(_, p)| serde_json::from_slice(p).unwrap())
        .collect();
    assert!(
        stats
            .iter()
            .any(|s| s["fps"].as_f64().is_some_and(|f| f > 0.0)),
        "no stats with a frame rate: {stats:?}"
    );

    // `edge-cli listen` printed each alert once.
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(listen.id() as i32, libc::SIGTERM) };
    let lo = listen.wait_with_output().unwrap();
    let heard: Vec<Alert> = String::from_utf8_lossy(&lo.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let heard_ids: Vec<String> = heard.iter().map(|a| a.id.clone()).collect();
    let unique: BTreeSet<String> = heard_ids.iter().cloned().collect();
    assert_eq!(unique.len(), heard_ids.len(), "listen printed a duplicate");
    assert!(
        unique.is_superset(&printed_ids),
        "listen missed alerts: {:?}\n{}",
        printed_ids.difference(&unique).collect::<Vec<_>>(),
        listen_err.join().unwrap()
    );

    // And `listen --outbox` reports the board's outbox: everything delivered to mqtt.
    let report = edge_cli()
        .args(["listen", "--json", "--outbox"])
        .arg(dir.path().join("data/outbox"))
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let mqtt = r["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sink"] == "mqtt")
        .expect("an mqtt sink in the outbox")
        .clone();
    assert_eq!(mqtt["pending"], 0, "{r}");
    // The data directory itself works too.
    let again = edge_cli()
        .args(["listen", "--json", "--outbox"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&again.stdout).unwrap(),
        r
    );
    assert!(
        mqtt["delivered"].as_u64().unwrap() >= printed.len() as u64,
        "{r}"
    );
}

fn last_will_on_kill_9(port: u16) {
    let sub = Subscriber::start(
        port,
        &["thermal-edge/harbor/pier/availability"],
        "sub-lwt",
        false,
    );
    let dir = tempfile::tempdir().unwrap();
    let site = write_site(dir.path(), port, "discovery = false\n");
    let mut run = edge_cli()
        .args(["run", "--speed", "1", "--config"])
        .arg(&site)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let online = |m: &[(String, Vec<u8>)]| m.last().is_some_and(|(_, p)| p == b"online");
    let end = Instant::now() + Duration::from_secs(60);
    while !online(&sub.messages()) {
        if Instant::now() > end || run.try_wait().unwrap().is_some() {
            let _ = run.kill();
            let mut err = String::new();
            run.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("run never published online:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(run.id() as i32, libc::SIGKILL) };
    run.wait().unwrap();
    sub.wait_for("the last will", Duration::from_secs(30), |m| {
        m.last().is_some_and(|(_, p)| p == b"offline")
    });
}

#[test]
fn killing_the_publisher_makes_rumqttd_publish_the_last_will() {
    last_will_on_kill_9(rumqttd());
}

#[test]
fn killing_the_publisher_makes_mosquitto_publish_the_last_will() {
    if !mosquitto_available("killing_the_publisher_makes_mosquitto_publish_the_last_will") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = Mosquitto::start(dir.path(), "");
    last_will_on_kill_9(m.port);
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, all signed by
/// it, plus an unrelated CA.
fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, cn) in [
        ("ca", "thermal-edge test CA"),
        ("wrong-ca", "some other CA"),
    ] {
        let key = format!("{name}.key");
        let pem = format!("{name}.pem");
        let subj = format!("/CN={cn}");
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
        openssl(dir, &a);
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn) in [("server", "localhost"), ("client", "edge-board")] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        let subj = format!("/CN={cn}");
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &a);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

#[test]
fn tls_with_a_client_certificate_works_and_a_wrong_ca_is_named() {
    if !mosquitto_available("tls_with_a_client_certificate_works_and_a_wrong_ca_is_named") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    make_pki(&pki);
    let p = |f: &str| pki.join(f);
    let m = Mosquitto::start(
        dir.path(),
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true",
            p("ca.pem").display(),
            p("server.pem").display(),
            p("server.key").display()
        ),
    );
    let port = m.port;
    let tls_section = |ca: &str| MqttSection {
        host: "localhost".into(),
        ca_file: Some(p(ca)),
        client_cert: Some(p("client.pem")),
        client_key: Some(p("client.key")),
        ..section(port, "edge/tls")
    };

    // The consumer, over TLS with its own client certificate.
    let listen = edge_cli()
        .args([
            "listen",
            "--json",
            "--count",
            "1",
            "--timeout",
            "60",
            "--mqtt",
        ])
        .arg(format!("localhost:{port}"))
        .arg("--topic")
        .arg("edge/tls/events")
        .arg("--ca-file")
        .arg(p("ca.pem"))
        .arg("--client-cert")
        .arg(p("client.pem"))
        .arg("--client-key")
        .arg(p("client.key"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sink = MqttSink::start(&tls_section("ca.pem"), device(), None).unwrap();
    assert!(
        sink.wait_connected(Duration::from_secs(20)),
        "no TLS connection:\n{}",
        m.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    // Retry until the listener (which subscribes asynchronously) gets it.
    let a = alert(1);
    let lo = {
        let end = Instant::now() + Duration::from_secs(30);
        let mut listen = listen;
        loop {
            sink.deliver(&a).unwrap();
            if listen.try_wait().unwrap().is_some() {
                break listen.wait_with_output().unwrap();
            }
            assert!(Instant::now() < end, "listen never received the alert");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    assert!(
        lo.status.success(),
        "{}",
        String::from_utf8_lossy(&lo.stderr)
    );
    let got: Alert = serde_json::from_slice(lo.stdout.split(|b| *b == b'\n').next().unwrap())
        .expect("listen printed the alert");
    assert_eq!(got, a);
    drop(sink);

    // A wrong CA: the sink cannot deliver and says why, naming the CA file.
    let mut wrong = MqttSink::start(&tls_section("wrong-ca.pem"), device(), None).unwrap();
    assert!(!wrong.wait_connected(Duration::from_secs(3)));
    let e = wrong.deliver(&a).unwrap_err().to_string();
    assert!(
        e.contains("wrong-ca.pem") && e.contains("not signed by the CA"),
        "unclear error: {e}"
    );
    // And `listen` with the wrong CA exits 1 with the same explanation.
    let out = edge_cli()
        .args(["listen", "--timeout", "20", "--mqtt"])
        .arg(format!("localhost:{port}"))
        .arg("--ca-file")
        .arg(p("wrong-ca.pem"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("wrong-ca.pem") && err.contains("not signed"),
        "{err}"
    );
    // Reading the board's PEM files fails early, naming the file.
    let bad = MqttSection {
        ca_file: Some(dir.path().join("missing.pem")),
        ..section(port, "edge/tls")
    };
    let e = MqttSink::start(&bad, device(), None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing.pem"), "{e}");
}

/// Publishes one QoS 1 message as a separate client and waits for the broker's PUBACK.
fn publish_once(port: u16, topic: &str, payload: &str) {
    let (client, mut conn) = Client::new(MqttOptions::new("ha-core", "127.0.0.1", port), 8);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < end, "no PUBACK for {topic}");
        if let Ok(Ok(Event::Incoming(Packet::PubAck(_)))) =
            conn.recv_timeout(Duration::from_millis(100))
        {
            break;
        }
    }
    let _ = client.try_disconnect();
    let _ = conn.recv_timeout(Duration::from_millis(100));
}

#[test]
fn home_assistant_coming_online_gets_the_discovery_configs_again() {
    let port = rumqttd();
    let sub = Subscriber::start(port, &["homeassistant/+/+/+/config"], "sub-ha", false);
    let s = MqttSection {
        discovery: true,
        ..section(port, "edge/ha")
    };
    let _sink = MqttSink::start(&s, device(), None).unwrap();
    sub.wait_for("four discovery configs", Duration::from_secs(10), |m| {
        m.len() == 4
    });
    // Home Assistant restarted: its birth message asks every device to announce itself again.
    publish_once(port, "homeassistant/status", "online");
    sub.wait_for("the configs again", Duration::from_secs(10), |m| {
        m.len() == 8
    });
    let msgs = sub.messages();
    for (topic, payload) in &msgs {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        validate_discovery(topic.split('/').nth(1).unwrap(), &v)
            .unwrap_or_else(|e| panic!("{topic}: {e}"));
    }
    let first: BTreeSet<&String> = msgs[..4].iter().map(|(t, _)| t).collect();
    let again: BTreeSet<&String> = msgs[4..].iter().map(|(t, _)| t).collect();
    assert_eq!(first, again);
    // Anything else on the status topic is not a birth message.
    publish_once(port, "homeassistant/status", "offline");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sub.messages().len(), 8);
}

#[test]
fn credentials_come_from_the_environment_and_a_wrong_password_is_named() {
    if !mosquitto_available("credentials_come_from_the_environment_and_a_wrong_password_is_named") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let out = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwd)
        .args(["edge-pier", "s3cret-harbor"])
        .output()
        .expect("running mosquitto_passwd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Mosquitto::start(
        dir.path(),
        &format!("password_file {}\nallow_anonymous false", passwd.display()),
    );
    let with = |env: &str| MqttSection {
        username: Some("edge-pier".into()),
        password_env: Some(env.into()),
        ..section(m.port, "edge/auth")
    };
    std::env::set_var("THERMAL_EDGE_TEST_MQTT_GOOD", "s3cret-harbor");
    std::env::set_var("THERMAL_EDGE_TEST_MQTT_BAD", "not-the-password");
    let mut good = MqttSink::start(&with("THERMAL_EDGE_TEST_MQTT_GOOD"), device(), None).unwrap();
    assert!(
        good.wait_connected(Duration::from_secs(20)),
        "the right password was refused:\n{}",
        m.log()
    );
    good.deliver(&alert(1)).unwrap();
    let mut bad = MqttSink::start(&with("THERMAL_EDGE_TEST_MQTT_BAD"), device(), None).unwrap();
    assert!(!bad.wait_connected(Duration::from_secs(3)));
    let e = bad.deliver(&alert(2)).unwrap_err().to_string();
    assert!(e.contains("username and password"), "unclear error: {e}");
    assert!(!e.contains("not-the-password"), "the password leaked: {e}");
}
