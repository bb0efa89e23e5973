//! Whether a mount's secrets can reach swap.
//!
//! Each tmpfs is mounted `noswap` (Linux 6.4) where the kernel allows it: its pages then never
//! go to a swap device. The kernel refuses `noswap` to a mount made in a user namespace other
//! than the initial one ("Turning off swap in unprivileged tmpfs mounts unsupported"), which is
//! where the plugin runs for rootless Docker and rootless Podman (`docs/rootless.md`), and an
//! older kernel has no such option. Either way the mounts are swappable: [`NoSwap`] says why,
//! [`tmpfs`](crate::tmpfs) logs it once at the first mount, and `check` warns of it with what
//! the operator can do ([`check_report`]).

use std::path::Path;

use crate::report::Finding;

/// Whether the tmpfs of a mount can be kept out of swap, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSwap {
    /// `noswap` is available: the kernel has it and the plugin runs in the initial user
    /// namespace.
    Available,
    /// The plugin runs in a user namespace (rootless Docker or Podman): the kernel refuses
    /// `noswap` there.
    UserNamespace,
    /// The kernel (this release) predates `noswap` (Linux 6.4).
    OldKernel { release: String },
}

impl NoSwap {
    /// What this process can expect, from `/proc/self/uid_map` and the kernel's release.
    pub fn here() -> NoSwap {
        let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let release = release.trim();
        NoSwap::of(&uid_map, release)
    }

    /// [`NoSwap::here`], found once for the process (the metrics' gauge).
    pub fn cached() -> &'static NoSwap {
        static HERE: std::sync::OnceLock<NoSwap> = std::sync::OnceLock::new();
        HERE.get_or_init(NoSwap::here)
    }

    /// [`NoSwap::here`], from the text of a `uid_map` and a kernel release.
    pub fn of(uid_map: &str, release: &str) -> NoSwap {
        if in_user_namespace(uid_map) {
            NoSwap::UserNamespace
        } else if !kernel_has_noswap(release) {
            NoSwap::OldKernel { release: release.to_owned() }
        } else {
            NoSwap::Available
        }
    }

    /// Why a mount is swappable, for a log line or `check` (`None`: it is not).
    pub fn reason(&self) -> Option<String> {
        match self {
            NoSwap::Available => None,
            NoSwap::UserNamespace => {
                Some("tmpfs noswap is refused in a user namespace: secrets may be swapped".into())
            }
            NoSwap::OldKernel { release } => Some(format!(
                "this kernel ({release}) has no tmpfs noswap option (Linux 6.4 and later): secrets may be swapped"
            )),
        }
    }
}

/// Whether a `uid_map` is that of a user namespace other than the initial one: the initial
/// namespace maps every id to itself (`0 0 4294967295`).
pub fn in_user_namespace(uid_map: &str) -> bool {
    let lines: Vec<Vec<&str>> = uid_map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|f: &Vec<_>| !f.is_empty())
        .collect();
    !(lines.len() == 1 && lines[0] == ["0", "0", "4294967295"])
}

/// Whether a kernel release (`6.1.0-18-amd64`) is Linux 6.4 or later.
pub fn kernel_has_noswap(release: &str) -> bool {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (6, 4),
        _ => false,
    }
}

/// The swap areas in use, from the text of `/proc/swaps` (its first column, after the header).
pub fn swap_areas(proc_swaps: &str) -> Vec<String> {
    proc_swaps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// What `check` says of swap: that mounts are kept out of it, or a warning that they are not,
/// why, whether swap is on, and what the operator can do.
pub fn check_report(noswap: &NoSwap, proc_swaps: &str) -> Finding {
    let Some(reason) = noswap.reason() else {
        return Finding::Ok("tmpfs noswap: mounts are kept out of swap".into());
    };
    let areas = swap_areas(proc_swaps);
    let now = if areas.is_empty() {
        "no swap is on now (/proc/swaps)".to_owned()
    } else {
        format!("swap is on: {}", areas.join(", "))
    };
    Finding::Warning(format!(
        "{reason}; {now}: run the host without swap (swapoff -a, and none in /etc/fstab) or with encrypted swap only (dm-crypt with a random key at each boot: /etc/crypttab's swap option)"
    ))
}

/// [`check_report`] for this process and host.
pub fn check_here() -> Finding {
    let swaps = std::fs::read_to_string(Path::new("/proc/swaps")).unwrap_or_default();
    check_report(&NoSwap::here(), &swaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INITIAL: &str = "         0          0 4294967295\n";
    const ROOTLESS: &str = "         0        999          1\n         1     200000      65536\n";

    #[test]
    fn the_initial_user_namespace_maps_every_id_to_itself() {
        assert!(!in_user_namespace(INITIAL));
        assert!(in_user_namespace(ROOTLESS));
        // A namespace that maps all of them, but elsewhere, is not the initial one.
        assert!(in_user_namespace("0 100000 4294967295\n"));
        assert!(in_user_namespace(""));
    }

    #[test]
    fn noswap_came_with_linux_6_4() {
        assert!(!kernel_has_noswap("6.1.0-18-amd64"));
        assert!(!kernel_has_noswap("5.15.0"));
        assert!(kernel_has_noswap("6.4.0"));
        assert!(kernel_has_noswap("6.18.44-fc-v1272"));
        assert!(kernel_has_noswap("7.0"));
        assert!(!kernel_has_noswap("garbage"));
    }

    #[test]
    fn a_user_namespace_is_the_reason_before_the_kernel() {
        assert_eq!(NoSwap::of(INITIAL, "6.12.0"), NoSwap::Available);
        assert_eq!(NoSwap::of(ROOTLESS, "6.12.0"), NoSwap::UserNamespace);
        assert_eq!(NoSwap::of(ROOTLESS, "6.1.0"), NoSwap::UserNamespace);
        assert_eq!(NoSwap::of(INITIAL, "6.1.0"), NoSwap::OldKernel { release: "6.1.0".into() });
        assert_eq!(
            NoSwap::UserNamespace.reason().unwrap(),
            "tmpfs noswap is refused in a user namespace: secrets may be swapped"
        );
        assert!(NoSwap::Available.reason().is_none());
    }

    #[test]
    fn check_warns_of_swappable_mounts_and_says_what_to_do() {
        let header = "Filename\tType\tSize\tUsed\tPriority\n";
        let on = format!("{header}/dev/sda2 partition 1048572 0 -2\n");
        assert_eq!(
            check_report(&NoSwap::Available, &on),
            Finding::Ok("tmpfs noswap: mounts are kept out of swap".into())
        );
        let report = check_report(&NoSwap::UserNamespace, &on).to_string();
        assert!(
            report.starts_with("warning: tmpfs noswap is refused in a user namespace"),
            "{report}"
        );
        assert!(report.contains("swap is on: /dev/sda2"), "{report}");
        assert!(report.contains("swapoff -a") && report.contains("encrypted swap"), "{report}");
        let report =
            check_report(&NoSwap::OldKernel { release: "6.1.0".into() }, header).to_string();
        assert!(report.starts_with("warning: this kernel (6.1.0)"), "{report}");
        assert!(report.contains("no swap is on now"), "{report}");
    }
}
