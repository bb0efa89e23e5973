//! A container's mount table (`/proc/PID/mountinfo` of its main process, the kernel's account)
//! and which of the plugin's tmpfs mounts the engine made for that container.
//!
//! The rule ([`claims`]): the engine's record of the container lists a volume of ours at a
//! destination D, and the container's mount table shows one of the plugin's tmpfs mounts (its
//! root, not a sub-directory) at D, on top of whatever else is at D. A destination that went
//! through a symlink of the image (`/var/run/secrets` on an image whose `/var/run` links to
//! `/run`) is not where the kernel shows the mount: such a volume is matched to a tmpfs of ours
//! sat directly on the container's root filesystem, where only the runtime mounts it. A tmpfs
//! that is merely *seen* — below a bind of the plugin's runtime directory, below a host root
//! bound with `rslave`, under another mount at D — is never claimed. No path inside the
//! container is ever resolved: the mount points are the kernel's, and a container cannot
//! change them (it can rename directories above its mount points, which only moves them away
//! from D).

use std::collections::HashSet;

/// The source name of every tmpfs the plugin mounts (what `mount` shows as its device).
pub const TMPFS_SOURCE: &str = "vault-secrets";

/// One line of a mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount's ID, unique in its namespace.
    pub id: u64,
    /// The ID of the mount it sits on (itself for the namespace's root).
    pub parent: u64,
    /// `major:minor` of the filesystem.
    pub device: String,
    /// The directory of the filesystem that is mounted (`/` for the whole of it).
    pub root: String,
    /// Where it is mounted, relative to the process's root, unescaped.
    pub mount_point: String,
    /// The mount's own options (`ro,nosuid,…`: this mount's flags, not its superblock's).
    pub options: String,
    pub fstype: String,
    pub source: String,
}

impl MountEntry {
    /// One of the plugin's tmpfs mounts, whole.
    fn plugins_tmpfs(&self) -> bool {
        self.fstype == "tmpfs" && self.source == TMPFS_SOURCE && self.root == "/"
    }
}

/// The entries of mountinfo text; a line that does not parse is left out.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPER_OPTIONS`.
fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mut left = left.split(' ');
    let id = left.next()?.parse().ok()?;
    let parent = left.next()?.parse().ok()?;
    let device = left.next()?.to_owned();
    let root = unescape(left.next()?);
    let mount_point = unescape(left.next()?);
    let options = left.next()?.to_owned();
    let mut right = right.split(' ');
    let fstype = right.next()?.to_owned();
    let source = unescape(right.next()?);
    Some(MountEntry { id, parent, device, root, mount_point, options, fstype, source })
}

/// The kernel escapes space, tab, newline and backslash in paths as `\ooo` (octal).
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One volume of ours in the engine's record of a container: its name and destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeUse {
    pub volume: String,
    pub destination: String,
}

/// A tmpfs of the plugin that the engine mounted for the container: its device, and the
/// volumes of the container it can be a mount of (one, unless it was found through a symlinked
/// destination and the container has several such volumes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub device: String,
    pub volumes: Vec<String>,
}

