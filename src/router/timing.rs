//! Expiry and delay headers of a SEND, in the dialects clients send today.
//!
//! - Expiry: `expires` (absolute, ms since the epoch; 0 = never; ActiveMQ, Artemis and
//!   stompjs users send it), `expiration` (RabbitMQ's, relative ms), and
//!   `queues.message_ttl_ms` for queue messages: the earliest wins.
//! - Delay: `delay` or ActiveMQ's `AMQ_SCHEDULED_DELAY` (relative ms), Artemis's
//!   `_AMQ_SCHED_DELIVERY` or `AMQ_SCHEDULED_TIME` (absolute ms): the latest wins.
//!
//! A value that is not a non-negative integer is an ERROR naming the header, not a
//! message silently delivered at the wrong time.

use super::RouteError;
use crate::frame::Headers;

/// When a message expires and when it may be delivered (ms since the epoch, 0: never
/// and at once), from its headers, the clock and the queue TTL (`ttl_ms`, 0: none).
/// One pass over the headers; the clock is read only when a relative time needs it.
pub(super) fn timing(
    headers: &Headers,
    now: impl Fn() -> u64,
    ttl_ms: u64,
) -> Result<(u64, u64), RouteError> {
    // Relative (true) or absolute (false) times.
    let mut expiry: Vec<(bool, u64)> = Vec::new();
    let mut delay: Vec<(bool, u64)> = Vec::new();
    for (name, v) in headers.iter() {
        let (list, relative, header) = match name {
            "expires" => (&mut expiry, false, "expires"),
            "expiration" => (&mut expiry, true, "expiration"),
            "delay" => (&mut delay, true, "delay"),
            "AMQ_SCHEDULED_DELAY" => (&mut delay, true, "AMQ_SCHEDULED_DELAY"),
            "_AMQ_SCHED_DELIVERY" => (&mut delay, false, "_AMQ_SCHED_DELIVERY"),
            "AMQ_SCHEDULED_TIME" => (&mut delay, false, "AMQ_SCHEDULED_TIME"),
            _ => continue,
        };
        let ms = v.trim().parse::<u64>().map_err(|_| RouteError::BadHeader {
            header,
            value: v.to_owned(),
        })?;
        list.push((relative, ms));
    }
    if expiry.is_empty() && delay.is_empty() && ttl_ms == 0 {
        return Ok((0, 0));
    }
    let now = now();
    let at = |(relative, ms): (bool, u64)| if relative { now.saturating_add(ms) } else { ms };
    let expires = expiry
        .into_iter()
        // `expires:0` means never.
        .filter(|(relative, ms)| *relative || *ms > 0)
        .map(at)
        .chain((ttl_ms > 0).then(|| now.saturating_add(ttl_ms)))
        .min()
        .unwrap_or(0);
    let deliver_at = delay
        .into_iter()
        .map(at)
        .filter(|t| *t > now)
        .max()
        .unwrap_or(0);
    Ok((expires, deliver_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().copied().collect()
    }

    #[test]
    fn each_dialect_and_the_earliest_expiry_and_latest_delay_win() {
        let now = 1_000_000;
        assert_eq!(timing(&h(&[]), || now, 0), Ok((0, 0)));
        assert_eq!(timing(&h(&[("expires", "0")]), || now, 0), Ok((0, 0)));
        assert_eq!(
            timing(&h(&[("expires", "1000500")]), || now, 0),
            Ok((1_000_500, 0))
        );
        assert_eq!(
            timing(&h(&[("expiration", "300")]), || now, 0),
            Ok((1_000_300, 0))
        );
        assert_eq!(
            timing(&h(&[("expires", "1000500")]), || now, 100),
            Ok((1_000_100, 0))
        );
        assert_eq!(timing(&h(&[]), || now, 100), Ok((1_000_100, 0)));
        assert_eq!(
            timing(&h(&[("delay", "50")]), || now, 0),
            Ok((0, 1_000_050))
        );
        assert_eq!(
            timing(&h(&[("AMQ_SCHEDULED_DELAY", "70")]), || now, 0),
            Ok((0, 1_000_070))
        );
        assert_eq!(
            timing(&h(&[("_AMQ_SCHED_DELIVERY", "1000090")]), || now, 0),
            Ok((0, 1_000_090))
        );
        assert_eq!(
            timing(
                &h(&[("AMQ_SCHEDULED_TIME", "1000020"), ("delay", "10")]),
                || now,
                0
            ),
            Ok((0, 1_000_020))
        );
        // A time already past is no delay.
        assert_eq!(
            timing(&h(&[("_AMQ_SCHED_DELIVERY", "5")]), || now, 0),
            Ok((0, 0))
        );
    }

    #[test]
    fn a_bad_value_names_its_header() {
        let err = timing(&h(&[("delay", "soon")]), || 0, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid delay header \"soon\": expected milliseconds as a non-negative integer"
        );
    }
}
