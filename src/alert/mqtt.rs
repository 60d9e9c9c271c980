//! The MQTT sink: alerts to a broker (QoS 1, acknowledged before the outbox marks them
//! delivered), retained camera state, health statistics, event snapshots, availability with a
//! last will, and Home Assistant discovery. Also the broker settings and TLS setup that
//! `edge-cli listen` shares.
//!
//! Topics, under a prefix that defaults to `thermal-edge/<site>/<camera>`:
//!
//! | topic | payload | QoS, retain |
//! |---|---|---|
//! | `events` | every alert as JSON (`docs/alerts.md`) | 1 |
//! | `state` | `{"state": "idle"/"alert", "score", …}` | 1, retained |
//! | `stats` | the health record as JSON, plus `fps` | 0 |
//! | `snapshot` | PNG of the latest event start/peak | 1, retained |
//! | `availability` | `online`; `offline` on a clean stop and as the last will | 1, retained |
//!
//! Why a worker thread and fresh connections: `rumqttc` persists nothing and, on a reconnect
//! without a resumed session, silently drops what was in flight (bytebeamio/rumqtt#863). So the
//! sink never relies on it to re-send: [`Sink::deliver`] publishes one alert and waits for its
//! PUBACK; anything not acknowledged is an error the outbox retries. Each connection gets a new
//! client and event loop, so no stale request from a dead connection can be mistaken for a new
//! one, and [`Sink::reconnected`] tells the loop to re-send the outbox's backlog at once.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{
    Client, Connection, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use serde_json::{json, Value};

use super::{Alert, AlertKind, Sink, SinkError};

/// Payload of the availability topic while the board runs.
pub const ONLINE: &str = "online";
/// Payload of the availability topic after a clean stop, and the last will.
pub const OFFLINE: &str = "offline";

/// Requests queued towards one connection before `deliver` reports the sink busy.
const REQUEST_CAPACITY: usize = 64;
/// Largest packet we send (snapshots) and accept.
const MAX_OUTGOING_PACKET: usize = 4 << 20;
const MAX_INCOMING_PACKET: usize = 1 << 20;
/// The worker's tick while connected.
const POLL: Duration = Duration::from_millis(50);
/// Longest wait between connection attempts.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(30);

/// Why the MQTT settings or connection could not be used. The message names the setting or file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MqttError(pub String);

/// `[alerts.mqtt]`: where and how alerts are published. Passwords never live in this file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// Broker host name or address (the TLS server name, too).
    pub host: String,
    /// Broker port (default 1883, or 8883 with TLS).
    pub port: Option<u16>,
    /// MQTT client id (default `thermal-edge-<site>-<camera>`).
    pub client_id: Option<String>,
    /// Topic prefix (default `thermal-edge/<site>/<camera>`).
    pub topic_prefix: Option<String>,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (first line; keep it mode 0600).
    pub password_file: Option<PathBuf>,
    /// Refused with an explanation: a password in the site file ends up in backups and bug reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PEM file of the CA that signed the broker's certificate; setting it turns TLS on.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for brokers that want one; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// MQTT keep-alive, seconds (how fast a dead broker is noticed when the network is silent).
    pub keep_alive_s: u64,
    /// Longest wait for the broker's PUBACK before the alert is retried later, seconds.
    pub ack_timeout_s: f64,
    /// Publish Home Assistant discovery configs.
    pub discovery: bool,
    /// Home Assistant discovery prefix (its birth message is `<prefix>/status` = `online`).
    pub discovery_prefix: String,
    /// Publish event snapshots (PNG) to `<prefix>/snapshot`.
    pub snapshots: bool,
}

impl Default for MqttSection {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: None,
            client_id: None,
            topic_prefix: None,
            username: None,
            password_env: None,
            password_file: None,
            password: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            keep_alive_s: 15,
            ack_timeout_s: 5.0,
            discovery: true,
            discovery_prefix: "homeassistant".into(),
            snapshots: true,
        }
    }
}

/// TLS files, checked to exist.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// CA certificate(s), PEM.
    pub ca: PathBuf,
    /// Client certificate chain and key, PEM.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// A broker to connect to: address, TLS, credentials (resolved from the environment or a file).
#[derive(Clone, PartialEq)]
pub struct BrokerSettings {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS, when on.
    pub tls: Option<TlsFiles>,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
}

impl std::fmt::Debug for BrokerSettings {
    // The password stays out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

impl BrokerSettings {
    /// A plain-TCP broker without credentials (tests, `edge-cli listen --host`).
    pub fn plain(host: &str, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            tls: None,
            credentials: None,
            keep_alive: Duration::from_secs(15),
        }
    }

    /// `host:port` for messages.
    pub fn address(&self) -> String {
        format!(
            "{}:{}{}",
            self.host,
            self.port,
            if self.tls.is_some() { " (TLS)" } else { "" }
        )
    }
}

/// Reads a password: from the environment variable `env`, else the first line of `file`.
pub fn read_password(env: Option<&str>, file: Option<&Path>) -> Result<Option<String>, MqttError> {
    if let Some(name) = env {
        return match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(MqttError(format!(
                "MQTT password: environment variable {name} (password_env) is not set or empty"
            ))),
        };
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            MqttError(format!(
                "MQTT password: cannot read {} (password_file): {e}",
                path.display()
            ))
        })?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if line.is_empty() {
            return Err(MqttError(format!(
                "MQTT password: {} (password_file) is empty",
                path.display()
            )));
        }
        return Ok(Some(line.to_string()));
    }
    Ok(None)
}

