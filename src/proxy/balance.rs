//! Choosing a backend for a new client connection: round-robin, smooth weighted
//! round-robin (as nginx does it), least connections, source-IP hash, consistent hash on
//! the client address, and random. One [`Balancer`] per loop (no locks); it sees the
//! backends as [`Candidate`]s: up or down, backup or not, weight, active connections.
//! Backups are chosen only when no other backend is eligible.

use std::net::IpAddr;

/// A balancing policy (`--balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Each eligible backend in turn.
    #[default]
    RoundRobin,
    /// Smooth weighted round-robin: shares follow `weight=`, interleaved.
    Weighted,
    /// The eligible backend with the fewest active connections (ties: in turn).
    LeastConn,
    /// A hash of the client IP modulo the eligible backends.
    SourceHash,
    /// A hash ring of the backends (virtual nodes by weight) keyed by the client IP:
    /// adding or removing one of N backends moves about 1/N of the clients.
    ConsistentHash,
    /// Uniformly at random.
    Random,
}

impl Policy {
    /// Every policy with its `--balance` name.
    pub const ALL: [(&'static str, Policy); 6] = [
        ("round-robin", Policy::RoundRobin),
        ("weighted", Policy::Weighted),
        ("least-conn", Policy::LeastConn),
        ("source-hash", Policy::SourceHash),
        ("consistent-hash", Policy::ConsistentHash),
        ("random", Policy::Random),
    ];
}

/// What the balancer knows of one backend when it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Health: down backends get no new connections.
    pub up: bool,
    /// Used only when no non-backup backend is eligible.
    pub backup: bool,
    /// Relative weight (≥ 1).
    pub weight: u32,
    /// Connections open to it now (all loops).
    pub active: u64,
}

/// Virtual nodes on the consistent-hash ring per unit of weight.
const VNODES: u32 = 100;
/// At most this many virtual nodes per backend.
const MAX_VNODES: u32 = 10_000;

/// One loop's balancing state. Call [`Balancer::set_backends`] whenever the backend set
/// changes (names and weights), then [`Balancer::pick`] for each connection.
#[derive(Debug, Clone)]
pub struct Balancer {
    policy: Policy,
    cursor: usize,
    current: Vec<i64>,
    ring: Vec<(u64, usize)>,
    rng: u64,
}

impl Balancer {
    /// A balancer for `policy`; `seed` varies the starting point between loops.
    pub fn new(policy: Policy, seed: u64) -> Self {
        Balancer {
            policy,
            cursor: seed as usize,
            current: Vec::new(),
            ring: Vec::new(),
            rng: mix(seed) | 1,
        }
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Rebuilds per-backend state for a new backend set, given each backend's name and
    /// weight, in the order later passed to [`pick`](Self::pick).
    pub fn set_backends<'a>(&mut self, backends: impl IntoIterator<Item = (&'a str, u32)>) {
        self.current.clear();
        self.ring.clear();
        for (i, (name, weight)) in backends.into_iter().enumerate() {
            self.current.push(0);
            if self.policy == Policy::ConsistentHash {
                let n = VNODES.saturating_mul(weight.max(1)).min(MAX_VNODES);
                for v in 0..n {
                    self.ring.push((hash_bytes(format!("{name}#{v}").as_bytes()), i));
                }
            }
        }
        self.ring.sort_unstable();
    }

    /// Picks a backend index among `cands` for a client at `client`, never one in
    /// `skip` (backends already tried for this client) and never a down one. Non-backup
    /// backends first; backups only when none of those is eligible. `None` when nothing
    /// is eligible.
    pub fn pick(
        &mut self,
        cands: &[Candidate],
        client: Option<IpAddr>,
        skip: &[usize],
    ) -> Option<usize> {
        if self.current.len() != cands.len() {
            self.current.resize(cands.len(), 0);
        }
        let ok =
            |i: usize, backup: bool| cands[i].up && cands[i].backup == backup && !skip.contains(&i);
        let backup = if (0..cands.len()).any(|i| ok(i, false)) {
            false
        } else if (0..cands.len()).any(|i| ok(i, true)) {
            true
        } else {
            return None;
        };
        let eligible = |i: usize| ok(i, backup);
        let n = cands.len();
        match self.policy {
            Policy::RoundRobin => self.next_in_turn(n, eligible),
            Policy::Weighted => {
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for i in (0..n).filter(|&i| eligible(i)) {
                    let w = i64::from(cands[i].weight.max(1));
                    self.current[i] += w;
                    total += w;
                    if best.is_none_or(|b| self.current[i] > self.current[b]) {
                        best = Some(i);
                    }
                }
                let b = best?;
                self.current[b] -= total;
                Some(b)
            }
            Policy::LeastConn => {
                let start = self.cursor;
                self.cursor = self.cursor.wrapping_add(1);
                (0..n)
                    .map(|k| (start.wrapping_add(k)) % n)
                    .filter(|&i| eligible(i))
                    .min_by_key(|&i| cands[i].active)
            }
            Policy::SourceHash => {
                let Some(ip) = client else { return self.next_in_turn(n, eligible) };
                let list: Vec<usize> = (0..n).filter(|&i| eligible(i)).collect();
                Some(list[(hash_ip(ip) % list.len() as u64) as usize])
            }
            Policy::ConsistentHash => {
                let Some(ip) = client else { return self.next_in_turn(n, eligible) };
                if self.ring.is_empty() {
                    return self.next_in_turn(n, eligible);
                }
                let h = hash_ip(ip);
                let start = self.ring.partition_point(|&(k, _)| k < h);
                (0..self.ring.len())
                    .map(|k| self.ring[(start + k) % self.ring.len()].1)
                    .find(|&i| i < n && eligible(i))
            }
            Policy::Random => {
                let list: Vec<usize> = (0..n).filter(|&i| eligible(i)).collect();
                self.rng = xorshift(self.rng);
                Some(list[(self.rng % list.len() as u64) as usize])
            }
        }
    }

    /// The next eligible index after the cursor, in turn.
    fn next_in_turn(&mut self, n: usize, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        for _ in 0..n {
            let i = self.cursor % n;
            self.cursor = self.cursor.wrapping_add(1);
            if eligible(i) {
                return Some(i);
            }
        }
        None
    }
}

