//! `raft-kv up`: a local cluster in one command.
//!
//! Starts [`UpConfig::members`] child processes running `raft-kv serve` (etcd's flags, so any
//! binary that takes them can stand in, etcd included), each in its own process group with its
//! output in `<data-dir>/<name>.log`. It prints the endpoints, waits until every member answers
//! a gRPC `Maintenance.Status` and one of them reports a leader (or reports who did not, after
//! [`UpConfig::ready_timeout`]), prints an `etcdctl` line to try, then watches: a member that
//! exits is reported with its exit status, and Ctrl-C or SIGTERM stops all of them (SIGTERM,
//! then SIGKILL after [`UpConfig::stop_grace`]).
//!
//! The members are in their own process groups so that a Ctrl-C in the terminal reaches only
//! `up`, which then stops them in order. If `up` itself is killed with SIGKILL they keep running;
//! stop them with `kill <pid>` (the pids are printed).

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::process::Command;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

use crate::cli::UpConfig;
use crate::pb::etcdserverpb::StatusRequest;
use crate::pb::etcdserverpb::maintenance_client::MaintenanceClient;

/// Pause between two rounds of readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// Deadline of one readiness probe (connect and `Status`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait for a member to be reaped after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Why `up` failed.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The options break a rule of [`UpConfig::validate`].
    #[error("{0}")]
    Config(String),
    /// The data directory could not be created, or a log file opened.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A port the cluster needs is taken.
    #[error(
        "{member} needs port {port}, which is in use ({source}); is another cluster or etcd running? Choose other ports with --client-port/--peer-port"
    )]
    PortInUse {
        /// The member.
        member: String,
        /// The port.
        port: u16,
        /// The bind error.
        source: io::Error,
    },
    /// A member could not be started.
    #[error("cannot start {member} with {binary}: {source}")]
    Spawn {
        /// The member.
        member: String,
        /// The binary.
        binary: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A member exited while the cluster was starting.
    #[error("{member} exited during startup ({status}); see {log}")]
    MemberExited {
        /// The member.
        member: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
    },
    /// The cluster was not ready in time; each entry names a member and what was wrong.
    #[error("the cluster was not ready within {waited:?}: {}", not_ready.join("; "))]
    NotReady {
        /// The wait.
        waited: Duration,
        /// `"<member> (<url>): <reason>; see <log>"` for each member not ready, or the reason
        /// there is no leader.
        not_ready: Vec<String>,
    },
    /// Every member exited.
    #[error("every member has exited")]
    AllExited,
    /// Writing the endpoints to the output failed, or installing the signal handler did.
    #[error("{0}")]
    Output(#[from] io::Error),
}

/// One member of the local cluster, as it will be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberPlan {
    /// `--name`.
    pub name: String,
    /// Its client URL.
    pub client_url: String,
    /// Its peer URL.
    pub peer_url: String,
    /// Its `--data-dir`.
    pub data_dir: PathBuf,
    /// Where its stdout and stderr go.
    pub log_file: PathBuf,
    /// The arguments of the binary, starting with `serve`.
    pub args: Vec<String>,
}

/// The members `cfg` describes, with data under `base_dir`. `cfg` must be valid.
pub fn plan(cfg: &UpConfig, base_dir: &Path) -> Vec<MemberPlan> {
    let host = if cfg.host.contains(':') && !cfg.host.starts_with('[') {
        format!("[{}]", cfg.host)
    } else {
        cfg.host.clone()
    };
    let urls: Vec<(String, String, String)> = (0..cfg.members)
        .map(|i| {
            let (client, peer) = cfg.ports(i).expect("validated ports");
            (
                format!("infra{}", i + 1),
                format!("http://{host}:{client}"),
                format!("http://{host}:{peer}"),
            )
        })
        .collect();
    let initial_cluster =
        urls.iter().map(|(name, _, peer)| format!("{name}={peer}")).collect::<Vec<_>>().join(",");
    urls.into_iter()
        .map(|(name, client_url, peer_url)| {
            let data_dir = base_dir.join(&name);
            let mut args: Vec<String> = [
                "serve",
                "--name",
                &name,
                "--data-dir",
                &data_dir.to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-token",
                &cfg.initial_cluster_token,
                "--initial-cluster-state",
                "new",
            ]
            .map(String::from)
            .into();
            args.extend(cfg.serve_args.iter().cloned());
            MemberPlan {
                log_file: base_dir.join(format!("{name}.log")),
                name,
                client_url,
                peer_url,
                data_dir,
                args,
            }
        })
        .collect()
}