/// The plugin's tmpfs mounts that the engine made for a container, by the rule in the module
/// documentation: from its mount `table` and the volumes of ours its record lists (`uses`).
pub fn claims(table: &[MountEntry], uses: &[VolumeUse]) -> Vec<Claim> {
    // A mount is covered when another sits on it at the same mount point.
    let covered: HashSet<u64> = table
        .iter()
        .filter(|e| e.parent != e.id)
        .filter_map(|e| table.iter().find(|p| p.id == e.parent && p.mount_point == e.mount_point))
        .map(|p| p.id)
        .collect();
    let top = |e: &&MountEntry| !covered.contains(&e.id);
    let mut found = Vec::new();
    let mut unresolved: Vec<String> = Vec::new();
    for u in uses {
        match table.iter().filter(top).find(|e| e.mount_point == u.destination) {
            Some(e) if e.plugins_tmpfs() => {
                found.push(Claim { device: e.device.clone(), volumes: vec![u.volume.clone()] })
            }
            Some(_) => {} // something else covers the volume at its destination
            None if !unresolved.contains(&u.volume) => unresolved.push(u.volume.clone()),
            None => {}
        }
    }
    let root = table.iter().filter(top).find(|e| e.mount_point == "/").map(|e| e.id);
    if let (false, Some(root)) = (unresolved.is_empty(), root) {
        let destinations: HashSet<&str> = uses.iter().map(|u| u.destination.as_str()).collect();
        for e in table.iter().filter(top) {
            if e.plugins_tmpfs()
                && e.parent == root
                && e.id != root
                && !destinations.contains(e.mount_point.as_str())
            {
                found.push(Claim { device: e.device.clone(), volumes: unresolved.clone() });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uses(list: &[(&str, &str)]) -> Vec<VolumeUse> {
        list.iter()
            .map(|(v, d)| VolumeUse { volume: (*v).into(), destination: (*d).into() })
            .collect()
    }

    fn claim(device: &str, volumes: &[&str]) -> Claim {
        Claim { device: device.into(), volumes: volumes.iter().map(|v| (*v).into()).collect() }
    }

    /// A container's root, its own volume at /s, and the plugin's mounts directory bound at /x
    /// (`rslave`): the other container's tmpfs shows below /x.
    const WATCHER: &str = "\
100 90 0:41 / / rw,relatime master:3 - overlay overlay rw,lowerdir=/l
101 100 0:43 / /s ro,relatime - tmpfs vault-secrets rw,size=1024k,mode=500
102 100 0:20 /vault-secrets/mounts /x rw,relatime master:7 - tmpfs tmpfs rw
103 102 0:44 / /x/app/0b1c ro,nosuid,nodev,noexec,relatime master:9 - tmpfs vault-secrets rw
104 100 0:5 / /dev rw,nosuid - tmpfs tmpfs rw,mode=755
";

    #[test]
    fn mountinfo_lines_are_parsed_and_their_paths_unescaped() {
        let text = "36 35 98:0 /mnt\\0401 /a\\040b\\134c rw master:1 - ext3 /dev/my\\040disk rw\n\
                    garbage line\n\
                    37 36 0:44 / /s ro - tmpfs vault-secrets rw\n";
        let entries = parse(text);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].root, "/mnt 1");
        assert_eq!(entries[0].mount_point, "/a b\\c");
        assert_eq!(entries[0].source, "/dev/my disk");
        assert_eq!((entries[1].id, entries[1].parent), (37, 36));
        assert_eq!(entries[1].device, "0:44");
        assert!(entries[1].plugins_tmpfs());
    }

    #[test]
    fn a_tmpfs_seen_through_a_bind_of_the_mounts_directory_is_not_claimed() {
        let table = parse(WATCHER);
        assert_eq!(claims(&table, &uses(&[("app", "/s")])), [claim("0:43", &["app"])]);
        // Nothing at its destination (a symlink of the image on the way): the tmpfs on its
        // root is its own; 0:44, on /x, never.
        assert_eq!(claims(&table, &uses(&[("app", "/elsewhere")])), [claim("0:43", &["app"])]);
        assert_eq!(claims(&table, &[]), []);
    }

    #[test]
    fn the_engines_mount_on_top_wins_over_one_beneath_it_at_the_same_point() {
        // The mounts directory bound at /x, then the container's own volume mounted on the
        // other container's tmpfs at /x/app/0b1c (or tucked beneath it by propagation).
        let over = "100 90 0:41 / / rw - overlay overlay rw\n\
                    102 100 0:20 /vault-secrets/mounts /x rw - tmpfs tmpfs rw\n\
                    103 102 0:44 / /x/app/0b1c ro - tmpfs vault-secrets rw\n\
                    104 103 0:43 / /x/app/0b1c ro - tmpfs vault-secrets rw\n";
        let own = uses(&[("app", "/x/app/0b1c")]);
        assert_eq!(claims(&parse(over), &own), [claim("0:43", &["app"])]);
        let tucked = "100 90 0:41 / / rw - overlay overlay rw\n\
                      102 100 0:20 /vault-secrets/mounts /x rw - tmpfs tmpfs rw\n\
                      104 103 0:43 / /x/app/0b1c ro - tmpfs vault-secrets rw\n\
                      103 102 0:44 / /x/app/0b1c ro - tmpfs vault-secrets rw\n";
        assert_eq!(claims(&parse(tucked), &own), [claim("0:43", &["app"])]);
        // Something else on top of the volume: nothing is claimed.
        let hidden = "100 90 0:41 / / rw - overlay overlay rw\n\
                      101 100 0:43 / /s ro - tmpfs vault-secrets rw\n\
                      105 101 0:60 / /s rw - tmpfs tmpfs rw\n";
        assert_eq!(claims(&parse(hidden), &uses(&[("app", "/s")])), []);
    }

    #[test]
    fn a_destination_through_a_symlink_is_matched_on_the_containers_root_only() {
        // `-v app:/var/run/secrets` on an image whose /var/run links to /run.
        let table = "100 90 0:41 / / rw - overlay overlay rw\n\
                     101 100 0:43 / /run/secrets ro - tmpfs vault-secrets rw\n\
                     102 100 0:20 /vault-secrets/mounts /x rw - tmpfs tmpfs rw\n\
                     103 102 0:44 / /x/app/0b1c ro - tmpfs vault-secrets rw\n";
        let table = parse(table);
        let symlinked = uses(&[("app", "/var/run/secrets")]);
        assert_eq!(claims(&table, &symlinked), [claim("0:43", &["app"])]);
        // Matched at their own destinations first; only the unmatched ones are candidates.
        let both = uses(&[("app", "/run/secrets"), ("db", "/var/run/db")]);
        assert_eq!(claims(&table, &both), [claim("0:43", &["app"])]);
        // A sub-directory of a tmpfs bound on the root is not a volume mount.
        let sub = "100 90 0:41 / / rw - overlay overlay rw\n\
                   101 100 0:43 /inner /run/secrets ro - tmpfs vault-secrets rw\n";
        assert_eq!(claims(&parse(sub), &symlinked), []);
    }

    #[test]
    fn a_shared_tmpfs_is_claimed_at_each_destination() {
        // Podman mounts a volume once and binds it into every container that uses it.
        let table = "1 0 0:41 / / rw - overlay overlay rw\n\
                     2 1 0:45 / /s ro,nosuid,nodev - tmpfs vault-secrets rw\n\
                     3 1 0:45 / /t ro,nosuid,nodev - tmpfs vault-secrets rw\n";
        let both = uses(&[("app", "/s"), ("app", "/t")]);
        assert_eq!(
            claims(&parse(table), &both),
            [claim("0:45", &["app"]), claim("0:45", &["app"])]
        );
    }
}
