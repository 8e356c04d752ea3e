//! The parser fuzz harness, shared by `fuzz/fuzz_targets/parser.rs` (cargo-fuzz) and
//! `tests/fuzz_regressions.rs` (stable `cargo test` replays every saved input).
//!
//! The first byte of an input chooses how the rest is cut into reads; the rest is the
//! byte stream. The parser must never panic, and it must find the same frames and the
//! same error whether the stream arrives whole or in pieces.

use bytes::BytesMut;
use stompbox::frame::{FrameError, Inbound, Limits, Parser};

/// Small limits, so that inputs reach them.
fn limits() -> Limits {
    Limits {
        max_headers: 6,
        max_header_line_bytes: 40,
        max_body_bytes: 200,
    }
}

/// Everything parsed from `input` delivered in reads of the given sizes (cycled),
/// and the error that stopped it, if any.
fn run(input: &[u8], sizes: &[usize]) -> (Vec<Inbound>, Option<FrameError>) {
    let mut parser = Parser::new(limits());
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut at = 0;
    let mut size = sizes.iter().copied().cycle();
    while at < input.len() {
        let n = size.next().unwrap_or(1).clamp(1, input.len() - at);
        buf.extend_from_slice(&input[at..at + n]);
        at += n;
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(e) => return (items, Some(e)),
            }
        }
    }
    (items, None)
}

/// One fuzz input.
pub fn check(data: &[u8]) {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let whole = run(input, &[input.len().max(1)]);
    let sizes: Vec<usize> = (0..8)
        .map(|i| 1 + (usize::from(seed).rotate_left(i) % 13))
        .collect();
    let pieces = run(input, &sizes);
    assert_eq!(whole, pieces, "whole vs in pieces of {sizes:?}");
}
