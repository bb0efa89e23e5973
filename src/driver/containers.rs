//! Which container a mount belongs to, from its engine's own account, and what follows from
//! it: the `container` audit line, the signal when its files change, and the revocation at its
//! container's death.
//!
//! A mount belongs to the container its engine mounted it for: the engine's record of the
//! container lists the volume at a destination where the container's mount table shows the
//! mount's tmpfs ([`crate::dockerd::mountinfo::claims`]). A container that only *sees* the
//! tmpfs — a bind of the plugin's runtime directory, a host root bound `rslave` (a monitoring
//! agent) — is never its holder: it is not signalled for it, and its death ends nothing of it.
//!
//! Each engine is asked about its own containers ([`Census`]); a mount, once tied, is its
//! engine's. Docker makes a mount per container mount point: two containers claiming one is
//! a contradiction, and such a mount is tied to neither. Podman makes one mount of a volume
//! for all of its containers ([`shared_mount`]): it is tied to one of them, signalled in all
//! of them, and it ends when the last of them dies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::{short, Active, Driver, Edges, Volume};
use crate::audit::{Event, Kind};
use crate::dockerd::mountinfo::{claims, VolumeUse};
use crate::dockerd::{shared_mount, Engine, EngineError, EngineKind};
use crate::lease::Job;
use crate::report::chain;
use crate::state::Container;

/// How long after its Mount a mount's container is looked for every few seconds (later, only
/// by the sweep): a container starts within it, or a mount was made without one.
pub(super) const TIE_WINDOW: Duration = Duration::from_secs(60);

/// What one engine says, at one moment, of its containers that use the plugin's volumes.
pub(super) struct Census {
    /// The engine's name.
    pub(super) engine: String,
    /// Its kind, as far as it is known.
    pub(super) kind: EngineKind,
    /// For each device of a tmpfs of ours: the running containers the engine mounted it for,
    /// each with the volumes the tmpfs can be a mount of.
    owners: HashMap<String, Vec<(Container, Vec<String>)>>,
    /// The volumes of its containers being started (`created`: their volumes mounted, their
    /// process not yet there).
    pub(super) starting: HashSet<String>,
}

impl Census {
    /// The containers the engine made the tmpfs `device`, a mount of `volume`, for.
    pub(super) fn owners(&self, volume: &str, device: &str) -> Vec<&Container> {
        let Some(owners) = self.owners.get(device) else { return Vec::new() };
        let mut found: Vec<&Container> = Vec::new();
        for (container, volumes) in owners {
            if volumes.iter().any(|v| v == volume) && !found.iter().any(|c| c.id == container.id) {
                found.push(container);
            }
        }
        found
    }
}

/// Who a mount belongs to, by what the engines said.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Owner {
    /// No container of an engine that could have made it.
    None,
    /// This container of this engine (for a shared mount: one of them).
    One { engine: String, container: Container },
    /// Several containers claim a mount made for one: none of them is taken for its holder.
    Contradicted(Vec<Container>),
}

impl<E: Edges> Driver<E> {
    /// Asks `engine` which of the plugin's tmpfs mounts it made for which of its running
    /// containers (those with a volume that `of` accepts).
    pub(super) async fn census(
        &self,
        engine: &E::Engine,
        of: impl Fn(&str) -> bool,
    ) -> Result<Census, EngineError> {
        let mounts = engine.volume_mounts(&self.driver_name).await?;
        let starting = mounts.iter().filter(|m| m.starting).map(|m| m.volume.clone()).collect();
        let mut uses: BTreeMap<String, (String, Vec<VolumeUse>)> = BTreeMap::new();
        for m in mounts.into_iter().filter(|m| m.running && of(&m.volume)) {
            let entry =
                uses.entry(m.container_id).or_insert_with(|| (m.container_name, Vec::new()));
            entry.1.push(VolumeUse { volume: m.volume, destination: m.destination });
        }
        let mut owners: HashMap<String, Vec<(Container, Vec<String>)>> = HashMap::new();
        for (id, (name, uses)) in uses {
            // `None`: gone between the two questions; it holds nothing.
            let Some(table) = engine.mount_table(&id).await? else { continue };
            for claim in claims(&table, &uses) {
                let container = Container { id: id.clone(), name: name.clone() };
                owners.entry(claim.device).or_default().push((container, claim.volumes));
            }
        }
        Ok(Census { engine: engine.name().to_owned(), kind: engine.kind(), owners, starting })
    }

