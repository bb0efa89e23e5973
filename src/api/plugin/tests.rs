//! Protocol tests: requests exactly as dockerd sends them (no Content-Type, empty Activate
//! body, `"Opts": null`), against a fake backend; every reply is JSON.

use std::sync::Mutex;

use axum::body::Body;
use axum::http::Request;
use serde_json::{json, Value};
use tower::ServiceExt;

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::driver::{DriverError, SecretError, SecretValue};

#[derive(Default)]
struct FakeBackend {
    created: Mutex<Vec<(String, BTreeMap<String, String>)>>,
    secrets: Mutex<Vec<SecretRequest>>,
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
            status: crate::driver::VolumeDetails {
                sources: vec!["kv/app".into()],
                active_mounts: 0,
                format: crate::volume::Format::Files,
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
        crate::driver::parse_labels(&request.labels, &Default::default())
            .map_err(|label| SecretError::Labels { secret: request.secret.clone(), label })?;
        self.secrets.lock().unwrap().push(request);
        Ok(SecretValue(zeroize::Zeroizing::new(b"v-user-1\x00\xff".to_vec())))
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
    assert_eq!(v, json!({"Implements": ["VolumeDriver", "secretprovider"]}));
}

/// A request as swarmkit's dispatcher sends it (`drivers.SecretsProviderRequest`).
const GET_SECRET: &str = r#"{"SecretName":"db_user","SecretLabels":{"com.docker.stack.namespace":"app","field":"username","path":"database/creds/app"},"ServiceHostname":"","ServiceID":"svc1","ServiceName":"web","ServiceLabels":{"a":"b"},"TaskID":"x1y2z3","TaskName":"web.1.x1y2z3","TaskImage":"busybox:latest@sha256:00","NodeID":"node1","ServiceEndpointSpec":{"Mode":1}}"#;

#[tokio::test]
async fn get_secret_answers_a_value_of_its_own_base64_as_go_reads_bytes() {
    let backend = Arc::new(FakeBackend::default());
    let (status, v) = call(backend.clone(), "/SecretProvider.GetSecret", GET_SECRET).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({"Value": "di11c2VyLTEA/w==", "DoNotReuse": true}));
    let seen = backend.secrets.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].secret.as_str(), seen[0].task.as_str()), ("db_user", "x1y2z3"));
    assert_eq!(seen[0].service, "web");
    assert_eq!(seen[0].labels.len(), 3, "the labels as they came: the driver sorts them out");
    // Fields a newer swarmkit may add are ignored.
    let newer = GET_SECRET.replacen('{', r#"{"NewField":[1,2],"#, 1);
    assert_eq!(call(backend.clone(), "/SecretProvider.GetSecret", &newer).await.0, StatusCode::OK);
}

#[test]
fn base64_is_standard_with_padding() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        let mut out = Vec::new();
        types::base64(plain.as_bytes(), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), encoded, "{plain}");
    }
}

#[tokio::test]
async fn get_secret_refuses_what_swarmkit_does_not_send_and_bad_labels_by_name() {
    for body in [
        "{not json",
        r#"{"SecretName":3,"TaskID":"t"}"#,
        r#"{"SecretName":"s","TaskID":null}"#,
        r#"{"SecretName":"s","TaskID":"t","SecretLabels":["path"]}"#,
        r#"{"SecretName":"s","TaskID":"t","SecretLabels":{"path":1}}"#,
        r#"{"SecretName":"s","TaskID":"t","SecretLabels":{"path":"a/b","path":"c/d"}}"#,
        r#"{"SecretName":"s","TaskID":"t","ServiceEndpointSpec":"x"}"#,
    ] {
        let (status, v) = call(Arc::default(), "/SecretProvider.GetSecret", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v["Err"].as_str().unwrap().contains("not what the plugin protocol sends"), "{v}");
    }
    let body = GET_SECRET.replace(r#""field":"username""#, r#""uid":"1000""#);
    let (status, v) = call(Arc::default(), "/SecretProvider.GetSecret", &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let e = v["Err"].as_str().unwrap();
    assert!(e.starts_with("secret db_user: label `uid`: is a volume option"), "{e}");
    assert_eq!(e.matches("is a volume option").count(), 1, "said once: {e}");
    let huge =
        format!(r#"{{"SecretName":"s","TaskID":"t","TaskImage":"{}"}}"#, "x".repeat(MAX_BODY));
    let (status, v) = call(Arc::default(), "/SecretProvider.GetSecret", &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
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
