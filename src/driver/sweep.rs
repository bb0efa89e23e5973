//! The sweep of mounts whose containers are gone: an engine that crashed (or was killed, or
//! restarted without live-restore) sends no Unmount for the containers it lost.
//!
//! A mount is released only when the engines that could have made it all answered and none
//! of them made it for a running container (by the rule of `containers`); a mount tied to an
//! engine is that engine's alone to tell. An engine that cannot be asked never has its
//! mounts released: a mount tied to it, or one it could have made while untied, stays (Podman
//! makes only mounts of [`crate::dockerd::PODMAN_MOUNT_ID`], Docker never one, so a Docker
//! engine's answer says nothing of Podman's mounts).

use std::sync::Arc;
use std::time::Duration;

use super::containers::Census;
use super::{short, Active, Driver, Edges, Volume};
use crate::audit::{Event, Kind};
use crate::dockerd::EngineKind;

/// How long a container still being started (`created`) that uses a volume keeps that
/// volume's mounts from the sweep: a start takes seconds, a container created and never
/// started never asked for a mount.
pub const STARTING_LIMIT: Duration = Duration::from_secs(600);

impl<E: Edges> Driver<E> {
    /// Releases mounts no running container uses any more, once older than `min_age`; ties
    /// the others to their containers. Returns how many it released.
    pub async fn sweep_stale(&self, min_age: Duration) -> usize {
        let (censuses, silent) = self.censuses(|_| true).await;
        self.tie(&censuses);
        let volumes: Vec<Arc<Volume>> = self.volumes.lock().unwrap().values().cloned().collect();
        let mut released = 0;
        for volume in volumes {
            let name = &volume.record.name;
            for (id, slot) in volume.slots() {
                let Ok(mut guard) = slot.try_lock() else { continue };
                let stale = guard.as_ref().is_some_and(|a| {
                    a.mounted_at.elapsed() >= min_age
                        && self.unused(&censuses, &silent, name, &id, a)
                });
                if !stale {
                    continue;
                }
                let active = guard.take().expect("checked");
                tracing::warn!(volume = %name, id = %short(&id), "no running container uses this mount any more: releasing it");
                let event = Event::new(Kind::Unmount, name).mount(&id);
                let event = event.detail("no running container uses it any more (no Unmount came)");
                self.finish(&volume, &id, active, event).await;
                released += 1;
            }
        }
        tracing::debug!(engines = censuses.len(), silent = silent.len(), released, "sweep done");
        released
    }

    /// Whether the engines that could have made mount `id` of `volume` all answered, and none
    /// made it for a running container (or is starting one that uses the volume, while the
    /// mount is young). A mount whose device is unknown is never taken for unused.
    fn unused(
        &self,
        censuses: &[Census],
        silent: &[(String, EngineKind)],
        volume: &str,
        id: &str,
        active: &Active,
    ) -> bool {
        let Some(device) = &active.device else { return false };
        let could = |name: &str, kind: EngineKind| match &active.engine {
            Some(engine) => engine == name,
            None => kind.could_have_made(id),
        };
        if silent.iter().any(|(name, kind)| could(name, *kind)) {
            return false; // an engine that could tell cannot be asked
        }
        let asked: Vec<&Census> = censuses.iter().filter(|c| could(&c.engine, c.kind)).collect();
        if asked.is_empty() {
            return false; // no engine that could have made it is configured
        }
        let young = active.mounted_at.elapsed() < STARTING_LIMIT;
        let starting = asked.iter().any(|c| c.starting.contains(volume));
        let owned = asked.iter().any(|c| !c.owners(volume, device).is_empty());
        // (Whether the container it is tied to still runs says nothing: after a crash of its
        // engine, a restart policy starts it again with a mount of its own.)
        let kept_for_a_start = starting && young;
        !owned && !kept_for_a_start
    }

    /// Every `interval`, [`Driver::sweep_stale`] of the mounts older than `interval`.
    pub async fn sweep_every(
        self: Arc<Self>,
        interval: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            let released = self.sweep_stale(interval).await;
            if released > 0 {
                tracing::warn!(released, "released mounts whose containers are gone");
            }
        }
    }
}
