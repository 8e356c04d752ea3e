//! The wildcard subscription index: a trie over words, as nats-server's sublist, with
//! one twist that gives every publish a hard bound.
//!
//! A pattern has at most one `#` (the router refuses more, see [`Pattern::hashes`]), so
//! it reads `PREFIX.#.SUFFIX` or `PREFIX` alone, and matches a name when the prefix
//! matches the name's first words and the suffix its last words, with at least as
//! many words in the name as in both. The trie stores the prefix forwards and, under
//! the `#` edge, the suffix backwards (`a.#.b.c` is the path `a`, `#`, `c`, `b`). A
//! publish walks the prefixes forwards from the name's first word and, from each `#`
//! edge it reaches, the suffixes backwards from the name's last word.
//!
//! **The bound.** No node has an edge back to itself, so every node sits at one depth
//! of one walk and a publish visits each node at most once: its cost is at most the
//! index's size ([`Sublist::nodes`], capped broker-wide by
//! `limits.max_wildcard_words`) plus its matches, whatever the patterns and however
//! fresh the name — and in practice only the nodes whose words agree with the name so
//! far. With several `#` per pattern a node under a `#` would stay alive for every
//! later word and a publish could cost words × nodes; that is why they are refused.
//!
//! Subscriptions are kept at the node where their path ends; removing one prunes the
//! nodes left empty, so subscribing and unsubscribing distinct patterns forever does
//! not grow the trie.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::Subscription;
use super::pattern::{HASH, Pattern, STAR};

/// Hashes a word id: ids are small distinct integers, so one multiply spreads them.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Children<T> = HashMap<u32, Node<T>, BuildHasherDefault<IdHasher>>;

#[derive(Debug)]
struct Node<T> {
    /// Literal words, by their id in [`Words`].
    words: Children<T>,
    star: Option<Box<Node<T>>>,
    hash: Option<Box<Node<T>>>,
    subs: Vec<Arc<T>>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            words: Children::default(),
            star: None,
            hash: None,
            subs: Vec::new(),
        }
    }
}

/// One edge of a trie path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Word(u32),
    Star,
    Hash,
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.words.is_empty() && self.star.is_none() && self.hash.is_none() && self.subs.is_empty()
    }

    fn child(&self, step: Step) -> Option<&Node<T>> {
        match step {
            Step::Star => self.star.as_deref(),
            Step::Hash => self.hash.as_deref(),
            Step::Word(id) => self.words.get(&id),
        }
    }

    /// The child along `step`, created if missing (returns whether it was).
    fn child_mut(&mut self, step: Step) -> (&mut Node<T>, bool) {
        let missing = self.child(step).is_none();
        let child = match step {
            Step::Star => self.star.get_or_insert_default(),
            Step::Hash => self.hash.get_or_insert_default(),
            Step::Word(id) => self.words.entry(id).or_default(),
        };
        (child, missing)
    }
}

/// The literal words of the index, each with an id and the number of edges it labels:
/// a publish hashes each of its words once, here, and then follows ids (a word no
/// pattern holds has none, and follows only `*` edges). Ids are reused once no edge
/// holds them, so the table is as large as the trie's distinct words.
#[derive(Debug, Default)]
struct Words {
    ids: HashMap<Box<str>, (u32, usize)>,
    free: Vec<u32>,
    next: u32,
}

impl Words {
    fn get(&self, word: &str) -> Option<u32> {
        self.ids.get(word).map(|(id, _)| *id)
    }

    /// The id of `word`, made if new (with no edge yet).
    fn intern(&mut self, word: &str) -> u32 {
        if let Some(id) = self.get(word) {
            return id;
        }
        let id = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        });
        self.ids.insert(word.into(), (id, 0));
        id
    }

    /// One edge more (`+1`) or less (`-1`) labelled `word`; an id left with none is freed.
    fn count(&mut self, word: &str, delta: isize) {
        let Some((id, edges)) = self.ids.get_mut(word) else {
            return;
        };
        *edges = edges.saturating_add_signed(delta);
        if *edges == 0 {
            self.free.push(*id);
            self.ids.remove(word);
        }
    }
}

/// A pattern with more than one `#`: the index cannot bound its cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a wildcard pattern may hold at most one #")]
pub struct TooManyHashes;

