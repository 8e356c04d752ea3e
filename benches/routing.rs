//! Routing a publish through 10,000 wildcard subscriptions: the trie walk
//! (`Sublist::for_each_match`) against matching each pattern in turn, which is what
//! routing did before the trie (with the old backtracking matcher, worse still). Then
//! the adversarial set of issue 18 (10 connections × 128 patterns of 62 words from
//! {`a`, `*`} with one `#`, ending in `zzz`), published to with a fresh 64-word name
//! each time and with the name that agrees with every prefix.
//!
//!     cargo bench --bench routing

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use stompbox::frame::Version;
use stompbox::outbox::outbox;
use stompbox::router::{AckMode, Pattern, Sublist, Subscription};
use tokio_util::sync::CancellationToken;

fn subscription(i: usize) -> Arc<Subscription> {
    let (tx, rx) = outbox(16, 1 << 16);
    std::mem::forget(rx);
    Arc::new(Subscription::new(
        "bench".into(),
        i as u64,
        i.to_string(),
        AckMode::Auto,
        16,
        Version::V1_2,
        tx,
        CancellationToken::new(),
    ))
}

/// 10,000 patterns of the shapes people use: per-entity `*` patterns, a few `#` ones.
fn patterns() -> Vec<Pattern> {
    (0..10_000)
        .map(|i| {
            let p = match i % 4 {
                0 => format!("orders.*.{i}"),
                1 => format!("prices.{i}.#"),
                2 => format!("logs.*.{i}.*"),
                _ => format!("#.audit{i}"),
            };
            Pattern::parse(&p).expect("wildcard")
        })
        .collect()
}

fn route(c: &mut Criterion) {
    let patterns = patterns();
    let subs: Vec<_> = (0..patterns.len()).map(subscription).collect();
    let mut list = Sublist::default();
    for (p, s) in patterns.iter().zip(&subs) {
        list.insert(p, s.clone()).expect("one # at most");
    }
    let mut group = c.benchmark_group("route_10k_wildcards");
    for name in [
        "orders.eu.40",
        "prices.4001.eur.spot",
        "nobody.listens.here",
    ] {
        group.bench_function(format!("trie/{name}"), |b| {
            b.iter(|| {
                let mut n = 0;
                list.for_each_match(black_box(name), |_| n += 1);
                n
            })
        });
        group.bench_function(format!("scan/{name}"), |b| {
            b.iter(|| {
                patterns
                    .iter()
                    .filter(|p| p.matches(black_box(name)))
                    .count()
            })
        });
    }
    group.finish();
}

/// 1,280 patterns: 61 random words from {`a`, `*`}, one `#` somewhere, then `zzz`.
fn adversarial() -> Vec<Pattern> {
    let mut seed = 7u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..1280)
        .map(|_| {
            let mut words: Vec<&str> = (0..61)
                .map(|_| if next() % 2 == 0 { "a" } else { "*" })
                .collect();
            words.insert((next() % 61) as usize, "#");
            words.push("zzz");
            Pattern::parse(&words.join(".")).expect("wildcard")
        })
        .collect()
}

fn route_adversarial(c: &mut Criterion) {
    let patterns = adversarial();
    let mut list = Sublist::default();
    for (i, p) in patterns.iter().enumerate() {
        list.insert(p, subscription(i)).expect("one # at most");
    }
    eprintln!("adversarial index: {} nodes", list.nodes());
    let mut group = c.benchmark_group("route_adversarial_1280");
    // Names no cache could have seen: made beforehand, so that making them is not
    // measured, and each used once per 4,096 publishes.
    let fresh: Vec<String> = (0..4096)
        .map(|n| {
            (0..64)
                .map(|w| format!("{n}x{w}"))
                .collect::<Vec<_>>()
                .join(".")
        })
        .collect();
    let mut n = 0;
    group.bench_function("fresh 64-word names", |b| {
        b.iter(|| {
            n = (n + 1) % fresh.len();
            let mut hits = 0;
            list.for_each_match(black_box(&fresh[n]), |_| hits += 1);
            hits
        })
    });
    let all_a = vec!["a"; 64].join(".");
    group.bench_function("a.a.….a (agrees with every prefix)", |b| {
        b.iter(|| {
            let mut hits = 0;
            list.for_each_match(black_box(&all_a), |_| hits += 1);
            hits
        })
    });
    group.finish();
}

criterion_group!(benches, route, route_adversarial);
criterion_main!(benches);
