//! `raft-kv bench`: a closed-loop load generator speaking the etcd v3 gRPC API, so the same run
//! can be pointed at raft-kv or at etcd.
//!
//! [`run`] opens `conns` gRPC connections (spread round-robin over the endpoints) and starts
//! `clients` tasks, client `i` using connection `i % conns`. Each client has one request in
//! flight at a time and its own seeded sequence of operations (see [`BenchConfig`]), so the keys
//! a run touches depend only on the configuration. Latencies of successful requests go into HDR
//! histograms (µs); failures are counted by gRPC code (or `Timeout`) and do not stop the run.
//!
//! ```no_run
//! # async fn demo() -> Result<(), raft_kv::bench::BenchError> {
//! use raft_kv::cli::BenchConfig;
//! let report = raft_kv::bench::run(BenchConfig {
//!     endpoints: vec!["127.0.0.1:2379".into()],
//!     clients: 64,
//!     total: Some(100_000),
//!     ..BenchConfig::default()
//! })
//! .await?;
//! println!("{:.0} ops/s, p99 {} µs", report.throughput_ops_per_sec, report.latency_us.p99);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use crate::cli::{BenchConfig, Consistency, Stop};
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::{PutRequest, RangeRequest};

/// Longest latency the histograms hold (µs); longer ones are recorded as this.
const MAX_LATENCY_US: u64 = 60_000_000;
/// How long to wait for each connection at the start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest gRPC response accepted (a Range returns at most one value of `value_size`).
const MAX_RESPONSE_BYTES: usize = 2 * crate::cli::MAX_BENCH_ITEM_BYTES;

/// Why a benchmark could not run. Failed requests are not errors: they are counted in the
/// [`BenchReport`].
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The configuration breaks a rule of [`BenchConfig::validate`].
    #[error("{0}")]
    Config(String),
    /// An endpoint is not a usable URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// As given.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// A connection could not be opened.
    #[error("cannot connect to {endpoint}: {}", error_chain(source))]
    Connect {
        /// The endpoint dialled.
        endpoint: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
}

/// An error and its sources, `outer: inner: innermost` (tonic's transport errors say little
/// at the top: "transport error").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Latency percentiles of one kind of request, in microseconds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Latency {
    /// Requests measured.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Fastest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest.
    pub max: u64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            count: histogram.len(),
            mean: histogram.mean(),
            min: histogram.min(),
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// The result of a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    /// What was run.
    pub config: BenchConfig,
    /// Successful requests.
    pub ops: u64,
    /// Successful Puts.
    pub writes: u64,
    /// Successful Ranges.
    pub reads: u64,
    /// Failed requests.
    pub errors: u64,
    /// Failed requests by gRPC code (`Unavailable`, ...) or `Timeout`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The first message seen for each kind of error.
    pub error_samples: BTreeMap<String, String>,
    /// From the first request to the end of the last.
    pub elapsed_secs: f64,
    /// `ops / elapsed_secs`.
    pub throughput_ops_per_sec: f64,
    /// Latency of all successful requests.
    pub latency_us: Latency,
    /// Latency of successful Puts.
    pub write_latency_us: Latency,
    /// Latency of successful Ranges.
    pub read_latency_us: Latency,
}

/// Runs a benchmark to completion. Prints progress to stderr every `cfg.progress` (unless zero).
pub async fn run(cfg: BenchConfig) -> Result<BenchReport, BenchError> {
    cfg.validate().map_err(BenchError::Config)?;
    let channels = connect_all(&cfg).await?;
    let plan = Arc::new(Plan::new(&cfg));
    let counters = Arc::new(Counters::default());

    let start = Instant::now();
    let stop = match cfg.stop() {
        Stop::After(duration) => Until::Deadline(start + duration),
        Stop::Total(total) => Until::Total(total),
    };
    let mut clients = JoinSet::new();
    for index in 0..cfg.clients {
        let kv = KvClient::new(channels[index % channels.len()].clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES);
        let quota = match stop {
            Until::Total(total) => Some(share(total, cfg.clients, index)),
            Until::Deadline(_) => None,
        };
        let client = Client::new(index, plan.clone(), counters.clone(), kv);
        clients.spawn(client.run(quota, stop));
    }
    let progress = (!cfg.progress.is_zero())
        .then(|| tokio::spawn(progress(cfg.progress, start, counters.clone())));

    let mut total = ClientStats::new();
    while let Some(stats) = clients.join_next().await {
        // A client task only ends by returning; a panic there is a bug to surface.
        total.merge(stats.expect("bench client task panicked"));
    }
    let elapsed = start.elapsed();
    if let Some(progress) = progress {
        progress.abort();
    }
    Ok(total.report(cfg, elapsed))
}