/// Runs `raft-kv up` until Ctrl-C or SIGTERM, printing the endpoints to stdout.
pub async fn up(cfg: UpConfig) -> Result<(), UpError> {
    let mut stdout = io::stdout();
    run(cfg, &mut stdout, shutdown_signal()).await
}

/// Waits for Ctrl-C or SIGTERM; if the handlers cannot be installed, waits forever (the error
/// is logged).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Runs a local cluster until `shutdown` completes (or every member exits), writing the
/// endpoints and the `etcdctl` line to `out` and member events to stderr. Stops every member
/// before returning, also on error.
pub async fn run(
    cfg: UpConfig,
    out: &mut (dyn Write + Send),
    shutdown: impl Future<Output = ()>,
) -> Result<(), UpError> {
    cfg.validate().map_err(UpError::Config)?;
    let base_dir = data_dir(&cfg)?;
    let members = plan(&cfg, &base_dir);
    check_ports_free(&cfg, &members)?;
    let binary = match &cfg.bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()
            .map_err(|source| UpError::Io { path: "current executable".into(), source })?,
    };
    let mut supervisor = Supervisor::new();
    for member in &members {
        let command = member_command(&binary, member)?;
        supervisor.spawn(&member.name, command).map_err(|source| UpError::Spawn {
            member: member.name.clone(),
            binary: binary.clone(),
            source,
        })?;
    }
    writeln!(out, "raft-kv up: {} members, data in {}", members.len(), base_dir.display())?;
    for (member, pid) in members.iter().zip(supervisor.pids()) {
        writeln!(
            out,
            "  {:<8} pid {pid:<7} client {:<24} peer {:<24} log {}",
            member.name,
            member.client_url,
            member.peer_url,
            member.log_file.display()
        )?;
    }

    tokio::pin!(shutdown);
    let ready = tokio::select! {
        ready = wait_ready(&members, &mut supervisor, cfg.ready_timeout) => Some(ready),
        () = &mut shutdown => None,
    };
    let result = match ready {
        None => Ok(()),
        Some(Err(e)) => Err(e),
        Some(Ok(leader)) => {
            print_ready(out, &members, &leader)?;
            watch(&members, &mut supervisor, shutdown).await
        }
    };
    eprintln!("raft-kv up: stopping {} member(s)", supervisor.running().len());
    for stopped in supervisor.stop(cfg.stop_grace).await {
        eprintln!("raft-kv up: {stopped}");
    }
    result
}

/// The base directory: `--data-dir` (created if missing), or a new one under the temp dir.
fn data_dir(cfg: &UpConfig) -> Result<PathBuf, UpError> {
    let (path, result) = match &cfg.data_dir {
        Some(path) => (path.clone(), fs::create_dir_all(path)),
        None => {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let path = std::env::temp_dir().join(format!(
                "raft-kv-up-{}-{:x}",
                std::process::id(),
                nanos & 0xFFFF_FFFF
            ));
            let result = fs::create_dir(&path);
            (path, result)
        }
    };
    result.map_err(|source| UpError::Io { path: path.clone(), source })?;
    Ok(path)
}

