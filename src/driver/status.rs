//! What `status` (and the metrics' gauges) show of the volumes and their mounts: never a token
//! or a value, only accessors, lease IDs and times. The plugin writes these types to the admin
//! socket and the CLI reads them back.

use serde::{Deserialize, Serialize};

use super::{Active, Driver, Edges, Volume};
use crate::lease::plan::Action;
use crate::volume::VolumeSpec;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One volume as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeStatus {
    pub name: String,
    pub sources: Vec<String>,
    pub mounts: Vec<MountStatus>,
    /// The IDs of mounts still busy (a Mount, Unmount or renewal under way) when `status`
    /// stopped waiting (`STATUS_WAIT`, 500 ms): they are there, their details are not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub busy: Vec<String>,
}

/// A volume as the plugin protocol's Get and List show it (`docker volume inspect`'s Status):
/// its definition in words, and how many mounts it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeDetails {
    /// Each source's path, after its sub-directory (`DIR: PATH`) when it has one.
    pub sources: Vec<String>,
    pub active_mounts: usize,
    pub format: crate::volume::Format,
    /// `UID:GID`, or the container's `--user`.
    pub owner: String,
    /// Octal, four digits.
    pub mode: String,
    pub token_ttl: String,
    pub refresh: String,
}

impl VolumeDetails {
    pub(super) fn of(spec: &VolumeSpec, active_mounts: usize) -> VolumeDetails {
        let duration = crate::report::duration;
        VolumeDetails {
            sources: spec
                .sources
                .iter()
                .map(|s| match &s.dir {
                    Some(dir) => format!("{dir}: {}", s.path),
                    None => s.path.clone(),
                })
                .collect(),
            active_mounts,
            format: spec.format,
            owner: if spec.uid_of_container {
                format!("container (its --user; group {} unless it names one)", spec.gid)
            } else {
                format!("{}:{}", spec.uid, spec.gid)
            },
            mode: format!("{:04o}", spec.mode),
            token_ttl: duration(spec.ttl),
            refresh: duration(spec.refresh),
        }
    }
}

/// How long `status` (and so each metrics scrape) waits for busy mounts: once, for all of them
/// together, never one after another.
pub const STATUS_WAIT: Duration = Duration::from_millis(500);

/// One active mount as `status` shows it: never a token or a value, only accessors and lease IDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountStatus {
    pub id: String,
    pub mountpoint: PathBuf,
    pub refs: u32,
    pub accessor: String,
    pub token_expires_in_secs: Option<u64>,
    pub leases: Vec<LeaseStatus>,
    /// Sources that expire without a lease (certificates).
    pub expiring: Vec<ExpiryStatus>,
    /// The certificates issued for it without a lease, and what becomes of them at its end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateStatus>,
    pub next_action_in_secs: u64,
    pub last_refresh: Option<String>,
    pub last_error: Option<String>,
    /// Its container died: its tokens are revoked; the tmpfs waits for the Unmount.
    pub container_died: bool,
    /// The container the mount belongs to, once known (its engine's record says so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::state::Container>,
    /// That container's engine (its API socket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    pub source: String,
    pub lease_id: String,
    pub expires_in_secs: Option<u64>,
    pub renewable: bool,
    /// `renew` while it can be renewed, `replace` once a fresh secret must be fetched.
    pub state: Action,
}

/// A source that expires without a lease (a certificate's `expiration`): replaced, never renewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryStatus {
    pub source: String,
    /// Its `expiration` (seconds since the epoch).
    pub expiration: u64,
    pub expires_in_secs: Option<u64>,
    /// When a fresh one is fetched.
    pub replace_in_secs: u64,
    /// Always `replace`.
    pub state: Action,
}

/// A certificate issued for a mount without a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    pub serial: String,
    pub at_stop: AtStop,
}

/// What becomes of a certificate at its mount's end, shown as a sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum AtStop {
    Revoked,
    /// Its role has `no_store`: Vault cannot revoke it by serial.
    NotStored,
}

impl AtStop {
    const ALL: [AtStop; 2] = [AtStop::Revoked, AtStop::NotStored];

