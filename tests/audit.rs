//! The audit trail end to end, on the shared Docker engine: a container with a database volume
//! runs and stops; the audit log links the mount to its container, its token's accessor and
//! its lease, in order, with times that never go back.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::util::docker::{docker_ok, image, E2e};
use crate::util::*;

/// The audit lines in the plugin's log (with no `audit_log` set they go to stderr, one write
/// each, between the tracing lines).
fn audit_lines(plugin: &Plugin) -> Vec<Value> {
    plugin
        .log()
        .lines()
        .filter(|l| l.starts_with("{\"seq\":"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn time_of(line: &Value) -> SystemTime {
    humantime::parse_rfc3339(line["time"].as_str().unwrap()).unwrap()
}

fn of_volume(lines: &[Value], volume: &str) -> Vec<Value> {
    lines.iter().filter(|l| l["volume"] == volume).cloned().collect()
}

#[test]
fn the_audit_log_links_a_container_to_its_token_and_leases_in_order_on_every_engine() {
    let mut t = E2e::start();
    t.bao.database_role("audit", "1h", "2h");
    let vol = t.volume("audit", &["path=database/creds/audit"]);
    let name = unique("vs-audit");
    let bind = format!("{vol}:/run/secrets:ro");
    t.containers.push(name.clone());
    let args = ["run", "-d", "--network", "none", "--name", &name, "-v", &bind];
    let id = docker_ok(&[&args[..], &[&image(), "sleep", "600"]].concat());
    let user = docker_ok(&["exec", &id, "cat", "/run/secrets/username"]);
    let password = docker_ok(&["exec", &id, "cat", "/run/secrets/password"]);
    assert!(pg_role_exists(&user));

    // The sweep runs every 60 s; the container is looked for shortly after its Mount.
    let tied = wait_until(Duration::from_secs(10), || {
        of_volume(&audit_lines(&t.plugin), &vol).iter().any(|l| l["event"] == "container")
    });
    assert!(tied, "no container line within 10 s:\n{}", t.plugin.log());

    docker_ok(&["stop", "-t", "1", &id]);
    assert!(wait_until(Duration::from_secs(5), || !pg_role_exists(&user)), "user not dropped");
    let revoked =
        || of_volume(&audit_lines(&t.plugin), &vol).iter().any(|l| l["event"] == "revoke");
    assert!(wait_until(Duration::from_secs(5), revoked), "no revoke line:\n{}", t.plugin.log());

    let all = audit_lines(&t.plugin);
    for pair in all.windows(2) {
        assert_eq!(pair[1]["seq"].as_u64(), pair[0]["seq"].as_u64().map(|s| s + 1), "{pair:?}");
        assert!(time_of(&pair[0]) <= time_of(&pair[1]), "time went back: {pair:?}");
    }
    let lines = of_volume(&all, &vol);
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(events.first(), Some(&"create"), "{lines:#?}");
    let mount = &lines[1];
    assert_eq!(mount["event"], "mount", "{lines:#?}");
    let (mount_id, accessor) = (&mount["mount_id"], &mount["accessor"]);
    let leases = mount["lease_ids"].as_array().expect("the mount's lease");
    assert!(
        leases.len() == 1 && leases[0].as_str().unwrap().starts_with("database/creds/audit/"),
        "{mount}"
    );
    assert!(accessor.as_str().is_some_and(|a| !a.is_empty()), "{mount}");
    assert_eq!(lines[2]["event"], "container", "{lines:#?}");
    assert_eq!(lines[2]["lease_ids"], mount["lease_ids"]);
    let full_id = docker_ok(&["inspect", "-f", "{{.Id}}", &name]);
    for line in &lines[1..] {
        assert_eq!(&line["mount_id"], mount_id, "{line}");
    }
    for line in &lines[2..] {
        assert_eq!(line["container_id"], full_id.as_str(), "{line}");
        assert_eq!(line["container_name"], name.as_str(), "{line}");
    }
    // Docker Engine 20.10 logs `die` before it unmounts the volumes: the plugin revokes at the
    // `die` event, and the Unmount that follows only removes the tmpfs. Engine 26 unmounts
    // first: the Unmount revokes, and the later `die` finds nothing left.
    let ending = &events[3..];
    eprintln!("the mount's last lines: {ending:?}");
    assert!(
        ending == ["die", "revoke", "unmount"] || ending == ["unmount", "revoke"],
        "{lines:#?}"
    );
    let revoke = lines.iter().find(|l| l["event"] == "revoke").unwrap();
    assert_eq!(&revoke["accessor"], accessor, "the mount's own token revoked");
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains(&t.bao.token), "the root token is in the audit log");
    assert!(password.len() >= 8 && !text.contains(&password), "the password is in the audit log");
}

/// A container that its restart policy restarts gets a fresh user for each run, and the user
/// of a run that died is dropped before the next run starts (Docker unmounts a dead
/// container's volumes and mounts them again when it restarts it; on Engine 20.10 the plugin
/// revokes at the `die` event already).
#[test]
fn a_restarted_container_gets_a_fresh_user_per_run_and_each_dead_runs_user_is_dropped_on_every_engine(
) {
    let mut t = E2e::start();
    t.bao.database_role("restarts", "1h", "2h");
    let vol = t.volume("restarts", &["path=database/creds/restarts"]);
    let name = unique("vs-restarts");
    let bind = format!("{vol}:/run/secrets:ro");
    t.containers.push(name.clone());
    let run = "cat /run/secrets/username; echo; sleep 4; exit 3";
    let args = ["run", "-d", "--network", "none", "--restart", "on-failure:2", "--name", &name];
    docker_ok(&[&args[..], &["-v", &bind, &image(), "sh", "-c", run]].concat());
    let users = || -> Vec<String> {
        let logs = docker_ok(&["logs", &name]);
        logs.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
    };
    let mut dropped_while_next_ran = 0;
    let mut seen = 1;
    let finished = wait_until(Duration::from_secs(40), || {
        let now = users();
        if now.len() > seen {
            // A new run has started: the users of the runs before it are gone already.
            for old in &now[..now.len() - 1] {
                assert!(!pg_role_exists(old), "{old} of a dead run still exists: {now:?}");
            }
            dropped_while_next_ran += 1;
            seen = now.len();
        }
        docker_ok(&["inspect", "-f", "{{.State.Status}}", &name]) == "exited"
    });
    assert!(finished, "not exited after 3 runs within 40 s: {:?}", users());
    let all = users();
    assert_eq!(all.len(), 3, "three runs, three users: {all:?}");
    let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), 3, "a user of its own per run: {all:?}");
    assert!(dropped_while_next_ran >= 1, "no run seen while the next one ran");
    let last = all.last().unwrap();
    assert!(wait_until(Duration::from_secs(5), || !pg_role_exists(last)), "{last} not dropped");
    let lines = of_volume(&audit_lines(&t.plugin), &vol);
    let count = |e: &str| lines.iter().filter(|l| l["event"] == e).count();
    assert_eq!((count("mount"), count("revoke")), (3, 3), "{lines:#?}");
}