    /// A census of every engine, each asked at once; an engine that cannot answer is left out
    /// (and named among the silent).
    pub(super) async fn censuses(
        &self,
        of: impl Fn(&str) -> bool + Copy,
    ) -> (Vec<Census>, Vec<(String, EngineKind)>) {
        let asked = self.engines.iter().map(|e| async move { (e, self.census(e, of).await) });
        let mut answered = Vec::new();
        let mut silent = Vec::new();
        for (engine, result) in futures_util::future::join_all(asked).await {
            match result {
                Ok(census) => answered.push(census),
                Err(e) => {
                    tracing::debug!(engine = engine.name(), error = %chain(&e), "the engine cannot tell which containers hold the plugin's mounts");
                    silent.push((engine.name().to_owned(), engine.kind()));
                }
            }
        }
        (answered, silent)
    }

    /// Who mount `id` of `volume` (its tmpfs `device`) belongs to, among the engines that
    /// could have made it.
    pub(super) fn owner(censuses: &[Census], volume: &str, id: &str, device: &str) -> Owner {
        let mut all: Vec<(&str, &Container)> = Vec::new();
        for census in censuses.iter().filter(|c| c.kind.could_have_made(id)) {
            all.extend(
                census.owners(volume, device).into_iter().map(|c| (census.engine.as_str(), c)),
            );
        }
        match all.as_slice() {
            [] => Owner::None,
            [(engine, container), ..] if all.len() == 1 || shared_mount(id) => {
                Owner::One { engine: (*engine).to_owned(), container: (*container).clone() }
            }
            _ => Owner::Contradicted(all.into_iter().map(|(_, c)| c.clone()).collect()),
        }
    }

    /// Ties the mounts not yet tied to a container to the container their engine made them
    /// for: a `container` line in the audit log, the container and its engine kept in the
    /// record and named in the mount's later lines. Returns how many mounts younger than
    /// `TIE_WINDOW` (a minute) are still untied (to look again soon).
    pub async fn tie_containers(&self) -> usize {
        let untied: HashSet<String> = self.untied_volumes();
        if untied.is_empty() {
            return 0;
        }
        let (censuses, _) = self.censuses(|volume| untied.contains(volume)).await;
        self.tie(&censuses)
    }

    /// The volumes with a mount not tied to a container.
    fn untied_volumes(&self) -> HashSet<String> {
        let volumes: Vec<Arc<Volume>> = self.volumes.lock().unwrap().values().cloned().collect();
        let untied = |volume: &Volume| {
            volume.slots().iter().any(|(_, slot)| match slot.try_lock() {
                Ok(guard) => guard.as_ref().is_some_and(|a| a.container.is_none()),
                Err(_) => true, // under way (a Mount, an upkeep): it may be
            })
        };
        volumes.iter().filter(|v| untied(v)).map(|v| v.record.name.clone()).collect()
    }

