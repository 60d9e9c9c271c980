//! The durable outbox: every alert is committed to an embedded SQLite database before any sink
//! sees it, and is marked delivered per sink only when that sink acknowledges it.
//!
//! Why SQLite (through `rusqlite` with the bundled library) rather than `redb`: operators at a
//! site can open `<dir>/outbox.sqlite` with the stock `sqlite3` shell and read the backlog with
//! plain SQL (`SELECT seq, kind, id FROM alerts`, `SELECT * FROM deliveries WHERE delivered = 0`,
//! `SELECT * FROM counters`), while the loop keeps writing (WAL lets readers and the writer run
//! together). SQLite's crash and power-loss behaviour is also about the most tested there is, and
//! the bundled build needs no system library on the boards.
//!
//! Durability: the database runs in WAL mode with `synchronous=FULL`, so a transaction is on
//! stable storage (the WAL is fsynced) before [`Outbox::append`] returns; a `kill -9` or a power
//! cut after that cannot lose the alert, and one before it loses the whole alert, never half of
//! it. [`Outbox::open`] refuses to run if either setting does not take.
//!
//! Delivery is in order per sink: [`Outbox::pending`] never hands out an alert while an older one
//! for the same sink waits for its retry, because consumers (the retained MQTT `anomaly` state in
//! particular) would otherwise see an event end before it started. A sink must therefore fail
//! only for transient reasons: one that can never take an alert should log it and return `Ok`.
//!
//! The store is bounded ([`OutboxConfig::max_alerts`]). When it is full, the oldest alert already
//! delivered to every configured sink makes room first (nothing is lost); failing that, the
//! oldest undelivered `anomaly-update`, then the oldest undelivered `health` alert is dropped,
//! each drop logged and counted. Undelivered `anomaly-start`, `anomaly-end` and `drift` alerts
//! are never dropped: when nothing else is left, [`Outbox::append`] refuses the new alert with
//! [`OutboxError::Full`] (also logged and counted) so the caller knows.
//!
//! Tables (schema version 1): `schema_version`, `alerts` (one row per alert: `id`, `camera`,
//! `seq`, `kind`, times and the alert JSON), `deliveries` (one row per alert and sink:
//! `delivered`, `attempts`, `next_try_ms`, `last_error`), `sequences` (highest seq ever stored per
//! camera), `counters` (drops, refusals, evictions, quarantines) and `quarantine` (rows that could
//! not be read back, set aside so they cannot block the ones behind them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{Alert, AlertKind, Sink};

/// File name of the outbox database inside its directory.
pub const OUTBOX_FILE: &str = "outbox.sqlite";

/// Version of the outbox's table layout; bumped on any incompatible change.
pub const OUTBOX_SCHEMA_VERSION: i64 = 1;

/// How long a write waits for another writer (an operator's `sqlite3` shell) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

