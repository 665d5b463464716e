//! Logging discipline, in a test binary of its own so that its global subscriber sees every
//! event: a refused identity is warned about once however often it retries, and a peer that stays
//! down is warned about once per `warn_interval` however often it is dialled.

#[allow(dead_code)]
#[path = "transport/harness.rs"]
mod harness;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{good_peer_still_served, heartbeat, pair, stranger};

/// Collects the messages of WARN events (for "logged once" and "no log flood").
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    fn matching(&self, text: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|w| w.contains(text)).count()
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            struct Text(String);
            impl tracing::field::Visit for Text {
                fn record_debug(
                    &mut self,
                    field: &tracing::field::Field,
                    value: &dyn std::fmt::Debug,
                ) {
                    self.0.push_str(&format!("{}={value:?} ", field.name()));
                }
            }
            let mut text = Text(String::new());
            event.record(&mut text);
            self.0.lock().unwrap().push(text.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The only test of this binary: it owns the global subscriber.
#[test]
fn refusals_and_down_peers_are_logged_once() {
    let warnings = Warnings::default();
    tracing::subscriber::set_global_default(warnings.clone()).expect("first subscriber");
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (mut n1, n2) = pair(|c| {
            c.warn_interval = Duration::from_secs(3600);
            c.backoff_initial = Duration::from_millis(1);
            c.backoff_max = Duration::from_millis(2);
        });
        good_peer_still_served(&mut n1, &n2, 0).await;
        let foreign = stranger(0xBAD, 3, 1, n1.addr);
        for _ in 0..10 {
            assert!(foreign.probe(1).await.is_err());
        }
        assert_eq!(n1.transport.metrics().handshakes_rejected, 10);
        assert_eq!(warnings.matching("refused a stream"), 1, "{:?}", warnings.0.lock().unwrap());
        assert_eq!(warnings.matching("cluster id mismatch"), 1);

        // Node 3 never runs: node 1 dials it over and over, warning once.
        let failures = n1.transport.metrics().connect_failures;
        for r in 0..200 {
            raft_core::Transport::send(&*n1.transport, vec![heartbeat(1, 3, r)]);
            tokio::time::sleep(Duration::from_millis(1)).await;
            if n1.transport.metrics().connect_failures >= failures + 20 {
                break;
            }
        }
        let failures = n1.transport.metrics().connect_failures - failures;
        assert!(failures >= 5, "dialled node 3 {failures} times");
        assert_eq!(warnings.matching("peer unreachable"), 1, "{:?}", warnings.0.lock().unwrap());
        good_peer_still_served(&mut n1, &n2, 100).await;
        n1.stop().await;
        n2.stop().await;
    });
}
