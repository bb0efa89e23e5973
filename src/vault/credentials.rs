//! The files a node identity is made of — a token, a role_id, a secret_id, a JWT, a client
//! certificate and its key — read for `serve` and `check` alike: bounded, trimmed, checked for
//! their shape, zeroed when dropped, never quoted in an error.
//!
//! None of them can stall the plugin: each is opened `O_NONBLOCK` (a FIFO opens at once instead
//! of waiting for a writer) and refused unless it is a regular file (a FIFO, a device, a socket
//! or a directory is named in the error), read with a bound, and — from the runtime — on a
//! blocking thread ([`off_runtime`]), so a slow disk delays a login, never `List`, `/status` or
//! SIGTERM. Symlinks are followed on purpose: these paths are the administrator's own
//! configuration, and renewed credentials are commonly published as a symlink swapped at once
//! (Kubernetes' projected tokens, agents that rotate certificates).

use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{Token, VaultError};

/// The largest JWT file read: identity tokens are a few KiB.
pub const MAX_JWT: usize = 64 * 1024;
/// The largest PEM file (certificate chain or key) read.
pub const MAX_PEM: usize = 1024 * 1024;
/// The largest token, role_id or secret_id file read: each is a line of well under 1 KiB.
pub const MAX_SECRET: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {what} from {path}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is empty; it must hold the {what}")]
    EmptyFile { what: &'static str, path: PathBuf },
    #[error("{path} is larger than {limit} bytes; it must hold only the {what}")]
    TooLarge { what: &'static str, path: PathBuf, limit: usize },
    #[error("{path} does not hold a JWT (three base64url parts separated by `.`)")]
    NotJwt { path: PathBuf },
    #[error("{path} is {kind}, not a regular file; the {what} must be in a regular file (a symlink to one is followed)")]
    NotRegular { what: &'static str, path: PathBuf, kind: &'static str },
}

/// Runs `read` (one of this module's readers) on a blocking thread, so that a slow file never
/// stalls the runtime that answers Docker, `/status`, metrics and signals.
pub async fn off_runtime<T: Send + 'static>(read: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(read).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// What a file that is not a regular file is, for the error.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// A secret from a file (a token, a role_id, a secret_id): trimmed, never empty, zeroed when
/// dropped. The one reader of such files, for `serve` and `check` alike.
pub fn read_secret_file(what: &'static str, path: &Path) -> Result<Token, CredentialError> {
    let bytes = read_bounded(what, path, MAX_SECRET)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| CredentialError::ReadFile {
        what,
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"),
    })?;
    let value = text.trim();
    if value.is_empty() {
        return Err(CredentialError::EmptyFile { what, path: path.to_owned() });
    }
    Ok(Token::new(value.to_owned()))
}

/// [`read_secret_file`] off the runtime.
pub async fn load_secret_file(what: &'static str, path: &Path) -> Result<Token, CredentialError> {
    let path = path.to_owned();
    off_runtime(move || read_secret_file(what, &path)).await
}

/// [`read_jwt`] off the runtime.
pub async fn load_jwt(path: &Path) -> Result<Token, CredentialError> {
    let path = path.to_owned();
    off_runtime(move || read_jwt(&path)).await
}

/// [`client_certificate`] off the runtime.
pub async fn load_client_certificate(
    cert: &Path,
    key: &Path,
) -> Result<reqwest::Identity, VaultError> {
    let (cert, key) = (cert.to_owned(), key.to_owned());
    off_runtime(move || client_certificate(&cert, &key)).await
}

/// A regular file of at most `limit` bytes, zeroed when dropped. Opened `O_NONBLOCK` and
/// checked on its descriptor: a FIFO, a device or a directory is refused, never waited on.
pub(crate) fn read_bounded(
    what: &'static str,
    path: &Path,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
    use rustix::fs::{Mode, OFlags};
    let read_err = |source| CredentialError::ReadFile { what, path: path.to_owned(), source };
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::empty())
        .map_err(|e| read_err(std::io::Error::from(e)))?;
    let file = std::fs::File::from(fd);
    let file_type = file.metadata().map_err(read_err)?.file_type();
    if !file_type.is_file() {
        return Err(CredentialError::NotRegular {
            what,
            path: path.to_owned(),
            kind: kind_of(file_type),
        });
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(read_err)?;
    if bytes.len() > limit {
        return Err(CredentialError::TooLarge { what, path: path.to_owned(), limit });
    }
    Ok(bytes)
}

/// The JWT in `path`, read at every login (whatever renews it on disk is followed): trimmed,
/// bounded, the shape of a compact JWS checked (never its contents shown).
pub fn read_jwt(path: &Path) -> Result<Token, CredentialError> {
    let bytes = read_bounded("JWT", path, MAX_JWT)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| CredentialError::NotJwt { path: path.to_owned() })?;
    let jwt = text.trim();
    if jwt.is_empty() {
        return Err(CredentialError::EmptyFile { what: "JWT", path: path.to_owned() });
    }
    let base64url = |part: &str| {
        !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 || !parts.iter().all(|p| base64url(p)) {
        return Err(CredentialError::NotJwt { path: path.to_owned() });
    }
    Ok(Token::new(jwt.to_owned()))
}

