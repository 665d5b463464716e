//! A minimal HTTP/1.1 responder for Prometheus scrapes, for a process that has no HTTP server
//! of its own: `GET /metrics` is answered with the text of a closure (typically
//! `Node::prometheus_metrics`), anything else with an error status. One request per
//! connection; the request head is read up to [`MAX_REQUEST_BYTES`], at most
//! [`MAX_CONNECTIONS`] connections are answered at once (more wait to be accepted) and each
//! gets [`CONNECTION_TIMEOUT`] in all.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Largest request head read; a longer one is answered `431`.
pub const MAX_REQUEST_BYTES: usize = 8 << 10;

/// Most connections answered at once.
pub const MAX_CONNECTIONS: usize = 16;

/// Time a connection gets to send its request and read the answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The content type of the Prometheus text format (version 0.0.4), which
/// `raft_core::runtime::Node::prometheus_metrics` writes.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` on `listener` with the text `render` returns, until the future is
/// dropped (spawn it, and abort the task to stop).
///
/// ```no_run
/// # async fn run(node: raft_core::runtime::Node) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9101").await?;
/// tokio::spawn(raft_grpc::serve_metrics(listener, move || node.prometheus_metrics()));
/// # Ok(()) }
/// ```
pub async fn serve_metrics<F>(listener: TcpListener, render: F)
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let render = Arc::new(render);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::debug!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, answer(stream, &*render)).await;
            drop(slot);
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    render: &(dyn Fn() -> String + Sync),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    let mut complete = false;
    while len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            complete = true;
            break;
        }
    }
    let request = String::from_utf8_lossy(&buf[..len]);
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (complete, method, path) {
        (false, _, _) => ("431 Request Header Fields Too Large", "text/plain", "too long\n".into()),
        (true, "GET", "/metrics") => ("200 OK", METRICS_CONTENT_TYPE, render()),
        (true, "GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        (true, _, _) => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn request(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn answers_metrics_and_refuses_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_metrics(listener, || "x_total 1\n".to_string()));

        let ok = request(addr, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(ok.ends_with("\r\nContent-Length: 10\r\nConnection: close\r\n\r\nx_total 1\n"));

        let other = request(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404 Not Found\r\n"), "{other}");
        let post = request(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{post}");
        let long = request(addr, &[b'a'; MAX_REQUEST_BYTES]).await;
        assert!(long.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{long}");
        server.abort();
    }
}
