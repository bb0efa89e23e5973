//! Keeping every container's view of a tmpfs read-only while the plugin rewrites its files.
//!
//! A mount's tmpfs is read-only at its *superblock* once its files are written
//! ([`super::Mounter::set_read_only`]): a runtime that binds it into a container and remounts
//! the bind with its own per-mount flags (Podman 4.3 hands runc `rbind,rprivate,nosuid,nodev`
//! and `rw` when `-v` has no `:ro`, and runc remounts the bind with exactly those) may make the
//! *view* `rw`, but nothing can be written through it: a read-only superblock refuses every
//! create, write, chmod, link, rename and unlink.
//!
//! To rewrite the files the superblock must become writable for a moment. Before that, every
//! view of the tmpfs in every mount namespace — found by its device in `/proc/PID/mountinfo`,
//! one process per namespace — is made read-only *per mount* (`MS_BIND | MS_REMOUNT |
//! MS_RDONLY | nosuid,nodev,noexec`) from inside its namespace, by a thread of its own that
//! unshares its filesystem context, enters the namespace (`setns`) and ends afterwards. If any
//! view cannot be sealed, the superblock stays read-only and nothing is written.
//!
//! Nothing a container could have changed is followed: the mount point is the kernel's (from the
//! namespace's mountinfo), it is opened inside that namespace with `openat2(RESOLVE_NO_SYMLINKS)`
//! as an `O_PATH` descriptor, and only when that descriptor is the root of the very mount the
//! mountinfo line names (its mount ID, from `statx`) is it remounted — through the descriptor
//! (`/proc/self/fd/N` of the plugin's own procfs, opened before entering the namespace), never
//! through the path again.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxAttributes, StatxFlags, CWD};
use rustix::mount::MountFlags;
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

use crate::dockerd::mountinfo;

/// Why the views of a tmpfs could not all be sealed.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct SealError {
    pub what: String,
}

fn fail(what: impl Into<String>) -> SealError {
    SealError { what: what.into() }
}

/// One view to seal: a mount of the tmpfs in some namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    mount_id: u64,
    mount_point: PathBuf,
    /// Its per-mount options, as mountinfo shows them.
    options: String,
}

/// Which views are sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Those that could write if the superblock were writable (per mount `rw`): what a
    /// rewrite's window needs.
    Writable,
    /// Those lacking any of `ro,nosuid,nodev,noexec` per mount.
    Incomplete,
}

impl View {
    fn needs(&self, which: Which) -> bool {
        let has = |flag: &str| self.options.split(',').any(|o| o == flag);
        match which {
            Which::Writable => !has("ro"),
            Which::Incomplete => !["ro", "nosuid", "nodev", "noexec"].iter().all(|f| has(f)),
        }
    }
}

