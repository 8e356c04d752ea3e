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
    /// Address → (start of its window, failures in it).
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
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

    /// Whether `ip` may try to log in now: fewer than `auth.max_failed_logins`
    /// failures in its current window.
    pub fn login_allowed(&self, ip: IpAddr, now: Instant) -> bool {
        let failures = self.failures.lock().expect("peers lock poisoned");
        match failures.get(&ip) {
            Some((since, n)) if now.duration_since(*since) < self.window => *n < self.max_failures,
            _ => true,
        }
    }

    /// Records a failed login from `ip`.
    pub fn login_failed(&self, ip: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().expect("peers lock poisoned");
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&ip) {
            let window = self.window;
            failures.retain(|_, (since, _)| now.duration_since(*since) < window);
            if failures.len() >= MAX_TRACKED {
                return;
            }
        }
        let entry = failures.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
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
        let peers = Peers::new(0, 3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(peers.login_allowed(A, t0));
            peers.login_failed(A, t0);
        }
        assert!(!peers.login_allowed(A, t0 + Duration::from_secs(59)));
        assert!(peers.login_allowed(B, t0), "other addresses carry on");
        assert!(peers.login_allowed(A, t0 + Duration::from_secs(60)));
        peers.login_failed(A, t0 + Duration::from_secs(61));
        assert!(
            peers.login_allowed(A, t0 + Duration::from_secs(61)),
            "a new window"
        );
    }
}