/// Fails early, naming the member and port, if a port is taken.
fn check_ports_free(cfg: &UpConfig, members: &[MemberPlan]) -> Result<(), UpError> {
    for (i, member) in members.iter().enumerate() {
        let (client, peer) = cfg.ports(i).expect("validated ports");
        for port in [client, peer] {
            let host = cfg.host.trim_start_matches('[').trim_end_matches(']');
            std::net::TcpListener::bind((host, port)).map_err(|source| UpError::PortInUse {
                member: member.name.clone(),
                port,
                source,
            })?;
        }
    }
    Ok(())
}

/// The command for one member: its own process group, output appended to its log file.
fn member_command(binary: &Path, member: &MemberPlan) -> Result<Command, UpError> {
    let open_log = || -> io::Result<(File, File)> {
        let log = OpenOptions::new().create(true).append(true).open(&member.log_file)?;
        let err = log.try_clone()?;
        Ok((log, err))
    };
    let (log, err) =
        open_log().map_err(|source| UpError::Io { path: member.log_file.clone(), source })?;
    let mut command = Command::new(binary);
    command.args(&member.args).stdin(Stdio::null()).stdout(log).stderr(err);
    Ok(command)
}

/// Who leads, once every member answered `Status`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Leader {
    /// Name of the leader (or its hex id if no member has that id).
    name: String,
}

/// Probes every member until all answer `Status` and one reports a leader. Fails if a member
/// exits, or after `timeout` with what each member lacked.
async fn wait_ready(
    members: &[MemberPlan],
    supervisor: &mut Supervisor,
    timeout: Duration,
) -> Result<Leader, UpError> {
    let started = Instant::now();
    // Per member: Ok((its id, the leader it reports)) once it answered, Err(last problem).
    let mut answers: Vec<Result<(u64, u64), String>> =
        vec![Err("not probed yet".into()); members.len()];
    loop {
        if let Some(exit) = supervisor.try_exit() {
            let log = members
                .iter()
                .find(|m| m.name == exit.name)
                .map(|m| m.log_file.clone())
                .unwrap_or_default();
            return Err(UpError::MemberExited { member: exit.name, status: exit.status, log });
        }
        // Ask again whoever has not answered or knew no leader when it did (it answers before
        // the first election ends).
        for (member, answer) in members.iter().zip(answers.iter_mut()) {
            if !matches!(answer, Ok((_, leader)) if *leader != 0) {
                *answer = probe(&member.client_url).await;
            }
        }
        let leader = answers
            .iter()
            .filter_map(|a| a.as_ref().ok())
            .map(|&(_, leader)| leader)
            .find(|&leader| leader != 0);
        if let (true, Some(leader)) = (answers.iter().all(Result::is_ok), leader) {
            let name = members
                .iter()
                .zip(&answers)
                .find(|(_, a)| matches!(a, Ok((id, _)) if *id == leader))
                .map_or_else(|| format!("{leader:x}"), |(m, _)| m.name.clone());
            return Ok(Leader { name });
        }
        if started.elapsed() >= timeout {
            let mut not_ready: Vec<String> = members
                .iter()
                .zip(&answers)
                .filter_map(|(m, a)| {
                    a.as_ref().err().map(|e| {
                        format!(
                            "{} ({}) did not answer: {e}; see {}",
                            m.name,
                            m.client_url,
                            m.log_file.display()
                        )
                    })
                })
                .collect();
            if not_ready.is_empty() {
                not_ready.push("every member answered, but none reports a leader".into());
            }
            return Err(UpError::NotReady { waited: timeout, not_ready });
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// One `Maintenance.Status` call: (the member's id, the leader it reports).
async fn probe(client_url: &str) -> Result<(u64, u64), String> {
    let endpoint = Endpoint::from_shared(client_url.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(PROBE_TIMEOUT)
        .timeout(PROBE_TIMEOUT);
    let call = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("connect: {}", crate::bench::error_chain(&e)))?;
        let status = MaintenanceClient::new(channel)
            .status(StatusRequest {})
            .await
            .map_err(|s| format!("Status: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        let id = status.header.map_or(0, |h| h.member_id);
        Ok((id, status.leader))
    };
    tokio::time::timeout(PROBE_TIMEOUT * 2, call).await.unwrap_or_else(|_| Err("timed out".into()))
}

/// Prints the endpoints and commands to try. The `etcdctl` lines use `host:port` without
/// `http://`: for per-endpoint commands (`endpoint status`) etcdctl 3.4 sends an endpoint with
/// a scheme as the HTTP/2 `:authority`, which tonic's HTTP/2 server refuses.
fn print_ready(
    out: &mut (dyn Write + Send),
    members: &[MemberPlan],
    leader: &Leader,
) -> io::Result<()> {
    let endpoints = members.iter().map(|m| m.client_url.as_str()).collect::<Vec<_>>().join(",");
    let bare = endpoints.replace("http://", "");
    writeln!(out, "raft-kv up: ready, leader {}", leader.name)?;
    writeln!(out, "endpoints: {endpoints}")?;
    writeln!(out, "try:")?;
    writeln!(out, "  ETCDCTL_API=3 etcdctl --endpoints={bare} put foo bar")?;
    writeln!(out, "  ETCDCTL_API=3 etcdctl --endpoints={bare} get foo")?;
    writeln!(out, "  ETCDCTL_API=3 etcdctl --endpoints={bare} endpoint status -w table")?;
    writeln!(out, "  raft-kv bench --endpoints={bare} --clients=64 --duration=10s")?;
    writeln!(out, "Ctrl-C stops the cluster.")?;
    out.flush()
}

/// Reports members that exit until `shutdown` completes; fails if all have exited.
async fn watch(
    members: &[MemberPlan],
    supervisor: &mut Supervisor,
    shutdown: impl Future<Output = ()>,
) -> Result<(), UpError> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            exit = supervisor.next_exit() => {
                let Some(exit) = exit else { return Err(UpError::AllExited) };
                let log = members.iter().find(|m| m.name == exit.name).map(|m| m.log_file.display().to_string());
                eprintln!(
                    "raft-kv up: {} exited unexpectedly ({}); see {}",
                    exit.name,
                    exit.status,
                    log.unwrap_or_default()
                );
                if supervisor.running().is_empty() {
                    return Err(UpError::AllExited);
                }
            }
        }
    }
}

/// A child that exited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The name it was spawned with.
    pub name: String,
    /// Its exit status, as `exit status: 3` or `signal: 15 (SIGTERM)`, or the error waiting.
    pub status: String,
}

