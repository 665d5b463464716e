//! `--listen-metrics-urls`: Prometheus text metrics on `/metrics` and etcd's `/health`, over a
//! minimal HTTP/1.1 responder (one request per connection, bounded request size).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use raft_core::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::services::Ctx;

const MAX_REQUEST_BYTES: usize = 8 << 10;

/// Most connections answered at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;

/// Serves metrics on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, ctx: Arc<Ctx>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let Ok((stream, _)) = listener.accept().await else { continue };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, ctx)).await;
            drop(slot);
        });
    }
}

async fn answer(mut stream: TcpStream, ctx: Arc<Ctx>) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let request = String::from_utf8_lossy(&buf[..len]);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (code, content_type, body) = match path {
        "/metrics" => (200, "text/plain; version=0.0.4", render(&ctx).await),
        "/health" => {
            let s = ctx.node.status();
            let healthy = s.leader.is_some() && s.stopped.is_none();
            let body = format!("{{\"health\":\"{healthy}\"}}");
            (if healthy { 200 } else { 503 }, "application/json", body)
        }
        _ => (404, "text/plain", "not found\n".to_string()),
    };
    let reason = match code {
        200 => "OK",
        503 => "Service Unavailable",
        _ => "Not Found",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The metrics: etcd's names where there is an equivalent, then the library's `raft_*` families
/// (`Node::prometheus_metrics`).
pub(crate) async fn render(ctx: &Ctx) -> String {
    let s = ctx.node.status();
    let m = ctx.node.metrics();
    let stats = ctx.stats().await.unwrap_or_default();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    gauge(
        "etcd_server_has_leader",
        "Whether a leader exists (1) or not (0).",
        "gauge",
        u64::from(s.leader.is_some()),
    );
    gauge(
        "etcd_server_is_leader",
        "Whether this member is the leader.",
        "gauge",
        u64::from(s.role == Role::Leader),
    );
    gauge(
        "etcd_server_leader_changes_seen_total",
        "Leader changes seen.",
        "counter",
        m.leader_changes,
    );
    gauge("etcd_server_proposals_committed_total", "Committed index.", "gauge", s.commit_index);
    gauge("etcd_server_proposals_applied_total", "Applied index.", "gauge", s.applied_index);
    gauge(
        "etcd_server_proposals_pending",
        "Requests waiting on this member.",
        "gauge",
        m.pending_requests,
    );
    gauge("etcd_server_proposals_failed_total", "Failed proposals.", "counter", m.proposals_failed);
    gauge(
        "etcd_debugging_mvcc_current_revision",
        "Current revision.",
        "gauge",
        stats.revision as u64,
    );
    gauge(
        "etcd_debugging_mvcc_compact_revision",
        "Compacted revision.",
        "gauge",
        stats.compacted as u64,
    );
    gauge("etcd_debugging_mvcc_keys_total", "Live keys.", "gauge", stats.keys);
    gauge("etcd_mvcc_db_total_size_in_bytes", "Store size on disk.", "gauge", stats.db_size);
    // The library's own metrics (`raft_*`, labelled with the node): counters, gauges and the
    // latency histograms. Its families never share a name with the ones above.
    out.push_str(&ctx.node.prometheus_metrics());
    out
}
