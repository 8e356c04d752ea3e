//! Parser and encoder throughput in bytes per second (`cargo bench --bench frame`).
//! Goal: the parser takes 1 KiB SEND frames at 1 GB/s or more.

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stompbox::frame::{
    Command, Frame, Headers, Inbound, Limits, MessageParts, Parser, Version, encode,
};

/// `count` SEND frames with a `size`-byte body and typical client headers.
fn send_frames(count: usize, size: usize, content_length: bool) -> Vec<u8> {
    let body = vec![b'x'; size];
    let mut frame = Frame::new(Command::Send)
        .header("destination", "/topic/prices.nyse.ibm")
        .header("content-type", "application/json")
        .header("x-request-id", "4b1c7e2a-8f3d-4e5a-9c1b-0d2e3f4a5b6c")
        .body(Bytes::from(body));
    if !content_length {
        // Without content-length the parser scans the body for NUL.
        frame.headers.push("receipt", "r");
    }
    let mut one = BytesMut::new();
    encode(&frame, Version::V1_2, &mut one);
    let one = if content_length {
        one.to_vec()
    } else {
        let s = one.to_vec();
        // Drop the content-length line the encoder added.
        let text = String::from_utf8(s).unwrap();
        text.replace(&format!("content-length:{size}\n"), "")
            .into_bytes()
    };
    one.iter()
        .copied()
        .cycle()
        .take(one.len() * count)
        .collect()
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, size, cl) in [
        ("send_1KiB_content_length", 1024, true),
        ("send_1KiB_nul_scan", 1024, false),
        ("send_128B_content_length", 128, true),
        ("send_16KiB_content_length", 16 * 1024, true),
    ] {
        let input = send_frames(1000, size, cl);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut parser = Parser::new(Limits::default());
                let mut buf = BytesMut::from(&input[..]);
                let mut n = 0;
                while let Some(item) = parser.parse(&mut buf).unwrap() {
                    if let Inbound::Frame(f) = item {
                        n += f.body.len();
                    }
                }
                assert_eq!(n, 1000 * size);
            })
        });
    }
    group.finish();
}

fn encode_message(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let mut headers = Headers::new();
    headers.push("content-type", "application/json");
    headers.push("x-request-id", "4b1c7e2a-8f3d-4e5a-9c1b-0d2e3f4a5b6c");
    let body = vec![b'x'; 1024];
    let tail = MessageParts::tail(
        "/topic/prices",
        "abcd1234-17",
        &headers,
        body.len(),
        Version::V1_2,
    );
    group.throughput(Throughput::Bytes(tail.len() as u64));
    // The headers only since the body is no longer copied into the tail.
    group.bench_function("message_tail", |b| {
        b.iter(|| {
            MessageParts::tail(
                "/topic/prices",
                "abcd1234-17",
                &headers,
                body.len(),
                Version::V1_2,
            )
        })
    });
    let prefix = MessageParts::prefix("sub-1", Version::V1_2);
    group.throughput(Throughput::Elements(1));
    group.bench_function("delivery_head_client_ack", |b| {
        b.iter(|| MessageParts::head(&prefix, Some("3-1234567"), 0))
    });
    group.finish();
}

criterion_group!(benches, parse, encode_message);
criterion_main!(benches);
