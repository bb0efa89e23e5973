//! Certificates issued for a mount (PKI roles default to `generate_lease=false`: revoking the
//! mount's token leaves them valid) against OpenBao's PKI engine: revoked when the mount
//! ends, a replaced one once its successor is in place unless `revoke-replaced=false`, and a
//! `no_store` role's said to be beyond revocation.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::util::vault::{status, status_mounts};
use crate::util::*;

/// A PKI engine at `pki/` with a root CA, the role `web` and the role `nostore`.
fn pki(bao: &Bao) {
    bao.api(
        "POST",
        "sys/mounts/pki",
        Some(json!({"type": "pki", "config": {"max_lease_ttl": "24h"}})),
    );
    bao.api(
        "POST",
        "pki/root/generate/internal",
        Some(json!({"common_name": "test-ca", "ttl": "24h"})),
    );
    bao.api("POST", "pki/roles/web", Some(json!({"allow_any_name": true, "max_ttl": "2h"})));
    let nostore = json!({"allow_any_name": true, "max_ttl": "2h", "no_store": true});
    bao.api("POST", "pki/roles/nostore", Some(nostore));
}

fn serial(mount: &Path) -> String {
    std::fs::read_to_string(mount.join("serial_number")).unwrap()
}

/// When `pki/cert/SERIAL` says it was revoked (0: not revoked).
fn revocation_time(bao: &Bao, serial: &str) -> u64 {
    let v = bao.api("GET", &format!("pki/cert/{serial}"), None);
    v["data"]["revocation_time"].as_u64().unwrap_or(0)
}

#[test]
fn a_certificate_is_revoked_when_its_mount_ends_and_a_replaced_one_once_its_successor_is_in_place()
{
    let bao = Bao::start();
    pki(&bao);
    let plugin = Plugin::start(None, &bao.address(), &bao.token, "");
    let web = |ttl: &str| json!({"path": "pki/issue/web", "param.common_name": "web.internal", "param.ttl": ttl});
    plugin.create("web", web("1h"));
    let id = mount_id();
    let mp = plugin.mount("web", &id);
    let first = serial(&mp);
    assert_eq!(revocation_time(&bao, &first), 0, "valid while mounted");
    let mounts = status_mounts(&status(&plugin), "web");
    assert_eq!(mounts[0]["certificates"][0]["serial"], first.as_str());
    assert_eq!(mounts[0]["certificates"][0]["at_stop"], "revoked at stop");
    plugin.unmount("web", &id);
    assert!(revocation_time(&bao, &first) > 0, "revoked when the mount ended");

    // Replaced at about two thirds of 15 s: the old one revoked once the new one is written,
    // unless revoke-replaced=false.
    plugin.create("short", web("15s"));
    let mut kept = web("15s");
    kept["revoke-replaced"] = json!("false");
    plugin.create("kept", kept);
    let (short, kept) = (plugin.mount("short", &id), plugin.mount("kept", &id));
    let (short_1, kept_1) = (serial(&short), serial(&kept));
    let replaced = wait_until(Duration::from_secs(30), || {
        serial(&short) != short_1 && serial(&kept) != kept_1
    });
    assert!(replaced, "both replaced ahead of their expiry:\n{}", plugin.log());
    let short_2 = serial(&short);
    assert!(
        wait_until(Duration::from_secs(5), || revocation_time(&bao, &short_1) > 0),
        "the replaced certificate is revoked"
    );
    assert_eq!(revocation_time(&bao, &short_2), 0, "its successor is valid");
    assert_eq!(revocation_time(&bao, &kept_1), 0, "revoke-replaced=false keeps it");
    let kept_2 = serial(&kept);
    plugin.unmount("short", &id);
    plugin.unmount("kept", &id);
    assert!(revocation_time(&bao, &short_2) > 0 && revocation_time(&bao, &kept_2) > 0);
    assert_eq!(revocation_time(&bao, &kept_1), 0, "replaced, kept: valid until it expires");

    // A role with no_store keeps no record: nothing to revoke by serial, and the log says so.
    let nostore = json!({"path": "pki/issue/nostore", "param.common_name": "web.internal"});
    plugin.create("nostore", nostore);
    plugin.mount("nostore", &id);
    let mounts = status_mounts(&status(&plugin), "nostore");
    let at_stop = mounts[0]["certificates"][0]["at_stop"].as_str().unwrap_or("").to_owned();
    assert!(at_stop.contains("not revoked at stop: its role has no_store"), "{mounts:?}");
    plugin.unmount("nostore", &id);
    let log = plugin.log();
    assert!(log.contains("is not revoked: its role has no_store"), "{log}");
    assert!(plugin.mounts_left().is_empty());
}

#[test]
fn a_certificate_revocation_that_failed_while_vault_was_down_is_retried_after_a_restart() {
    let mut bao = crate::util::vault::BaoServer::start();
    pki(&bao);
    let mut plugin = Plugin::start(None, &bao.address(), &bao.token, "");
    let opts =
        json!({"path": "pki/issue/web", "param.common_name": "web.internal", "param.ttl": "1h"});
    plugin.create("web", opts);
    let id = mount_id();
    let first = serial(&plugin.mount("web", &id));
    bao.stop();
    plugin.unmount("web", &id);
    let pending = plugin.runtime.join("private/certificates");
    let kept = std::fs::read_dir(&pending).map(|d| d.count()).unwrap_or(0);
    assert_eq!(kept, 1, "kept in {}", pending.display());
    plugin.stop(false);
    bao.restart();
    plugin.restart();
    assert!(
        wait_until(Duration::from_secs(30), || revocation_time(&bao, &first) > 0),
        "retried after the restart:\n{}",
        plugin.log()
    );
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_dir(&pending).map(|d| d.count()).unwrap_or(0) == 0
    }));
}