    /// [`Driver::tie_containers`] with the censuses taken.
    pub(super) fn tie(&self, censuses: &[Census]) -> usize {
        let volumes: Vec<Arc<Volume>> = self.volumes.lock().unwrap().values().cloned().collect();
        let mut waiting = 0;
        for volume in volumes {
            for (id, slot) in volume.slots() {
                let Ok(mut guard) = slot.try_lock() else {
                    waiting += 1;
                    continue;
                };
                let Some(active) = guard.as_mut().filter(|a| a.container.is_none()) else {
                    continue;
                };
                let Some(device) = active.device.clone() else { continue };
                let young = active.mounted_at.elapsed() < TIE_WINDOW;
                match Self::owner(censuses, &volume.record.name, &id, &device) {
                    Owner::One { engine, container } => {
                        self.tie_to(&volume, &id, active, engine, container)
                    }
                    Owner::None => waiting += usize::from(young),
                    Owner::Contradicted(containers) => {
                        let ids: Vec<&str> = containers.iter().map(|c| short(&c.id)).collect();
                        tracing::warn!(volume = %volume.record.name, id = %short(&id), containers = ?ids, "several containers claim a mount made for one: it is tied to none of them (no signal, no revocation at their death; the Unmount still ends it)");
                    }
                }
            }
        }
        waiting
    }

    /// Records that mount `id` is `container`'s, of `engine`.
    fn tie_to(
        &self,
        volume: &Volume,
        id: &str,
        active: &mut Active,
        engine: String,
        container: Container,
    ) {
        tracing::info!(volume = %volume.record.name, id = %short(id), container = %short(&container.id), name = %container.name, engine, "the mount's container is known");
        let event = Event::new(Kind::Container, &volume.record.name).mount(id);
        let leases = active.leases.iter().flatten().map(|l| l.id.as_str());
        let event = event.accessor(&active.token.accessor).leases(leases);
        self.audit.record(event.held_by(Some(&container)).detail(format!("engine {engine}")));
        active.container = Some(container);
        active.engine = Some(engine);
        self.update_record(volume, id, active);
        // The container's view now exists: sealed per mount (read-only, nosuid, nodev, noexec),
        // whatever flags its runtime set on it (runc's remount of a `:ro` bind drops nosuid and
        // nodev). Off the runtime; a failure only loses that defence in depth, counted.
        let (mounter, files) = (self.mounter.clone(), self.files_dir(&volume.record.name, id));
        tokio::task::spawn_blocking(move || {
            match crate::tmpfs::Mounter::seal_views(
                &*mounter,
                &files,
                crate::tmpfs::seal::Which::Incomplete,
            ) {
                Ok(sealed) => tracing::debug!(sealed, "the container's view is sealed read-only"),
                Err(e) => {
                    crate::metrics::METRICS.seal_failures.inc();
                    tracing::warn!(error = %crate::report::chain(&e), "cannot seal the container's view; its superblock keeps it read-only");
                }
            }
        });
    }

    /// Waits for a new mount whose container is to be looked for.
    pub async fn mounted(&self) {
        self.untied.notified().await
    }

    /// The names of the engines asked about containers, in order.
    pub fn engine_names(&self) -> Vec<&str> {
        self.engines.iter().map(|e| e.name()).collect()
    }

    /// The engine of this name, if it is configured.
    pub(super) fn engine_named(&self, name: &str) -> Option<&Arc<E::Engine>> {
        self.engines.iter().find(|e| e.name() == name)
    }

    /// The containers to signal when mount `id`'s files change: its container; for a mount
    /// shared by an engine's containers, every one of them its engine made it for now.
    async fn to_signal(
        &self,
        volume: &Volume,
        id: &str,
        active: &Active,
    ) -> Vec<(String, Container)> {
        if let (Some(engine), Some(container), false) =
            (&active.engine, &active.container, shared_mount(id))
        {
            return vec![(engine.clone(), container.clone())];
        }
        let Some(device) = &active.device else { return Vec::new() };
        let name = &volume.record.name;
        let mut censuses = Vec::new();
        for engine in &self.engines {
            let ours = active.engine.as_deref().is_none_or(|e| e == engine.name());
            if !ours || !engine.kind().could_have_made(id) {
                continue;
            }
            match self.census(engine, |v| v == name).await {
                Ok(census) => censuses.push(census),
                Err(e) => {
                    tracing::warn!(engine = engine.name(), error = %chain(&e), "cannot find the containers to signal")
                }
            }
        }
        if !shared_mount(id) {
            return match Self::owner(&censuses, name, id, device) {
                Owner::One { engine, container } => vec![(engine, container)],
                Owner::None => Vec::new(),
                Owner::Contradicted(_) => {
                    tracing::warn!("several containers claim this mount: none is signalled");
                    Vec::new()
                }
            };
        }
        let mut found = Vec::new();
        for census in &censuses {
            for container in census.owners(name, device) {
                found.push((census.engine.clone(), container.clone()));
            }
        }
        found
    }