impl MqttSection {
    /// Checks the section and resolves the broker settings (password, TLS files).
    pub fn broker(&self) -> Result<BrokerSettings, MqttError> {
        if self.password.is_some() {
            return Err(MqttError(
                "alerts.mqtt.password: passwords do not go in the config file (it ends up in \
                 backups and bug reports); set password_env to an environment variable's name or \
                 password_file to a file readable only by the service"
                    .into(),
            ));
        }
        if self.host.trim().is_empty() {
            return Err(MqttError("alerts.mqtt.host is empty".into()));
        }
        if !(self.ack_timeout_s > 0.0 && self.ack_timeout_s <= 600.0) {
            return Err(MqttError(format!(
                "alerts.mqtt.ack_timeout_s {} must be in (0, 600]",
                self.ack_timeout_s
            )));
        }
        let password = read_password(self.password_env.as_deref(), self.password_file.as_deref())?;
        if password.is_some() && self.username.is_none() {
            return Err(MqttError(
                "alerts.mqtt: a password is set (password_env/password_file) but no username"
                    .into(),
            ));
        }
        let tls = tls_files(
            self.ca_file.as_deref(),
            self.client_cert.as_deref(),
            self.client_key.as_deref(),
        )?;
        let port = self.port.unwrap_or(if tls.is_some() { 8883 } else { 1883 });
        Ok(BrokerSettings {
            host: self.host.clone(),
            port,
            tls,
            credentials: self
                .username
                .clone()
                .map(|u| (u, password.unwrap_or_default())),
            keep_alive: Duration::from_secs(self.keep_alive_s.max(5)),
        })
    }

    /// The topic prefix for a camera.
    pub fn prefix(&self, site: &str, camera: &str) -> String {
        match &self.topic_prefix {
            Some(p) => p.trim_end_matches('/').to_string(),
            None => format!("thermal-edge/{}/{}", topic_level(site), topic_level(camera)),
        }
    }

    /// The client id for a camera.
    pub fn client_id(&self, site: &str, camera: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("thermal-edge-{}-{}", object_id(site), object_id(camera)))
    }
}

/// Checks the TLS files: a CA turns TLS on; a client certificate needs its key.
pub fn tls_files(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<TlsFiles>, MqttError> {
    let exists = |p: &Path, what: &str| {
        if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(MqttError(format!(
                "MQTT TLS: {what} {} does not exist or is not a file",
                p.display()
            )))
        }
    };
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((exists(c, "client_cert")?, exists(k, "client_key")?)),
        (None, None) => None,
        _ => {
            return Err(MqttError(
                "MQTT TLS: client_cert and client_key go together".into(),
            ))
        }
    };
    match ca {
        Some(ca) => Ok(Some(TlsFiles {
            ca: exists(ca, "ca_file")?,
            client,
        })),
        None if client.is_some() => Err(MqttError(
            "MQTT TLS: a client certificate needs ca_file (the broker's CA) as well".into(),
        )),
        None => Ok(None),
    }
}

/// A topic level from a free-form name: no wildcards, separators or spaces.
pub fn topic_level(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '/' | '+' | '#' | ' ' | '\0' => '_',
            c => c,
        })
        .collect()
}

/// An identifier safe for Home Assistant object ids and MQTT client ids.
pub fn object_id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The rustls client configuration: trust only `ca` (not the system roots: a site broker has
/// its own CA), and present a client certificate when given.
pub fn tls_client_config(tls: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, MqttError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = |path: &Path, what: &str| -> Result<Vec<CertificateDer<'static>>, MqttError> {
        let list: Vec<_> = CertificateDer::pem_file_iter(path)
            .map_err(|e| MqttError(format!("MQTT TLS: {what} {}: {e}", path.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| MqttError(format!("MQTT TLS: {what} {}: {e}", path.display())))?;
        if list.is_empty() {
            return Err(MqttError(format!(
                "MQTT TLS: {what} {} holds no PEM certificate",
                path.display()
            )));
        }
        Ok(list)
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&tls.ca, "ca_file")? {
        roots.add(c).map_err(|e| {
            MqttError(format!(
                "MQTT TLS: ca_file {}: not a usable CA certificate: {e}",
                tls.ca.display()
            ))
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttError(format!("MQTT TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match &tls.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certs(cert, "client_cert")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                MqttError(format!(
                    "MQTT TLS: client_key {}: no usable PEM private key: {e}",
                    key.display()
                ))
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                MqttError(format!(
                    "MQTT TLS: client_cert {} and its key do not go together: {e}",
                    cert.display()
                ))
            })?
        }
    };
    Ok(Arc::new(config))
}

/// `rumqttc` options for `broker` (TLS set up, keep-alive, packet limits).
pub fn mqtt_options(broker: &BrokerSettings, client_id: &str) -> Result<MqttOptions, MqttError> {
    let mut o = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    o.set_keep_alive(broker.keep_alive);
    o.set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
    if let Some((u, p)) = &broker.credentials {
        o.set_credentials(u.clone(), p.clone());
    }
    if let Some(tls) = &broker.tls {
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls_client_config(
            tls,
        )?)));
    }
    Ok(o)
}

