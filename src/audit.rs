//! The audit log: one JSON line per event, of twelve kinds ([`Kind`]) — create, mount,
//! unmount, remove, renew, rotate, revoke, container, die, signal, secret, error — with the
//! volume, mount ID, container ID where known, token accessor and lease IDs. Never a value, never a token: accessors and lease IDs identify without granting.
//!
//! Written to `audit_log` (appended, mode 0600) or, when it is not set, to stderr.
//!
//! Each line has a sequence number (`seq`, from 1 at each start of the plugin) and a time,
//! both taken under the writer's lock as the line is written: the file's order, the numbers
//! and the times agree (a clock stepped back is held at the last time written).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

/// What an event is, written as its `event` (the lowercase name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A volume created.
    Create,
    /// A mount made: its token issued and its secrets written.
    Mount,
    /// A mount ended at its Unmount (or found stale by the sweep).
    Unmount,
    /// A volume removed.
    Remove,
    /// A token or its leases renewed.
    Renew,
    /// A mount given a fresh token and fresh secrets.
    Rotate,
    /// A token or a certificate revoked.
    Revoke,
    /// The container a mount was made for, found.
    Container,
    /// A mount's container died: its tokens revoked at once.
    Die,
    /// A container signalled after its secrets changed.
    Signal,
    /// A swarm secret given to a task.
    Secret,
    /// Something failed (in `detail`).
    Error,
}

impl Kind {
    /// Every kind, in the order of the reference's list.
    pub const ALL: [Kind; 12] = [
        Kind::Create,
        Kind::Mount,
        Kind::Unmount,
        Kind::Remove,
        Kind::Renew,
        Kind::Rotate,
        Kind::Revoke,
        Kind::Container,
        Kind::Die,
        Kind::Signal,
        Kind::Secret,
        Kind::Error,
    ];
}

