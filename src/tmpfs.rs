//! Mounting and unmounting the in-memory filesystems: the [`Mounter`] trait, the Linux
//! implementation ([`LinuxMounter`], `mount(2)` through rustix) and a recording fake for unit
//! tests ([`FakeMounter`]).
//!
//! Each container mount is two mounts of one tmpfs: the tmpfs itself, which only the plugin
//! writes through (below `runtime_dir/files`, mode 0700), and a read-only bind of it
//! (`nosuid,nodev,noexec`) that is what the engine is given. Once its files are written the
//! tmpfs itself — its superblock — is made read-only ([`Mounter::set_read_only`]), so a
//! container gets a read-only view whatever `-v` says and whatever per-mount flags its runtime
//! sets on its bind (Podman 4.3 has runc remount it `rw` without `:ro`). A rewrite first seals
//! every view of the tmpfs per mount ([`Mounter::seal_views`], in [`seal`]), and only then makes
//! the superblock writable for the time of the write.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rustix::mount::{MountFlags, UnmountFlags};

pub mod seal;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot mount a tmpfs on {target}")]
    Mount {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind {from} read-only on {target}")]
    Bind {
        from: PathBuf,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the tmpfs at {target} {}", if *read_only { "read-only" } else { "writable" })]
    Remount {
        target: PathBuf,
        read_only: bool,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make every view of the tmpfs at {target} read-only")]
    Seal {
        target: PathBuf,
        #[source]
        source: seal::SealError,
    },
    #[error("cannot unmount {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How a tmpfs is mounted. Always `nosuid,nodev,noexec`; `noswap` where the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsOptions {
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl TmpfsOptions {
    fn data(&self, noswap: bool) -> String {
        let mut data =
            format!("size={},mode={:04o},uid={},gid={}", self.size, self.mode, self.uid, self.gid);
        if noswap {
            data.push_str(",noswap");
        }
        data
    }
}

/// The mount operations the driver needs.
pub trait Mounter: Send + Sync + 'static {
    fn mount_tmpfs(&self, target: &Path, options: &TmpfsOptions) -> Result<(), MountError>;
    /// Binds `from` on `target`, read-only, `nosuid,nodev,noexec`.
    fn bind_read_only(&self, from: &Path, target: &Path) -> Result<(), MountError>;
    fn unmount(&self, target: &Path) -> Result<(), MountError>;
    fn is_mounted(&self, target: &Path) -> bool;
    /// The device (`major:minor`) of the filesystem at `target`: what identifies a tmpfs in
    /// the mount tables of the containers that hold it.
    fn device(&self, target: &Path) -> Option<String>;
    /// Makes the tmpfs mounted at `target` read-only, or writable, at its superblock (a remount
    /// without `MS_BIND`, keeping `nosuid,nodev,noexec`): what every view of it then is, whatever
    /// its own per-mount flags.
    fn set_read_only(&self, target: &Path, read_only: bool) -> Result<(), MountError>;
    /// Makes the other views of the tmpfs mounted at `target` that `which` picks, in every mount
    /// namespace, `ro,nosuid,nodev,noexec` per mount; returns how many. Blocking (it starts a
    /// thread per namespace that has one to seal).
    fn seal_views(&self, target: &Path, which: seal::Which) -> Result<usize, MountError>;
}

/// `mount(2)` and `umount2(2)`; needs `CAP_SYS_ADMIN`.
#[derive(Debug)]
pub struct LinuxMounter {
    /// Cleared the first time the kernel refuses `noswap` (before Linux 6.4, or in a user
    /// namespace: [`crate::swap`]).
    noswap: AtomicBool,
}

impl Default for LinuxMounter {
    fn default() -> Self {
        LinuxMounter { noswap: AtomicBool::new(true) }
    }
}

impl LinuxMounter {
    /// Sets the size of the tmpfs at `target` (mounted `nosuid,nodev,noexec`, as
    /// [`Mounter::mount_tmpfs`] mounts), keeping what it holds: the private tmpfs an earlier
    /// build mounted smaller.
    pub fn resize_tmpfs(&self, target: &Path, size: u64) -> Result<(), MountError> {
        let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        let data = std::ffi::CString::new(format!("size={size}")).expect("no NUL in mount data");
        rustix::mount::mount_remount(target, flags, data.as_c_str())
            .map_err(|e| MountError::Mount { target: target.to_owned(), source: e.into() })
    }
}

impl Mounter for LinuxMounter {
    /// Mounted read-only, then made writable at its superblock (and on `target` alone): the
    /// copies that mount propagation made meanwhile in other namespaces (a managed plugin's
    /// tmpfs in the host's, a host directory bound `rslave` into a container) stay read-only
    /// per mount, so a rewrite's window needs no namespace entered for them.
    fn mount_tmpfs(&self, target: &Path, options: &TmpfsOptions) -> Result<(), MountError> {
        let flags =
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        let attempt = |noswap: bool| {
            let data = std::ffi::CString::new(options.data(noswap)).expect("no NUL in mount data");
            rustix::mount::mount("vault-secrets", target, "tmpfs", flags, data.as_c_str())
        };
        let mut result = attempt(self.noswap.load(Ordering::Relaxed));
        if result == Err(rustix::io::Errno::INVAL) && self.noswap.load(Ordering::Relaxed) {
            self.noswap.store(false, Ordering::Relaxed);
            // Refused in a user namespace (rootless engines), or unknown to an old kernel.
            match crate::swap::NoSwap::here().reason() {
                Some(reason) => tracing::warn!("{reason}; mounting without noswap"),
                None => tracing::warn!(
                    "the kernel refused tmpfs noswap: secrets may be swapped; mounting without it"
                ),
            }
            result = attempt(false);
        }
        result.map_err(|e| MountError::Mount { target: target.to_owned(), source: e.into() })?;
        self.set_read_only(target, false).inspect_err(|_| {
            let _ = rustix::mount::unmount(target, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH);
        })
    }

    fn bind_read_only(&self, from: &Path, target: &Path) -> Result<(), MountError> {
        let err = |e: rustix::io::Errno| MountError::Bind {
            from: from.to_owned(),
            target: target.to_owned(),
            source: e.into(),
        };
        rustix::mount::mount_bind(from, target).map_err(err)?;
        // A bind takes the flags of what it binds; the remount makes this one read-only.
        let flags = MountFlags::BIND
            | MountFlags::RDONLY
            | MountFlags::NOSUID
            | MountFlags::NODEV
            | MountFlags::NOEXEC;
        rustix::mount::mount_remount(target, flags, c"").map_err(|e| {
            let _ = rustix::mount::unmount(target, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH);
            err(e)
        })
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
            Ok(()) => Ok(()),
            // Still in use (a process kept a file open): detach it, so no new access is possible
            // and the memory is freed when the last user goes.
            Err(rustix::io::Errno::BUSY) => {
                rustix::mount::unmount(target, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH)
                    .map_err(|e| MountError::Unmount {
                        target: target.to_owned(),
                        source: e.into(),
                    })
            }
            Err(e) => Err(MountError::Unmount { target: target.to_owned(), source: e.into() }),
        }
    }

    /// A mount point sits on another device than its parent directory: two `stat`s, where
    /// reading `/proc/self/mountinfo` would cost time in proportion to the host's mounts.
    /// (A bind mount of the same filesystem below it would not show; the plugin binds only
    /// from `runtime_dir/files` to `runtime_dir/mounts`, never within one filesystem.)
    fn is_mounted(&self, target: &Path) -> bool {
        let (Ok(this), Some(Ok(parent))) =
            (rustix::fs::stat(target), target.parent().map(rustix::fs::stat))
        else {
            return false;
        };
        this.st_dev != parent.st_dev
    }

    fn device(&self, target: &Path) -> Option<String> {
        let dev = rustix::fs::stat(target).ok()?.st_dev;
        Some(format!("{}:{}", rustix::fs::major(dev), rustix::fs::minor(dev)))
    }

    fn set_read_only(&self, target: &Path, read_only: bool) -> Result<(), MountError> {
        let mut flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        if read_only {
            flags |= MountFlags::RDONLY;
        }
        // No MS_BIND: the superblock's flags change (the tmpfs's size, owner, mode and noswap
        // stay as they are), and with them this mount's.
        rustix::mount::mount_remount(target, flags, c"").map_err(|e| MountError::Remount {
            target: target.to_owned(),
            read_only,
            source: e.into(),
        })
    }

    fn seal_views(&self, target: &Path, which: seal::Which) -> Result<usize, MountError> {
        seal::seal_views(target, which)
            .map_err(|source| MountError::Seal { target: target.to_owned(), source })
    }
}

/// A fake that records what it was asked and keeps a set of "mounted" paths. Like a real
/// unmount, its unmount makes what was written below the target vanish. A read-only bind is a
/// symlink to what it binds, so that what is written through one path shows at the other.
/// Sealing and the superblock's remounts go to [`FakeMounter::journal`], each `rw`/`ro` with
/// what the tmpfs holds at that moment, so a test can tell what was written in between.
#[derive(Debug, Default)]
pub struct FakeMounter {
    pub mounted: Mutex<Vec<(PathBuf, TmpfsOptions)>>,
    /// Read-only binds: (target, what it binds).
    pub binds: Mutex<Vec<(PathBuf, PathBuf)>>,
    pub fail_mount: AtomicBool,
    /// `seal_views` fails.
    pub fail_seal: AtomicBool,
    /// A read-only `set_read_only` fails with `EBUSY` (a replaced file still open).
    pub busy: AtomicBool,
    /// `seal TARGET`, `rw TARGET [FILE=CONTENTS …]`, `ro TARGET [FILE=CONTENTS …]`.
    pub journal: Mutex<Vec<String>>,
}

impl FakeMounter {
    /// `FILE=CONTENTS` for each file directly in `dir`, sorted.
    fn contents(dir: &Path) -> String {
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let contents = std::fs::read_to_string(e.path()).unwrap_or_default();
                format!("{}={}", e.file_name().to_string_lossy(), contents.trim())
            })
            .collect();
        files.sort();
        files.join(" ")
    }
}

