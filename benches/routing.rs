//! Routing a publish through 10,000 wildcard subscriptions: the trie walk
//! (`Sublist::for_each_match`) against matching each pattern in turn, which is what
//! routing did before the trie (with the old backtracking matcher, worse still).
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
        list.insert(p, s.clone());
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

criterion_group!(benches, route);
criterion_main!(benches);
