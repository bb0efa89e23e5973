//! The Docker plugin protocol: `POST /Plugin.Activate`, the eight `/VolumeDriver.*` endpoints
//! and swarmkit's `/SecretProvider.GetSecret` on a Unix socket, each a one-line handler over a
//! [`Backend`].
//!
//! Docker sends no Content-Type and an empty body to Activate, so bodies are read as bytes and
//! parsed here ([`parse`]); bodies are bounded; every reply, errors and unknown paths included,
//! is JSON.

pub mod error;
pub mod types;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde::de::DeserializeOwned;

pub use error::ApiError;
use types::*;

use crate::api::listener::Limits;
use crate::driver::{Backend, SecretRequest, VolumeInfo};

/// The largest request body accepted: a Create with its options is well below it.
pub const MAX_BODY: usize = 64 * 1024;

/// The plugin socket's bounds (only root can connect to it: these stop a runaway client, not an
/// attacker).
///
/// - 256 connections: dockerd opens one per plugin call in flight; 64 containers starting at
///   once take 64.
/// - 10 s for a head (and for an idle keep-alive connection): dockerd writes each request at
///   once; an idle connection it finds closed it dials again (its plugin client retries
///   connection errors for 30 s).
/// - 2 min per request: dockerd's volume driver proxy waits 2 min for Create and Mount and 1 min
///   for the rest (moby `daemon/volume/drivers/proxy.go`, `longTimeout`); its clock starts
///   before ours, so when ours fires nobody waits for the reply. A Mount can take longer (each
///   Vault call up to `vault.timeout`, at most 5 min): its handler still finishes, and the sweep
///   releases a mount that no container uses.
pub const LIMITS: Limits = Limits {
    name: "plugin",
    connections: 256,
    header_read: Duration::from_secs(10),
    request: Duration::from_secs(120),
};

/// The plugin's HTTP routes.
pub fn router<B: Backend>(backend: Arc<B>) -> Router {
    Router::new()
        .route("/Plugin.Activate", any(activate))
        .route("/VolumeDriver.Capabilities", any(capabilities))
        .route("/VolumeDriver.Create", any(create::<B>))
        .route("/VolumeDriver.Remove", any(remove::<B>))
        .route("/VolumeDriver.Mount", any(mount::<B>))
        .route("/VolumeDriver.Unmount", any(unmount::<B>))
        .route("/VolumeDriver.Path", any(path::<B>))
        .route("/VolumeDriver.Get", any(get::<B>))
        .route("/VolumeDriver.List", any(list::<B>))
        .route("/SecretProvider.GetSecret", any(get_secret::<B>))
        .fallback(unknown)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(backend)
}

type Reply = Result<Response, ApiError>;

/// Parses a request body; an empty body reads as `{}`.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is not what the plugin protocol sends: {e}"
        ))
    })
}

/// The body, or a JSON error when it is over [`MAX_BODY`].
fn body(bytes: Result<Bytes, axum::extract::rejection::BytesRejection>) -> Result<Bytes, ApiError> {
    bytes.map_err(|e| ApiError {
        status: e.status(),
        message: format!("the request body cannot be read: {e} (at most {MAX_BODY} bytes)"),
    })
}

fn ok() -> Response {
    Json(ErrResponse { err: String::new() }).into_response()
}

fn display(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

fn wire(info: VolumeInfo, with_status: bool) -> WireVolume {
    WireVolume {
        name: info.name,
        mountpoint: display(info.mountpoint.as_deref()),
        created_at: info.created_at,
        // Through a `Value`, whose objects keep their keys in name order, as the reply always has.
        status: with_status
            .then(|| serde_json::to_value(info.status).expect("a volume's details serialize")),
    }
}

// Every handler reads the body, even when it has no use for it: a connection whose request body
// is left unread is closed by hyper, and a client still sending it would see a broken pipe.

async fn activate(_: Bytes) -> Response {
    Json(ActivateResponse { implements: vec!["VolumeDriver", "secretprovider"] }).into_response()
}

async fn capabilities(_: Bytes) -> Response {
    Json(CapabilitiesResponse { capabilities: Capabilities { scope: "local" } }).into_response()
}

async fn create<B: Backend>(
    State(b): State<Arc<B>>,
    bytes: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Reply {
    let req: CreateRequest = parse(&body(bytes)?)?;
    b.create(&req.name, req.opts.unwrap_or_default()).await?;
    Ok(ok())
}

async fn remove<B: Backend>(
    State(b): State<Arc<B>>,
    bytes: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Reply {
    let req: NameRequest = parse(&body(bytes)?)?;
    b.remove(&req.name).await?;
    Ok(ok())
}

async fn mount<B: Backend>(
    State(b): State<Arc<B>>,
    bytes: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Reply {
    let req: MountRequest = parse(&body(bytes)?)?;
    let path = b.mount(&req.name, &req.id).await?;
    Ok(Json(MountpointResponse { mountpoint: display(Some(&path)), err: String::new() })
        .into_response())
}

async fn unmount<B: Backend>(
    State(b): State<Arc<B>>,
    bytes: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Reply {
    let req: MountRequest = parse(&body(bytes)?)?;
    b.unmount(&req.name, &req.id).await?;
    Ok(ok())
}

async fn path<B: Backend>(
    State(b): State<Arc<B>>,
    bytes: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Reply {
    let req: NameRequest = parse(&body(bytes)?)?;
    let path = b.path(&req.name)?;
    Ok(Json(MountpointResponse { mountpoint: display(path.as_deref()), err: String::new() })
        .into_response())
}

async fn get<B: Backend>(
    State(b): State<Arc<B>>,
    bytes: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Reply {
    let req: NameRequest = parse(&body(bytes)?)?;
    let volume = wire(b.get(&req.name)?, true);
    Ok(Json(GetResponse { volume, err: String::new() }).into_response())
}

async fn list<B: Backend>(State(b): State<Arc<B>>, _: Bytes) -> Response {
    let volumes = b.list().into_iter().map(|v| wire(v, false)).collect();
    Json(ListResponse { volumes, err: String::new() }).into_response()
}

async fn get_secret<B: Backend>(
    State(b): State<Arc<B>>,
    bytes: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Reply {
    let req: GetSecretRequest = parse(&body(bytes)?)?;
    let request = SecretRequest {
        secret: req.secret_name,
        labels: req.secret_labels.unwrap_or_default(),
        task: req.task_id,
        service: req.service_name,
    };
    let value = b.secret(request).await?;
    let mut json = GetSecretResponse::to_json(&value.0);
    // The body goes to hyper, which does not zero it: see the crate's limitations.
    let body = Bytes::from(std::mem::take(&mut *json));
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn unknown(uri: axum::http::Uri, _: Bytes) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("{} is not an endpoint of this plugin", uri.path()),
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