    pub(super) fn of(certificate: &crate::vault::pki::Issued) -> AtStop {
        if certificate.not_stored {
            AtStop::NotStored
        } else {
            AtStop::Revoked
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            AtStop::Revoked => "revoked at stop",
            AtStop::NotStored => "not revoked at stop: its role has no_store, vault keeps no record of it; valid until it expires",
        }
    }
}

impl From<AtStop> for &'static str {
    fn from(at_stop: AtStop) -> &'static str {
        at_stop.text()
    }
}

impl TryFrom<String> for AtStop {
    type Error = String;

    fn try_from(text: String) -> Result<AtStop, String> {
        AtStop::ALL.into_iter().find(|a| a.text() == text).ok_or(text)
    }
}

impl<E: Edges> Driver<E> {
    /// Every volume with its active mounts, their tokens' and leases' remaining TTLs, last
    /// refresh and last error. A mount busy with a Mount, Unmount or upkeep is waited for, all
    /// of them at once, until one deadline (`STATUS_WAIT`, 500 ms); those still busy then are listed
    /// in `busy`. Each slot is held only while its own status is taken.
    pub async fn status(&self) -> Vec<VolumeStatus> {
        let deadline = Instant::now() + STATUS_WAIT;
        let volumes: Vec<Arc<Volume>> = self.volumes.lock().unwrap().values().cloned().collect();
        let looks = volumes.iter().map(|volume| async move {
            let slots = volume.slots().into_iter().map(|(id, slot)| async move {
                match tokio::time::timeout_at(deadline, slot.lock()).await {
                    Ok(guard) => Ok(guard.as_ref().map(|a| mount_status(&volume.spec, &id, a))),
                    Err(_) => Err(id),
                }
            });
            let (mut mounts, mut busy) = (Vec::new(), Vec::new());
            for look in futures_util::future::join_all(slots).await {
                match look {
                    Ok(Some(mount)) => mounts.push(mount),
                    Ok(None) => {} // Unmounted meanwhile, or a Mount that failed.
                    Err(id) => busy.push(id),
                }
            }
            let sources = volume.spec.sources.iter().map(|s| s.path.clone()).collect();
            VolumeStatus { name: volume.record.name.clone(), sources, mounts, busy }
        });
        futures_util::future::join_all(looks).await
    }
}

fn secs_until(at: Option<Instant>, now: Instant) -> Option<u64> {
    at.map(|at| at.saturating_duration_since(now).as_secs())
}

fn mount_status(spec: &VolumeSpec, id: &str, active: &Active) -> MountStatus {
    let now = Instant::now();
    let leases = active
        .leased()
        .map(|(i, lease, deadline)| LeaseStatus {
            source: spec.sources[i].path.clone(),
            lease_id: lease.id.clone(),
            expires_in_secs: deadline.and_then(|d| secs_until(d.expires_at, now)),
            renewable: lease.renewable,
            state: deadline.map_or(Action::Renew, |d| d.action),
        })
        .collect();
    let expiring = active
        .expiring()
        .map(|(i, expiration, deadline)| ExpiryStatus {
            source: spec.sources[i].path.clone(),
            expiration,
            expires_in_secs: secs_until(deadline.expires_at, now),
            replace_in_secs: deadline.act_at.saturating_duration_since(now).as_secs(),
            state: Action::Replace,
        })
        .collect();
    MountStatus {
        id: id.to_owned(),
        mountpoint: active.mountpoint.clone(),
        refs: active.refs,
        accessor: active.token.accessor.clone(),
        token_expires_in_secs: secs_until(active.timers.token.expires_at, now),
        leases,
        expiring,
        certificates: active
            .certificates
            .iter()
            .map(|c| CertificateStatus { serial: c.serial.clone(), at_stop: AtStop::of(c) })
            .collect(),
        next_action_in_secs: active.next_due().saturating_duration_since(now).as_secs(),
        last_refresh: active.last_refresh.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        last_error: active.last_error.clone(),
        container_died: active.ended,
        container: active.container.clone(),
        engine: active.engine.clone(),
    }
}