/// How [`Supervisor::stop`] ended a child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// The child.
    pub name: String,
    /// Its exit status, as in [`Exit::status`].
    pub status: String,
    /// `Some(true)` if it was killed (SIGKILL) after the grace period, `Some(false)` if it
    /// exited after SIGTERM, `None` if it had exited before the stop.
    pub killed: Option<bool>,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self.killed {
            None => "had already exited",
            Some(false) => "stopped",
            Some(true) => "killed after the grace period",
        };
        write!(f, "{} {how} ({})", self.name, self.status)
    }
}

/// A child as the supervisor tracks it.
struct Child {
    name: String,
    pid: u32,
    /// `None` while it runs.
    exit: Option<String>,
    /// Set when `stop` sent SIGTERM to it.
    terminated: bool,
}

/// Child processes, each in its own process group, watched by one task apiece that reports
/// their exit. Signals go to the child's process group through `kill(1)` (no `libc` here).
/// Call [`Supervisor::stop`] before dropping it; children still running when the tokio runtime
/// shuts down are killed (SIGKILL) as their watching tasks are dropped.
pub struct Supervisor {
    children: Vec<Child>,
    exits_tx: mpsc::UnboundedSender<(usize, String)>,
    exits: mpsc::UnboundedReceiver<(usize, String)>,
}