/// A connection error in words an operator can act on.
pub fn describe_connection_error(broker: &BrokerSettings, e: &ConnectionError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        let msg = inner.to_string();
        if !text.contains(&msg) {
            let _ = write!(text, ": {msg}");
        }
        source = inner.source();
    }
    let hint = match e {
        ConnectionError::Tls(_)
            if text.contains("UnknownIssuer") || text.contains("certificate") =>
        {
            match &broker.tls {
                Some(t) => format!(
                    " (the broker's certificate is not signed by the CA in {}, or does not name \
                     host {}; check ca_file and host)",
                    t.ca.display(),
                    broker.host
                ),
                None => String::new(),
            }
        }
        ConnectionError::ConnectionRefused(_) => {
            " (the broker refused the connection: check username and password)".to_string()
        }
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            " (is the broker running and listening on that port?)".to_string()
        }
        _ => String::new(),
    };
    format!("MQTT broker {}: {text}{hint}", broker.address())
}

/// The topics of one camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// The prefix, without a trailing slash.
    pub prefix: String,
    /// Every alert, JSON, QoS 1.
    pub events: String,
    /// Retained camera state, JSON.
    pub state: String,
    /// Health statistics, JSON.
    pub stats: String,
    /// Retained PNG of the latest event.
    pub snapshot: String,
    /// Retained `online`/`offline`.
    pub availability: String,
}

impl Topics {
    /// Topics under `prefix`.
    pub fn new(prefix: &str) -> Self {
        let p = prefix.trim_end_matches('/');
        Self {
            prefix: p.to_string(),
            events: format!("{p}/events"),
            state: format!("{p}/state"),
            stats: format!("{p}/stats"),
            snapshot: format!("{p}/snapshot"),
            availability: format!("{p}/availability"),
        }
    }
}

/// Keys each discovery payload may carry, by component (the documented subset of Home
/// Assistant's MQTT discovery schema we use; `docs/alerts.md` lists the same).
pub const DISCOVERY_KEYS: &[(&str, &[&str])] = &[
    (
        "binary_sensor",
        &[
            "name",
            "unique_id",
            "object_id",
            "state_topic",
            "value_template",
            "payload_on",
            "payload_off",
            "device_class",
            "availability_topic",
            "payload_available",
            "payload_not_available",
            "json_attributes_topic",
            "json_attributes_template",
            "expire_after",
            "qos",
            "device",
            "origin",
        ],
    ),
    (
        "sensor",
        &[
            "name",
            "unique_id",
            "object_id",
            "state_topic",
            "value_template",
            "unit_of_measurement",
            "device_class",
            "state_class",
            "suggested_display_precision",
            "availability_topic",
            "payload_available",
            "payload_not_available",
            "expire_after",
            "qos",
            "device",
            "origin",
        ],
    ),
];

/// Keys every discovery payload must carry.
pub const DISCOVERY_REQUIRED: &[&str] = &[
    "name",
    "unique_id",
    "object_id",
    "state_topic",
    "availability_topic",
    "device",
];

/// Identity of the board for Home Assistant's device registry.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Site name.
    pub site: String,
    /// Camera name.
    pub camera: String,
    /// Model hash (shown as the device's hardware version).
    pub model: String,
}

/// Home Assistant discovery configs: (config topic, JSON payload), all to be retained.
/// Entities: the anomaly `binary_sensor` (device class `safety`: on means unsafe), a drift
/// `binary_sensor` (`problem`), the score and frame-rate `sensor`s.
pub fn discovery_configs(
    topics: &Topics,
    discovery_prefix: &str,
    dev: &DeviceInfo,
) -> Vec<(String, Value)> {
    let node = format!("{}_{}", object_id(&dev.site), object_id(&dev.camera));
    let device = json!({
        "identifiers": [format!("thermal_edge_{node}")],
        "name": format!("Thermal camera {} ({})", dev.camera, dev.site),
        "manufacturer": "thermal-edge",
        "model": "thermal anomaly detector",
        "sw_version": env!("CARGO_PKG_VERSION"),
        "hw_version": dev.model,
    });
    let origin = json!({
        "name": "thermal-edge",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let common = |name: &str, id: &str, state_topic: &str| {
        let uid = format!("thermal_edge_{node}_{id}");
        json!({
            "name": name,
            "unique_id": uid,
            "object_id": uid,
            "state_topic": state_topic,
            "availability_topic": topics.availability,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "qos": 1,
            "device": device,
            "origin": origin,
        })
    };
    let mut out = Vec::new();
    let mut add = |component: &str, id: &str, mut v: Value, extra: Value| {
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                o.insert(k.clone(), x.clone());
            }
        }
        out.push((
            format!("{discovery_prefix}/{component}/{node}/{id}/config"),
            v,
        ));
    };
    add(
        "binary_sensor",
        "anomaly",
        common("Anomaly", "anomaly", &topics.state),
        json!({
            "value_template": "{{ value_json.state }}",
            "payload_on": "alert",
            "payload_off": "idle",
            "device_class": "safety",
            "json_attributes_topic": topics.state,
        }),
    );
    add(
        "binary_sensor",
        "drift",
        common("Scene drift", "drift", &topics.state),
        json!({
            "value_template": "{{ 'ON' if value_json.drift in ['warn', 'recalibrate'] else 'OFF' }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "problem",
        }),
    );
    add(
        "sensor",
        "score",
        common("Anomaly score", "score", &topics.state),
        json!({
            "value_template": "{{ value_json.score }}",
            "unit_of_measurement": "σ",
            "state_class": "measurement",
            "suggested_display_precision": 1,
        }),
    );
    add(
        "sensor",
        "fps",
        common("Scored frames per second", "fps", &topics.stats),
        json!({
            "value_template": "{{ value_json.fps }}",
            "unit_of_measurement": "fps",
            "state_class": "measurement",
            "suggested_display_precision": 2,
        }),
    );
    out
}

