//! What the broker put on the wire, read by a parser of our own.
//!
//! The suite deliberately does not reuse stompbox's parser: a suite that shares the
//! implementation's reading of the spec would share its bugs. Headers are kept exactly
//! as received (still escaped), so cases can check the escaping itself; the decoded
//! value is offered beside it.

use bytes::Bytes;

/// One frame as received.
#[derive(Debug, Clone)]
pub struct Frame {
    pub command: String,
    /// Header lines as received: name and value still escaped, in order, repeats kept.
    pub raw_headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Bytes,
    /// Whether the frame declared a `content-length`.
    pub has_content_length: bool,
}

impl Frame {
    /// The first value of a header, unescaped per STOMP 1.2 (CONNECTED is never escaped).
    pub fn header(&self, name: &str) -> Option<String> {
        let raw_name = name.as_bytes();
        self.raw_headers.iter().find_map(|(n, v)| {
            let n = self.decode(n);
            (n.as_bytes() == raw_name).then(|| self.decode(v))
        })
    }

    /// The first value of a header exactly as it was on the wire.
    pub fn raw_header(&self, name: &str) -> Option<&[u8]> {
        self.raw_headers
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    pub fn is(&self, command: &str) -> bool {
        self.command == command
    }

    /// One line for reports: the command and its `message` header, if any.
    pub fn summary(&self) -> String {
        match self.header("message") {
            Some(m) => format!("{} (message: {})", self.command, m),
            None => self.command.clone(),
        }
    }

    fn decode(&self, raw: &[u8]) -> String {
        if self.command == "CONNECTED" {
            return String::from_utf8_lossy(raw).into_owned();
        }
        unescape(raw).unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned())
    }
}

/// STOMP 1.2 header unescaping; `None` for an undefined escape.
pub fn unescape(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next()? {
            b'r' => b'\r',
            b'n' => b'\n',
            b'c' => b':',
            b'\\' => b'\\',
            _ => return None,
        });
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// STOMP 1.2 header escaping, for building frames.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            ':' => out.push_str("\\c"),
            c => out.push(c),
        }
    }
    out
}

/// How many bytes of EOLs (LF or CRLF) `buf` starts with.
pub fn eols_at_front(buf: &[u8]) -> usize {
    let mut n = 0;
    loop {
        match &buf[n..] {
            [b'\n', ..] => n += 1,
            [b'\r', b'\n', ..] => n += 2,
            _ => return n,
        }
    }
}

/// What the stream held at its front.
#[derive(Debug)]
pub enum Parsed {
    /// Not enough bytes yet.
    Incomplete,
    /// A heart-beat EOL, `len` bytes long (LF or CRLF).
    HeartBeat { len: usize },
    /// A whole frame, `len` bytes long including its NUL.
    Frame { frame: Frame, len: usize },
}

