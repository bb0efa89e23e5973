//! The plugin's counters and latency histograms, kept in [`METRICS`] as it works, and their
//! Prometheus text exposition (format 0.0.4). `metrics_listen` serves them, with gauges read
//! from the driver's status, in [`crate::api::metrics`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::collections::BTreeMap;
use std::sync::Mutex;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// A latency histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; 12],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// The Vault operations timed separately.
pub const VAULT_OPS: [&str; 9] = [
    "token_create",
    "read",
    "revoke",
    "renew_token",
    "renew_lease",
    "lookup",
    "wrapping",
    "login",
    "other",
];

/// Everything counted while the plugin runs.
#[derive(Debug)]
pub struct Metrics {
    pub mounts: Counter,
    pub mount_failures: Counter,
    pub renewals: Counter,
    pub renewal_failures: Counter,
    pub rotations: Counter,
    pub rotation_failures: Counter,
    /// Rewrites held back because a view of the tmpfs could not be made read-only.
    pub seal_failures: Counter,
    pub revocations: Counter,
    pub revocation_failures: Counter,
    pub mount_latency: Histogram,
    vault: [Histogram; 9],
    /// Vault requests that got no answer (no connection, a timeout, a broken connection), by
    /// operation: the part of `vault` a Vault out of reach is.
    vault_unanswered: [Counter; 9],
    /// Connections closed at once because their listener was at its cap, by listener.
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// What Docker users' records take of the private tmpfs, and what they may take.
    pub state_store: StoreGauge,
}

/// Bytes used and bytes available, set together.
#[derive(Debug, Default)]
pub struct StoreGauge {
    used: AtomicU64,
    capacity: AtomicU64,
}

impl StoreGauge {
    pub const fn new() -> StoreGauge {
        StoreGauge { used: AtomicU64::new(0), capacity: AtomicU64::new(0) }
    }

    pub fn set(&self, used: u64, capacity: u64) {
        self.used.store(used, Ordering::Relaxed);
        self.capacity.store(capacity, Ordering::Relaxed);
    }

    /// Bytes used and capacity.
    pub fn get(&self) -> (u64, u64) {
        (self.used.load(Ordering::Relaxed), self.capacity.load(Ordering::Relaxed))
    }
}

/// The process-wide metrics.
pub static METRICS: Metrics = Metrics::new();

/// The operation a Vault API path belongs to.
pub fn vault_op(method: &str, path: &str) -> &'static str {
    match path {
        "auth/token/create" => "token_create",
        "auth/token/revoke-self" => "revoke",
        "auth/token/renew-self" => "renew_token",
        "sys/leases/renew" => "renew_lease",
        "auth/token/lookup-self" => "lookup",
        p if p.starts_with("sys/wrapping/") => "wrapping",
        p if p.ends_with("/login") => "login",
        p if p.starts_with("sys/") => "other",
        _ if method == "GET" || method == "POST" => "read",
        _ => "other",
    }
}

