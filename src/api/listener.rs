//! Serving a [`Router`] on a Unix or TCP listener within bounds, and the file descriptors those
//! bounds leave in reserve. The plugin socket, the admin socket and `metrics_listen` all go
//! through [`serve`], each with its own [`Limits`] (defined beside its router: `plugin::LIMITS`,
//! `admin::LIMITS`, `metrics::LIMITS`).
//!
//! - **Connections**: at most `connections` at once (a semaphore). One more is accepted and
//!   closed at once, counted in `vault_secrets_connections_refused_total{listener}` and logged
//!   at most once per [`REFUSAL_LOG_INTERVAL`].
//! - **Head**: a request's head must arrive within `header_read`. hyper starts that timer
//!   whenever a connection waits for a request, fresh or kept alive between two, so it is also
//!   the bound on an idle keep-alive connection (dockerd and Prometheus simply reconnect).
//! - **Request**: a request not answered within `request` of its head loses its connection.
//!   Its handler runs on to its end in a task of its own, so a client that goes away, or this
//!   bound, never cuts a Mount or an Unmount half-way. That task keeps the connection's permit:
//!   work left behind still counts against the cap.
//! - **Shutdown** (`stop`): no more accepts; idle connections close; in-flight requests finish.
//!   [`serve`] returns when every permit is back: every connection closed (each within
//!   `header_read` or `request`) and every handler finished.
//!
//! Not bounded here: writing a reply to a client that does not read it. Replies are small and
//! fit the socket's buffer (the admin status of thousands of mounts may not, but only root
//! reaches that socket).
//!
//! **Descriptors in reserve**: [`reserve_fds`] raises the soft `RLIMIT_NOFILE` to the hard limit
//! and keeps the sum of the caps within a quarter of it ([`fit`]). The other three quarters are
//! for what a request and the background work need besides their connection: Vault connections,
//! a mount's directory and files, state files, the Docker Engine socket, so that Unmount and
//! revocation still find descriptors while every listener is full.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{service_fn, Service};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// One listener's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The listener's name in logs and metrics.
    pub name: &'static str,
    /// Connections served at once; one more is closed as soon as it is accepted.
    pub connections: usize,
    /// Time for a request's head to arrive; also how long a kept-alive connection may idle.
    pub header_read: Duration,
    /// Time from a request's head to its response (reading the body included).
    pub request: Duration,
}

/// Connections refused over a cap are logged at most once per this interval (with their count).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The listeners' connections together get at most `1 / FD_SHARE` of the descriptor limit.
const FD_SHARE: u64 = 4;

/// A listening socket.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<Self::Io> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<Self::Io> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// Why a request lost its connection.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("no reply within {0:?}")]
    TimedOut(Duration),
    #[error("the handler panicked")]
    Panicked,
}

/// Serves `router` on `listener` within `limits` until `stop` changes (or its sender is
/// dropped), then shuts down gracefully.
pub async fn serve(
    listener: impl Accept,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.connections));
    let app = TowerToHyperService::new(router);
    let mut refusals = Refusals::new(limits);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        match accepted {
            Ok(io) => match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(connection(io, app.clone(), limits, permit, stop.clone()));
                }
                Err(_) => refusals.note(), // `io` is dropped: closed at once
            },
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Most likely out of descriptors (EMFILE): wait for some to be freed.
                tracing::error!(listener = limits.name, error = %e, "cannot accept a connection; retrying in 1s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
    drop(listener);
    // Every connection, and every handler one left running, holds a permit.
    let _ = permits.acquire_many(limits.connections as u32).await;
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// One connection, HTTP/1.1 with keep-alive, until the client or a bound closes it.
async fn connection<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: I,
    app: TowerToHyperService<Router>,
    limits: Limits,
    permit: OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    let permit = Arc::new(permit);
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        // For the log line of a request cut short; the path is the client's, so bounded.
        let path: String = request.uri().path().chars().take(64).collect();
        let what = format!("{} {path}", request.method());
        let call = app.call(request);
        let permit = permit.clone();
        let handler = tokio::spawn(async move {
            let response: Result<Response, Infallible> = call.await;
            drop(permit);
            response
        });
        async move {
            match tokio::time::timeout(limits.request, handler).await {
                Ok(Ok(Ok(response))) => Ok(response),
                Ok(Ok(Err(never))) => match never {},
                Ok(Err(_)) => Err(RequestError::Panicked),
                Err(_) => {
                    tracing::warn!(listener = limits.name, request = %what, bound = ?limits.request, "no reply in time: the connection is closed, the handler goes on");
                    Err(RequestError::TimedOut(limits.request))
                }
            }
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // A header timeout, a client gone, or a request cut above: a flood would make one
        // line per connection, so only at trace level.
        tracing::trace!(listener = limits.name, error = %e, "connection closed");
    }
}