/// A 64-bit hash of a client IP, stable across processes and runs.
pub fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => hash_bytes(&a.octets()),
        IpAddr::V6(a) => hash_bytes(&a.octets()),
    }
}

/// FNV-1a followed by a 64-bit finaliser: stable and well spread.
fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn up(n: usize) -> Vec<Candidate> {
        vec![Candidate { up: true, backup: false, weight: 1, active: 0 }; n]
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("127.0.0.1:{}", 7000 + i)).collect()
    }

    fn balancer(policy: Policy, n: usize, weights: &[u32]) -> Balancer {
        let mut b = Balancer::new(policy, 0);
        let names = names(n);
        b.set_backends(
            names.iter().enumerate().map(|(i, s)| (s.as_str(), *weights.get(i).unwrap_or(&1))),
        );
        b
    }

    #[test]
    fn round_robin_skips_down_and_tried() {
        let mut b = balancer(Policy::RoundRobin, 3, &[]);
        let mut c = up(3);
        let picks: Vec<_> = (0..6).map(|_| b.pick(&c, None, &[]).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        c[1].up = false;
        let picks: Vec<_> = (0..4).map(|_| b.pick(&c, None, &[]).unwrap()).collect();
        assert!(!picks.contains(&1));
        assert_eq!(b.pick(&c, None, &[0, 2]), None);
    }

    #[test]
    fn backups_only_when_nothing_else() {
        let mut b = balancer(Policy::RoundRobin, 3, &[]);
        let mut c = up(3);
        c[2].backup = true;
        assert!((0..10).all(|_| b.pick(&c, None, &[]) != Some(2)));
        c[0].up = false;
        c[1].up = false;
        assert_eq!(b.pick(&c, None, &[]), Some(2));
        c[0].up = true;
        assert_eq!(b.pick(&c, None, &[0]), Some(2), "the only primary was already tried");
    }

    #[test]
    fn smooth_weighted_shares_and_interleaves() {
        let mut b = balancer(Policy::Weighted, 3, &[5, 1, 1]);
        let mut c = up(3);
        c[0].weight = 5;
        let picks: Vec<_> = (0..7).map(|_| b.pick(&c, None, &[]).unwrap()).collect();
        // nginx's example sequence for weights 5,1,1.
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        let mut counts = [0; 3];
        for _ in 0..700 {
            counts[b.pick(&c, None, &[]).unwrap()] += 1;
        }
        assert_eq!(counts, [500, 100, 100]);
    }

    #[test]
    fn least_conn_takes_the_emptiest() {
        let mut b = balancer(Policy::LeastConn, 3, &[]);
        let mut c = up(3);
        c[0].active = 5;
        c[1].active = 2;
        c[2].active = 9;
        assert_eq!(b.pick(&c, None, &[]), Some(1));
        c[1].up = false;
        assert_eq!(b.pick(&c, None, &[]), Some(0));
    }

    #[test]
    fn source_hash_is_sticky() {
        let mut b = balancer(Policy::SourceHash, 4, &[]);
        let c = up(4);
        let ip = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        let first = b.pick(&c, Some(ip), &[]).unwrap();
        assert!((0..20).all(|_| b.pick(&c, Some(ip), &[]) == Some(first)));
        let spread: std::collections::HashSet<_> = (0..200u8)
            .map(|k| b.pick(&c, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, k))), &[]).unwrap())
            .collect();
        assert_eq!(spread.len(), 4);
    }

    #[test]
    fn consistent_hash_moves_about_one_nth() {
        let clients: Vec<IpAddr> =
            (0..1000u32).map(|k| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + k * 7919))).collect();
        let mut four = balancer(Policy::ConsistentHash, 4, &[]);
        let mut five = balancer(Policy::ConsistentHash, 5, &[]);
        let before: Vec<_> =
            clients.iter().map(|&ip| four.pick(&up(4), Some(ip), &[]).unwrap()).collect();
        let after: Vec<_> =
            clients.iter().map(|&ip| five.pick(&up(5), Some(ip), &[]).unwrap()).collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        // Ideal: 1/5 of clients move, all of them to the new backend.
        assert!(moved <= 1000 / 5 + 100, "moved {moved} of 1000");
        assert!(before.iter().zip(&after).all(|(a, b)| a == b || *b == 4));
        // A down backend's clients go elsewhere; others stay.
        let mut c = up(4);
        c[1].up = false;
        let down: Vec<_> =
            clients.iter().map(|&ip| four.pick(&c, Some(ip), &[]).unwrap()).collect();
        assert!(before.iter().zip(&down).all(|(a, b)| if *a == 1 { *b != 1 } else { a == b }));
    }

    #[test]
    fn random_uses_every_eligible_backend() {
        let mut b = balancer(Policy::Random, 3, &[]);
        let mut c = up(3);
        c[0].up = false;
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[b.pick(&c, None, &[]).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        assert!(counts[1] > 100 && counts[2] > 100, "{counts:?}");
    }
}
