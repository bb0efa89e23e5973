//! A plain `http://` Vault address off the host: accepted (a lab, a sidecar proxy on a
//! private network), but said out loud at every start and in `check`, because every token the
//! plugin holds — its own and each mount's — and every secret it reads crosses the network in
//! clear. Loopback addresses and `https://` are silent.

use std::net::IpAddr;

use super::Addresses;

/// One warning per plain `http://` address whose host is not loopback (`localhost`,
/// 127.0.0.0/8, `::1`), naming the address and the risk.
pub fn plain_http_warnings(addresses: &Addresses) -> Vec<String> {
    addresses
        .iter()
        .filter(|url| url.scheme() == "http" && !loopback(url))
        .map(|url| {
            format!(
                "vault address {} is plain http off this host: the plugin's token, every mount's token and every secret read cross the network unencrypted, readable and replayable by anyone on the path; use https:// (with `ca_cert` for a private CA), or keep http to a loopback address",
                url.as_str().trim_end_matches('/')
            )
        })
        .collect()
}

fn loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(list: &[&str]) -> Vec<String> {
        plain_http_warnings(&Addresses::parse("vault.address", list).unwrap())
    }

    #[test]
    fn plain_http_off_loopback_is_warned_of_and_nothing_else() {
        assert_eq!(
            warnings(&[
                "http://127.0.0.1:8200",
                "http://127.0.0.53:8200",
                "http://localhost:8200",
                "http://[::1]:8200",
                "https://vault.example:8200",
                "https://10.0.0.1:8200",
            ]),
            Vec::<String>::new()
        );
        let w = warnings(&["http://10.0.0.1:8200", "https://b:8200", "http://vault.internal"]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("http://10.0.0.1:8200") && w[0].contains("unencrypted"), "{w:?}");
        assert!(w[1].contains("http://vault.internal") && w[1].contains("https://"), "{w:?}");
    }
}
