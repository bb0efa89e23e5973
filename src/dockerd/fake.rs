//! [`FakeEngine`]: an engine for unit tests that behaves like the real one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use futures_util::StreamExt;

use super::mountinfo::{self, MountEntry};
use super::{check_container_id, check_signal, ContainerMount, Deaths, Engine, EngineError};
use super::{EngineKind, SwarmTask};

/// A fake engine. `volume_mounts` returns every mount in `mounts`, whatever the driver (the
/// fake holds only the plugin's own). `signal` validates its inputs like the real one, answers
/// 404 for a container not in `mounts` and 409 for one not running, and records the signals it
/// delivered. `unreachable` makes every call fail as if the engine were down. `deaths` streams
/// what [`FakeEngine::die`] announces, until [`FakeEngine::hang_up`].
#[derive(Debug)]
pub struct FakeEngine {
    pub name: String,
    pub kind: EngineKind,
    pub mounts: Mutex<Vec<ContainerMount>>,
    pub signals: Mutex<Vec<(String, String)>>,
    pub unreachable: AtomicBool,
    /// What `mount_table` answers, by container ID: mountinfo text.
    pub tables: Mutex<HashMap<String, String>>,
    /// The swarm's tasks (`tasks` answers those asked for).
    pub tasks: Mutex<Vec<SwarmTask>>,
    /// How many times `deaths` was asked for (each a new connection).
    pub followed: std::sync::atomic::AtomicUsize,
    /// What `id_map` answers (`None`: the engine does not remap).
    pub id_map: Mutex<Option<super::userns::IdMap>>,
    /// What `user_of` answers, by container ID (absent: no record).
    pub users: Mutex<HashMap<String, String>>,
    /// `Some(ID)`: a death; `None`: the connection ends.
    deaths: tokio::sync::broadcast::Sender<Option<String>>,
}

impl Default for FakeEngine {
    fn default() -> Self {
        FakeEngine::named("fake", EngineKind::Docker)
    }
}

/// The root line of a fake container's mount table.
const ROOT: &str = "1 0 0:1 / / rw - overlay overlay rw\n";

impl FakeEngine {
    pub fn named(name: &str, kind: EngineKind) -> FakeEngine {
        FakeEngine {
            name: name.to_owned(),
            kind,
            mounts: Mutex::default(),
            signals: Mutex::default(),
            unreachable: AtomicBool::new(false),
            tables: Mutex::default(),
            tasks: Mutex::default(),
            followed: Default::default(),
            id_map: Mutex::default(),
            users: Mutex::default(),
            deaths: tokio::sync::broadcast::channel(64).0,
        }
    }

    fn reachable(&self) -> Result<(), EngineError> {
        if self.unreachable.load(Ordering::Relaxed) {
            return Err(EngineError::Unreachable {
                socket: PathBuf::from(&self.name),
                source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            });
        }
        Ok(())
    }

    /// A running container `id` that the engine mounted `volume` for at `destination`, the
    /// tmpfs of device `device` there, as its record and its mount table show it.
    pub fn runs(&self, id: &str, volume: &str, destination: &str, device: &str) {
        self.mounts.lock().unwrap().push(ContainerMount {
            container_id: id.into(),
            container_name: format!("name-{id}"),
            running: true,
            starting: false,
            restarting: false,
            volume: volume.into(),
            destination: destination.into(),
            source: PathBuf::new(),
        });
        self.shows(id, destination, device);
    }

    /// A container `id` that uses `volume` and is being started (its record says `user`).
    pub fn starts(&self, id: &str, volume: &str, user: &str) {
        self.mounts.lock().unwrap().push(ContainerMount {
            container_id: id.into(),
            container_name: format!("name-{id}"),
            running: false,
            starting: true,
            restarting: false,
            volume: volume.into(),
            destination: "/run/secrets".into(),
            source: PathBuf::new(),
        });
        self.users.lock().unwrap().insert(id.into(), user.into());
    }

    /// Adds a mount of the plugin's tmpfs of `device` at `at` to container `id`'s mount
    /// table, sat on its root.
    pub fn shows(&self, id: &str, at: &str, device: &str) {
        let mut tables = self.tables.lock().unwrap();
        let table = tables.entry(id.to_owned()).or_insert_with(|| ROOT.to_owned());
        let n = table.lines().count() + 1;
        table.push_str(&format!("{n} 1 {device} / {at} ro - tmpfs vault-secrets rw\n"));
    }

    /// Adds a line as is to container `id`'s mount table.
    pub fn shows_line(&self, id: &str, line: &str) {
        let mut tables = self.tables.lock().unwrap();
        let table = tables.entry(id.to_owned()).or_insert_with(|| ROOT.to_owned());
        table.push_str(line);
        table.push('\n');
    }

