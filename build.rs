//! Build script: `VAULT_SECRETS_VERSION`, what `--version` and the start-up log line print:
//! Cargo.toml's version and the commit it was built from, `0.2.0 (commit 4194f3a1b2c3)`; and
//! `VAULT_SECRETS_COMMIT`, the commit alone (empty when unknown), for the build_info metric.
//!
//! The commit is `VAULT_SECRETS_COMMIT` when set (a build from a source tarball can name it),
//! else git's HEAD when the source is a git checkout; a build outside git without the variable
//! prints the version alone. Cargo runs this again when HEAD moves (the files git keeps it in),
//! not on every build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=VAULT_SECRETS_COMMIT");
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    let given = std::env::var("VAULT_SECRETS_COMMIT").ok().filter(|c| !c.trim().is_empty());
    let commit = given.map(|c| c.trim().to_owned()).or_else(git_commit);
    if let Some(commit) = commit.as_deref().filter(|c| !is_commit(c)) {
        panic!("VAULT_SECRETS_COMMIT={commit:?}: expected 7 to 40 hex digits");
    }
    let line = match &commit {
        Some(commit) => format!("{version} (commit {commit})"),
        None => version,
    };
    println!("cargo:rustc-env=VAULT_SECRETS_VERSION={line}");
    // The commit alone (empty when unknown), for the build_info metric's label.
    println!("cargo:rustc-env=VAULT_SECRETS_COMMIT={}", commit.unwrap_or_default());
}

fn is_commit(s: &str) -> bool {
    (7..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// HEAD's commit (12 hex digits), if the source is a git checkout and git is there; and the
/// files that say where HEAD is, for cargo to watch.
fn git_commit() -> Option<String> {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).current_dir(&dir).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
    };
    // Only a checkout whose top is this package: not some repository the source sits inside.
    let top = git(&["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let mut watched = vec![dir.join(git(&["rev-parse", "--git-path", "HEAD"])?)];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        // The branch's file, or the directory it will appear in while the ref is packed.
        let file = dir.join(git(&["rev-parse", "--git-path", &branch])?);
        match file.exists() {
            true => watched.push(file),
            false => watched.extend(file.parent().map(Path::to_owned)),
        }
    }
    watched.push(dir.join(git(&["rev-parse", "--git-path", "packed-refs"])?));
    for path in watched {
        // A path that does not exist would make cargo run this on every build.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}