impl Mounter for FakeMounter {
    fn mount_tmpfs(&self, target: &Path, options: &TmpfsOptions) -> Result<(), MountError> {
        if self.fail_mount.load(Ordering::Relaxed) {
            return Err(MountError::Mount {
                target: target.to_owned(),
                source: std::io::Error::other("fake mount failure"),
            });
        }
        self.mounted.lock().unwrap().push((target.to_owned(), options.clone()));
        // A tmpfs's root is owned by its `uid` and `gid`: so is the directory standing for it
        // (where the tests may give it away: as root).
        let _ = std::os::unix::fs::chown(target, Some(options.uid), Some(options.gid));
        Ok(())
    }

    fn bind_read_only(&self, from: &Path, target: &Path) -> Result<(), MountError> {
        let err =
            |source| MountError::Bind { from: from.to_owned(), target: target.to_owned(), source };
        std::fs::remove_dir(target).map_err(err)?;
        std::os::unix::fs::symlink(from, target).map_err(err)?;
        self.binds.lock().unwrap().push((target.to_owned(), from.to_owned()));
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        let mut binds = self.binds.lock().unwrap();
        if let Some(i) = binds.iter().position(|(t, _)| t == target) {
            binds.remove(i);
            let _ = std::fs::remove_file(target);
            let _ = std::fs::create_dir(target);
            return Ok(());
        }
        drop(binds);
        let mut mounted = self.mounted.lock().unwrap();
        let before = mounted.len();
        mounted.retain(|(p, _)| p != target);
        if mounted.len() == before {
            return Err(MountError::Unmount {
                target: target.to_owned(),
                source: std::io::Error::other("not mounted"),
            });
        }
        let _ = std::fs::remove_dir_all(target);
        let _ = std::fs::create_dir(target);
        Ok(())
    }