const SCHEMA_V1: &str = "
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE alerts (
    n INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    camera TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    time_us INTEGER NOT NULL,
    raised_us INTEGER NOT NULL,
    json TEXT NOT NULL,
    UNIQUE (camera, seq)
);
CREATE INDEX alerts_kind ON alerts (kind, n);
CREATE TABLE deliveries (
    alert_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_ms INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (alert_id, sink)
) WITHOUT ROWID;
CREATE INDEX deliveries_pending ON deliveries (sink) WHERE delivered = 0;
CREATE TABLE sequences (camera TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE counters (name TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE quarantine (
    id TEXT,
    camera TEXT,
    seq INTEGER,
    kind TEXT,
    json TEXT,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
";

/// Undelivered kinds that may be dropped when the store is full, in the order they go.
const DROPPABLE: [AlertKind; 2] = [AlertKind::AnomalyUpdate, AlertKind::Health];

/// Settings of an [`Outbox`].
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxConfig {
    /// Names of the sinks every alert must reach (each gets its own delivery row).
    pub sinks: Vec<String>,
    /// Most alerts kept (delivered or not); see the module docs for what happens when full.
    pub max_alerts: usize,
    /// Wait before the first retry; doubles with every failed attempt.
    pub initial_backoff: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
    /// Most alerts handed to one sink by one [`deliver_pending`] call (bounds the loop's stall).
    pub batch: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            sinks: Vec::new(),
            max_alerts: 20_000,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            batch: 256,
        }
    }
}

/// Why the outbox could not do what was asked. Every variant names the database file.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The directory could not be created or synced.
    #[error("{}: {source}", path.display())]
    Io {
        /// Directory or file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// SQLite failed (not a database, disk full, locked by another writer...).
    #[error("{}: {what}: {source}", path.display())]
    Sqlite {
        /// Database file.
        path: PathBuf,
        /// What the outbox was doing.
        what: String,
        /// Cause.
        #[source]
        source: rusqlite::Error,
    },
    /// WAL mode or `synchronous=FULL` did not take, so commits would not be durable.
    #[error("{}: {detail}", path.display())]
    Durability {
        /// Database file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The file was written by a build with another table layout.
    #[error(
        "{}: outbox schema version {found} is not supported (this build reads version {supported})",
        path.display()
    )]
    Version {
        /// Database file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Version this build reads.
        supported: i64,
    },
    /// A stored alert cannot be read back.
    #[error("{}: stored alert {id}: {detail}", path.display())]
    Corrupt {
        /// Database file.
        path: PathBuf,
        /// The alert's id (as stored).
        id: String,
        /// What is wrong with it.
        detail: String,
    },
    /// An alert with the same id, or the same camera and seq, is already stored.
    #[error("{}: alert {id} (camera {camera}, seq {seq}) is already stored", path.display())]
    Duplicate {
        /// Database file.
        path: PathBuf,
        /// The new alert's id.
        id: String,
        /// Its camera.
        camera: String,
        /// Its seq.
        seq: u64,
    },
    /// The store is full and only alerts that must never be dropped are undelivered.
    #[error(
        "{}: full ({max} alerts) and only anomaly-start/anomaly-end/drift alerts are undelivered; \
         refused {kind} alert {id} (seq {seq}) rather than drop one",
        path.display()
    )]
    Full {
        /// Database file.
        path: PathBuf,
        /// The configured bound.
        max: usize,
        /// The refused alert's id.
        id: String,
        /// Its kind.
        kind: &'static str,
        /// Its seq.
        seq: u64,
    },
    /// A setting or an alert field is out of range.
    #[error("{}: {detail}", path.display())]
    Invalid {
        /// Database file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// [`deliver_pending`] was handed a sink the outbox was not opened with.
    #[error("{}: sink {sink} is not one of the outbox's sinks ({configured})", path.display())]
    UnknownSink {
        /// Database file.
        path: PathBuf,
        /// The sink's name.
        sink: String,
        /// The configured sinks.
        configured: String,
    },
}

/// An alert waiting for one sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The alert, as appended.
    pub alert: Alert,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it may be tried again (ms, the caller's clock); 0 when never tried.
    pub next_try_ms: i64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// What the outbox holds and what it had to give up (counts survive restarts).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboxStats {
    /// Alerts stored, delivered or not.
    pub stored: u64,
    /// The bound on `stored`.
    pub max_alerts: usize,
    /// Undelivered alerts per sink: the configured sinks first (even at 0), then any other sink
    /// that still has rows from an earlier configuration.
    pub pending: Vec<(String, u64)>,
    /// Undelivered alerts dropped to make room, by kind name.
    pub dropped: Vec<(String, u64)>,
    /// Alerts refused because the store was full of undroppable ones, by kind name.
    pub refused: Vec<(String, u64)>,
    /// Fully delivered alerts removed to make room (nothing lost).
    pub evicted_delivered: u64,
    /// Unreadable rows moved to the `quarantine` table.
    pub quarantined: u64,
}

/// What one sink got from one [`deliver_pending`] call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkDelivery {
    /// The sink's name.
    pub sink: String,
    /// Alerts it acknowledged.
    pub delivered: u64,
    /// Failed attempts (at most one per call: a failing sink is left alone until its retry).
    pub failed: u64,
    /// Unreadable rows set aside.
    pub quarantined: u64,
    /// When the failed alert will be retried, after a failure.
    pub next_try_ms: Option<i64>,
}

/// What one [`deliver_pending`] call did, per sink.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryStats {
    /// One entry per sink, in the order given.
    pub sinks: Vec<SinkDelivery>,
}

impl DeliveryStats {
    /// Alerts acknowledged, all sinks together.
    pub fn delivered(&self) -> u64 {
        self.sinks.iter().map(|s| s.delivered).sum()
    }

    /// Failed attempts, all sinks together.
    pub fn failed(&self) -> u64 {
        self.sinks.iter().map(|s| s.failed).sum()
    }
}

/// The durable, bounded alert store with per-sink delivery bookkeeping.
pub struct Outbox {
    conn: Connection,
    path: PathBuf,
    cfg: OutboxConfig,
}

/// Wraps a SQLite error with the file and what was being done (formatted only on failure).
fn sql<'a>(path: &'a Path, what: &'a str) -> impl FnOnce(rusqlite::Error) -> OutboxError + 'a {
    move |source| OutboxError::Sqlite {
        path: path.to_path_buf(),
        what: what.to_string(),
        source,
    }
}

