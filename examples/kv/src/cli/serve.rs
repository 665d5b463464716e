//! `raft-kv serve`: etcd 3.4's flags (names, meanings, defaults, `ETCD_*` environment variables)
//! and their validation into a [`ServeConfig`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};

use super::id::{cluster_id, member_id};
use super::url::{Url, UrlError, join};

/// etcd's default `--listen-client-urls` and `--advertise-client-urls`.
const DEFAULT_CLIENT_URL: &str = "http://localhost:2379";
/// etcd's default `--listen-peer-urls` and `--initial-advertise-peer-urls`.
const DEFAULT_PEER_URL: &str = "http://localhost:2380";
/// etcd refuses a longer `--election-timeout` (ms).
const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;

/// The flags of `raft-kv serve`, as given. [`ServeArgs::into_config`] validates them.
///
/// Flags without a `default_value` here have a default that depends on another flag, or must be
/// told apart from "given explicitly" (as etcd does); the help text shows the default.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory [default: ${name}.etcd].
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// List of URLs to listen on for peer traffic [default: http://localhost:2380].
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS")]
    pub listen_peer_urls: Option<String>,
    /// List of URLs to listen on for client traffic [default: http://localhost:2379].
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS")]
    pub listen_client_urls: Option<String>,
    /// List of URLs to listen on for the metrics and health endpoints (`/metrics`, `/health`).
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", default_value = "")]
    pub listen_metrics_urls: String,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// List of this member's peer URLs to advertise to the rest of the cluster
    /// [default: http://localhost:2380].
    #[arg(long, env = "ETCD_INITIAL_ADVERTISE_PEER_URLS")]
    pub initial_advertise_peer_urls: Option<String>,
    /// Initial cluster configuration for bootstrapping, `name=url,...` [default:
    /// default=http://localhost:2380; with another --name, ${name}=<--initial-advertise-peer-urls>].
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", value_enum, default_value_t = ClusterState::New)]
    pub initial_cluster_state: ClusterState,
    /// Initial cluster token for the cluster during bootstrap.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// List of this member's client URLs to advertise to the public [default:
    /// http://localhost:2379; required when --listen-client-urls is given].
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS")]
    pub advertise_client_urls: Option<String>,
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", default_value_t = false)]
    pub client_cert_auth: bool,
    /// Path to the client server TLS trusted CA file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", default_value_t = false)]
    pub peer_client_cert_auth: bool,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
}

/// `--initial-cluster-state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    New,
    /// Join a running cluster this member was added to (`etcdctl member add`).
    Existing,
}

/// TLS files for one listener (client or peer), as given by the `--*-cert-file`,
/// `--*-key-file`, `--*-trusted-ca-file` and `--*-client-cert-auth` flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain presented by this member.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`.
    pub key_file: PathBuf,
    /// PEM CA certificate(s) to verify the other side with.
    pub trusted_ca_file: Option<PathBuf>,
    /// Require and verify client certificates.
    pub client_cert_auth: bool,
}

/// One member of `--initial-cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    /// Its `--name`.
    pub name: String,
    /// Its peer URLs (at least one), in flag order.
    pub peer_urls: Vec<Url>,
    /// Its id, as etcd computes it ([`super::member_id`] of `peer_urls` and the token).
    pub id: u64,
}