    fn is_mounted(&self, target: &Path) -> bool {
        self.mounted.lock().unwrap().iter().any(|(p, _)| p == target)
            || self.binds.lock().unwrap().iter().any(|(t, _)| t == target)
    }

    fn device(&self, target: &Path) -> Option<String> {
        self.is_mounted(target).then(|| format!("fake:{}", target.display()))
    }

    fn set_read_only(&self, target: &Path, read_only: bool) -> Result<(), MountError> {
        if read_only && self.busy.load(Ordering::Relaxed) {
            return Err(MountError::Remount {
                target: target.to_owned(),
                read_only,
                source: std::io::Error::from_raw_os_error(rustix::io::Errno::BUSY.raw_os_error()),
            });
        }
        let state = if read_only { "ro" } else { "rw" };
        let line = format!("{state} {} {}", target.display(), Self::contents(target));
        self.journal.lock().unwrap().push(line.trim_end().to_owned());
        Ok(())
    }

    fn seal_views(&self, target: &Path, _which: seal::Which) -> Result<usize, MountError> {
        if self.fail_seal.load(Ordering::Relaxed) {
            return Err(MountError::Seal {
                target: target.to_owned(),
                source: seal::SealError { what: "fake seal failure".into() },
            });
        }
        self.journal.lock().unwrap().push(format!("seal {}", target.display()));
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_point_is_told_by_its_device() {
        let m = LinuxMounter::default();
        assert!(m.is_mounted(Path::new("/proc")));
        assert!(!m.is_mounted(Path::new("/proc/self")));
        assert!(!m.is_mounted(Path::new("/nonexistent/x")));
    }

    #[test]
    fn options_are_rendered_for_the_kernel() {
        let o = TmpfsOptions { size: 65536, mode: 0o500, uid: 1000, gid: 1001 };
        assert_eq!(o.data(true), "size=65536,mode=0500,uid=1000,gid=1001,noswap");
        assert_eq!(o.data(false), "size=65536,mode=0500,uid=1000,gid=1001");
    }
}
