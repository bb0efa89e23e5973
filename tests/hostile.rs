//! A hostile or broken "Vault" on loopback, through the real HTTP client: oversized and endless
//! replies, malformed JSON, wrong shapes, HTML error pages, denials, silence, dropped
//! connections and redirects. Each read fails with the error that says what happened, naming
//! the API path or the address, and nothing panics or waits past the configured timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vault_secrets::config::{Config, Overrides};
use vault_secrets::vault::client::MAX_REPLY;
use vault_secrets::vault::{HttpVault, Secret, Token, Vault, VaultError};
use vault_secrets::volume::Source;

const PATH: &str = "secret/data/app";
/// What the endless reply stops at if the client never hangs up.
const ENDLESS_CAP: usize = 64 * 1024 * 1024;

/// What the fake does with each request.
#[derive(Clone)]
enum Behaviour {
    /// Sends these bytes (status line, headers, body) and closes.
    Reply(Vec<u8>),
    /// A 200 with a chunked body that does not end.
    Endless,
    /// Reads the request and never answers.
    Silent,
    /// Answers a 200 and then sends its body a byte every 50 ms.
    Drip,
    /// Reads the request and closes the connection.
    Hangup,
}

fn reply(status: &str, headers: &str, body: &[u8]) -> Behaviour {
    let mut bytes = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    Behaviour::Reply(bytes)
}

fn json(status: &str, body: &str) -> Behaviour {
    reply(status, "Content-Type: application/json\r\n", body.as_bytes())
}

