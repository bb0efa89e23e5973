//! vault-secrets: a Docker volume plugin that puts a container's secrets from HashiCorp Vault or
//! OpenBao onto a fresh in-memory tmpfs when the container starts, keeps them current while it
//! runs, and revokes them when it stops.
//!
//! # Flow
//!
//! ```text
//! dockerd ──POST /VolumeDriver.*──▶ docker (router, lenient parsing, ApiError → {"Err"})
//! status/rotate ──admin socket──▶ admin          metrics_listen ──▶ metrics
//!                                     │
//!                                     ▼
//!                                   driver (volume lifecycle; one slot per mount ID;
//!                                     │      identity: per-volume wrapped identities;
//!                                     │      upkeep: renew / replace / refresh / sweep)
//!        ┌──────────────┬─────────────┼──────────────┬──────────────┬─────────────┐
//!        ▼              ▼             ▼              ▼              ▼             ▼
//!   vault (HTTP,   tmpfs (mount(2), files (render,  state (disk:   engine        lease (the one
//!   plugin         Mounter trait)   templates,      definitions;  (Docker API:  task owning
//!   identity)                       atomic writes)  tmpfs: tokens) signals)      the deadlines)
//! ```
//!
//! The three listeners (plugin socket, admin socket, `metrics_listen`) share one accept loop,
//! [`api::listener::serve`], each with its own bounds on connections and time; their caps leave file
//! descriptors in reserve for Unmount and revocation.
//!
//! Every edge is a trait with a real implementation and a fake: [`vault::Vault`],
//! [`tmpfs::Mounter`], [`state::Store`], [`dockerd::Engine`]; the driver is generic over them.
//!
//! # Lifecycles
//!
//! - **Create** parses the options into a [`volume::VolumeSpec`] (errors name the option),
//!   checks a `template`, unwraps a `wrapped-token` (after checking what made it), checks
//!   `policies` against the identity's, and persists the definition — the options, never a
//!   secret — in `state_dir`.
//! - **Mount(name, ID)**: a new ID gets a token (a child of the plugin's or the volume's token,
//!   or an AppRole login), recorded at once in the private tmpfs; every source is read with it;
//!   the files are rendered, a tmpfs (`nosuid,nodev,noexec,noswap`, size cap, owner and mode) is
//!   mounted at `runtime_dir/files/NAME/ID` (0700: only the plugin writes through it) and the
//!   files written; a read-only bind of it at `runtime_dir/mounts/NAME/ID` is what Docker gets,
//!   so a container never has a writable view; the mount is handed to the
//!   [`lease::LeaseManager`]. Any failure (a panic included) unmounts and revokes. A repeated
//!   ID is reference-counted.
//! - **While mounted** ([`driver`]'s upkeep, driven by the lease manager): the token and
//!   renewable leases are renewed at ~2/3 of their TTL; a lease that cannot be renewed further
//!   brings a fresh generation (new token, every source re-read, files swapped, the old token
//!   revoked after a short grace); KV sources are re-read every `refresh`; failures keep the
//!   files and back off; changed files send `signal` to the containers using the mount.
//! - **Unmount** on the last reference revokes the token (`revoke-self`: Vault revokes every
//!   lease it made) and removes the tmpfs; a revocation that fails while Vault is out of reach
//!   is kept and retried every 10 s. **Remove** refuses while mounted and revokes a volume's own
//!   token.
//! - **Restart**: definitions come back from `state_dir`; mount records, the plugin's token and
//!   volumes' own identities from the private tmpfs `runtime_dir/private`, which outlives the
//!   process but not a reboot. Mounts still in place are served and kept up again; the others
//!   are revoked; stray mount directories are removed. Every 60 s, mounts that no running
//!   container uses (a Docker daemon crash sends no Unmount) are released.
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
//! The plugin's identity ([`vault::identity`]) is a token file or an AppRole login (the
//! secret_id optionally response-wrapped: unwrapped once, the file then deleted), renewed at
//! two thirds of its TTL. Until the first login succeeds, Get/List/Path work and Mount says why
//! it cannot proceed.
//!
//! # Current limitations
//!
//! - The files of a multi-file volume are swapped one by one, each atomically.
//! - After a restart, a mount's secret data is not in memory; its first change that needs it
//!   fetches a fresh generation.
//! - Secret data parsed from Vault's JSON is zeroed on drop in [`vault::Secret`], but copies
//!   inside `reqwest`/`hyper` buffers and minijinja values are not under our control.

pub mod api;
pub mod audit;
pub mod config;
pub mod daemon;
pub mod dockerd;
pub mod driver;
pub mod files;
pub mod lease;
pub mod metrics;
pub mod report;
pub mod state;
pub mod tmpfs;
pub mod vault;
pub mod volume;