/// The trie path of `pattern` as words: its prefix, then `#` and its suffix reversed.
fn path(pattern: &Pattern) -> Result<Vec<&str>, TooManyHashes> {
    let words: Vec<&str> = pattern.words().collect();
    match words.iter().position(|w| *w == HASH) {
        None => Ok(words),
        Some(at) => {
            let (prefix, rest) = words.split_at(at);
            let suffix = &rest[1..];
            if suffix.contains(&HASH) {
                return Err(TooManyHashes);
            }
            let mut path = prefix.to_vec();
            path.push(HASH);
            path.extend(suffix.iter().rev());
            Ok(path)
        }
    }
}

/// Every wildcard subscription, indexed by its pattern's words (also used for
/// durable subscriptions: `T` is what a match yields).
#[derive(Debug)]
pub struct Sublist<T = Subscription> {
    root: Node<T>,
    words: Words,
    len: usize,
    /// Trie nodes below the root: what one publish can cost at most.
    nodes: usize,
}

impl<T> Default for Sublist<T> {
    fn default() -> Self {
        Sublist {
            root: Node::default(),
            words: Words::default(),
            len: 0,
            nodes: 0,
        }
    }
}

impl<T> Sublist<T> {
    /// Wildcard subscriptions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Trie nodes held: the most a publish can visit.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The nodes inserting `pattern` would add (patterns share their common words).
    pub fn cost(&self, pattern: &Pattern) -> Result<usize, TooManyHashes> {
        let path = path(pattern)?;
        let mut node = &self.root;
        for (i, w) in path.iter().enumerate() {
            let step = match *w {
                STAR => Some(Step::Star),
                HASH => Some(Step::Hash),
                w => self.words.get(w).map(Step::Word),
            };
            match step.and_then(|s| node.child(s)) {
                Some(child) => node = child,
                None => return Ok(path.len() - i),
            }
        }
        Ok(0)
    }

    /// Adds `sub` under `pattern`.
    pub fn insert(&mut self, pattern: &Pattern, sub: Arc<T>) -> Result<(), TooManyHashes> {
        let path = path(pattern)?;
        let mut node = &mut self.root;
        for w in path {
            let step = match w {
                STAR => Step::Star,
                HASH => Step::Hash,
                w => Step::Word(self.words.intern(w)),
            };
            let (child, created) = node.child_mut(step);
            if created {
                self.nodes += 1;
                if let Step::Word(_) = step {
                    self.words.count(w, 1);
                }
            }
            node = child;
        }
        node.subs.push(sub);
        self.len += 1;
        Ok(())
    }

    /// Removes `sub` from under `pattern`; returns whether it was there.
    pub fn remove(&mut self, pattern: &Pattern, sub: &Arc<T>) -> bool {
        let Ok(path) = path(pattern) else {
            return false;
        };
        let mut steps = Vec::with_capacity(path.len());
        for w in &path {
            steps.push(match *w {
                STAR => Step::Star,
                HASH => Step::Hash,
                w => match self.words.get(w) {
                    Some(id) => Step::Word(id),
                    None => return false,
                },
            });
        }
        let mut pruned = Vec::new();
        let removed = remove_in(&mut self.root, &steps, 0, sub, &mut pruned);
        if removed {
            self.len -= 1;
        }
        self.nodes -= pruned.len();
        for depth in pruned {
            if let Step::Word(_) = steps[depth] {
                self.words.count(path[depth], -1);
            }
        }
        removed
    }

    /// Calls `f` once for every subscription whose pattern matches `name` (the part
    /// after `/topic/`), visiting each trie node at most once.
    pub fn for_each_match(&self, name: &str, f: impl FnMut(&Arc<T>)) {
        if self.len > 0 {
            self.walk(name, f);
        }
    }

    /// [`Sublist::for_each_match`]; returns the nodes it visited.
    fn walk(&self, name: &str, mut f: impl FnMut(&Arc<T>)) -> usize {
        let mut visits = 0;
        // Each word hashed once: a word no pattern holds follows `*` edges only.
        let words: Vec<Option<u32>> = name.split('.').map(|w| self.words.get(w)).collect();
        let n = words.len();
        let mut live: Vec<&Node<T>> = vec![&self.root];
        let mut next: Vec<&Node<T>> = Vec::new();
        // `#` edges reached, with the words the prefix before them took.
        let mut hashes: Vec<(&Node<T>, usize)> = Vec::new();
        for (i, word) in words.iter().enumerate() {
            next.clear();
            visits += live.len();
            for node in &live {
                if let Some(hash) = &node.hash {
                    hashes.push((hash, i));
                }
                next.extend(word.and_then(|id| node.words.get(&id)));
                next.extend(node.star.as_deref());
            }
            std::mem::swap(&mut live, &mut next);
        }
        visits += live.len();
        for node in &live {
            node.subs.iter().for_each(&mut f);
            if let Some(hash) = &node.hash {
                hashes.push((hash, n));
            }
        }
        // Each suffix, backwards from the last word, in the words the prefix left.
        for (hash, taken) in hashes {
            live.clear();
            live.push(hash);
            for word in words[taken..].iter().rev().copied().map(Some).chain([None]) {
                next.clear();
                visits += live.len();
                for node in &live {
                    node.subs.iter().for_each(&mut f);
                    if let Some(word) = word {
                        next.extend(word.and_then(|id| node.words.get(&id)));
                        next.extend(node.star.as_deref());
                    }
                }
                std::mem::swap(&mut live, &mut next);
                if live.is_empty() {
                    break;
                }
            }
        }
        // The root is no node of the bound.
        visits - 1
    }
}

