//! An OpenBao cluster on loopback (three nodes for the HA tests, one for `vault::BaoServer`):
//! integrated (raft) storage, each node with its own API and cluster ports; the first
//! initialised (one key share) and unsealed, the others joined with `sys/storage/raft/join` and
//! unsealed; `secret/` as KV v2, set up through the active node. A node can be SIGKILLed and
//! restarted (it rejoins from its own raft data); every process is killed by its pid on drop and
//! the data directories removed with the temporary directory.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{free_port, wait_until, Bao};

/// One node: its API (a [`Bao`] on its port, with the root token) and its directory.
pub struct RaftNode {
    pub bao: Bao,
    pub id: String,
    cluster_port: u16,
    dir: PathBuf,
}

pub struct Cluster {
    pub nodes: Vec<RaftNode>,
    unseal_key: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Three nodes.
    pub fn start() -> Cluster {
        Cluster::of(3)
    }

    /// `n` nodes, node0 active.
    pub fn of(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let nodes = (0..n)
            .map(|i| {
                let id = format!("node{i}");
                let node_dir = dir.path().join(&id);
                std::fs::create_dir_all(node_dir.join("data")).unwrap();
                let bao = Bao::client(free_port(), "");
                RaftNode { bao, id, cluster_port: free_port(), dir: node_dir }
            })
            .collect();
        let mut cluster = Cluster { nodes, unseal_key: String::new(), dir };
        for i in 0..n {
            cluster.write_config(i);
            cluster.spawn(i);
        }
        cluster.unseal_key = cluster.nodes[0].bao.initialise();
        let root = cluster.nodes[0].bao.token.clone();
        for node in &mut cluster.nodes {
            node.bao.token = root.clone();
        }
        assert!(cluster.unseal(0), "node0 stays sealed:\n{}", cluster.log(0));
        assert!(
            wait_until(Duration::from_secs(30), || cluster.nodes[0].bao.health() == 200),
            "node0 did not become active:\n{}",
            cluster.log(0)
        );
        let leader = cluster.nodes[0].bao.address();
        for i in 1..n {
            // On a loaded machine a join can stall before its node unseals: joined again.
            let joined = (0..3).any(|_| {
                let (status, v) = cluster.nodes[i].bao.unauthenticated(
                    "PUT",
                    "sys/storage/raft/join",
                    json!({ "leader_api_addr": leader }),
                );
                if status != 200 || v["joined"] != true {
                    eprintln!("node{i}: join answered {status} {v}");
                }
                cluster.unseal(i)
            });
            assert!(joined, "node{i} stays sealed after three joins:\n{}", cluster.log(i));
            assert!(
                wait_until(Duration::from_secs(30), || cluster.nodes[i].bao.health() == 429),
                "node{i} did not become a standby:\n{}",
                cluster.log(i)
            );
        }
        let voters = wait_until(Duration::from_secs(30), || cluster.voters().len() == n);
        assert!(voters, "{n} voters: {:?}", cluster.voters());
        let active = cluster.active_node();
        active.api(
            "POST",
            "sys/mounts/secret",
            Some(json!({"type": "kv", "options": {"version": "2"}})),
        );
        // A new KV v2 mount refuses requests (400) while it upgrades its storage.
        let ready = wait_until(Duration::from_secs(30), || {
            let body = Some(json!({"data": {"ready": "yes"}}));
            active
                .api_as(&active.token, "POST", "secret/data/ready", body)
                .is_ok_and(|r| r.0 == 200)
        });
        assert!(ready, "secret/ is not ready:\n{}", cluster.logs());
        cluster
    }

    fn write_config(&self, i: usize) {
        let node = &self.nodes[i];
        let (port, cluster) = (node.bao.port, node.cluster_port);
        std::fs::write(
            node.dir.join("config.hcl"),
            format!(
                "storage \"raft\" {{\n  path = \"{}/data\"\n  node_id = \"{}\"\n  performance_multiplier = 1\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\n\
                 api_addr = \"http://127.0.0.1:{port}\"\n\
                 cluster_addr = \"http://127.0.0.1:{cluster}\"\n",
                node.dir.display(),
                node.id
            ),
        )
        .unwrap();
    }

