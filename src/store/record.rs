//! The stored form of a message: a small hand-written binary layout, so that a record
//! is one allocation to write and one pass to read, and the format is ours to version.
//!
//! ```text
//! u8 format (1) | u64 expires_ms | u64 deliver_at_ms |
//! str id | str destination | u32 header count | (str name, str value)* | body (the rest)
//! ```
//! `str` is a u32 length then UTF-8; integers are little-endian. A zero time means none.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::Headers;

const FORMAT: u8 = 1;

/// One persistent message as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The message id (kept across restarts: a redelivery has the same id).
    pub id: String,
    /// The destination the producer sent to.
    pub destination: String,
    /// The producer's headers, as MESSAGE carries them.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
    /// When it expires, in ms since the Unix epoch (0: never).
    pub expires_ms: u64,
    /// When it may be delivered, in ms since the Unix epoch (0: at once).
    pub deliver_at_ms: u64,
}

/// Why a stored record could not be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unreadable message record: {0}")]
pub struct RecordError(&'static str);

impl Record {
    /// The encoded record.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::from(&self.encode_head()[..]);
        out.extend_from_slice(&self.body);
        out.freeze()
    }

    /// The encoded record without its body, which follows it (see [`encode_head`]).
    pub fn encode_head(&self) -> Bytes {
        encode_head(
            &self.id,
            &self.destination,
            &self.headers,
            self.expires_ms,
            self.deliver_at_ms,
        )
    }

    /// Reads a record back; the body is a slice of `bytes`.
    pub fn decode(bytes: Bytes) -> Result<Record, RecordError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(1)?[0] != FORMAT {
            return Err(RecordError("unknown format"));
        }
        let expires_ms = r.u64()?;
        let deliver_at_ms = r.u64()?;
        let id = r.string()?;
        let destination = r.string()?;
        let n = r.u32()? as usize;
        let mut headers = Headers::new();
        for _ in 0..n {
            let k = r.string()?;
            let v = r.string()?;
            headers.push(k, v);
        }
        let body = r.bytes.slice(r.at..);
        Ok(Record {
            id,
            destination,
            headers,
            body,
            expires_ms,
            deliver_at_ms,
        })
    }
}

/// A record without its body, from a message's parts (no copy of them first): what
/// a persistent message waiting for its commit holds besides the body it shares (the
/// store's thread joins the two as it writes).
pub fn encode_head(
    id: &str,
    destination: &str,
    headers: &Headers,
    expires_ms: u64,
    deliver_at_ms: u64,
) -> Bytes {
    let header_bytes: usize = headers.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out =
        BytesMut::with_capacity(1 + 16 + 12 + id.len() + destination.len() + header_bytes);
    out.put_u8(FORMAT);
    out.put_u64_le(expires_ms);
    out.put_u64_le(deliver_at_ms);
    put_str(&mut out, id);
    put_str(&mut out, destination);
    out.put_u32_le(headers.len() as u32);
    for (k, v) in headers.iter() {
        put_str(&mut out, k);
        put_str(&mut out, v);
    }
    out.freeze()
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u32_le(s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

struct Reader {
    bytes: Bytes,
    at: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(RecordError("truncated"))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn string(&mut self) -> Result<String, RecordError> {
        let n = self.u32()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| RecordError("invalid UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let mut headers = Headers::new();
        headers.push("persistent", "true");
        headers.push("x-empty", "");
        let record = Record {
            id: "abc-1".into(),
            destination: "/queue/orders".into(),
            headers,
            body: Bytes::from_static(b"\0binary\nbody"),
            expires_ms: 1_700_000_000_000,
            deliver_at_ms: 42,
        };
        assert_eq!(Record::decode(record.encode()).unwrap(), record);
    }

    #[test]
    fn a_cut_record_is_an_error_not_a_panic() {
        let record = Record {
            id: "x".into(),
            destination: "/queue/q".into(),
            headers: Headers::new(),
            body: Bytes::new(),
            expires_ms: 0,
            deliver_at_ms: 0,
        }
        .encode();
        for n in 0..record.len() {
            assert!(Record::decode(record.slice(..n)).is_err(), "cut at {n}");
        }
    }
}