/// A one-behaviour HTTP server on 127.0.0.1, stopped on drop.
struct FakeVault {
    addr: SocketAddr,
    /// The request line of every request received.
    requests: Arc<Mutex<Vec<String>>>,
    /// Bytes of body written by `Endless`, and whether it has stopped writing.
    written: Arc<AtomicUsize>,
    finished: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FakeVault {
    fn start(behaviour: Behaviour) -> FakeVault {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let written = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, w, f, s) = (requests.clone(), written.clone(), finished.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (b, r, w, f, s) =
                    (behaviour.clone(), r.clone(), w.clone(), f.clone(), s.clone());
                std::thread::spawn(move || serve(conn, b, &r, &w, &s, &f));
            }
        });
        FakeVault { addr, requests, written, finished, stop, accept: Some(accept) }
    }

    fn address(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn client(&self) -> HttpVault {
        let text = format!("[vault]\naddress = \"{}\"\ntimeout = \"500ms\"\n", self.address());
        let config = Config::parse(&text, &Overrides::default()).unwrap();
        HttpVault::new(&config.vault).unwrap()
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Reads `PATH` with a fresh client, checking that the request reached this server.
    async fn read(&self) -> Result<Secret, VaultError> {
        let source = Source { dir: None, path: PATH.into(), params: Default::default() };
        let result = self.client().read(&Token::new("hvs.test".into()), &source).await;
        assert_eq!(self.requests(), vec![format!("GET /v1/{PATH} HTTP/1.1")]);
        result
    }
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve(
    mut conn: TcpStream,
    behaviour: Behaviour,
    requests: &Mutex<Vec<String>>,
    written: &AtomicUsize,
    stop: &AtomicBool,
    finished: &AtomicBool,
) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return, // the accept loop being woken, or a client gone
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
    requests.lock().unwrap().push(line);
    match behaviour {
        Behaviour::Reply(bytes) => {
            let _ = conn.write_all(&bytes);
        }
        Behaviour::Hangup => {}
        Behaviour::Silent => {
            let end = Instant::now() + Duration::from_secs(5);
            while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Behaviour::Drip => {
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{";
            let end = Instant::now() + Duration::from_secs(5);
            let mut ok = conn.write_all(head.as_bytes()).is_ok();
            while ok && !stop.load(Ordering::SeqCst) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
                ok = conn.write_all(b" ").is_ok();
            }
        }
        Behaviour::Endless => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\n\r\n";
            let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
            let mut ok = conn.write_all(head.as_bytes()).is_ok()
                && conn.write_all(b"9\r\n{\"data\":\"\r\n").is_ok();
            while ok && written.load(Ordering::SeqCst) < ENDLESS_CAP && !stop.load(Ordering::SeqCst)
            {
                ok = conn.write_all(chunk.as_bytes()).is_ok();
                written.fetch_add(0x10000, Ordering::SeqCst);
            }
            finished.store(true, Ordering::SeqCst);
        }
    }
}

fn names_path(e: &VaultError) {
    assert!(e.to_string().contains(PATH), "the error names the path: {e}");
}

#[tokio::test]
async fn a_reply_over_the_limit_is_refused_by_its_length() {
    let body = vec![b' '; 2 * 1024 * 1024];
    let fake = FakeVault::start(reply("200 OK", "Content-Type: application/json\r\n", &body));
    let e = fake.read().await.unwrap_err();
    assert!(
        matches!(&e, VaultError::TooLarge { path, limit } if path == PATH && *limit == MAX_REPLY),
        "{e:?}"
    );
    names_path(&e);
}

#[tokio::test]
async fn a_reply_over_the_limit_without_a_length_is_cut_off() {
    let mut bytes = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"data\":\"".to_vec();
    bytes.resize(bytes.len() + 2 * 1024 * 1024, b'x');
    let fake = FakeVault::start(Behaviour::Reply(bytes));
    let e = fake.read().await.unwrap_err();
    assert!(matches!(&e, VaultError::TooLarge { path, .. } if path == PATH), "{e:?}");
}

#[tokio::test]
async fn an_endless_chunked_reply_is_cut_off() {
    let fake = FakeVault::start(Behaviour::Endless);
    let started = Instant::now();
    let e = fake.read().await.unwrap_err();
    assert!(matches!(&e, VaultError::TooLarge { path, .. } if path == PATH), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // The client's connection task closes the socket: let the runtime run it while waiting.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fake.finished.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the server is still sending");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written = fake.written.load(Ordering::SeqCst);
    assert!(written < ENDLESS_CAP, "the client read on: {written} bytes sent");
}

#[tokio::test]
async fn malformed_json_is_a_bad_reply() {
    for body in [r#"{"data": {"password": "#, "not json at all", r#"{"data":{}} trailing"#] {
        let fake = FakeVault::start(json("200 OK", body));
        let e = fake.read().await.unwrap_err();
        assert!(matches!(&e, VaultError::BadReply { path, .. } if path == PATH), "{body}: {e:?}");
        assert!(e.to_string().contains("not a Vault JSON reply"), "{e}");
        names_path(&e);
    }
}

#[tokio::test]
async fn replies_of_the_wrong_shape_are_refused() {
    for body in [
        r#"{"data": "a string"}"#,
        r#"{"data": [1, 2]}"#,
        r#"{"data": 42}"#,
        r#"{"lease_duration": "soon", "data": {"a": "b"}}"#,
        r#"{"renewable": "yes", "data": {"a": "b"}}"#,
        r#"[{"data": {"a": "b"}}]"#,
    ] {
        let fake = FakeVault::start(json("200 OK", body));
        let e = fake.read().await.unwrap_err();
        assert!(matches!(&e, VaultError::BadReply { path, .. } if path == PATH), "{body}: {e:?}");
        names_path(&e);
    }
    let fake = FakeVault::start(json("200 OK", ""));
    let e = fake.read().await.unwrap_err();
    assert!(e.to_string().contains("the reply is empty"), "{e}");
    for body in [
        r#"{"lease_id": ""}"#,
        r#"{"data": null}"#,
        r#"{"data":{"data":null,"metadata":{"version":1}}}"#,
    ] {
        let fake = FakeVault::start(json("200 OK", body));
        let e = fake.read().await.unwrap_err();
        assert!(matches!(&e, VaultError::NotFound { path } if path == PATH), "{body}: {e:?}");
    }
}

#[tokio::test]
async fn an_html_error_page_is_a_status_error_without_the_page() {
    let page = b"<html><body><h1>500</h1><pre>hvs.leaked-token\nstack trace</pre></body></html>";
    let fake =
        FakeVault::start(reply("500 Internal Server Error", "Content-Type: text/html\r\n", page));
    let e = fake.read().await.unwrap_err();
    assert!(
        matches!(&e, VaultError::Status { path, status: 500, message } if path == PATH && message == "no error message"),
        "{e:?}"
    );
    assert!(e.is_transient());
    let text = e.to_string();
    assert!(!text.contains("hvs.leaked-token") && !text.contains('\n'), "{text}");
    names_path(&e);

    let errors = r#"{"errors":["one\nline","two"]}"#;
    let fake = FakeVault::start(json("502 Bad Gateway", errors));
    let e = fake.read().await.unwrap_err();
    assert!(
        matches!(&e, VaultError::Status { status: 502, message, .. } if message == "one line; two"),
        "{e:?}"
    );
}

#[tokio::test]
async fn denied_and_missing_say_so() {
    let fake = FakeVault::start(json("403 Forbidden", r#"{"errors":["permission denied"]}"#));
    let e = fake.read().await.unwrap_err();
    assert!(matches!(&e, VaultError::Denied { path } if path == PATH), "{e:?}");
    assert!(e.is_denied());
    names_path(&e);
    let fake = FakeVault::start(json("404 Not Found", r#"{"errors":[]}"#));
    let e = fake.read().await.unwrap_err();
    assert!(matches!(&e, VaultError::NotFound { path } if path == PATH), "{e:?}");
}

#[tokio::test]
async fn a_reply_that_never_comes_times_out_naming_the_address() {
    let fake = FakeVault::start(Behaviour::Silent);
    let started = Instant::now();
    let e = fake.read().await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(&e, VaultError::Timeout { address, path, timeout }
            if *address == fake.address() && path == PATH && *timeout == Duration::from_millis(500)),
        "{e:?}"
    );
    assert!(e.to_string().contains(&fake.address()), "{e}");
    assert!(e.is_transient());
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_reply_that_trickles_in_times_out() {
    let fake = FakeVault::start(Behaviour::Drip);
    let started = Instant::now();
    let e = fake.read().await.unwrap_err();
    assert!(matches!(&e, VaultError::Timeout { path, .. } if path == PATH), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_dropped_connection_is_unreachable_naming_the_address() {
    let fake = FakeVault::start(Behaviour::Hangup);
    let e = fake.read().await.unwrap_err();
    assert!(
        matches!(&e, VaultError::Unreachable { address, .. } if *address == fake.address()),
        "{e:?}"
    );
    assert!(e.to_string().contains(&fake.address()), "{e}");
    assert!(e.is_transient());
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let elsewhere = FakeVault::start(json("200 OK", r#"{"data":{"password":"elsewhere"}}"#));
    for status in ["301 Moved Permanently", "302 Found", "307 Temporary Redirect"] {
        let location = format!("Location: {}/v1/{PATH}\r\n", elsewhere.address());
        let fake = FakeVault::start(reply(status, &location, b""));
        let e = fake.read().await.unwrap_err();
        let code: u16 = status[..3].parse().unwrap();
        assert!(
            matches!(&e, VaultError::Status { path, status, .. } if path == PATH && *status == code),
            "{e:?}"
        );
        names_path(&e);
    }
    assert!(elsewhere.requests().is_empty(), "followed: {:?}", elsewhere.requests());
}

/// A reply that hands back the reading token (as `auth/token/lookup-self` does, reached through
/// a path the option check cannot know, such as a namespace prefix), or any token block, is
/// refused: nothing of it would be written into a container.
#[tokio::test]
async fn replies_carrying_a_token_are_refused_without_quoting_it() {
    for body in [
        r#"{"data":{"id":"hvs.test","policies":["default"]}}"#,
        r#"{"data":{"nested":{"note":"token hvs.test inside"}}}"#,
        r#"{"auth":{"client_token":"hvs.other","accessor":"a"},"data":{"x":"y"}}"#,
        r#"{"wrap_info":{"token":"hvs.wrap","ttl":60},"data":{"x":"y"}}"#,
    ] {
        let fake = FakeVault::start(json("200 OK", body));
        let e = fake.read().await.unwrap_err();
        assert!(matches!(&e, VaultError::BadReply { path, .. } if path == PATH), "{body}: {e:?}");
        let text = e.to_string();
        assert!(text.contains("token") && !text.contains("hvs."), "{text}");
    }
}
