//! A lean RFC 6455 client codec for the hot path (the default `--ws-client lean`).
//!
//! tokio-tungstenite costs a wake-up, a lock and an allocation per received message,
//! which made the tool, not the broker, the bottleneck in WebSocket fan-out. Here the
//! socket is read in large chunks, server frames (never masked) are decoded in place
//! and their payloads appended to the STOMP read buffer; outgoing frames are written
//! with a per-frame masking key, many per `write_all`. The handshake uses tungstenite's
//! key helpers. Pings are answered with pongs on the next flush.

use std::sync::{Arc, Mutex};

use anyhow::bail;
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Performs the HTTP upgrade on `stream`. Returns bytes read past the response.
pub async fn handshake(
    stream: &mut TcpStream,
    url: &str,
    subprotocol: Option<&str>,
) -> anyhow::Result<BytesMut> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let key = generate_key();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(p) = subprotocol {
        req.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let end = loop {
        if let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            bail!("WebSocket handshake response too large");
        }
        if stream.read_buf(&mut buf).await? == 0 {
            bail!("connection closed during the WebSocket handshake");
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        bail!("WebSocket upgrade refused: {status}");
    }
    let mut accept = None;
    let mut proto = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let v = v.trim().to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "sec-websocket-accept" => accept = Some(v),
                "sec-websocket-protocol" => proto = Some(v),
                _ => {}
            }
        }
    }
    if accept.as_deref() != Some(derive_accept_key(key.as_bytes()).as_str()) {
        bail!("bad Sec-WebSocket-Accept in the upgrade response");
    }
    match (proto.as_deref(), subprotocol) {
        (Some(p), Some(o)) if p != o => bail!("server chose subprotocol {p:?}, we offered {o:?}"),
        (Some(p), None) => bail!("server chose subprotocol {p:?}, we offered none"),
        _ => {}
    }
    buf.advance(end);
    Ok(buf)
}

/// Control frames the reader owes the peer (pong payloads), written by the writer.
pub type Owed = Arc<Mutex<Vec<u8>>>;

/// Streaming decoder state for server-to-client frames.
pub struct Decoder {
    /// Undecoded socket bytes.
    pub raw: BytesMut,
    /// Payload bytes of the current data frame still to come.
    remaining: u64,
    pub owed: Owed,
}

impl Decoder {
    pub fn new(leftover: BytesMut, owed: Owed, cap: usize) -> Decoder {
        let mut raw = BytesMut::with_capacity(cap.max(leftover.len()));
        raw.extend_from_slice(&leftover);
        Decoder {
            raw,
            remaining: 0,
            owed,
        }
    }

    /// Moves data-frame payloads from `raw` to `out`. `Ok(false)`: a Close frame came.
    pub fn decode(&mut self, out: &mut BytesMut) -> anyhow::Result<bool> {
        loop {
            if self.remaining > 0 {
                let n = (self.remaining as usize).min(self.raw.len());
                if n == 0 {
                    return Ok(true);
                }
                out.extend_from_slice(&self.raw[..n]);
                self.raw.advance(n);
                self.remaining -= n as u64;
                continue;
            }
            let r = &self.raw[..];
            if r.len() < 2 {
                return Ok(true);
            }
            let opcode = r[0] & 0x0f;
            if r[1] & 0x80 != 0 {
                bail!("server sent a masked WebSocket frame");
            }
            let (len, hdr) = match r[1] & 0x7f {
                126 if r.len() >= 4 => (u16::from_be_bytes([r[2], r[3]]) as u64, 4),
                127 if r.len() >= 10 => (u64::from_be_bytes(r[2..10].try_into().unwrap()), 10),
                126 | 127 => return Ok(true),
                n => (n as u64, 2),
            };
            match opcode {
                0..=2 => {
                    self.raw.advance(hdr);
                    self.remaining = len;
                }
                8..=10 => {
                    let total = hdr + len as usize;
                    if self.raw.len() < total {
                        return Ok(true);
                    }
                    match opcode {
                        8 => return Ok(false),
                        9 => {
                            let mut owed = self.owed.lock().unwrap();
                            // The pong's key need not be random: it only has to be there.
                            put_frame(
                                &mut owed,
                                0x8a,
                                [0x5a, 0x3c, 0x96, 0xe1],
                                &self.raw[hdr..total],
                            );
                        }
                        _ => {}
                    }
                    self.raw.advance(total);
                }
                other => bail!("unknown WebSocket opcode {other}"),
            }
        }
    }
}