/// Reads the front of `buf`. Errors describe bytes no STOMP server should send.
pub fn parse(buf: &[u8]) -> Result<Parsed, String> {
    match buf {
        [] | [b'\r'] => return Ok(Parsed::Incomplete),
        [b'\n', ..] => return Ok(Parsed::HeartBeat { len: 1 }),
        [b'\r', b'\n', ..] => return Ok(Parsed::HeartBeat { len: 2 }),
        _ => {}
    }
    let mut pos = 0;
    let line = |pos: &mut usize| -> Option<Vec<u8>> {
        let rest = &buf[*pos..];
        let nl = memchr::memchr(b'\n', rest)?;
        let mut l = &rest[..nl];
        if l.last() == Some(&b'\r') {
            l = &l[..l.len() - 1];
        }
        *pos += nl + 1;
        Some(l.to_vec())
    };
    let Some(command) = line(&mut pos) else {
        return Ok(Parsed::Incomplete);
    };
    let command = String::from_utf8(command).map_err(|_| "command is not UTF-8".to_string())?;
    let mut raw_headers = Vec::new();
    loop {
        let Some(l) = line(&mut pos) else {
            return Ok(Parsed::Incomplete);
        };
        if l.is_empty() {
            break;
        }
        let colon = memchr::memchr(b':', &l)
            .ok_or_else(|| format!("header line without a colon in {command}"))?;
        raw_headers.push((l[..colon].to_vec(), l[colon + 1..].to_vec()));
    }
    let mut frame = Frame {
        command,
        raw_headers,
        body: Bytes::new(),
        has_content_length: false,
    };
    let length = frame.header("content-length");
    frame.has_content_length = length.is_some();
    let rest = &buf[pos..];
    let body_len = match length {
        Some(l) => {
            let n: usize = l
                .trim()
                .parse()
                .map_err(|_| format!("content-length {l:?} is not a number"))?;
            if rest.len() <= n {
                return Ok(Parsed::Incomplete);
            }
            if rest[n] != 0 {
                return Err(format!(
                    "{} body is not followed by NUL at content-length {n}",
                    frame.command
                ));
            }
            n
        }
        None => match memchr::memchr(0, rest) {
            Some(n) => n,
            None => return Ok(Parsed::Incomplete),
        },
    };
    frame.body = Bytes::copy_from_slice(&rest[..body_len]);
    Ok(Parsed::Frame {
        frame,
        len: pos + body_len + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> (Frame, usize) {
        match parse(bytes).unwrap() {
            Parsed::Frame { frame, len } => (frame, len),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keeps_raw_headers_and_decodes_on_request() {
        let (f, len) = one(b"MESSAGE\r\nx:a\\cb\nx:second\n\nhi\0rest");
        assert_eq!(len, 29);
        assert_eq!(f.raw_header("x"), Some(&b"a\\cb"[..]));
        assert_eq!(f.header("x").as_deref(), Some("a:b"));
        assert_eq!(&f.body[..], b"hi");
    }

    #[test]
    fn connected_is_not_unescaped() {
        let (f, _) = one(b"CONNECTED\nserver:a\\cb\n\n\0");
        assert_eq!(f.header("server").as_deref(), Some("a\\cb"));
    }

    #[test]
    fn content_length_body_may_hold_nuls() {
        let (f, _) = one(b"MESSAGE\ncontent-length:3\n\n\0\0\0\0");
        assert_eq!(&f.body[..], b"\0\0\0");
        assert!(f.has_content_length);
        assert!(parse(b"MESSAGE\ncontent-length:3\n\n\0\0\0x").is_err());
    }

    #[test]
    fn heart_beats_and_partial_input() {
        assert!(matches!(
            parse(b"\n").unwrap(),
            Parsed::HeartBeat { len: 1 }
        ));
        assert!(matches!(
            parse(b"\r\n").unwrap(),
            Parsed::HeartBeat { len: 2 }
        ));
        assert!(matches!(parse(b"\r").unwrap(), Parsed::Incomplete));
        assert!(matches!(
            parse(b"RECEIPT\nreceipt-id:1\n").unwrap(),
            Parsed::Incomplete
        ));
        assert!(matches!(
            parse(b"MESSAGE\ncontent-length:2\n\nab").unwrap(),
            Parsed::Incomplete
        ));
    }

    #[test]
    fn eols_at_front_stop_at_anything_else() {
        assert_eq!(eols_at_front(b"\n\r\n\nMESSAGE"), 4);
        assert_eq!(eols_at_front(b"\n\r"), 1);
        assert_eq!(eols_at_front(b"MESSAGE\n"), 0);
        assert_eq!(eols_at_front(b""), 0);
    }

    #[test]
    fn escape_round_trips() {
        let v = "a:b\\c\nd\re";
        assert_eq!(unescape(escape(v).as_bytes()).as_deref(), Some(v));
        assert_eq!(unescape(b"a\\tb"), None);
        assert_eq!(unescape(b"a\\"), None);
    }
}
