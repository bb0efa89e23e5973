//! Prometheus metrics on `metrics_listen` (`GET /metrics`, text format 0.0.4): counters and
//! latency histograms kept in [`METRICS`] as the plugin works, and gauges read from the
//! driver's status at each scrape.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;

use crate::driver::{Driver, Edges, VolumeStatus};
use crate::listener::Limits;

/// `metrics_listen`'s bounds. Any local user can reach it, so its cap is what keeps a flood of
/// connections from the plugin's descriptors: 32 is a few Prometheus servers (each keeps one
/// connection per target) with room to spare. A head within 10 s (idle keep-alive connections
/// included: Prometheus reconnects at the next scrape), and a reply within 10 s, Prometheus's
/// default `scrape_timeout`; a scrape takes milliseconds.
pub const LIMITS: Limits = Limits {
    name: "metrics",
    connections: 32,
    header_read: Duration::from_secs(10),
    request: Duration::from_secs(10),
};

/// `GET /metrics` over a driver.
pub fn router<E: Edges>(driver: Arc<Driver<E>>) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(scrape::<E>)).with_state(driver)
}

async fn scrape<E: Edges>(State(driver): State<Arc<Driver<E>>>) -> impl IntoResponse {
    let body = METRICS.render(&driver.status().await);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

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
    pub revocations: Counter,
    pub revocation_failures: Counter,
    pub mount_latency: Histogram,
    vault: [Histogram; 9],
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
            revocations: Counter::new(),
            revocation_failures: Counter::new(),
            mount_latency: Histogram::new(),
            vault: [const { Histogram::new() }; 9],
        }
    }

    pub fn observe_vault(&self, op: &str, d: Duration) {
        let i = VAULT_OPS.iter().position(|o| *o == op).unwrap_or(VAULT_OPS.len() - 1);
        self.vault[i].observe(d);
    }

    /// The text exposition, with gauges from `volumes`.
    pub fn render(&self, volumes: &[VolumeStatus]) -> String {
        let mut out = String::new();
        let mounts: Vec<_> = volumes.iter().flat_map(|v| &v.mounts).collect();
        let leases: Vec<_> = mounts.iter().flat_map(|m| &m.leases).collect();
        let gauge = |out: &mut String, name: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        };
        gauge(&mut out, "vault_secrets_volumes", "Volumes defined.", volumes.len().to_string());
        gauge(
            &mut out,
            "vault_secrets_mounts_active",
            "Active container mounts.",
            mounts.len().to_string(),
        );
        let _ = writeln!(out, "# HELP vault_secrets_leases Leases held, by state (renew: still renewable; replace: to be replaced by a fresh secret).\n# TYPE vault_secrets_leases gauge");
        for state in ["renew", "replace"] {
            let n = leases.iter().filter(|l| l.state == state).count();
            let _ = writeln!(out, "vault_secrets_leases{{state=\"{state}\"}} {n}");
        }
        let nearest = mounts
            .iter()
            .flat_map(|m| {
                m.leases.iter().filter_map(|l| l.expires_in_secs).chain(m.token_expires_in_secs)
            })
            .min();
        if let Some(secs) = nearest {
            gauge(
                &mut out,
                "vault_secrets_nearest_expiry_seconds",
                "Seconds until the nearest token or lease expiry.",
                secs.to_string(),
            );
        }
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
        for (listener, n) in crate::listener::refused_connections() {
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
    fn exposition_has_gauges_counters_and_histograms() {
        let m = Metrics::new();
        m.mounts.inc();
        m.observe_vault("read", Duration::from_millis(3));
        m.mount_latency.observe(Duration::from_millis(7));
        let text = m.render(&[]);
        assert!(text.contains("vault_secrets_volumes 0\n"));
        assert!(text.contains("vault_secrets_mounts_total 1\n"));
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
        assert!(!text.contains("nearest_expiry"), "no mounts, no expiry");
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
