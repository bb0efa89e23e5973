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
                host_ids(name, spec, &map, &engines)?;
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
        let maps = self.id_maps(name, For::Mount(id)).await?;
        match maps.as_slice() {
            [] | [(None, _)] => Ok((spec.uid, spec.gid)),
            [(Some(map), engines)] => host_ids(name, spec, map, engines),
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

/// The host ids of the spec's container ids under `map`; an id outside it is refused.
fn host_ids(
    name: &str,
    spec: &VolumeSpec,
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
    let uid = map.host_uid(spec.uid).ok_or_else(|| refuse("uid", spec.uid, map.uid_range()))?;
    let gid = map.host_gid(spec.gid).ok_or_else(|| refuse("gid", spec.gid, map.gid_range()))?;
    Ok((uid, gid))
}
