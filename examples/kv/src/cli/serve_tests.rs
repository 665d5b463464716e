//! The `serve` flag rules, each checked against what etcd 3.4.23 does with the same flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::*;
use crate::cli::{Cli, Command};

/// Environment variables that would change the parse (`ETCD_*`); the tests must not see them.
fn assert_clean_env() {
    let set: Vec<String> =
        std::env::vars().map(|(k, _)| k).filter(|k| k.starts_with("ETCD_")).collect();
    assert!(set.is_empty(), "unset {set:?} to run these tests");
}

fn args(flags: &[&str]) -> ServeArgs {
    assert_clean_env();
    let cli = Cli::try_parse_from(["raft-kv", "serve"].iter().chain(flags))
        .unwrap_or_else(|e| panic!("{flags:?}: {e}"));
    match cli.command {
        Command::Serve(args) => *args,
        other => panic!("not serve: {other:?}"),
    }
}

fn config(flags: &[&str]) -> ServeConfig {
    args(flags).into_config().unwrap_or_else(|e| panic!("{flags:?}: {e}"))
}

/// The flag the error names.
fn error_flag(flags: &[&str]) -> &'static str {
    match args(flags).into_config() {
        Ok(cfg) => panic!("{flags:?} accepted: {cfg:?}"),
        Err(e) => {
            eprintln!("{flags:?}: {e}");
            e.flag()
        }
    }
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

#[test]
fn defaults_are_etcds() {
    let cfg = config(&[]);
    assert_eq!(cfg.name, "default");
    assert_eq!(cfg.data_dir, PathBuf::from("default.etcd"));
    assert_eq!(cfg.listen_client_urls, [url("http://localhost:2379")]);
    assert_eq!(cfg.advertise_client_urls, [url("http://localhost:2379")]);
    assert_eq!(cfg.listen_peer_urls, [url("http://localhost:2380")]);
    assert_eq!(cfg.initial_advertise_peer_urls, [url("http://localhost:2380")]);
    assert_eq!(cfg.initial_cluster.len(), 1);
    assert_eq!(cfg.initial_cluster[0].name, "default");
    assert_eq!(cfg.initial_cluster_state, ClusterState::New);
    assert_eq!(cfg.initial_cluster_token, "etcd-cluster");
    assert_eq!(cfg.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(cfg.election_timeout, Duration::from_millis(1000));
    assert_eq!(cfg.election_ticks(), 10);
    assert!(cfg.listen_metrics_urls.is_empty());
    assert_eq!(cfg.snapshot_count, 100_000);
    assert_eq!(cfg.max_request_bytes, 1_572_864);
    assert_eq!(cfg.max_txn_ops, 128);
    assert_eq!((cfg.client_tls.clone(), cfg.peer_tls.clone()), (None, None));
    // etcd 3.4.23 logs "added member 8e9e05c52164694d [http://localhost:2380] to cluster
    // cdf818194e3a8c32" for these flags.
    assert_eq!(cfg.member_id, 0x8e9e05c52164694d);
    assert_eq!(cfg.cluster_id, 0xcdf818194e3a8c32);
    assert_eq!(cfg.local_member().id, cfg.member_id);
}

#[test]
fn accepts_both_flag_forms_and_a_procfile_member() {
    let cluster = "infra1=http://127.0.0.1:12380,infra2=http://127.0.0.1:22380,\
                   infra3=http://127.0.0.1:32380";
    let cfg = config(&[
        "--name",
        "infra2",
        "--listen-client-urls=http://127.0.0.1:22379",
        "--advertise-client-urls",
        "http://127.0.0.1:22379",
        "--listen-peer-urls=http://127.0.0.1:22380",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:22380",
        "--initial-cluster-token=etcd-cluster-1",
        "--initial-cluster",
        cluster,
        "--initial-cluster-state=existing",
        "--heartbeat-interval=50",
        "--election-timeout",
        "250",
        "--listen-metrics-urls=http://127.0.0.1:2381,http://[::1]:2381",
        "--snapshot-count=1000",
    ]);
    assert_eq!(cfg.name, "infra2");
    assert_eq!(cfg.data_dir, PathBuf::from("infra2.etcd"));
    assert_eq!(cfg.initial_cluster_state, ClusterState::Existing);
    let names: Vec<&str> = cfg.initial_cluster.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["infra1", "infra2", "infra3"]);
    // The ids etcd 3.4.23 logs for etcd's Procfile cluster.
    let ids: Vec<u64> = cfg.initial_cluster.iter().map(|m| m.id).collect();
    assert_eq!(ids, [0x8211f1d0f64f3269, 0x91bc3c398fb3c146, 0xfd422379fda50e48]);
    assert_eq!(cfg.member_id, 0x91bc3c398fb3c146);
    assert_eq!(cfg.cluster_id, 0xef37ad9dc622a7c4);
    assert_eq!(cfg.election_ticks(), 5);
    assert_eq!(cfg.listen_metrics_urls.len(), 2);
    assert_eq!(cfg.snapshot_count, 1000);
}