/// The client certificate the HTTP client presents for `method = "cert"`: the PEM
/// certificate (chain) and its unencrypted private key, checked to parse and to match, so a
/// wrong file fails at start-up with its name rather than as a TLS error at login.
pub fn client_certificate(cert: &Path, key: &Path) -> Result<reqwest::Identity, VaultError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |path: &Path, message: String| VaultError::ClientCert {
        path: path.display().to_string(),
        message,
    };
    let read = |path: &Path| {
        read_bounded("PEM", path, MAX_PEM).map_err(|e| match e {
            CredentialError::ReadFile { source, .. } => {
                err(path, format!("cannot read it: {source}"))
            }
            other => err(path, other.to_string()),
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(cert, format!("it is not PEM ({e})")))?;
    if certs.is_empty() {
        return Err(err(cert, "no `-----BEGIN CERTIFICATE-----` in it".into()));
    }
    // The key's parse errors are not shown: they could quote a line of it.
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        err(key, "no unencrypted PEM private key in it (PKCS#8, RSA PKCS#1 or EC SEC1)".into())
    })?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(certs, key_der, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            err(key, format!("it is not the private key of the certificate {}", cert.display()))
        }
        other => err(key, format!("unusable with the certificate {}: {other}", cert.display())),
    })?;
    let mut both = Zeroizing::new(Vec::with_capacity(cert_pem.len() + key_pem.len() + 1));
    both.extend_from_slice(&cert_pem);
    both.push(b'\n');
    both.extend_from_slice(&key_pem);
    reqwest::Identity::from_pem(&both).map_err(|e| err(cert, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT_A: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJub2RlLTAxIn0.c2lnbmF0dXJl";

    #[test]
    fn a_jwt_file_is_bounded_trimmed_and_must_hold_a_jwt() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token.jwt");
        std::fs::write(&file, format!("  {JWT_A}\n\n")).unwrap();
        assert_eq!(read_jwt(&file).unwrap().expose(), JWT_A);
        for (content, says) in [
            ("\n".to_owned(), "is empty"),
            ("not a jwt".to_owned(), "does not hold a JWT"),
            ("a.b".to_owned(), "does not hold a JWT"),
            ("a..c".to_owned(), "does not hold a JWT"),
            (format!("{JWT_A}.extra"), "does not hold a JWT"),
            ("a".repeat(MAX_JWT + 1), "larger than 65536 bytes"),
        ] {
            std::fs::write(&file, &content).unwrap();
            let e = read_jwt(&file).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(&file.display().to_string()), "{e}");
            assert!(!e.contains("not a jwt"), "the content is never quoted: {e}");
        }
        let e = read_jwt(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(e.contains("cannot read JWT from"), "{e}");
    }

    /// Reads `path` as `what` on a thread of its own, failing (not hanging) after 5 s.
    fn read_within(read: impl FnOnce() -> String + Send + 'static) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(read()));
        rx.recv_timeout(std::time::Duration::from_secs(5)).expect("the read returned at once")
    }

    #[test]
    fn a_fifo_a_device_or_a_directory_is_refused_at_once_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("token.jwt");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        for (path, kind) in [
            (fifo.clone(), "a FIFO (named pipe)"),
            (PathBuf::from("/dev/null"), "a character device"),
            (dir.path().to_owned(), "a directory"),
        ] {
            let p = path.clone();
            let e = read_within(move || read_jwt(&p).unwrap_err().to_string());
            let expected = format!("{} is {kind}, not a regular file; the JWT", path.display());
            assert!(e.starts_with(&expected), "{e}");
            let p = path.clone();
            let e = read_within(move || read_secret_file("token", &p).unwrap_err().to_string());
            assert!(e.contains(kind) && e.contains("the token must be in a regular file"), "{e}");
            let (c, k) = (path.clone(), path.clone());
            let e = read_within(move || client_certificate(&c, &k).unwrap_err().to_string());
            assert!(e.contains(kind), "{e}");
        }
        // A symlink to a regular file is followed (renewed credentials are often published so).
        std::fs::write(dir.path().join("real.jwt"), JWT_A).unwrap();
        std::os::unix::fs::symlink("real.jwt", dir.path().join("link.jwt")).unwrap();
        assert_eq!(read_jwt(&dir.path().join("link.jwt")).unwrap().expose(), JWT_A);
    }

    #[test]
    fn a_secret_file_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret-id");
        std::fs::write(&file, "s".repeat(MAX_SECRET + 1)).unwrap();
        let e = read_secret_file("secret_id", &file).unwrap_err().to_string();
        assert!(e.contains("larger than 65536 bytes") && e.contains("only the secret_id"), "{e}");
        std::fs::write(&file, format!("{}\n", "s".repeat(MAX_SECRET - 1))).unwrap();
        assert_eq!(read_secret_file("secret_id", &file).unwrap().expose().len(), MAX_SECRET - 1);
    }

    #[tokio::test]
    async fn the_runtime_never_waits_on_a_credential_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t-1\n").unwrap();
        let token = load_secret_file("token", &dir.path().join("token")).await.unwrap();
        assert_eq!(token.expose(), "t-1");
        let e = load_jwt(&dir.path().join("missing")).await.unwrap_err().to_string();
        assert!(e.contains("cannot read JWT from"), "{e}");
    }
}
