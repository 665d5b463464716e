//! The URLs etcd's flags take: `scheme://host:port`, nothing more.

use std::fmt;

/// A URL scheme `raft-kv` serves. etcd also accepts `unix` and `unixs` (Unix sockets), which are
/// refused with [`UrlError::UnsupportedScheme`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// Plaintext.
    Http,
    /// TLS.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A URL as etcd's URL flags take it: `http://host:port` or `https://host:port`, where `host` is
/// a name, an IPv4 address or a bracketed IPv6 address (`[::1]`), with no path, query or user.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Url {
    scheme: Scheme,
    // Invariant: non-empty; an IPv6 address keeps its brackets.
    host: String,
    port: u16,
}

/// Why a string is not a [`Url`]. The messages follow etcd's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// No `scheme://`, or an unknown scheme.
    #[error("URL scheme must be http, https, unix, or unixs: {0}")]
    BadScheme(String),
    /// `unix://` or `unixs://`: etcd accepts them, raft-kv does not.
    #[error("unix socket URLs are not supported by raft-kv: {0}")]
    UnsupportedScheme(String),
    /// A path (even `/`), query or fragment after the address.
    #[error("URL must not contain a path: {0}")]
    HasPath(String),
    /// The address is not `host:port` (missing port, empty host, user info, bad brackets).
    #[error("URL address does not have the form \"host:port\": {0}")]
    NotHostPort(String),
    /// The port is not a number in 0..=65535.
    #[error("URL port is not a number in 0..=65535: {0}")]
    BadPort(String),
}

impl Url {
    /// Parses `scheme://host:port`. The scheme is case-insensitive; the host is kept as written.
    pub fn parse(input: &str) -> Result<Url, UrlError> {
        let (scheme, rest) =
            input.split_once("://").ok_or_else(|| UrlError::BadScheme(input.to_string()))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "unix" | "unixs" => return Err(UrlError::UnsupportedScheme(input.to_string())),
            _ => return Err(UrlError::BadScheme(input.to_string())),
        };
        if rest.contains(['/', '?', '#']) {
            return Err(UrlError::HasPath(input.to_string()));
        }
        let not_host_port = || UrlError::NotHostPort(input.to_string());
        if rest.contains('@') {
            return Err(not_host_port());
        }
        let (host, port) = if rest.starts_with('[') {
            let (host, after) = rest.split_once(']').ok_or_else(not_host_port)?;
            let port = after.strip_prefix(':').ok_or_else(not_host_port)?;
            (format!("{host}]"), port)
        } else {
            let (host, port) = rest.rsplit_once(':').ok_or_else(not_host_port)?;
            if host.contains(':') {
                return Err(not_host_port());
            }
            (host.to_string(), port)
        };
        if host.is_empty() || host == "[]" {
            return Err(not_host_port());
        }
        let port = port.parse::<u16>().map_err(|_| UrlError::BadPort(input.to_string()))?;
        Ok(Url { scheme, host, port })
    }

    /// Parses a comma-separated list (etcd's URL-list flags). Blank items are errors, as in
    /// etcd; an empty string is an empty list.
    pub fn parse_list(input: &str) -> Result<Vec<Url>, UrlError> {
        if input.trim().is_empty() {
            return Ok(Vec::new());
        }
        input.split(',').map(|item| Url::parse(item.trim())).collect()
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// True for `https`.
    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::Https
    }

    /// The host as written (an IPv6 address with its brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, ready for `tokio::net::lookup_host` or a `TcpListener::bind`.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

impl std::str::FromStr for Url {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Url, UrlError> {
        Url::parse(s)
    }
}

/// Joins URLs with commas, the way the flags take them.
pub(crate) fn join(urls: &[Url]) -> String {
    urls.iter().map(Url::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_urls() {
        let url = Url::parse("http://localhost:2379").unwrap();
        assert_eq!((url.scheme(), url.host(), url.port()), (Scheme::Http, "localhost", 2379));
        assert_eq!(url.to_string(), "http://localhost:2379");
        assert_eq!(url.authority(), "localhost:2379");

        let url = Url::parse("HTTPS://10.0.0.1:443").unwrap();
        assert!(url.is_tls());
        assert_eq!(url.to_string(), "https://10.0.0.1:443");

        let url = Url::parse("http://[::1]:2380").unwrap();
        assert_eq!((url.host(), url.port()), ("[::1]", 2380));
        assert_eq!(url.authority(), "[::1]:2380");
    }

    #[test]
    fn refuses_what_etcd_refuses() {
        let cases = [
            ("localhost:2379", UrlError::BadScheme("localhost:2379".into())),
            ("ftp://a:1", UrlError::BadScheme("ftp://a:1".into())),
            ("unix://sock:1", UrlError::UnsupportedScheme("unix://sock:1".into())),
            ("http://a:1/", UrlError::HasPath("http://a:1/".into())),
            ("http://a:1/x", UrlError::HasPath("http://a:1/x".into())),
            ("http://a:1?x", UrlError::HasPath("http://a:1?x".into())),
            ("http://localhost", UrlError::NotHostPort("http://localhost".into())),
            ("http://:2379", UrlError::NotHostPort("http://:2379".into())),
            ("http://u@a:1", UrlError::NotHostPort("http://u@a:1".into())),
            ("http://::1:1", UrlError::NotHostPort("http://::1:1".into())),
            ("http://[::1]", UrlError::NotHostPort("http://[::1]".into())),
            ("http://a:x", UrlError::BadPort("http://a:x".into())),
            ("http://a:65536", UrlError::BadPort("http://a:65536".into())),
            ("http://a:", UrlError::BadPort("http://a:".into())),
        ];
        for (input, want) in cases {
            assert_eq!(Url::parse(input), Err(want), "{input}");
        }
    }

    #[test]
    fn parses_lists() {
        assert_eq!(Url::parse_list("").unwrap(), vec![]);
        let urls = Url::parse_list("http://a:1, https://b:2").unwrap();
        assert_eq!(join(&urls), "http://a:1,https://b:2");
        assert!(Url::parse_list("http://a:1,").is_err());
    }
}
