//! vault-secrets: a Docker volume plugin that puts a container's secrets from HashiCorp Vault or
//! OpenBao onto a fresh in-memory tmpfs when the container starts, and revokes them when it stops.
//!
//! # Flow
//!
//! ```text
//! dockerd ──POST /VolumeDriver.*──▶ docker (router, lenient parsing, ApiError → {"Err"})
//!                                     │
//!                                     ▼
//!                                   driver (volume lifecycle, one slot per mount ID)
//!                    ┌────────────────┼──────────────────┬─────────────────┐
//!                    ▼                ▼                  ▼                 ▼
//!              vault (HTTP,     tmpfs (mount(2),      files (render,     state (definitions on
//!              identity,        Mounter trait)        atomic writes)     disk; tokens in the
//!              child tokens)                                             private tmpfs)
//! ```
//!
//! - **Create** parses the options into a [`volume::VolumeSpec`] (errors name the option) and
//!   persists the definition — the options, never a secret — in `state_dir`.
//! - **Mount(name, ID)**: a new ID gets a child token of the plugin's identity (`policies`,
//!   `ttl`), recorded at once in the private tmpfs; every source is read with that token; the
//!   files are rendered, a tmpfs (`nosuid,nodev,noexec,noswap`, size cap, owner and mode) is
//!   mounted at `runtime_dir/mounts/NAME/ID` and the files written atomically. Any failure
//!   unmounts, revokes the token (and so every lease it made), and deletes the record. A
//!   repeated ID is reference-counted.
//! - **Unmount** on the last reference unmounts the tmpfs and revokes the token with
//!   `revoke-self`; a revocation that fails while Vault is out of reach is retried every 10 s.
//! - **Remove** refuses while any mount of the volume exists.
//! - **Restart**: volume definitions are reloaded from `state_dir`; mount records (with their
//!   tokens) from the private tmpfs `runtime_dir/private`, which outlives the process but not a
//!   reboot. Mounts still in place are served again; records whose tmpfs is gone are revoked;
//!   stray mount directories are removed. The plugin's own token is kept there too, so a
//!   restart does not log in anew (which would orphan the running mounts' parent).
//!
//! The plugin's identity ([`vault::identity`]) is a token file or an AppRole login (the
//! secret_id optionally response-wrapped: unwrapped once, the file then deleted); it is renewed
//! at two thirds of its TTL. Until the first login succeeds, Get/List/Path work and Mount fails
//! saying why.
//!
//! # Current limitations
//!
//! - Leases are not yet renewed, and mounts' child tokens are not renewed: a mount's token and
//!   its leases live for the volume's `ttl` (default 1h) and the lease's own TTL. KV files stay
//!   in place after that; dynamic credentials expire. (`refresh` is parsed but not acted on.)
//! - No admin socket yet: `status` and `rotate` are not implemented; neither are `template`,
//!   `wrapped-token`, `role-id` and `signal`, which are refused at create.
//! - Mounts whose containers vanished without an Unmount (a Docker daemon crash) are only
//!   released when Docker sends the Unmount or the host reboots.

pub mod admin;
pub mod audit;
pub mod config;
pub mod daemon;
pub mod docker;
pub mod driver;
pub mod engine;
pub mod files;
pub mod lease;
pub mod metrics;
pub mod state;
pub mod tmpfs;
pub mod vault;
pub mod volume;
