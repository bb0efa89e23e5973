//! The audit log: one JSON line per event — create, mount, unmount, remove, renew, rotate,
//! revoke, error — with the volume, mount ID, container ID where known, token accessor and
//! lease IDs. Never a value, never a token: accessors and lease IDs identify without granting.
//!
//! Written to `audit_log` (appended, mode 0600) or, when it is not set, to stderr.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

/// One event. Build it with [`Event::new`] and the `with_*` setters.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Event {
    pub time: String,
    pub event: &'static str,
    pub volume: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accessor: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lease_ids: Vec<String>,
    /// What happened, in words (an error's text; never a value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    pub fn new(event: &'static str, volume: &str) -> Event {
        Event {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            event,
            volume: volume.to_owned(),
            ..Event::default()
        }
    }

    pub fn mount(mut self, id: &str) -> Event {
        self.mount_id = Some(id.to_owned());
        self
    }

    pub fn accessor(mut self, accessor: &str) -> Event {
        self.accessor = (!accessor.is_empty()).then(|| accessor.to_owned());
        self
    }

    pub fn leases<'a>(mut self, ids: impl IntoIterator<Item = &'a str>) -> Event {
        self.lease_ids = ids.into_iter().map(str::to_owned).collect();
        self
    }

    pub fn container(mut self, id: &str) -> Event {
        self.container_id = Some(id.to_owned());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Event {
        self.detail = Some(detail.into());
        self
    }
}

#[derive(Debug)]
enum Sink {
    File { path: PathBuf, file: std::fs::File },
    Stderr,
    Memory(Vec<String>),
}

/// Where events go.
#[derive(Debug)]
pub struct Audit {
    sink: Mutex<Sink>,
}

impl Audit {
    /// To `path` (created 0600, appended), or to stderr.
    pub fn open(path: Option<&Path>) -> std::io::Result<Audit> {
        let sink = match path {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let file =
                    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
                Sink::File { path: path.to_owned(), file }
            }
            None => Sink::Stderr,
        };
        Ok(Audit { sink: Mutex::new(sink) })
    }

    /// Keeps the lines in memory (unit tests).
    pub fn memory() -> Audit {
        Audit { sink: Mutex::new(Sink::Memory(Vec::new())) }
    }

    /// The lines kept by [`Audit::memory`].
    pub fn lines(&self) -> Vec<String> {
        match &*self.sink.lock().unwrap() {
            Sink::Memory(lines) => lines.clone(),
            _ => Vec::new(),
        }
    }

    pub fn record(&self, event: Event) {
        let line = serde_json::to_string(&event).expect("events serialize");
        let mut sink = self.sink.lock().unwrap();
        let result = match &mut *sink {
            Sink::File { file, .. } => writeln!(file, "{line}"),
            Sink::Stderr => writeln!(std::io::stderr(), "{line}"),
            Sink::Memory(lines) => {
                lines.push(line);
                Ok(())
            }
        };
        if let (Err(e), Sink::File { path, .. }) = (result, &*sink) {
            tracing::error!(path = %path.display(), error = %e, "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_json_line_per_event_with_only_what_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.log");
        let audit = Audit::open(Some(&path)).unwrap();
        audit.record(
            Event::new("mount", "app").mount("abc").accessor("acc1").leases(["db/creds/1"]),
        );
        audit.record(Event::new("remove", "app"));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["event"], "mount");
        assert_eq!(lines[0]["lease_ids"][0], "db/creds/1");
        assert_eq!(lines[1].as_object().unwrap().len(), 3, "time, event, volume: {}", lines[1]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
