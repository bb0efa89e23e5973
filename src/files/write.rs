//! Writing a mount's files into its tmpfs, which a container may have seen and shaped.
//!
//! A container owns everything inside its mount, and the plugin runs as root, so no path inside
//! the tmpfs is ever followed: the root is opened once (`O_DIRECTORY | O_NOFOLLOW`), and every
//! operation below it is relative to a directory file descriptor, one name at a time, with
//! `O_NOFOLLOW` (a symlink fails the open, it is never resolved). Files are only ever created
//! (`O_CREAT | O_EXCL`) and renamed into place, so nothing existing is opened for writing; owner
//! and mode are set on the opened fd. Whatever is in the way under a name the plugin needs — a
//! symlink, a FIFO, a device node, a directory where a file belongs — is removed by name
//! (`unlinkat`, which never follows), never opened; a directory is emptied through its own fd.
//! Opens carry `O_NONBLOCK`, so even a FIFO that appears between two calls cannot stall.
//!
//! Whether a file changed is told from [`Digests`] of what was written (SHA-256), never by
//! reading the tmpfs back.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use super::{File, Ownership};

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}")]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The SHA-256 of each file as last written, by its path in the volume: how a rewrite knows
/// what changed without reading the tmpfs. Kept with the mount's record (in the private tmpfs),
/// so a restarted plugin does not rewrite, and signal, what did not change. `Debug` shows only
/// how many there are.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Digests(BTreeMap<String, String>);

impl std::fmt::Debug for Digests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digests({} files)", self.0.len())
    }
}

impl Digests {
    /// Whether `files` are exactly what was last written (the same paths, the same contents):
    /// then a rewrite changes nothing.
    pub fn unchanged(&self, files: &[File]) -> bool {
        self.0.len() == files.len()
            && files.iter().all(|f| self.0.get(&key(&f.path)) == Some(&Digests::of(&f.contents)))
    }

    fn of(contents: &[u8]) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, contents);
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// How many times one name is cleared and tried again before giving up: a container racing
/// the plugin (with a writable view, which the plugin does not give) could keep putting things
/// back; the write then fails and is retried on the next round rather than spinning.
const ATTEMPTS: usize = 8;

/// How deep a directory tree left in the tmpfs is emptied; deeper is an error, not a stack
/// overflow.
const MAX_DEPTH: usize = 16;

/// The longest file name Linux takes, in bytes.
const NAME_MAX: usize = 255;

const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NONBLOCK);

const NEW_FILE: OFlags = OFlags::WRONLY
    .union(OFlags::CREATE)
    .union(OFlags::EXCL)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NONBLOCK);

/// Writes `files` into `root`, a freshly mounted, empty tmpfs that no container sees yet: each
/// file created at once with its final owner and mode, no temporary files. Returns their digests.
pub fn write_new(root: &Path, files: &[File], owner: Ownership) -> Result<Digests, WriteError> {
    no_clash(root, files)?;
    let mut tree = Tree::open(root, owner)?;
    let mut digests = Digests::default();
    for file in files {
        let (dir, name) = tree.parent_of(&file.path)?;
        create(dir, name, &file.contents, owner).map_err(|e| error(root, &file.path, e))?;
        digests.0.insert(key(&file.path), Digests::of(&file.contents));
    }
    Ok(digests)
}

