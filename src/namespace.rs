//! Vault namespaces (Vault Enterprise, HCP Vault, OpenBao ≥ 2.3): a volume's `namespace`
//! option, checked here, and how a request names its namespace.
//!
//! A namespace is only ever sent as the `X-Vault-Namespace` header, never built into a URL:
//! the header names the full path from the root namespace (as `VAULT_NAMESPACE` does), and a
//! token of a namespace acts there and in the namespaces below it.
//!
//! A volume's namespace goes with its tokens: a [`crate::vault::Token`] carries the namespace
//! it belongs to ([`crate::vault::Token::in_namespace`]), and every request made with it — token
//! create, reads, renewals, revocations, unwraps — names that namespace, also after a restart
//! (the records keep it beside the token).

use std::sync::Arc;

/// The longest namespace path accepted (Vault's own paths are far shorter in practice).
pub const MAX_LEN: usize = 255;

/// What a namespace option accepts, for its error.
const ACCEPTED: &str = "the full namespace path from the root namespace, as VAULT_NAMESPACE takes it: names of letters, digits, `_` and `-` separated by `/` (e.g. team-a or team-a/app), at most 255 characters";

/// A checked namespace path (`team-a/app`), without leading or trailing `/`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Namespace(Arc<str>);

impl Namespace {
    /// Checks a namespace path: segments of `[A-Za-z0-9_-]` separated by `/` (one trailing
    /// `/`, as Vault prints them, is dropped), nothing empty, `.` or `..`, at most [`MAX_LEN`]
    /// characters. The error says what is accepted.
    pub fn parse(value: &str) -> Result<Namespace, String> {
        let path = value.strip_suffix('/').unwrap_or(value);
        let name_ok = |s: &str| {
            !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        };
        if path.len() > MAX_LEN {
            return Err(format!("is longer than {MAX_LEN} characters; accepted: {ACCEPTED}"));
        }
        if !path.split('/').all(name_ok) {
            let shown = crate::report::one_line(value, 80);
            return Err(format!("`{shown}` is not a namespace path; accepted: {ACCEPTED}"));
        }
        Ok(Namespace(path.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Namespace({})", self.0)
    }
}

/// Whether Vault's error text says the request's namespace does not exist (a 404 whose
/// message is `namespace not found`, as Vault and OpenBao answer it).
pub(crate) fn not_found(message: &str) -> bool {
    message.contains("namespace not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_paths_are_checked_and_the_error_says_what_is_accepted() {
        for good in ["team-a", "team-a/app", "a_b/C-9", "team-a/"] {
            let ns = Namespace::parse(good).unwrap();
            assert_eq!(ns.as_str(), good.trim_end_matches('/'));
        }
        let long = "a".repeat(MAX_LEN + 1);
        for bad in [
            "",
            "/",
            "/team-a",
            "team-a//app",
            "..",
            "team-a/../root",
            ".",
            "a b",
            "a\nb",
            "a?b",
            "a%2fb",
            "a.b",
            "http://x",
            "ä",
            &long,
        ] {
            let e = Namespace::parse(bad).unwrap_err();
            assert!(e.contains("accepted: the full namespace path"), "{bad:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        assert!(Namespace::parse(&"a/".repeat(100)).is_ok(), "200 characters");
    }

    #[test]
    fn the_volume_option_and_the_swarm_label_take_a_namespace_and_name_themselves_when_wrong() {
        use crate::volume::{Defaults, VolumeSpec};
        let opts = |ns: &str| {
            [("path", "secret/data/app"), ("namespace", ns)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        };
        let spec = VolumeSpec::parse(&opts("team-a/app"), &Defaults::default()).unwrap();
        assert_eq!(spec.namespace.unwrap().as_str(), "team-a/app");
        let e = VolumeSpec::parse(&opts("../root"), &Defaults::default()).unwrap_err();
        assert_eq!(e.option, "namespace");
        assert!(e.to_string().contains("accepted: the full namespace path"), "{e}");
        let labels = opts("team-b");
        let spec = crate::driver::parse_labels(&labels, &Defaults::default()).unwrap();
        assert_eq!(spec.namespace.unwrap().as_str(), "team-b");
    }

    #[test]
    fn a_missing_namespace_is_told_from_other_404s() {
        assert!(not_found("namespace not found"));
        assert!(!not_found("no handler for route \"team-a/secret/data/x\""));
    }
}
