//! Authorization: per-user ACLs on destination patterns, for `read` (SUBSCRIBE),
//! `write` (SEND, and HTTP publish) and `create` (the first use of a queue).
//!
//! With no `[[auth.acls]]` every user may do everything (the broker's behaviour before
//! ACLs). With any, what no rule grants is refused: a user gets a permission on a
//! destination when a rule naming them (or `"*"`, anyone, anonymous included) lists a
//! pattern covering it. Patterns are destinations with the topic wildcards in their
//! name (`/queue/orders.#`, `/topic/prices.*`); a wildcard SUBSCRIBE is allowed only
//! when a pattern covers everything it could receive (`/topic/prices.#` covers
//! `/topic/prices.*.eu`, `/topic/prices.*` does not cover `/topic/prices.#`).
//! Temp queues are outside ACLs: they are private to their connection already, and
//! replies to them must get through.

use std::fmt;

use crate::config::AclRule;

/// What a frame asks to do with a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// SUBSCRIBE.
    Read,
    /// SEND.
    Write,
    /// The first use of a queue, which creates it.
    Create,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Create => "create",
        })
    }
}

/// A destination pattern: its kind (`/queue/` or `/topic/`) and the words of its name.
#[derive(Clone, Debug)]
struct DestPattern {
    kind: &'static str,
    words: Vec<String>,
}

const KINDS: [&str; 2] = ["/queue/", "/topic/"];

impl DestPattern {
    fn parse(pattern: &str) -> Option<DestPattern> {
        let kind = KINDS.iter().find(|k| pattern.starts_with(**k))?;
        let name = &pattern[kind.len()..];
        (!name.is_empty()).then(|| DestPattern {
            kind,
            words: name.split('.').map(str::to_owned).collect(),
        })
    }

    /// Whether every name `destination` (itself possibly a pattern) can stand for is
    /// one this pattern matches.
    fn covers(&self, destination: &str) -> bool {
        let Some(name) = destination.strip_prefix(self.kind) else {
            return false;
        };
        let d: Vec<&str> = name.split('.').collect();
        covers(&self.words, &d)
    }
}

/// Whether pattern `p` covers pattern `d`, word by word: `#` in `p` takes any run of
/// `d`'s words (wildcards included), `*` takes one word that is not `#`, a literal
/// only itself. Dynamic programming over (i, j), linear in the product of the
/// lengths, so no pattern makes it blow up.
fn covers(p: &[String], d: &[&str]) -> bool {
    let (n, m) = (p.len(), d.len());
    // ok[i][j]: p[i..] covers d[j..].
    let mut ok = vec![vec![false; m + 1]; n + 1];
    ok[n][m] = true;
    for i in (0..n).rev() {
        for j in (0..=m).rev() {
            ok[i][j] = match p[i].as_str() {
                "#" => ok[i + 1][j] || (j < m && ok[i][j + 1]),
                _ if j == m => false,
                "*" => d[j] != "#" && ok[i + 1][j + 1],
                w => d[j] == w && ok[i + 1][j + 1],
            };
        }
    }
    ok[0][0]
}

#[derive(Clone, Debug)]
struct Rule {
    users: Vec<String>,
    roles: Vec<String>,
    read: Vec<DestPattern>,
    write: Vec<DestPattern>,
    create: Vec<DestPattern>,
}

/// The configured ACLs.
#[derive(Clone, Debug, Default)]
pub struct Acl {
    rules: Vec<Rule>,
}

impl Acl {
    /// From `[[auth.acls]]` (validated: every pattern parses).
    pub fn new(rules: &[AclRule]) -> Acl {
        let parse = |list: &[String]| list.iter().filter_map(|p| DestPattern::parse(p)).collect();
        Acl {
            rules: rules
                .iter()
                .map(|r| Rule {
                    users: r.users.clone(),
                    roles: r.roles.clone(),
                    read: parse(&r.read),
                    write: parse(&r.write),
                    create: parse(&r.create),
                })
                .collect(),
        }
    }

