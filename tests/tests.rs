//! The integration tests, one binary, by what they show (shared helpers in `util`: OpenBao,
//! the plugin, `docker` the docker CLI and the `E2e` fixture, `dockerd` a dockerd of a test's
//! own, `podman`, `hosts`, `tier` the tiers below):
//!
//! **A container gets its secrets, and they end with it**
//! - `plugin`: the plugin binary against a real OpenBao (and PostgreSQL), driven over its
//!   socket exactly as dockerd drives it, with real tmpfs mounts;
//! - `e2e`: the real `docker` CLI and engine using the plugin; `audit`: the audit trail from
//!   a container's start to its stop;
//! - `pki`: certificates revoked by serial when their mount ends, and when replaced;
//! - `namespaces`: `vault.namespace` and a volume's `namespace` against OpenBao's namespaces,
//!   each request's namespace read back from OpenBao's audit log;
//! - `auth`: the plugin's node identities (TLS certificate and JWT auth against an OpenBao
//!   with a TLS listener) and the single use of a volume's wrapped token across nodes.
//!
//! **Secrets stay current while it runs**
//! - `leases`: leased secrets, renewal, rotation, outages, status and rotate, end to end;
//! - `outage`: 500 mounts riding out a 30 s OpenBao outage, the request rate when it returns;
//! - `ha`: a three-node OpenBao raft cluster losing its leader under running containers, and a
//!   plugin pointed at one standby.
//!
//! **Which container a mount is for, on every engine**
//! - `engine`: the Docker Engine API client against the real engine; `containers`: which
//!   container a mount belongs to, against a container that sees the others' mounts;
//! - `compose`: docker-compose and a Swarm service; `secrets`: Swarm secrets from the plugin
//!   (`docker secret create --driver`), per task, on a single-node swarm;
//! - `hosts`: a swarm of three Docker hosts on one machine (`util::hosts`: namespaces, a
//!   dockerd and a plugin each): a database volume's users per task through scale, drain, a
//!   stack and a node kill; Swarm secrets per task across the nodes;
//! - `podman`: Podman (4.3, and 5.4 in a Debian 13 root) with the plugin declared in
//!   containers.conf.
//!
//! **The hardened set-ups, and one user against another**
//! - `userns`: a dockerd with `--userns-remap`, and `uid=container`; `rootless`: rootless
//!   Docker (`util::rootless`: dockerd-rootless.sh and rootlesskit as a user of its own) and
//!   rootless Podman, with the plugin in the engine's namespaces, as `docs/rootless.md` says;
//! - `readonly`: a container's attacks on its own mount (create, overwrite, chmod, link, rename,
//!   remove, write-then-run) with and without `:ro`, on Docker and Podman, before and after a
//!   rewrite;
//! - `attack`: attacks on the host from inside a container and from hostile volume options;
//!   `hostile`: hostile Vault replies through the real HTTP client;
//! - `bounds`: what one Docker user can make the shared plugin hold (sources, reads, records);
//!   `flood`: thousands of idle and half-header connections to `metrics_listen` and the plugin
//!   socket while a volume is mounted and unmounted;
//! - `props`: property tests of file-name safety and rendering.
//!
//! **Shipping and surviving failures**
//! - `managed`: the managed plugin from `plugin/build.sh`; `upgrade`: the earlier release
//!   (0.1.0, built from this repository's history) upgraded while a container runs — restarted
//!   on this build, or `docker plugin upgrade` — and this build takes over its files, renewals,
//!   refresh and revocation; records of a newer format (a downgrade) stop the start;
//! - `chaos`: containers started and stopped on a private dockerd while the plugin, OpenBao,
//!   that dockerd and a private PostgreSQL are killed or restarted; nothing left behind;
//! - `soak`: 1,000 mount/unmount cycles and 64 containers at once.
//!
//! Run as root after `tests/env.sh`; the README's test command does both.
//!
//! # On which engines a test runs: the end of its name
//!
//! `tests/run.sh` runs the tests on three Docker engines (`VAULT_SECRETS_TEST_ENGINE`: 20, 26,
//! 28, see `util::TestEngine`) and two Podmans (`VAULT_SECRETS_TEST_PODMAN`: 4, 5, see
//! `util::podman`), and chooses which tests by the end of their names, nothing else
//! (`cargo test --test tests -- --list` shows them):
//!
//! | a name ending in      | drives                                        | runs on                  |
//! |-----------------------|-----------------------------------------------|--------------------------|
//! | `_on_every_engine`    | Docker: the core of what users do             | Engines 20.10, 26.1, 28.5 |
//! | `_on_current_engines` | Docker: what Engine ≥ 26 does, or restarts of its engine | Engines 26.1, 28.5 |
//! | `_on_one_engine`      | Docker (or its lock) where once is enough: three-node swarms, chaos, HA, 64 containers, rootless engines of a test's own | Engine 28.5 |
//! | `_on_every_podman`    | Podman                                        | Podman 4.3, 5.4          |
//! | anything else         | no engine: the plugin over its socket, OpenBao, PostgreSQL | once         |
//!
//! A new test that drives an engine takes one of these endings: the harness fails a test that
//! drives Docker (`util::docker::docker_lock`, `util::dockerd::Dockerd`) or Podman
//! (`util::podman::podman`) without one, and an `_on_current_engines` test run on Engine 20.10
//! (`util::tier`). A test that drives Docker and Podman, or takes the Docker lock for the shared
//! driver, takes a Docker ending (and runs with Podman 4.3). Choose `_on_every_engine` for what
//! a user of any engine relies on, and `_on_one_engine` for what takes minutes or does not
//! depend on the engine's version: CI's budget is 45 minutes for `.ci/run`, and `tests/run.sh`
//! prints each pass's time and its Docker tests' own time by tier.

mod util;

mod attack;
mod audit;
mod auth;
mod bounds;
mod chaos;
mod compose;
mod containers;
mod e2e;
mod engine;
mod flood;
mod ha;
mod hostile;
mod hosts;
mod leases;
mod managed;
mod namespaces;
mod outage;
mod pki;
mod plugin;
mod podman;
mod props;
mod readonly;
mod rootless;
mod secrets;
mod soak;
mod upgrade;
mod userns;