fn to_i64(path: &Path, what: &str, v: u64) -> Result<i64, OutboxError> {
    i64::try_from(v).map_err(|_| OutboxError::Invalid {
        path: path.to_path_buf(),
        detail: format!("{what} {v} does not fit a 64-bit signed integer"),
    })
}

fn bump(conn: &Connection, name: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO counters (name, count) VALUES (?1, 1)
         ON CONFLICT (name) DO UPDATE SET count = count + 1",
        [name],
    )?;
    Ok(())
}

/// Rows still owed to a configured sink keep an alert; rows for sinks dropped from the
/// configuration do not (they would otherwise hold it, and the store, forever).
const UNDELIVERED: &str = "EXISTS (SELECT 1 FROM deliveries d WHERE d.alert_id = alerts.id
     AND d.delivered = 0 AND d.sink IN (SELECT name FROM temp.outbox_sinks))";

impl Outbox {
    /// Opens (or creates) `<dir>/outbox.sqlite`, in WAL mode with `synchronous=FULL`.
    pub fn open(dir: &Path, cfg: OutboxConfig) -> Result<Self, OutboxError> {
        let path = dir.join(OUTBOX_FILE);
        let invalid = |detail: String| OutboxError::Invalid {
            path: path.clone(),
            detail,
        };
        if cfg.max_alerts == 0 || cfg.batch == 0 {
            return Err(invalid("max_alerts and batch must be at least 1".into()));
        }
        if cfg.initial_backoff.is_zero() || cfg.max_backoff < cfg.initial_backoff {
            return Err(invalid(format!(
                "backoff must satisfy 0 < initial ({:?}) <= max ({:?})",
                cfg.initial_backoff, cfg.max_backoff
            )));
        }
        for (i, s) in cfg.sinks.iter().enumerate() {
            if s.is_empty() || cfg.sinks[..i].contains(s) {
                return Err(invalid(format!(
                    "sink names must be non-empty and unique: {:?}",
                    cfg.sinks
                )));
            }
        }
        std::fs::create_dir_all(dir).map_err(|source| OutboxError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let created = !path.exists();
        let mut conn = Connection::open(&path).map_err(sql(&path, "open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql(&path, "set busy timeout"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sql(&path, "set WAL mode"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql(&path, "set synchronous=FULL"))?;
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .map_err(sql(&path, "read synchronous"))?;
        if !mode.eq_ignore_ascii_case("wal") || sync != 2 {
            return Err(OutboxError::Durability {
                path,
                detail: format!(
                    "journal_mode is {mode} and synchronous is {sync} (need wal and 2 = FULL); \
                     the file system may not support WAL"
                ),
            });
        }
        Self::ensure_schema(&mut conn, &path)?;
        if created {
            // A new file's directory entry is only durable once the directory is synced.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| OutboxError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        // The sink list lives in a temporary table (in memory, not a file on the SD card) so
        // that SQL can tell rows owed to configured sinks from leftovers of older settings.
        conn.execute_batch(
            "PRAGMA temp_store = MEMORY; CREATE TEMP TABLE outbox_sinks (name TEXT PRIMARY KEY)",
        )
        .map_err(sql(&path, "create the sink list"))?;
        for s in &cfg.sinks {
            conn.execute("INSERT INTO temp.outbox_sinks (name) VALUES (?1)", [s])
                .map_err(sql(&path, "fill the sink list"))?;
        }
        let outbox = Self { conn, path, cfg };
        let stats = outbox.stats()?;
        for (sink, n) in stats.pending.iter().skip(outbox.cfg.sinks.len()) {
            log::warn!(
                "outbox {}: {n} alerts are still pending for sink {sink}, which is no longer \
                 configured; they no longer hold their alerts from pruning",
                outbox.path.display()
            );
        }
        log::info!(
            "outbox {}: {} alerts stored (max {}), pending {:?}",
            outbox.path.display(),
            stats.stored,
            stats.max_alerts,
            stats.pending
        );
        Ok(outbox)
    }

    fn ensure_schema(conn: &mut Connection, path: &Path) -> Result<(), OutboxError> {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, "begin"))?;
        let tables: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
                .map_err(sql(path, "list tables"))?;
            let rows = stmt
                .query_map([], |r| r.get(0))
                .map_err(sql(path, "list tables"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql(path, "list tables"))?
        };
        if tables.is_empty() {
            tx.execute_batch(SCHEMA_V1)
                .map_err(sql(path, "create tables"))?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [OUTBOX_SCHEMA_VERSION],
            )
            .map_err(sql(path, "write the schema version"))?;
        } else if !tables.iter().any(|t| t == "schema_version") {
            return Err(OutboxError::Invalid {
                path: path.to_path_buf(),
                detail: format!("not an outbox (tables {tables:?}, no schema_version)"),
            });
        } else {
            let found: i64 = tx
                .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
                .map_err(sql(path, "read the schema version"))?;
            match found {
                1 => {}
                _ => {
                    return Err(OutboxError::Version {
                        path: path.to_path_buf(),
                        found,
                        supported: OUTBOX_SCHEMA_VERSION,
                    })
                }
            }
        }
        tx.commit().map_err(sql(path, "commit the schema"))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &OutboxConfig {
        &self.cfg
    }

    /// Stores `alert` and a pending delivery for every configured sink, in one durable
    /// transaction; makes room first when full (see the module docs).
    pub fn append(&mut self, alert: &Alert) -> Result<(), OutboxError> {
        let path = &self.path;
        let seq = to_i64(path, "seq", alert.seq)?;
        let json = serde_json::to_string(alert).map_err(|e| OutboxError::Invalid {
            path: path.clone(),
            detail: format!("alert {} does not encode as JSON: {e}", alert.id),
        })?;
        let what = &format!("append alert {} (seq {})", alert.id, alert.seq);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, what))?;
        let clash: Option<i64> = tx
            .query_row(
                "SELECT n FROM alerts WHERE id = ?1 OR (camera = ?2 AND seq = ?3) LIMIT 1",
                params![alert.id, alert.camera, seq],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(path, what))?;
        if clash.is_some() {
            return Err(OutboxError::Duplicate {
                path: path.clone(),
                id: alert.id.clone(),
                camera: alert.camera.clone(),
                seq: alert.seq,
            });
        }
        if !make_room(&tx, path, self.cfg.max_alerts, alert).map_err(sql(path, what))? {
            drop(tx);
            let kind = alert.kind.name();
            log::warn!(
                "outbox {}: full ({} alerts, only start/end/drift undelivered); refused {kind} \
                 alert {} (seq {})",
                path.display(),
                self.cfg.max_alerts,
                alert.id,
                alert.seq
            );
            bump(&self.conn, &format!("refused {kind}")).map_err(sql(path, "count a refusal"))?;
            return Err(OutboxError::Full {
                path: path.clone(),
                max: self.cfg.max_alerts,
                id: alert.id.clone(),
                kind,
                seq: alert.seq,
            });
        }
        tx.execute(
            "INSERT INTO alerts (id, camera, seq, kind, time_us, raised_us, json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                alert.id,
                alert.camera,
                seq,
                alert.kind.name(),
                alert.time_us,
                alert.raised_us,
                json
            ],
        )
        .map_err(sql(path, what))?;
        for sink in &self.cfg.sinks {
            tx.execute(
                "INSERT INTO deliveries (alert_id, sink) VALUES (?1, ?2)",
                params![alert.id, sink],
            )
            .map_err(sql(path, what))?;
        }
        tx.execute(
            "INSERT INTO sequences (camera, last_seq) VALUES (?1, ?2)
             ON CONFLICT (camera) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
            params![alert.camera, seq],
        )
        .map_err(sql(path, what))?;
        tx.commit().map_err(sql(path, what))?;
        log::debug!(
            "outbox {}: stored {} #{} ({})",
            path.display(),
            alert.kind.name(),
            alert.seq,
            alert.id
        );
        Ok(())
    }

    /// Alerts not yet delivered to `sink`, oldest (lowest seq) first, up to `limit`, stopping
    /// at the first one whose retry time has not come so that delivery stays in order.
    pub fn pending(
        &self,
        sink: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<Pending>, OutboxError> {
        let path = &self.path;
        let what = &format!("read alerts pending for sink {sink}");
        // A retry further ahead than the longest backoff means the clock went back (a board
        // without a real-time clock rebooting before NTP); such rows are due rather than stuck.
        let skew_ms = now_ms.saturating_add(max_backoff_ms(&self.cfg));
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT a.id, a.seq, a.json, d.attempts, d.next_try_ms, d.last_error
                 FROM deliveries d JOIN alerts a ON a.id = d.alert_id
                 WHERE d.sink = ?1 AND d.delivered = 0
                 ORDER BY a.seq, a.n LIMIT ?2",
            )
            .map_err(sql(path, what))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![sink, limit]).map_err(sql(path, what))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sql(path, what))? {
            let id: String = row.get(0).map_err(sql(path, what))?;
            let corrupt = |detail: String| OutboxError::Corrupt {
                path: path.clone(),
                id: id.clone(),
                detail,
            };
            let seq: i64 = row.get(1).map_err(|e| corrupt(format!("seq: {e}")))?;
            let json: String = row.get(2).map_err(|e| corrupt(format!("json: {e}")))?;
            let attempts: u32 = row.get(3).map_err(|e| corrupt(format!("attempts: {e}")))?;
            let next_try_ms: i64 = row
                .get(4)
                .map_err(|e| corrupt(format!("next_try_ms: {e}")))?;
            let last_error: Option<String> = row
                .get(5)
                .map_err(|e| corrupt(format!("last_error: {e}")))?;
            if next_try_ms > now_ms && next_try_ms <= skew_ms {
                break;
            }
            let alert: Alert = serde_json::from_str(&json)
                .map_err(|e| corrupt(format!("JSON does not parse as an alert: {e}")))?;
            if alert.id != id || i64::try_from(alert.seq).ok() != Some(seq) {
                return Err(corrupt(format!(
                    "JSON holds alert {} seq {} but the row says seq {seq}",
                    alert.id, alert.seq
                )));
            }
            out.push(Pending {
                alert,
                attempts,
                next_try_ms,
                last_error,
            });
        }
        Ok(out)
    }

    /// Marks `id` delivered to `sink`; false when it was not pending there (already
    /// acknowledged, or dropped meanwhile).
    pub fn ack(&mut self, sink: &str, id: &str) -> Result<bool, OutboxError> {
        Ok(self.ack_all(sink, &[id])? == 1)
    }

    /// Marks several alerts delivered to `sink` in one transaction; returns how many were
    /// pending.
    pub fn ack_all(&mut self, sink: &str, ids: &[&str]) -> Result<usize, OutboxError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let path = &self.path;
        let what = &format!("acknowledge {} alerts for sink {sink}", ids.len());
        let tx = self.conn.transaction().map_err(sql(path, what))?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE deliveries SET delivered = 1, last_error = NULL
                     WHERE alert_id = ?1 AND sink = ?2 AND delivered = 0",
                )
                .map_err(sql(path, what))?;
            for id in ids {
                n += stmt.execute(params![id, sink]).map_err(sql(path, what))?;
            }
        }
        tx.commit().map_err(sql(path, what))?;
        Ok(n)
    }

    /// Records a failed attempt to deliver `id` to `sink`: attempts + 1, next try after a
    /// backoff doubling from `initial_backoff` up to `max_backoff`. Returns the next try time,
    /// or `None` when the alert was not pending for that sink.
    pub fn fail(
        &mut self,
        sink: &str,
        id: &str,
        now_ms: i64,
        reason: &str,
    ) -> Result<Option<i64>, OutboxError> {
        let path = &self.path;
        let what = &format!("record a failed delivery of {id} to sink {sink}");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, what))?;
        let attempts: Option<i64> = tx
            .query_row(
                "SELECT attempts FROM deliveries WHERE alert_id = ?1 AND sink = ?2 AND delivered = 0",
                params![id, sink],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(path, what))?;
        let Some(attempts) = attempts else {
            return Ok(None);
        };
        let next = now_ms.saturating_add(backoff_ms(&self.cfg, attempts));
        tx.execute(
            "UPDATE deliveries SET attempts = attempts + 1, next_try_ms = ?1, last_error = ?2
             WHERE alert_id = ?3 AND sink = ?4",
            params![next, reason, id, sink],
        )
        .map_err(sql(path, what))?;
        tx.commit().map_err(sql(path, what))?;
        Ok(Some(next))
    }

    /// Makes every alert still owed to `sink` due now (the sink reconnected: waiting out the
    /// backoff would only delay the backlog). Returns how many are owed.
    pub fn retry_now(&mut self, sink: &str) -> Result<usize, OutboxError> {
        self.conn
            .execute(
                "UPDATE deliveries SET next_try_ms = 0 WHERE sink = ?1 AND delivered = 0",
                [sink],
            )
            .map_err(sql(
                &self.path,
                &format!("reset the retry times of sink {sink}"),
            ))
    }

    /// Deletes alerts delivered to every configured sink that were raised more than
    /// `retention` before `now_ms`; returns how many went.
    pub fn prune(&mut self, now_ms: i64, retention: Duration) -> Result<usize, OutboxError> {
        let path = &self.path;
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff_us = now_ms.saturating_sub(retention_ms).saturating_mul(1000);
        let tx = self.conn.transaction().map_err(sql(path, "prune"))?;
        let n = tx
            .execute(
                &format!("DELETE FROM alerts WHERE raised_us < ?1 AND NOT {UNDELIVERED}"),
                [cutoff_us],
            )
            .map_err(sql(path, "prune"))?;
        tx.execute(
            "DELETE FROM deliveries WHERE alert_id NOT IN (SELECT id FROM alerts)",
            [],
        )
        .map_err(sql(path, "prune"))?;
        tx.commit().map_err(sql(path, "prune"))?;
        if n > 0 {
            log::debug!("outbox {}: pruned {n} delivered alerts", path.display());
        }
        Ok(n)
    }

    /// Moves an unreadable alert to the `quarantine` table (kept for the operator) so that it
    /// stops blocking the alerts behind it; returns false when no such alert is stored.
    pub fn quarantine(&mut self, id: &str, reason: &str, now_ms: i64) -> Result<bool, OutboxError> {
        let path = &self.path;
        let what = &format!("quarantine alert {id}");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, what))?;
        let n = tx
            .execute(
                "INSERT INTO quarantine (id, camera, seq, kind, json, reason, at_ms)
                 SELECT id, camera, seq, kind, json, ?2, ?3 FROM alerts WHERE id = ?1",
                params![id, reason, now_ms],
            )
            .map_err(sql(path, what))?;
        if n == 0 {
            return Ok(false);
        }
        tx.execute("DELETE FROM deliveries WHERE alert_id = ?1", [id])
            .map_err(sql(path, what))?;
        tx.execute("DELETE FROM alerts WHERE id = ?1", [id])
            .map_err(sql(path, what))?;
        bump(&tx, "quarantined").map_err(sql(path, what))?;
        tx.commit().map_err(sql(path, what))?;
        log::error!(
            "outbox {}: alert {id} is unreadable ({reason}); moved to the quarantine table",
            path.display()
        );
        Ok(true)
    }

    /// The next seq for `camera`: one more than the highest ever stored (pruned and dropped
    /// alerts included), 1 for a new camera; numbering survives restarts without other state.
    pub fn next_seq(&self, camera: &str) -> Result<u64, OutboxError> {
        let path = &self.path;
        let last: Option<i64> = self
            .conn
            .query_row(
                "SELECT max(s) FROM (
                     SELECT last_seq AS s FROM sequences WHERE camera = ?1
                     UNION ALL SELECT max(seq) FROM alerts WHERE camera = ?1)",
                [camera],
                |r| r.get(0),
            )
            .map_err(sql(path, &format!("read the last seq of camera {camera}")))?;
        let last = u64::try_from(last.unwrap_or(0)).map_err(|_| OutboxError::Corrupt {
            path: path.clone(),
            id: format!("(sequence of camera {camera})"),
            detail: format!("negative seq {}", last.unwrap_or(0)),
        })?;
        Ok(last + 1)
    }

    /// Counts: stored, pending per sink, dropped and refused by kind, evictions, quarantines.
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let path = &self.path;
        let what = "read statistics";
        let stored: i64 = self
            .conn
            .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))
            .map_err(sql(path, what))?;
        let mut pending: Vec<(String, u64)> =
            self.cfg.sinks.iter().map(|s| (s.clone(), 0)).collect();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT d.sink, count(*) FROM deliveries d JOIN alerts a ON a.id = d.alert_id
                 WHERE d.delivered = 0 GROUP BY d.sink ORDER BY d.sink",
            )
            .map_err(sql(path, what))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(sql(path, what))?;
        for row in rows {
            let (sink, n) = row.map_err(sql(path, what))?;
            let n = n.max(0) as u64;
            match pending.iter_mut().find(|(s, _)| *s == sink) {
                Some((_, c)) => *c = n,
                None => pending.push((sink, n)),
            }
        }
        let mut stats = OutboxStats {
            stored: stored.max(0) as u64,
            max_alerts: self.cfg.max_alerts,
            pending,
            ..Default::default()
        };
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, count FROM counters ORDER BY name")
            .map_err(sql(path, what))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(sql(path, what))?;
        for row in rows {
            let (name, n) = row.map_err(sql(path, what))?;
            let n = n.max(0) as u64;
            if let Some(kind) = name.strip_prefix("dropped ") {
                stats.dropped.push((kind.to_string(), n));
            } else if let Some(kind) = name.strip_prefix("refused ") {
                stats.refused.push((kind.to_string(), n));
            } else if name == "evicted delivered" {
                stats.evicted_delivered = n;
            } else if name == "quarantined" {
                stats.quarantined = n;
            }
        }
        Ok(stats)
    }
}

