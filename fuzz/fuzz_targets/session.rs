#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

#[path = "../harness/session.rs"]
mod harness;

/// One broker for the whole run, on a runtime of its own threads; each input is one
/// connection to it.
fn broker() -> &'static (tokio::runtime::Runtime, SocketAddr) {
    static BROKER: OnceLock<(tokio::runtime::Runtime, SocketAddr)> = OnceLock::new();
    BROKER.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt
            .block_on(stompbox::Broker::start(harness::config()))
            .expect("broker starts");
        let addr = handle.tcp_addr;
        std::mem::forget(handle);
        (rt, addr)
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (rt, addr) = broker();
    rt.block_on(harness::run(*addr, data));
});
