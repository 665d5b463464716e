//! The command line of the `raft-kv` binary: `serve` (one member, etcd 3.4's flags), `up` (a
//! local cluster of `serve` processes) and `bench` (a load generator speaking the etcd v3 API).
//!
//! `serve` flags parse into [`ServeArgs`], which [`ServeArgs::into_config`] validates into a
//! [`ServeConfig`] with etcd's rules (and its member and cluster ids). `up` and `bench` parse
//! directly into [`UpConfig`] and [`BenchConfig`], whose `validate` checks what clap cannot.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod id;
mod serve;
mod url;

pub use id::{cluster_id, member_id, member_id_at};
pub use serve::{ClusterState, InitialMember, ServeArgs, ServeConfig, ServeConfigError, TlsFiles};
pub use url::{Scheme, Url, UrlError};

/// `raft-kv`: an etcd v3 compatible replicated key-value store.
#[derive(Debug, Parser)]
#[command(name = "raft-kv", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one cluster member. Takes etcd 3.4's flags (and `ETCD_*` variables) with their
    /// meanings and defaults.
    Serve(Box<ServeArgs>),
    /// Start a local cluster (child processes running `serve`), print its endpoints, and stop it
    /// on Ctrl-C.
    Up(UpConfig),
    /// Load a cluster (raft-kv or etcd) through the etcd v3 API and report throughput and
    /// latency.
    Bench(BenchConfig),
}

/// Options of `raft-kv up`.
///
/// Member `i` (from 0) is named `infra{i+1}`, listens for clients on
/// `client_port + i * port_stride` and for peers on `peer_port + i * port_stride`, and keeps its
/// data in `<data_dir>/infra{i+1}` and its output in `<data_dir>/infra{i+1}.log`.
#[derive(Clone, Debug, PartialEq, Eq, Args)]
pub struct UpConfig {
    /// Directory for the members' data and logs [default: a new directory under the system
    /// temporary directory]. Reusing a directory restarts the cluster stored in it.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of members.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Address the members listen on and advertise.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Client port of the first member.
    #[arg(long, default_value_t = 2379)]
    pub client_port: u16,
    /// Peer port of the first member.
    #[arg(long, default_value_t = 2380)]
    pub peer_port: u16,
    /// Added to both ports for each further member.
    #[arg(long, default_value_t = 10_000)]
    pub port_stride: u16,
    /// `--initial-cluster-token` of the cluster.
    #[arg(long, default_value = "raft-kv-up")]
    pub initial_cluster_token: String,
    /// The `raft-kv` binary to run the members with [default: this executable].
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// How long to wait for every member to answer before giving up.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub ready_timeout: Duration,
    /// How long a member has to exit after SIGTERM before it is killed (SIGKILL).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub stop_grace: Duration,
    /// Extra flags passed to every member's `serve` (after `--`, e.g. `-- --snapshot-count 1000`).
    #[arg(last = true)]
    pub serve_args: Vec<String>,
}

/// Most members `raft-kv up` starts.
pub const MAX_UP_MEMBERS: usize = 9;

impl UpConfig {
    /// Checks what clap cannot: the member count and that every port fits in 1..=65535.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_UP_MEMBERS).contains(&self.members) {
            return Err(format!("--members must be in 1..={MAX_UP_MEMBERS}"));
        }
        if self.initial_cluster_token.is_empty() {
            return Err("--initial-cluster-token must not be empty".into());
        }
        if self.members > 1 && self.port_stride == 0 {
            return Err("--port-stride must be > 0 with more than one member".into());
        }
        for i in 0..self.members {
            let (client, peer) = self.ports(i).ok_or_else(|| {
                format!(
                    "member {} would need a port above 65535: lower --client-port, --peer-port \
                     or --port-stride",
                    i + 1
                )
            })?;
            if client == 0 || peer == 0 {
                return Err("--client-port and --peer-port must be > 0".into());
            }
        }
        let mut all: Vec<u16> =
            (0..self.members).filter_map(|i| self.ports(i)).flat_map(|(c, p)| [c, p]).collect();
        all.sort_unstable();
        if all.windows(2).any(|w| w[0] == w[1]) {
            return Err(
                "two members would share a port: change --peer-port or --port-stride".into()
            );
        }
        Ok(())
    }

    /// The (client, peer) ports of member `index` (from 0), or `None` past 65535.
    pub fn ports(&self, index: usize) -> Option<(u16, u16)> {
        let step = u16::try_from(index).ok()?.checked_mul(self.port_stride)?;
        Some((self.client_port.checked_add(step)?, self.peer_port.checked_add(step)?))
    }
}

