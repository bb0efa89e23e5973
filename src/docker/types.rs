//! The JSON Docker sends and expects (moby `volume/drivers/proxy.go`, `pkg/plugins`).
//!
//! Requests are parsed leniently where Docker is loose (no Content-Type, an empty Activate body,
//! `"Opts": null`, fields added by newer engines) and strictly in the types of what is there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `/VolumeDriver.Create`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct CreateRequest {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Opts", default)]
    pub opts: Option<BTreeMap<String, String>>,
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
