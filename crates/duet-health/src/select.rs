//! Choosing a backend for a request: smooth weighted round robin, least connections, random with
//! two choices, and consistent hashing.
//!
//! The selector sees each backend as a [`Candidate`] (its effective weight, its in-flight count
//! and whether it takes new requests) and returns an index. Randomness and hash keys come in as
//! numbers, so the choice is deterministic for tests.

/// Balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Smooth weighted round robin (nginx's): weights honoured, picks interleaved.
    RoundRobin,
    /// Fewest in-flight requests relative to weight.
    LeastConn,
    /// Two random candidates, the less loaded one wins ("power of two choices").
    Random,
    /// Consistent hashing of a request key; removing a backend moves only its own keys.
    Hash,
}

/// One backend as the selector sees it at the moment of a pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Effective weight (after slow start); 0 takes no traffic.
    pub weight: u32,
    /// Requests or connections in flight.
    pub active: u32,
    /// Whether it takes new requests (up and not draining).
    pub available: bool,
}

impl Candidate {
    fn usable(&self) -> bool {
        self.available && self.weight > 0
    }
}

/// Points per unit of weight on the hash ring: enough to spread keys within a few percent.
const RING_POINTS_PER_WEIGHT: u32 = 64;

/// Per-pool selection state.
#[derive(Debug, Clone)]
pub struct Selector {
    algorithm: Algorithm,
    current: Vec<i64>,
    rotor: usize,
    ring: Vec<(u64, usize)>,
}

impl Selector {
    /// A selector for backends named `keys` (stable names, e.g. addresses, for the hash ring)
    /// with configured `weights`.
    pub fn new(algorithm: Algorithm, keys: &[String], weights: &[u32]) -> Selector {
        let mut ring = Vec::new();
        if algorithm == Algorithm::Hash {
            for (i, (key, w)) in keys.iter().zip(weights).enumerate() {
                for point in 0..w.saturating_mul(RING_POINTS_PER_WEIGHT) {
                    ring.push((hash_bytes(format!("{key}#{point}").as_bytes()), i));
                }
            }
            ring.sort_unstable();
        }
        Selector {
            algorithm,
            current: vec![0; keys.len()],
            rotor: 0,
            ring,
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Picks a usable backend other than `exclude` (the one a retry must avoid). `key` is the
    /// request's hash for [`Algorithm::Hash`] and random bits for [`Algorithm::Random`].
    pub fn pick(&mut self, cands: &[Candidate], key: u64, exclude: Option<usize>) -> Option<usize> {
        let ok = |i: usize| cands[i].usable() && Some(i) != exclude;
        match self.algorithm {
            Algorithm::RoundRobin => self.smooth_round_robin(cands, ok),
            Algorithm::LeastConn => self.least_loaded((0..cands.len()).filter(|&i| ok(i)), cands),
            Algorithm::Random => {
                let usable: Vec<usize> = (0..cands.len()).filter(|&i| ok(i)).collect();
                match usable.len() {
                    0 => None,
                    1 => Some(usable[0]),
                    n => {
                        let a = usable[(key % n as u64) as usize];
                        let mut b = usable[((key >> 32) % (n as u64 - 1)) as usize];
                        if b == a {
                            b = usable[n - 1];
                        }
                        Some(if lighter(cands, b, a) { b } else { a })
                    }
                }
            }
            Algorithm::Hash => {
                if self.ring.is_empty() {
                    return None;
                }
                let start = self.ring.partition_point(|(h, _)| *h < mix(key));
                (0..self.ring.len())
                    .map(|k| self.ring[(start + k) % self.ring.len()].1)
                    .find(|&i| ok(i))
            }
        }
    }

    /// nginx's smooth weighted round robin: every usable backend gains its weight, the richest
    /// is picked and pays the total. Weights 5,1,1 give a a b a c a a.
    fn smooth_round_robin(
        &mut self,
        cands: &[Candidate],
        ok: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if self.current.len() != cands.len() {
            self.current = vec![0; cands.len()];
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in (0..cands.len()).filter(|&i| ok(i)) {
            let w = i64::from(cands[i].weight);
            self.current[i] += w;
            total += w;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.current[best] -= total;
        Some(best)
    }

    /// Fewest in flight per weight; ties rotate so equal backends share the load.
    fn least_loaded(
        &mut self,
        usable: impl Iterator<Item = usize>,
        cands: &[Candidate],
    ) -> Option<usize> {
        let usable: Vec<usize> = usable.collect();
        if usable.is_empty() {
            return None;
        }
        self.rotor = self.rotor.wrapping_add(1);
        let n = usable.len();
        let mut best = usable[self.rotor % n];
        for k in 1..n {
            let i = usable[(self.rotor + k) % n];
            if lighter(cands, i, best) {
                best = i;
            }
        }
        Some(best)
    }
}

/// `a` has fewer in flight per unit of weight than `b`.
fn lighter(cands: &[Candidate], a: usize, b: usize) -> bool {
    u64::from(cands[a].active) * u64::from(cands[b].weight)
        < u64::from(cands[b].active) * u64::from(cands[a].weight)
}

/// A stable 64-bit hash (FNV-1a, then a finaliser so nearby inputs spread over the ring).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .map(|&weight| Candidate {
                weight,
                active: 0,
                available: true,
            })
            .collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    #[test]
    fn round_robin_is_smooth_and_weighted() {
        let c = cands(&[5, 1, 1]);
        let mut s = Selector::new(Algorithm::RoundRobin, &keys(3), &[5, 1, 1]);
        let seq: Vec<usize> = (0..7).map(|_| s.pick(&c, 0, None).unwrap()).collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
        let mut counts = [0; 3];
        for _ in 0..700 {
            counts[s.pick(&c, 0, None).unwrap()] += 1;
        }
        assert_eq!(counts, [500, 100, 100]);
    }

    #[test]
    fn unavailable_and_excluded_backends_are_skipped() {
        let mut c = cands(&[1, 1, 1]);
        c[1].available = false;
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::LeastConn,
            Algorithm::Random,
            Algorithm::Hash,
        ] {
            let mut s = Selector::new(algorithm, &keys(3), &[1, 1, 1]);
            for k in 0..200u64 {
                let key = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let p = s.pick(&c, key, Some(0)).unwrap();
                assert_eq!(p, 2, "{algorithm:?}");
            }
            let none = cands(&[0, 1]);
            let mut s = Selector::new(algorithm, &keys(2), &[0, 1]);
            assert_eq!(s.pick(&none, 7, Some(1)), None, "{algorithm:?}");
        }
    }

