//! The receive hot path: a zero-allocation STOMP frame scanner.
//!
//! [`scan`] looks at the front of a read buffer and reports one item without copying or
//! allocating: heart-beat EOLs to skip, or a complete frame's command, total length,
//! body range and (first) `ack` header value range. The body is skipped by
//! `content-length` when present, else by a memchr for the NUL. Header values are not
//! unescaped: the only one we echo back (`ack`) is an opaque id that brokers do not
//! escape in practice, and we send it back byte for byte.

use std::ops::Range;

use memchr::memchr;

/// The commands a client receives; everything else is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Message,
    Receipt,
    Error,
    Connected,
    /// A SEND (only seen in `--raw` mode, where a relay forwards client frames).
    Send,
    Other,
}

/// One complete frame at the front of the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    pub cmd: Cmd,
    /// Bytes from the buffer start through the NUL (heart-beat EOLs before it included).
    pub len: usize,
    /// The header block (after the command line, up to the blank line).
    pub headers: Range<usize>,
    pub body: Range<usize>,
    /// The value of the first `ack` header, when asked for.
    pub ack: Option<Range<usize>>,
}

/// What is at the front of the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// Need more bytes (nothing consumed; heart-beat EOLs are only consumed with a frame
    /// or once the whole buffer is EOLs).
    Incomplete,
    /// The whole buffer is heart-beat EOLs: consume this many bytes.
    Heartbeats(usize),
    Frame(FrameInfo),
}

/// The stream is not STOMP.
#[derive(Debug)]
pub struct ScanError(pub &'static str);

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ScanError {}

/// One line starting at `from`: `(end of content, CR excluded; index after the LF)`.
#[inline]
fn line(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let nl = from + memchr(b'\n', &buf[from..])?;
    let end = if nl > from && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    Some((end, nl + 1))
}

#[inline]
fn parse_decimal(b: &[u8]) -> Option<usize> {
    if b.is_empty() || b.len() > 18 {
        return None;
    }
    let mut n = 0usize;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (c - b'0') as usize;
    }
    Some(n)
}

/// Scans the item at the front of `buf`. `want_ack` also locates the `ack` header.
#[inline]
pub fn scan(buf: &[u8], want_ack: bool) -> Result<Item, ScanError> {
    let mut i = 0;
    while i < buf.len() && (buf[i] == b'\n' || buf[i] == b'\r') {
        i += 1;
    }
    if i == buf.len() {
        return Ok(if i == 0 {
            Item::Incomplete
        } else {
            Item::Heartbeats(i)
        });
    }
    let Some((cmd_end, mut pos)) = line(buf, i) else {
        if buf.len() - i > 64 {
            return Err(ScanError("command line longer than 64 bytes"));
        }
        return Ok(Item::Incomplete);
    };
    let cmd = match &buf[i..cmd_end] {
        b"MESSAGE" => Cmd::Message,
        b"RECEIPT" => Cmd::Receipt,
        b"ERROR" => Cmd::Error,
        b"CONNECTED" => Cmd::Connected,
        b"SEND" => Cmd::Send,
        _ => Cmd::Other,
    };
    let headers_start = pos;
    let mut content_length = None;
    let mut ack = None;
    let headers_end;
    loop {
        let Some((end, next)) = line(buf, pos) else {
            return Ok(Item::Incomplete);
        };
        if end == pos {
            headers_end = pos;
            pos = next;
            break;
        }
        let l = &buf[pos..end];
        match l[0] {
            b'c' if content_length.is_none() && l.starts_with(b"content-length:") => {
                content_length = Some(
                    parse_decimal(&l[15..]).ok_or(ScanError("invalid content-length header"))?,
                );
            }
            b'a' if want_ack && ack.is_none() && l.starts_with(b"ack:") => {
                ack = Some(pos + 4..end);
            }
            _ => {}
        }
        pos = next;
    }
    let body_start = pos;
    let body_end = match content_length {
        Some(n) => {
            if buf.len() < body_start + n + 1 {
                return Ok(Item::Incomplete);
            }
            if buf[body_start + n] != 0 {
                return Err(ScanError("no NUL after content-length body octets"));
            }
            body_start + n
        }
        None => match memchr(0, &buf[body_start..]) {
            Some(n) => body_start + n,
            None => return Ok(Item::Incomplete),
        },
    };
    Ok(Item::Frame(FrameInfo {
        cmd,
        len: body_end + 1,
        headers: headers_start..headers_end,
        body: body_start..body_end,
        ack,
    }))
}

/// A readable one-line summary of an ERROR frame (setup and failure paths only).
pub fn describe_error(buf: &[u8], f: &FrameInfo) -> String {
    let headers = String::from_utf8_lossy(&buf[f.headers.clone()]);
    let message = headers
        .lines()
        .find_map(|l| l.strip_prefix("message:"))
        .unwrap_or("(no message header)")
        .to_string();
    let body = String::from_utf8_lossy(&buf[f.body.clone()]);
    let body = body.trim();
    if body.is_empty() || body == message {
        format!("broker sent ERROR: {message}")
    } else {
        format!("broker sent ERROR: {message} ({body})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_with_content_length_and_ack() {
        let b = b"\n\r\nMESSAGE\nsubscription:0\nack:42\ncontent-length:3\n\na\0b\0REST";
        let Item::Frame(f) = scan(b, true).unwrap() else {
            panic!()
        };
        assert_eq!(f.cmd, Cmd::Message);
        assert_eq!(&b[f.ack.unwrap()], b"42");
        assert_eq!(&b[f.body.clone()], b"a\0b");
        assert_eq!(&b[f.len..], b"REST");
        for cut in 0..f.len {
            assert!(matches!(
                scan(&b[..cut], true).unwrap(),
                Item::Incomplete | Item::Heartbeats(_)
            ));
        }
    }

    #[test]
    fn crlf_no_content_length() {
        let b = b"RECEIPT\r\nreceipt-id:r\r\n\r\n\0";
        let Item::Frame(f) = scan(b, false).unwrap() else {
            panic!()
        };
        assert_eq!(f.cmd, Cmd::Receipt);
        assert_eq!(f.len, b.len());
        assert!(f.body.is_empty());
    }

    #[test]
    fn heartbeats_only() {
        assert_eq!(scan(b"\n\n", false).unwrap(), Item::Heartbeats(2));
        assert_eq!(scan(b"", false).unwrap(), Item::Incomplete);
    }
}
