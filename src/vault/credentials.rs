//! The files a node identity is made of — a token, a role_id, a secret_id, a JWT, a client
//! certificate and its key — read for `serve` and `check` alike: bounded, trimmed, checked for
//! their shape, zeroed when dropped, never quoted in an error.

use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{Token, VaultError};

/// The largest JWT file read: identity tokens are a few KiB.
pub const MAX_JWT: usize = 64 * 1024;
/// The largest PEM file (certificate chain or key) read.
pub const MAX_PEM: usize = 1024 * 1024;

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
}

/// A secret from a file (a token, a role_id, a secret_id): trimmed, never empty, zeroed when
/// dropped. The one reader of such files, for `serve` and `check` alike.
pub fn read_secret_file(what: &'static str, path: &Path) -> Result<Token, CredentialError> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|source| CredentialError::ReadFile {
            what,
            path: path.to_owned(),
            source,
        })?,
    );
    let value = text.trim();
    if value.is_empty() {
        return Err(CredentialError::EmptyFile { what, path: path.to_owned() });
    }
    Ok(Token::new(value.to_owned()))
}

/// A file of at most `limit` bytes, zeroed when dropped.
fn read_bounded(
    what: &'static str,
    path: &Path,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
    let read_err = |source| CredentialError::ReadFile { what, path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(read_err)?;
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
}
