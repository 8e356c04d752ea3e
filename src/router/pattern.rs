//! Topic wildcards: words separated by `.`, `*` matches exactly one word, `#` matches
//! zero or more words (the AMQP/RabbitMQ convention STOMP users already know).

/// A parsed wildcard subscription such as `stocks.*.nyse` or `logs.#`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(Vec<String>);

impl Pattern {
    /// `Some` when `name` (the part after `/topic/`) contains a wildcard word.
    pub fn parse(name: &str) -> Option<Pattern> {
        let words: Vec<String> = name.split('.').map(str::to_owned).collect();
        words
            .iter()
            .any(|w| w == "*" || w == "#")
            .then_some(Pattern(words))
    }

    /// Whether a topic name (after `/topic/`) matches.
    pub fn matches(&self, name: &str) -> bool {
        let words: Vec<&str> = name.split('.').collect();
        matches_words(&self.0, &words)
    }
}

fn matches_words(pattern: &[String], words: &[&str]) -> bool {
    match pattern.split_first() {
        None => words.is_empty(),
        Some((p, rest)) if p == "#" => {
            (0..=words.len()).any(|skip| matches_words(rest, &words[skip..]))
        }
        Some((p, rest)) => match words.split_first() {
            Some((w, wrest)) => (p == "*" || p == w) && matches_words(rest, wrest),
            None => false,
        },
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
    }

    #[test]
    fn names_without_wildcards_are_not_patterns() {
        assert!(Pattern::parse("a.b").is_none());
        assert!(Pattern::parse("a*b").is_none());
    }
}