/// Writes `files` below `root`, each atomically (a new temporary file, then `renameat`), and
/// removes whatever this write does not name. A file whose digest is the one last written, and
/// that is still a regular file of the right size, owner and mode, is left alone. Returns
/// whether anything changed; `digests` becomes what is there now.
pub fn write(
    root: &Path,
    files: &[File],
    owner: Ownership,
    digests: &mut Digests,
) -> Result<bool, WriteError> {
    no_clash(root, files)?;
    let mut tree = Tree::open(root, owner)?;
    let mut wanted: BTreeSet<PathBuf> = BTreeSet::new();
    for file in files {
        wanted.insert(file.path.clone());
        wanted.extend(file.path.ancestors().skip(1).map(Path::to_owned));
    }
    let mut changed = false;
    for file in files {
        let digest = Digests::of(&file.contents);
        let (dir, name) = tree.parent_of(&file.path)?;
        let len = file.contents.len() as u64;
        if digests.0.get(&key(&file.path)) == Some(&digest) && in_place(dir, name, len, owner) {
            continue;
        }
        let siblings = |n: &OsStr| wanted.contains(&file.path.with_file_name(n));
        replace(dir, name, &file.contents, owner, siblings)
            .map_err(|e| error(root, &file.path, e))?;
        digests.0.insert(key(&file.path), digest);
        changed = true;
    }
    let removed = remove_unwanted(tree.root.as_fd(), Path::new(""), &wanted, 0)
        .map_err(|e| error(root, Path::new(""), e))?;
    digests.0.retain(|path, _| wanted.contains(Path::new(path)));
    Ok(changed || removed)
}

/// Refuses a set of files in which one's path is the directory of another: writing both would
/// replace one with the other.
fn no_clash(root: &Path, files: &[File]) -> Result<(), WriteError> {
    let paths: BTreeSet<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    for file in files {
        if let Some(dir) = file.path.ancestors().skip(1).find(|a| paths.contains(a)) {
            let message = format!(
                "{} is both a file and the directory of {}",
                dir.display(),
                file.path.display()
            );
            return Err(error(root, dir, io::Error::other(message)));
        }
    }
    Ok(())
}

fn error(root: &Path, rel: &Path, source: io::Error) -> WriteError {
    WriteError { path: root.join(rel), source }
}

fn key(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The root of a volume's tree and the sub-directories opened so far, each an fd.
struct Tree {
    path: PathBuf,
    root: OwnedFd,
    dirs: BTreeMap<PathBuf, OwnedFd>,
    owner: Ownership,
}

impl Tree {
    fn open(path: &Path, owner: Ownership) -> Result<Tree, WriteError> {
        let root = rustix::fs::open(path, DIR, Mode::empty())
            .map_err(|e| WriteError { path: path.to_owned(), source: e.into() })?;
        Ok(Tree { path: path.to_owned(), root, dirs: BTreeMap::new(), owner })
    }

    fn error(&self, rel: &Path, source: io::Error) -> WriteError {
        error(&self.path, rel, source)
    }

    /// The directory fd a relative file path lives in (opened, or made, one name at a time)
    /// and the file's own name.
    fn parent_of<'p>(&mut self, rel: &'p Path) -> Result<(BorrowedFd<'_>, &'p OsStr), WriteError> {
        let mut names = Vec::new();
        for component in rel.components() {
            match component {
                Component::Normal(name) => names.push(name),
                // Rendering never makes these; refuse rather than resolve them.
                _ => return Err(self.error(rel, io::Error::other("not a plain relative path"))),
            }
        }
        let Some(name) = names.pop() else {
            return Err(self.error(rel, io::Error::other("an empty file name")));
        };
        let mut at = PathBuf::new();
        for dir in &names {
            let parent = at.clone();
            at.push(dir);
            if !self.dirs.contains_key(&at) {
                let parent_fd = self.dirs.get(&parent).map_or(self.root.as_fd(), |fd| fd.as_fd());
                let fd = open_dir(parent_fd, dir, self.owner).map_err(|e| self.error(&at, e))?;
                self.dirs.insert(at.clone(), fd);
            }
        }
        let fd = self.dirs.get(&at).map_or(self.root.as_fd(), |fd| fd.as_fd());
        Ok((fd, name))
    }
}