/// Checks a discovery payload against [`DISCOVERY_KEYS`] and [`DISCOVERY_REQUIRED`]; the error
/// names the offending key.
pub fn validate_discovery(component: &str, payload: &Value) -> Result<(), String> {
    let allowed = DISCOVERY_KEYS
        .iter()
        .find(|(c, _)| *c == component)
        .map(|(_, k)| *k)
        .ok_or_else(|| format!("unknown component {component}"))?;
    let obj = payload
        .as_object()
        .ok_or_else(|| "payload is not a JSON object".to_string())?;
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("{component}: undocumented key {k}"));
    }
    if let Some(k) = DISCOVERY_REQUIRED.iter().find(|k| !obj.contains_key(**k)) {
        return Err(format!("{component}: missing key {k}"));
    }
    if obj.get("unique_id") != obj.get("object_id") {
        return Err(format!("{component}: object_id differs from unique_id"));
    }
    let ids = obj["device"].get("identifiers").and_then(|v| v.as_array());
    if ids.is_none_or(|a| a.is_empty()) {
        return Err(format!("{component}: device.identifiers is missing"));
    }
    for key in ["state_topic", "availability_topic", "json_attributes_topic"] {
        if let Some(t) = obj.get(key) {
            let t = t.as_str().ok_or_else(|| format!("{key} is not a string"))?;
            if t.is_empty() || t.contains(['+', '#']) {
                return Err(format!("{component}: {key} {t:?} is not a topic name"));
            }
        }
    }
    Ok(())
}

/// What the retained `state` topic says about the camera.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CameraStatus {
    /// `idle` or `alert`.
    pub state: &'static str,
    /// Score of the latest anomaly alert, or between events of the latest health record.
    pub score: f64,
    /// Threshold it was compared with.
    pub threshold: Option<f64>,
    /// Open event id, while in `alert`.
    pub event: Option<u64>,
    /// Zone of the latest anomaly.
    pub zone: Option<String>,
    /// Hottest temperature in the latest anomaly's regions, °C (radiometric cameras).
    pub max_temp_c: Option<f64>,
    /// Drift monitor state: `unknown` (no record yet), `ok`, `warn` or `recalibrate`.
    pub drift: String,
    /// Sequence number of the alert that set this state.
    pub seq: u64,
    /// Capture time of that alert, µs.
    pub time_us: i64,
}

impl Default for CameraStatus {
    fn default() -> Self {
        Self {
            state: "idle",
            score: 0.0,
            threshold: None,
            event: None,
            zone: None,
            max_temp_c: None,
            drift: "unknown".into(),
            seq: 0,
            time_us: 0,
        }
    }
}

impl CameraStatus {
    /// Folds an alert in; true when the state topic should be republished.
    pub fn apply(&mut self, alert: &Alert) -> bool {
        match alert.kind {
            AlertKind::AnomalyStart | AlertKind::AnomalyUpdate | AlertKind::AnomalyEnd => {
                let Some(a) = &alert.anomaly else {
                    return false;
                };
                let open = alert.kind != AlertKind::AnomalyEnd;
                self.state = if open { "alert" } else { "idle" };
                self.event = open.then_some(a.event);
                self.score = a.score;
                self.threshold = Some(a.threshold);
                self.zone = a.zone.clone();
                self.max_temp_c = a
                    .regions
                    .iter()
                    .filter_map(|r| r.temperature_c.map(|t| f64::from(t[0])))
                    .reduce(f64::max);
            }
            AlertKind::Drift | AlertKind::Health => {
                // Between events the score sensor follows the health records' latest score.
                let mut changed = false;
                if alert.kind == AlertKind::Health && self.event.is_none() {
                    if let Some(s) = alert
                        .detail
                        .as_ref()
                        .and_then(|d| d.get("last_score"))
                        .and_then(Value::as_f64)
                    {
                        changed = s != self.score;
                        self.score = s;
                    }
                }
                // Drift alerts carry `state`; health records a line such as
                // `ok (all: warming up)` whose first word is the state.
                let key = if alert.kind == AlertKind::Drift {
                    "state"
                } else {
                    "drift"
                };
                let state = alert
                    .detail
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .and_then(Value::as_str)
                    .and_then(|d| d.split([' ', '(']).next())
                    .filter(|w| !w.is_empty());
                match state {
                    Some(state) if state != self.drift => self.drift = state.to_string(),
                    _ if changed => {}
                    _ => return false,
                }
            }
        }
        self.seq = alert.seq;
        self.time_us = alert.time_us;
        true
    }
}