/// One sink's backlog, as [`inspect`] reads it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SinkBacklog {
    /// Sink name.
    pub sink: String,
    /// Alerts delivered and still kept.
    pub delivered: u64,
    /// Alerts not yet delivered.
    pub pending: u64,
    /// Sequence number and camera of the oldest undelivered alert.
    pub oldest_pending: Option<(String, u64)>,
    /// Most attempts spent on one undelivered alert.
    pub max_attempts: u64,
    /// The latest error recorded for an undelivered alert.
    pub last_error: Option<String>,
}

/// What an outbox holds, read without changing anything (`edge-cli listen --outbox`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OutboxReport {
    /// Database file.
    pub path: PathBuf,
    /// Alerts stored.
    pub stored: u64,
    /// Highest sequence number stored per camera.
    pub last_seq: Vec<(String, u64)>,
    /// Per sink.
    pub sinks: Vec<SinkBacklog>,
    /// Drops, refusals, evictions and quarantines ever counted.
    pub counters: Vec<(String, u64)>,
}

/// Reads an outbox's state read-only: safe while `edge-cli run` writes it, and it never
/// prunes, migrates or creates anything.
pub fn inspect(dir: &Path) -> Result<OutboxReport, OutboxError> {
    let path = dir.join(OUTBOX_FILE);
    if !path.is_file() {
        return Err(OutboxError::Invalid {
            path,
            detail: "no outbox database here (is this the data directory's outbox/ folder?)".into(),
        });
    }
    let what = "inspect (read-only)";
    let conn = Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql(&path, what))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql(&path, what))?;
    let version: i64 = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .map_err(sql(&path, what))?;
    if version != OUTBOX_SCHEMA_VERSION {
        return Err(OutboxError::Invalid {
            path,
            detail: format!(
                "table layout version {version}, this edge-cli reads {OUTBOX_SCHEMA_VERSION}"
            ),
        });
    }
    let u = |n: i64| n.max(0) as u64;
    let stored: i64 = conn
        .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))
        .map_err(sql(&path, what))?;
    let pairs = |q: &str| -> Result<Vec<(String, u64)>, OutboxError> {
        let mut stmt = conn.prepare(q).map_err(sql(&path, what))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(sql(&path, what))?;
        rows.map(|r| r.map(|(k, n)| (k, u(n))).map_err(sql(&path, what)))
            .collect()
    };
    let last_seq = pairs("SELECT camera, last_seq FROM sequences ORDER BY camera")?;
    let counters = pairs("SELECT name, count FROM counters ORDER BY name")?;
    let mut sinks = Vec::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT sink, sum(delivered = 1), sum(delivered = 0),
                        coalesce(max(CASE WHEN delivered = 0 THEN attempts END), 0)
                 FROM deliveries GROUP BY sink ORDER BY sink",
            )
            .map_err(sql(&path, what))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(sql(&path, what))?;
        for row in rows {
            let (sink, delivered, pending, attempts) = row.map_err(sql(&path, what))?;
            sinks.push(SinkBacklog {
                sink,
                delivered: u(delivered),
                pending: u(pending),
                oldest_pending: None,
                max_attempts: u(attempts),
                last_error: None,
            });
        }
    }
    for s in &mut sinks {
        if s.pending == 0 {
            continue;
        }
        s.oldest_pending = conn
            .query_row(
                "SELECT a.camera, a.seq FROM deliveries d JOIN alerts a ON a.id = d.alert_id
                 WHERE d.sink = ?1 AND d.delivered = 0 ORDER BY a.n LIMIT 1",
                [&s.sink],
                |r| Ok((r.get::<_, String>(0)?, u(r.get::<_, i64>(1)?))),
            )
            .optional()
            .map_err(sql(&path, what))?;
        s.last_error = conn
            .query_row(
                "SELECT d.last_error FROM deliveries d JOIN alerts a ON a.id = d.alert_id
                 WHERE d.sink = ?1 AND d.delivered = 0 AND d.last_error IS NOT NULL
                 ORDER BY a.n DESC LIMIT 1",
                [&s.sink],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(sql(&path, what))?;
    }
    Ok(OutboxReport {
        path,
        stored: u(stored),
        last_seq,
        sinks,
        counters,
    })
}

