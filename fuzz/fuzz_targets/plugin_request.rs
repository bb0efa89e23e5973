//! The plugin protocol under hostile requests: any method, path and body sent to the real
//! router over a fake backend. Nothing panics, and every reply is a JSON object; an error reply
//! carries a non-empty `Err`.

#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower::ServiceExt;
use vault_secrets::api::plugin::types::{
    CreateRequest, GetSecretRequest, MountRequest, NameRequest,
};
use vault_secrets::api::plugin::{self, router};
use vault_secrets::driver::{parse_labels, Backend, DriverError, VolumeDetails, VolumeInfo};
use vault_secrets::driver::{SecretError, SecretRequest, SecretValue};
use vault_secrets::volume::{valid_volume_name, Defaults, Format, VolumeSpec};

const ENDPOINTS: &[&str] = &[
    "/Plugin.Activate",
    "/VolumeDriver.Capabilities",
    "/VolumeDriver.Create",
    "/VolumeDriver.Remove",
    "/VolumeDriver.Mount",
    "/VolumeDriver.Unmount",
    "/VolumeDriver.Path",
    "/VolumeDriver.Get",
    "/VolumeDriver.List",
    "/SecretProvider.GetSecret",
];

#[derive(Arbitrary, Debug)]
struct Input {
    /// Picks a known endpoint; past the list, `raw_path` is used.
    endpoint: u8,
    raw_path: String,
    post: bool,
    body: Vec<u8>,
}

/// A backend that answers like the driver would, without state: names are checked, Create
/// parses the options, and every error kind the wire mapping knows is reachable.
struct Fake;

fn checked(name: &str) -> Result<(), DriverError> {
    if valid_volume_name(name) {
        Ok(())
    } else {
        Err(DriverError::InvalidName { name: name.into() })
    }
}

impl Backend for Fake {
    async fn create(&self, name: &str, opts: BTreeMap<String, String>) -> Result<(), DriverError> {
        checked(name)?;
        VolumeSpec::parse(&opts, &Defaults::default())
            .map(drop)
            .map_err(|source| DriverError::Options { volume: name.into(), source })
    }
    async fn remove(&self, name: &str) -> Result<(), DriverError> {
        checked(name)?;
        Err(DriverError::InUse { volume: name.into(), mounts: 1 })
    }
    async fn mount(&self, name: &str, id: &str) -> Result<PathBuf, DriverError> {
        checked(name)?;
        if id.is_empty() || id.len() > 128 {
            return Err(DriverError::InvalidMountId { id: id.into() });
        }
        Ok(PathBuf::from(format!("/run/vault-secrets/mounts/{name}/{id}")))
    }
    async fn unmount(&self, name: &str, _: &str) -> Result<(), DriverError> {
        checked(name)
    }
    fn path(&self, name: &str) -> Result<Option<PathBuf>, DriverError> {
        checked(name)?;
        Ok(Some(PathBuf::from(format!("/run/vault-secrets/mounts/{name}"))))
    }
    fn get(&self, name: &str) -> Result<VolumeInfo, DriverError> {
        checked(name)?;
        if name.starts_with(|c: char| c.is_ascii_uppercase()) {
            return Err(DriverError::NoSuchVolume { volume: name.into() });
        }
        Ok(VolumeInfo {
            name: name.into(),
            mountpoint: None,
            created_at: "2026-11-28T00:00:00Z".into(),
            status: VolumeDetails {
                sources: vec!["kv/app".into()],
                active_mounts: 0,
                format: Format::Files,
                owner: "0:0".into(),
                mode: "0400".into(),
                token_ttl: "1h".into(),
                refresh: "5m".into(),
            },
        })
    }
    fn list(&self) -> Vec<VolumeInfo> {
        vec![self.get("app").unwrap()]
    }
    async fn secret(&self, request: SecretRequest) -> Result<SecretValue, SecretError> {
        parse_labels(&request.labels, &Defaults::default())
            .map_err(|label| SecretError::Labels { secret: request.secret.clone(), label })?;
        Ok(SecretValue(request.task.into_bytes().into()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().unwrap())
}

fuzz_target!(|input: Input| {
    // The lenient parser alone: any body either parses or is a 400 naming the protocol.
    for result in [
        plugin::parse::<CreateRequest>(&input.body).err(),
        plugin::parse::<MountRequest>(&input.body).err(),
        plugin::parse::<NameRequest>(&input.body).err(),
        plugin::parse::<GetSecretRequest>(&input.body).err(),
    ]
    .into_iter()
    .flatten()
    {
        assert_eq!(result.status, 400);
        assert!(result.message.contains("request body"), "{}", result.message);
    }

    let path = match ENDPOINTS.get(input.endpoint as usize) {
        Some(p) => (*p).to_owned(),
        None => input.raw_path.clone(),
    };
    let method = if input.post { Method::POST } else { Method::GET };
    let Ok(request) = Request::builder().method(method).uri(&path).body(Body::from(input.body))
    else {
        return; // not a URI hyper would hand to the router
    };
    runtime().block_on(async {
        let response = router(Arc::new(Fake)).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let reply: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{path}: reply is not JSON ({e}): {bytes:?}"));
        assert!(reply.is_object(), "{path}: reply is not an object: {reply}");
        if !status.is_success() {
            let err = reply["Err"].as_str().unwrap_or_default();
            assert!(!err.is_empty(), "{path}: {status} without an Err: {reply}");
        }
    });
});