/// The `stats` payload for a health alert: its detail plus `fps` (scored frames per second
/// since the previous health record).
pub fn stats_payload(detail: &Value, previous: Option<(f64, u64)>) -> (Value, Option<(f64, u64)>) {
    let uptime = detail.get("uptime_s").and_then(Value::as_f64);
    let scored = detail
        .get("counters")
        .and_then(|c| c.get("scored"))
        .and_then(Value::as_u64);
    let mut v = detail.clone();
    let now = uptime.zip(scored);
    if let (Some((t, n)), Some(o)) = (now, v.as_object_mut()) {
        let fps = match previous {
            Some((t0, n0)) if t > t0 && n >= n0 => (n - n0) as f64 / (t - t0),
            _ if t > 0.0 => n as f64 / t,
            _ => 0.0,
        };
        o.insert("fps".into(), json!((fps * 1000.0).round() / 1000.0));
    }
    (v, now)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Someone waiting for a PUBACK (or nobody, for fire-and-forget QoS 1 publishes).
struct Waiter {
    reply: Option<SyncSender<Result<(), String>>>,
}

impl Waiter {
    fn finish(self, r: Result<(), String>) {
        if let Some(tx) = self.reply {
            let _ = tx.try_send(r);
        }
    }
}

/// What the worker and the sink share.
#[derive(Default)]
struct Inner {
    /// The live connection's client; `None` while disconnected.
    client: Option<Client>,
    /// QoS 1 publishes handed to the client, not yet given a packet id, in request order.
    queued: VecDeque<Waiter>,
    /// QoS 1 publishes on the wire, by packet id.
    inflight: HashMap<u16, Waiter>,
    /// Set on every successful connect; cleared by [`Sink::reconnected`].
    reconnected: bool,
    /// The latest connection error, for `deliver`'s message.
    last_error: Option<String>,
    /// What the retained topics say, republished on every connect.
    status: CameraStatus,
    /// Latest snapshot PNG, republished on every connect.
    snapshot: Option<Arc<Vec<u8>>>,
    connects: u64,
}

impl Inner {
    fn fail_all(&mut self, why: &str) {
        for w in self.queued.drain(..) {
            w.finish(Err(why.to_string()));
        }
        for (_, w) in self.inflight.drain() {
            w.finish(Err(why.to_string()));
        }
    }
}

struct Shared {
    inner: Mutex<Inner>,
    stop: AtomicBool,
}

/// Publishes with QoS 1 and registers the waiter under the same lock, so the worker can match
/// packet ids to waiters in request order.
fn publish_qos1(
    inner: &mut Inner,
    topic: &str,
    retain: bool,
    payload: Vec<u8>,
    reply: Option<SyncSender<Result<(), String>>>,
) -> Result<(), String> {
    let client = inner.client.as_ref().ok_or_else(|| {
        format!(
            "not connected to the broker ({})",
            inner.last_error.as_deref().unwrap_or("connecting")
        )
    })?;
    client
        .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        .map_err(|e| format!("publish to {topic}: {e}"))?;
    inner.queued.push_back(Waiter { reply });
    Ok(())
}

/// The MQTT alert sink (see the module docs).
pub struct MqttSink {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
    topics: Topics,
    ack_timeout: Duration,
    snapshots: bool,
    data_dir: Option<PathBuf>,
    last_stats: Option<(f64, u64)>,
}

impl MqttSink {
    /// Starts the worker, which connects (and keeps reconnecting) in the background.
    pub fn start(
        section: &MqttSection,
        dev: DeviceInfo,
        data_dir: Option<PathBuf>,
    ) -> Result<Self, MqttError> {
        let broker = section.broker()?;
        let topics = Topics::new(&section.prefix(&dev.site, &dev.camera));
        let client_id = section.client_id(&dev.site, &dev.camera);
        let mut options = mqtt_options(&broker, &client_id)?;
        options.set_last_will(LastWill::new(
            topics.availability.clone(),
            OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
        let discovery = section.discovery.then(|| {
            (
                format!("{}/status", section.discovery_prefix),
                discovery_configs(&topics, &section.discovery_prefix, &dev),
            )
        });
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            stop: AtomicBool::new(false),
        });
        let worker = Worker {
            shared: shared.clone(),
            broker,
            options,
            topics: topics.clone(),
            discovery,
        };
        let handle = std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || worker.run())
            .map_err(|e| MqttError(format!("MQTT: cannot start the worker thread: {e}")))?;
        Ok(Self {
            shared,
            worker: Some(handle),
            topics,
            ack_timeout: Duration::from_secs_f64(section.ack_timeout_s),
            snapshots: section.snapshots,
            data_dir,
            last_stats: None,
        })
    }

    /// The sink's topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Whether a connection is up now.
    pub fn connected(&self) -> bool {
        lock(&self.shared.inner).client.is_some()
    }

    /// Waits up to `timeout` for the first connection; false if it did not come.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.connected() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.connected()
    }

    fn err(&self, detail: String) -> SinkError {
        SinkError {
            sink: "mqtt".into(),
            detail,
        }
    }

    /// Publishes and waits for the PUBACK.
    fn publish_acked(&self, topic: &str, retain: bool, payload: Vec<u8>) -> Result<(), SinkError> {
        let (tx, rx) = sync_channel(1);
        publish_qos1(
            &mut lock(&self.shared.inner),
            topic,
            retain,
            payload,
            Some(tx),
        )
        .map_err(|e| self.err(e))?;
        match rx.recv_timeout(self.ack_timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.err(e)),
            Err(RecvTimeoutError::Timeout) => Err(self.err(format!(
                "no PUBACK for {topic} within {:.1} s",
                self.ack_timeout.as_secs_f64()
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(self.err("the MQTT worker stopped".into())),
        }
    }

    /// Best effort: the retained topics are republished on every connect anyway.
    fn publish_retained(&self, topic: &str, payload: Vec<u8>) {
        let mut g = lock(&self.shared.inner);
        if let Err(e) = publish_qos1(&mut g, topic, true, payload, None) {
            log::debug!("MQTT: {e}");
        }
    }

    fn read_snapshot(&self, alert: &Alert) -> Option<Vec<u8>> {
        let rel = alert.snapshot.iter().find(|p| p.ends_with(".png"))?;
        let path = match &self.data_dir {
            Some(d) => d.join(rel),
            None => PathBuf::from(rel),
        };
        match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) => {
                log::warn!("MQTT: snapshot {} not published: {e}", path.display());
                None
            }
        }
    }
}