    /// Sends the volume's `signal` to the containers mount `id` is for (see
    /// [`Driver::to_signal`]), through their engine.
    pub(super) async fn signal(&self, volume: &Volume, id: &str, active: &Active) {
        let Some(signal) = &volume.spec.signal else { return };
        let containers = self.to_signal(volume, id, active).await;
        if containers.is_empty() {
            tracing::info!(
                "files changed; no running container is known to hold this mount to signal"
            );
        }
        for (engine, container) in containers {
            let Some(engine) = self.engine_named(&engine) else { continue };
            match engine.signal(&container.id, signal).await {
                Ok(()) => {
                    let event = Event::new(Kind::Signal, &volume.record.name).mount(id);
                    let event = event.held_by(Some(&container));
                    self.audit
                        .record(event.accessor(&active.token.accessor).detail(signal.as_str()));
                    tracing::info!(container = %short(&container.id), signal, "signalled");
                }
                Err(e) => {
                    tracing::warn!(container = %short(&container.id), error = %chain(&e), "cannot signal")
                }
            }
        }
    }

    /// Container `container_id` of engine `engine` died (its `die` event): every mount tied to
    /// it ends now — its tokens revoked, and with them its leases; off the schedule — without
    /// waiting for the Unmount. Docker Engine 20.10 logs `die` before it tears the container
    /// down and sends the Unmount only after that (0.15 s later at p50, up to seconds while it
    /// tears down many containers at once); it always sends it, restart policy or not, and a
    /// restarted container mounts its volumes afresh. The tmpfs stays, with its files, until
    /// that Unmount (or the sweep). Mounts not yet tied to a container (younger than a second
    /// or so) are left to the Unmount; a mount Podman shares with another container still
    /// running is tied to that one instead. Returns how many mounts ended.
    pub async fn container_died(&self, engine: &str, container_id: &str) -> usize {
        let volumes: Vec<Arc<Volume>> = self.volumes.lock().unwrap().values().cloned().collect();
        let mut ended = 0;
        let mut busy = Vec::new();
        for volume in &volumes {
            for (id, slot) in volume.slots() {
                match slot.clone().try_lock_owned() {
                    Ok(mut guard) => {
                        ended += self.end_held(volume, &id, &mut guard, engine, container_id).await
                    }
                    Err(_) => busy.push((volume.clone(), id, slot)),
                }
            }
        }
        // Those under way (a Mount, an upkeep) are waited for only after the others ended.
        for (volume, id, slot) in busy {
            let mut guard = slot.lock().await;
            ended += self.end_held(&volume, &id, &mut guard, engine, container_id).await;
        }
        ended
    }

    /// [`Driver::container_died`] for one mount: ends it if it is tied to that container.
    async fn end_held(
        &self,
        volume: &Volume,
        id: &str,
        slot: &mut Option<Active>,
        engine: &str,
        container_id: &str,
    ) -> usize {
        let held = |a: &&mut Active| {
            a.engine.as_deref() == Some(engine)
                && a.container.as_ref().is_some_and(|c| c.id == container_id)
        };
        let Some(active) = slot.as_mut().filter(|a| !a.ended).filter(held) else {
            return 0;
        };
        if shared_mount(id) && self.passed_on(volume, id, active, container_id).await {
            return 0;
        }
        let name = &volume.record.name;
        active.ended = true;
        self.leases.remove(&Job::mount(name, id));
        let held = active.container.as_ref();
        let leases = active.leases.iter().flatten().map(|l| l.id.as_str());
        let event = Event::new(Kind::Die, name).mount(id).held_by(held);
        self.audit.record(event.accessor(&active.token.accessor).leases(leases));
        tracing::info!(volume = %name, id = %short(id), container = %short(container_id), "its container died: revoking now");
        for (old, _) in std::mem::take(&mut active.retiring) {
            self.revoke_held(name, id, &old.token, &old.accessor, held).await;
        }
        let certificates = std::mem::take(&mut active.certificates);
        self.revoke_certificates(name, id, &certificates, held).await;
        self.revoke_held(name, id, &active.token.token, &active.token.accessor, held).await;
        active.timers.retiring.clear();
        self.update_record(volume, id, active);
        1
    }

