//! A container's user as dockerd recorded it, for `-o uid=container`.
//!
//! The engine's API cannot tell it at Mount: dockerd holds a container's lock from the start of
//! `containerStart` until its volumes are mounted, and `GET /containers/ID/json` takes that lock,
//! so an inspect of the container a Mount is for waits for the Mount itself (measured on Engine
//! 20.10: an inspect sent during a 6 s Mount answered 4.7 s later, when the Mount did; the list,
//! which reads a lock-free view, answered in 28 ms but has no `User`). dockerd's own record of the
//! container, `config.v2.json` in `DOCKER_ROOT_DIR/containers/ID/`, has it: written at create,
//! in dockerd's directory, which no container can write. It is read as dockerd sees it, through
//! `/proc/PID/root` of the process serving the engine's socket (its peer credentials): the same
//! path for the host's dockerd, a managed plugin's view, and a rootless dockerd's own mount
//! namespace. Bounded, non-blocking, a regular file only; off the runtime.

use std::io::Read;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use serde::Deserialize;

/// How much of `config.v2.json` is read at most: the container's configuration, its state and
/// its mount points (a few KiB; its environment, labels and command can make it larger).
const RECORD_LIMIT: u64 = 4 << 20;

/// The pid of the process serving the engine's API socket (`SO_PEERCRED`): dockerd, or the
/// process that made the socket for it (systemd's `docker.socket`: pid 1, whose root is the
/// host's too). Refused when the kernel gives none (a process outside the plugin's pid
/// namespace).
pub async fn server_pid(socket: &Path) -> std::io::Result<u32> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let pid = stream.peer_cred()?.pid().unwrap_or(0);
    u32::try_from(pid).ok().filter(|pid| *pid > 0).ok_or_else(|| {
        std::io::Error::other(format!(
            "the process serving {} is not in the plugin's pid namespace",
            socket.display()
        ))
    })
}

/// Blocking: the file at `path` (absolute) as process `pid` sees it: resolved in its root
/// (`/proc/PID/root`, absolute symlinks too, never out of it), opened non-blocking, a regular
/// file only, at most `limit` bytes.
pub fn read_in_root(pid: u32, path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let failed = |e: rustix::io::Errno| {
        std::io::Error::new(std::io::Error::from(e).kind(), format!("{}: {e}", path.display()))
    };
    let Ok(relative) = path.strip_prefix("/") else {
        return Err(std::io::Error::other(format!("{} is not absolute", path.display())));
    };
    let root = rustix::fs::open(
        format!("/proc/{pid}/root"),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(failed)?;
    let fd = rustix::fs::openat2(
        &root,
        relative,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(failed)?;
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::other(format!("{} is not a regular file", path.display())));
    }
    let mut text = Vec::new();
    std::fs::File::from(fd).take(limit + 1).read_to_end(&mut text)?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "{} is larger than {} KiB",
            path.display(),
            limit >> 10
        )));
    }
    Ok(text)
}

/// Where dockerd keeps its record of container `id` (a checked container ID): `root_dir` is
/// `/info`'s `DockerRootDir`.
fn record_path(root_dir: &str, id: &str) -> PathBuf {
    Path::new(root_dir).join("containers").join(id).join("config.v2.json")
}

/// What is read of a record: dockerd always writes `Config.User` (`""` for none); a record
/// without it is not taken for root.
#[derive(Deserialize)]
struct Record {
    #[serde(rename = "Config")]
    config: RecordConfig,
}

#[derive(Deserialize)]
struct RecordConfig {
    #[serde(rename = "User")]
    user: String,
}