/// Seals, per mount, the views of the tmpfs mounted at `files_dir` (the plugin's own, writable
/// mount, is left as it is) in every mount namespace the plugin sees that `which` picks; a view
/// already sealed needs no namespace to be entered. Returns how many views were sealed.
/// Blocking: run it off the async runtime.
pub fn seal_views(files_dir: &Path, which: Which) -> Result<usize, SealError> {
    // Held open until the end: the tmpfs's superblock, and with it its device number, cannot
    // go meanwhile (an Unmount racing a detached seal), so no other filesystem that would get
    // the number again is taken for it. Only the root of a tmpfs mount is taken: never, after
    // an unmount, the directory below it (the device of `runtime_dir`'s filesystem).
    let pinned = rustix::fs::open(
        files_dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(format!("cannot open {}: {e}", files_dir.display())))?;
    let own = rustix::fs::statx(&pinned, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
        .map_err(|e| fail(format!("cannot stat {}: {e}", files_dir.display())))?;
    #[allow(clippy::unnecessary_cast)] // `f_type`'s type differs by architecture
    let is_tmpfs = rustix::fs::fstatfs(&pinned).is_ok_and(|s| s.f_type as i64 == TMPFS_MAGIC);
    let mount_root = own.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        && own.stx_attributes.contains(StatxAttributes::MOUNT_ROOT);
    if !is_tmpfs || !mount_root {
        return Err(fail(format!(
            "{} is not the root of a tmpfs mount: refused",
            files_dir.display()
        )));
    }
    let device = format!("{}:{}", own.stx_dev_major, own.stx_dev_minor);
    let mut sealed = 0;
    for (ns, views) in to_seal(namespaces_viewing(&device)?, own.stx_mnt_id, which)? {
        sealed += seal_in_namespace(ns, views)?;
    }
    drop(pinned);
    Ok(sealed)
}

/// Which views `which` picks, by the open namespace to seal them in. The plugin's own mount
/// (`own_mount`) is left as it is. A mount's ID is the kernel's, unique across namespaces: a
/// view that a process whose namespace cannot be opened shows (a host process of another user,
/// when the plugin has no `CAP_SYS_PTRACE`) and an open namespace shows as well is that
/// namespace's mount, sealed there. Any other view to seal in a closed namespace refuses the
/// whole seal, before anything is sealed.
fn to_seal(
    found: Vec<(Namespace, Vec<View>)>,
    own_mount: u64,
    which: Which,
) -> Result<Vec<(OwnedFd, Vec<View>)>, SealError> {
    // By ID and options: an ID freed and given to another mount while /proc was walked (the
    // tables are read one after another) does not pass for the mount an open namespace showed.
    let reachable: HashSet<(u64, &str)> = found
        .iter()
        .filter(|(ns, _)| matches!(ns, Namespace::Open(..)))
        .flat_map(|(_, views)| views.iter().map(|v| (v.mount_id, v.options.as_str())))
        .collect();
    let refused = found.iter().find_map(|(ns, views)| {
        let Namespace::Closed { pid, error } = ns else { return None };
        let first = views.iter().find(|v| {
            v.mount_id != own_mount
                && v.needs(which)
                && !reachable.contains(&(v.mount_id, v.options.as_str()))
        })?;
        Some(fail(format!(
            "a view of the tmpfs at {} ({}) is in the mount namespace of process {pid}, which cannot be opened: {error}",
            first.mount_point.display(),
            first.options
        )))
    });
    if let Some(refused) = refused {
        return Err(refused);
    }
    let mut open = Vec::new();
    for (ns, views) in found {
        let views: Vec<View> =
            views.into_iter().filter(|v| v.mount_id != own_mount && v.needs(which)).collect();
        // A closed namespace's views were checked above: never passed over.
        if let (Namespace::Open(_, fd), false) = (ns, views.is_empty()) {
            open.push((fd, views));
        }
    }
    Ok(open)
}

/// `TMPFS_MAGIC`, `statfs(2)`'s `f_type` of a tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

fn namespace_inode(link: &Path) -> Option<u64> {
    rustix::fs::stat(link).ok().map(|s| s.st_ino)
}

/// A mount namespace as a process shows it: open (its inode and a descriptor of it), or not
/// (`/proc/PID/ns/mnt` refused, while its mountinfo is readable).
enum Namespace {
    Open(u64, OwnedFd),
    Closed { pid: String, error: rustix::io::Errno },
}

/// Every mount namespace (once, through one of its processes, when it can be opened) that
/// shows a mount of `device`, with the views it shows.
fn namespaces_viewing(device: &str) -> Result<Vec<(Namespace, Vec<View>)>, SealError> {
    let proc_dir =
        std::fs::read_dir("/proc").map_err(|e| fail(format!("cannot list /proc: {e}")))?;
    let mut seen: HashSet<u64> = HashSet::new();
    let mut found = Vec::new();
    for entry in proc_dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let link = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
        // The process may end at any point here: then it is simply not looked at. Any other
        // refusal (EACCES, EPERM: ptrace's rules) is kept, and its table read all the same.
        let ns = match rustix::fs::open(&link, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => {
                let Ok(ns) = rustix::fs::fstat(&fd).map(|s| s.st_ino) else { continue };
                if seen.contains(&ns) {
                    continue;
                }
                Namespace::Open(ns, fd)
            }
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::SRCH) => continue,
            Err(error) => Namespace::Closed { pid: pid.to_owned(), error },
        };
        let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) else {
            continue;
        };
        if let Namespace::Open(ns, _) = &ns {
            // The table is that namespace's only if the PID was not reused meanwhile.
            if namespace_inode(&link) != Some(*ns) {
                continue;
            }
            seen.insert(*ns);
        }
        let views: Vec<View> = mountinfo::parse(&table)
            .into_iter()
            .filter(|m| m.device == device)
            .map(|m| View {
                mount_id: m.id,
                mount_point: PathBuf::from(m.mount_point),
                options: m.options,
            })
            .collect();
        if !views.is_empty() {
            found.push((ns, views));
        }
    }
    Ok(found)
}

/// A mount point as mountinfo shows it, if it is a plain absolute path (no `.` or `..`, no
/// `(deleted)` mark).
fn plain(path: &Path) -> bool {
    path.is_absolute()
        && path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !path.to_string_lossy().ends_with(" (deleted)")
}

/// On a thread of its own, in the namespace `ns`: seals each of `views`.
fn seal_in_namespace(ns: OwnedFd, views: Vec<View>) -> Result<usize, SealError> {
    for v in &views {
        if !plain(&v.mount_point) {
            return Err(fail(format!(
                "a view of the tmpfs is at {:?}, not a plain absolute path: refused",
                v.mount_point
            )));
        }
    }
    // The plugin's own procfs, reached later by descriptor, whatever the namespace has at /proc.
    let fds = rustix::fs::open(
        "/proc/self/fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(format!("cannot open /proc/self/fd: {e}")))?;
    let thread = std::thread::Builder::new()
        .name("vault-secrets-seal".into())
        .spawn(move || -> Result<usize, SealError> {
            // Only this thread's filesystem context (root, cwd) enters the namespace; the thread
            // ends with it.
            #[allow(deprecated)]
            rustix::thread::unshare(UnshareFlags::FS)
                .map_err(|e| fail(format!("unshare(CLONE_FS): {e}")))?;
            rustix::thread::move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Mount))
                .map_err(|e| fail(format!("cannot enter a mount namespace: {e}")))?;
            for view in &views {
                seal_one(&fds, view)?;
            }
            Ok(views.len())
        })
        .map_err(|e| fail(format!("cannot start a thread: {e}")))?;
    thread.join().map_err(|_| fail("the sealing thread panicked"))?
}