    /// Whether there are no rules: everyone may do everything.
    pub fn is_open(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `pattern` is a valid ACL pattern.
    pub fn valid_pattern(pattern: &str) -> bool {
        DestPattern::parse(pattern).is_some()
    }

    /// Whether `user` (`None`: anonymous) may do `permission` on `destination`.
    pub fn allows(&self, user: Option<&str>, permission: Permission, destination: &str) -> bool {
        self.allows_with_roles(user, &[], permission, destination)
    }

    /// [`Acl::allows`] for a user with token roles: a rule applies when it names the
    /// user or one of the roles.
    pub fn allows_with_roles(
        &self,
        user: Option<&str>,
        roles: &[String],
        permission: Permission,
        destination: &str,
    ) -> bool {
        if self.rules.is_empty() || destination.starts_with("/temp-queue/") {
            return true;
        }
        self.rules
            .iter()
            .filter(|r| {
                r.users.iter().any(|u| u == "*" || Some(u.as_str()) == user)
                    || r.roles.iter().any(|role| roles.contains(role))
            })
            .any(|r| {
                let patterns = match permission {
                    Permission::Read => &r.read,
                    Permission::Write => &r.write,
                    Permission::Create => &r.create,
                };
                patterns.iter().any(|p| p.covers(destination))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(users: &[&str], read: &[&str], write: &[&str], create: &[&str]) -> AclRule {
        let v = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        AclRule {
            users: v(users),
            read: v(read),
            write: v(write),
            create: v(create),
            roles: Vec::new(),
        }
    }

    #[test]
    fn no_rules_allow_everything_and_rules_deny_the_rest() {
        assert!(Acl::default().allows(None, Permission::Write, "/queue/x"));
        let acl = Acl::new(&[
            rule(&["alice"], &["/queue/orders.#"], &["/queue/orders.#"], &[]),
            rule(&["*"], &["/topic/public.*"], &[], &[]),
        ]);
        assert!(acl.allows(Some("alice"), Permission::Read, "/queue/orders.eu.new"));
        assert!(acl.allows(Some("alice"), Permission::Write, "/queue/orders"));
        assert!(!acl.allows(Some("alice"), Permission::Create, "/queue/orders.eu"));
        assert!(!acl.allows(Some("bob"), Permission::Read, "/queue/orders.eu"));
        assert!(acl.allows(Some("bob"), Permission::Read, "/topic/public.news"));
        assert!(acl.allows(None, Permission::Read, "/topic/public.news"));
        assert!(!acl.allows(None, Permission::Write, "/topic/public.news"));
        assert!(acl.allows(None, Permission::Write, "/temp-queue/s/replies"));
        assert!(!acl.allows(Some("alice"), Permission::Read, "/topic/orders.eu"));
    }

    #[test]
    fn a_wildcard_subscription_needs_a_pattern_covering_all_it_can_receive() {
        let acl = Acl::new(&[rule(
            &["*"],
            &["/topic/prices.#", "/topic/news.*"],
            &[],
            &[],
        )]);
        let read = |d| acl.allows(None, Permission::Read, d);
        assert!(read("/topic/prices.*.eu"));
        assert!(read("/topic/prices.#"));
        assert!(read("/topic/news.*"));
        assert!(!read("/topic/news.#"));
        assert!(!read("/topic/#"));
        assert!(!read("/topic/*.eu"));
        assert!(read("/topic/news.sport"));
        assert!(!read("/topic/news.sport.extra"));
    }

    #[test]
    fn covering_is_linear_however_many_hashes() {
        let p: Vec<String> = std::iter::repeat_n("#".to_owned(), 64).collect();
        let d: Vec<&str> = std::iter::repeat_n("a", 64).chain(["b"]).collect();
        assert!(covers(&p, &d));
        let mut q = p.clone();
        q.push("c".into());
        assert!(!covers(&q, &d));
    }
}