/// Blocking: the `Config.User` of container `id` (already checked to be an ID) in the record
/// dockerd (process `pid`, root directory `root_dir`) keeps; `""` when it names none (root).
pub fn read_user(pid: u32, root_dir: &str, id: &str) -> std::io::Result<String> {
    if !root_dir.starts_with('/') {
        return Err(std::io::Error::other(format!("DockerRootDir {root_dir:?} is not absolute")));
    }
    let path = record_path(root_dir, id);
    let text = read_in_root(pid, &path, RECORD_LIMIT)?;
    let record: Record = serde_json::from_slice(&text).map_err(|e| {
        // Position and kind only: serde's text can quote a value (the environment).
        std::io::Error::other(format!(
            "{} is not a container's record ({:?} error at line {} column {})",
            path.display(),
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    Ok(record.config.user)
}

/// A container's numeric user: `UID` or `UID:GID` (`""`: root, `0`). A name is refused with
/// why: it would be looked up in the container's own `/etc/passwd`, which its image (and
/// anyone who can change the container) controls.
pub fn numeric_user(user: &str) -> Result<(u32, Option<u32>), String> {
    let id = |part: &str| part.parse::<u32>().ok().filter(|id| *id < u32::MAX);
    let (uid, gid) = match user.split_once(':') {
        None if user.is_empty() => return Ok((0, None)),
        None => (id(user), Some(None)),
        Some((u, g)) => (id(u), Some(id(g))),
    };
    match (uid, gid) {
        (Some(uid), Some(None)) if !user.contains(':') => Ok((uid, None)),
        (Some(uid), Some(Some(gid))) => Ok((uid, Some(gid))),
        _ => Err(format!(
            "its user `{user}` is not numeric: uid=container takes the ids of a numeric `--user` (as `--user 1000:1000`); a name would be looked up in the container's own /etc/passwd, which the container controls"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_users_are_taken_and_names_refused() {
        assert_eq!(numeric_user(""), Ok((0, None)));
        assert_eq!(numeric_user("1000"), Ok((1000, None)));
        assert_eq!(numeric_user("1000:1001"), Ok((1000, Some(1001))));
        assert_eq!(numeric_user("0:0"), Ok((0, Some(0))));
        for bad in [
            "app",
            "app:app",
            "1000:app",
            "app:1000",
            "-1",
            "1000:",
            ":1000",
            "4294967295",
            "1 000",
        ] {
            let e = numeric_user(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[tokio::test]
    async fn the_socket_s_server_is_found_by_its_peer_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let _listener = tokio::net::UnixListener::bind(&socket).unwrap();
        assert_eq!(server_pid(&socket).await.unwrap(), std::process::id());
        assert!(server_pid(&dir.path().join("none.sock")).await.is_err());
    }

    #[test]
    fn the_record_is_below_dockerds_root_dir() {
        let path = record_path("/var/lib/docker/100000.100000", "abc");
        assert_eq!(path, Path::new("/var/lib/docker/100000.100000/containers/abc/config.v2.json"));
    }

    #[test]
    fn a_record_of_this_process_is_read_and_bounded() {
        // This process's own root stands for dockerd's.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let id = "0123456789ab";
        std::fs::create_dir_all(dir.path().join("containers").join(id)).unwrap();
        let file = dir.path().join("containers").join(id).join("config.v2.json");
        let pid = std::process::id();
        std::fs::write(
            &file,
            r#"{"ID":"x","Config":{"User":"1000:1000","Env":["A=b"]},"State":{}}"#,
        )
        .unwrap();
        assert_eq!(read_user(pid, root, id).unwrap(), "1000:1000");
        std::fs::write(&file, r#"{"Config":{"User":"","Env":[]}}"#).unwrap();
        assert_eq!(read_user(pid, root, id).unwrap(), "");
        // A record without the user is not taken for root.
        std::fs::write(&file, r#"{"Config":{"Env":[]}}"#).unwrap();
        assert!(read_user(pid, root, id).is_err());
        std::fs::write(&file, r#"{"ID":"x"}"#).unwrap();
        assert!(read_user(pid, root, id).is_err());
        std::fs::write(&file, "not json").unwrap();
        assert!(read_user(pid, root, id)
            .unwrap_err()
            .to_string()
            .contains("not a container's record"));
        std::fs::write(&file, vec![b' '; RECORD_LIMIT as usize + 1]).unwrap();
        assert!(read_user(pid, root, id).unwrap_err().to_string().contains("larger than"));
        std::fs::remove_file(&file).unwrap();
        let fifo = Mode::from_raw_mode(0o600);
        rustix::fs::mknodat(rustix::fs::CWD, &file, FileType::Fifo, fifo, 0).unwrap();
        assert!(read_user(pid, root, id).unwrap_err().to_string().contains("not a regular file"));
        assert!(read_user(pid, "relative", id).is_err());
    }
}
