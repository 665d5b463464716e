//! Helpers for driving real `raft-kv serve` processes with the real `etcdctl` (Debian's
//! `etcd-client`, 3.4): a [`Cluster`] of child processes on free loopback ports with data and logs
//! in a temporary directory, an [`etcdctl`] runner with a hard time limit, and bounded polling.
//!
//! A [`Cluster`] kills its members (SIGKILL) when dropped and, if the test is panicking, first
//! prints the tail of every member's log.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use raft_kv::cli::{Url, member_id};
use serde_json::Value;

mod ports;
use ports::free_port;

/// How long a condition may take to become true before a test fails.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Longest a single `etcdctl` call may run before it is killed and reported as hung.
pub(crate) const CTL_LIMIT: Duration = Duration::from_secs(30);

/// Lines of each member's log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

const BIN: &str = env!("CARGO_BIN_EXE_raft-kv");

/// Tests take this shared; `etcdctl check perf`, which measures latency on a small machine, takes
/// it exclusively so that it never competes with the other clusters for CPU and fsync.
static MACHINE: RwLock<()> = RwLock::new(());

/// Shared use of the machine (any test but the performance check).
pub(crate) fn machine_shared() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Exclusive use of the machine (the performance check).
pub(crate) fn machine_exclusive() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether `etcdctl` can be run. Panics when it cannot, unless `RAFT_KV_SKIP_ETCDCTL=1` is set,
/// in which case it says that `test` is skipped and returns `false`.
pub(crate) fn have_etcdctl(test: &str) -> bool {
    let found = Command::new("etcdctl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var("RAFT_KV_SKIP_ETCDCTL").is_ok_and(|v| v == "1") {
        eprintln!("{test}: skipped: `etcdctl` is not on PATH and RAFT_KV_SKIP_ETCDCTL=1");
        return false;
    }
    panic!(
        "`etcdctl` is not on PATH: install Debian's etcd-client (`apt-get install etcd-client`), \
         or set RAFT_KV_SKIP_ETCDCTL=1 to skip these tests"
    );
}