    #[test]
    fn least_conn_prefers_the_least_loaded_per_weight() {
        let mut c = cands(&[1, 2, 1]);
        c[0].active = 3;
        c[1].active = 4; // 2 per unit of weight
        c[2].active = 1;
        let mut s = Selector::new(Algorithm::LeastConn, &keys(3), &[1, 2, 1]);
        assert_eq!(s.pick(&c, 0, None), Some(2));
        c[2].active = 5;
        assert_eq!(s.pick(&c, 0, None), Some(1));
        // Ties rotate.
        let c = cands(&[1, 1, 1]);
        let picks: std::collections::BTreeSet<usize> =
            (0..6).map(|_| s.pick(&c, 0, None).unwrap()).collect();
        assert_eq!(picks.len(), 3);
    }

    #[test]
    fn two_choices_never_pick_the_busiest_of_the_pair() {
        let mut c = cands(&[1, 1, 1, 1]);
        c[3].active = 100;
        let mut s = Selector::new(Algorithm::Random, &keys(4), &[1; 4]);
        let mut counts = [0; 4];
        for k in 0..4000u64 {
            counts[s.pick(&c, mix(k), None).unwrap()] += 1;
        }
        assert_eq!(counts[3], 0, "{counts:?}");
        for n in &counts[..3] {
            assert!((1000..1700).contains(n), "{counts:?}");
        }
    }

    #[test]
    fn hashing_is_stable_and_moves_few_keys_when_a_backend_goes() {
        let c = cands(&[1, 1, 1, 1]);
        let mut s = Selector::new(Algorithm::Hash, &keys(4), &[1; 4]);
        let before: Vec<usize> = (0..4000u64)
            .map(|k| s.pick(&c, hash_bytes(&k.to_le_bytes()), None).unwrap())
            .collect();
        let again: Vec<usize> = (0..4000u64)
            .map(|k| s.pick(&c, hash_bytes(&k.to_le_bytes()), None).unwrap())
            .collect();
        assert_eq!(before, again);
        let mut counts = [0; 4];
        for &b in &before {
            counts[b] += 1;
        }
        for n in counts {
            assert!((700..1300).contains(&n), "{counts:?}");
        }
        let mut down = c.clone();
        down[2].available = false;
        let after: Vec<usize> = (0..4000u64)
            .map(|k| s.pick(&down, hash_bytes(&k.to_le_bytes()), None).unwrap())
            .collect();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let owned = before.iter().filter(|&&b| b == 2).count();
        assert_eq!(moved, owned, "only the removed backend's keys move");
    }
}
