//! `GET /metrics` on `metrics_listen`: the gauges read from the driver's status at each
//! scrape, then the counters and histograms of [`METRICS`], in Prometheus text format 0.0.4.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;

use super::listener::Limits;
use crate::driver::{Action, Operations, VolumeStatus};
use crate::metrics::METRICS;

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

/// `GET /metrics` over the driver's operations.
pub fn router<O: Operations>(driver: Arc<O>) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(scrape::<O>)).with_state(driver)
}

async fn scrape<O: Operations>(State(driver): State<Arc<O>>) -> impl IntoResponse {
    let mut body = gauges(&driver.status().await, driver.pending_revocations());
    body.push_str(&METRICS.render());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// The gauges read from the volumes' status and the revocations waiting for a retry.
fn gauges(volumes: &[VolumeStatus], pending_revocations: usize) -> String {
    let mut out = String::new();
    // A mount whose container died holds nothing any more (its tokens are revoked).
    let mounts: Vec<_> =
        volumes.iter().flat_map(|v| &v.mounts).filter(|m| !m.container_died).collect();
    let leases: Vec<_> = mounts.iter().flat_map(|m| &m.leases).collect();
    let gauge = |out: &mut String, name: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    };
    gauge(&mut out, "vault_secrets_volumes", "Volumes defined.", volumes.len().to_string());
    gauge(
        &mut out,
        "vault_secrets_mounts_active",
        "Active container mounts (a mount busy at the scrape counts too).",
        (mounts.len() + volumes.iter().map(|v| v.busy.len()).sum::<usize>()).to_string(),
    );
    gauge(
        &mut out,
        "vault_secrets_mounts_failing",
        "Active container mounts whose last renewal, refresh or replacement failed (retried with backoff).",
        mounts.iter().filter(|m| m.last_error.is_some()).count().to_string(),
    );
    gauge(
        &mut out,
        "vault_secrets_revocations_pending",
        "Tokens and certificates whose revocation failed (Vault out of reach) and is retried every 10 s: each still valid in Vault.",
        pending_revocations.to_string(),
    );
    let _ = writeln!(out, "# HELP vault_secrets_leases Leases held, by state (renew: still renewable; replace: to be replaced by a fresh secret).\n# TYPE vault_secrets_leases gauge");
    for state in [Action::Renew, Action::Replace] {
        let n = leases.iter().filter(|l| l.state == state).count();
        let _ = writeln!(out, "vault_secrets_leases{{state=\"{}\"}} {n}", state.name());
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{LeaseStatus, MountStatus};

    #[test]
    fn gauges_count_volumes_mounts_and_leases() {
        let text = gauges(&[], 0);
        assert!(text.contains("vault_secrets_volumes 0\n"));
        assert!(text.contains("vault_secrets_revocations_pending 0\n"));
        assert!(!text.contains("nearest_expiry"), "no mounts, no expiry");
        let lease = |state| LeaseStatus {
            source: "database/creds/app".into(),
            lease_id: "database/creds/app/x".into(),
            expires_in_secs: Some(30),
            renewable: true,
            state,
        };
        let mount = MountStatus {
            id: "a".into(),
            mountpoint: "/run/vault-secrets/mounts/db/a".into(),
            refs: 1,
            accessor: "acc".into(),
            token_expires_in_secs: Some(20),
            leases: vec![lease(Action::Renew), lease(Action::Replace)],
            expiring: vec![],
            certificates: vec![],
            next_action_in_secs: 5,
            last_refresh: None,
            last_error: None,
            container_died: false,
            container: None,
            engine: None,
        };
        let failing = MountStatus { last_error: Some("vault unreachable".into()), ..mount.clone() };
        let volume = VolumeStatus {
            name: "db".into(),
            sources: vec![],
            mounts: vec![failing, mount],
            busy: vec![],
        };
        let text = gauges(&[volume], 3);
        for line in [
            "vault_secrets_volumes 1\n",
            "vault_secrets_mounts_active 2\n",
            "vault_secrets_leases{state=\"renew\"} 2\n",
            "vault_secrets_leases{state=\"replace\"} 2\n",
            "vault_secrets_nearest_expiry_seconds 20\n",
            "vault_secrets_mounts_failing 1\n",
            "vault_secrets_revocations_pending 3\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    /// The operations kit (plugin/ops: the alerting rules and the Grafana dashboard) uses only
    /// metrics this build exposes.
    #[test]
    fn the_operations_kit_uses_the_metrics_exposed() {
        let mount = MountStatus {
            id: "a".into(),
            mountpoint: "/run/vault-secrets/mounts/db/a".into(),
            refs: 1,
            accessor: "acc".into(),
            token_expires_in_secs: Some(20),
            leases: vec![],
            expiring: vec![],
            certificates: vec![],
            next_action_in_secs: 5,
            last_refresh: None,
            last_error: None,
            container_died: false,
            container: None,
            engine: None,
        };
        let volume =
            VolumeStatus { name: "db".into(), sources: vec![], mounts: vec![mount], busy: vec![] };
        let exposed = gauges(&[volume], 0) + &METRICS.render();
        let families: Vec<&str> =
            exposed.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
        // Added by the record-store bound (helper `bounds`): until it is merged, the rule and
        // the panel that use them have no data.
        let coming =
            ["vault_secrets_state_store_bytes", "vault_secrets_state_store_capacity_bytes"];
        for kit in [
            include_str!("../../plugin/ops/vault-secrets.rules.yml"),
            include_str!("../../plugin/ops/vault-secrets.dashboard.json"),
        ] {
            let mut rest = kit;
            while let Some(at) = rest.find("vault_secrets_") {
                rest = &rest[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let name = &rest[..end];
                rest = &rest[end..];
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(f)))
                    .unwrap_or(name);
                assert!(
                    families.contains(&family) || coming.contains(&family),
                    "{name} is used in plugin/ops but not exposed"
                );
            }
        }
    }
}