/// What one `etcdctl` run produced.
#[derive(Debug)]
pub(crate) struct CtlOutput {
    /// `None` when the process did not finish within its time limit (it was killed).
    pub(crate) status: Option<ExitStatus>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl CtlOutput {
    pub(crate) fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs `ETCDCTL_API=3 etcdctl --endpoints=<endpoints> <args>`, feeding it `stdin`, and kills it
/// if it runs longer than `limit`.
pub(crate) fn etcdctl(
    endpoints: &str,
    args: &[&str],
    stdin: Option<&str>,
    limit: Duration,
) -> CtlOutput {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run etcdctl");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).expect("write etcdctl's stdin");
        // Dropping the pipe closes it: etcdctl sees the end of its input.
    }
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for etcdctl") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    CtlOutput { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// `etcdctl` that must succeed; returns its stdout.
pub(crate) fn ctl(endpoints: &str, args: &[&str]) -> String {
    ctl_in(endpoints, args, None)
}

/// `etcdctl` reading `stdin`, that must succeed; returns its stdout.
pub(crate) fn ctl_in(endpoints: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = etcdctl(endpoints, args, stdin, CTL_LIMIT);
    assert!(out.success(), "etcdctl --endpoints={endpoints} {args:?} failed: {out:?}");
    out.stdout
}

/// `etcdctl -w json` that must succeed; returns its parsed stdout.
pub(crate) fn ctl_json(endpoints: &str, args: &[&str]) -> Value {
    let args: Vec<&str> = args.iter().copied().chain(["-w", "json"]).collect();
    parse_json(&ctl(endpoints, &args))
}

pub(crate) fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Calls `attempt` every 100 ms until it returns `Ok`, for at most `within`; then fails the test
/// with `what` and the last error.
pub(crate) fn wait_for<T>(
    what: &str,
    within: Duration,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(e) if started.elapsed() > within => {
                panic!("{what}: not done within {within:?}; last: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `etcdctl` retried (up to [`WAIT`]) until it succeeds, e.g. while the cluster elects a leader;
/// returns the stdout of the successful run.
pub(crate) fn ctl_retry(endpoints: &str, args: &[&str]) -> String {
    wait_for(&format!("etcdctl --endpoints={endpoints} {args:?}"), WAIT, || {
        let out = etcdctl(endpoints, args, None, CTL_LIMIT);
        if out.success() { Ok(out.stdout) } else { Err(format!("{out:?}")) }
    })
}

/// One member's answer to `endpoint status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) endpoint: String,
    pub(crate) member_id: u64,
    /// 0 when the member knows no leader.
    pub(crate) leader: u64,
    pub(crate) raft_term: u64,
    pub(crate) revision: i64,
}

/// `endpoint status -w json` against `endpoints`, one [`Status`] per endpoint that answered.
/// Fails (with etcdctl's output) unless every endpoint answered.
pub(crate) fn endpoint_status(endpoints: &str) -> Result<Vec<Status>, String> {
    let args = ["endpoint", "status", "-w", "json", "--command-timeout=2s"];
    let out = etcdctl(endpoints, &args, None, CTL_LIMIT);
    if !out.success() {
        return Err(format!("{out:?}"));
    }
    let json: Value = serde_json::from_str(&out.stdout).map_err(|e| format!("{e}: {out:?}"))?;
    let entries = json.as_array().ok_or_else(|| format!("not an array: {json}"))?;
    let statuses: Vec<Status> = entries
        .iter()
        .map(|e| {
            let s = &e["Status"];
            Status {
                endpoint: e["Endpoint"].as_str().unwrap().to_string(),
                member_id: s["header"]["member_id"].as_u64().unwrap(),
                leader: s["leader"].as_u64().unwrap_or(0),
                raft_term: s["raftTerm"].as_u64().unwrap_or(0),
                revision: s["header"]["revision"].as_i64().unwrap_or(0),
            }
        })
        .collect();
    if statuses.len() != endpoints.split(',').count() {
        return Err(format!("not every endpoint answered: {statuses:?}"));
    }
    Ok(statuses)
}

/// A port nobody listened on a moment ago. The listener is returned so that a caller picking
/// several ports does not get the same one twice; drop it before the port is used.
/// `GET path` from an `http://host:port` base URL: the status code and the body.
pub(crate) fn http_get(base: &str, path: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics URL");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the HTTP response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status");
    (code, body.to_string())
}

/// One `raft-kv serve` process and the flags to (re)start it with.
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) client_url: String,
    pub(crate) peer_url: String,
    /// `--listen-metrics-urls` (`/metrics`, `/health`).
    pub(crate) metrics_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    initial_cluster: String,
    initial_cluster_state: &'static str,
    child: Option<Child>,
}

impl Member {
    /// The member's client endpoint as `etcdctl --endpoints` takes it.
    pub(crate) fn endpoint(&self) -> String {
        self.client_url.trim_start_matches("http://").to_string()
    }
}

/// A set of members sharing an `--initial-cluster-token`, in one temporary directory.
pub(crate) struct Cluster {
    // Dropped after `members` are killed (see `Drop`), so logs can be printed first.
    dir: tempfile::TempDir,
    pub(crate) token: String,
    pub(crate) members: Vec<Member>,
}

impl Cluster {
    /// Starts `size` members `infra1..` of a new cluster and waits until every member serves,
    /// they agree on a leader, and `member list` shows them all with names.
    pub(crate) fn start(test: &str, size: usize) -> Cluster {
        let dir = tempfile::Builder::new().prefix(&format!("raft-kv-{test}-")).tempdir().unwrap();
        let token = format!("{test}-token");
        let ports: Vec<_> = (0..size).map(|_| (free_port(), free_port())).collect();
        let peers: Vec<(String, String, String)> = ports
            .iter()
            .enumerate()
            .map(|(i, ((client, _), (peer, _)))| {
                (
                    format!("infra{}", i + 1),
                    format!("http://127.0.0.1:{client}"),
                    format!("http://127.0.0.1:{peer}"),
                )
            })
            .collect();
        drop(ports);
        let initial_cluster: Vec<String> =
            peers.iter().map(|(name, _, peer)| format!("{name}={peer}")).collect();
        let initial_cluster = initial_cluster.join(",");
        let mut cluster = Cluster { dir, token, members: Vec::new() };
        for (name, client_url, peer_url) in peers {
            cluster.push_member(name, client_url, peer_url, initial_cluster.clone(), "new");
        }
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster.wait_ready(&(0..size).collect::<Vec<_>>());
        cluster
    }

    /// A client URL and a peer URL on free ports, for a member to be added.
    pub(crate) fn new_urls() -> (String, String) {
        let ((client, _c), (peer, _p)) = (free_port(), free_port());
        (format!("http://127.0.0.1:{client}"), format!("http://127.0.0.1:{peer}"))
    }

    /// Starts a member joining the running cluster (`--initial-cluster-state existing`), after
    /// `etcdctl member add`; returns its index.
    pub(crate) fn join(
        &mut self,
        name: &str,
        client_url: &str,
        peer_url: &str,
        initial_cluster: &str,
    ) -> usize {
        self.push_member(
            name.to_string(),
            client_url.to_string(),
            peer_url.to_string(),
            initial_cluster.to_string(),
            "existing",
        );
        let i = self.members.len() - 1;
        self.spawn(i);
        i
    }

