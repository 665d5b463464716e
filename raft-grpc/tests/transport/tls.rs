//! Mutual TLS: cluster members with certificates from the cluster CA talk; a wrong certificate,
//! no certificate, or plaintext is refused, and the good peer keeps being served.

use raft_core::{Transport, TransportEvent};
use raft_grpc::{Error, GrpcTransport, TlsConfig, TransportConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use crate::harness::{Node, config, eventually, heartbeat, listeners, noise};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A node certificate valid for 127.0.0.1 and localhost, for both server and client use.
    fn issue(&self, node: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, node);
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn tls(&self, node: &str, trust: &Ca) -> TlsConfig {
        let (cert, key) = self.issue(node);
        TlsConfig {
            ca_pem: trust.pem.clone().into_bytes(),
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
            server_name: None,
        }
    }
}

fn tls_cluster(ca: &Ca, n: usize) -> (Vec<Node>, Vec<std::net::SocketAddr>) {
    let ls = listeners(n + 1);
    let addrs: Vec<_> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    let nodes = ls
        .into_iter()
        .take(n)
        .enumerate()
        .map(|(i, l)| {
            let mut c = config(i as u64 + 1, &addrs);
            c.tls = Some(ca.tls(&format!("node{}", i + 1), ca));
            Node::start(c, l)
        })
        .collect();
    (nodes, addrs)
}

fn client(id: u64, target: std::net::SocketAddr, tls: Option<TlsConfig>) -> GrpcTransport {
    let mut c = TransportConfig::new(crate::harness::CLUSTER, id);
    c.peers.insert(1, target.to_string());
    c.tls = tls;
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    GrpcTransport::new(c, tx).unwrap()
}

fn assert_connection_refused(error: Error, expect_any: &[&str]) {
    let text = error.to_string();
    assert!(
        matches!(error, Error::Connect { .. } | Error::Status { .. }),
        "expected a connection failure, got {text}"
    );
    assert!(
        expect_any.iter().any(|e| text.to_lowercase().contains(&e.to_lowercase())),
        "unclear error: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_cluster_exchanges_messages_and_snapshots() {
    let ca = Ca::new("cluster CA");
    let (mut nodes, _) = tls_cluster(&ca, 3);
    for from in 0..3 {
        for to in 0..3 {
            if from != to {
                let (f, t) = (from as u64 + 1, to as u64 + 1);
                let (sender, receiver) = if from < to {
                    let (a, b) = nodes.split_at_mut(to);
                    (&a[from], &mut b[0])
                } else {
                    let (a, b) = nodes.split_at_mut(from);
                    (&b[0], &mut a[to])
                };
                let m = sender.deliver(receiver, |r| heartbeat(f, t, r)).await;
                assert_eq!(m.from, f);
            }
        }
    }
    // A snapshot over TLS.
    let data = noise(3 << 20, 5);
    let message = raft_core::Message {
        from: 1,
        to: 2,
        term: 1,
        body: raft_core::MessageBody::InstallSnapshot {
            snapshot: raft_core::Snapshot { meta: Default::default(), data },
        },
    };
    nodes[0].transport.send(vec![message.clone()]);
    loop {
        let m = nodes[1].recv().await;
        if matches!(m.body, raft_core::MessageBody::InstallSnapshot { .. }) {
            assert!(m == message);
            break;
        }
    }
    assert_eq!(
        nodes[0].event(|e| matches!(e, TransportEvent::Snapshot(..))).await,
        TransportEvent::Snapshot(2, raft_core::SnapshotStatus::Finished)
    );
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_missing_or_no_tls_is_refused_and_good_peers_still_served() {
    let ca = Ca::new("cluster CA");
    let rogue = Ca::new("rogue CA");
    let (mut nodes, addrs) = tls_cluster(&ca, 2);
    let target = addrs[0];
    let (a, b) = nodes.split_at_mut(1);
    let (n1, n2) = (&mut a[0], &mut b[0]);
    n2.deliver(n1, |r| heartbeat(2, 1, r)).await;

    // Node 3 with a certificate from another CA (but trusting ours): node 1 refuses it.
    let before = n1.transport.metrics().tls_handshakes_failed;
    let wrong_cert = client(3, target, Some(rogue.tls("node3", &ca)));
    let e = wrong_cert.probe(1).await.unwrap_err();
    assert_connection_refused(e, &["certificate"]);
    // The server says why, too (logged once, counted).
    eventually("node 1 counts the refused handshake", || {
        n1.transport.metrics().tls_handshakes_failed > before
    })
    .await;

    // Node 3 trusting another CA: it refuses node 1's certificate itself. Node 1 sees the aborted
    // handshake too; wait for it so it is not credited to the next case.
    let before = n1.transport.metrics().tls_handshakes_failed;
    let wrong_trust = client(3, target, Some(ca.tls("node3", &rogue)));
    let e = wrong_trust.probe(1).await.unwrap_err();
    assert_connection_refused(e, &["UnknownIssuer", "certificate"]);
    eventually("node 1 sees the aborted handshake", || {
        n1.transport.metrics().tls_handshakes_failed > before
    })
    .await;

    // No client certificate at all (a plain TLS client).
    let before = n1.transport.metrics().tls_handshakes_failed;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca.pem))
        .domain_name("127.0.0.1");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{target}"))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let result = async {
        let channel = endpoint.connect().await?;
        let mut grpc = raft_grpc::proto::raft_transport_client::RaftTransportClient::new(channel);
        let hs = raft_grpc::proto::MessageFrame {
            frame: Some(raft_grpc::proto::message_frame::Frame::Handshake(
                raft_grpc::proto::Handshake {
                    protocol_version: raft_grpc::PROTOCOL_VERSION,
                    cluster_id: crate::harness::CLUSTER,
                    from: 3,
                    to: 1,
                },
            )),
        };
        grpc.messages(tokio_stream::iter(vec![hs])).await.map(drop).map_err(Into::into)
    }
    .await;
    let _: Box<dyn std::error::Error + Send + Sync> =
        result.expect_err("a client without a certificate is refused");
    eventually("node 1 counts it", || n1.transport.metrics().tls_handshakes_failed > before).await;

    // Plaintext against the TLS server.
    let before = n1.transport.metrics().tls_handshakes_failed;
    let plaintext = client(3, target, None);
    let e = plaintext.probe(1).await.unwrap_err();
    assert_connection_refused(e, &["may require TLS"]);
    eventually("node 1 counts it", || n1.transport.metrics().tls_handshakes_failed > before).await;

    // TLS against a plaintext server.
    let plain_nodes = Node::cluster(1, |_| {});
    let tls_to_plain = client(3, plain_nodes[0].addr, Some(ca.tls("node3", &ca)));
    let e = tls_to_plain.probe(1).await.unwrap_err();
    assert_connection_refused(e, &["tls", "corrupt", "InvalidContentType"]);

    // None of that disturbed the cluster.
    n2.deliver(n1, |r| heartbeat(2, 1, 1000 + r)).await;
    n1.deliver(n2, |r| heartbeat(1, 2, r)).await;
    let m = n1.transport.metrics();
    assert_eq!(m.handshakes_rejected, 0, "refused before any handshake: {m:?}");
    for n in nodes.into_iter().chain(plain_nodes) {
        n.stop().await;
    }
}