    /// Starts node `i`'s process and waits for its listener to answer (sealed or not).
    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let config = node.dir.join("config.hcl").display().to_string();
        let args = ["server".to_owned(), "-config".to_owned(), config];
        let log = node.dir.join("bao.log");
        if let Err(why) = node.bao.launch(&args, &log, |status| status != 0) {
            panic!("node{i}: {why}");
        }
    }

    /// Unseals node `i` (see [`Bao::unseal`]); whether it is.
    fn unseal(&self, i: usize) -> bool {
        self.nodes[i].bao.unseal(&self.unseal_key)
    }

    /// Every node's address, in order.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.bao.address()).collect()
    }

    /// The active node, if one says so now.
    pub fn active(&self) -> Option<usize> {
        (0..self.nodes.len())
            .find(|i| self.nodes[*i].bao.running() && self.nodes[*i].bao.health() == 200)
    }

    /// Waits (up to `timeout`) for a node to be active; panics with the logs if none is.
    pub fn wait_active(&self, timeout: Duration) -> usize {
        let end = Instant::now() + timeout;
        loop {
            if let Some(i) = self.active() {
                return i;
            }
            assert!(Instant::now() < end, "no active node within {timeout:?}:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The active node's API (waiting up to 30 s for one).
    pub fn active_node(&self) -> &Bao {
        &self.nodes[self.wait_active(Duration::from_secs(30))].bao
    }

    /// A standby node (unsealed, not active).
    pub fn standby(&self) -> usize {
        (0..self.nodes.len())
            .find(|i| self.nodes[*i].bao.health() == 429)
            .unwrap_or_else(|| panic!("no standby:\n{}", self.logs()))
    }

    /// SIGKILLs node `i` (by its pid).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].bao.stop();
    }

    /// Starts node `i` again with its data and unseals it: it rejoins the cluster as a standby
    /// (waited for).
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].bao.stop();
        self.spawn(i);
        assert!(self.unseal(i), "node{i} stays sealed:\n{}", self.log(i));
        let standby =
            wait_until(Duration::from_secs(30), || matches!(self.nodes[i].bao.health(), 200 | 429));
        assert!(standby, "node{i} did not rejoin:\n{}", self.log(i));
    }

    /// The raft configuration's voters, as (node_id, leader) pairs, as the active node says.
    pub fn voters(&self) -> Vec<(String, bool)> {
        let Some(i) = self.active() else { return Vec::new() };
        let Ok((200, v)) = self.nodes[i].bao.try_api("GET", "sys/storage/raft/configuration", None)
        else {
            return Vec::new();
        };
        v["data"]["config"]["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["voter"] == true)
            .map(|s| (s["node_id"].as_str().unwrap_or("").to_owned(), s["leader"] == true))
            .collect()
    }

    /// The log of node `i` (every run appended).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("bao.log")).unwrap_or_default()
    }

    /// The last lines of every node's log.
    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                format!(
                    "--- node{i} ---\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A token for the plugin, made on the active node: a policy that may create child tokens
    /// and read `secret/` and `database/creds/` (renew and revoke come with `default`).
    pub fn plugin_token(&self) -> String {
        let active = self.active_node();
        active.policy(
            "plugin",
            "path \"auth/token/create\" { capabilities = [\"update\"] }\n\
             path \"secret/data/*\" { capabilities = [\"read\"] }\n\
             path \"database/creds/*\" { capabilities = [\"read\"] }\n",
        );
        let v = active.api(
            "POST",
            "auth/token/create",
            Some(json!({"policies": ["plugin"], "ttl": "2h", "display_name": "plugin"})),
        );
        v["auth"]["client_token"].as_str().expect("a token").to_owned()
    }

    /// The temporary directory holding every node's data.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}