/// Removes `sub` from the node at the end of `steps`, pruning the nodes left empty on
/// the way back (`pruned` gets the depth of each edge removed).
fn remove_in<T>(
    node: &mut Node<T>,
    steps: &[Step],
    depth: usize,
    sub: &Arc<T>,
    pruned: &mut Vec<usize>,
) -> bool {
    let Some(&step) = steps.get(depth) else {
        let before = node.subs.len();
        node.subs.retain(|s| !Arc::ptr_eq(s, sub));
        return node.subs.len() < before;
    };
    match step {
        Step::Star | Step::Hash => {
            let slot = if step == Step::Star {
                &mut node.star
            } else {
                &mut node.hash
            };
            let Some(child) = slot.as_deref_mut() else {
                return false;
            };
            let removed = remove_in(child, steps, depth + 1, sub, pruned);
            if child.is_empty() {
                *slot = None;
                pruned.push(depth);
            }
            removed
        }
        Step::Word(id) => {
            let Some(child) = node.words.get_mut(&id) else {
                return false;
            };
            let removed = remove_in(child, steps, depth + 1, sub, pruned);
            if child.is_empty() {
                node.words.remove(&id);
                pruned.push(depth);
            }
            removed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Version;
    use crate::outbox::outbox;
    use crate::router::AckMode;
    use proptest::prelude::*;
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

    fn pattern(p: &str) -> Pattern {
        Pattern::parse(p).expect("a wildcard pattern")
    }

    fn matches(list: &Sublist, name: &str) -> Vec<String> {
        let mut ids = Vec::new();
        list.for_each_match(name, |s| ids.push(s.id.clone()));
        ids.sort();
        ids
    }

    /// Every pattern the trie holds, it matches exactly as `Pattern::matches` does.
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
            "x.#",
            "a.#.b.c",
            "#.b.*",
            "a.b.#.b.c",
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
            "a.b.b.c",
            "a.b.c.b.c",
            "",
        ];
        let mut list = Sublist::default();
        for p in patterns {
            list.insert(&pattern(p), sub(p)).unwrap();
        }
        for name in names {
            let mut want: Vec<String> = patterns
                .iter()
                .filter(|p| pattern(p).matches(name))
                .map(|p| p.to_string())
                .collect();
            want.sort();
            assert_eq!(matches(&list, name), want, "name {name:?}");
        }
    }

    fn word() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("a"), Just("b"), Just("*"), Just("")]
    }

    /// A pattern of 1–6 words from a small alphabet, with at most one `#`.
    fn one_hash_pattern() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(word(), 1..6),
            prop::option::of(0usize..6),
        )
            .prop_map(|(mut words, hash)| {
                if let Some(at) = hash {
                    words.insert(at.min(words.len()), "#");
                }
                let p = words.join(".");
                if Pattern::parse(&p).is_some() {
                    p
                } else {
                    format!("{p}.*")
                }
            })
    }

    proptest! {
        /// Random patterns and names: the trie yields exactly the subscriptions whose
        /// pattern matches, each once, and never visits more nodes than it holds.
        #[test]
        fn random_patterns_agree_and_stay_in_bound(
            patterns in prop::collection::vec(one_hash_pattern(), 1..12),
            names in prop::collection::vec(prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c"), Just("")], 1..8), 1..8),
        ) {
            let mut list = Sublist::default();
            let subs: Vec<_> = patterns.iter().map(|p| sub(p)).collect();
            for (p, s) in patterns.iter().zip(&subs) {
                list.insert(&pattern(p), s.clone()).unwrap();
            }
            for name in names.iter().map(|n| n.join(".")) {
                let mut want: Vec<String> = patterns
                    .iter()
                    .filter(|p| pattern(p).matches(&name))
                    .cloned()
                    .collect();
                want.sort();
                let mut got = Vec::new();
                let visits = list.walk(&name, |s| got.push(s.id.clone()));
                got.sort();
                prop_assert_eq!(got, want, "name {:?}", name);
                prop_assert!(visits <= list.nodes(), "{} visits, {} nodes", visits, list.nodes());
            }
            for (p, s) in patterns.iter().zip(&subs) {
                prop_assert!(list.remove(&pattern(p), s));
            }
            prop_assert!(list.is_empty());
            prop_assert_eq!(list.nodes(), 0);
            prop_assert!(list.words.ids.is_empty());
        }
    }

    #[test]
    fn more_than_one_hash_is_refused() {
        let mut list = Sublist::default();
        for p in ["a.#.b.#", "#.a.#", "#.*.#"] {
            assert_eq!(list.cost(&pattern(p)), Err(TooManyHashes), "{p}");
            assert_eq!(list.insert(&pattern(p), sub(p)), Err(TooManyHashes), "{p}");
        }
        // Runs of `#` are one `#`.
        list.insert(&pattern(&vec!["#"; 1000].join(".")), sub("all"))
            .unwrap();
        assert_eq!(list.nodes(), 1);
        assert_eq!(matches(&list, "a.b.c"), ["all"]);
    }

    #[test]
    fn nodes_are_counted_and_shared() {
        let mut list = Sublist::default();
        let (a, b, c) = (sub("a"), sub("b"), sub("c"));
        let pa = pattern("x.*.y.#");
        let pb = pattern("x.#");
        let pc = pattern("x.*.y.#.z");
        assert_eq!(list.cost(&pa), Ok(4));
        list.insert(&pa, a.clone()).unwrap();
        assert_eq!(list.cost(&pa), Ok(0));
        assert_eq!(list.cost(&pb), Ok(1));
        list.insert(&pb, b.clone()).unwrap();
        assert_eq!(list.cost(&pc), Ok(1));
        list.insert(&pc, c.clone()).unwrap();
        assert_eq!(list.nodes(), 6);
        assert!(!list.remove(&pb, &a), "a is not under x.#");
        assert!(list.remove(&pa, &a));
        assert_eq!(list.nodes(), 6, "x.*.y.# still leads to c");
        assert!(list.remove(&pc, &c));
        assert_eq!(list.nodes(), 2);
        assert!(list.remove(&pb, &b));
        assert!(list.is_empty());
        assert_eq!(list.nodes(), 0);
        assert!(list.root.is_empty(), "{:?}", list.root);
        assert!(list.words.ids.is_empty(), "{:?}", list.words);
    }

    /// 10,000 subscribers on distinct patterns: a publish visits the few that can
    /// match, not all of them.
    #[test]
    fn many_patterns_one_publish() {
        let mut list = Sublist::default();
        for i in 0..10_000 {
            list.insert(&pattern(&format!("orders.*.{i}")), sub(&i.to_string()))
                .unwrap();
        }
        assert_eq!(matches(&list, "orders.eu.42"), ["42"]);
        assert!(list.walk("orders.eu.42", |_| {}) <= 3);
        assert!(matches(&list, "orders.eu").is_empty());
    }

    /// The set that took 625 ms per publish before (issue 18, finding 1), with one `#`
    /// per pattern: a 64-word publish that matches nothing visits each node at most
    /// once — here only the few that agree with the name.
    #[test]
    fn adversarial_patterns_cost_at_most_the_index() {
        let mut list = Sublist::default();
        let mut seed = 7u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..1280 {
            let mut words: Vec<&str> = (0..61)
                .map(|_| if next() % 2 == 0 { "a" } else { "*" })
                .collect();
            words.insert((next() % 61) as usize, "#");
            words.push("zzz");
            list.insert(&pattern(&words.join(".")), sub(&i.to_string()))
                .unwrap();
        }
        let name = vec!["a"; 64].join(".");
        let visits = list.walk(&name, |_| panic!("nothing ends in zzz"));
        assert!(visits <= list.nodes(), "{visits} > {}", list.nodes());
        let fresh = (0..64)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(".");
        let visits = list.walk(&fresh, |_| panic!("nothing ends in zzz"));
        assert!(visits <= list.nodes(), "{visits} > {}", list.nodes());
    }
}
