//! Helpers for node identities: certificates made with `openssl` (a CA, a server certificate
//! for 127.0.0.1, client certificates), an OpenBao dev server with a TLS listener beside its
//! plain one, and JWTs signed by the test (ES256, with `ring`: the key made by `openssl`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use super::{bao_exe, free_port, Bao};

/// Runs `openssl ARGS` in `dir`; panics with its stderr if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority in a temporary directory, and what it signed.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

/// A certificate and its private key (PEM files, the key mode 0600).
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA (`CN=NAME`, EC P-256, a day's validity) at `ca.pem`.
    pub fn new(name: &str) -> Pki {
        let pki = Pki { dir: tempfile::tempdir().unwrap() };
        openssl(
            pki.dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca-key.pem",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        pki
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca()).unwrap()
    }

    /// A certificate signed by this CA for `name`, with `extensions` (openssl's `-extfile`
    /// syntax): `NAME.pem` and `NAME-key.pem`.
    fn issue(&self, name: &str, subject: &str, extensions: &str) -> CertFiles {
        let dir = self.dir.path();
        std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
        let (key, csr, cert) =
            (format!("{name}-key.pem"), format!("{name}.csr"), format!("{name}.pem"));
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                subject,
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "1",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
        let files = CertFiles { cert: dir.join(cert), key: dir.join(key) };
        set_mode(&files.key, 0o600);
        files
    }

    /// The server certificate of an OpenBao listening on 127.0.0.1.
    pub fn server(&self) -> CertFiles {
        self.server_for("127.0.0.1")
    }

    /// The server certificate of an OpenBao reached at the address `ip`.
    pub fn server_for(&self, ip: &str) -> CertFiles {
        self.issue(
            "server",
            &format!("/CN={ip}"),
            &format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\n"),
        )
    }

    /// A client certificate for the node `name` (`CN=NAME`).
    pub fn client(&self, name: &str) -> CertFiles {
        self.issue(name, &format!("/CN={name}"), "extendedKeyUsage=clientAuth\n")
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// An OpenBao dev server (root token `test-root`, every [`Bao`] helper on its plain listener)
/// with a second listener on 127.0.0.1 speaking TLS with `server`'s certificate; it asks
/// clients for a certificate, as the cert auth method needs. Killed on drop.
pub struct TlsBao {
    pub bao: Bao,
    pub tls_port: u16,
    _config: tempfile::TempDir,
}

impl TlsBao {
    pub fn start(server: &CertFiles) -> TlsBao {
        // free_port keeps the port after it for itself: the dev server's cluster listener.
        let tls_port = free_port();
        let config = tempfile::tempdir().unwrap();
        let hcl = config.path().join("tls.hcl");
        std::fs::write(
            &hcl,
            format!(
                "listener \"tcp\" {{\n  address = \"127.0.0.1:{tls_port}\"\n  tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n}}\n",
                server.cert.display(),
                server.key.display()
            ),
        )
        .unwrap();
        let bao = Bao::start_with(&[&format!("-config={}", hcl.display())]);
        TlsBao { bao, tls_port, _config: config }
    }

    /// The TLS listener's address.
    pub fn https_address(&self) -> String {
        format!("https://127.0.0.1:{}", self.tls_port)
    }
}

/// `bao ARGS` against `bao`'s plain listener as root (`bao token revoke -accessor …`).
pub fn bao_cli(bao: &Bao, args: &[&str]) -> Output {
    Command::new(bao_exe())
        .args(args)
        .env("VAULT_ADDR", bao.address())
        .env("VAULT_TOKEN", &bao.token)
        .env_remove("VAULT_NAMESPACE")
        .output()
        .expect("run bao")
}

/// The tokens that logins at `path` (`auth/cert/login`) issued and that are still valid:
/// `(accessor, lookup data)`.
pub fn tokens_from(bao: &Bao, path: &str) -> Vec<(String, Value)> {
    bao.accessors()
        .into_iter()
        .filter_map(|accessor| {
            let (status, v) = bao
                .api_as(
                    &bao.token,
                    "POST",
                    "auth/token/lookup-accessor",
                    Some(json!({ "accessor": accessor })),
                )
                .ok()?;
            (status == 200 && v["data"]["path"] == path).then(|| (accessor, v["data"].clone()))
        })
        .collect()
}

/// An ES256 signing key made by `openssl`, and its public key (PEM) for OpenBao's
/// `jwt_validation_pubkeys`.
pub struct JwtSigner {
    key: ring::signature::EcdsaKeyPair,
    pub public_pem: String,
}

impl JwtSigner {
    pub fn new() -> JwtSigner {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "key.pem",
            ],
        );
        openssl(
            dir.path(),
            &[
                "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out",
                "key.der",
            ],
        );
        openssl(dir.path(), &["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"]);
        let der = std::fs::read(dir.path().join("key.der")).unwrap();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der,
            &ring::rand::SystemRandom::new(),
        )
        .expect("openssl's PKCS#8 EC key");
        JwtSigner { key, public_pem: std::fs::read_to_string(dir.path().join("pub.pem")).unwrap() }
    }

    /// A compact JWS of `claims` (`iat` and `nbf` added: now).
    pub fn sign(&self, mut claims: Value) -> String {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        claims["iat"] = json!(now);
        claims["nbf"] = json!(now.saturating_sub(5));
        let header = json!({"alg": "ES256", "typ": "JWT"});
        let input = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let signature =
            self.key.sign(&ring::rand::SystemRandom::new(), input.as_bytes()).expect("sign");
        format!("{input}.{}", base64url(signature.as_ref()))
    }
}

/// Base64url without padding (RFC 7515).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn base64url_matches_rfc_4648_vectors() {
    for (input, expected) in [
        ("", ""),
        ("f", "Zg"),
        ("fo", "Zm8"),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg"),
        ("fooba", "Zm9vYmE"),
    ] {
        assert_eq!(base64url(input.as_bytes()), expected);
    }
    assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
}
