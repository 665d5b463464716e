//! Dialling a peer: address parsing, HTTP/2 and TLS settings.

use std::time::Duration;

use raft_core::NodeId;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::TransportConfig;
use crate::error::{Error, error_chain};
use crate::proto::raft_transport_client::RaftTransportClient;

/// HTTP/2 flow-control window of one stream. Large enough that a snapshot stream keeps several
/// chunks in flight on a fast link; HTTP/2's 64 KiB default caps loopback at a few MB/s.
pub(crate) const STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// HTTP/2 flow-control window of one connection.
pub(crate) const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
/// Largest HTTP/2 DATA frame a peer may send us (the protocol's default is 16 KiB).
pub(crate) const MAX_FRAME_BYTES: u32 = 1 << 20;

/// Turns a configured address into the URI to dial: `host:port` gets `http://` or `https://`
/// depending on TLS; a full URI must use the scheme that matches.
pub(crate) fn peer_uri(peer: NodeId, addr: &str, tls: bool) -> Result<Uri, Error> {
    let invalid = |reason: String| Error::InvalidAddress { peer, addr: addr.to_string(), reason };
    let scheme = if tls { "https" } else { "http" };
    let full = if addr.contains("://") { addr.to_string() } else { format!("{scheme}://{addr}") };
    let uri: Uri =
        full.parse().map_err(|e: tonic::codegen::http::uri::InvalidUri| invalid(e.to_string()))?;
    if uri.scheme_str() != Some(scheme) {
        return Err(invalid(format!(
            "scheme must be {scheme} (TLS is {})",
            if tls { "on" } else { "off" }
        )));
    }
    if uri.host().is_none_or(str::is_empty) || uri.port_u16().is_none() {
        return Err(invalid("expected host:port".into()));
    }
    Ok(uri)
}

/// Opens a new connection (TCP, TLS if configured, HTTP/2) to a peer, bounded by
/// `connect_timeout`. Each call makes its own connection, so the snapshot stream never shares
/// one with the message stream.
pub(crate) async fn dial(
    config: &TransportConfig,
    peer: NodeId,
    addr: &str,
) -> Result<RaftTransportClient<Channel>, Error> {
    let uri = peer_uri(peer, addr, config.tls.is_some())?;
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']).to_string();
    let mut endpoint = Endpoint::from(uri)
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
    if let Some(tls) = &config.tls {
        endpoint = endpoint
            .tls_config(tls.client_tls_config(&host).timeout(config.connect_timeout))
            .map_err(|e| Error::Tls(error_chain(&e)))?;
    }
    let connect_error = |detail: String| Error::Connect { peer, addr: addr.to_string(), detail };
    let channel = match tokio::time::timeout(config.connect_timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => return Err(connect_error(error_chain(&e))),
        Err(_) => {
            return Err(connect_error(format!("timed out after {:?}", config.connect_timeout)));
        }
    };
    let max = config.max_message_bytes;
    Ok(RaftTransportClient::new(channel)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}

/// Awaits `future` for at most `limit`, turning a timeout into [`Error::Connect`].
pub(crate) async fn within<T>(
    limit: Duration,
    peer: NodeId,
    addr: &str,
    what: &str,
    future: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result,
        Err(_) => Err(Error::Connect {
            peer,
            addr: addr.to_string(),
            detail: format!("{what} timed out after {limit:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(peer_uri(2, "127.0.0.1:80", false).unwrap().to_string(), "http://127.0.0.1:80/");
        assert_eq!(peer_uri(2, "node2:7000", true).unwrap().to_string(), "https://node2:7000/");
        assert_eq!(peer_uri(2, "[::1]:7000", false).unwrap().host(), Some("[::1]"));
        assert!(peer_uri(2, "http://a:1", true).is_err(), "plaintext URI with TLS on");
        assert!(peer_uri(2, "noport", false).is_err());
        assert!(peer_uri(2, "", false).is_err());
        let err = peer_uri(2, "a b:1", false).unwrap_err().to_string();
        assert!(err.contains("node 2"), "{err}");
    }
}
