//! The wildcard subscription index: a trie over words, as nats-server's sublist. A
//! publish walks it once, keeping the set of trie nodes still alive (a word goes to the
//! node's exact child and its `*` child; a `#` node keeps itself), so it costs
//! O(words × live nodes + matches) — not a pattern match per wildcard subscription.
//! Live nodes are deduplicated at each word, so no pattern, however many `#` or `*` it
//! has, makes a publish blow up.
//!
//! Subscriptions are kept at the node where their pattern ends; removing one prunes
//! the nodes left empty, so subscribing and unsubscribing distinct patterns forever
//! does not grow the trie.

use std::collections::HashMap;
use std::sync::Arc;

use super::Subscription;
use super::pattern::{HASH, Pattern, STAR};

#[derive(Debug)]
struct Node<T> {
    words: HashMap<Box<str>, Node<T>>,
    star: Option<Box<Node<T>>>,
    hash: Option<Box<Node<T>>>,
    subs: Vec<Arc<T>>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            words: HashMap::new(),
            star: None,
            hash: None,
            subs: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.words.is_empty() && self.star.is_none() && self.hash.is_none() && self.subs.is_empty()
    }

    fn child_mut(&mut self, word: &str) -> &mut Node<T> {
        match word {
            STAR => self.star.get_or_insert_default(),
            HASH => self.hash.get_or_insert_default(),
            w => self.words.entry(w.into()).or_default(),
        }
    }
}

/// Every wildcard subscription, indexed by its pattern's words (also used for
/// durable subscriptions: `T` is what a match yields).
#[derive(Debug)]
pub struct Sublist<T = Subscription> {
    root: Node<T>,
    len: usize,
}

impl<T> Default for Sublist<T> {
    fn default() -> Self {
        Sublist {
            root: Node::default(),
            len: 0,
        }
    }
}

/// A live position in the walk: the node, and whether it was reached through `#`
/// (then it may absorb further words).
type Live<'a, T> = (&'a Node<T>, bool);

impl<T> Sublist<T> {
    /// Wildcard subscriptions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `sub` under `pattern`.
    pub fn insert(&mut self, pattern: &Pattern, sub: Arc<T>) {
        let mut node = &mut self.root;
        for w in pattern.words() {
            node = node.child_mut(w);
        }
        node.subs.push(sub);
        self.len += 1;
    }

