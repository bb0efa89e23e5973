//! Protocol tests: requests exactly as dockerd sends them (no Content-Type, empty Activate
//! body, `"Opts": null`), against a fake backend; every reply is JSON.

use std::sync::Mutex;

use axum::body::Body;
use axum::http::Request;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;

#[derive(Default)]
struct FakeBackend {
    created: Mutex<Vec<(String, BTreeMap<String, String>)>>,
}

impl Backend for FakeBackend {
    async fn create(&self, name: &str, opts: BTreeMap<String, String>) -> Result<(), DriverError> {
        if opts.contains_key("bogus") {
            return Err(DriverError::Options {
                volume: name.into(),
                source: crate::volume::OptionError {
                    option: "bogus".into(),
                    message: "unknown option".into(),
                },
            });
        }
        self.created.lock().unwrap().push((name.into(), opts));
        Ok(())
    }
    async fn remove(&self, name: &str) -> Result<(), DriverError> {
        Err(DriverError::InUse { volume: name.into(), mounts: 1 })
    }
    async fn mount(&self, name: &str, id: &str) -> Result<PathBuf, DriverError> {
        Ok(PathBuf::from(format!("/run/vault-secrets/mounts/{name}/{id}")))
    }
    async fn unmount(&self, _: &str, _: &str) -> Result<(), DriverError> {
        Ok(())
    }
    fn path(&self, _: &str) -> Result<Option<PathBuf>, DriverError> {
        Ok(None)
    }
    fn get(&self, name: &str) -> Result<VolumeInfo, DriverError> {
        if name != "app" {
            return Err(DriverError::NoSuchVolume { volume: name.into() });
        }
        Ok(VolumeInfo {
            name: name.into(),
            mountpoint: None,
            created_at: "2026-11-28T00:00:00Z".into(),
            status: json!({"active_mounts": 0}),
        })
    }
    fn list(&self) -> Vec<VolumeInfo> {
        vec![self.get("app").unwrap()]
    }
}

async fn call(backend: Arc<FakeBackend>, path: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::post(path).body(Body::from(body.to_owned())).unwrap();
    let response = router(backend).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}")))
}

#[tokio::test]
async fn activate_with_an_empty_body() {
    let (status, v) = call(Arc::default(), "/Plugin.Activate", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({"Implements": ["VolumeDriver"]}));
}

#[tokio::test]
async fn capabilities_scope_local() {
    let (_, v) = call(Arc::default(), "/VolumeDriver.Capabilities", "").await;
    assert_eq!(v, json!({"Capabilities": {"Scope": "local"}}));
}

#[tokio::test]
async fn create_without_content_type_and_with_null_opts() {
    let backend = Arc::new(FakeBackend::default());
    let (status, v) =
        call(backend.clone(), "/VolumeDriver.Create", r#"{"Name":"app","Opts":{"path":"kv/a"}}"#)
            .await;
    assert_eq!((status, v), (StatusCode::OK, json!({"Err": ""})));
    let (status, _) =
        call(backend.clone(), "/VolumeDriver.Create", r#"{"Name":"b","Opts":null}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert!(backend.created.lock().unwrap()[1].1.is_empty());
    let (status, v) =
        call(backend, "/VolumeDriver.Create", r#"{"Name":"c","Opts":{"bogus":"1"}}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["Err"].as_str().unwrap().contains("bogus"), "{v}");
}

#[tokio::test]
async fn mount_get_list_and_errors_are_json() {
    let b = Arc::new(FakeBackend::default());
    let (_, v) = call(b.clone(), "/VolumeDriver.Mount", r#"{"Name":"app","ID":"abc"}"#).await;
    assert_eq!(v, json!({"Mountpoint": "/run/vault-secrets/mounts/app/abc", "Err": ""}));
    let (_, v) = call(b.clone(), "/VolumeDriver.Get", r#"{"Name":"app"}"#).await;
    assert_eq!(v["Volume"]["Name"], "app");
    assert_eq!(v["Volume"]["CreatedAt"], "2026-11-28T00:00:00Z");
    assert_eq!(v["Volume"]["Status"]["active_mounts"], 0);
    let (status, v) = call(b.clone(), "/VolumeDriver.Get", r#"{"Name":"nope"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["Err"], "no such volume: nope");
    let (_, v) = call(b.clone(), "/VolumeDriver.List", "").await;
    assert_eq!(v["Volumes"][0]["Name"], "app");
    let (_, v) = call(b.clone(), "/VolumeDriver.Path", r#"{"Name":"app"}"#).await;
    assert_eq!(v, json!({"Mountpoint": "", "Err": ""}));
    let (status, v) = call(b.clone(), "/VolumeDriver.Remove", r#"{"Name":"app"}"#).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(v["Err"].as_str().unwrap().contains("in use"));
    let (_, v) =
        call(b.clone(), "/VolumeDriver.Unmount", r#"{"Name":"app","ID":"abc","Extra":1}"#).await;
    assert_eq!(v, json!({"Err": ""}));
}

#[tokio::test]
async fn malformed_oversized_and_unknown_requests_get_json_errors() {
    let b = Arc::new(FakeBackend::default());
    let (status, v) = call(b.clone(), "/VolumeDriver.Create", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["Err"].as_str().unwrap().contains("request body"));
    let (status, v) =
        call(b.clone(), "/VolumeDriver.Create", r#"{"Name":"a","Opts":{"path":1}}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (_, v) = call(b.clone(), "/VolumeDriver.Mount", "").await;
    assert!(v["Err"].as_str().unwrap().contains("Name"), "{v}");
    let huge = format!(r#"{{"Name":"a","Opts":{{"path":"{}"}}}}"#, "x".repeat(MAX_BODY));
    let (status, v) = call(b.clone(), "/VolumeDriver.Create", &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(v["Err"].as_str().is_some());
    let (status, v) = call(b, "/VolumeDriver.Frobnicate", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["Err"].as_str().unwrap().contains("/VolumeDriver.Frobnicate"));
}

#[tokio::test]
async fn an_option_given_twice_is_refused_by_name() {
    let backend = Arc::new(FakeBackend::default());
    let body = r#"{"Name":"app","Opts":{"path":"kv/a","path":"auth/token/lookup-self"}}"#;
    let (status, reply) = call(backend.clone(), "/VolumeDriver.Create", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reply["Err"].as_str().unwrap().contains("\"path\" is given twice"), "{reply}");
    assert!(backend.created.lock().unwrap().is_empty());
}