#[test]
fn a_name_alone_makes_a_one_member_cluster_of_itself() {
    // etcd: `etcd --name x` runs with --initial-cluster x=http://localhost:2380.
    let cfg = config(&["--name=x", "--data-dir=/tmp/d"]);
    assert_eq!(cfg.initial_cluster.len(), 1);
    assert_eq!(cfg.initial_cluster[0].name, "x");
    assert_eq!(cfg.initial_cluster[0].peer_urls, [url("http://localhost:2380")]);
    assert_eq!(cfg.data_dir, PathBuf::from("/tmp/d"));
    let cfg = config(&["--name=x", "--initial-advertise-peer-urls=http://a:1,http://b:2"]);
    assert_eq!(cfg.local_member().peer_urls, [url("http://a:1"), url("http://b:2")]);
    // But the name "default" keeps etcd's default cluster, whatever is advertised (next test).
}

#[test]
fn a_member_may_have_several_peer_urls() {
    let cfg = config(&[
        "--initial-advertise-peer-urls=http://b:2,http://a:1",
        "--initial-cluster=default=http://a:1,other=http://c:3,default=http://b:2",
    ]);
    assert_eq!(cfg.local_member().peer_urls, [url("http://a:1"), url("http://b:2")]);
    assert_eq!(cfg.initial_cluster.len(), 2);
}

#[test]
fn timing_rules_follow_etcd() {
    // etcd: "--election-timeout[400ms] should be at least as 5 times as
    // --heartbeat-interval[100ms]".
    assert_eq!(error_flag(&["--election-timeout=400"]), "election-timeout");
    assert_eq!(config(&["--election-timeout=500"]).election_ticks(), 5);
    // etcd: "--heartbeat-interval must be >0 (set to 0ms)".
    assert_eq!(error_flag(&["--heartbeat-interval=0"]), "heartbeat-interval");
    // etcd: "--election-timeout[60000ms] is too long, and should be set less than 50000ms";
    // 50000 itself is accepted.
    assert_eq!(error_flag(&["--election-timeout=50001"]), "election-timeout");
    config(&["--election-timeout=50000"]);
    assert_eq!(error_flag(&["--snapshot-count=0"]), "snapshot-count");
    assert_eq!(error_flag(&["--max-txn-ops=0"]), "max-txn-ops");
}

#[test]
fn urls_must_be_scheme_host_port() {
    for (flag, value) in [
        ("listen-client-urls", "localhost:2379"),
        ("listen-client-urls", "http://localhost"),
        ("listen-client-urls", "http://localhost:2379/path"),
        ("listen-peer-urls", "unix://sock:1"),
        ("initial-advertise-peer-urls", "http://localhost:x"),
        ("listen-metrics-urls", "metrics:2381"),
        ("initial-cluster", "default=localhost:2380"),
    ] {
        let arg = format!("--{flag}={value}");
        let mut flags = vec![arg.as_str()];
        if flag == "listen-client-urls" {
            flags.push("--advertise-client-urls=http://localhost:2379");
        }
        let err = args(&flags).into_config().unwrap_err();
        assert!(matches!(err, ServeConfigError::Url { .. }), "{flags:?}: {err}");
        assert_eq!(err.flag(), flag);
    }
    // Port 0 can be listened on, not advertised.
    config(&["--listen-peer-urls=http://127.0.0.1:0"]);
    assert_eq!(
        error_flag(&["--advertise-client-urls=http://127.0.0.1:0"]),
        "advertise-client-urls"
    );
}

#[test]
fn listen_client_urls_need_advertise_client_urls() {
    // etcd: "--advertise-client-urls is required when --listen-client-urls is set explicitly".
    assert_eq!(
        error_flag(&["--listen-client-urls=http://127.0.0.1:2379"]),
        "advertise-client-urls"
    );
    // Not so for peers (etcd accepts --listen-peer-urls alone).
    config(&["--listen-peer-urls=http://127.0.0.1:2380"]);
}

