//! Which source paths reach Vault's own token API — logging in, showing, wrapping or
//! unwrapping tokens — and are therefore never a source: a mount's token must never reach a
//! container. Vault and OpenBao also route a path through a namespace given as its prefix
//! (`team-a/auth/token/lookup-self` is the token store of namespace `team-a`), so these mounts
//! are refused after a prefix too.

/// The mounts of Vault's own API whose endpoints issue, show or wrap tokens.
/// (`cubbyhole/response` holds response-wrapped replies.)
pub const TOKEN_MOUNTS: &[&str] = &["auth", "sys", "cubbyhole"];

/// The token mount `segments` (a path split at `/`) reaches, if any: its first segment, or a
/// later one after what may be a namespace prefix, when something follows it. A KV version 2
/// path (`MOUNT/data/…`, `MOUNT/metadata/…`) is keys from its second segment on, so a key
/// named `auth` or `sys` there is not refused; nor is a last segment (`database/creds/auth`).
pub fn token_mount<'a>(segments: &[&'a str]) -> Option<(&'a str, bool)> {
    let is_token_mount = |s: &str| TOKEN_MOUNTS.contains(&s);
    if is_token_mount(segments.first()?) {
        return Some((segments[0], false));
    }
    if matches!(segments.get(1), Some(&"data" | &"metadata")) {
        return None;
    }
    let last = segments.len() - 1;
    segments[1..last].iter().find(|s| is_token_mount(s)).map(|s| (*s, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(path: &str) -> Option<(&str, bool)> {
        token_mount(&path.split('/').collect::<Vec<_>>())
    }

    #[test]
    fn token_mounts_are_found_first_or_after_a_namespace_prefix() {
        assert_eq!(mount("auth/token/lookup-self"), Some(("auth", false)));
        assert_eq!(mount("sys/wrapping/wrap"), Some(("sys", false)));
        assert_eq!(mount("team-a/auth/token/lookup-self"), Some(("auth", true)));
        assert_eq!(mount("team-a/sys/wrapping/lookup"), Some(("sys", true)));
        assert_eq!(mount("org/team-a/cubbyhole/response"), Some(("cubbyhole", true)));
        for ok in [
            "secret/data/auth",
            "secret/data/app/auth/db",
            "secret/metadata/sys/x",
            "database/creds/auth",
            "kv/app",
        ] {
            assert_eq!(mount(ok), None, "{ok}");
        }
    }
}
