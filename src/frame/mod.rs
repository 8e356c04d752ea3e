//! The STOMP wire format: frames, commands, headers and protocol versions.
//!
//! Everything here is pure and I/O-free so it can be unit-tested and fuzzed on its own.
//! [`Parser`] turns bytes into [`Inbound`] items; [`encode`] and [`MessageParts`] turn
//! frames back into bytes.

mod encode;
mod parse;
#[cfg(test)]
mod roundtrip;

pub use encode::{MessageParts, encode, escape_into};
pub use parse::{FrameError, Limits, Parser};

use bytes::Bytes;

/// A STOMP protocol version. Ordered, so "the highest common version" is a `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no header escaping, no NACK, no heart-beats required.
    V1_0,
    /// STOMP 1.1: escaping of `\n`, `:` and `\`; heart-beats; NACK.
    V1_1,
    /// STOMP 1.2: adds `\r` escaping, CRLF line endings and `ack` ids.
    V1_2,
}

impl Version {
    /// All versions, lowest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// The version as it appears in `accept-version` and `version` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses a single version token such as `1.2`.
    pub fn parse(s: &str) -> Option<Version> {
        match s {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }

    /// Index into per-version caches (0, 1, 2).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A STOMP command. Commands are case-sensitive on the wire (checklist F2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Command {
    Connect,
    Stomp,
    Connected,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    Message,
    Receipt,
    Error,
}

impl Command {
    /// The command as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Connected => "CONNECTED",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Exact, case-sensitive match of a command line.
    pub fn from_bytes(b: &[u8]) -> Option<Command> {
        Some(match b {
            b"CONNECT" => Command::Connect,
            b"STOMP" => Command::Stomp,
            b"CONNECTED" => Command::Connected,
            b"SEND" => Command::Send,
            b"SUBSCRIBE" => Command::Subscribe,
            b"UNSUBSCRIBE" => Command::Unsubscribe,
            b"ACK" => Command::Ack,
            b"NACK" => Command::Nack,
            b"BEGIN" => Command::Begin,
            b"COMMIT" => Command::Commit,
            b"ABORT" => Command::Abort,
            b"DISCONNECT" => Command::Disconnect,
            b"MESSAGE" => Command::Message,
            b"RECEIPT" => Command::Receipt,
            b"ERROR" => Command::Error,
            _ => return None,
        })
    }

    /// CONNECT, STOMP and CONNECTED are exempt from header escaping in every version
    /// (checklist F4): clients put raw colons and backslashes in passcodes.
    pub fn escapes_headers(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }

    /// Only SEND, MESSAGE and ERROR may carry a body (checklist F8).
    pub fn may_have_body(self) -> bool {
        matches!(self, Command::Send | Command::Message | Command::Error)
    }
}

/// Headers in wire order. Repeated names are kept; lookups return the first (F10).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

/// Credentials a CONNECT (or a token refresh) carries: never shown by `Debug`.
const SECRET_HEADERS: [&str; 3] = ["passcode", "token", "authorization"];

/// Hand-written so that a logged frame never shows a passcode or a token.
impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, v)| {
                let secret = SECRET_HEADERS.iter().any(|s| k.eq_ignore_ascii_case(s));
                (k.as_str(), if secret { "<redacted>" } else { v.as_str() })
            }))
            .finish()
    }
}

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// The value of the first header named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Appends a header, keeping any earlier one of the same name in front.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// Replaces the value of the first header named `name`; returns whether it existed.
    pub fn set_first(&mut self, name: &str, value: String) -> bool {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => {
                slot.1 = value;
                true
            }
            None => false,
        }
    }

    /// Iterates in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of header lines, repeats included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes of the names and values, with a separator and an EOL each.
    pub fn byte_len(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len() + 2).sum()
    }

    /// Keeps only the headers for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.0.retain(|(k, v)| keep(k, v));
    }

    /// Gives back spare capacity (none at all when empty): for headers kept as long
    /// as a queued message.
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Headers(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// One STOMP frame. The body is a `Bytes` view into the connection's read buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The command line.
    pub command: Command,
    /// Decoded (unescaped) headers.
    pub headers: Headers,
    /// The body octets, without the terminating NUL.
    pub body: Bytes,
}

impl Frame {
    /// What the frame costs held in memory, near enough: its headers and its body.
    /// What held frames, transactions and memory limits count.
    pub fn size(&self) -> usize {
        self.headers.byte_len() + self.body.len()
    }

    /// A frame with no headers and no body.
    pub fn new(command: Command) -> Self {
        Frame {
            command,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Builder-style header append.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(name, value);
        self
    }

    /// Builder-style body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// What the parser yields: a frame, or a heart-beat EOL seen between frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A complete frame.
    Frame(Frame),
    /// A bare EOL between frames: proof of life, nothing else (checklist F3, H3).
    Heartbeat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_credentials() {
        let frame = Frame::new(Command::Connect)
            .header("login", "alice")
            .header("passcode", "hunter2")
            .header("token", "eyJhbGciOi.secret.sig")
            .header("Authorization", "Basic c3ZjOnB3");
        let shown = format!("{frame:?}");
        assert!(shown.contains("alice"), "{shown}");
        for secret in ["hunter2", "eyJhbGciOi", "c3ZjOnB3"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