/// The wait after the `(failed_before + 1)`-th failure.
fn backoff_ms(cfg: &OutboxConfig, failed_before: i64) -> i64 {
    let init = i64::try_from(cfg.initial_backoff.as_millis()).unwrap_or(i64::MAX);
    let shift = failed_before.clamp(0, 62) as u32;
    init.saturating_mul(1i64 << shift).min(max_backoff_ms(cfg))
}

fn max_backoff_ms(cfg: &OutboxConfig) -> i64 {
    i64::try_from(cfg.max_backoff.as_millis()).unwrap_or(i64::MAX)
}

/// Frees one slot at a time until `alert` fits; false when only undroppable alerts are left.
fn make_room(tx: &Connection, path: &Path, max: usize, alert: &Alert) -> rusqlite::Result<bool> {
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    loop {
        let stored: i64 = tx.query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))?;
        if stored < max {
            return Ok(true);
        }
        let delivered: Option<(i64, String)> = tx
            .query_row(
                &format!("SELECT n, id FROM alerts WHERE NOT {UNDELIVERED} ORDER BY n LIMIT 1"),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((n, id)) = delivered {
            remove(tx, n, &id)?;
            bump(tx, "evicted delivered")?;
            log::debug!(
                "outbox {}: full; removed delivered alert {id}",
                path.display()
            );
            continue;
        }
        let mut victim = None;
        for kind in DROPPABLE {
            victim = tx
                .query_row(
                    "SELECT n, id, seq FROM alerts WHERE kind = ?1 ORDER BY n LIMIT 1",
                    [kind.name()],
                    |r| {
                        Ok((
                            kind,
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    },
                )
                .optional()?;
            if victim.is_some() {
                break;
            }
        }
        let Some((kind, n, id, seq)) = victim else {
            return Ok(false);
        };
        remove(tx, n, &id)?;
        bump(tx, &format!("dropped {}", kind.name()))?;
        log::warn!(
            "outbox {}: full ({max} alerts); dropped undelivered {} alert {id} (seq {seq}) to \
             store {} alert {} (seq {})",
            path.display(),
            kind.name(),
            alert.kind.name(),
            alert.id,
            alert.seq
        );
    }
}

fn remove(tx: &Connection, n: i64, id: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM deliveries WHERE alert_id = ?1", [id])?;
    tx.execute("DELETE FROM alerts WHERE n = ?1", [n])?;
    Ok(())
}

/// Hands every due alert to each sink in order, acknowledging what a sink took and recording
/// a failure (with backoff) at the first alert it refused; that sink is then left alone until
/// the retry time, or until it reports [`Sink::reconnected`]. Unreadable rows are quarantined so they cannot block the rest.
pub fn deliver_pending(
    outbox: &mut Outbox,
    sinks: &mut [Box<dyn Sink>],
    now_ms: i64,
) -> Result<DeliveryStats, OutboxError> {
    let mut stats = DeliveryStats::default();
    for sink in sinks.iter_mut() {
        let name = sink.name().to_string();
        if !outbox.cfg.sinks.contains(&name) {
            return Err(OutboxError::UnknownSink {
                path: outbox.path.clone(),
                sink: name,
                configured: outbox.cfg.sinks.join(", "),
            });
        }
        // A sink that reconnected gets its whole backlog now, whatever its retry times say.
        if sink.reconnected() {
            let n = outbox.retry_now(&name)?;
            if n > 0 {
                log::info!("outbox: sink {name} is back: re-sending {n} undelivered alerts");
            }
        }
        let mut got = SinkDelivery {
            sink: name.clone(),
            ..Default::default()
        };
        let mut budget = outbox.cfg.batch;
        let mut last_quarantined: Option<String> = None;
        while budget > 0 {
            let batch = match outbox.pending(&name, now_ms, budget) {
                Ok(b) => b,
                Err(OutboxError::Corrupt { id, detail, .. })
                    if last_quarantined.as_deref() != Some(id.as_str()) =>
                {
                    if !outbox.quarantine(&id, &detail, now_ms)? {
                        return Err(OutboxError::Corrupt {
                            path: outbox.path.clone(),
                            id,
                            detail,
                        });
                    }
                    got.quarantined += 1;
                    budget -= 1;
                    last_quarantined = Some(id);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let asked = budget;
            budget -= batch.len();
            let mut acked: Vec<&str> = Vec::with_capacity(batch.len());
            let mut refused = None;
            for p in &batch {
                match sink.deliver(&p.alert) {
                    Ok(()) => acked.push(&p.alert.id),
                    Err(e) => {
                        refused = Some((p, e));
                        break;
                    }
                }
            }
            got.delivered += outbox.ack_all(&name, &acked)? as u64;
            if let Some((p, e)) = refused {
                let next = outbox.fail(&name, &p.alert.id, now_ms, &e.to_string())?;
                got.failed += 1;
                got.next_try_ms = next;
                log::warn!(
                    "outbox: alert {} (seq {}) to sink {name} failed (attempt {}): {e}; \
                     retry at {} ms",
                    p.alert.id,
                    p.alert.seq,
                    p.attempts + 1,
                    next.unwrap_or(now_ms)
                );
                break;
            }
            if batch.len() < asked {
                break;
            }
        }
        stats.sinks.push(got);
    }
    Ok(stats)
}
