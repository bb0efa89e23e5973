//! vault-secrets: a Docker volume plugin that puts a container's secrets from HashiCorp Vault or
//! OpenBao onto a fresh in-memory tmpfs when the container starts, keeps them current while it
//! runs, and revokes them when it stops.
//!
//! # Flow
//!
//! Imports run one way, from the top of this picture down; `report` (error chains, one-line
//! bounding) is below everything.
//!
//! ```text
//!   check (the `check` command) ─▶ daemon's engines and paths, vault, identity's files,
//!   state (a kept token), tmpfs (is it mounted), dockerd, swap: the top floor, main's only
//!   daemon (serve: start-up, the tasks, shutdown) ─▶ api, driver and the edges it builds
//!
//! dockerd ─/VolumeDriver.*,─▶ api::plugin   status/rotate ─▶ api::admin    scrape ─▶ api::metrics
//!   /SecretProvider.GetSecret
//!                              │ (Backend)                      │ (Operations)         │
//!                              └──────── api::listener: one bounded accept loop ───────┘
//!                                                 │
//!                                                 ▼
//!          driver (Driver<E: Edges>: volume lifecycle in mod.rs; ports: Backend, Operations,
//!                  what the adapters call; mount: per-mount state and
//!                  records; restore: after a restart; revoke: revocations and their retries;
//!                  upkeep: renew / replace / refresh; containers: which container a mount is
//!                  for, signals, deaths; sweep: mounts whose containers are gone; status;
//!                  login: the plugin's login, its token's renewal as a lease job;
//!                  volume_identity: per-volume wrapped identities; secrets: swarm secrets;
//!                  certificates: PKI certificates revoked by serial)
//!        ┌─────────┬─────────┬──────────┬─────────┼─────────┬────────┬────────────┬────────┐
//!        ▼         ▼         ▼          ▼         ▼         ▼        ▼            ▼        ▼
//!      lease     files     identity   vault     state     tmpfs    dockerd      audit    metrics
//!    (the one  (render,  (plugin's  (HTTP:    (disk:    (mount,  (engines'    (JSON    (counters,
//!     task of   fd-only   token:     reads,    defin-    bind     API:         lines)   histo-
//!     dead-     writes)   login,     tokens,   itions;   ro)      Docker,               grams)
//!     lines)              renewal)   logins)   tmpfs:             Podman;
//!                                              tokens)            mountinfo)
//!      identity logs in through vault, keeps its token in state, its renewal step uses lease's
//!      backoff; volume (options: syntax, then rules → VolumeSpec), config (TOML → Config):
//!      read by the layers above; namespace (a Vault namespace path, checked) below them
//! ```
//!
//! - [`api`]: the inbound adapters, each over a narrow trait the driver offers and implements
//!   ([`driver::Backend`], [`driver::Operations`]); the three listeners share
//!   [`api::listener::serve`], each with its own bounds on connections and time; their caps
//!   leave file descriptors in reserve for Unmount and revocation.
//! - [`driver`]: the core, generic over [`driver::Edges`] — one associated type per outbound
//!   edge, each a trait with a real implementation and a fake: [`vault::Vault`]
//!   ([`vault::HttpVault`]), [`tmpfs::Mounter`], [`state::Store`], [`dockerd::Engine`] (one
//!   per configured engine, each made once). The daemon's `Host` is the real set; unit tests
//!   use fakes, the background loops (login, deaths, ties, the sweep) included. The plugin's own identity
//!   ([`identity`]: over [`vault::Vault`] to log in and renew, over [`state::Store`] to keep its
//!   token) and [`check`] go through the same [`vault::Vault`] trait.
//! - [`daemon`]: start-up, the tasks, shutdown; [`check`]: the `check` command, its report typed
//!   ([`report::Finding`]: ok or warning); the binary (`src/main.rs`) parses arguments and
//!   prints what the library returns (`check`'s findings, `status`'s table from
//!   [`api::admin`]). [`swap`]: whether mounts can be kept out of swap (`noswap`, refused
//!   in a user namespace: rootless engines), for the mount's log line, `check` and a metric.
//!
//! # Lifecycles
//!
//! - **Create** parses the options into a [`volume::VolumeSpec`] (errors name the option),
//!   checks a `template`, unwraps a `wrapped-token` (after checking what made it), checks
//!   `policies` against the identity's, checks that `uid` and `gid` are ids a remapping engine
//!   maps (`dockerd --userns-remap`: [`dockerd::userns`], or the configuration's `[userns]`;
//!   under it they are the container's ids, and a Mount owns the tmpfs and files by the host
//!   ids they map to; `uid=container` takes, at Mount, the numeric user dockerd recorded for
//!   the container: [`dockerd::record`]), and persists the definition — the options, never a secret — in
//!   `state_dir`.
//! - **Mount(name, ID)**: a new ID gets a token (a child of the plugin's or the volume's token,
//!   or an AppRole login), recorded at once in the private tmpfs (a mount that cannot be
//!   recorded fails there, its token revoked; users' records may take three quarters of it,
//!   [`state::quota`]); every source is read with it, the mount holding at most twice its
//!   `size` of what they return ([`volume::bounds::read_budget`]);
//!   the files are rendered and written into a tmpfs (`nosuid,nodev,noexec,noswap`, size cap,
//!   owner and mode) at `runtime_dir/files/NAME/ID` (0700: only the plugin writes through it),
//!   which a blocking thread mounted, with its read-only bind at `runtime_dir/mounts/NAME/ID`,
//!   while Vault created the token; the bind is what Docker gets (from the reply, once the files
//!   are written and the tmpfs's superblock made read-only), so no container view can write,
//!   whatever per-mount flags its runtime sets (Podman's runc remounts a bind `rw` without
//!   `:ro`); once its container is known its view is also sealed per mount
//!   (`ro,nosuid,nodev,noexec`, [`tmpfs::seal`]); the mount is handed to the
//!   [`lease::LeaseManager`]. Any failure (a panic included) unmounts and revokes. A repeated
//!   ID is reference-counted.
//! - **While mounted** ([`driver`]'s upkeep, driven by the lease manager): the token and
//!   renewable leases are renewed at ~2/3 of their TTL; a lease that cannot be renewed further
//!   brings a fresh generation (new token, every source re-read, files swapped, the old token
//!   revoked after a short grace); KV sources are re-read every `refresh`; failures keep the
//!   files and back off (for as long as the outage has lasted, jittered, so that a returning
//!   Vault sees the held-up renewals spread); changed files send `signal` to the containers
//!   using the mount. A change is written in a window: every view of the tmpfs in every mount
//!   namespace sealed read-only per mount, then the superblock writable, the write, read-only
//!   again; a view that cannot be sealed keeps the old files; a superblock the kernel keeps
//!   writable (a replaced file still open) is tried again every 5 s, new views sealed meanwhile.
//! - **Unmount** on the last reference revokes the certificates its PKI sources issued without
//!   a lease (by serial, with the plugin's token: [`vault::pki`]; a replaced one goes once its
//!   successor is written), then the token (`revoke-self`: Vault revokes every lease it made),
//!   and removes the tmpfs; a revocation that fails while Vault is out of reach is kept and
//!   retried every 10 s. **Remove** refuses while mounted and revokes a volume's own
//!   token.
//! - **Restart**: definitions come back from `state_dir` (one over a bound of today's Create is
//!   served as it was made, with a warning); mount records, the plugin's token and
//!   volumes' own identities from the private tmpfs `runtime_dir/private`, which outlives the
//!   process but not a reboot. A restart on a newer binary is an upgrade: it reads every
//!   earlier record format, and an older binary refuses to start on a newer one ([`state`]'s
//!   formats). Mounts still in place are served and kept up again (a tmpfs
//!   whose read-only bind is gone is bound again: a managed plugin's binds are in its
//!   propagated mount, which dockerd unmounts when the plugin stops, while its tmpfs mounts,
//!   in the host's `runtime` directory, stay); the others are revoked; stray mount directories
//!   are removed. Every 60 s, mounts that no running container was given (an engine crash
//!   sends no Unmount) are released, when every engine that could have made them answered.
//! - **Its container**: shortly after a Mount (and at every sweep) each engine
//!   (`plugin.engines`: Docker, Podman) is asked which of its running containers it mounted
//!   the mount for — its record lists the volume at a destination where the container's mount
//!   table shows the mount's tmpfs ([`dockerd::mountinfo`]); a container that merely sees it
//!   is never its holder. The container and its engine go to the [`audit`] log (a `container`
//!   line) and the mount record; the mount's later audit lines name it, and `signal` goes to
//!   it alone (to each of them for a mount Podman shares among its containers).
//! - **Its container's death** (`Driver::follow_deaths`, each engine's `die` events): the
//!   mounts tied to a container that died are revoked at once (`Driver::container_died`),
//!   ahead of the Unmount, which then only removes the tmpfs; a mount Podman shares ends with
//!   the last of its containers.
//!
//! - **Swarm secrets** (`driver::secrets`): on a manager, swarmkit's dispatcher asks
//!   `/SecretProvider.GetSecret` for each task that uses a secret of this driver; the secret's
//!   labels are its options (`path`, `field`, `format`, `param.*`, `ttl`, `policies`). Each task
//!   gets a child token of its own, recorded in the private tmpfs (never the value), and the
//!   value read with it (`DoNotReuse`); its token and leases are renewed while the task is seen
//!   alive. Every second while any task holds a token, `GET /tasks` tells which have ended or
//!   are gone: their tokens are revoked, and with them their leases.
//!
//! # Trust
//!
//! A container owns everything inside its mount and the plugin runs as root: [`files`] writes
//! into a tmpfs only through directory file descriptors, one name at a time, never following a
//! symlink or opening anything but the files it creates, and tells changes by digests. A Docker
//! user controls every option: Vault URLs are built segment by segment from `vault.address`
//! (origin checked), token-bearing paths and replies are refused. Vault's replies are bounded
//! and parsed strictly, their TTLs capped.
//!
//! `vault.address` may list a cluster's nodes: [`vault::HttpVault`] sends a request on to the
//! next node when one cannot serve it (no connection, sealed, no leader, a redirect), tries the
//! node that answered last first, and waits out an election for up to 30 s; a token goes only to
//! a listed node, and a request that creates a token only to the active one, never twice.
//!
//! Namespaces ([`namespace`]): a volume's `namespace` goes with its tokens — a
//! [`vault::Token`] carries the namespace it belongs to, kept in the records — and every
//! request made with one names it in the `X-Vault-Namespace` header (never in a URL);
//! `vault.namespace` for the rest.
//!
//! The plugin's identity ([`identity`]) is a token file, an AppRole login (the
//! secret_id optionally response-wrapped: unwrapped once, the file then deleted), a TLS client
//! certificate (presented by the HTTP client, checked to match its key at start-up) or a JWT
//! file (read at every login), renewed at two thirds of its TTL — a job of the lease manager like
//! every mount's (one owner of time; one backoff, [`lease::plan::backoff`], for the first login
//! and for renewals while Vault fails). At its max TTL, or when Vault
//! no longer knows it — found at the renewal, or when a mount's child token is refused and
//! `lookup-self` confirms it — the plugin logs in again, once for all who noticed. Until the
//! first login succeeds, Get/List/Path work and Mount says why it cannot proceed. The identity's
//! files ([`vault::credentials`]) are read off the runtime, opened non-blocking, bounded, and
//! refused unless regular files, so no file can stall a request, `status` or a signal.
//!
//! # Current limitations
//!
//! - The files of a multi-file volume are swapped one by one, each atomically.
//! - After a restart, a mount's secret data is not in memory; its first change that needs it
//!   fetches a fresh generation.
//! - Secret data parsed from Vault's JSON is zeroed on drop in [`vault::Secret`], but copies
//!   inside `reqwest`/`hyper` buffers and minijinja values are not under our control.

/// This build: Cargo.toml's version and, when known, the commit it was built from
/// (`0.2.0 (commit 4194f3a1b2c3)`), as `--version` and the start-up log line say (set by
/// `build.rs`).
pub const VERSION: &str = env!("VAULT_SECRETS_VERSION");

pub mod api;
pub mod audit;
pub mod check;
pub mod config;
pub mod daemon;
pub mod dockerd;
pub mod driver;
pub mod files;
pub mod identity;
pub mod lease;
pub mod metrics;
pub mod namespace;
pub mod report;
pub mod state;
pub mod swap;
pub mod tmpfs;
pub mod vault;
pub mod volume;