/// Counts refusals and logs them, at most once per [`REFUSAL_LOG_INTERVAL`].
struct Refusals {
    limits: Limits,
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl Refusals {
    fn new(limits: Limits) -> Refusals {
        crate::metrics::METRICS.refused(limits.name, 0);
        Refusals { limits, unlogged: 0, logged_at: None }
    }

    fn note(&mut self) {
        crate::metrics::METRICS.refused(self.limits.name, 1);
        self.unlogged += 1;
        let now = Instant::now();
        if self.logged_at.is_none_or(|at| now - at >= REFUSAL_LOG_INTERVAL) {
            tracing::warn!(
                listener = self.limits.name,
                refused = self.unlogged,
                cap = self.limits.connections,
                "connections over the cap closed"
            );
            self.unlogged = 0;
            self.logged_at = Some(now);
        }
    }
}

/// `wanted`, with the caps shrunk in proportion if together they would take more than a quarter
/// of `fd_limit` descriptors (never below one connection each).
pub fn fit<const N: usize>(fd_limit: u64, wanted: [Limits; N]) -> [Limits; N] {
    let budget = fd_limit / FD_SHARE;
    let total: u64 = wanted.iter().map(|l| l.connections as u64).sum();
    if total <= budget {
        return wanted;
    }
    wanted.map(|l| Limits {
        connections: (l.connections as u64 * budget / total).max(1) as usize,
        ..l
    })
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and [`fit`]s `wanted` into it; logs the
/// outcome once (and once more if the caps had to shrink).
pub fn reserve_fds<const N: usize>(wanted: [Limits; N]) -> [Limits; N] {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let old = getrlimit(Resource::Nofile);
    let (soft, hard) = (old.current.unwrap_or(u64::MAX), old.maximum.unwrap_or(u64::MAX));
    let limit = if soft >= hard {
        soft
    } else {
        match setrlimit(Resource::Nofile, Rlimit { current: old.maximum, maximum: old.maximum }) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the soft file descriptor limit to the hard one");
                soft
            }
        }
    };
    let caps = fit(limit, wanted);
    let describe = |limits: &[Limits]| {
        limits
            .iter()
            .map(|l| format!("{} {}", l.name, l.connections))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sum: u64 = caps.iter().map(|l| l.connections as u64).sum();
    tracing::info!(
        was = soft,
        limit,
        connections = ?describe(&caps),
        reserve = limit.saturating_sub(sum),
        "file descriptors: the limit (soft raised to hard), the connection caps, the reserve"
    );
    if caps != wanted {
        tracing::warn!(
            limit,
            wanted = ?describe(&wanted),
            connections = ?describe(&caps),
            "the file descriptor limit is low: connection caps shrunk to keep three quarters in reserve (raise LimitNOFILE)"
        );
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    const GET: &[u8] = b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n";

    fn limits(connections: usize, header_read_ms: u64, request_ms: u64) -> Limits {
        Limits {
            name: "test",
            connections,
            header_read: Duration::from_millis(header_read_ms),
            request: Duration::from_millis(request_ms),
        }
    }

    struct Server {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    fn start(router: Router, limits: Limits) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, router, limits, stopped));
        Server { _dir: dir, path, stop, task }
    }

    fn hello() -> Router {
        Router::new().route("/hello", get(|| async { "hello" }))
    }