#[test]
fn initial_cluster_must_contain_this_member_once_per_url() {
    // etcd: couldn't find local name "default" in the initial cluster configuration.
    let err = args(&["--initial-cluster=foo=http://localhost:2380"]).into_config().unwrap_err();
    assert!(matches!(err, ServeConfigError::MissingLocalMember { .. }), "{err}");
    assert_eq!(err.flag(), "initial-cluster");
    // etcd: "... has duplicate url".
    assert_eq!(
        error_flag(&["--initial-cluster=default=http://localhost:2380,b=http://localhost:2380"]),
        "initial-cluster"
    );
    for bad in ["default", "=http://a:1", "default=http://localhost:2380,"] {
        let arg = format!("--initial-cluster={bad}");
        assert_eq!(error_flag(&[arg.as_str()]), "initial-cluster", "{bad}");
    }
    assert_eq!(error_flag(&["--name="]), "name");
    assert_eq!(error_flag(&["--initial-cluster-token="]), "initial-cluster-token");
}

#[test]
fn advertised_peer_urls_must_match_the_initial_cluster() {
    // etcd: "--initial-cluster has default=http://localhost:2380 but missing from
    // --initial-advertise-peer-urls=http://localhost:9999".
    let err =
        args(&["--initial-advertise-peer-urls=http://localhost:9999"]).into_config().unwrap_err();
    assert!(matches!(err, ServeConfigError::AdvertisedPeerUrlsMismatch { .. }), "{err}");
    // Two entries where one is advertised, and the same URL advertised twice.
    assert_eq!(
        error_flag(&[
            "--initial-cluster=default=http://localhost:2380,default=http://localhost:2381"
        ]),
        "initial-advertise-peer-urls"
    );
    assert_eq!(
        error_flag(&["--initial-advertise-peer-urls=http://localhost:2380,http://localhost:2380"]),
        "initial-advertise-peer-urls"
    );
}

#[test]
fn cluster_state_is_new_or_existing() {
    assert_eq!(
        config(&["--initial-cluster-state", "new"]).initial_cluster_state,
        ClusterState::New
    );
    assert!(Cli::try_parse_from(["raft-kv", "serve", "--initial-cluster-state=bogus"]).is_err());
}

fn https_peer_flags() -> Vec<&'static str> {
    vec![
        "--listen-peer-urls=https://localhost:2380",
        "--initial-advertise-peer-urls=https://localhost:2380",
        "--initial-cluster=default=https://localhost:2380",
    ]
}

#[test]
fn peer_tls_goes_with_https_peer_urls() {
    let mut flags = https_peer_flags();
    flags.extend([
        "--peer-cert-file=c.pem",
        "--peer-key-file=k.pem",
        "--peer-trusted-ca-file=ca.pem",
        "--peer-client-cert-auth",
    ]);
    let tls = config(&flags).peer_tls.expect("peer TLS");
    assert_eq!(
        tls,
        TlsFiles {
            cert_file: "c.pem".into(),
            key_file: "k.pem".into(),
            trusted_ca_file: Some("ca.pem".into()),
            client_cert_auth: true,
        }
    );
    // `--flag=false` is accepted for booleans, as in etcd.
    flags.pop();
    flags.push("--peer-client-cert-auth=false");
    assert!(!config(&flags).peer_tls.unwrap().client_cert_auth);

    // https without certificates, certificates with http, and half a pair.
    assert_eq!(error_flag(&https_peer_flags()), "listen-peer-urls");
    assert_eq!(
        error_flag(&[
            "--peer-cert-file=c.pem",
            "--peer-key-file=k.pem",
            "--peer-trusted-ca-file=ca.pem"
        ]),
        "listen-peer-urls"
    );
    let mut half = https_peer_flags();
    half.push("--peer-cert-file=c.pem");
    assert_eq!(error_flag(&half), "peer-key-file");
    let mut no_ca = https_peer_flags();
    no_ca.extend(["--peer-cert-file=c.pem", "--peer-key-file=k.pem"]);
    assert_eq!(error_flag(&no_ca), "peer-trusted-ca-file");
    assert_eq!(error_flag(&["--peer-client-cert-auth"]), "peer-client-cert-auth");
}

#[test]
fn client_tls_goes_with_https_client_urls() {
    let cfg = config(&[
        "--listen-client-urls=https://localhost:2379",
        "--advertise-client-urls=https://localhost:2379",
        "--cert-file=c.pem",
        "--key-file=k.pem",
    ]);
    let tls = cfg.client_tls.expect("client TLS");
    assert_eq!((tls.trusted_ca_file, tls.client_cert_auth), (None, false));
    assert_eq!(
        error_flag(&[
            "--listen-client-urls=https://localhost:2379",
            "--advertise-client-urls=https://localhost:2379",
        ]),
        "listen-client-urls"
    );
    assert_eq!(error_flag(&["--key-file=k.pem"]), "cert-file");
}