/// Opens the sub-directory `name` of `dir`, making it when missing, owned and moded as asked.
/// Anything else under that name (a symlink, a file, a FIFO) is removed by name first.
fn open_dir(dir: BorrowedFd<'_>, name: &OsStr, owner: Ownership) -> io::Result<OwnedFd> {
    for _ in 0..ATTEMPTS {
        match rustix::fs::openat(dir, name, DIR, Mode::empty()) {
            Ok(fd) => {
                // Only what differs is set: a directory as it should be needs no write (the
                // tmpfs is read-only between rewrites).
                let stat = rustix::fs::fstat(&fd)?;
                if stat.st_uid != owner.uid || stat.st_gid != owner.gid {
                    rustix::fs::fchown(&fd, Some(uid(owner)), Some(gid(owner)))?;
                }
                if stat.st_mode & 0o7777 != owner.dir_mode {
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(owner.dir_mode))?;
                }
                return Ok(fd);
            }
            Err(Errno::NOENT) => match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            },
            // A symlink (ELOOP under O_NOFOLLOW) or a non-directory: removed, never followed.
            Err(Errno::LOOP | Errno::NOTDIR) => remove_entry(dir, name, 0)?,
            Err(e) => return Err(e.into()),
        }
    }
    Err(raced(name))
}

/// Creates `name` in `dir` with `contents`, owner and mode; it must not exist.
fn create(dir: BorrowedFd<'_>, name: &OsStr, contents: &[u8], owner: Ownership) -> io::Result<()> {
    let fd = rustix::fs::openat(dir, name, NEW_FILE, Mode::from_raw_mode(0o600))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(contents)?;
    rustix::fs::fchown(&file, Some(uid(owner)), Some(gid(owner)))?;
    rustix::fs::fchmod(&file, Mode::from_raw_mode(owner.mode))?;
    Ok(())
}

/// Puts `contents` under `name` atomically: a temporary file beside it (a name no wanted file
/// has), created anew, then renamed over it.
fn replace(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    contents: &[u8],
    owner: Ownership,
    wanted: impl Fn(&OsStr) -> bool,
) -> io::Result<()> {
    let temp = temp_name(name, wanted);
    for _ in 0..ATTEMPTS {
        remove_entry(dir, &temp, 0)?; // whatever an earlier run or a container left there
        match create(dir, &temp, contents, owner) {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(Errno::EXIST.raw_os_error()) => continue,
            Err(e) => {
                let _ = rustix::fs::unlinkat(dir, &temp, AtFlags::empty());
                return Err(e);
            }
        }
    }
    for _ in 0..ATTEMPTS {
        match rustix::fs::renameat(dir, &temp, dir, name) {
            Ok(()) => return Ok(()),
            // A directory is where the file belongs: removed through its own fd, then again.
            Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST | Errno::NOTDIR) => {
                remove_entry(dir, name, 0)?
            }
            Err(e) => {
                let _ = rustix::fs::unlinkat(dir, &temp, AtFlags::empty());
                return Err(e.into());
            }
        }
    }
    let _ = rustix::fs::unlinkat(dir, &temp, AtFlags::empty());
    Err(raced(name))
}

/// The name of the temporary file beside `name`: `.NAME.tmp`, within the 255 bytes a name may
/// have (a long NAME is cut), and never a name this write keeps (a key of the secret may be
/// called `.password.tmp`: then `.password~.tmp`, and so on).
fn temp_name(name: &OsStr, wanted: impl Fn(&OsStr) -> bool) -> OsString {
    let mut suffix = b".tmp".to_vec();
    loop {
        let room = NAME_MAX - 1 - suffix.len();
        let stem = &name.as_bytes()[..name.len().min(room)];
        let temp = OsStr::from_bytes(&[b".", stem, &suffix].concat()).to_owned();
        if !wanted(&temp) {
            return temp;
        }
        suffix.insert(0, b'~');
    }
}

/// Whether `name` in `dir` is a regular file of `len` bytes with the owner and mode asked:
/// metadata only (`AT_SYMLINK_NOFOLLOW`), nothing is opened.
fn in_place(dir: BorrowedFd<'_>, name: &OsStr, len: u64, owner: Ownership) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
        FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
            && st.st_size as u64 == len
            && st.st_uid == owner.uid
            && st.st_gid == owner.gid
            && st.st_mode & 0o7777 == owner.mode
    })
}

