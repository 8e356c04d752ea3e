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

/// Longest interval or deadline we ever compute: a client may promise or ask for any
/// u64 of milliseconds, and "once a year" already means "never" for a connection.
pub const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// The two negotiated intervals; `None` means no heart-beats that way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// How often we must send something to the client.
    pub send: Option<Duration>,
    /// How often the client promised to send something to us.
    pub recv: Option<Duration>,
    /// The `heart-beat` header value for CONNECTED: chosen so that the client, applying
    /// the spec's rule (the larger of the two values) to it, arrives at these intervals.
    pub header: (u64, u64),
}

/// Combines the client's `(cx, cy)` with our `(sx, sy)` = (`send_ms`, `recv_ms`).
///
/// A direction is off if either side said 0. Otherwise the spec's rule takes the larger
/// value, which would make a client that asks for faster beats (stompjs
/// `heartbeatIncoming: 1000` against our 10 s) unable to detect a dead link in time.
/// So a request below our value is honoured down to `min_ms`, and CONNECTED
/// advertises the interval actually used. Every value is clamped to [`FOREVER`].
pub fn negotiate(client: (u64, u64), server: (u64, u64), min_ms: u64) -> Negotiated {
    let (cx, cy) = client;
    let (sx, sy) = server;
    let cap = FOREVER.as_millis() as u64;
    // (interval, value we advertise)
    let pick = |ours: u64, theirs: u64| -> (Option<Duration>, u64) {
        if ours == 0 || theirs == 0 {
            return (None, ours.min(cap));
        }
        let ms = theirs.max(ours.min(min_ms)).min(cap);
        (Some(Duration::from_millis(ms)), ours.min(ms))
    };
    let (send, sx_adv) = pick(sx, cy);
    let (recv, sy_adv) = pick(sy, cx);
    Negotiated {
        send,
        recv,
        header: (sx_adv, sy_adv),
    }
}

/// When a client that promised a beat every `every` is overdue: `grace` times the
/// interval after `last`, saturating at [`FOREVER`] rather than overflowing.
pub fn deadline(last: tokio::time::Instant, every: Duration, grace: f64) -> tokio::time::Instant {
    let wait = Duration::try_from_secs_f64(every.as_secs_f64() * grace)
        .unwrap_or(FOREVER)
        .min(FOREVER);
    last.checked_add(wait).unwrap_or(last + FOREVER)
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
        // (client cx,cy), (server sx,sy) -> (send, recv, advertised)
        let table = [
            ((0, 0), (10_000, 10_000), None, None, (10_000, 10_000)),
            (
                (10_000, 10_000),
                (10_000, 10_000),
                ms(10_000),
                ms(10_000),
                (10_000, 10_000),
            ),
            (
                (4_000, 20_000),
                (10_000, 10_000),
                ms(20_000),
                ms(4_000),
                (10_000, 4_000),
            ),
            (
                (30_000, 1_000),
                (10_000, 10_000),
                ms(1_000),
                ms(30_000),
                (1_000, 10_000),
            ),
            ((5_000, 5_000), (0, 10_000), None, ms(5_000), (0, 5_000)),
            ((5_000, 5_000), (10_000, 0), ms(5_000), None, (5_000, 0)),
            // Faster than min_ms: min_ms.
            (
                (10, 10),
                (10_000, 10_000),
                ms(1_000),
                ms(1_000),
                (1_000, 1_000),
            ),
            // A server configured below min_ms keeps its own value.
            ((0, 400), (100, 0), ms(400), None, (100, 0)),
            ((0, 50), (100, 0), ms(100), None, (100, 0)),
        ];
        for (client, server, send, recv, header) in table {
            assert_eq!(
                negotiate(client, server, 1_000),
                Negotiated { send, recv, header },
                "{client:?} vs {server:?}"
            );
        }
    }

    #[test]
    fn huge_values_are_clamped_never_overflow() {
        let n = negotiate((u64::MAX, u64::MAX), (10_000, 10_000), 1_000);
        assert_eq!(n.send, Some(FOREVER));
        assert_eq!(n.recv, Some(FOREVER));
        let now = tokio::time::Instant::now();
        assert_eq!(deadline(now, FOREVER, 1e300), now + FOREVER);
        assert_eq!(deadline(now, FOREVER, f64::MAX), now + FOREVER);
        assert_eq!(
            deadline(now, Duration::from_secs(2), 1.5),
            now + Duration::from_secs(3)
        );
    }
}