/// Appends the length byte(s) of a client frame (mask bit set), RFC 6455 §5.2.
fn put_masked_len(dst: &mut impl BufMut, len: usize) {
    if len < 126 {
        dst.put_u8(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        dst.put_u8(0x80 | 126);
        dst.put_u16(len as u16);
    } else {
        dst.put_u8(0x80 | 127);
        dst.put_u64(len as u64);
    }
}

/// Appends a whole client frame: first byte, masked length, key, masked payload.
fn put_frame(dst: &mut Vec<u8>, first: u8, key: [u8; 4], payload: &[u8]) {
    dst.reserve(payload.len() + 14);
    dst.push(first);
    put_masked_len(dst, payload.len());
    dst.extend_from_slice(&key);
    let start = dst.len();
    dst.extend_from_slice(payload);
    mask(&mut dst[start..], key);
}

/// Frame encoder state: a cheap per-frame masking key.
pub struct Encoder {
    rng: u64,
}

impl Encoder {
    pub fn new(seed: u64) -> Encoder {
        Encoder { rng: seed | 1 }
    }

    fn next_key(&mut self) -> [u8; 4] {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x as u32).to_ne_bytes()
    }

    /// Appends one binary frame carrying `payload` to `dst`.
    #[inline]
    pub fn binary(&mut self, dst: &mut BytesMut, payload: &[u8]) {
        dst.reserve(payload.len() + 14);
        dst.put_u8(0x82);
        put_masked_len(dst, payload.len());
        let key = self.next_key();
        dst.put_slice(&key);
        let start = dst.len();
        dst.extend_from_slice(payload);
        mask(&mut dst[start..], key);
    }
}

/// XORs `data` with the repeating 4-byte `key`, eight bytes at a time.
#[inline]
fn mask(data: &mut [u8], key: [u8; 4]) {
    let k8 = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().unwrap()) ^ k8;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_round_trips_and_matches_bytewise() {
        let key = [1, 2, 3, 4];
        let orig: Vec<u8> = (0..37u8).collect();
        let mut d = orig.clone();
        mask(&mut d, key);
        for (i, (a, b)) in d.iter().zip(&orig).enumerate() {
            assert_eq!(*a, b ^ key[i & 3]);
        }
        mask(&mut d, key);
        assert_eq!(d, orig);
    }

    #[test]
    fn decoder_joins_split_frames_and_answers_pings() {
        let owed: Owed = Arc::default();
        let mut d = Decoder::new(BytesMut::new(), owed.clone(), 64);
        let mut out = BytesMut::new();
        let mut wire = vec![0x82, 5];
        wire.extend_from_slice(b"hello");
        wire.extend_from_slice(&[0x89, 1, b'p']);
        wire.extend_from_slice(&[0x82, 126, 0, 200]);
        wire.extend_from_slice(&[b'x'; 200]);
        for chunk in wire.chunks(3) {
            d.raw.extend_from_slice(chunk);
            assert!(d.decode(&mut out).unwrap());
        }
        assert_eq!(&out[..5], b"hello");
        assert_eq!(out.len(), 205);
        assert_eq!(owed.lock().unwrap()[0], 0x8a);
        d.raw.extend_from_slice(&[0x88, 0]);
        assert!(!d.decode(&mut out).unwrap());
    }
}
