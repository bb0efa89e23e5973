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