/// The index of `op` in [`VAULT_OPS`] (`other` for an unknown one).
fn vault_index(op: &str) -> usize {
    VAULT_OPS.iter().position(|o| *o == op).unwrap_or(VAULT_OPS.len() - 1)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub const fn new() -> Metrics {
        Metrics {
            mounts: Counter::new(),
            mount_failures: Counter::new(),
            renewals: Counter::new(),
            renewal_failures: Counter::new(),
            rotations: Counter::new(),
            rotation_failures: Counter::new(),
            seal_failures: Counter::new(),
            revocations: Counter::new(),
            revocation_failures: Counter::new(),
            mount_latency: Histogram::new(),
            vault: [const { Histogram::new() }; 9],
            vault_unanswered: [const { Counter::new() }; 9],
            refused: Mutex::new(BTreeMap::new()),
            state_store: StoreGauge::new(),
        }
    }

    pub fn observe_vault(&self, op: &str, d: Duration) {
        self.vault[vault_index(op)].observe(d);
    }

    /// Counts a Vault request of `op` that got no answer (observed in the histogram too).
    pub fn vault_unanswered(&self, op: &str) {
        self.vault_unanswered[vault_index(op)].inc();
    }

    /// Counts `n` more connections refused by `listener` (0 makes it appear in the exposition).
    pub fn refused(&self, listener: &'static str, n: u64) {
        *self.refused.lock().unwrap().entry(listener).or_insert(0) += n;
    }

    /// Connections refused so far, by listener.
    pub fn refused_connections(&self) -> Vec<(&'static str, u64)> {
        self.refused.lock().unwrap().iter().map(|(name, n)| (*name, *n)).collect()
    }

    /// The text exposition of the counters and histograms.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let name = "vault_secrets_build_info";
        let _ = writeln!(
            out,
            "# HELP {name} The running build (always 1): its version and commit.\n# TYPE {name} gauge\n{name}{{version=\"{}\",commit=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            env!("VAULT_SECRETS_COMMIT"),
        );
        let (used, capacity) = self.state_store.get();
        for (name, help, value) in [
            ("vault_secrets_state_store_bytes", "Bytes the records of mounts and swarm tasks take in the private tmpfs (whole pages).", used),
            ("vault_secrets_state_store_capacity_bytes", "Bytes the records of mounts and swarm tasks may take (the rest of the private tmpfs is kept for the plugin's own records); mounts fail beyond it.", capacity),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        let name = "vault_secrets_tmpfs_noswap";
        let _ = writeln!(
            out,
            "# HELP {name} Whether mounts are kept out of swap (1), or may be swapped (0: a user namespace, or a kernel before 6.4).\n# TYPE {name} gauge\n{name} {}",
            u8::from(crate::swap::NoSwap::cached().reason().is_none()),
        );
        let counters = [
            ("vault_secrets_mounts_total", "Mounts served.", &self.mounts),
            ("vault_secrets_mount_failures_total", "Mounts that failed.", &self.mount_failures),
            ("vault_secrets_renewals_total", "Token and lease renewals.", &self.renewals),
            (
                "vault_secrets_renewal_failures_total",
                "Renewals that failed.",
                &self.renewal_failures,
            ),
            (
                "vault_secrets_rotations_total",
                "Fresh generations fetched (rotations).",
                &self.rotations,
            ),
            (
                "vault_secrets_rotation_failures_total",
                "Rotations that failed.",
                &self.rotation_failures,
            ),
            (
                "vault_secrets_seal_failures_total",
                "Rewrites held back (the old files kept) because a container's view of the \
                 tmpfs could not be made read-only first.",
                &self.seal_failures,
            ),
            ("vault_secrets_revocations_total", "Tokens revoked.", &self.revocations),
            (
                "vault_secrets_revocation_failures_total",
                "Revocations that failed (retried).",
                &self.revocation_failures,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.get()
            );
        }
        let name = "vault_secrets_connections_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} Connections closed at once because their listener was at its cap.\n# TYPE {name} counter"
        );
        for (listener, n) in self.refused_connections() {
            let _ = writeln!(out, "{name}{{listener=\"{listener}\"}} {n}");
        }
        let name = "vault_secrets_vault_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Vault request latency by operation.\n# TYPE {name} histogram"
        );
        for (op, histogram) in VAULT_OPS.iter().zip(&self.vault) {
            histogram.write(&mut out, name, &format!("op=\"{op}\""));
        }
        let name = "vault_secrets_vault_unanswered_total";
        let _ = writeln!(
            out,
            "# HELP {name} Vault requests that got no answer (no connection, a timeout, a broken connection), by operation.\n# TYPE {name} counter"
        );
        for (op, counter) in VAULT_OPS.iter().zip(&self.vault_unanswered) {
            let _ = writeln!(out, "{name}{{op=\"{op}\"}} {}", counter.get());
        }
        let name = "vault_secrets_mount_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Mount latency (token, reads, tmpfs, files).\n# TYPE {name} histogram"
        );
        self.mount_latency.write(&mut out, name, "");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_counters_and_histograms() {
        let m = Metrics::new();
        m.mounts.inc();
        m.observe_vault("read", Duration::from_millis(3));
        m.mount_latency.observe(Duration::from_millis(7));
        m.vault_unanswered("renew_lease");
        let text = m.render();
        assert!(text.contains("vault_secrets_vault_unanswered_total{op=\"renew_lease\"} 1\n"));
        assert!(text.contains("vault_secrets_vault_unanswered_total{op=\"read\"} 0\n"));
        let build = format!("vault_secrets_build_info{{version=\"{}\",", env!("CARGO_PKG_VERSION"));
        assert!(text.contains(&build), "{text}");
        assert!(text.contains("vault_secrets_mounts_total 1\n"));
        let noswap = u8::from(crate::swap::NoSwap::here().reason().is_none());
        assert!(text.contains(&format!("vault_secrets_tmpfs_noswap {noswap}\n")), "{text}");
        assert!(
            text.contains(
                "vault_secrets_vault_request_duration_seconds_bucket{op=\"read\",le=\"0.005\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "vault_secrets_vault_request_duration_seconds_bucket{op=\"read\",le=\"0.0025\"} 0\n"
        ));
        assert!(text.contains("vault_secrets_mount_duration_seconds_count 1\n"));
        m.state_store.set(8192, 50_331_648);
        let text = m.render();
        assert!(text.contains("\nvault_secrets_state_store_bytes 8192\n"), "{text}");
        assert!(text.contains("\nvault_secrets_state_store_capacity_bytes 50331648\n"), "{text}");
    }

    #[test]
    fn vault_paths_map_to_operations() {
        assert_eq!(vault_op("POST", "auth/token/create"), "token_create");
        assert_eq!(vault_op("GET", "secret/data/app"), "read");
        assert_eq!(vault_op("POST", "pki/issue/web"), "read");
        assert_eq!(vault_op("PUT", "sys/leases/renew"), "renew_lease");
        assert_eq!(vault_op("POST", "auth/approle/login"), "login");
        assert_eq!(vault_op("GET", "sys/health"), "other");
    }
}