    /// Container `id` stops: not running, no mount table.
    pub fn stops(&self, id: &str) {
        for m in self.mounts.lock().unwrap().iter_mut().filter(|m| m.container_id == id) {
            m.running = false;
        }
        self.tables.lock().unwrap().remove(id);
    }

    /// Announces the death of container `id` to those following deaths.
    pub fn die(&self, id: &str) {
        let _ = self.deaths.send(Some(id.to_owned()));
    }

    /// Ends the connections of those following deaths.
    pub fn hang_up(&self) {
        let _ = self.deaths.send(None);
    }
}

impl Engine for FakeEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> EngineKind {
        self.kind
    }

    async fn volume_mounts(&self, _driver: &str) -> Result<Vec<ContainerMount>, EngineError> {
        self.reachable()?;
        Ok(self.mounts.lock().unwrap().clone())
    }

    async fn mount_table(
        &self,
        container_id: &str,
    ) -> Result<Option<Vec<MountEntry>>, EngineError> {
        check_container_id(container_id)?;
        self.reachable()?;
        Ok(self.tables.lock().unwrap().get(container_id).map(|t| mountinfo::parse(t)))
    }

    async fn tasks(&self, ids: &[String]) -> Result<Vec<SwarmTask>, EngineError> {
        self.reachable()?;
        let tasks = self.tasks.lock().unwrap();
        Ok(tasks.iter().filter(|t| ids.contains(&t.id)).cloned().collect())
    }

    async fn signal(&self, container_id: &str, signal: &str) -> Result<(), EngineError> {
        check_container_id(container_id)?;
        check_signal(signal)?;
        self.reachable()?;
        let path = format!("/containers/{container_id}/kill?signal={signal}");
        let running = self
            .mounts
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.container_id == container_id)
            .map(|m| m.running)
            .reduce(|a, b| a || b);
        match running {
            None => Err(EngineError::Status {
                path,
                status: 404,
                message: format!("No such container: {container_id}"),
            }),
            Some(false) => Err(EngineError::Status {
                path,
                status: 409,
                message: format!("Container {container_id} is not running"),
            }),
            Some(true) => {
                self.signals.lock().unwrap().push((container_id.to_owned(), signal.to_owned()));
                Ok(())
            }
        }
    }

    async fn deaths(&self) -> Result<Deaths, EngineError> {
        self.reachable()?;
        self.followed.fetch_add(1, Ordering::SeqCst);
        let receiver = self.deaths.subscribe();
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(Some(id)) => return Some((Ok(id), receiver)),
                    Ok(None) | Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return None
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn id_map(&self) -> Result<Option<super::userns::IdMap>, EngineError> {
        self.reachable()?;
        Ok(self.id_map.lock().unwrap().clone())
    }

    async fn user_of(&self, container_id: &str) -> Result<String, EngineError> {
        check_container_id(container_id)?;
        self.reachable()?;
        self.users.lock().unwrap().get(container_id).cloned().ok_or_else(|| {
            let source = std::io::Error::from(std::io::ErrorKind::NotFound);
            EngineError::Record { id: container_id.to_owned(), source }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_fake_answers_like_the_engine_and_records_signals() {
        let fake = FakeEngine::default();
        fake.runs("aaa", "db", "/s", "0:40");
        fake.runs("bbb", "db", "/s", "0:41");
        fake.stops("bbb");
        assert_eq!(fake.volume_mounts("vault-secrets").await.unwrap().len(), 2);
        let table = fake.mount_table("aaa").await.unwrap().unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!((table[1].device.as_str(), table[1].mount_point.as_str()), ("0:40", "/s"));
        assert_eq!(fake.mount_table("bbb").await.unwrap(), None, "not running");
        fake.signal("aaa", "SIGHUP").await.unwrap();
        assert_eq!(fake.signal("bbb", "SIGHUP").await.unwrap_err().status(), Some(409));
        assert_eq!(fake.signal("zzz", "SIGHUP").await.unwrap_err().status(), Some(404));
        assert!(fake.signal("a/b", "SIGHUP").await.is_err());
        assert_eq!(*fake.signals.lock().unwrap(), [("aaa".to_owned(), "SIGHUP".to_owned())]);
        fake.unreachable.store(true, Ordering::Relaxed);
        let e = fake.volume_mounts("vault-secrets").await.unwrap_err();
        assert!(matches!(e, EngineError::Unreachable { .. }), "{e:?}");
        assert!(fake.deaths().await.is_err());
    }

    #[tokio::test]
    async fn the_fake_streams_deaths_until_it_hangs_up() {
        let fake = FakeEngine::default();
        let mut deaths = fake.deaths().await.unwrap();
        fake.die("aaa");
        fake.die("bbb");
        fake.hang_up();
        assert_eq!(deaths.next().await.unwrap().unwrap(), "aaa");
        assert_eq!(deaths.next().await.unwrap().unwrap(), "bbb");
        assert!(deaths.next().await.is_none(), "the connection ended");
    }
}
