//! `raft-kv bench` and `raft-kv up` against a real etcd 3.4 (Debian `etcd-server`,
//! `etcd-client`): the bench speaks etcd's wire protocol, and `up` starts members with etcd's
//! flags, so etcd itself can stand in for `raft-kv serve`. Each test skips, saying why, when
//! `etcd` or `etcdctl` is not on PATH.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_kv::bench::{self, BenchReport, Latency};
use raft_kv::cli::{BenchConfig, UpConfig, Url, cluster_id, member_id};

/// Whether `etcd` and `etcdctl` can be run; prints why not.
fn have_etcd(test: &str) -> bool {
    for (tool, version) in [("etcd", "--version"), ("etcdctl", "version")] {
        let found = Command::new(tool)
            .arg(version)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!(
                "{test}: skipped: `{tool}` is not on PATH (apt-get install etcd-server etcd-client)"
            );
            return false;
        }
    }
    true
}

#[path = "common/ports.rs"]
mod ports;

/// A port nobody listens on right now (see `common/ports.rs`).
fn free_port() -> u16 {
    ports::free_port().0
}

/// `etcdctl --endpoints=<endpoints> <args>`; panics on failure, returns stdout.
fn etcdctl(endpoints: &str, args: &[&str]) -> String {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .output()
        .expect("run etcdctl");
    assert!(
        output.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Retries `etcdctl put` until it succeeds (the cluster has a leader) or `within` passes.
fn wait_writable(endpoints: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let ok = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                &format!("--endpoints={endpoints}"),
                "--command-timeout=1s",
                "put",
                "probe",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        assert!(started.elapsed() < within, "etcd at {endpoints} not writable within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A single-member etcd in `dir`, killed on drop.
struct Etcd {
    child: Child,
    endpoint: String,
}

impl Etcd {
    fn start(dir: &Path) -> Etcd {
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .arg(format!("--initial-cluster=bench={peer_url}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let etcd = Etcd { child, endpoint: client_url };
        wait_writable(&etcd.endpoint, Duration::from_secs(30));
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_ordered(latency: &Latency) {
    let l = latency;
    assert!(l.count > 0);
    assert!(
        0 < l.min
            && l.min <= l.p50
            && l.p50 <= l.p90
            && l.p90 <= l.p99
            && l.p99 <= l.p999
            && l.p999 <= l.max,
        "{l:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_a_real_etcd() {
    if !have_etcd("bench_drives_a_real_etcd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());

    let cfg = BenchConfig {
        endpoints: vec![etcd.endpoint.clone()],
        clients: 4,
        conns: 2,
        key_space: 100,
        key_prefix: "bench/".into(),
        key_size: 10,
        value_size: 256,
        total: Some(2000),
        progress: Duration::ZERO,
        ..BenchConfig::default()
    };
    let report: BenchReport = bench::run(cfg.clone()).await.expect("bench");
    assert_eq!((report.ops, report.writes, report.reads), (2000, 2000, 0));
    assert_eq!(report.errors, 0, "{:?}", report.error_samples);
    assert_ordered(&report.latency_us);
    assert_eq!(report.latency_us, report.write_latency_us);
    assert!(report.throughput_ops_per_sec > 0.0);

    // 2000 uniform draws from 100 keys miss none (the draws are fixed by the seed).
    let keys = etcdctl(&etcd.endpoint, &["get", "--prefix", "bench/", "--keys-only"]);
    let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
    let want: Vec<String> = (0..100).map(|n| format!("bench/{n:04}")).collect();
    assert_eq!(keys, want);
    let value = etcdctl(&etcd.endpoint, &["get", "bench/0042", "--print-value-only"]);
    assert_eq!(value.trim_end().len(), 256, "{value}");

    // Mixed, serializable reads, and a JSON report.
    let mixed = BenchConfig {
        read_ratio: 0.5,
        consistency: raft_kv::cli::Consistency::Serializable,
        total: Some(400),
        ..cfg
    };
    let report = bench::run(mixed).await.expect("bench");
    assert_eq!((report.ops, report.errors), (400, 0));
    assert_eq!(report.reads + report.writes, 400);
    assert!(report.reads > 100 && report.writes > 100, "{report:?}");
    assert_ordered(&report.read_latency_us);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["config"]["consistency"], "s");
    assert_eq!(json["ops"], 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fails_clearly_without_a_server() {
    let cfg = BenchConfig {
        // Port 1: nothing listens there, and no test picks it (they take 20000-32000), so the
        // connection is refused at once. A free port from `free_port` could be taken by a
        // member another test of this binary starts meanwhile (it happened once in CI).
        endpoints: vec!["127.0.0.1:1".to_string()],
        total: Some(1),
        progress: Duration::ZERO,
        ..BenchConfig::default()
    };
    let err = bench::run(cfg).await.unwrap_err();
    assert!(err.to_string().starts_with("cannot connect to http://127.0.0.1:"), "{err}");
}

/// A stand-in for the `raft-kv` binary that runs etcd with the `serve` flags.
fn etcd_as_serve(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("etcd-serve");
    std::fs::write(&path, "#!/bin/sh\n# drop the `serve` subcommand\nshift\nexec etcd \"$@\"\n")
        .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// An output buffer the test can read while `up` writes to it.
#[derive(Clone, Default)]
struct SharedOut(Arc<Mutex<Vec<u8>>>);

impl SharedOut {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for SharedOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Ports `base, base+1, base+2` (clients) and `base+10..` (peers), all free right now.
fn free_port_block() -> u16 {
    for _ in 0..20 {
        let base = free_port().clamp(1024, 31_980);
        let all_free = (0..3)
            .flat_map(|i| [base + i, base + 10 + i])
            .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free block of ports");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_a_three_member_etcd_cluster_and_stops_it() {
    if !have_etcd("up_runs_a_three_member_etcd_cluster_and_stops_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = free_port_block();
    let cfg = UpConfig {
        data_dir: Some(dir.path().join("cluster")),
        members: 3,
        host: "127.0.0.1".into(),
        client_port: base,
        peer_port: base + 10,
        port_stride: 1,
        initial_cluster_token: "up-test".into(),
        bin: Some(etcd_as_serve(dir.path())),
        ready_timeout: Duration::from_secs(30),
        stop_grace: Duration::from_secs(10),
        serve_args: vec!["--heartbeat-interval=50".into(), "--election-timeout=500".into()],
    };
    let endpoints =
        (0..3).map(|i| format!("http://127.0.0.1:{}", base + i)).collect::<Vec<_>>().join(",");

    let out = SharedOut::default();
    let while_up = {
        let endpoints = endpoints.clone();
        let out = out.clone();
        async move {
            // The shutdown future runs alongside `up` from the start: wait for its "ready".
            let started = Instant::now();
            while !out.text().contains("ready") {
                assert!(started.elapsed() < Duration::from_secs(40), "not ready: {}", out.text());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let report = bench::run(BenchConfig {
                endpoints: endpoints.split(',').map(String::from).collect(),
                clients: 6,
                conns: 3,
                total: Some(300),
                progress: Duration::ZERO,
                ..BenchConfig::default()
            })
            .await
            .expect("bench");
            assert_eq!((report.ops, report.errors), (300, 0), "{:?}", report.error_samples);
            tokio::task::spawn_blocking(move || {
                etcdctl(&endpoints, &["member", "list", "-w", "json"])
            })
            .await
            .unwrap()
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let shutdown = async move {
        let members = while_up.await;
        tx.send(members).unwrap();
    };
    raft_kv::up::run(cfg, &mut out.clone(), shutdown).await.expect("up");
    let out = out.text();
    assert!(out.contains("raft-kv up: ready, leader infra"), "{out}");
    let bare = endpoints.replace("http://", "");
    assert!(out.contains(&format!("etcdctl --endpoints={bare} put foo bar")), "{out}");

    // etcd's ids are the ones raft-kv computes from the same flags.
    let members = rx.await.unwrap();
    let peer = |i: u16| vec![Url::parse(&format!("http://127.0.0.1:{}", base + 10 + i)).unwrap()];
    let ids: Vec<u64> = (0..3).map(|i| member_id(&peer(i), "up-test")).collect();
    let list: serde_json::Value = serde_json::from_str(&members).unwrap();
    let mut listed: Vec<u64> =
        list["members"].as_array().unwrap().iter().map(|m| m["ID"].as_u64().unwrap()).collect();
    listed.sort_unstable();
    let mut want = ids.clone();
    want.sort_unstable();
    assert_eq!(listed, want, "{members}");
    assert_eq!(list["header"]["cluster_id"].as_u64().unwrap(), cluster_id(&ids));

    // Everything stopped: the ports are free again.
    for port in (0..3).flat_map(|i| [base + i, base + 10 + i]) {
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok(), "port {port} still in use");
    }
}

/// A toy server on the generated tonic stubs: KV `Put`/`Range` on single keys in a map, and
/// Maintenance `Status`. Everything else answers `Unimplemented`.
mod toy {
    use std::collections::BTreeMap;
    use std::pin::Pin;
    use std::sync::Mutex;

    use raft_kv::pb::etcdserverpb::*;
    use raft_kv::pb::mvccpb::KeyValue;
    use tonic::{Request, Response, Status};

    pub(crate) const MEMBER_ID: u64 = 0xabc;
    /// key → (value, mod revision).
    type Map = BTreeMap<Vec<u8>, (Vec<u8>, i64)>;
    type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

    fn header(revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader { cluster_id: 0xc1, member_id: MEMBER_ID, revision, raft_term: 1 })
    }

    fn unimplemented<T>(what: &str) -> Result<T, Status> {
        Err(Status::unimplemented(format!("{what} is not implemented by the toy server")))
    }

    #[derive(Default)]
    pub(crate) struct Toy {
        /// The keys and the store revision.
        kvs: Mutex<(Map, i64)>,
    }

    #[tonic::async_trait]
    impl kv_server::Kv for Toy {
        async fn range(&self, r: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
            let r = r.into_inner();
            let kvs = self.kvs.lock().unwrap();
            let found: Vec<KeyValue> = kvs
                .0
                .get(&r.key)
                .map(|(value, rev)| KeyValue {
                    key: r.key.clone(),
                    value: value.clone(),
                    create_revision: *rev,
                    mod_revision: *rev,
                    version: 1,
                    lease: 0,
                })
                .into_iter()
                .collect();
            let count = found.len() as i64;
            Ok(Response::new(RangeResponse {
                header: header(kvs.1),
                kvs: found,
                more: false,
                count,
            }))
        }
        type RangeStreamStream = Stream<RangeStreamResponse>;
        async fn range_stream(
            &self,
            _: Request<RangeRequest>,
        ) -> Result<Response<Self::RangeStreamStream>, Status> {
            unimplemented("RangeStream")
        }
        async fn put(&self, r: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
            let r = r.into_inner();
            let mut kvs = self.kvs.lock().unwrap();
            kvs.1 += 1;
            let revision = kvs.1;
            kvs.0.insert(r.key, (r.value, revision));
            Ok(Response::new(PutResponse { header: header(revision), prev_kv: None }))
        }
        async fn delete_range(
            &self,
            _: Request<DeleteRangeRequest>,
        ) -> Result<Response<DeleteRangeResponse>, Status> {
            unimplemented("DeleteRange")
        }
        async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
            unimplemented("Txn")
        }
        async fn compact(
            &self,
            _: Request<CompactionRequest>,
        ) -> Result<Response<CompactionResponse>, Status> {
            unimplemented("Compact")
        }
    }

    #[tonic::async_trait]
    impl maintenance_server::Maintenance for Toy {
        async fn alarm(&self, _: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
            unimplemented("Alarm")
        }
        async fn status(
            &self,
            _: Request<StatusRequest>,
        ) -> Result<Response<StatusResponse>, Status> {
            Ok(Response::new(StatusResponse {
                header: header(1),
                version: "3.4.0-toy".into(),
                leader: MEMBER_ID,
                raft_term: 1,
                ..StatusResponse::default()
            }))
        }
        async fn defragment(
            &self,
            _: Request<DefragmentRequest>,
        ) -> Result<Response<DefragmentResponse>, Status> {
            unimplemented("Defragment")
        }
        async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
            unimplemented("Hash")
        }
        async fn hash_kv(
            &self,
            _: Request<HashKvRequest>,
        ) -> Result<Response<HashKvResponse>, Status> {
            unimplemented("HashKV")
        }
        type SnapshotStream = Stream<SnapshotResponse>;
        async fn snapshot(
            &self,
            _: Request<SnapshotRequest>,
        ) -> Result<Response<Self::SnapshotStream>, Status> {
            unimplemented("Snapshot")
        }
        async fn move_leader(
            &self,
            _: Request<MoveLeaderRequest>,
        ) -> Result<Response<MoveLeaderResponse>, Status> {
            unimplemented("MoveLeader")
        }
        async fn downgrade(
            &self,
            _: Request<DowngradeRequest>,
        ) -> Result<Response<DowngradeResponse>, Status> {
            unimplemented("Downgrade")
        }
    }
}

/// etcdctl 3.4 against the generated server stubs: the service paths and the messages it uses
/// decode both ways (the `.proto` files are newer than 3.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_speaks_to_the_generated_server() {
    if !have_etcd("etcdctl_speaks_to_the_generated_server") {
        return;
    }
    use raft_kv::pb::etcdserverpb::{kv_server::KvServer, maintenance_server::MaintenanceServer};
    let toy = Arc::new(toy::Toy::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Without `http://`: for per-endpoint commands (`endpoint status`, `endpoint health`)
    // etcdctl 3.4 sends the endpoint as given as the HTTP/2 `:authority`, and h2 (under tonic)
    // refuses "http://host:port" there with PROTOCOL_ERROR. `put` and `get` work either way.
    let endpoint = listener.local_addr().unwrap().to_string();
    let server = tonic::transport::Server::builder()
        .add_service(KvServer::from_arc(toy.clone()))
        .add_service(MaintenanceServer::from_arc(toy))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(server);

    let run = move |args: &'static [&'static str]| {
        let endpoint = endpoint.clone();
        tokio::task::spawn_blocking(move || {
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={endpoint}"))
                .args(args)
                .output()
                .unwrap()
        })
    };
    let put = run(&["put", "foo", "bar"]).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&put.stdout), "OK\n", "{put:?}");
    let get = run(&["get", "foo", "-w", "json"]).await.unwrap();
    let get: serde_json::Value = serde_json::from_slice(&get.stdout).unwrap();
    assert_eq!(get["kvs"][0]["value"], "YmFy", "{get}"); // base64("bar")
    assert_eq!(get["header"]["member_id"], toy::MEMBER_ID);
    let status = run(&["endpoint", "status", "-w", "json"]).await.unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status[0]["Status"]["version"], "3.4.0-toy", "{status}");
    assert_eq!(status[0]["Status"]["leader"], toy::MEMBER_ID);
    let del = run(&["del", "foo"]).await.unwrap();
    assert!(!del.status.success());
    let stderr = String::from_utf8_lossy(&del.stderr);
    assert!(stderr.contains("DeleteRange is not implemented by the toy server"), "{stderr}");
    server.abort();
}
