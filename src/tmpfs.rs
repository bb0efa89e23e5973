//! Mounting and unmounting the in-memory filesystems: the [`Mounter`] trait, the Linux
//! implementation ([`LinuxMounter`], `mount(2)` through rustix) and a recording fake for unit
//! tests ([`FakeMounter`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rustix::mount::{MountFlags, UnmountFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot mount a tmpfs on {target}")]
    Mount {
        target: PathBuf,
        #[source]
        source: std::io::Error,
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
    fn unmount(&self, target: &Path) -> Result<(), MountError>;
    fn is_mounted(&self, target: &Path) -> bool;
    /// The device (`major:minor`) of the filesystem at `target`: what identifies a tmpfs in
    /// the mount tables of the containers that hold it.
    fn device(&self, target: &Path) -> Option<String>;
}

/// `mount(2)` and `umount2(2)`; needs `CAP_SYS_ADMIN`.
#[derive(Debug)]
pub struct LinuxMounter {
    /// Cleared the first time the kernel refuses `noswap` (before Linux 6.4).
    noswap: AtomicBool,
}

impl Default for LinuxMounter {
    fn default() -> Self {
        LinuxMounter { noswap: AtomicBool::new(true) }
    }
}

impl Mounter for LinuxMounter {
    fn mount_tmpfs(&self, target: &Path, options: &TmpfsOptions) -> Result<(), MountError> {
        let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        let attempt = |noswap: bool| {
            let data = std::ffi::CString::new(options.data(noswap)).expect("no NUL in mount data");
            rustix::mount::mount("vault-secrets", target, "tmpfs", flags, data.as_c_str())
        };
        let mut result = attempt(self.noswap.load(Ordering::Relaxed));
        if result == Err(rustix::io::Errno::INVAL) && self.noswap.load(Ordering::Relaxed) {
            self.noswap.store(false, Ordering::Relaxed);
            tracing::info!("this kernel's tmpfs has no noswap option; mounting without it");
            result = attempt(false);
        }
        result.map_err(|e| MountError::Mount { target: target.to_owned(), source: e.into() })
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

    fn is_mounted(&self, target: &Path) -> bool {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|info| mountinfo_has(&info, target))
            .unwrap_or(false)
    }

    fn device(&self, target: &Path) -> Option<String> {
        let dev = rustix::fs::stat(target).ok()?.st_dev;
        Some(format!("{}:{}", rustix::fs::major(dev), rustix::fs::minor(dev)))
    }
}

/// Whether `/proc/self/mountinfo` text lists a mount at `target`.
fn mountinfo_has(info: &str, target: &Path) -> bool {
    let target = target.to_string_lossy();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| unescape_octal(point) == target)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fake that records what it was asked and keeps a set of "mounted" paths. Like a real
/// unmount, its unmount makes what was written below the target vanish.
#[derive(Debug, Default)]
pub struct FakeMounter {
    pub mounted: Mutex<Vec<(PathBuf, TmpfsOptions)>>,
    pub fail_mount: AtomicBool,
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
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
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
    }

    fn device(&self, target: &Path) -> Option<String> {
        self.is_mounted(target).then(|| format!("fake:{}", target.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_rendered_for_the_kernel() {
        let o = TmpfsOptions { size: 65536, mode: 0o500, uid: 1000, gid: 1001 };
        assert_eq!(o.data(true), "size=65536,mode=0500,uid=1000,gid=1001,noswap");
        assert_eq!(o.data(false), "size=65536,mode=0500,uid=1000,gid=1001");
    }

    #[test]
    fn mountinfo_is_read_with_escapes() {
        let info =
            "36 35 98:0 / /run/vault-secrets/mounts/a/b rw,nosuid - tmpfs vault-secrets rw\n\
                    37 35 98:0 / /run/with\\040space rw - tmpfs x rw\n";
        assert!(mountinfo_has(info, Path::new("/run/vault-secrets/mounts/a/b")));
        assert!(mountinfo_has(info, Path::new("/run/with space")));
        assert!(!mountinfo_has(info, Path::new("/run/vault-secrets/mounts/a")));
    }
}
