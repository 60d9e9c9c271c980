//! The stdout sink: one line per alert, human-readable or JSON (the demo, and piping into other
//! tools).

use std::io::Write;

use super::{Alert, AlertKind, Sink, SinkError};

/// Writes alerts to a writer (stdout by default), one per line.
pub struct StdoutSink<W: Write + Send = std::io::Stdout> {
    out: W,
    json: bool,
}

impl StdoutSink {
    /// Alerts to stdout; `json` prints the alert JSON instead of a summary.
    pub fn new(json: bool) -> Self {
        Self::with_writer(std::io::stdout(), json)
    }
}

impl<W: Write + Send> StdoutSink<W> {
    /// Alerts to any writer.
    pub fn with_writer(out: W, json: bool) -> Self {
        Self { out, json }
    }

    /// The writer (tests).
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> Sink for StdoutSink<W> {
    fn name(&self) -> &str {
        "stdout"
    }

    fn deliver(&mut self, alert: &Alert) -> Result<(), SinkError> {
        let err = |e: std::io::Error| SinkError {
            sink: "stdout".into(),
            detail: e.to_string(),
        };
        if self.json {
            let line = serde_json::to_string(alert).map_err(|e| SinkError {
                sink: "stdout".into(),
                detail: e.to_string(),
            })?;
            writeln!(self.out, "{line}").map_err(err)?;
        } else {
            let tag = match alert.kind {
                AlertKind::Health => "HEALTH",
                AlertKind::Drift => "DRIFT",
                _ => "ALERT",
            };
            writeln!(self.out, "{tag} {}", alert.summary()).map_err(err)?;
        }
        self.out.flush().map_err(err)
    }
}