impl Default for Supervisor {
    fn default() -> Supervisor {
        Supervisor::new()
    }
}

impl Supervisor {
    /// No children yet.
    pub fn new() -> Supervisor {
        let (exits_tx, exits) = mpsc::unbounded_channel();
        Supervisor { children: Vec::new(), exits_tx, exits }
    }

    /// Starts `command` as child `name` in a new process group. Must run in a tokio runtime.
    pub fn spawn(&mut self, name: &str, mut command: Command) -> io::Result<()> {
        let mut child = command.process_group(0).kill_on_drop(true).spawn()?;
        let pid =
            child.id().ok_or_else(|| io::Error::other("child exited before its pid was read"))?;
        let index = self.children.len();
        let exits = self.exits_tx.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            // The supervisor may be gone; then nobody needs to know.
            let _ = exits.send((index, status));
        });
        self.children.push(Child { name: name.to_string(), pid, exit: None, terminated: false });
        Ok(())
    }

    /// Pids of the children, in spawn order.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.pid).collect()
    }

    /// Names of the children still running.
    pub fn running(&self) -> Vec<&str> {
        self.children.iter().filter(|c| c.exit.is_none()).map(|c| c.name.as_str()).collect()
    }

    fn record(&mut self, (index, status): (usize, String)) -> Exit {
        let child = &mut self.children[index];
        child.exit = Some(status.clone());
        Exit { name: child.name.clone(), status }
    }

    /// The next child to exit, or `None` once none is running.
    pub async fn next_exit(&mut self) -> Option<Exit> {
        if self.running().is_empty() {
            return None;
        }
        let exit = self.exits.recv().await.expect("the supervisor holds a sender");
        Some(self.record(exit))
    }

    /// A child that has exited since the last call, if any, without waiting.
    pub fn try_exit(&mut self) -> Option<Exit> {
        let exit = self.exits.try_recv().ok()?;
        Some(self.record(exit))
    }

    /// Stops every running child: SIGTERM to its process group, then SIGKILL to those still
    /// running after `grace`. Returns how each child ended (all children, in spawn order).
    pub async fn stop(&mut self, grace: Duration) -> Vec<Stopped> {
        while self.try_exit().is_some() {}
        let already: Vec<bool> = self.children.iter().map(|c| c.exit.is_some()).collect();
        for child in self.children.iter_mut().filter(|c| c.exit.is_none()) {
            child.terminated = true;
            signal_group(child.pid, "TERM").await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !self.running().is_empty() {
            match tokio::time::timeout_at(deadline, self.exits.recv()).await {
                Ok(Some(exit)) => {
                    self.record(exit);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let stragglers: Vec<u32> =
            self.children.iter().filter(|c| c.exit.is_none()).map(|c| c.pid).collect();
        for &pid in &stragglers {
            signal_group(pid, "KILL").await;
        }
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        while !self.running().is_empty() {
            match tokio::time::timeout_at(deadline, self.exits.recv()).await {
                Ok(Some(exit)) => {
                    self.record(exit);
                }
                Ok(None) | Err(_) => break,
            }
        }
        self.children
            .iter()
            .zip(already)
            .map(|(c, already)| Stopped {
                name: c.name.clone(),
                status: c.exit.clone().unwrap_or_else(|| "still running after SIGKILL".into()),
                killed: (!already).then(|| stragglers.contains(&c.pid)),
            })
            .collect()
    }
}

/// Sends `SIG<signal>` to the process group `pgid` with `kill(1)`. Failures (the group is
/// already gone) are logged at debug level: the caller waits for the exit either way.
async fn signal_group(pgid: u32, signal: &str) {
    let result = Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match result {
        Ok(status) if status.success() => {}
        Ok(status) => tracing::debug!(pgid, signal, %status, "kill failed (already exited?)"),
        Err(e) => tracing::warn!(pgid, signal, error = %e, "cannot run kill(1)"),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    fn config(members: usize) -> UpConfig {
        UpConfig {
            data_dir: None,
            members,
            host: "127.0.0.1".into(),
            client_port: 2379,
            peer_port: 2380,
            port_stride: 10_000,
            initial_cluster_token: "tok".into(),
            bin: None,
            ready_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            serve_args: vec!["--snapshot-count=5".into()],
        }
    }

    /// Whether process `pid` exists (`kill -0`).
    fn alive(pid: u32) -> bool {
        std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn plans_members_with_etcd_flags() {
        let members = plan(&config(3), Path::new("/d"));
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["infra1", "infra2", "infra3"]);
        let m = &members[1];
        assert_eq!(m.client_url, "http://127.0.0.1:12379");
        assert_eq!(m.peer_url, "http://127.0.0.1:12380");
        assert_eq!(m.data_dir, Path::new("/d/infra2"));
        assert_eq!(m.log_file, Path::new("/d/infra2.log"));
        let cluster = "infra1=http://127.0.0.1:2380,infra2=http://127.0.0.1:12380,\
                       infra3=http://127.0.0.1:22380";
        let want = [
            "serve",
            "--name",
            "infra2",
            "--data-dir",
            "/d/infra2",
            "--listen-client-urls",
            "http://127.0.0.1:12379",
            "--advertise-client-urls",
            "http://127.0.0.1:12379",
            "--listen-peer-urls",
            "http://127.0.0.1:12380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:12380",
            "--initial-cluster",
            cluster,
            "--initial-cluster-token",
            "tok",
            "--initial-cluster-state",
            "new",
            "--snapshot-count=5",
        ];
        assert_eq!(m.args, want);

        // The plan is a valid `serve` command line, and its ids are etcd's.
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(std::iter::once("raft-kv").chain(want)).unwrap();
        let crate::cli::Command::Serve(args) = cli.command else { panic!("not serve") };
        let cfg = args.into_config().unwrap();
        assert_eq!(cfg.initial_cluster.len(), 3);
        assert_eq!(cfg.name, "infra2");

        let mut v6 = config(1);
        v6.host = "::1".into();
        assert_eq!(plan(&v6, Path::new("/d"))[0].client_url, "http://[::1]:2379");
    }

    #[tokio::test]
    async fn stop_sends_sigterm_and_reports_each_child() {
        let mut sup = Supervisor::new();
        sup.spawn("a", sh("exec sleep 30")).unwrap();
        // A shell whose own child must go too: the signal goes to the process group.
        sup.spawn("b", sh("sleep 30; echo unreachable")).unwrap();
        let pids = sup.pids();
        assert_eq!(sup.running(), ["a", "b"]);
        let started = Instant::now();
        let stopped = sup.stop(Duration::from_secs(10)).await;
        assert!(started.elapsed() < Duration::from_secs(5), "SIGTERM was enough");
        assert_eq!(stopped.len(), 2);
        for s in &stopped {
            assert_eq!(s.killed, Some(false), "{s}");
            assert!(s.status.contains("SIGTERM"), "{s}");
        }
        assert_eq!(stopped[0].to_string(), "a stopped (signal: 15 (SIGTERM))");
        assert!(sup.running().is_empty());
        assert!(pids.iter().all(|&pid| !alive(pid)));
        assert_eq!(sup.next_exit().await, None);
    }

    #[tokio::test]
    async fn stop_kills_a_child_that_ignores_sigterm() {
        let mut sup = Supervisor::new();
        // `trap "" TERM` makes the shell, and the sleep it execs, ignore SIGTERM.
        sup.spawn("stubborn", sh("trap '' TERM; exec sleep 30")).unwrap();
        sup.spawn("polite", sh("exec sleep 30")).unwrap();
        // Give the shell time to install the trap.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stopped = sup.stop(Duration::from_millis(500)).await;
        assert_eq!(stopped[0].killed, Some(true), "{}", stopped[0]);
        assert!(stopped[0].status.contains("SIGKILL"), "{}", stopped[0]);
        assert_eq!(stopped[1].killed, Some(false), "{}", stopped[1]);
        assert!(sup.pids().iter().all(|&pid| !alive(pid)));
    }

    #[tokio::test]
    async fn reports_a_child_that_exits_on_its_own() {
        let mut sup = Supervisor::new();
        sup.spawn("quitter", sh("exit 3")).unwrap();
        sup.spawn("stayer", sh("exec sleep 30")).unwrap();
        let exit = sup.next_exit().await.unwrap();
        assert_eq!(exit, Exit { name: "quitter".into(), status: "exit status: 3".into() });
        assert_eq!(sup.running(), ["stayer"]);
        let stopped = sup.stop(Duration::from_secs(5)).await;
        assert_eq!(stopped[0].killed, None);
        assert_eq!(stopped[0].to_string(), "quitter had already exited (exit status: 3)");
        assert_eq!(stopped[1].killed, Some(false));
    }

    /// A stand-in `raft-kv` binary: a shell script.
    fn fake_binary(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("fake-raft-kv");
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A configuration on ports the OS just handed out (free, most likely).
    fn local_config(dir: &Path, bin: PathBuf) -> UpConfig {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let base = port.min(60_000);
        UpConfig {
            data_dir: Some(dir.join("data")),
            client_port: base,
            peer_port: base + 10,
            port_stride: 1,
            bin: Some(bin),
            ready_timeout: Duration::from_millis(800),
            stop_grace: Duration::from_secs(5),
            serve_args: Vec::new(),
            ..config(3)
        }
    }

    #[tokio::test]
    async fn names_the_members_that_never_answer_and_stops_them() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_binary(dir.path(), "echo \"$@\"; exec sleep 30");
        let cfg = local_config(dir.path(), bin);
        let mut out = Vec::new();
        let err = run(cfg, &mut out, std::future::pending()).await.unwrap_err();
        let UpError::NotReady { not_ready, .. } = &err else { panic!("{err}") };
        assert_eq!(not_ready.len(), 3, "{err}");
        for (i, line) in not_ready.iter().enumerate() {
            assert!(line.starts_with(&format!("infra{} (http://127.0.0.1:", i + 1)), "{line}");
            assert!(line.contains("infra"), "{line}");
        }
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("raft-kv up: 3 members, data in"), "{out}");
        let pids: Vec<u32> = out
            .lines()
            .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "pid").nth(1))
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(pids.len(), 3, "{out}");
        assert!(pids.iter().all(|&pid| !alive(pid)), "members stopped");
        // Each member's output went to its log, with its arguments.
        let log = fs::read_to_string(dir.path().join("data/infra2.log")).unwrap();
        assert!(log.starts_with("serve --name infra2 --data-dir "), "{log}");
    }

    #[tokio::test]
    async fn reports_a_member_that_exits_during_startup() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_binary(dir.path(), "[ \"$3\" = infra2 ] && exit 7; exec sleep 30");
        let mut cfg = local_config(dir.path(), bin);
        cfg.ready_timeout = Duration::from_secs(20);
        let err = run(cfg, &mut Vec::new(), std::future::pending()).await.unwrap_err();
        match err {
            UpError::MemberExited { member, status, log } => {
                assert_eq!((member.as_str(), status.as_str()), ("infra2", "exit status: 7"));
                assert!(log.ends_with("infra2.log"));
            }
            other => panic!("{other}"),
        }
    }

    /// A `Maintenance` server whose `Status` reports no leader for its first `calls_before`
    /// calls, then itself.
    struct LateLeader {
        id: u64,
        calls: std::sync::atomic::AtomicU32,
        calls_before: u32,
    }

    type Stream<T> =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>>;

    #[tonic::async_trait]
    impl crate::pb::etcdserverpb::maintenance_server::Maintenance for LateLeader {
        async fn status(
            &self,
            _: tonic::Request<StatusRequest>,
        ) -> Result<tonic::Response<crate::pb::etcdserverpb::StatusResponse>, tonic::Status>
        {
            let calls = self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(tonic::Response::new(crate::pb::etcdserverpb::StatusResponse {
                header: Some(crate::pb::etcdserverpb::ResponseHeader {
                    member_id: self.id,
                    ..Default::default()
                }),
                leader: if calls < self.calls_before { 0 } else { self.id },
                ..Default::default()
            }))
        }
        type SnapshotStream = Stream<crate::pb::etcdserverpb::SnapshotResponse>;
        async fn alarm(
            &self,
            _: tonic::Request<crate::pb::etcdserverpb::AlarmRequest>,
        ) -> Result<tonic::Response<crate::pb::etcdserverpb::AlarmResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("alarm"))
        }
        async fn defragment(
            &self,
            _: tonic::Request<crate::pb::etcdserverpb::DefragmentRequest>,
        ) -> Result<tonic::Response<crate::pb::etcdserverpb::DefragmentResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("defragment"))
        }
        async fn hash(
            &self,
            _: tonic::Request<crate::pb::etcdserverpb::HashRequest>,
        ) -> Result<tonic::Response<crate::pb::etcdserverpb::HashResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("hash"))
        }
        async fn hash_kv(
            &self,
            _: tonic::Request<crate::pb::etcdserverpb::HashKvRequest>,
        ) -> Result<tonic::Response<crate::pb::etcdserverpb::HashKvResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("hash_kv"))
        }
        async fn snapshot(
            &self,
            _: tonic::Request<crate::pb::etcdserverpb::SnapshotRequest>,
        ) -> Result<tonic::Response<Self::SnapshotStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("snapshot"))
        }
        async fn move_leader(
            &self,
            _: tonic::Request<crate::pb::etcdserverpb::MoveLeaderRequest>,
        ) -> Result<tonic::Response<crate::pb::etcdserverpb::MoveLeaderResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("move_leader"))
        }
        async fn downgrade(
            &self,
            _: tonic::Request<crate::pb::etcdserverpb::DowngradeRequest>,
        ) -> Result<tonic::Response<crate::pb::etcdserverpb::DowngradeResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("downgrade"))
        }
    }

    /// A member answers `Status` before the first election ends: it must be asked again.
    #[tokio::test]
    async fn waits_for_a_leader_elected_after_the_first_answer() {
        use crate::pb::etcdserverpb::maintenance_server::MaintenanceServer;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client_url = format!("http://{}", listener.local_addr().unwrap());
        let server = LateLeader { id: 7, calls: Default::default(), calls_before: 3 };
        let server = tonic::transport::Server::builder()
            .add_service(MaintenanceServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        let server = tokio::spawn(server);
        let member = MemberPlan {
            name: "infra1".into(),
            client_url,
            peer_url: String::new(),
            data_dir: PathBuf::new(),
            log_file: PathBuf::new(),
            args: Vec::new(),
        };
        let mut supervisor = Supervisor::new();
        let leader = wait_ready(&[member], &mut supervisor, Duration::from_secs(10)).await.unwrap();
        assert_eq!(leader, Leader { name: "infra1".into() });
        server.abort();
    }

    #[tokio::test]
    async fn refuses_ports_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let cfg = UpConfig {
            client_port: port,
            peer_port: port.wrapping_add(10).max(1),
            port_stride: 1,
            ..local_config(dir.path(), "/nonexistent".into())
        };
        match run(cfg, &mut Vec::new(), std::future::pending()).await {
            Err(UpError::PortInUse { member, port: p, .. }) => {
                assert_eq!((member.as_str(), p), ("infra1", port));
            }
            other => panic!("{other:?}"),
        }
    }
}
