//! User-namespace remapping (`dockerd --userns-remap`): which host ids a container's ids are.
//!
//! Under a remapping engine a container's root is an unprivileged host uid (`dockremap`'s
//! first subordinate id, 100000 typically), so a tmpfs owned by host uid 0 or 1000 is
//! unreadable in the container. The engine tells that it remaps by `name=userns` among its
//! `/info` `SecurityOptions`, and which host ids its root is by its `DockerRootDir`, which ends
//! in `UID.GID` (`/var/lib/docker/100000.100000`); the size of the range (and any further
//! ranges) is the remap user's in `/etc/subuid` and `/etc/subgid`: the user whose range starts
//! at that root. Like dockerd (moby's `idtools`), the user's ranges are taken lowest first and
//! laid end to end: container ids `0..n1` are the first range, `n1..n1+n2` the second.
//!
//! Where the engine does not tell (a managed plugin cannot read the host's `/etc/subuid`), the
//! configuration's `[userns]` does ([`IdMap::single`]).

use std::fmt;

use super::{DockerEngine, EngineError};
use crate::report::Finding;

/// One run of ids: container ids `container..container+size` are host ids `host..host+size`
/// (a line of `/proc/PID/uid_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// How container ids map to host ids under a remapping engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    pub uids: Vec<Extent>,
    pub gids: Vec<Extent>,
}

impl IdMap {
    /// Container ids `0..size` are host uids `uid_base..` and gids `gid_base..`.
    pub fn single(uid_base: u32, gid_base: u32, size: u32) -> IdMap {
        IdMap {
            uids: vec![Extent { container: 0, host: uid_base, size }],
            gids: vec![Extent { container: 0, host: gid_base, size }],
        }
    }

    /// The host uid of container uid `id`; `None` outside the mapped range.
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        to_host(&self.uids, id)
    }

    /// The host gid of container gid `id`; `None` outside the mapped range.
    pub fn host_gid(&self, id: u32) -> Option<u32> {
        to_host(&self.gids, id)
    }

    /// The container uids that are mapped, as an error names them: `0-65535`.
    pub fn uid_range(&self) -> String {
        range(&self.uids)
    }

    /// The container gids that are mapped: `0-65535`.
    pub fn gid_range(&self) -> String {
        range(&self.gids)
    }
}

impl fmt::Display for IdMap {
    /// `container root is host 100000:100000, uids 0-65535, gids 0-65535`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let root = |e: &[Extent]| e.first().map_or("?".into(), |e| e.host.to_string());
        write!(
            f,
            "container root is host {}:{}, uids {}, gids {}",
            root(&self.uids),
            root(&self.gids),
            self.uid_range(),
            self.gid_range()
        )
    }
}

fn to_host(extents: &[Extent], id: u32) -> Option<u32> {
    extents
        .iter()
        .find(|e| id >= e.container && id - e.container < e.size)
        .map(|e| e.host + (id - e.container))
}

fn range(extents: &[Extent]) -> String {
    let total: u64 = extents.iter().map(|e| u64::from(e.size)).sum();
    match total {
        0 => "none".into(),
        n => format!("0-{}", n - 1),
    }
}

/// Why an engine's remapping cannot be known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernsError {
    #[error("the engine remaps user namespaces (name=userns) but its DockerRootDir {root_dir:?} does not end in UID.GID; set [userns] in the plugin's configuration")]
    NoRoot { root_dir: String },
    #[error("the engine remaps container root to host {uid}:{gid}, but no user's range in {file} starts at {id}; set [userns] in the plugin's configuration")]
    NoRange { uid: u32, gid: u32, file: &'static str, id: u32 },
}

/// Whether an engine's `SecurityOptions` say it remaps user namespaces (`name=userns`).
pub fn remaps(security_options: &[String]) -> bool {
    security_options.iter().any(|o| o.split(',').any(|field| field == "name=userns"))
}

/// The host `(uid, gid)` of a remapping engine's container root: the `UID.GID` that ends its
/// `DockerRootDir`.
pub fn root_of(docker_root_dir: &str) -> Option<(u32, u32)> {
    let last = docker_root_dir.trim_end_matches('/').rsplit('/').next()?;
    let (uid, gid) = last.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(uid) || !digits(gid) {
        return None;
    }
    Some((uid.parse().ok()?, gid.parse().ok()?))
}

