//! The JSON Docker sends and expects (moby `volume/drivers/proxy.go`, `pkg/plugins`).
//!
//! Requests are parsed leniently where Docker is loose (no Content-Type, an empty Activate body,
//! `"Opts": null`, fields added by newer engines) and strictly in the types of what is there.

use std::collections::BTreeMap;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// `/VolumeDriver.Create`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct CreateRequest {
    #[serde(rename = "Name")]
    pub name: String,
    /// A key given twice is refused: which of the two would count is not for the plugin to
    /// guess (serde would silently take the last).
    #[serde(rename = "Opts", default, deserialize_with = "unique_keys")]
    pub opts: Option<BTreeMap<String, String>>,
}

fn unique_keys<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Options;
    impl<'de> Visitor<'de> for Options {
        type Value = Option<BTreeMap<String, String>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of string options, or null")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut opts = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if opts.contains_key(&key) {
                    let key: String = key.chars().take(100).collect();
                    return Err(de::Error::custom(format!("option {key:?} is given twice")));
                }
                opts.insert(key, value);
            }
            Ok(Some(opts))
        }
    }
    d.deserialize_option(Options)
}

/// `/VolumeDriver.Remove`, `Get`, `Path`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct NameRequest {
    #[serde(rename = "Name")]
    pub name: String,
}

/// `/VolumeDriver.Mount`, `Unmount`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct MountRequest {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "ID", default)]
    pub id: String,
}

/// `/SecretProvider.GetSecret` (swarmkit `manager/drivers/secrets.go`,
/// `SecretsProviderRequest`: Go leaves out empty fields). Fields a newer swarmkit adds are
/// ignored; those that are there must have their types.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct GetSecretRequest {
    #[serde(rename = "SecretName", default)]
    pub secret_name: String,
    #[serde(rename = "SecretLabels", default, deserialize_with = "unique_keys")]
    pub secret_labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "ServiceHostname", default)]
    pub service_hostname: String,
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    #[serde(rename = "ServiceName", default)]
    pub service_name: String,
    #[serde(rename = "ServiceLabels", default)]
    pub service_labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "TaskID", default)]
    pub task_id: String,
    #[serde(rename = "TaskName", default)]
    pub task_name: String,
    #[serde(rename = "TaskImage", default)]
    pub task_image: String,
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    /// The service's ports: of no use here, but an object when present.
    #[serde(rename = "ServiceEndpointSpec", default)]
    pub service_endpoint_spec: Option<BTreeMap<String, serde_json::Value>>,
}

/// The reply of `/SecretProvider.GetSecret` (swarmkit `SecretsProviderResponse`): `Value` is
/// Go's `[]byte`, base64 in JSON. Written by hand ([`GetSecretResponse::to_json`]): no
/// intermediate string holds the value.
#[derive(Debug)]
pub struct GetSecretResponse;

impl GetSecretResponse {
    /// `{"Value":"…","DoNotReuse":true}`: every task gets a value of its own.
    pub fn to_json(value: &[u8]) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(value.len() * 4 / 3 + 40));
        out.extend_from_slice(b"{\"Value\":\"");
        base64(value, &mut out);
        out.extend_from_slice(b"\",\"DoNotReuse\":true}");
        out
    }
}

/// Standard base64 with padding (Go's `encoding/json` for `[]byte`), appended to `out`.
pub fn base64(bytes: &[u8], out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ActivateResponse {
    #[serde(rename = "Implements")]
    pub implements: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct CapabilitiesResponse {
    #[serde(rename = "Capabilities")]
    pub capabilities: Capabilities,
}

#[derive(Debug, Serialize)]
pub struct Capabilities {
    #[serde(rename = "Scope")]
    pub scope: &'static str,
}

/// The empty success reply: `{"Err": ""}`.
#[derive(Debug, Serialize)]
pub struct ErrResponse {
    #[serde(rename = "Err")]
    pub err: String,
}

#[derive(Debug, Serialize)]
pub struct MountpointResponse {
    #[serde(rename = "Mountpoint")]
    pub mountpoint: String,
    #[serde(rename = "Err")]
    pub err: String,
}

#[derive(Debug, Serialize)]
pub struct WireVolume {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Mountpoint", skip_serializing_if = "String::is_empty")]
    pub mountpoint: String,
    #[serde(rename = "CreatedAt", skip_serializing_if = "String::is_empty")]
    pub created_at: String,
    #[serde(rename = "Status", skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct GetResponse {
    #[serde(rename = "Volume")]
    pub volume: WireVolume,
    #[serde(rename = "Err")]
    pub err: String,
}

#[derive(Debug, Serialize)]
pub struct ListResponse {
    #[serde(rename = "Volumes")]
    pub volumes: Vec<WireVolume>,
    #[serde(rename = "Err")]
    pub err: String,
}