/// Client `index`'s share of `total` requests: an even split, the first clients taking one more.
fn share(total: u64, clients: usize, index: usize) -> u64 {
    let clients = clients as u64;
    total / clients + u64::from((index as u64) < total % clients)
}

/// Opens `cfg.conns` connections, connection `j` to endpoint `j % endpoints`.
async fn connect_all(cfg: &BenchConfig) -> Result<Vec<Channel>, BenchError> {
    let endpoints: Vec<String> = cfg
        .endpoints
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(normalize_endpoint)
        .collect::<Result<_, _>>()?;
    let mut channels = Vec::with_capacity(cfg.conns);
    for j in 0..cfg.conns {
        let uri = &endpoints[j % endpoints.len()];
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| BenchError::Endpoint { endpoint: uri.clone(), reason: e.to_string() })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| BenchError::Connect { endpoint: uri.clone(), source })?;
        channels.push(channel);
    }
    Ok(channels)
}

/// `host:port` → `http://host:port`; `http://` kept; `https://` refused (no client TLS yet).
fn normalize_endpoint(endpoint: &str) -> Result<String, BenchError> {
    let refuse = |reason: &str| BenchError::Endpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    match endpoint.split_once("://") {
        None => Ok(format!("http://{endpoint}")),
        Some(("http", _)) => Ok(endpoint.to_string()),
        Some(("https", _)) => Err(refuse("https endpoints are not supported by bench yet")),
        Some(_) => Err(refuse("the scheme must be http (or none)")),
    }
}

/// When clients stop.
#[derive(Clone, Copy, Debug)]
enum Until {
    /// Each client stops after its share of this many requests.
    Total(u64),
    /// Each client stops starting requests at this instant.
    Deadline(Instant),
}

/// What every client shares: the request shapes.
struct Plan {
    seed: u64,
    key_space: u64,
    key_prefix: Vec<u8>,
    /// Digits after the prefix (`key_size - key_prefix.len()`).
    key_digits: usize,
    value: Vec<u8>,
    read_ratio: f64,
    serializable: bool,
    timeout: Duration,
}

impl Plan {
    fn new(cfg: &BenchConfig) -> Plan {
        let mut rng = SplitMix64::for_stream(cfg.seed, u64::MAX); // clients use 0..clients
        let value = (0..cfg.value_size).map(|_| b'a' + (rng.next() % 26) as u8).collect();
        Plan {
            seed: cfg.seed,
            key_space: cfg.key_space,
            key_prefix: cfg.key_prefix.as_bytes().to_vec(),
            key_digits: cfg.key_size - cfg.key_prefix.len(),
            value,
            read_ratio: cfg.read_ratio,
            serializable: cfg.consistency == Consistency::Serializable,
            timeout: cfg.timeout,
        }
    }

    /// Key `n`: the prefix, then `n` zero-padded to `key_digits`.
    fn key(&self, n: u64) -> Vec<u8> {
        let mut key = self.key_prefix.clone();
        key.extend_from_slice(format!("{n:0width$}", width = self.key_digits).as_bytes());
        key
    }
}

/// Live totals for the progress line.
#[derive(Default)]
struct Counters {
    ops: AtomicU64,
    errors: AtomicU64,
}

/// What one client measured.
struct ClientStats {
    writes: Histogram<u64>,
    reads: Histogram<u64>,
    errors_by_kind: BTreeMap<String, u64>,
    error_samples: BTreeMap<String, String>,
}

impl ClientStats {
    fn new() -> ClientStats {
        let histogram =
            || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds");
        ClientStats {
            writes: histogram(),
            reads: histogram(),
            errors_by_kind: BTreeMap::new(),
            error_samples: BTreeMap::new(),
        }
    }

    fn record_error(&mut self, kind: String, message: String) {
        *self.errors_by_kind.entry(kind.clone()).or_default() += 1;
        self.error_samples.entry(kind).or_insert(message);
    }

    fn merge(&mut self, other: ClientStats) {
        // Same bounds on both sides, so adding cannot fail.
        self.writes.add(&other.writes).expect("same histogram bounds");
        self.reads.add(&other.reads).expect("same histogram bounds");
        for (kind, n) in other.errors_by_kind {
            *self.errors_by_kind.entry(kind).or_default() += n;
        }
        for (kind, message) in other.error_samples {
            self.error_samples.entry(kind).or_insert(message);
        }
    }