/// A validated `raft-kv serve` configuration.
///
/// With `--initial-cluster-state existing` the member was added to a running cluster, which gave
/// it an id (etcd mixes the time into it): `member_id` and `cluster_id` here are then only what
/// a *new* cluster would have used, and the server must learn the real ones from the cluster (as
/// etcd does, by finding its peer URLs in the remote member list). A restarted member takes
/// both from its data directory; etcd ignores the `--initial-*` flags then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeConfig {
    /// `--name`.
    pub name: String,
    /// `--data-dir` (default `<name>.etcd`).
    pub data_dir: PathBuf,
    /// `--listen-client-urls` (non-empty).
    pub listen_client_urls: Vec<Url>,
    /// `--advertise-client-urls` (non-empty, no port 0).
    pub advertise_client_urls: Vec<Url>,
    /// `--listen-peer-urls` (non-empty).
    pub listen_peer_urls: Vec<Url>,
    /// `--initial-advertise-peer-urls` (non-empty, no port 0; the same set as this member's
    /// entries in `initial_cluster`).
    pub initial_advertise_peer_urls: Vec<Url>,
    /// `--initial-cluster`, members in order of first appearance; contains `name`; no URL
    /// appears twice.
    pub initial_cluster: Vec<InitialMember>,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token` (non-empty).
    pub initial_cluster_token: String,
    /// This member's id in a new cluster (see the type's docs for `existing`).
    pub member_id: u64,
    /// The cluster id of a new cluster made of `initial_cluster`.
    pub cluster_id: u64,
    /// `--heartbeat-interval` (> 0).
    pub heartbeat_interval: Duration,
    /// `--election-timeout` (>= 5 × heartbeat, <= 50 s).
    pub election_timeout: Duration,
    /// `--listen-metrics-urls` (may be empty).
    pub listen_metrics_urls: Vec<Url>,
    /// `--snapshot-count` (> 0).
    pub snapshot_count: u64,
    /// `--max-request-bytes` (> 0).
    pub max_request_bytes: usize,
    /// `--max-txn-ops` (> 0).
    pub max_txn_ops: usize,
    /// Client TLS (`--cert-file`, ...): set iff the client URLs are `https`.
    pub client_tls: Option<TlsFiles>,
    /// Peer TLS (`--peer-cert-file`, ...): set iff the peer URLs are `https`; then
    /// `trusted_ca_file` is set too (peers authenticate each other with the cluster CA).
    pub peer_tls: Option<TlsFiles>,
}

impl ServeConfig {
    /// Election timeout in heartbeat ticks (etcd: one tick per heartbeat interval; at least 5).
    pub fn election_ticks(&self) -> u64 {
        let heartbeat_ms = self.heartbeat_interval.as_millis().max(1);
        u64::try_from(self.election_timeout.as_millis() / heartbeat_ms).unwrap_or(u64::MAX)
    }

    /// The `--initial-cluster` entry of this member.
    pub fn local_member(&self) -> &InitialMember {
        self.initial_cluster
            .iter()
            .find(|m| m.name == self.name)
            .expect("validated: initial_cluster contains name")
    }
}

/// A `raft-kv serve` flag that is invalid, alone or with another.
#[derive(Debug, thiserror::Error)]
pub enum ServeConfigError {
    /// A URL flag with a malformed URL.
    #[error("invalid value {value:?} for flag --{flag}: {source}")]
    Url {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        source: UrlError,
    },
    /// `--initial-cluster` does not name this member.
    #[error(
        "couldn't find local name {name:?} in the initial cluster configuration (--initial-cluster={initial_cluster})"
    )]
    MissingLocalMember {
        /// `--name`.
        name: String,
        /// `--initial-cluster` as given.
        initial_cluster: String,
    },
    /// This member's URLs in `--initial-cluster` differ from `--initial-advertise-peer-urls`.
    #[error(
        "--initial-cluster has {name}={in_cluster} but --initial-advertise-peer-urls={advertised}; they must list the same URLs"
    )]
    AdvertisedPeerUrlsMismatch {
        /// `--name`.
        name: String,
        /// This member's URLs in `--initial-cluster`.
        in_cluster: String,
        /// `--initial-advertise-peer-urls`.
        advertised: String,
    },
    /// Any other rule; `reason` says which.
    #[error("--{flag}: {reason}")]
    Invalid {
        /// The flag at fault.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl ServeConfigError {
    /// The flag at fault (without `--`).
    pub fn flag(&self) -> &'static str {
        match self {
            ServeConfigError::Url { flag, .. } | ServeConfigError::Invalid { flag, .. } => flag,
            ServeConfigError::MissingLocalMember { .. } => "initial-cluster",
            ServeConfigError::AdvertisedPeerUrlsMismatch { .. } => "initial-advertise-peer-urls",
        }
    }
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> ServeConfigError {
    ServeConfigError::Invalid { flag, reason: reason.into() }
}

/// Parses a URL-list flag; `required` refuses an empty list.
fn url_list(flag: &'static str, value: &str, required: bool) -> Result<Vec<Url>, ServeConfigError> {
    let urls = Url::parse_list(value).map_err(|source| ServeConfigError::Url {
        flag,
        value: value.to_string(),
        source,
    })?;
    if required && urls.is_empty() {
        return Err(invalid(flag, "at least one URL is required"));
    }
    Ok(urls)
}

/// Refuses port 0 in a URL others must be able to reach.
fn reachable(flag: &'static str, urls: &[Url]) -> Result<(), ServeConfigError> {
    match urls.iter().find(|u| u.port() == 0) {
        Some(url) => Err(invalid(flag, format!("{url} has port 0, which cannot be advertised"))),
        None => Ok(()),
    }
}

impl ServeArgs {
    /// Validates the flags with etcd 3.4's rules and derives the defaults that depend on other
    /// flags, the member ids and the cluster id.
    pub fn into_config(self) -> Result<ServeConfig, ServeConfigError> {
        if self.name.is_empty() || self.name.contains([',', '=']) {
            return Err(invalid("name", "must be non-empty, without ',' or '='"));
        }
        if self.initial_cluster_token.is_empty() {
            return Err(invalid("initial-cluster-token", "must not be empty"));
        }
        let (heartbeat_interval, election_timeout) =
            timing(self.heartbeat_interval, self.election_timeout)?;
        for (flag, value) in [
            ("snapshot-count", self.snapshot_count as usize),
            ("max-request-bytes", self.max_request_bytes),
            ("max-txn-ops", self.max_txn_ops),
        ] {
            if value == 0 {
                return Err(invalid(flag, "must be > 0"));
            }
        }

        let listen_client_urls = url_list(
            "listen-client-urls",
            self.listen_client_urls.as_deref().unwrap_or(DEFAULT_CLIENT_URL),
            true,
        )?;
        if self.listen_client_urls.is_some() && self.advertise_client_urls.is_none() {
            return Err(invalid(
                "advertise-client-urls",
                "required when --listen-client-urls is set explicitly",
            ));
        }
        let advertise_client_urls = url_list(
            "advertise-client-urls",
            self.advertise_client_urls.as_deref().unwrap_or(DEFAULT_CLIENT_URL),
            true,
        )?;
        reachable("advertise-client-urls", &advertise_client_urls)?;
        let listen_peer_urls = url_list(
            "listen-peer-urls",
            self.listen_peer_urls.as_deref().unwrap_or(DEFAULT_PEER_URL),
            true,
        )?;
        let advertise_peer_urls = url_list(
            "initial-advertise-peer-urls",
            self.initial_advertise_peer_urls.as_deref().unwrap_or(DEFAULT_PEER_URL),
            true,
        )?;
        reachable("initial-advertise-peer-urls", &advertise_peer_urls)?;
        let listen_metrics_urls =
            url_list("listen-metrics-urls", &self.listen_metrics_urls, false)?;

        // etcd: the default --initial-cluster is "default=http://localhost:2380"; a member named
        // otherwise with --name is instead a one-member cluster of itself, at its advertised URLs.
        let initial_cluster_flag = match &self.initial_cluster {
            Some(flag) => flag.clone(),
            None if self.name == "default" => format!("default={DEFAULT_PEER_URL}"),
            None => advertise_peer_urls
                .iter()
                .map(|u| format!("{}={u}", self.name))
                .collect::<Vec<_>>()
                .join(","),
        };
        let initial_cluster =
            parse_initial_cluster(&initial_cluster_flag, &self.initial_cluster_token)?;
        let local = initial_cluster.iter().find(|m| m.name == self.name).ok_or_else(|| {
            ServeConfigError::MissingLocalMember {
                name: self.name.clone(),
                initial_cluster: initial_cluster_flag.clone(),
            }
        })?;
        let in_cluster: BTreeSet<&Url> = local.peer_urls.iter().collect();
        let advertised: BTreeSet<&Url> = advertise_peer_urls.iter().collect();
        if in_cluster != advertised || local.peer_urls.len() != advertise_peer_urls.len() {
            return Err(ServeConfigError::AdvertisedPeerUrlsMismatch {
                name: self.name.clone(),
                in_cluster: join(&local.peer_urls),
                advertised: join(&advertise_peer_urls),
            });
        }
        let member_id = local.id;
        let ids: Vec<u64> = initial_cluster.iter().map(|m| m.id).collect();
        let cluster_id = cluster_id(&ids);

        let peer_urls: Vec<(&'static str, &Url)> = listen_peer_urls
            .iter()
            .map(|u| ("listen-peer-urls", u))
            .chain(advertise_peer_urls.iter().map(|u| ("initial-advertise-peer-urls", u)))
            .chain(
                initial_cluster
                    .iter()
                    .flat_map(|m| m.peer_urls.iter())
                    .map(|u| ("initial-cluster", u)),
            )
            .collect();
        let peer_tls = tls_files(
            "peer-",
            self.peer_cert_file,
            self.peer_key_file,
            self.peer_trusted_ca_file,
            self.peer_client_cert_auth,
            &peer_urls,
        )?;
        if let Some(tls) = &peer_tls
            && tls.trusted_ca_file.is_none()
        {
            // raft-grpc's peer TLS is always mutual: each member checks the other's certificate.
            return Err(invalid(
                "peer-trusted-ca-file",
                "required with peer TLS (peers verify each other against this CA)",
            ));
        }
        let client_urls: Vec<(&'static str, &Url)> = listen_client_urls
            .iter()
            .map(|u| ("listen-client-urls", u))
            .chain(advertise_client_urls.iter().map(|u| ("advertise-client-urls", u)))
            .collect();
        let client_tls = tls_files(
            "",
            self.cert_file,
            self.key_file,
            self.trusted_ca_file,
            self.client_cert_auth,
            &client_urls,
        )?;

        let data_dir =
            self.data_dir.unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)));
        Ok(ServeConfig {
            name: self.name,
            data_dir,
            listen_client_urls,
            advertise_client_urls,
            listen_peer_urls,
            initial_advertise_peer_urls: advertise_peer_urls,
            initial_cluster,
            initial_cluster_state: self.initial_cluster_state,
            initial_cluster_token: self.initial_cluster_token,
            member_id,
            cluster_id,
            heartbeat_interval,
            election_timeout,
            listen_metrics_urls,
            snapshot_count: self.snapshot_count,
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops,
            client_tls,
            peer_tls,
        })
    }
}

/// etcd's timing rules: heartbeat > 0, election >= 5 × heartbeat, election <= 50 s.
fn timing(heartbeat_ms: u64, election_ms: u64) -> Result<(Duration, Duration), ServeConfigError> {
    if heartbeat_ms == 0 {
        return Err(invalid("heartbeat-interval", "must be > 0 (set to 0ms)"));
    }
    if heartbeat_ms.saturating_mul(5) > election_ms {
        return Err(invalid(
            "election-timeout",
            format!(
                "[{election_ms}ms] should be at least 5 times --heartbeat-interval[{heartbeat_ms}ms]"
            ),
        ));
    }
    if election_ms > MAX_ELECTION_TIMEOUT_MS {
        return Err(invalid(
            "election-timeout",
            format!(
                "[{election_ms}ms] is too long, and should be at most {MAX_ELECTION_TIMEOUT_MS}ms"
            ),
        ));
    }
    Ok((Duration::from_millis(heartbeat_ms), Duration::from_millis(election_ms)))
}

/// Parses `name=url,name=url,...` (a name may repeat, one entry per URL) and computes each
/// member's id. No URL may appear twice.
fn parse_initial_cluster(value: &str, token: &str) -> Result<Vec<InitialMember>, ServeConfigError> {
    const FLAG: &str = "initial-cluster";
    let mut order: Vec<String> = Vec::new();
    let mut urls: BTreeMap<String, Vec<Url>> = BTreeMap::new();
    let mut seen: BTreeSet<Url> = BTreeSet::new();
    for item in value.split(',').map(str::trim) {
        let (name, url) = item
            .split_once('=')
            .ok_or_else(|| invalid(FLAG, format!("{item:?} is not name=url")))?;
        if name.is_empty() {
            return Err(invalid(FLAG, format!("{item:?} has an empty name")));
        }
        let url = Url::parse(url).map_err(|source| ServeConfigError::Url {
            flag: FLAG,
            value: value.to_string(),
            source,
        })?;
        reachable(FLAG, std::slice::from_ref(&url))?;
        if !seen.insert(url.clone()) {
            return Err(invalid(FLAG, format!("{value} has duplicate url {url}")));
        }
        if !urls.contains_key(name) {
            order.push(name.to_string());
        }
        urls.entry(name.to_string()).or_default().push(url);
    }
    Ok(order
        .into_iter()
        .map(|name| {
            let peer_urls = urls.remove(&name).unwrap_or_default();
            let id = member_id(&peer_urls, token);
            InitialMember { name, peer_urls, id }
        })
        .collect())
}

/// Checks one listener's TLS flags (`prefix` is `""` for clients, `"peer-"` for peers) against
/// its URLs: cert and key go together, and are given exactly when the URLs are `https`.
fn tls_files(
    prefix: &'static str,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    trusted_ca_file: Option<PathBuf>,
    client_cert_auth: bool,
    urls: &[(&'static str, &Url)],
) -> Result<Option<TlsFiles>, ServeConfigError> {
    let (cert_flag, key_flag, auth_flag, ca_flag) = if prefix.is_empty() {
        ("cert-file", "key-file", "client-cert-auth", "trusted-ca-file")
    } else {
        ("peer-cert-file", "peer-key-file", "peer-client-cert-auth", "peer-trusted-ca-file")
    };
    let files = match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => {
            Some(TlsFiles { cert_file, key_file, trusted_ca_file, client_cert_auth })
        }
        (Some(_), None) => return Err(invalid(key_flag, format!("required with --{cert_flag}"))),
        (None, Some(_)) => return Err(invalid(cert_flag, format!("required with --{key_flag}"))),
        (None, None) => {
            if client_cert_auth {
                return Err(invalid(auth_flag, format!("needs --{cert_flag} and --{key_flag}")));
            }
            if trusted_ca_file.is_some() {
                return Err(invalid(ca_flag, format!("needs --{cert_flag} and --{key_flag}")));
            }
            None
        }
    };
    let want_tls = files.is_some();
    if let Some((flag, url)) = urls.iter().find(|(_, u)| u.is_tls() != want_tls) {
        let reason = if want_tls {
            format!("{url} is http but --{cert_flag} is set: with TLS every URL must be https")
        } else {
            format!("{url} is https, which needs --{cert_flag} and --{key_flag}")
        };
        return Err(invalid(flag, reason));
    }
    Ok(files)
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