impl Sink for MqttSink {
    fn name(&self) -> &str {
        "mqtt"
    }

    fn deliver(&mut self, alert: &Alert) -> Result<(), SinkError> {
        let json = serde_json::to_vec(alert)
            .map_err(|e| self.err(format!("alert {} not serialisable: {e}", alert.id)))?;
        self.publish_acked(&self.topics.events, false, json)?;
        // The rest is state for dashboards, republished on reconnect; a loss here is not an
        // alert lost.
        let status = {
            let mut g = lock(&self.shared.inner);
            g.status.apply(alert).then(|| g.status.clone())
        };
        if let Some(s) = status {
            if let Ok(b) = serde_json::to_vec(&s) {
                self.publish_retained(&self.topics.state, b);
            }
        }
        if alert.kind == AlertKind::Health {
            if let Some(d) = &alert.detail {
                let (stats, now) = stats_payload(d, self.last_stats);
                if now.is_some() {
                    self.last_stats = now;
                }
                let g = lock(&self.shared.inner);
                if let (Some(c), Ok(b)) = (&g.client, serde_json::to_vec(&stats)) {
                    let _ = c.try_publish(&self.topics.stats, QoS::AtMostOnce, false, b);
                }
            }
        }
        if self.snapshots
            && matches!(
                alert.kind,
                AlertKind::AnomalyStart | AlertKind::AnomalyUpdate
            )
        {
            if let Some(png) = self.read_snapshot(alert) {
                let png = Arc::new(png);
                lock(&self.shared.inner).snapshot = Some(png.clone());
                self.publish_retained(&self.topics.snapshot, png.to_vec());
            }
        }
        Ok(())
    }