    /// Reads until the peer closes; panics after `deadline`.
    async fn read_to_close(stream: &mut UnixStream, deadline: Duration) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(deadline, stream.read_to_end(&mut out))
            .await
            .expect("the connection should have been closed by then")
            .unwrap_or_default();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Sends one request on a (kept-alive) connection and reads its reply up to `hello`, or
    /// whatever came before the connection closed ("" for a refused connection).
    async fn ask(stream: &mut UnixStream) -> String {
        let mut out = Vec::new();
        if stream.write_all(GET).await.is_err() {
            return String::new();
        }
        let mut buf = [0u8; 1024];
        while !out.ends_with(b"hello") {
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf));
            match read.await.expect("a reply or a close within 5 s") {
                Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn refused_so_far() -> u64 {
        crate::metrics::METRICS
            .refused_connections()
            .into_iter()
            .find(|(name, _)| *name == "test")
            .map_or(0, |r| r.1)
    }

    #[tokio::test]
    async fn a_connection_beyond_the_cap_is_closed_at_once_and_a_freed_slot_serves_again() {
        let server = start(hello(), limits(2, 10_000, 10_000));
        let mut first = UnixStream::connect(&server.path).await.unwrap();
        let mut second = UnixStream::connect(&server.path).await.unwrap();
        assert!(ask(&mut first).await.starts_with("HTTP/1.1 200"));
        assert!(ask(&mut second).await.starts_with("HTTP/1.1 200"));
        let refused = refused_so_far();
        let mut third = UnixStream::connect(&server.path).await.unwrap();
        assert_eq!(ask(&mut third).await, "", "closed without a reply");
        assert!(refused_so_far() > refused, "counted");
        drop(first);
        // The slot comes back as soon as the server has seen the first connection go.
        let served = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let mut next = UnixStream::connect(&server.path).await.unwrap();
                if ask(&mut next).await.starts_with("HTTP/1.1 200") {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        served.await.expect("a freed slot serves a new connection");
        assert!(ask(&mut second).await.starts_with("HTTP/1.1 200"), "the others are kept");
    }

    #[tokio::test]
    async fn half_a_header_is_dropped_after_the_header_timeout() {
        let server = start(hello(), limits(4, 300, 10_000));
        let mut slow = UnixStream::connect(&server.path).await.unwrap();
        slow.write_all(b"GET /hello HTTP/1.1\r\nHost: te").await.unwrap();
        let started = Instant::now();
        let reply = read_to_close(&mut slow, Duration::from_secs(3)).await;
        assert!(!reply.contains("hello"), "{reply}");
        assert!(started.elapsed() >= Duration::from_millis(250), "not before the timeout");
    }

    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
        let server = start(hello(), limits(4, 300, 10_000));
        let mut idle = UnixStream::connect(&server.path).await.unwrap();
        assert!(ask(&mut idle).await.starts_with("HTTP/1.1 200"));
        let started = Instant::now();
        assert_eq!(read_to_close(&mut idle, Duration::from_secs(3)).await, "");
        assert!(started.elapsed() >= Duration::from_millis(250), "not before the timeout");
    }

    #[tokio::test]
    async fn a_slow_request_loses_its_connection_but_its_handler_finishes_holding_the_slot() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let router = Router::new().route(
            "/hello",
            get(move || async move {
                tokio::time::sleep(Duration::from_millis(800)).await;
                flag.store(true, Ordering::SeqCst);
                "hello"
            }),
        );
        let server = start(router, limits(1, 10_000, 200));
        let mut client = UnixStream::connect(&server.path).await.unwrap();
        client.write_all(GET).await.unwrap();
        let started = Instant::now();
        assert_eq!(read_to_close(&mut client, Duration::from_secs(3)).await, "", "no reply");
        assert!(started.elapsed() < Duration::from_millis(700), "cut at the request bound");
        assert!(!done.load(Ordering::SeqCst));
        // The handler still runs and holds the only slot: a new connection is refused.
        let mut other = UnixStream::connect(&server.path).await.unwrap();
        assert_eq!(read_to_close(&mut other, Duration::from_secs(2)).await, "");
        let finished = tokio::time::timeout(Duration::from_secs(5), async {
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        finished.await.expect("the handler runs to its end");
    }

    #[tokio::test]
    async fn stop_finishes_the_request_in_flight_then_returns() {
        let started = Arc::new(tokio::sync::Notify::new());
        let notify = started.clone();
        let router = Router::new().route(
            "/hello",
            get(move || async move {
                notify.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                "hello"
            }),
        );
        let server = start(router, limits(4, 10_000, 10_000));
        let mut idle = UnixStream::connect(&server.path).await.unwrap();
        let mut busy = UnixStream::connect(&server.path).await.unwrap();
        busy.write_all(GET).await.unwrap();
        tokio::time::timeout(Duration::from_secs(3), started.notified()).await.expect("in flight");
        server.stop.send(true).unwrap();
        let reply = read_to_close(&mut busy, Duration::from_secs(3)).await;
        assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("hello"), "{reply}");
        assert_eq!(read_to_close(&mut idle, Duration::from_secs(3)).await, "");
        tokio::time::timeout(Duration::from_secs(3), server.task)
            .await
            .expect("serve returns")
            .unwrap();
        assert!(UnixStream::connect(&server.path).await.is_err(), "no more accepts");
    }

    #[test]
    fn caps_fit_a_quarter_of_the_descriptor_limit() {
        let wanted = [limits(256, 1, 1), limits(16, 1, 1), limits(32, 1, 1)];
        assert_eq!(fit(65_536, wanted), wanted);
        assert_eq!(fit(1_216, wanted), wanted, "304 is exactly a quarter");
        let small = fit(1_024, wanted).map(|l| l.connections);
        assert_eq!(small, [215, 13, 26]);
        assert!(small.iter().sum::<usize>() <= 256);
        assert_eq!(fit(8, wanted).map(|l| l.connections), [1, 1, 1]);
    }
}
