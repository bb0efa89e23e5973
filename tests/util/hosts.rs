//! Docker hosts on one machine: N hosts, each in a network, mount and UTS namespace the test
//! makes, each running its own dockerd ([`super::dockerd::Dockerd`], through `nsenter`) and its
//! own vault-secrets plugin (legacy install, driver `vault-secrets`, an identity of its own), in
//! a swarm of one manager and the others as workers.
//!
//! - **Network**: a namespace `vsh-ID-br` with a bridge `br0` (10.231.0.1/24); host `i` is the
//!   namespace `vsh-ID-nI` whose `eth0`, one end of a veth pair whose other end is on the
//!   bridge, has 10.231.0.(11+i)/24. These addresses exist in those namespaces only: nothing is
//!   added to the machine's own network namespace, and no host has a route anywhere else.
//! - **Identities** ([`Identity`]): each plugin a token of its own, or a client certificate of
//!   its own (`CN` = the host's name) with a cert role of its own.
//! - **OpenBao** (a [`super::Bao`] on the machine's loopback) is reached from every host at
//!   `10.231.0.1:8200` ([`Hosts::vault_address`]; TLS for certificates): a forwarder process
//!   (Python, started and killed by the test) binds its listening socket inside the bridge
//!   namespace (`setns`, bind, `setns` back) and connects to the real OpenBao on 127.0.0.1.
//!   PostgreSQL stays on the machine's loopback, where OpenBao and the test's `psql` reach it.
//! - **Mounts**: each host's namespaces are held by a process (`unshare --mount --uts
//!   --propagation private`, `nsenter --net=/run/netns/NS`, then `sleep`) that bind-mounts a
//!   directory of its own over `/run/docker` (so `/run/docker/plugins` is the host's: the driver
//!   name collides with no other dockerd's), mounts the network namespace's sysfs (with the
//!   machine's cgroup hierarchies moved onto it) and sets the hostname to the namespace's name.
//!   dockerd and the plugin are started with `nsenter --target HOLDER --mount --net --uts`; the
//!   plugin's socket and dockerd's API socket are path sockets, which the test reaches from its
//!   own namespaces.
//! - **Teardown** (drop, also on panic): the workers and then the manager leave the swarm; on
//!   every host its containers are removed and dockerd stopped (by pid, [`Dockerd`]'s drop),
//!   then its plugin; the holder is killed, which ends the mount namespace and every mount in
//!   it; the namespaces are deleted (and with them the veths and the bridge), the forwarder
//!   killed, the directories removed.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;

use super::dockerd::Dockerd;
use super::tls::{tokens_from, Pki};
use super::{mount_id, wait_until, Bao, Plugin};

/// OpenBao's address on the bridge, as every host sees it (the forwarder).
const VAULT_IP: &str = "10.231.0.1";

/// How each host's plugin logs in to OpenBao.
pub enum Identity<'a> {
    /// A token of its own (no parent), with this policy.
    Token { policy: &'a str },
    /// A client certificate of its own from `pki` (`CN` = the host's name) and a cert role of
    /// its own (named after the host, bound to that name), with this policy. OpenBao's TLS
    /// listener is on `tls_port` of the machine's loopback, with a certificate for
    /// 10.231.0.1 ([`Pki::server_for`]).
    Cert { pki: &'a Pki, policy: &'a str, tls_port: u16 },
}

/// The driver name of every host's plugin.
pub const DRIVER: &str = "vault-secrets";

/// One Docker host: its namespaces, dockerd and plugin.
pub struct Host {
    /// The network namespace's name, also the hostname.
    pub name: String,
    /// Its address on the bridge.
    pub addr: String,
    /// dockerd; `None` once dropped.
    pub dockerd: Option<Dockerd>,
    /// The plugin; `None` once dropped.
    pub plugin: Option<Plugin>,
    /// The accessor of the plugin's own token (its identity).
    pub identity_accessor: String,
    holder: Option<Child>,
    dir: PathBuf,
}

impl Host {
    pub fn dockerd(&self) -> &Dockerd {
        self.dockerd.as_ref().expect("dockerd of the host")
    }

