//! The records the plugin keeps, one type per kind: what each holds (never a token in `Debug`).
//! Their formats are in [`super::format`], their keys in [`super::Keyed`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::tokens::{opt_token_serde, token_serde, tokens_serde};
use crate::files::Digests;
use crate::vault::pki::Issued;
use crate::vault::Token;

/// An optional string written as every format so far wrote it: none as `""`.
mod empty_is_none {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.as_deref().unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Some(String::deserialize(d)?).filter(|s| !s.is_empty()))
    }
}

/// A volume definition as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub options: BTreeMap<String, String>,
    /// RFC 3339.
    pub created_at: String,
}

/// An active mount as kept in the private tmpfs. `Debug` never shows the token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountRecord {
    pub volume: String,
    pub id: String,
    pub refs: u32,
    pub mountpoint: PathBuf,
    #[serde(with = "token_serde")]
    pub token: Token,
    pub accessor: String,
    /// When the token expires (seconds since the epoch), as last renewed.
    #[serde(default)]
    pub token_expires_at: Option<u64>,
    #[serde(default)]
    pub leases: Vec<LeaseRecord>,
    /// The sources that expire without a lease (certificates), with when to replace them.
    #[serde(default)]
    pub expiring: Vec<ExpiryRecord>,
    /// Tokens of replaced generations not yet revoked.
    #[serde(default, with = "tokens_serde")]
    pub retiring: Vec<Token>,
    /// What was last written into the mount's tmpfs (digests, never contents).
    #[serde(default)]
    pub digests: Digests,
    /// The container that holds the mount, once it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// The engine (its API socket) whose record says the mount is `container`'s; none in
    /// records of earlier builds, whose `container` was found by another rule and is looked
    /// for again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Its container died and its tokens were revoked: nothing of it is left to renew.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
    /// The certificates its sources issued without a lease, revoked when it ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Issued>,
}

/// A container, as the audit log and the mount records name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    /// Its name, without Docker's leading `/` (empty if the engine gave none).
    pub name: String,
}

/// A lease of one source of a mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The index of the source in the volume's sources.
    pub source: usize,
    pub id: String,
    /// The duration it was issued with (what renewals ask for).
    pub duration_secs: u64,
    pub renewable: bool,
    /// When it expires (seconds since the epoch), as last renewed.
    pub expires_at: Option<u64>,
}

/// A source of a mount that expires without a lease (a certificate's `expiration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryRecord {
    /// The index of the source in the volume's sources.
    pub source: usize,
    /// When it expires (seconds since the epoch), from its data.
    pub expires_at: u64,
    /// When it is due to be replaced (seconds since the epoch).
    pub replace_at: Option<u64>,
}

/// The plugin's own identity as kept in the private tmpfs, so a restart needs no new login
/// (and the file of a wrapped secret_id, deleted after its unwrap, is not needed again).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityRecord {
    #[serde(with = "token_serde")]
    pub token: Token,
    #[serde(default, with = "opt_token_serde")]
    pub secret_id: Option<Token>,
}

/// A token whose revocation failed while Vault was out of reach, kept in the private tmpfs
/// and retried until it works (also after a restart). `Debug` never shows the token.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingRevocation {
    /// Its name in the store.
    pub key: String,
    pub volume: String,
    /// What it was issued for: for the audit log.
    pub mount: Holder,
    #[serde(with = "token_serde")]
    pub token: Token,
    /// None for a token of a replaced generation carried over a restart (its record keeps
    /// no accessor).
    #[serde(with = "empty_is_none")]
    pub accessor: Option<String>,
}

/// What a token being revoked was issued for, as the audit log names it (its `mount_id`).
///
/// Recorded as one string: the mount's or the task's ID, or `create` / `remove`. A string
/// read back that is neither of the two words is taken for a mount's ID, a task's included:
/// the record has nothing else to tell them apart, and both are audited the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum Holder {
    /// A mount, by the ID Docker gave it.
    Mount(String),
    /// A volume's own identity, at its create (a probe, or a create undone).
    Create,
    /// A volume's own identity, at its remove.
    Remove,
    /// A swarm task, by its ID (its secret is the revocation's volume).
    Task(String),
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Mount(id) | Holder::Task(id) => f.write_str(id),
            Holder::Create => f.write_str("create"),
            Holder::Remove => f.write_str("remove"),
        }
    }
}

impl From<Holder> for String {
    fn from(holder: Holder) -> String {
        holder.to_string()
    }
}

