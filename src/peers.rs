//! Per source address accounting: open connections (`limits.max_connections_per_address`)
//! and failed logins (`auth.max_failed_logins` per `auth.failed_login_window_ms`), so
//! one address cannot take every connection slot or guess passcodes at CPU speed.
//!
//! Both maps are bounded: a connection's entry goes with its last connection (the
//! [`PeerSlot`] guard), and failed-login entries expire with their window; past
//! [`MAX_TRACKED`] addresses with recent failures, expired ones are swept, and if all
//! are recent, new addresses are not tracked (their logins are still checked).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Addresses with recent failed logins tracked at most.
const MAX_TRACKED: usize = 100_000;

/// The broker's per-address counters.
#[derive(Debug)]
pub struct Peers {
    max_connections: usize,
    max_failures: u32,
    window: Duration,
    connections: Mutex<HashMap<IpAddr, usize>>,
    /// Per address: failures in the current window, and logins being checked now.
    failures: Mutex<HashMap<IpAddr, Logins>>,
}

/// One address's failed logins in its window, and its checks in flight.
#[derive(Debug)]
struct Logins {
    since: Instant,
    failed: u32,
    checking: u32,
}

/// A login attempt reserved against its address's failed-login limit before its
/// (slow) check: dropped, it counts as a failure; [`Attempt::release`] gives it back
/// uncounted. So parallel guesses cannot all pass the limit's check before any of
/// them is counted, and an address has at most `auth.max_failed_logins` checks
/// running at once.
#[derive(Debug)]
#[must_use]
pub struct Attempt {
    peers: Option<(Arc<Peers>, IpAddr)>,
}

impl Attempt {
    /// An attempt that is counted nowhere (a client with no address).
    pub fn untracked() -> Attempt {
        Attempt { peers: None }
    }

    /// The login succeeded, or presented no credentials: not a failure.
    pub fn release(mut self) {
        if let Some((peers, ip)) = self.peers.take() {
            peers.finish(ip, false);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some((peers, ip)) = self.peers.take() {
            peers.finish(ip, true);
        }
    }
}

/// One connection counted against its address; dropping it gives the slot back.
#[derive(Debug)]
pub struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut conns = self.peers.connections.lock().expect("peers lock poisoned");
        if let Some(n) = conns.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                conns.remove(&self.ip);
            }
        }
    }
}

impl Peers {
    /// Counters with these limits (0 connections: unlimited).
    pub fn new(max_connections: usize, max_failures: u32, window: Duration) -> Arc<Peers> {
        Arc::new(Peers {
            max_connections,
            max_failures,
            window,
            connections: Mutex::default(),
            failures: Mutex::default(),
        })
    }

    /// Counts a new connection from `ip`, or refuses it at the limit (returning it).
    pub fn connect(self: &Arc<Self>, ip: IpAddr) -> Result<PeerSlot, usize> {
        let mut conns = self.connections.lock().expect("peers lock poisoned");
        let n = conns.entry(ip).or_insert(0);
        if self.max_connections > 0 && *n >= self.max_connections {
            if *n == 0 {
                conns.remove(&ip);
            }
            return Err(self.max_connections);
        }
        *n += 1;
        Ok(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }

    /// Reserves a login attempt from `ip` (see [`Attempt`]), or refuses it while the
    /// address's failures in its window plus its checks in flight reach
    /// `auth.max_failed_logins`.
    pub fn login_attempt(self: &Arc<Self>, ip: Option<IpAddr>) -> Option<Attempt> {
        let now = Instant::now();
        let Some(ip) = ip else {
            return Some(Attempt::untracked());
        };
        let mut failures = self.failures.lock().expect("peers lock poisoned");
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&ip) {
            let window = self.window;
            failures.retain(|_, l| l.checking > 0 || now.duration_since(l.since) < window);
            if failures.len() >= MAX_TRACKED {
                // Untracked, but still checked.
                return Some(Attempt::untracked());
            }
        }
        let entry = failures.entry(ip).or_insert(Logins {
            since: now,
            failed: 0,
            checking: 0,
        });
        if now.duration_since(entry.since) >= self.window {
            entry.since = now;
            entry.failed = 0;
        }
        if entry.failed + entry.checking >= self.max_failures {
            return None;
        }
        entry.checking += 1;
        Some(Attempt {
            peers: Some((self.clone(), ip)),
        })
    }

    /// An attempt from `ip` ended, `failed` or not.
    fn finish(&self, ip: IpAddr, failed: bool) {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("peers lock poisoned");
        let Some(entry) = failures.get_mut(&ip) else {
            return;
        };
        entry.checking = entry.checking.saturating_sub(1);
        if failed {
            if now.duration_since(entry.since) >= self.window {
                entry.since = now;
                entry.failed = 0;
            }
            entry.failed += 1;
        } else if entry.failed == 0 && entry.checking == 0 {
            failures.remove(&ip);
        }
    }

    /// Open connections counted for `ip` (for tests).
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        let conns = self.connections.lock().expect("peers lock poisoned");
        conns.get(&ip).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn connections_per_address_are_counted_and_given_back() {
        let peers = Peers::new(2, 3, Duration::from_secs(60));
        let one = peers.connect(A).unwrap();
        let two = peers.connect(A).unwrap();
        assert_eq!(peers.connect(A).unwrap_err(), 2);
        let other = peers.connect(B).unwrap();
        drop(one);
        let three = peers.connect(A).unwrap();
        drop((two, three, other));
        assert_eq!(peers.connections_from(A), 0);
        assert!(
            peers.connections.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }

    #[test]
    fn failed_logins_lock_an_address_out_for_its_window() {
        let peers = Peers::new(0, 3, Duration::from_millis(300));
        for _ in 0..3 {
            drop(peers.login_attempt(Some(A)).expect("allowed"));
        }
        assert!(peers.login_attempt(Some(A)).is_none());
        assert!(
            peers.login_attempt(Some(B)).is_some(),
            "other addresses carry on"
        );
        std::thread::sleep(Duration::from_millis(320));
        peers
            .login_attempt(Some(A))
            .expect("a new window")
            .release();
    }

    /// Issue 18, finding 11: check, then the argon2 await, then count let 30 parallel
    /// guesses with a limit of 3 all get a check. Attempts are reserved first.
    #[test]
    fn parallel_attempts_are_reserved_before_their_check() {
        let peers = Peers::new(0, 3, Duration::from_secs(60));
        let running: Vec<_> = (0..30)
            .filter_map(|_| peers.login_attempt(Some(A)))
            .collect();
        assert_eq!(running.len(), 3);
        // Successes give their reservation back; failures keep it for the window.
        let mut running = running.into_iter();
        running.next().unwrap().release();
        let fourth = peers.login_attempt(Some(A)).expect("a slot was given back");
        drop(running);
        drop(fourth);
        assert!(peers.login_attempt(Some(A)).is_none());
        assert!(
            peers.login_attempt(None).is_some(),
            "no address: not tracked"
        );
    }
}
