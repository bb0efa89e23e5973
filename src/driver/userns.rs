//! Ids in the container: under an engine that remaps user namespaces (`dockerd
//! --userns-remap`), a volume's `uid` and `gid` are the container's, and its tmpfs and files are
//! owned by the host ids they map to ([`crate::dockerd::userns`]). The remapping is the
//! configuration's `[userns]` for Docker's mounts when it is set, else what the engines say.
//! An id outside the mapped range is refused at Create, naming the range.

use crate::dockerd::userns::IdMap;
use crate::dockerd::{shared_mount, Engine, EngineError};
use crate::volume::{OptionError, VolumeSpec};

use super::{Driver, DriverError, Edges};

/// Which mounts a remapping is looked up for.
#[derive(Debug, Clone, Copy)]
pub(super) enum For<'a> {
    /// A Create: any engine may mount the volume.
    Create,
    /// Mount `ID`: only an engine that could have made it.
    Mount(&'a str),
}

impl<E: Edges> Driver<E> {
    /// The distinct remappings (`None`: an engine that does not remap) of the engines `of`
    /// concerns, each with the engines that have it. Engines that cannot be reached are left
    /// out: they make no mounts.
    async fn id_maps(
        &self,
        volume: &str,
        of: For<'_>,
    ) -> Result<Vec<(Option<IdMap>, String)>, DriverError> {
        let docker_mount = match of {
            For::Create => true,
            For::Mount(id) => !shared_mount(id),
        };
        if let Some(map) = &self.userns {
            // `[userns]` is the Docker engines'; Podman's shared mounts are not remapped.
            return Ok(vec![(docker_mount.then(|| map.clone()), "[userns]".into())]);
        }
        let mut found: Vec<(Option<IdMap>, String)> = Vec::new();
        for engine in &self.engines {
            if let For::Mount(id) = of {
                if !engine.kind().could_have_made(id) {
                    continue;
                }
            }
            let map = match engine.id_map().await {
                Ok(map) => map,
                Err(e @ EngineError::Userns { .. }) => {
                    return Err(DriverError::Userns { volume: volume.to_owned(), source: e })
                }
                Err(e) => {
                    tracing::debug!(engine = engine.name(), error = %crate::report::chain(&e), "engine not asked for its user namespace remapping");
                    continue;
                }
            };
            match found.iter_mut().find(|(m, _)| *m == map) {
                Some((_, names)) => names.push_str(&format!(", {}", engine.name())),
                None => found.push((map, engine.name().to_owned())),
            }
        }
        Ok(found)
    }

    /// At Create: the volume's `uid` and `gid` are ids every remapping engine maps.
    pub(super) async fn check_ids(&self, name: &str, spec: &VolumeSpec) -> Result<(), DriverError> {
        for (map, engines) in self.id_maps(name, For::Create).await? {
            if let Some(map) = map {
                host_ids(name, (spec.uid, spec.gid), &map, &engines)?;
            }
        }
        Ok(())
    }