/// Removes what `wanted` does not name below `rel`; returns whether anything was removed.
fn remove_unwanted(
    dir: BorrowedFd<'_>,
    rel: &Path,
    wanted: &BTreeSet<PathBuf>,
    depth: usize,
) -> io::Result<bool> {
    let mut removed = false;
    for name in entries(dir)? {
        let path = rel.join(&name);
        if !wanted.contains(&path) {
            remove_entry(dir, &name, depth)?;
            removed = true;
        } else if wanted.iter().any(|w| w.parent() == Some(path.as_path())) {
            // A directory of the volume (`path.NAME`): opened without following, then its own
            // entries checked. (`write` made it a directory a moment ago.)
            if let Ok(sub) = rustix::fs::openat(dir, &name, DIR, Mode::empty()) {
                removed |= remove_unwanted(sub.as_fd(), &path, wanted, depth + 1)?;
            }
        }
    }
    Ok(removed)
}

/// The names in a directory, read through its fd (`.` and `..` left out).
fn entries(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(names)
}

/// Removes `name` from `dir` whatever it is, without following it: `unlinkat` for anything but
/// a directory; a directory is opened (`O_NOFOLLOW`), emptied through its fd, then removed.
fn remove_entry(dir: BorrowedFd<'_>, name: &OsStr, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!("directories nested deeper than {MAX_DEPTH}")));
    }
    for _ in 0..ATTEMPTS {
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => return Ok(()),
            Err(Errno::ISDIR | Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
        match rustix::fs::openat(dir, name, DIR, Mode::empty()) {
            Ok(sub) => {
                for entry in entries(sub.as_fd())? {
                    remove_entry(sub.as_fd(), &entry, depth + 1)?;
                }
                match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
                    Ok(()) | Err(Errno::NOENT) => return Ok(()),
                    // Refilled or swapped for a non-directory meanwhile: once more.
                    Err(Errno::NOTEMPTY | Errno::NOTDIR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(Errno::NOENT) => return Ok(()),
            Err(Errno::LOOP | Errno::NOTDIR) => {} // swapped for a non-directory: unlink it
            Err(e) => return Err(e.into()),
        }
    }
    Err(raced(name))
}

fn raced(name: &OsStr) -> io::Error {
    io::Error::other(format!(
        "{:?} kept changing while the plugin replaced it; will try again",
        name.to_string_lossy()
    ))
}

fn uid(owner: Ownership) -> Uid {
    Uid::from_raw(owner.uid)
}

fn gid(owner: Ownership) -> Gid {
    Gid::from_raw(owner.gid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use zeroize::Zeroizing;

    fn owner() -> Ownership {
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        Ownership { uid, gid, mode: 0o440, dir_mode: 0o550 }
    }

    fn file(path: &str, contents: &str) -> File {
        File { path: path.into(), contents: Zeroizing::new(contents.as_bytes().to_vec()) }
    }

    /// A volume tree and a directory outside it that must never be touched.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "host file").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, root, outside)
    }

    fn untouched(outside: &Path) {
        let names: Vec<_> =
            std::fs::read_dir(outside).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![OsString::from("keep")], "nothing written outside the volume");
        assert_eq!(std::fs::read_to_string(outside.join("keep")).unwrap(), "host file");
        let mode = std::fs::metadata(outside).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755, "the outside directory's mode is unchanged");
    }

    #[test]
    fn a_symlinked_sub_directory_is_replaced_never_followed() {
        let (_d, root, outside) = setup();
        let files = [file("a", "1"), file("db/password", "secret")];
        let mut digests = write_new(&root, &files, owner()).unwrap();
        std::fs::set_permissions(root.join("db"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::remove_dir_all(root.join("db")).unwrap();
        symlink(&outside, root.join("db")).unwrap();
        assert!(write(&root, &files, owner(), &mut digests).unwrap());
        untouched(&outside);
        assert!(std::fs::symlink_metadata(root.join("db")).unwrap().is_dir());
        assert_eq!(std::fs::read_to_string(root.join("db/password")).unwrap(), "secret");
    }

    #[test]
    fn a_symlink_a_fifo_or_a_directory_in_a_file_s_place_is_removed_by_name() {
        let (_d, root, outside) = setup();
        let files = [file("link", "1"), file("fifo", "2"), file("dir", "3"), file("same", "4")];
        let mut digests = write_new(&root, &files, owner()).unwrap();
        for name in ["link", "fifo", "dir"] {
            std::fs::remove_file(root.join(name)).unwrap();
        }
        symlink(outside.join("keep"), root.join("link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        std::fs::create_dir(root.join("dir")).unwrap();
        symlink(&outside, root.join("dir/escape")).unwrap();
        // A temporary name taken by a symlink to the outside: removed, not written through.
        symlink(outside.join("keep"), root.join(".same.tmp")).unwrap();
        std::fs::remove_file(root.join("same")).unwrap();
        assert!(write(&root, &files, owner(), &mut digests).unwrap());
        untouched(&outside);
        for (name, contents) in [("link", "1"), ("fifo", "2"), ("dir", "3"), ("same", "4")] {
            let meta = std::fs::symlink_metadata(root.join(name)).unwrap();
            assert!(meta.is_file(), "{name} is a regular file again");
            assert_eq!(std::fs::read_to_string(root.join(name)).unwrap(), contents);
        }
        assert!(std::fs::symlink_metadata(root.join(".same.tmp")).is_err());
    }

    #[test]
    fn unwanted_entries_are_removed_without_following_them() {
        let (_d, root, outside) = setup();
        let files = [file("a", "1")];
        let mut digests = write_new(&root, &files, owner()).unwrap();
        symlink(&outside, root.join("gone-link")).unwrap();
        std::fs::create_dir_all(root.join("gone/deeper")).unwrap();
        symlink(&outside, root.join("gone/deeper/escape")).unwrap();
        assert!(write(&root, &files, owner(), &mut digests).unwrap());
        untouched(&outside);
        let names: Vec<_> =
            std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![OsString::from("a")]);
    }

    #[test]
    fn changes_are_told_by_digest_and_metadata_not_by_reading_back() {
        let (_d, root, _outside) = setup();
        let files = [file("a", "1")];
        let mut digests = write_new(&root, &files, owner()).unwrap();
        assert!(!write(&root, &files, owner(), &mut digests).unwrap());
        // Same size, other contents, and the digest says so: rewritten.
        assert!(write(&root, &[file("a", "2")], owner(), &mut digests).unwrap());
        assert_eq!(std::fs::read_to_string(root.join("a")).unwrap(), "2");
        // A mode changed behind the plugin's back: put right.
        std::fs::set_permissions(root.join("a"), std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(write(&root, &[file("a", "2")], owner(), &mut digests).unwrap());
        let mode = std::fs::metadata(root.join("a")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o440);
        assert_eq!(format!("{digests:?}"), "Digests(1 files)", "Debug shows no digest");
    }

    #[test]
    fn a_key_of_255_bytes_is_rewritten_and_temporary_names_never_take_a_kept_one() {
        let (_d, root, _outside) = setup();
        let long = "k".repeat(255);
        let mut digests = write_new(&root, &[file(&long, "1")], owner()).unwrap();
        assert!(write(&root, &[file(&long, "2")], owner(), &mut digests).unwrap());
        assert_eq!(std::fs::read_to_string(root.join(&long)).unwrap(), "2");
        let temp = temp_name(OsStr::new(&long), |_| false);
        assert_eq!(temp.len(), NAME_MAX);
        let kept = |n: &OsStr| n == ".a.tmp" || n == ".a~.tmp";
        assert_eq!(temp_name(OsStr::new("a"), kept), ".a~~.tmp");
    }

    #[test]
    fn a_root_that_is_a_symlink_is_refused() {
        let (d, _root, outside) = setup();
        let link = d.path().join("link");
        symlink(&outside, &link).unwrap();
        assert!(write_new(&link, &[file("a", "1")], owner()).is_err());
        untouched(&outside);
    }
}