    fn report(self, config: BenchConfig, elapsed: Duration) -> BenchReport {
        let mut all = self.writes.clone();
        all.add(&self.reads).expect("same histogram bounds");
        let ops = all.len();
        let elapsed_secs = elapsed.as_secs_f64();
        BenchReport {
            config,
            ops,
            writes: self.writes.len(),
            reads: self.reads.len(),
            errors: self.errors_by_kind.values().sum(),
            errors_by_kind: self.errors_by_kind,
            error_samples: self.error_samples,
            elapsed_secs,
            throughput_ops_per_sec: if elapsed_secs > 0.0 {
                ops as f64 / elapsed_secs
            } else {
                0.0
            },
            latency_us: Latency::of(&all),
            write_latency_us: Latency::of(&self.writes),
            read_latency_us: Latency::of(&self.reads),
        }
    }
}

/// One requester: one request in flight, its own random sequence.
struct Client {
    rng: SplitMix64,
    plan: Arc<Plan>,
    counters: Arc<Counters>,
    kv: KvClient<Channel>,
    stats: ClientStats,
}

impl Client {
    fn new(
        index: usize,
        plan: Arc<Plan>,
        counters: Arc<Counters>,
        kv: KvClient<Channel>,
    ) -> Client {
        Client {
            rng: SplitMix64::for_stream(plan.seed, index as u64),
            plan,
            counters,
            kv,
            stats: ClientStats::new(),
        }
    }

    async fn run(mut self, quota: Option<u64>, until: Until) -> ClientStats {
        let mut done = 0u64;
        loop {
            let more = match until {
                Until::Total(_) => done < quota.unwrap_or(0),
                Until::Deadline(deadline) => Instant::now() < deadline,
            };
            if !more {
                return self.stats;
            }
            self.one_request().await;
            done += 1;
        }
    }