    /// Waits up to the ack timeout for every QoS 1 publish to be acknowledged.
    fn flush(&mut self) -> Result<(), SinkError> {
        let end = Instant::now() + self.ack_timeout;
        loop {
            let open = {
                let g = lock(&self.shared.inner);
                if g.client.is_none() {
                    return Ok(());
                }
                g.queued.len() + g.inflight.len()
            };
            if open == 0 {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(self.err(format!("{open} publishes still unacknowledged")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn reconnected(&mut self) -> bool {
        std::mem::take(&mut lock(&self.shared.inner).reconnected)
    }
}

impl Drop for MqttSink {
    /// Publishes `offline` (retained) and disconnects cleanly, so the last will does not fire.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }
}

/// The background half: owns the connection, matches acks to waiters, republishes retained
/// state on every connect and on Home Assistant's birth message.
struct Worker {
    shared: Arc<Shared>,
    broker: BrokerSettings,
    options: MqttOptions,
    topics: Topics,
    /// HA status topic and the discovery configs.
    discovery: Option<(String, Vec<(String, Value)>)>,
}

impl Worker {
    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    fn run(self) {
        let mut backoff = Duration::from_millis(250);
        let mut logged_error = false;
        while !self.stopping() {
            let (client, mut conn) = Client::new(self.options.clone(), REQUEST_CAPACITY);
            match self.session(client, &mut conn) {
                Ok(()) => return,
                Err((why, was_connected)) => {
                    {
                        let mut g = lock(&self.shared.inner);
                        g.client = None;
                        g.fail_all(&why);
                        g.last_error = Some(why.clone());
                    }
                    if was_connected {
                        backoff = Duration::from_millis(250);
                    }
                    if was_connected || !logged_error {
                        log::warn!("{why}; reconnecting");
                        logged_error = true;
                    } else {
                        log::debug!("{why}");
                    }
                }
            }
            let end = Instant::now() + backoff;
            while Instant::now() < end && !self.stopping() {
                std::thread::sleep(Duration::from_millis(20));
            }
            backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
        }
    }

    /// One connection, until it fails (error, and whether it had connected) or we stop (Ok).
    fn session(&self, client: Client, conn: &mut Connection) -> Result<(), (String, bool)> {
        let mut connected = false;
        let mut stop_sent: Option<Instant> = None;
        loop {
            if self.stopping() && stop_sent.is_none() {
                if !connected {
                    return Ok(());
                }
                // Clean stop: retained offline, then DISCONNECT (no last will).
                let mut g = lock(&self.shared.inner);
                let _ = publish_qos1(
                    &mut g,
                    &self.topics.availability,
                    true,
                    OFFLINE.into(),
                    None,
                );
                stop_sent = Some(Instant::now());
            }
            if let Some(t) = stop_sent {
                let g = lock(&self.shared.inner);
                let done = g.queued.is_empty() && g.inflight.is_empty();
                if done || t.elapsed() > Duration::from_secs(2) {
                    drop(g);
                    let _ = client.try_disconnect();
                    // Let the DISCONNECT go out.
                    let end = Instant::now() + Duration::from_millis(500);
                    while Instant::now() < end {
                        match conn.recv_timeout(POLL) {
                            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) => break,
                            Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                            _ => {}
                        }
                    }
                    lock(&self.shared.inner).client = None;
                    return Ok(());
                }
            }
            let event = match conn.recv_timeout(POLL) {
                Err(rumqttc::RecvTimeoutError::Timeout) => continue,
                Err(rumqttc::RecvTimeoutError::Disconnected) => return Ok(()),
                Ok(Err(e)) => return Err((describe_connection_error(&self.broker, &e), connected)),
                Ok(Ok(ev)) => ev,
            };
            match event {
                Event::Incoming(Packet::ConnAck(_)) => {
                    connected = true;
                    log::info!("MQTT: connected to {}", self.broker.address());
                    {
                        let mut g = lock(&self.shared.inner);
                        g.client = Some(client.clone());
                        g.reconnected = true;
                        g.last_error = None;
                        g.connects += 1;
                    }
                    if let Some((status_topic, _)) = &self.discovery {
                        let _ = client.try_subscribe(status_topic.clone(), QoS::AtLeastOnce);
                    }
                    self.republish();
                }
                Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => {
                    let mut g = lock(&self.shared.inner);
                    if let Some(w) = g.queued.pop_front() {
                        g.inflight.insert(pkid, w);
                    }
                }
                Event::Incoming(Packet::PubAck(ack)) => {
                    let mut g = lock(&self.shared.inner);
                    if let Some(w) = g.inflight.remove(&ack.pkid) {
                        w.finish(Ok(()));
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let birth = self.discovery.as_ref().is_some_and(|(t, _)| *t == p.topic)
                        && p.payload.as_ref() == b"online";
                    if birth {
                        log::info!("MQTT: Home Assistant came online; republishing discovery");
                        self.republish();
                    }
                }
                _ => {}
            }
        }
    }

    /// Discovery configs, then the retained state, then `online` (last, as Frigate does, so a
    /// consumer that sees `online` finds the state topics already filled).
    fn republish(&self) {
        let mut g = lock(&self.shared.inner);
        if let Some((_, configs)) = &self.discovery {
            for (topic, payload) in configs {
                if let Ok(b) = serde_json::to_vec(payload) {
                    let _ = publish_qos1(&mut g, topic, true, b, None);
                }
            }
        }
        if let Ok(b) = serde_json::to_vec(&g.status) {
            let _ = publish_qos1(&mut g, &self.topics.state, true, b, None);
        }
        if let Some(png) = g.snapshot.clone() {
            let _ = publish_qos1(&mut g, &self.topics.snapshot, true, png.to_vec(), None);
        }
        let _ = publish_qos1(&mut g, &self.topics.availability, true, ONLINE.into(), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> MqttSection {
        MqttSection::default()
    }

    #[test]
    fn passwords_in_the_config_file_are_refused_with_the_alternatives() {
        let s = MqttSection {
            username: Some("edge".into()),
            password: Some("hunter2".into()),
            ..section()
        };
        let e = s.broker().unwrap_err().to_string();
        assert!(
            e.contains("password_env") && e.contains("password_file"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn passwords_come_from_the_environment_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pass");
        std::fs::write(&f, "s3cret\n").unwrap();
        let s = MqttSection {
            username: Some("edge".into()),
            password_file: Some(f.clone()),
            ..section()
        };
        let b = s.broker().unwrap();
        assert_eq!(b.credentials, Some(("edge".into(), "s3cret".into())));
        assert!(!format!("{b:?}").contains("s3cret"));
        let missing = MqttSection {
            username: Some("edge".into()),
            password_env: Some("THERMAL_EDGE_TEST_UNSET_VARIABLE".into()),
            ..section()
        };
        let e = missing.broker().unwrap_err().to_string();
        assert!(e.contains("THERMAL_EDGE_TEST_UNSET_VARIABLE"), "{e}");
        let gone = MqttSection {
            username: Some("edge".into()),
            password_file: Some(dir.path().join("nope")),
            ..section()
        };
        assert!(gone.broker().unwrap_err().to_string().contains("nope"));
    }

    #[test]
    fn tls_needs_existing_files_and_a_key_with_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let e = tls_files(Some(&ca), None, None).unwrap_err().to_string();
        assert!(e.contains("ca_file") && e.contains("ca.pem"), "{e}");
        std::fs::write(&ca, "not pem").unwrap();
        let e = tls_files(Some(&ca), Some(&ca), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("go together"), "{e}");
        let files = tls_files(Some(&ca), None, None).unwrap().unwrap();
        let e = tls_client_config(&files).unwrap_err().to_string();
        assert!(
            e.contains("no PEM certificate") && e.contains("ca.pem"),
            "{e}"
        );
        let s = MqttSection {
            ca_file: Some(ca),
            ..section()
        };
        assert_eq!(s.broker().unwrap().port, 8883);
        assert_eq!(section().broker().unwrap().port, 1883);
    }

    #[test]
    fn topics_and_ids_are_safe_for_mqtt_and_home_assistant() {
        let s = section();
        assert_eq!(
            s.prefix("North Quay", "pier/1"),
            "thermal-edge/North_Quay/pier_1"
        );
        assert_eq!(
            s.client_id("North Quay", "pier/1"),
            "thermal-edge-north_quay-pier_1"
        );
        let t = Topics::new("x/y/");
        assert_eq!(t.events, "x/y/events");
        assert_eq!(t.availability, "x/y/availability");
    }

    #[test]
    fn discovery_payloads_use_only_documented_keys() {
        let topics = Topics::new("thermal-edge/harbor/pier");
        let dev = DeviceInfo {
            site: "harbor".into(),
            camera: "pier".into(),
            model: "abc123".into(),
        };
        let configs = discovery_configs(&topics, "homeassistant", &dev);
        assert_eq!(configs.len(), 4);
        let mut ids = std::collections::BTreeSet::new();
        for (topic, payload) in &configs {
            let parts: Vec<&str> = topic.split('/').collect();
            assert_eq!(parts.len(), 5, "{topic}");
            assert_eq!(parts[0], "homeassistant");
            assert_eq!(parts[4], "config");
            validate_discovery(parts[1], payload).unwrap_or_else(|e| panic!("{topic}: {e}"));
            assert!(ids.insert(payload["unique_id"].as_str().unwrap().to_string()));
            assert_eq!(payload["availability_topic"], topics.availability);
        }
        let anomaly = &configs[0].1;
        assert_eq!(anomaly["payload_on"], "alert");
        assert_eq!(anomaly["device_class"], "safety");
        // The validator catches an undocumented key and a missing one.
        let mut bad = anomaly.clone();
        bad["colour"] = json!("red");
        assert!(validate_discovery("binary_sensor", &bad)
            .unwrap_err()
            .contains("colour"));
        let mut bad = anomaly.clone();
        bad.as_object_mut().unwrap().remove("state_topic");
        assert!(validate_discovery("binary_sensor", &bad)
            .unwrap_err()
            .contains("state_topic"));
    }

    #[test]
    fn docs_alerts_md_lists_exactly_the_discovery_keys_in_use() {
        let doc = include_str!("../../docs/alerts.md");
        for (component, keys) in DISCOVERY_KEYS {
            let line = doc
                .split("\n- ")
                .find(|l| l.starts_with(&format!("`{component}`:")))
                .unwrap_or_else(|| panic!("docs/alerts.md lists no keys for {component}"));
            let listed: std::collections::BTreeSet<&str> =
                line.split('`').skip(3).step_by(2).collect();
            let code: std::collections::BTreeSet<&str> = keys.iter().copied().collect();
            assert_eq!(listed, code, "{component}");
        }
    }

    fn anomaly(kind: AlertKind, seq: u64, score: f64) -> Alert {
        crate::alert::sample_alert(kind, seq, score)
    }

    #[test]
    fn the_state_follows_events_and_drift() {
        let mut s = CameraStatus::default();
        assert!(s.apply(&anomaly(AlertKind::AnomalyStart, 1, 20.0)));
        assert_eq!((s.state, s.event, s.score), ("alert", Some(4), 20.0));
        assert!(s.apply(&anomaly(AlertKind::AnomalyEnd, 2, 3.0)));
        assert_eq!((s.state, s.event), ("idle", None));
        let mut health = anomaly(AlertKind::Health, 3, 0.0);
        health.anomaly = None;
        health.detail = Some(json!({"drift": "ok (all: warming up)"}));
        assert!(s.apply(&health));
        assert_eq!(s.drift, "ok");
        assert!(
            !s.apply(&health),
            "an unchanged health record republishes nothing"
        );
        // Between events the score follows the health records.
        health.detail = Some(json!({"drift": "ok (all)", "last_score": 2.5}));
        assert!(s.apply(&health), "a new score between events is published");
        assert_eq!((s.state, s.score), ("idle", 2.5));
        assert!(!s.apply(&health));
        // During an event it does not: the event's own score stands.
        assert!(s.apply(&anomaly(AlertKind::AnomalyStart, 4, 30.0)));
        health.detail = Some(json!({"drift": "ok (all)", "last_score": 1.0}));
        assert!(!s.apply(&health));
        assert_eq!((s.state, s.score), ("alert", 30.0));
        // A drift alert carries its state under `state`.
        let mut drift = health.clone();
        drift.kind = AlertKind::Drift;
        drift.detail = Some(json!({"state": "recalibrate", "previous": "ok"}));
        assert!(s.apply(&drift));
        assert_eq!(s.drift, "recalibrate");
    }

    #[test]
    fn stats_carry_the_frame_rate_since_the_previous_record() {
        let d1 = json!({"uptime_s": 10.0, "counters": {"scored": 10}});
        let (v, prev) = stats_payload(&d1, None);
        assert_eq!(v["fps"], 1.0);
        let d2 = json!({"uptime_s": 30.0, "counters": {"scored": 20}});
        let (v, _) = stats_payload(&d2, prev);
        assert_eq!(v["fps"], 0.5);
    }
}