    /// At Mount `id`: the host uid and gid that own the mount's tmpfs and files.
    pub(super) async fn host_owner(
        &self,
        name: &str,
        spec: &VolumeSpec,
        id: &str,
    ) -> Result<(u32, u32), DriverError> {
        let ids = if spec.uid_of_container {
            let (uid, gid) = self.container_user(name, id).await?;
            (uid, gid.unwrap_or(spec.gid))
        } else {
            (spec.uid, spec.gid)
        };
        let maps = self.id_maps(name, For::Mount(id)).await?;
        match maps.as_slice() {
            [] | [(None, _)] => Ok(ids),
            [(Some(map), engines)] => host_ids(name, ids, map, engines),
            several => Err(DriverError::UsernsDiffer {
                volume: name.to_owned(),
                engines: several
                    .iter()
                    .map(|(m, e)| match m {
                        Some(m) => format!("{e}: {m}"),
                        None => format!("{e}: no remapping"),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
        }
    }
}

/// How many containers that do not run may use a `uid=container` volume: each is a candidate
/// for a Mount, whose record is read.
const CANDIDATES: usize = 16;

impl<E: Edges> Driver<E> {
    /// `uid=container`: the numeric user (and group, when it names one) the engine recorded for
    /// the container Mount `id` is for. No engine says which container that is, so it is
    /// fail-closed: every container that could be it — using the volume, on an engine that could
    /// have made the mount, not running or paused (their mounts are made; one its restart policy
    /// restarts is a candidate) — must have the
    /// same user; none, more than [`CANDIDATES`], a name, or users that differ refuse the Mount,
    /// naming them. Podman's one mount for all of a volume's containers is refused.
    async fn container_user(
        &self,
        name: &str,
        id: &str,
    ) -> Result<(u32, Option<u32>), DriverError> {
        let refuse = |message: String| DriverError::Options {
            volume: name.to_owned(),
            source: OptionError {
                option: "uid".into(),
                message: format!("uid=container: {message}"),
            },
        };
        if shared_mount(id) {
            return Err(refuse("Podman mounts a volume once for all the containers using it, whose users may differ; give a numeric uid".into()));
        }
        let mut asked = Vec::new();
        let mut users: Vec<(String, String)> = Vec::new();
        for engine in self.engines.iter().filter(|e| e.kind().could_have_made(id)) {
            asked.push(engine.name().to_owned());
            let mounts = engine.volume_mounts(&self.driver_name).await.map_err(|e| {
                refuse(format!(
                    "cannot ask {} which container is starting: {}",
                    engine.name(),
                    crate::report::chain(&e)
                ))
            })?;
            if !engine.kind().could_have_made(id) {
                // Reached for the first time just now, and of a kind that did not make it.
                asked.pop();
                continue;
            }
            let mut candidates: Vec<(String, String)> = mounts
                .into_iter()
                .filter(|m| m.volume == name && (!m.running || m.restarting))
                .map(|m| (m.container_id, m.container_name))
                .collect();
            candidates.sort();
            candidates.dedup();
            if users.len() + candidates.len() > CANDIDATES {
                return Err(refuse(format!("more than {CANDIDATES} containers that are not running use volume {name}: remove the stopped ones, or give a numeric uid")));
            }
            for (container, container_name) in candidates {
                let user = engine.user_of(&container).await.map_err(|e| {
                    refuse(format!(
                        "cannot read the user of container {container_name}: {}",
                        crate::report::chain(&e)
                    ))
                })?;
                users.push((container_name, user));
            }
        }
        let Some((first_name, first)) = users.first() else {
            let engines = if asked.is_empty() {
                "no engine ([plugin] engines)".to_owned()
            } else {
                asked.join(", ")
            };
            return Err(refuse(format!(
                "no container using volume {name} is being started on {engines}"
            )));
        };
        if users.iter().any(|(_, user)| user != first) {
            let list: Vec<String> = users
                .iter()
                .map(|(c, u)| format!("{c} ({})", if u.is_empty() { "root" } else { u }))
                .collect();
            return Err(refuse(format!("the containers this mount may be for have different users: {}; give each its own volume, or a numeric uid", list.join(", "))));
        }
        crate::dockerd::record::numeric_user(first)
            .map_err(|message| refuse(format!("container {first_name}: {message}")))
    }
}

/// The host ids of the container ids `(uid, gid)` under `map`; an id outside it is refused.
fn host_ids(
    name: &str,
    (uid, gid): (u32, u32),
    map: &IdMap,
    engines: &str,
) -> Result<(u32, u32), DriverError> {
    let refuse = |option: &str, id: u32, range: String| {
        DriverError::Options {
        volume: name.to_owned(),
        source: OptionError {
            option: option.into(),
            message: format!(
                "{id} is not an id in the container: {engines} remaps user namespaces ({map}); accepted: {range}"
            ),
        },
    }
    };
    let host_uid = map.host_uid(uid).ok_or_else(|| refuse("uid", uid, map.uid_range()))?;
    let host_gid = map.host_gid(gid).ok_or_else(|| refuse("gid", gid, map.gid_range()))?;
    Ok((host_uid, host_gid))
}