impl From<String> for Holder {
    fn from(recorded: String) -> Holder {
        match recorded.as_str() {
            "create" => Holder::Create,
            "remove" => Holder::Remove,
            _ => Holder::Mount(recorded),
        }
    }
}

impl std::fmt::Debug for PendingRevocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRevocation")
            .field("volume", &self.volume)
            .field("mount", &self.mount)
            .field("accessor", &self.accessor)
            .finish_non_exhaustive()
    }
}

/// A certificate whose revocation failed while Vault was out of reach (or the plugin had no
/// identity), kept in the private tmpfs and retried like a [`PendingRevocation`]; revoked
/// with the plugin's token in `namespace`. Holds no secret: a serial and an API path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingCertificate {
    /// Its name in the store.
    pub key: String,
    pub volume: String,
    /// The mount ID it was issued for: for the audit log.
    pub mount: String,
    /// The volume's namespace, where the certificate was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub certificate: Issued,
}

/// A Swarm task's secret (`/SecretProvider.GetSecret`) as kept in the private tmpfs: the token
/// it was read with and that token's leases, so that a restarted plugin still revokes them when
/// the task ends. Never the value. `Debug` never shows the token.
#[derive(Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The swarm task ID.
    pub task: String,
    /// The swarm secret's name.
    pub secret: String,
    #[serde(default)]
    pub service: String,
    #[serde(with = "token_serde")]
    pub token: Token,
    pub accessor: String,
    /// The TTL asked for the token (its renewals ask for it again).
    pub ttl_secs: u64,
    /// When the token expires (seconds since the epoch), as last renewed.
    #[serde(default)]
    pub token_expires_at: Option<u64>,
    #[serde(default)]
    pub leases: Vec<LeaseRecord>,
}

impl std::fmt::Debug for TaskRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRecord")
            .field("task", &self.task)
            .field("secret", &self.secret)
            .field("accessor", &self.accessor)
            .finish_non_exhaustive()
    }
}

/// A volume's own identity (from `wrapped-token`), kept in the private tmpfs only: it
/// survives a plugin restart, not a reboot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeIdentityRecord {
    pub volume: String,
    /// The token a wrapped token held (its mounts get child tokens of it)…
    #[serde(default, with = "opt_token_serde")]
    pub token: Option<Token>,
    /// The token's accessor (none with AppRole credentials).
    #[serde(default, with = "empty_is_none")]
    pub accessor: Option<String>,
    /// …or the AppRole credentials a wrapped secret_id gave (each mount logs in).
    #[serde(default)]
    pub role_id: Option<String>,
    #[serde(default, with = "opt_token_serde")]
    pub secret_id: Option<Token>,
    /// The wrapping token used at create, to recognise a repeated Create.
    #[serde(with = "token_serde")]
    pub wrapping: Token,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_recorded_as_the_string_it_always_was() {
        let id = "0f5e3c9d2b7a";
        let holders = [
            (Holder::Mount(id.into()), id),
            (Holder::Task("x7ytask".into()), "x7ytask"),
            (Holder::Create, "create"),
            (Holder::Remove, "remove"),
        ];
        for (holder, recorded) in holders {
            assert_eq!(serde_json::to_value(&holder).unwrap(), recorded);
            assert_eq!(holder.to_string(), recorded);
        }
        for word in ["create", "remove", id] {
            let read: Holder = serde_json::from_value(word.into()).unwrap();
            assert_eq!(serde_json::to_value(&read).unwrap(), word);
        }
        let read: Holder = serde_json::from_value("create".into()).unwrap();
        assert_eq!(read, Holder::Create);
    }

    #[test]
    fn an_unknown_accessor_is_recorded_as_an_empty_string() {
        let record = PendingRevocation {
            key: "k".into(),
            volume: "app".into(),
            mount: Holder::Mount("m".into()),
            token: Token::new("t".into()),
            accessor: None,
        };
        let written = serde_json::to_value(&record).unwrap();
        assert_eq!(written["accessor"], "");
        let read: PendingRevocation = serde_json::from_value(written).unwrap();
        assert_eq!(read.accessor, None);
        let identity = serde_json::json!({"volume": "app", "role_id": "r", "wrapping": "w"});
        let read: VolumeIdentityRecord = serde_json::from_value(identity).unwrap();
        assert_eq!(read.accessor, None, "absent, as an AppRole identity's may be");
        assert_eq!(serde_json::to_value(&read).unwrap()["accessor"], "");
    }
}