    pub fn plugin(&self) -> &Plugin {
        self.plugin.as_ref().expect("plugin of the host")
    }

    /// Runs docker against this host's dockerd.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.dockerd().docker(args)
    }

    /// Runs docker against this host's dockerd; its trimmed stdout, or a panic with its stderr.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        self.dockerd().docker_ok(args)
    }

    /// The `nsenter` prefix that runs a command in this host's namespaces.
    pub fn nsenter(&self) -> Vec<String> {
        let pid = self.holder.as_ref().expect("holder").id().to_string();
        ["nsenter", "--target", &pid, "--mount", "--net", "--uts", "--"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// SIGKILLs this host's dockerd and plugin, as a crashed machine would stop serving: its
    /// containers (and their shims, their tmpfs mounts) stay until the teardown.
    pub fn kill(&mut self) {
        if let Some(d) = self.dockerd.as_mut() {
            d.abandon();
        }
        if let Some(p) = self.plugin.as_mut() {
            p.stop(true);
        }
    }
}

/// N hosts on the bridge, a swarm of them once [`Hosts::swarm`] ran.
pub struct Hosts {
    /// Host 0 is the swarm's manager.
    pub hosts: Vec<Host>,
    /// OpenBao's address as the hosts see it.
    pub vault_address: String,
    bridge: String,
    forwarder: Option<Child>,
    dir: PathBuf,
    in_swarm: bool,
}

/// Runs `ip ARGS`; panics with its stderr on failure.
fn ip(args: &[&str]) {
    run_ok("ip", args);
}

fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The forwarder: its listening socket made in the bridge namespace, its connections to
/// OpenBao on the machine's loopback. Prints `ready` once it listens.
const FORWARDER: &str = r#"
import ctypes, os, socket, sys, threading
ns, host, port, target = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
own = os.open("/proc/self/ns/net", os.O_RDONLY)
other = os.open("/run/netns/" + ns, os.O_RDONLY)
if libc.setns(other, CLONE_NEWNET) != 0:
    raise OSError(ctypes.get_errno(), "setns into " + ns)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, port))
srv.listen(256)
if libc.setns(own, CLONE_NEWNET) != 0:
    raise OSError(ctypes.get_errno(), "setns back")
print("ready", flush=True)

def pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

def serve(c):
    try:
        u = socket.create_connection(("127.0.0.1", target))
    except OSError:
        c.close()
        return
    t = threading.Thread(target=pipe, args=(u, c), daemon=True)
    t.start()
    pipe(c, u)
    t.join()
    c.close()
    u.close()

while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

impl Hosts {
    /// Starts `n` hosts whose plugins reach `bao` with a token each (policy `policy`, which the
    /// caller wrote), and waits until every dockerd answers and every plugin has logged in.
    pub fn start(n: usize, bao: &Bao, policy: &str) -> Hosts {
        Hosts::start_as(n, bao, Identity::Token { policy })
    }

    /// [`Hosts::start`], each plugin with an identity of its own as `identity` says.
    pub fn start_as(n: usize, bao: &Bao, identity: Identity) -> Hosts {
        let (scheme, port) = match identity {
            Identity::Token { .. } => ("http", bao.port),
            Identity::Cert { tls_port, .. } => {
                bao.api("POST", "sys/auth/cert", Some(json!({"type": "cert"})));
                ("https", tls_port)
            }
        };
        let id = &mount_id()[..6];
        let dir = PathBuf::from("/run/vsh").join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let mut hosts = Hosts {
            hosts: Vec::new(),
            vault_address: format!("{scheme}://{VAULT_IP}:8200"),
            bridge: format!("vsh-{id}-br"),
            forwarder: None,
            dir: dir.clone(),
            in_swarm: false,
        };
        let br = hosts.bridge.clone();
        ip(&["netns", "add", &br]);
        ip(&["-n", &br, "link", "set", "lo", "up"]);
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "addr", "add", "10.231.0.1/24", "dev", "br0"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);