    async fn one_request(&mut self) {
        // Two draws per request whatever the mix, so a key sequence depends only on the seed.
        let key = self.plan.key(self.rng.below(self.plan.key_space));
        let is_read = self.rng.unit() < self.plan.read_ratio;
        let started = Instant::now();
        let outcome = if is_read {
            let request = RangeRequest {
                key,
                serializable: self.plan.serializable,
                ..RangeRequest::default()
            };
            tokio::time::timeout(self.plan.timeout, self.kv.range(request))
                .await
                .map(|r| r.map(drop))
        } else {
            let request =
                PutRequest { key, value: self.plan.value.clone(), ..PutRequest::default() };
            tokio::time::timeout(self.plan.timeout, self.kv.put(request)).await.map(|r| r.map(drop))
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match outcome {
            Ok(Ok(())) => {
                let histogram =
                    if is_read { &mut self.stats.reads } else { &mut self.stats.writes };
                histogram.saturating_record(micros.max(1));
                self.counters.ops.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(status)) => {
                let kind = format!("{:?}", status.code());
                self.stats.record_error(kind, status.message().to_string());
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_elapsed) => {
                let message = format!("no answer within {:?}", self.plan.timeout);
                self.stats.record_error("Timeout".to_string(), message);
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Prints a progress line to stderr every `interval` until aborted.
async fn progress(interval: Duration, start: Instant, counters: Arc<Counters>) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let (mut last_ops, mut last_at) = (0u64, start);
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let ops = counters.ops.load(Ordering::Relaxed);
        let errors = counters.errors.load(Ordering::Relaxed);
        let rate = (ops - last_ops) as f64 / now.duration_since(last_at).as_secs_f64();
        eprintln!(
            "bench: {:>7.1}s {ops:>10} ops {rate:>10.0} ops/s {errors:>6} errors",
            now.duration_since(start).as_secs_f64()
        );
        (last_ops, last_at) = (ops, now);
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and the same sequence on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    #[cfg(test)]
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// Generator number `stream` of `seed`. The start is a hash of both: nearby starts (`seed ^ i`)
    /// would give the same sequence shifted by a few steps, as the state only ever adds a
    /// constant.
    fn for_stream(seed: u64, stream: u64) -> SplitMix64 {
        SplitMix64(mix(seed ^ mix(stream.wrapping_add(0x5EED))))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (n > 0), by Lemire's multiply-shift (bias below 2^-32 for our n).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// SplitMix64's output function, a bijective 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes `report` as a table for people.
pub fn write_table(report: &BenchReport, out: &mut impl Write) -> io::Result<()> {
    let cfg = &report.config;
    writeln!(
        out,
        "raft-kv bench: {} clients, {} conns, {} endpoint(s), {}-byte keys in a space of {}, \
         {}-byte values, {:.0}% reads ({})",
        cfg.clients,
        cfg.conns,
        cfg.endpoints.len(),
        cfg.key_size,
        cfg.key_space,
        cfg.value_size,
        cfg.read_ratio * 100.0,
        match cfg.consistency {
            Consistency::Linearizable => "linearizable",
            Consistency::Serializable => "serializable",
        },
    )?;
    writeln!(
        out,
        "{} ops in {:.2} s: {:.1} ops/s, {} errors",
        report.ops, report.elapsed_secs, report.throughput_ops_per_sec, report.errors
    )?;
    for (kind, n) in &report.errors_by_kind {
        let sample = report.error_samples.get(kind).map_or("", String::as_str);
        writeln!(out, "  {kind}: {n} (e.g. {sample:?})")?;
    }
    writeln!(
        out,
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency µs", "count", "mean", "p50", "p90", "p99", "p99.9", "max"
    )?;
    for (name, latency) in [
        ("all", &report.latency_us),
        ("writes", &report.write_latency_us),
        ("reads", &report.read_latency_us),
    ] {
        if latency.count == 0 && name != "all" {
            continue;
        }
        writeln!(
            out,
            "{name:<10} {:>9} {:>9.0} {:>9} {:>9} {:>9} {:>9} {:>9}",
            latency.count,
            latency.mean,
            latency.p50,
            latency.p90,
            latency.p99,
            latency.p999,
            latency.max
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_split_evenly() {
        assert_eq!((0..4).map(|i| share(2000, 4, i)).collect::<Vec<_>>(), [500; 4]);
        assert_eq!((0..3).map(|i| share(10, 3, i)).collect::<Vec<_>>(), [4, 3, 3]);
        assert_eq!((0..3).map(|i| share(1, 3, i)).sum::<u64>(), 1);
    }

    #[test]
    fn keys_are_prefixed_and_padded_to_key_size() {
        let cfg = BenchConfig {
            key_prefix: "b/".into(),
            key_size: 8,
            key_space: 1000,
            ..BenchConfig::default()
        };
        let plan = Plan::new(&cfg);
        assert_eq!(plan.key(7), b"b/000007");
        assert_eq!(plan.key(999), b"b/000999");
        assert_eq!(Plan::new(&BenchConfig::default()).key(42), b"00000042");
    }

    #[test]
    fn sequences_depend_only_on_the_seed() {
        let draws = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..100).map(|_| rng.below(10)).collect::<Vec<_>>()
        };
        assert_eq!(draws(1), draws(1));
        assert_ne!(draws(1), draws(2));
        // Streams of one seed do not overlap: their first draws are not each other's later ones.
        let stream = |i| {
            let mut rng = SplitMix64::for_stream(1, i);
            (0..1000).map(|_| rng.next()).collect::<Vec<_>>()
        };
        let first = stream(0);
        for i in 1..64 {
            let other = stream(i);
            assert!(!first.contains(&other[0]) && !other.contains(&first[0]), "stream {i}");
        }
        // SplitMix64's published first output for seed 0.
        assert_eq!(SplitMix64::new(0).next(), 0xE220_A839_7B1D_CDAF);
        let mut rng = SplitMix64::new(3);
        for _ in 0..10_000 {
            assert!(rng.below(7) < 7);
            assert!((0.0..1.0).contains(&rng.unit()));
        }
    }

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(normalize_endpoint("127.0.0.1:2379").unwrap(), "http://127.0.0.1:2379");
        assert_eq!(normalize_endpoint("http://a:1").unwrap(), "http://a:1");
        assert!(normalize_endpoint("https://a:1").is_err());
        assert!(normalize_endpoint("ftp://a:1").is_err());
    }

    #[test]
    fn the_report_orders_percentiles_and_renders() {
        let mut stats = ClientStats::new();
        for v in 1..=1000 {
            stats.writes.saturating_record(v);
        }
        stats.reads.saturating_record(5000);
        stats.record_error("Unavailable".into(), "leader lost".into());
        stats.record_error("Unavailable".into(), "again".into());
        let report = stats.report(BenchConfig::default(), Duration::from_secs(2));
        assert_eq!((report.ops, report.writes, report.reads, report.errors), (1001, 1000, 1, 2));
        assert_eq!(report.error_samples["Unavailable"], "leader lost");
        let l = &report.latency_us;
        assert!(l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999);
        assert!(l.p999 <= l.max && l.max >= 5000);
        assert!((report.throughput_ops_per_sec - 500.5).abs() < 1e-9);
        let mut table = Vec::new();
        write_table(&report, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("1001 ops in 2.00 s"), "{table}");
        assert!(table.contains("Unavailable: 2"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["latency_us"]["count"], 1001);
    }

    #[tokio::test]
    async fn refuses_a_bad_config_before_connecting() {
        let cfg = BenchConfig { clients: 0, ..BenchConfig::default() };
        assert!(matches!(run(cfg).await, Err(BenchError::Config(_))));
    }
}