    fn push_member(
        &mut self,
        name: String,
        client_url: String,
        peer_url: String,
        initial_cluster: String,
        initial_cluster_state: &'static str,
    ) {
        let data_dir = self.dir.path().join(&name);
        let log = self.dir.path().join(format!("{name}.log"));
        let metrics_url = format!("http://127.0.0.1:{}", free_port().0);
        self.members.push(Member {
            name,
            client_url,
            peer_url,
            metrics_url,
            data_dir,
            log,
            initial_cluster,
            initial_cluster_state,
            child: None,
        });
    }

    /// Starts member `i`'s process (again) with its flags and data directory; its output is
    /// appended to its log.
    pub(crate) fn spawn(&mut self, i: usize) {
        let token = self.token.clone();
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "{} is already running", m.name);
        let mut log =
            std::fs::OpenOptions::new().create(true).append(true).open(&m.log).expect("open log");
        writeln!(log, "===== test: starting {} =====", m.name).unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url])
            .args(["--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url])
            .args(["--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &m.initial_cluster])
            .args(["--initial-cluster-state", m.initial_cluster_state])
            .args(["--initial-cluster-token", &token])
            .args(["--listen-metrics-urls", &m.metrics_url])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start raft-kv serve");
        m.child = Some(child);
    }

    /// SIGKILL to member `i`, and waits for it to be gone.
    pub(crate) fn kill(&mut self, i: usize) {
        let mut child = self.members[i].child.take().expect("member is running");
        child.kill().expect("kill");
        child.wait().expect("wait");
    }

    /// Waits (up to [`WAIT`]) for member `i` to exit by itself; returns how it exited.
    pub(crate) fn wait_exit(&mut self, i: usize) -> ExitStatus {
        let m = &mut self.members[i];
        let child = m.child.as_mut().expect("member is running");
        let status = wait_for(&format!("{} exits by itself", m.name), WAIT, || {
            child.try_wait().unwrap().ok_or_else(|| "still running".to_string())
        });
        m.child = None;
        status
    }

    /// Whether member `i`'s process is running.
    pub(crate) fn running(&mut self, i: usize) -> bool {
        match &mut self.members[i].child {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// The client endpoints of `members`, comma-separated for `etcdctl --endpoints`.
    pub(crate) fn endpoints(&self, members: &[usize]) -> String {
        let list: Vec<String> = members.iter().map(|&i| self.members[i].endpoint()).collect();
        list.join(",")
    }

    /// The id etcd (and raft-kv) gives member `i` of the initial cluster.
    pub(crate) fn initial_member_id(&self, i: usize) -> u64 {
        member_id(&[Url::parse(&self.members[i].peer_url).unwrap()], &self.token)
    }

    /// Waits until each of `members` answers `endpoint status`, all name the same leader (one of
    /// them) in the same term, and `member list` shows every one of them as started.
    pub(crate) fn wait_ready(&self, members: &[usize]) -> Vec<Status> {
        let endpoints = self.endpoints(members);
        wait_for(&format!("cluster at {endpoints} ready"), WAIT, || {
            let statuses = endpoint_status(&endpoints)?;
            let ids: Vec<u64> = statuses.iter().map(|s| s.member_id).collect();
            let leader = statuses[0].leader;
            let term = statuses[0].raft_term;
            if !ids.contains(&leader)
                || statuses.iter().any(|s| s.leader != leader || s.raft_term != term)
            {
                return Err(format!("no agreed leader: {statuses:?}"));
            }
            let out = etcdctl(&endpoints, &["member", "list"], None, CTL_LIMIT);
            let names: Vec<&str> = members.iter().map(|&i| self.members[i].name.as_str()).collect();
            let started = out
                .stdout
                .lines()
                .filter(|l| {
                    let fields: Vec<&str> = l.split(", ").collect();
                    fields.len() == 6 && fields[1] == "started" && names.contains(&fields[2])
                })
                .count();
            if !out.success() || started != members.len() {
                return Err(format!("not all started: {out:?}"));
            }
            Ok(statuses)
        })
    }

    /// Index of the member whose id is `id`, among `members`, using their `endpoint status`.
    pub(crate) fn index_of(&self, statuses: &[Status], id: u64) -> usize {
        let s = statuses.iter().find(|s| s.member_id == id).expect("member with that id");
        self.members.iter().position(|m| m.endpoint() == s.endpoint).unwrap()
    }

    fn print_logs(&self) {
        for m in &self.members {
            eprintln!(
                "===== last {LOG_TAIL_LINES} lines of {} ({}) =====",
                m.name,
                m.log.display()
            );
            eprintln!("{}", tail(&m.log, LOG_TAIL_LINES));
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read: {e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
