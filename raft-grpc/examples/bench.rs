//! Loopback throughput of raft-grpc: batched small appends and snapshot streaming, plaintext and
//! mutual TLS. Both nodes run in this process on one tokio runtime, so sender and receiver share
//! the machine's cores.
//!
//!   cargo run --release -p raft-grpc --example bench            # full run (about a minute)
//!   cargo run --release -p raft-grpc --example bench -- --quick # smaller sizes
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_core::{
    Entry, EntryKind, Message, MessageBody, Snapshot, SnapshotMeta, Transport, TransportEvent,
};
use raft_grpc::{GrpcTransport, TlsConfig, TransportConfig};
use tokio::sync::mpsc;

struct Pair {
    sender: Arc<GrpcTransport>,
    receiver: Arc<GrpcTransport>,
    inbound: mpsc::Receiver<Message>,
    events: mpsc::Receiver<TransportEvent>,
    // The receiver's events and the sender's inbound messages, kept open and unread.
    _unused: (mpsc::Receiver<TransportEvent>, mpsc::Receiver<Message>),
}

async fn pair(tls: Option<(TlsConfig, TlsConfig)>, tweak: impl Fn(&mut TransportConfig)) -> Pair {
    let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let mut c1 = TransportConfig::new(7, 1);
    c1.peers = BTreeMap::from([(2, a2.to_string())]);
    let mut c2 = TransportConfig::new(7, 2);
    c2.peers = BTreeMap::from([(1, a1.to_string())]);
    if let Some((t1, t2)) = tls {
        c1.tls = Some(t1);
        c2.tls = Some(t2);
    }
    tweak(&mut c1);
    tweak(&mut c2);
    let (ev1, events) = mpsc::channel(1 << 16);
    let (ev2, unused_events) = mpsc::channel(1 << 16);
    let sender = Arc::new(GrpcTransport::new(c1, ev1).unwrap());
    let receiver = Arc::new(GrpcTransport::new(c2, ev2).unwrap());
    let (in1, unused_inbound) = mpsc::channel(1 << 16);
    let (in2, inbound) = mpsc::channel(1 << 16);
    let s = sender.clone();
    tokio::spawn(async move { s.serve(l1, in1, std::future::pending()).await });
    let r = receiver.clone();
    tokio::spawn(async move { r.serve(l2, in2, std::future::pending()).await });
    Pair { sender, receiver, inbound, events, _unused: (unused_events, unused_inbound) }
}

fn append(index: u64, payload: &Bytes) -> Message {
    Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_log_index: index - 1,
            prev_log_term: 1,
            entries: vec![Entry { term: 1, index, kind: EntryKind::Normal, data: payload.clone() }],
            leader_commit: index,
        },
    }
}

/// Sends `count` one-entry appends of `payload_bytes` as fast as the queue takes them (never
/// overfilling it, so nothing is dropped) and waits until all arrived.
async fn appends(p: &mut Pair, count: u64, payload_bytes: usize) -> (f64, f64) {
    let payload = Bytes::from(vec![0x5a; payload_bytes]);
    let depth = p.sender.peer_status(2).unwrap().queue_depth;
    // Warm up the connection.
    p.sender.send(vec![append(1, &payload)]);
    p.inbound.recv().await.unwrap();
    let before = p.receiver.metrics();
    let start = Instant::now();
    let receiving = async {
        for _ in 0..count {
            p.inbound.recv().await.unwrap();
        }
    };
    let sending = async {
        let mut index = 2;
        while index < count + 2 {
            let room = depth - p.sender.peer_status(2).unwrap().queue_len;
            if room < 256 {
                tokio::task::yield_now().await;
                continue;
            }
            let n = (room as u64).min(1024).min(count + 2 - index);
            p.sender.send((index..index + n).map(|i| append(i, &payload)).collect());
            index += n;
            tokio::task::yield_now().await;
        }
    };
    tokio::join!(receiving, sending);
    let secs = start.elapsed().as_secs_f64();
    let after = p.receiver.metrics();
    assert_eq!(p.sender.metrics().messages_dropped, 0, "the benchmark must not drop");
    let mb = (after.bytes_received - before.bytes_received) as f64 / 1e6;
    (count as f64 / secs, mb / secs)
}

/// Streams a snapshot of `bytes` and waits for the receiver to hand it over; returns MB/s.
async fn snapshot(p: &mut Pair, bytes: usize) -> f64 {
    let data: Bytes = (0..bytes).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>().into();
    let message = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::InstallSnapshot {
            snapshot: Snapshot { meta: SnapshotMeta::default(), data },
        },
    };
    let start = Instant::now();
    p.sender.send(vec![message]);
    let got = p.inbound.recv().await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(matches!(got.body, MessageBody::InstallSnapshot { .. }));
    loop {
        if let TransportEvent::Snapshot(2, status) = p.events.recv().await.unwrap() {
            assert_eq!(status, raft_core::SnapshotStatus::Finished);
            break;
        }
    }
    bytes as f64 / 1e6 / secs
}

fn tls_pair() -> (TlsConfig, TlsConfig) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let node = || {
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        TlsConfig {
            ca_pem: ca_pem.clone().into_bytes(),
            cert_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
            server_name: None,
        }
    };
    (node(), node())
}

/// "median (min–max)" of the runs.
fn spread(mut v: Vec<f64>, digits: usize) -> String {
    v.sort_by(f64::total_cmp);
    let (lo, mid, hi) = (v[0], v[v.len() / 2], v[v.len() - 1]);
    format!("{mid:.digits$} ({lo:.digits$}–{hi:.digits$})")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (count, snapshot_bytes, runs) =
        if quick { (100_000, 64 << 20, 3) } else { (1_000_000, 256 << 20, 5) };
    println!("raft-grpc loopback benchmark: median (min–max) of {runs} runs");
    println!();
    println!("| workload | transport | messages/s | MB/s |");
    println!("|---|---|---|---|");
    for tls in [false, true] {
        let name = if tls { "mutual TLS" } else { "plaintext" };
        for payload in [16usize, 256] {
            let mut p = pair(tls.then(tls_pair), |c| c.queue_depth = 1 << 14).await;
            let mut rates = Vec::new();
            let mut mbs = Vec::new();
            for _ in 0..runs {
                let (r, mb) = appends(&mut p, count, payload).await;
                rates.push(r);
                mbs.push(mb);
            }
            println!(
                "| {count} one-entry appends, {payload} B payload, batched | {name} | {} | {} |",
                spread(rates, 0),
                spread(mbs, 1)
            );
        }
        for chunk in [256usize << 10, 1 << 20, 4 << 20] {
            let mut p = pair(tls.then(tls_pair), |c| {
                c.snapshot_chunk_bytes = chunk;
                c.max_message_bytes = chunk + (1 << 20);
                c.snapshot_deadline = Duration::from_secs(600);
            })
            .await;
            let rates: Vec<_> = {
                let mut v = Vec::new();
                for _ in 0..runs {
                    v.push(snapshot(&mut p, snapshot_bytes).await);
                }
                v
            };
            println!(
                "| {} MiB snapshot, {} KiB chunks | {name} | | {} |",
                snapshot_bytes >> 20,
                chunk >> 10,
                spread(rates, 0)
            );
        }
    }
}