/// One event. Build it with [`Event::new`] and the setters; its time is taken when it is
/// recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: Kind,
    pub volume: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accessor: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lease_ids: Vec<String>,
    /// What happened, in words (an error's text; never a value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    pub fn new(event: Kind, volume: &str) -> Event {
        Event {
            event,
            volume: volume.to_owned(),
            mount_id: None,
            container_id: None,
            container_name: None,
            accessor: None,
            lease_ids: Vec::new(),
            detail: None,
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

    /// The container that holds the mount, when it is known.
    pub fn held_by(mut self, container: Option<&crate::state::Container>) -> Event {
        if let Some(c) = container {
            self.container_id = Some(c.id.clone());
            self.container_name = (!c.name.is_empty()).then(|| c.name.clone());
        }
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

/// An event as written: numbered and timed by the writer.
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    time: String,
    #[serde(flatten)]
    event: &'a Event,
}

#[derive(Debug)]
struct Writer {
    sink: Sink,
    /// The number of the last line written.
    seq: u64,
    /// The time of the last line written.
    last: SystemTime,
}

/// Where events go.
#[derive(Debug)]
pub struct Audit {
    writer: Mutex<Writer>,
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
        Ok(Audit::to(sink))
    }

    fn to(sink: Sink) -> Audit {
        Audit { writer: Mutex::new(Writer { sink, seq: 0, last: SystemTime::UNIX_EPOCH }) }
    }

    /// Keeps the lines in memory (unit tests).
    pub fn memory() -> Audit {
        Audit::to(Sink::Memory(Vec::new()))
    }

    /// The lines kept by [`Audit::memory`].
    pub fn lines(&self) -> Vec<String> {
        match &self.writer.lock().unwrap().sink {
            Sink::Memory(lines) => lines.clone(),
            _ => Vec::new(),
        }
    }

    /// Writes `event` as the next line, numbered and timed now.
    pub fn record(&self, event: Event) {
        let mut writer = self.writer.lock().unwrap();
        let now = SystemTime::now().max(writer.last);
        writer.last = now;
        writer.seq += 1;
        let time = humantime::format_rfc3339_micros(now).to_string();
        let line = Line { seq: writer.seq, time, event: &event };
        let line = serde_json::to_string(&line).expect("events serialize");
        // One write per line, newline included: nothing else written to the same file (the
        // log, on stderr) lands inside it.
        let whole = || format!("{line}\n").into_bytes();
        let sink = &mut writer.sink;
        let result = match sink {
            Sink::File { file, .. } => file.write_all(&whole()),
            Sink::Stderr => std::io::stderr().write_all(&whole()),
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
            Event::new(Kind::Mount, "app").mount("abc").accessor("acc1").leases(["db/creds/1"]),
        );
        audit.record(Event::new(Kind::Remove, "app"));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["event"], "mount");
        assert_eq!(lines[0]["lease_ids"][0], "db/creds/1");
        assert_eq!(
            lines[1].as_object().unwrap().len(),
            4,
            "seq, time, event, volume: {}",
            lines[1]
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    fn parsed(audit: &Audit) -> Vec<serde_json::Value> {
        audit.lines().iter().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn time_of(line: &serde_json::Value) -> SystemTime {
        humantime::parse_rfc3339(line["time"].as_str().unwrap()).unwrap()
    }

    #[test]
    fn an_event_built_first_but_recorded_last_is_timed_last() {
        let audit = Audit::memory();
        let unmount = Event::new(Kind::Unmount, "app").mount("m");
        std::thread::sleep(std::time::Duration::from_millis(5));
        audit.record(Event::new(Kind::Revoke, "app").mount("m"));
        audit.record(unmount);
        let lines = parsed(&audit);
        assert_eq!(lines[0]["event"], "revoke");
        assert_eq!((lines[0]["seq"].as_u64(), lines[1]["seq"].as_u64()), (Some(1), Some(2)));
        assert!(time_of(&lines[0]) <= time_of(&lines[1]), "{lines:?}");
    }

    #[test]
    fn lines_from_many_threads_are_numbered_and_timed_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = std::sync::Arc::new(Audit::open(Some(&path)).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let audit = audit.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        audit.record(
                            Event::new(Kind::Renew, &format!("v{t}")).mount(&i.to_string()),
                        );
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 1600);
        for (n, pair) in lines.windows(2).enumerate() {
            assert_eq!(pair[0]["seq"].as_u64(), Some(n as u64 + 1));
            assert_eq!(pair[1]["seq"].as_u64(), Some(n as u64 + 2));
            assert!(time_of(&pair[0]) <= time_of(&pair[1]), "{pair:?}");
        }
    }

    #[test]
    fn a_clock_stepped_back_holds_the_last_time() {
        let audit = Audit::memory();
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
        let ahead = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(now.as_secs() + 3600);
        audit.writer.lock().unwrap().last = ahead;
        audit.record(Event::new(Kind::Renew, "app"));
        assert_eq!(time_of(&parsed(&audit)[0]), ahead);
    }

    #[test]
    fn every_kind_is_written_as_its_name_and_named_in_the_reference() {
        let names: Vec<String> =
            Kind::ALL.iter().map(|k| serde_json::to_value(k).unwrap().to_string()).collect();
        let expected = [
            "create",
            "mount",
            "unmount",
            "remove",
            "renew",
            "rotate",
            "revoke",
            "container",
            "die",
            "signal",
            "secret",
            "error",
        ];
        assert_eq!(names, expected.map(|n| format!("\"{n}\"")));
        let reference = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference.md"),
        )
        .unwrap();
        let (_, audit) = reference.split_once("## Audit log").unwrap();
        for name in expected {
            assert!(audit.contains(&format!("`{name}`")), "docs/reference.md: `{name}` unlisted");
        }
    }

    #[test]
    fn the_container_is_named_when_known() {
        let audit = Audit::memory();
        let c = crate::state::Container { id: "c0ffee".into(), name: "web-1".into() };
        audit.record(Event::new(Kind::Container, "app").mount("m").held_by(Some(&c)));
        audit.record(Event::new(Kind::Renew, "app").mount("m").held_by(None));
        let lines = parsed(&audit);
        assert_eq!(
            (lines[0]["container_id"].as_str(), lines[0]["container_name"].as_str()),
            (Some("c0ffee"), Some("web-1"))
        );
        assert!(lines[1].get("container_id").is_none(), "{}", lines[1]);
    }
}
