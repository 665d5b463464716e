//! Ports for test processes, shared by the integration tests (`#[path]`-included).

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// A port free right now, and its listener (drop it before a member binds the port).
///
/// Chosen below the kernel's ephemeral range (32768 and up by default), unlike a port from
/// binding port 0: between this call and the member binding the port, any process's outgoing
/// connection (members dial each other in a loop while starting) could otherwise take it as
/// its local port and the member would fail with "Address already in use".
pub(crate) fn free_port() -> (u16, TcpListener) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id().wrapping_mul(7919);
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (offset.wrapping_add(n) % 12_000) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return (port, listener);
        }
    }
    panic!("no free port in 20000..32000");
}