/// The ranges, laid end to end from container id 0, of the user in `subid` (the text of
/// `/etc/subuid` or `/etc/subgid`: `name:start:count` lines) one of whose ranges starts at
/// `root`; `None` when no range starts there.
pub fn extents(subid: &str, root: u32) -> Option<Vec<Extent>> {
    let entries: Vec<(&str, u32, u32)> = subid
        .lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let (name, start, count) = (fields.next()?, fields.next()?, fields.next()?);
            let (start, count) = (start.parse().ok()?, count.parse::<u32>().ok()?);
            (fields.next().is_none() && !name.starts_with('#') && count > 0)
                .then_some((name, start, count))
        })
        .collect();
    let user = entries.iter().find(|(_, start, _)| *start == root)?.0;
    let mut ranges: Vec<(u32, u32)> =
        entries.iter().filter(|(n, ..)| *n == user).map(|&(_, s, c)| (s, c)).collect();
    ranges.sort_unstable();
    let mut container = 0u32;
    let mut out = Vec::new();
    for (host, size) in ranges {
        let size = size.min(u32::MAX - container).min(u32::MAX - host);
        if size == 0 {
            break;
        }
        out.push(Extent { container, host, size });
        container += size;
    }
    Some(out)
}

/// The remapping of an engine from its `/info` and the host's subordinate id files: `None`
/// when it does not remap.
pub fn id_map(
    security_options: &[String],
    docker_root_dir: &str,
    subuid: &str,
    subgid: &str,
) -> Result<Option<IdMap>, UsernsError> {
    if !remaps(security_options) {
        return Ok(None);
    }
    let (uid, gid) = root_of(docker_root_dir)
        .ok_or_else(|| UsernsError::NoRoot { root_dir: docker_root_dir.to_owned() })?;
    let uids = extents(subuid, uid).ok_or(UsernsError::NoRange {
        uid,
        gid,
        file: "/etc/subuid",
        id: uid,
    })?;
    let gids = extents(subgid, gid).ok_or(UsernsError::NoRange {
        uid,
        gid,
        file: "/etc/subgid",
        id: gid,
    })?;
    Ok(Some(IdMap { uids, gids }))
}

impl DockerEngine {
    /// [`super::Engine::id_map`]: `/info`, then the subordinate id files; kept once learned.
    pub(super) async fn learn_id_map(&self) -> Result<Option<IdMap>, EngineError> {
        if let Some(map) = self.id_map.get() {
            return Ok(map.clone());
        }
        let docker = self.client().await?;
        let info = self.bounded("/info", docker.info()).await?;
        let options = info.security_options.unwrap_or_default();
        let root_dir = info.docker_root_dir.unwrap_or_default();
        let (subuid, subgid) = if remaps(&options) {
            // As dockerd reads them: through its root (a managed plugin's rootfs has none),
            // found by the socket's peer; the plugin's own when that cannot be told. Off the
            // runtime and bounded, like every file the plugin reads while it serves.
            let server =
                tokio::time::timeout(self.timeout, super::record::server_pid(&self.socket));
            let pid = match server.await {
                Ok(Ok(pid)) => pid,
                Ok(Err(e)) => {
                    tracing::warn!(engine = %self.name, error = %e, "cannot tell which process serves the engine: reading the plugin's own /etc/subuid and /etc/subgid");
                    std::process::id()
                }
                Err(_) => {
                    tracing::warn!(engine = %self.name, "the engine's socket did not answer: reading the plugin's own /etc/subuid and /etc/subgid");
                    std::process::id()
                }
            };
            tokio::task::spawn_blocking(move || {
                (read_ids_file(pid, "/etc/subuid"), read_ids_file(pid, "/etc/subgid"))
            })
            .await
            .unwrap_or_default()
        } else {
            Default::default()
        };
        let map = id_map(&options, &root_dir, &subuid, &subgid)
            .map_err(|source| EngineError::Userns { socket: self.socket.clone(), source })?;
        if let Some(map) = &map {
            tracing::info!(engine = %self.name, %map, "the engine remaps user namespaces");
        }
        Ok(self.id_map.get_or_init(|| map).clone())
    }
}

/// How much of `/etc/subuid` or `/etc/subgid` is read at most (a line per user: thousands).
const IDS_FILE_LIMIT: u64 = 1 << 20;

/// The subordinate id file at `path` as process `pid` (dockerd) sees it, at most
/// [`IDS_FILE_LIMIT`] bytes, a regular file only ([`super::record::read_in_root`]); empty when
/// it cannot be read (then no range is found, and the error says which file to look at).
/// Blocking.
fn read_ids_file(pid: u32, path: &str) -> String {
    match super::record::read_in_root(pid, std::path::Path::new(path), IDS_FILE_LIMIT) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => {
            tracing::warn!(path, %error, "cannot read the subordinate ids");
            String::new()
        }
    }
}