    /// Removes `sub` from under `pattern`; returns whether it was there.
    pub fn remove(&mut self, pattern: &Pattern, sub: &Arc<T>) -> bool {
        let words: Vec<&str> = pattern.words().collect();
        let removed = remove_in(&mut self.root, &words, sub);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Calls `f` once for every subscription whose pattern matches `name` (the part
    /// after `/topic/`).
    pub fn for_each_match(&self, name: &str, mut f: impl FnMut(&Arc<T>)) {
        if self.len == 0 {
            return;
        }
        let mut live: Vec<Live<'_, T>> = Vec::new();
        enter(&self.root, false, &mut live);
        let mut next: Vec<Live<'_, T>> = Vec::new();
        for word in name.split('.') {
            next.clear();
            for &(node, via_hash) in &live {
                if via_hash {
                    enter(node, true, &mut next);
                }
                if let Some(child) = node.words.get(word) {
                    enter(child, false, &mut next);
                }
                if let Some(child) = &node.star {
                    enter(child, false, &mut next);
                }
            }
            dedup(&mut next);
            std::mem::swap(&mut live, &mut next);
            if live.is_empty() {
                return;
            }
        }
        for (node, _) in live {
            node.subs.iter().for_each(&mut f);
        }
    }
}

/// Adds `node`, and the `#` child that follows it (matching zero words).
fn enter<'a, T>(node: &'a Node<T>, via_hash: bool, live: &mut Vec<Live<'a, T>>) {
    live.push((node, via_hash));
    if let Some(hash) = &node.hash {
        live.push((hash, true));
    }
}

/// One entry per node (a node reached both through `#` and not keeps the `#` flag).
fn dedup<T>(live: &mut Vec<Live<'_, T>>) {
    if live.len() < 2 {
        return;
    }
    live.sort_unstable_by_key(|&(node, via_hash)| (node as *const Node<T> as usize, !via_hash));
    live.dedup_by_key(|&mut (node, _)| node as *const Node<T> as usize);
}

fn remove_in<T>(node: &mut Node<T>, words: &[&str], sub: &Arc<T>) -> bool {
    let Some((first, rest)) = words.split_first() else {
        let before = node.subs.len();
        node.subs.retain(|s| !Arc::ptr_eq(s, sub));
        return node.subs.len() < before;
    };
    let (removed, empty) = match *first {
        STAR | HASH => {
            let slot = if *first == STAR {
                &mut node.star
            } else {
                &mut node.hash
            };
            let Some(child) = slot.as_deref_mut() else {
                return false;
            };
            let removed = remove_in(child, rest, sub);
            let empty = child.is_empty();
            if empty {
                *slot = None;
            }
            (removed, false)
        }
        w => {
            let Some(child) = node.words.get_mut(w) else {
                return false;
            };
            let removed = remove_in(child, rest, sub);
            (removed, child.is_empty())
        }
    };
    if empty {
        node.words.remove(*first);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Version;
    use crate::outbox::outbox;
    use crate::router::AckMode;
    use tokio_util::sync::CancellationToken;

    fn sub(id: &str) -> Arc<Subscription> {
        let (tx, _rx) = outbox(16, 1 << 20);
        Arc::new(Subscription::new(
            "s".into(),
            0,
            id.to_owned(),
            AckMode::Auto,
            16,
            Version::V1_2,
            tx,
            CancellationToken::new(),
        ))
    }

    fn matches(list: &Sublist, name: &str) -> Vec<String> {
        let mut ids = Vec::new();
        list.for_each_match(name, |s| ids.push(s.id.clone()));
        ids.sort();
        ids
    }

    /// Every pattern the trie matches, it matches exactly as `Pattern::matches` does.
    #[test]
    fn agrees_with_the_pattern_matcher() {
        let patterns = [
            "a.*",
            "a.#",
            "#",
            "*",
            "*.b.#",
            "a.#.c",
            "#.c",
            "a.*.c",
            "*.*",
            "#.*",
            "*.#.*",
            "a.#.b.#.c",
            "x.#",
        ];
        let names = [
            "a",
            "a.b",
            "a.b.c",
            "b",
            "b.b",
            "a.x.b.y.c",
            "c",
            "x",
            "a.c",
            "a.b.c.d",
            "",
        ];
        let mut list = Sublist::default();
        let subs: Vec<_> = patterns.iter().map(|p| sub(p)).collect();
        for (p, s) in patterns.iter().zip(&subs) {
            list.insert(&Pattern::parse(p).unwrap(), s.clone());
        }
        for name in names {
            let mut want: Vec<String> = patterns
                .iter()
                .filter(|p| Pattern::parse(p).unwrap().matches(name))
                .map(|p| p.to_string())
                .collect();
            want.sort();
            assert_eq!(matches(&list, name), want, "name {name:?}");
        }
    }

    #[test]
    fn removing_prunes_empty_nodes() {
        let mut list = Sublist::default();
        let a = sub("a");
        let b = sub("b");
        let pa = Pattern::parse("x.*.y.#").unwrap();
        let pb = Pattern::parse("x.#").unwrap();
        list.insert(&pa, a.clone());
        list.insert(&pb, b.clone());
        assert_eq!(list.len(), 2);
        assert!(!list.remove(&pb, &a), "a is not under x.#");
        assert!(list.remove(&pa, &a));
        assert!(list.remove(&pb, &b));
        assert!(list.is_empty());
        assert!(list.root.is_empty(), "{:?}", list.root);
    }

    /// 10,000 subscribers on distinct patterns: a publish visits the few that can
    /// match, not all of them.
    #[test]
    fn many_patterns_one_publish() {
        let mut list = Sublist::default();
        for i in 0..10_000 {
            let p = Pattern::parse(&format!("orders.*.{i}")).unwrap();
            list.insert(&p, sub(&i.to_string()));
        }
        assert_eq!(matches(&list, "orders.eu.42"), ["42"]);
        assert!(matches(&list, "orders.eu").is_empty());
    }

    #[test]
    fn a_thousand_hash_words_in_the_trie() {
        let mut list = Sublist::default();
        let alternating = vec!["#.x"; 500].join(".") + ".#";
        list.insert(&Pattern::parse(&alternating).unwrap(), sub("alt"));
        list.insert(
            &Pattern::parse(&vec!["#"; 1000].join(".")).unwrap(),
            sub("all"),
        );
        let start = std::time::Instant::now();
        assert_eq!(matches(&list, "a.b.c"), ["all"]);
        assert_eq!(matches(&list, &vec!["x"; 600].join(".")), ["all", "alt"]);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
}