        let mut forwarder = Command::new("python3")
            .args(["-c", FORWARDER, &br, VAULT_IP, "8200", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (the OpenBao forwarder)");
        let mut line = String::new();
        BufReader::new(forwarder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        hosts.forwarder = Some(forwarder);
        assert_eq!(line.trim(), "ready", "the OpenBao forwarder did not listen");

        for i in 0..n {
            let name = format!("vsh-{id}-n{i}");
            let addr = format!("10.231.0.{}", 11 + i);
            let host_dir = dir.join(format!("n{i}"));
            let plugins = host_dir.join("run-docker/plugins");
            std::fs::create_dir_all(&plugins).unwrap();
            ip(&["netns", "add", &name]);
            hosts.hosts.push(Host {
                name: name.clone(),
                addr: addr.clone(),
                dockerd: None,
                plugin: None,
                identity_accessor: String::new(),
                holder: None,
                dir: host_dir.clone(),
            });
            ip(&["-n", &name, "link", "set", "lo", "up"]);
            let veth = format!("v{i}");
            ip(&[
                "-n", &br, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &name,
            ]);
            ip(&["-n", &br, "link", "set", &veth, "master", "br0", "up"]);
            ip(&["-n", &name, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            ip(&["-n", &name, "link", "set", "eth0", "up"]);

            let ready = host_dir.join("ready");
            // A sysfs of the network namespace (as `ip netns exec` mounts one), with the
            // machine's cgroup hierarchies moved onto it (dockerd needs them; `ip netns exec`
            // would hide them).
            let cgroup = host_dir.join("cgroup");
            std::fs::create_dir_all(&cgroup).unwrap();
            let script = format!(
                "set -e; hostname {name}; mount --bind {run_docker} /run/docker; \
                 mount --rbind /sys/fs/cgroup {cgroup}; mount -t sysfs sysfs /sys; \
                 mount --move {cgroup} /sys/fs/cgroup; touch {ready}; exec sleep infinity",
                run_docker = host_dir.join("run-docker").display(),
                cgroup = cgroup.display(),
                ready = ready.display()
            );
            let holder = Command::new("unshare")
                .args(["--mount", "--uts", "--propagation", "private", "--", "nsenter"])
                .arg(format!("--net=/run/netns/{name}"))
                .args(["--", "sh", "-c", &script])
                .stdin(Stdio::null())
                .spawn()
                .expect("the namespaces' holder");
            hosts.hosts[i].holder = Some(holder);
            assert!(
                wait_until(Duration::from_secs(10), || ready.exists()),
                "the holder of {name}'s namespaces did not come up"
            );
        }
        for i in 0..n {
            let wrap = hosts.hosts[i].nsenter();
            let host = &mut hosts.hosts[i];
            // The plugin first: a node describes its engine's plugins to the swarm when it
            // joins, and a plugin it did not list makes the scheduler refuse the node
            // ("missing plugin"). Its DOCKER_HOST is a link that is made once dockerd runs.
            let docker_link = host.dir.join("docker.sock");
            let socket = host.dir.join(format!("run-docker/plugins/{DRIVER}.sock"));
            let mut plugin = match identity {
                Identity::Token { policy } => {
                    // No parent: it outlives nothing of the test's.
                    let token = bao.api(
                        "POST",
                        "auth/token/create",
                        Some(json!({"policies": [policy], "ttl": "1h", "no_parent": true,
                                    "display_name": host.name})),
                    );
                    let secret = token["auth"]["client_token"].as_str().unwrap().to_owned();
                    host.identity_accessor = token["auth"]["accessor"].as_str().unwrap().into();
                    Plugin::configure(Some(&socket), &hosts.vault_address, &secret, "")
                }
                Identity::Cert { pki, policy, .. } => {
                    let cert = pki.client(&host.name);
                    bao.api(
                        "POST",
                        &format!("auth/cert/certs/{}", host.name),
                        Some(json!({"certificate": pki.ca_pem(),
                                    "allowed_common_names": [host.name],
                                    "token_policies": [policy], "token_period": "1h"})),
                    );
                    let auth = format!(
                        "ca_cert = \"{}\"\n\n[vault.auth]\nmethod = \"cert\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\nrole = \"{}\"\n",
                        pki.ca().display(),
                        cert.cert.display(),
                        cert.key.display(),
                        host.name
                    );
                    Plugin::configure(Some(&socket), &hosts.vault_address, "", &auth)
                }
            };
            plugin.wrap = wrap.clone();
            plugin.env.push(("DOCKER_HOST".into(), format!("unix://{}", docker_link.display())));
            plugin.restart();
            host.plugin = Some(plugin);
            let dockerd = Dockerd::start_in(&format!("vsh-n{i}"), &wrap);
            std::os::unix::fs::symlink(&dockerd.socket, &docker_link).unwrap();
            // dockerd lists to the swarm only the legacy volume drivers it has met (moby
            // `volume/drivers` `GetDriverList`); a `volume ls` asks every socket in
            // /run/docker/plugins, and so meets the plugin.
            dockerd.docker_ok(&["volume", "ls"]);
            host.dockerd = Some(dockerd);
        }
        for h in &mut hosts.hosts {
            let plugin = h.plugin.as_ref().unwrap();
            let logged_in =
                wait_until(Duration::from_secs(20), || plugin.log().contains("logged in to vault"));
            assert!(logged_in, "the plugin of {} did not log in:\n{}", h.name, plugin.log());
            if h.identity_accessor.is_empty() {
                // A certificate's login: its token, found by the cert role that made it.
                let mine = tokens_from(bao, "auth/cert/login")
                    .into_iter()
                    .find(|(_, data)| data["meta"]["cert_name"] == h.name.as_str());
                h.identity_accessor = mine.expect("the token of the host's cert login").0;
            }
        }
        hosts
    }

    /// Makes host 0 the manager of a new swarm and the others its workers; the dispatcher's
    /// heartbeat is 1 s, so a dead node is found within seconds.
    pub fn swarm(&mut self) {
        let manager = &self.hosts[0];
        let listen = format!("{}:2377", manager.addr);
        manager.docker_ok(&[
            "swarm",
            "init",
            "--advertise-addr",
            &manager.addr,
            "--listen-addr",
            &listen,
            "--dispatcher-heartbeat",
            "1s",
        ]);
        self.in_swarm = true;
        let token = manager.docker_ok(&["swarm", "join-token", "-q", "worker"]);
        for w in &self.hosts[1..] {
            let own = format!("{}:2377", w.addr);
            w.docker_ok(&[
                "swarm",
                "join",
                "--token",
                &token,
                "--advertise-addr",
                &w.addr,
                "--listen-addr",
                &own,
                &listen,
            ]);
        }
        let n = self.hosts.len();
        let ready = wait_until(Duration::from_secs(30), || {
            let out = manager.docker_ok(&["node", "ls", "--format", "{{.Status}}"]);
            out.lines().filter(|s| *s == "Ready").count() == n
        });
        assert!(ready, "not every node is Ready: {}", manager.docker_ok(&["node", "ls"]));
    }

    pub fn manager(&self) -> &Host {
        &self.hosts[0]
    }

    /// The swarm node ID of host `i` (as `docker info` on it says).
    pub fn node_id(&self, i: usize) -> String {
        self.hosts[i].docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"])
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if self.in_swarm {
            for h in self.hosts.iter().rev() {
                if h.dockerd.as_ref().is_some_and(|d| d.pid().is_some()) {
                    let _ = h.docker(&["swarm", "leave", "--force"]);
                }
            }
        }
        for h in &mut self.hosts {
            // dockerd first (its containers' Unmounts reach the plugin), then the plugin.
            drop(h.dockerd.take());
            if let Some(p) = h.plugin.take() {
                if std::thread::panicking() {
                    eprintln!("--- plugin of {} ---", h.name);
                }
                drop(p);
            }
            if let Some(mut holder) = h.holder.take() {
                let _ = holder.kill();
                let _ = holder.wait();
            }
            let _ = Command::new("ip").args(["netns", "del", &h.name]).status();
        }
        if let Some(mut f) = self.forwarder.take() {
            let _ = f.kill();
            let _ = f.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.bridge]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