/// What `check` says of an engine's remapping, as [`super::Engine::id_map`] answered: nothing
/// when it does not remap (or was not reached: said already).
pub fn check_line(engine: &str, answer: Result<Option<IdMap>, EngineError>) -> Option<Finding> {
    match answer {
        Ok(None) => None,
        Ok(Some(map)) => Some(Finding::Ok(format!(
            "engine {engine} remaps user namespaces ({map}): -o uid and -o gid are ids in the container"
        ))),
        Err(e @ EngineError::Userns { .. }) => Some(Finding::Warning(format!(
            "engine {engine}: {} (unless [userns] is set, volumes cannot be created for it)",
            crate::report::chain(&e)
        ))),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_name_userns_means_remapping() {
        assert!(remaps(&opts(&["name=seccomp,profile=default", "name=userns"])));
        assert!(!remaps(&opts(&["name=seccomp,profile=default", "name=rootless"])));
        assert!(!remaps(&opts(&["name=usernsx"])));
        assert!(!remaps(&[]));
    }

    #[test]
    fn the_root_is_the_root_dirs_suffix() {
        assert_eq!(root_of("/var/lib/docker/100000.100000"), Some((100000, 100000)));
        assert_eq!(root_of("/srv/docker/231072.231073/"), Some((231072, 231073)));
        for bad in
            ["/var/lib/docker", "/x/1.", "/x/.1", "/x/a.b", "/x/1.2.3", "", "/x/99999999999.1"]
        {
            assert_eq!(root_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_users_ranges_are_laid_end_to_end_lowest_first() {
        let subuid = "# comment\nalice:100000:65536\ndockremap:300000:1000\nbad line\ndockremap:231072:65536\n";
        let map = extents(subuid, 231072).unwrap();
        assert_eq!(
            map,
            vec![
                Extent { container: 0, host: 231072, size: 65536 },
                Extent { container: 65536, host: 300000, size: 1000 },
            ]
        );
        assert_eq!(extents(subuid, 300001), None);
        assert_eq!(to_host(&map, 0), Some(231072));
        assert_eq!(to_host(&map, 1000), Some(232072));
        assert_eq!(to_host(&map, 65536), Some(300000));
        assert_eq!(to_host(&map, 66535), Some(300999));
        assert_eq!(to_host(&map, 66536), None);
        assert_eq!(range(&map), "0-66535");
    }

    #[test]
    fn check_says_what_an_engine_remaps_or_why_it_cannot_tell() {
        assert_eq!(check_line("/s", Ok(None)), None);
        let line = check_line("/s", Ok(Some(IdMap::single(1, 1, 10)))).unwrap().to_string();
        assert!(line.contains("remaps") && line.contains("uids 0-9"), "{line}");
        let e = super::super::EngineError::Userns {
            socket: "/s".into(),
            source: UsernsError::NoRoot { root_dir: "/x".into() },
        };
        let line = check_line("/s", Err(e)).unwrap().to_string();
        assert!(line.starts_with("warning: engine /s") && line.contains("[userns]"), "{line}");
    }

    #[test]
    fn an_engine_that_does_not_remap_has_no_map() {
        let none = id_map(&opts(&["name=seccomp,profile=default"]), "/var/lib/docker", "", "");
        assert_eq!(none, Ok(None));
    }

    #[test]
    fn a_remapping_engine_maps_from_its_root_and_the_subid_files() {
        let o = opts(&["name=seccomp,profile=default", "name=userns"]);
        let sub = "dockremap:100000:65536\n";
        let map = id_map(&o, "/var/lib/docker/100000.100000", sub, sub).unwrap().unwrap();
        assert_eq!(map, IdMap::single(100000, 100000, 65536));
        assert_eq!((map.host_uid(1000), map.host_gid(0)), (Some(101000), Some(100000)));
        assert_eq!(map.host_uid(65536), None);
        assert_eq!(
            map.to_string(),
            "container root is host 100000:100000, uids 0-65535, gids 0-65535"
        );
        let e = id_map(&o, "/var/lib/docker", sub, sub).unwrap_err().to_string();
        assert!(e.contains("does not end in UID.GID") && e.contains("[userns]"), "{e}");
        let e = id_map(&o, "/var/lib/docker/200000.200000", sub, sub).unwrap_err().to_string();
        assert!(e.contains("/etc/subuid") && e.contains("200000") && e.contains("[userns]"), "{e}");
    }
}
