//! Heart-beat negotiation (checklist H1, H2): pure arithmetic, tested on its own.

use std::time::Duration;

/// Parses `heart-beat:<cx>,<cy>`: two non-negative decimal integers, nothing else.
pub fn parse(value: &str) -> Option<(u64, u64)> {
    let (a, b) = value.split_once(',')?;
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    Some((num(a)?, num(b)?))
}

/// The two negotiated intervals; `None` means no heart-beats that way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// How often we must send something to the client.
    pub send: Option<Duration>,
    /// How often the client promised to send something to us.
    pub recv: Option<Duration>,
}

/// Combines the client's `(cx, cy)` with our `(sx, sy)` = (`send_ms`, `recv_ms`):
/// each direction is 0 if either side said 0, otherwise the larger of the two.
pub fn negotiate(client: (u64, u64), server_send_ms: u64, server_recv_ms: u64) -> Negotiated {
    let (cx, cy) = client;
    let pick = |a: u64, b: u64| (a != 0 && b != 0).then(|| Duration::from_millis(a.max(b)));
    Negotiated {
        send: pick(server_send_ms, cy),
        recv: pick(cx, server_recv_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h1_header_syntax() {
        assert_eq!(parse("0,0"), Some((0, 0)));
        assert_eq!(parse("10000,5000"), Some((10000, 5000)));
        for bad in ["", "1", "1,", ",1", "-1,0", " 1,0", "1,0,0", "a,b", "1.5,0"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn h2_negotiation_table() {
        let ms = |v: u64| Some(Duration::from_millis(v));
        // (client cx,cy), (server sx,sy) -> (send, recv)
        let table = [
            ((0, 0), (10_000, 10_000), None, None),
            ((10_000, 10_000), (10_000, 10_000), ms(10_000), ms(10_000)),
            ((4_000, 20_000), (10_000, 10_000), ms(20_000), ms(10_000)),
            ((30_000, 1_000), (10_000, 10_000), ms(10_000), ms(30_000)),
            ((5_000, 5_000), (0, 10_000), None, ms(10_000)),
            ((5_000, 5_000), (10_000, 0), ms(10_000), None),
        ];
        for (client, (sx, sy), send, recv) in table {
            assert_eq!(
                negotiate(client, sx, sy),
                Negotiated { send, recv },
                "{client:?} vs {sx},{sy}"
            );
        }
    }
}