/// Read consistency of `raft-kv bench` reads (etcd's `--consistency`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum Consistency {
    /// Linearizable: confirmed by the leader (ReadIndex); the default.
    #[value(name = "l", alias = "linearizable")]
    #[serde(rename = "l")]
    Linearizable,
    /// Serializable: answered from the local member's state, possibly stale.
    #[value(name = "s", alias = "serializable")]
    #[serde(rename = "s")]
    Serializable,
}

/// Options of `raft-kv bench`, also the input of [`crate::bench::run`].
///
/// Each client runs one request at a time on its own deterministic sequence (seeded by `seed` and
/// its index): a Range of one key with probability `read_ratio`, else a Put of `value_size` bytes,
/// on a key drawn uniformly from `key_space` keys. Key `n` is `key_prefix` followed by `n` in
/// decimal, zero-padded to `key_size` bytes in all.
#[derive(Clone, Debug, PartialEq, Args, serde::Serialize)]
pub struct BenchConfig {
    /// Client URLs, comma separated (`http://` is assumed without a scheme).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Concurrent requesters, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// gRPC connections, spread over the endpoints and shared round-robin by the clients.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub key_space: u64,
    /// Key length in bytes (prefix included).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value length in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Fraction of requests that are reads, 0..=1.
    #[arg(long, default_value_t = 0.0)]
    pub read_ratio: f64,
    /// Consistency of reads: l (linearizable) or s (serializable).
    #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
    pub consistency: Consistency,
    /// Run for this long (e.g. 10s, 500ms, 2m) [default: 10s unless --total is given].
    #[arg(long, value_parser = parse_duration, conflicts_with = "total")]
    #[serde(rename = "duration_secs", serialize_with = "serialize_opt_secs")]
    pub duration: Option<Duration>,
    /// Run this many requests in all, split evenly over the clients.
    #[arg(long)]
    pub total: Option<u64>,
    /// Print progress to stderr this often (0 for never).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    #[serde(rename = "progress_secs", serialize_with = "serialize_secs")]
    pub progress: Duration,
    /// Seed of the key and read/write choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prefix of every key.
    #[arg(long, default_value = "")]
    pub key_prefix: String,
    /// Deadline of one request; a request past it counts as a `Timeout` error.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    #[serde(rename = "timeout_secs", serialize_with = "serialize_secs")]
    pub timeout: Duration,
    /// Print the final report as JSON on stdout instead of a table.
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
}

impl Default for BenchConfig {
    /// The command-line defaults.
    fn default() -> BenchConfig {
        BenchConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            clients: 1,
            conns: 1,
            key_space: 100_000,
            key_size: 8,
            value_size: 256,
            read_ratio: 0.0,
            consistency: Consistency::Linearizable,
            duration: None,
            total: None,
            progress: Duration::from_secs(1),
            seed: 1,
            key_prefix: String::new(),
            timeout: Duration::from_secs(10),
            json: false,
        }
    }
}

/// When a benchmark stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many requests (successful or not).
    Total(u64),
}

/// Most clients of one benchmark.
pub const MAX_BENCH_CLIENTS: usize = 10_000;
/// Most connections of one benchmark.
pub const MAX_BENCH_CONNS: usize = 1_000;
/// Largest key or value a benchmark sends.
pub const MAX_BENCH_ITEM_BYTES: usize = 16 << 20;

impl BenchConfig {
    /// When the run stops: `--total`, else `--duration`, else 10 s.
    pub fn stop(&self) -> Stop {
        match (self.total, self.duration) {
            (Some(total), _) => Stop::Total(total),
            (None, Some(duration)) => Stop::After(duration),
            (None, None) => Stop::After(Duration::from_secs(10)),
        }
    }

