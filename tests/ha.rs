//! Vault HA end to end: a three-node OpenBao raft cluster.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::raft::*;
use crate::util::*;

#[test]
fn scratch_probe_standby_behaviour() {
    let mut c = Cluster::start();
    let leader = c.wait_active(Duration::from_secs(5));
    c.active_node().put_kv2("probe", json!({"v": "1"}));
    for i in 0..3 {
        let r = c.nodes[i]
            .bao
            .api_as(&c.nodes[i].bao.token.clone(), "GET", "secret/data/probe", None)
            .unwrap();
        eprintln!("node{i} (leader {leader}): read {} ", r.0);
        let r = c.nodes[i]
            .bao
            .api_as(
                &c.nodes[i].bao.token.clone(),
                "POST",
                "auth/token/create",
                Some(json!({"ttl":"1m"})),
            )
            .unwrap();
        eprintln!("node{i}: create {} ", r.0);
    }
    c.kill(leader);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(12) {
        for i in 0..3 {
            if i == leader {
                continue;
            }
            let h = health(&c.nodes[i].bao);
            let r = c.nodes[i].bao.api_as(
                &c.nodes[i].bao.token.clone(),
                "GET",
                "secret/data/probe",
                None,
            );
            let r2 = c.nodes[i].bao.api_as(
                &c.nodes[i].bao.token.clone(),
                "POST",
                "auth/token/create",
                Some(json!({"ttl":"1m"})),
            );
            eprintln!(
                "{:>6} ms node{i}: health {h} read {:?} create {:?}",
                t.elapsed().as_millis(),
                r.map(|r| (r.0, r.1.get("errors").cloned())).map_err(|e| e.to_string()),
                r2.map(|r| (r.0, r.1.get("errors").cloned())).map_err(|e| e.to_string())
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    c.restart(leader);
    eprintln!("voters {:?}", c.voters());
}
