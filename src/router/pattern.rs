//! Topic wildcards: words separated by `.`, `*` matches exactly one word, `#` matches
//! zero or more words (the AMQP/RabbitMQ convention STOMP users already know).
//!
//! Matching never backtracks: it walks the name once, keeping the set of pattern
//! positions still alive (an NFA simulation), so one match costs at most
//! O(words × pattern words) whatever the pattern. Runs of `#` collapse into one when a
//! pattern is parsed (`#.#` means the same as `#`), so a pattern of 1,000 `#` words is
//! one word. Routing does not call [`Pattern::matches`] per subscription: wildcard
//! subscriptions live in a trie over words ([`super::sublist`]), which holds patterns
//! with at most one `#` so that a publish visits each of its nodes at most once.

/// A parsed wildcard subscription such as `stocks.*.nyse` or `logs.#`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(Vec<Box<str>>);

/// The wildcard words.
pub(super) const STAR: &str = "*";
pub(super) const HASH: &str = "#";

impl Pattern {
    /// `Some` when `name` (the part after `/topic/`) contains a wildcard word.
    pub fn parse(name: &str) -> Option<Pattern> {
        let mut words: Vec<Box<str>> = Vec::new();
        let mut wild = false;
        for w in name.split('.') {
            wild |= w == STAR || w == HASH;
            if w == HASH && words.last().is_some_and(|l| &**l == HASH) {
                continue;
            }
            words.push(w.into());
        }
        wild.then_some(Pattern(words))
    }

    /// The words, runs of `#` collapsed.
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|w| &**w)
    }

    /// Whether a topic name (after `/topic/`) matches.
    pub fn matches(&self, name: &str) -> bool {
        let p = &self.0;
        // alive[i]: the pattern's first i words match the name's words read so far.
        let mut alive = vec![false; p.len() + 1];
        let mut next = vec![false; p.len() + 1];
        alive[0] = true;
        close_over_hash(p, &mut alive);
        for word in name.split('.') {
            next.fill(false);
            let mut any = false;
            for i in 0..p.len() {
                if !alive[i] {
                    continue;
                }
                match &*p[i] {
                    // `#` absorbs the word and stays where it is.
                    HASH => next[i] = true,
                    STAR => next[i + 1] = true,
                    w => next[i + 1] |= w == word,
                }
                any = true;
            }
            if !any {
                return false;
            }
            std::mem::swap(&mut alive, &mut next);
            close_over_hash(p, &mut alive);
        }
        alive[p.len()]
    }
}

/// A `#` matches zero words too: a position before one is also the position after it.
fn close_over_hash(p: &[Box<str>], alive: &mut [bool]) {
    for i in 0..p.len() {
        if alive[i] && &*p[i] == HASH {
            alive[i + 1] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        Pattern::parse(p).expect("wildcard").matches(n)
    }

    #[test]
    fn star_is_exactly_one_word() {
        assert!(m("a.*.c", "a.b.c"));
        assert!(!m("a.*.c", "a.c"));
        assert!(!m("a.*.c", "a.b.b.c"));
        assert!(m("*", "a"));
        assert!(!m("*", "a.b"));
    }

    #[test]
    fn hash_is_zero_or_more_words() {
        assert!(m("a.#", "a"));
        assert!(m("a.#", "a.b.c"));
        assert!(m("#", "anything.at.all"));
        assert!(m("a.#.z", "a.z"));
        assert!(m("a.#.z", "a.b.c.z"));
        assert!(!m("a.#.z", "a.b.c"));
        assert!(!m("a.#", "b.a"));
        assert!(m("#.*", "a"));
        assert!(m("*.#.*", "a.b"));
        assert!(!m("*.#.*", "a"));
        assert!(m("a.#.b.#.c", "a.x.b.y.b.c"));
    }

    #[test]
    fn names_without_wildcards_are_not_patterns() {
        assert!(Pattern::parse("a.b").is_none());
        assert!(Pattern::parse("a*b").is_none());
    }

    #[test]
    fn runs_of_hash_collapse() {
        let p = Pattern::parse("a.#.#.#.b").unwrap();
        assert_eq!(p.words().collect::<Vec<_>>(), ["a", "#", "b"]);
    }

    /// The finding: 1,000 `#` words took 62.8 s against a three-word name with the
    /// backtracking matcher. Alternating `#` with a word cannot collapse; both must
    /// still be quick.
    #[test]
    fn a_thousand_hash_words_match_in_milliseconds() {
        let hashes = vec!["#"; 1000].join(".");
        let alternating = vec!["#.x"; 500].join(".") + ".#";
        let name = vec!["y"; 64].join(".");
        let start = std::time::Instant::now();
        assert!(m(&hashes, "a.b.c"));
        assert!(!m(&format!("{hashes}.z"), "a.b.c"));
        assert!(!m(&alternating, &name));
        assert!(m(&alternating, &vec!["x"; 500].join(".")));
        // Generous for a debug build on a loaded machine; the old matcher never ended.
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
}