    /// Checks ranges and cross-field rules; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.iter().all(|e| e.trim().is_empty()) {
            return Err("--endpoints: at least one endpoint is required".into());
        }
        if !(1..=MAX_BENCH_CLIENTS).contains(&self.clients) {
            return Err(format!("--clients must be in 1..={MAX_BENCH_CLIENTS}"));
        }
        if !(1..=MAX_BENCH_CONNS).contains(&self.conns) {
            return Err(format!("--conns must be in 1..={MAX_BENCH_CONNS}"));
        }
        if self.key_space == 0 {
            return Err("--key-space must be > 0".into());
        }
        let digits = (self.key_space - 1).to_string().len();
        if self.key_size < self.key_prefix.len() + digits || self.key_size > MAX_BENCH_ITEM_BYTES {
            return Err(format!(
                "--key-size must be in {}..={MAX_BENCH_ITEM_BYTES}: the {}-byte --key-prefix and \
                 {digits} digits for --key-space {}",
                self.key_prefix.len() + digits,
                self.key_prefix.len(),
                self.key_space,
            ));
        }
        if self.value_size > MAX_BENCH_ITEM_BYTES {
            return Err(format!("--value-size must be <= {MAX_BENCH_ITEM_BYTES}"));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err("--read-ratio must be in 0..=1".into());
        }
        match self.stop() {
            Stop::Total(0) => return Err("--total must be > 0".into()),
            Stop::After(d) if d.is_zero() => return Err("--duration must be > 0".into()),
            _ => {}
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be > 0".into());
        }
        Ok(())
    }
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn serialize_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// Parses a duration: a number with a unit `ms`, `s`, `m` or `h` (`1.5s`, `250ms`), or a bare
/// number of seconds.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let input = input.trim();
    let split = input.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(input.len());
    let (number, unit) = input.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{input:?} is not a duration like 10s, 250ms, 2m or 1h"))?;
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{input:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| format!("{input:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("raft-kv").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "10x", "-1s", "1e99h", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bench_defaults_match_the_command_line() {
        let Command::Bench(cfg) = parse(&["bench"]).unwrap().command else { panic!("not bench") };
        assert_eq!(cfg, BenchConfig::default());
        assert_eq!(cfg.stop(), Stop::After(Duration::from_secs(10)));
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn parses_bench_flags() {
        let cli = parse(&[
            "bench",
            "--endpoints=a:1,http://b:2",
            "--clients",
            "64",
            "--read-ratio=0.5",
            "--consistency",
            "s",
            "--total=2000",
            "--progress=0",
            "--json",
        ])
        .unwrap();
        let Command::Bench(cfg) = cli.command else { panic!("not bench") };
        assert_eq!(cfg.endpoints, ["a:1", "http://b:2"]);
        assert_eq!(cfg.clients, 64);
        assert_eq!(cfg.consistency, Consistency::Serializable);
        assert_eq!(cfg.stop(), Stop::Total(2000));
        assert!(cfg.json);
        assert!(parse(&["bench", "--total=1", "--duration=1s"]).is_err());
        assert!(parse(&["bench", "--consistency=x"]).is_err());
    }

    #[test]
    fn bench_validation_names_the_flag() {
        let check = |f: fn(&mut BenchConfig), flag: &str| {
            let mut cfg = BenchConfig::default();
            f(&mut cfg);
            let err = cfg.validate().unwrap_err();
            assert!(err.contains(flag), "{err} should name {flag}");
        };
        check(|c| c.clients = 0, "--clients");
        check(|c| c.conns = 0, "--conns");
        check(|c| c.key_space = 0, "--key-space");
        check(|c| c.key_space = 1_000_000_000, "--key-size");
        check(|c| c.key_prefix = "bench/".into(), "--key-size");
        check(|c| c.read_ratio = 1.5, "--read-ratio");
        check(|c| c.total = Some(0), "--total");
        check(|c| c.duration = Some(Duration::ZERO), "--duration");
        check(|c| c.endpoints = vec![String::new()], "--endpoints");
        let cfg = BenchConfig { key_space: 100_000_000, ..BenchConfig::default() };
        assert_eq!(cfg.validate(), Ok(()), "8 digits fit in 8 bytes");
    }

    #[test]
    fn up_ports_and_validation() {
        let Command::Up(cfg) = parse(&["up", "--", "--snapshot-count", "10"]).unwrap().command
        else {
            panic!("not up")
        };
        assert_eq!(cfg.members, 3);
        assert_eq!(cfg.serve_args, ["--snapshot-count", "10"]);
        assert_eq!(
            (0..3).map(|i| cfg.ports(i).unwrap()).collect::<Vec<_>>(),
            [(2379, 2380), (12379, 12380), (22379, 22380)]
        );
        assert_eq!(cfg.validate(), Ok(()));
        let seven = UpConfig { members: 7, ..cfg.clone() };
        assert_eq!(seven.ports(6), Some((62379, 62380)));
        assert_eq!(seven.validate(), Ok(()));
        let too_many = UpConfig { members: 8, ..cfg.clone() };
        assert!(too_many.validate().unwrap_err().contains("65535"));
        let clash = UpConfig { port_stride: 1, ..cfg.clone() };
        assert!(clash.validate().unwrap_err().contains("share a port"));
        let none = UpConfig { members: 0, ..cfg };
        assert!(none.validate().unwrap_err().contains("--members"));
    }
}