    /// For a mount its engine shares among containers, at the death of `dead`: true when it
    /// is still another running container's (then tied to it), or when the engine cannot tell
    /// (then the Unmount, which the engine sends after the last of them, ends it).
    async fn passed_on(&self, volume: &Volume, id: &str, active: &mut Active, dead: &str) -> bool {
        let (Some(engine_name), Some(device)) = (active.engine.clone(), active.device.clone())
        else {
            return true;
        };
        let Some(engine) = self.engine_named(&engine_name) else { return true };
        let name = &volume.record.name;
        let census = match self.census(engine, |v| v == name).await {
            Ok(census) => census,
            Err(e) => {
                tracing::info!(volume = %name, error = %chain(&e), "a container of a shared mount died and its engine cannot tell whether others still use it: left to the Unmount");
                return true;
            }
        };
        let next = census.owners(name, &device).into_iter().find(|c| c.id != dead).cloned();
        match next {
            Some(container) => {
                self.tie_to(volume, id, active, engine_name, container);
                true
            }
            None => false,
        }
    }

    /// Follows each engine's container deaths (see [`Driver::container_died`]), each death's
    /// mounts ended on a task of its own so that no revocation waits on another. A lost
    /// connection to an engine is made again after a backoff (1 s doubling to 30 s); deaths
    /// meanwhile are left to the Unmount, as without the events.
    pub async fn follow_deaths(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let followers = (0..self.engines.len()).map(|i| self.clone().follow(i, shutdown.clone()));
        futures_util::future::join_all(followers).await;
    }

    /// [`Driver::follow_deaths`] for the engine at `index`.
    async fn follow(
        self: Arc<Self>,
        index: usize,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let engine = self.engines[index].clone();
        let mut failures = 0u32;
        loop {
            let followed = async {
                let mut deaths = engine.deaths().await?;
                tracing::debug!(engine = engine.name(), "following the containers' deaths");
                failures = 0;
                while let Some(id) = deaths.next().await {
                    let (driver, id, engine) = (self.clone(), id?, engine.clone());
                    tokio::spawn(async move { driver.container_died(engine.name(), &id).await });
                }
                Ok::<(), EngineError>(())
            };
            tokio::select! {
                result = followed => {
                    if let Err(e) = result {
                        tracing::debug!(engine = engine.name(), error = %chain(&e), "not following the containers' deaths; Unmount ends their mounts");
                    }
                }
                _ = shutdown.changed() => return,
            }
            failures = failures.saturating_add(1);
            let wait = crate::lease::plan::backoff(failures, fastrand::f64());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// After each Mount, looks for the container the new mount is for — soon, then less and
    /// less often, until every young mount is tied to its container (the sweep ties the rest).
    pub async fn tie_new_mounts(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        const SOON: Duration = Duration::from_millis(100);
        let mut next: Option<tokio::time::Instant> = None;
        let mut delay = SOON;
        loop {
            let due = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.mounted() => {
                    let soon = tokio::time::Instant::now() + SOON;
                    next = Some(next.map_or(soon, |at| at.min(soon)));
                    delay = SOON;
                    continue;
                }
                _ = due => {}
                _ = shutdown.changed() => return,
            }
            next = if self.tie_containers().await == 0 {
                None
            } else {
                delay = (delay * 2).min(Duration::from_secs(5));
                Some(tokio::time::Instant::now() + delay)
            };
        }
    }
}
