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

use super::SessionError;
use crate::frame::Headers;

/// When a message expires and when it may be delivered (ms since the epoch, 0: never
/// and at once), from its headers, `now` and the queue TTL (`ttl_ms`, 0: none).
pub(super) fn timing(headers: &Headers, now: u64, ttl_ms: u64) -> Result<(u64, u64), SessionError> {
    let value = |name: &'static str| -> Result<Option<u64>, SessionError> {
        headers
            .get(name)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| SessionError::BadHeader {
                        header: name,
                        value: v.to_owned(),
                    })
            })
            .transpose()
    };
    let expires = [
        value("expires")?.filter(|v| *v > 0),
        value("expiration")?.map(|v| now.saturating_add(v)),
        (ttl_ms > 0).then(|| now.saturating_add(ttl_ms)),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(0);
    let deliver_at = [
        value("delay")?.map(|v| now.saturating_add(v)),
        value("AMQ_SCHEDULED_DELAY")?.map(|v| now.saturating_add(v)),
        value("_AMQ_SCHED_DELIVERY")?,
        value("AMQ_SCHEDULED_TIME")?,
    ]
    .into_iter()
    .flatten()
    .filter(|at| *at > now)
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
        assert_eq!(timing(&h(&[]), now, 0), Ok((0, 0)));
        assert_eq!(timing(&h(&[("expires", "0")]), now, 0), Ok((0, 0)));
        assert_eq!(
            timing(&h(&[("expires", "1000500")]), now, 0),
            Ok((1_000_500, 0))
        );
        assert_eq!(
            timing(&h(&[("expiration", "300")]), now, 0),
            Ok((1_000_300, 0))
        );
        assert_eq!(
            timing(&h(&[("expires", "1000500")]), now, 100),
            Ok((1_000_100, 0))
        );
        assert_eq!(timing(&h(&[]), now, 100), Ok((1_000_100, 0)));
        assert_eq!(timing(&h(&[("delay", "50")]), now, 0), Ok((0, 1_000_050)));
        assert_eq!(
            timing(&h(&[("AMQ_SCHEDULED_DELAY", "70")]), now, 0),
            Ok((0, 1_000_070))
        );
        assert_eq!(
            timing(&h(&[("_AMQ_SCHED_DELIVERY", "1000090")]), now, 0),
            Ok((0, 1_000_090))
        );
        assert_eq!(
            timing(
                &h(&[("AMQ_SCHEDULED_TIME", "1000020"), ("delay", "10")]),
                now,
                0
            ),
            Ok((0, 1_000_020))
        );
        // A time already past is no delay.
        assert_eq!(
            timing(&h(&[("_AMQ_SCHED_DELIVERY", "5")]), now, 0),
            Ok((0, 0))
        );
    }

    #[test]
    fn a_bad_value_names_its_header() {
        let err = timing(&h(&[("delay", "soon")]), 0, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid delay header \"soon\": expected milliseconds as a non-negative integer"
        );
    }
}