/// Inside the view's namespace: opens its mount point without following a symlink, checks it is
/// the root of that very mount, and remounts it read-only through the descriptor.
fn seal_one(fds: &OwnedFd, view: &View) -> Result<(), SealError> {
    let at = view.mount_point.display();
    let fd = rustix::fs::openat2(
        CWD,
        &view.mount_point,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| fail(format!("cannot open the view at {at} in its namespace: {e}")))?;
    let stat = rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
        .map_err(|e| fail(format!("cannot stat the view at {at}: {e}")))?;
    if stat.stx_mnt_id != view.mount_id {
        return Err(fail(format!(
            "the path {at} leads to mount {}, not to the view (mount {}): refused",
            stat.stx_mnt_id, view.mount_id
        )));
    }
    rustix::process::fchdir(fds).map_err(|e| fail(format!("cannot enter /proc/self/fd: {e}")))?;
    let flags = MountFlags::BIND
        | MountFlags::RDONLY
        | MountFlags::NOSUID
        | MountFlags::NODEV
        | MountFlags::NOEXEC;
    let through = fd.as_raw_fd().to_string();
    rustix::mount::mount_remount(through.as_str(), flags, c"")
        .map_err(|e| fail(format!("cannot make the view at {at} read-only: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_is_sealed_when_it_could_write_or_lacks_a_flag() {
        let view = |options: &str| View {
            mount_id: 1,
            mount_point: "/run/secrets".into(),
            options: options.into(),
        };
        assert!(view("rw,nosuid,nodev,relatime").needs(Which::Writable));
        assert!(!view("ro,relatime").needs(Which::Writable));
        assert!(view("ro,relatime").needs(Which::Incomplete));
        assert!(!view("ro,nosuid,nodev,noexec,relatime").needs(Which::Incomplete));
        assert!(!view("ro,nosuid,nodev,noexec,relatime").needs(Which::Writable));
    }

    fn views(ids: &[u64], options: &str) -> Vec<View> {
        ids.iter()
            .map(|&mount_id| View {
                mount_id,
                mount_point: format!("/m/{mount_id}").into(),
                options: options.into(),
            })
            .collect()
    }

    fn open() -> Namespace {
        let fd = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty());
        Namespace::Open(1, fd.unwrap())
    }

    fn closed() -> Namespace {
        Namespace::Closed { pid: "42".into(), error: rustix::io::Errno::ACCESS }
    }

    #[test]
    fn a_closed_namespace_showing_only_mounts_an_open_one_shows_is_passed_over() {
        // The host's namespace, opened through a root process, and a process of another user
        // in it (postgres): the same mounts, by their IDs.
        let found = vec![(open(), views(&[7, 8], "rw")), (closed(), views(&[7, 8], "rw"))];
        let plan = to_seal(found, 0, Which::Writable).unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].1, views(&[7, 8], "rw"));
        // In any order.
        let found = vec![(closed(), views(&[7], "rw")), (open(), views(&[7], "rw"))];
        assert_eq!(to_seal(found, 0, Which::Writable).unwrap().len(), 1);
    }

    #[test]
    fn a_view_to_seal_only_a_closed_namespace_shows_refuses_the_seal() {
        let found = vec![(open(), views(&[7], "rw")), (closed(), views(&[7, 9], "rw"))];
        let e = to_seal(found, 0, Which::Writable).unwrap_err();
        assert!(e.what.contains("/m/9") && e.what.contains("process 42"), "{}", e.what);
        // An ID an open namespace showed, but with other options: another mount given the
        // freed ID while /proc was walked.
        let found = vec![(open(), views(&[7], "ro")), (closed(), views(&[7], "rw"))];
        assert!(to_seal(found, 0, Which::Writable).is_err());
        // Unless it needs no sealing, or is the plugin's own mount.
        let found = vec![(closed(), views(&[9], "ro,nosuid,nodev,noexec"))];
        assert!(to_seal(found, 0, Which::Incomplete).unwrap().is_empty());
        let found = vec![(closed(), views(&[9], "rw"))];
        assert!(to_seal(found, 9, Which::Writable).unwrap().is_empty());
    }

    #[test]
    fn only_plain_absolute_mount_points_are_taken() {
        assert!(plain(Path::new("/run/secrets")));
        assert!(!plain(Path::new("run/secrets")));
        assert!(!plain(Path::new("/run/../etc")));
        assert!(!plain(Path::new("/run/secrets (deleted)")));
    }
}
