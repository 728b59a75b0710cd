//! The shared keyspace: 64 mutex-protected shards of string keys with optional expiry.
//!
//! A key's shard is picked by a fast seeded hash of its bytes, so independent keys touched
//! from different event loops rarely contend. Each shard is padded to its own cache lines.
//!
//! ## Expiry
//!
//! An entry may carry a deadline ([`Instant`]). Expiry is *lazy* (every access of an
//! expired key deletes it and behaves as if it were missing) and *active*
//! ([`Keyspace::active_expire`], run from `Protocol::tick`): like Redis's active expire
//! cycle it examines a bounded number of keys that have a deadline in a few shards per
//! call, deleting the expired ones, and keeps going in a shard while many of those it
//! examined had expired.
//!
//! To examine "keys with a deadline" without scanning the whole map, each shard keeps
//! them in a `Vec` as well (`expiring`), and every entry with a deadline knows its index
//! there (`slot`), so adding, removing and changing a deadline are O(1). So that this
//! second list does not copy keys, keys are `Arc<[u8]>` rather than `Vec<u8>` (one
//! allocation either way; looking up by `&[u8]` works through `Borrow<[u8]>`). The
//! sweep walks `expiring` round-robin from a per-shard cursor instead of sampling at
//! random: every key with a deadline is examined within a bounded number of sweeps.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Number of shards (a power of two).
pub(super) const SHARDS: usize = 64;

/// Keys with a deadline examined per round in one shard during an active-expiry sweep.
const SWEEP_SAMPLE: usize = 20;
/// Rounds per shard per sweep at most (a round runs only while the previous one found more
/// than a quarter of its sample expired).
const SWEEP_ROUNDS: usize = 16;
/// Shards visited per sweep call.
const SWEEP_SHARDS: usize = 16;
/// Time budget of one sweep call.
const SWEEP_BUDGET: Duration = Duration::from_millis(2);

/// A fast, seeded, non-cryptographic hash (multiply-fold, in the style of FxHash/wyhash)
/// for short keys. Seeded per keyspace from std's `RandomState`, so collisions cannot be
/// precomputed offline; it is not a keyed PRF like SipHash, which is the trade made for
/// speed on the GET/SET path.
#[derive(Debug, Clone, Copy)]
pub(super) struct FastHasher {
    state: u64,
}

const M1: u64 = 0xa076_1d64_78bd_642f;
const M2: u64 = 0xe703_7ed1_a0b4_28db;

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.state;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            h = fold_mul(h ^ w, M1);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            h = fold_mul(h ^ u64::from_le_bytes(buf), M1);
        }
        self.state = h;
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.state = fold_mul(self.state ^ n as u64, M2);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold_mul(self.state, M2)
    }
}

/// Builds [`FastHasher`]s with one seed.
#[derive(Debug, Clone, Copy)]
pub(super) struct FastBuild {
    seed: u64,
}

impl FastBuild {
    fn random() -> Self {
        // RandomState is seeded from the OS once per process and varied per instance.
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        FastBuild { seed }
    }
}

impl BuildHasher for FastBuild {
    type Hasher = FastHasher;
    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher { state: self.seed }
    }
}

/// One stored value.
#[derive(Debug)]
pub(super) struct Entry {
    /// The string value.
    pub(super) value: Vec<u8>,
    /// When the key expires, if ever.
    expire: Option<Instant>,
    /// Index of the key in its shard's `expiring` list (meaningful when `expire` is set).
    slot: usize,
}

impl Entry {
    /// The deadline, if any.
    #[inline]
    pub(super) fn expire(&self) -> Option<Instant> {
        self.expire
    }
}

/// A lazily read clock, so that commands on keys without a deadline never read the time.
pub(super) struct Now<'a> {
    ks: &'a Keyspace,
    t: Option<Instant>,
}

impl Now<'_> {
    /// The current time (read once, then cached for this command).
    #[inline]
    pub(super) fn get(&mut self) -> Instant {
        let ks = self.ks;
        *self.t.get_or_insert_with(|| ks.now())
    }
}

/// What a write does to the key's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ttl {
    /// Keep the current deadline (`INCR`, `APPEND`, `SET ... KEEPTTL`).
    Keep,
    /// Remove it (`SET`, `GETSET`, `MSET`).
    Clear,
    /// Set it.
    At(Instant),
}

/// One shard: the map plus the list of its keys that have a deadline.
#[derive(Debug)]
pub(super) struct Shard {
    map: HashMap<Arc<[u8]>, Entry, FastBuild>,
    expiring: Vec<Arc<[u8]>>,
    cursor: usize,
}

#[inline]
fn is_expired(e: &Entry, now: &mut Now<'_>) -> bool {
    match e.expire {
        None => false,
        Some(d) => now.get() >= d,
    }
}

impl Shard {
    fn new(build: FastBuild) -> Self {
        Shard { map: HashMap::with_hasher(build), expiring: Vec::new(), cursor: 0 }
    }

    /// Calls `f` with the live entry of `key` (None when missing or expired; an expired
    /// entry is deleted first). One hash lookup when the key is live.
    #[inline]
    pub(super) fn with<R>(
        &mut self,
        key: &[u8],
        now: &mut Now<'_>,
        f: impl FnOnce(Option<&mut Entry>) -> R,
    ) -> R {
        match self.map.get_mut(key) {
            None => return f(None),
            Some(e) => {
                if !is_expired(e, now) {
                    return f(Some(e));
                }
            }
        }
        self.remove(key);
        f(None)
    }

    /// Whether `key` is live (deleting it if it has expired).
    pub(super) fn contains(&mut self, key: &[u8], now: &mut Now<'_>) -> bool {
        self.with(key, now, |e| e.is_some())
    }

    /// Stores `value` under `key`, reusing the old value's buffer when it fits, and
    /// applies `ttl` to the deadline (`Ttl::Keep` on an expired key keeps nothing).
    #[inline]
    pub(super) fn set(&mut self, key: &[u8], value: &[u8], ttl: Ttl, now: &mut Now<'_>) {
        if ttl == Ttl::Keep {
            // Drop an expired key first, so its old deadline is not kept.
            self.contains(key, now);
        }
        if let Some(e) = self.map.get_mut(key) {
            // Reuse the allocation unless it would waste a lot of memory.
            if e.value.capacity() > 2 * value.len() + 64 {
                e.value = value.to_vec();
            } else {
                e.value.clear();
                e.value.extend_from_slice(value);
            }
            let had = e.expire.is_some();
            let slot = e.slot;
            match (ttl, had) {
                (Ttl::Keep, _) | (Ttl::Clear, false) => {}
                (Ttl::At(d), true) => e.expire = Some(d),
                (Ttl::Clear, true) => {
                    e.expire = None;
                    self.detach(slot);
                }
                (Ttl::At(d), false) => {
                    e.expire = Some(d);
                    self.attach(key);
                }
            }
            return;
        }
        self.insert_new(key, value.to_vec(), ttl);
    }

    /// Inserts a key known to be absent.
    fn insert_new(&mut self, key: &[u8], value: Vec<u8>, ttl: Ttl) {
        let k: Arc<[u8]> = Arc::from(key);
        let expire = match ttl {
            Ttl::At(d) => Some(d),
            Ttl::Keep | Ttl::Clear => None,
        };
        let slot = self.expiring.len();
        if expire.is_some() {
            self.expiring.push(Arc::clone(&k));
        }
        self.map.insert(k, Entry { value, expire, slot });
    }

    /// Inserts `value` under `key` if it is absent, or calls `update` on the live entry;
    /// the deadline is kept. Returns what `update` returned, or `None` for an insert.
    pub(super) fn upsert<R>(
        &mut self,
        key: &[u8],
        now: &mut Now<'_>,
        update: impl FnOnce(&mut Entry) -> R,
        insert: impl FnOnce() -> Vec<u8>,
    ) -> Option<R> {
        let r = self.with(key, now, |e| e.map(update));
        if r.is_none() {
            self.insert_new(key, insert(), Ttl::Clear);
        }
        r
    }

    /// Deletes `key`, returning its entry (expired or not).
    pub(super) fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let e = self.map.remove(key)?;
        if e.expire.is_some() {
            self.detach(e.slot);
        }
        Some(e)
    }

    /// Deletes `key` if it is live; returns whether it was.
    pub(super) fn delete_live(&mut self, key: &[u8], now: &mut Now<'_>) -> bool {
        match self.remove(key) {
            Some(e) => !is_expired(&e, now),
            None => false,
        }
    }

    /// Sets (`Some`) or removes (`None`) the deadline of an existing `key`. Returns false
    /// if the key is absent.
    pub(super) fn set_expire(&mut self, key: &[u8], deadline: Option<Instant>) -> bool {
        let Some(e) = self.map.get_mut(key) else {
            return false;
        };
        let had = e.expire.is_some();
        let slot = e.slot;
        e.expire = deadline;
        match (had, deadline.is_some()) {
            (true, false) => self.detach(slot),
            (false, true) => self.attach(key),
            _ => {}
        }
        true
    }

    /// Adds the existing `key` (whose deadline was just set) to `expiring`.
    fn attach(&mut self, key: &[u8]) {
        let slot = self.expiring.len();
        let Some((k, _)) = self.map.get_key_value(key) else {
            return;
        };
        let k = Arc::clone(k);
        self.expiring.push(k);
        if let Some(e) = self.map.get_mut(key) {
            e.slot = slot;
        }
    }

    /// Removes `expiring[slot]`, fixing the slot of the key moved into its place.
    fn detach(&mut self, slot: usize) {
        if slot >= self.expiring.len() {
            debug_assert!(false, "expiry slot out of range");
            return;
        }
        self.expiring.swap_remove(slot);
        if let Some(moved) = self.expiring.get(slot)
            && let Some(e) = self.map.get_mut(&**moved)
        {
            e.slot = slot;
        }
    }

    /// One active-expiry step on this shard: examines up to `SWEEP_SAMPLE` keys with a
    /// deadline from the cursor on. Returns (examined, deleted).
    fn sweep_round(&mut self, now: Instant) -> (usize, usize) {
        let (mut seen, mut deleted) = (0, 0);
        while seen < SWEEP_SAMPLE && !self.expiring.is_empty() {
            if self.cursor >= self.expiring.len() {
                self.cursor = 0;
            }
            seen += 1;
            let key = Arc::clone(&self.expiring[self.cursor]);
            let expired = match self.map.get(&*key) {
                Some(e) => e.expire.is_none_or(|d| now >= d),
                None => true,
            };
            if expired {
                // The last key moves into the cursor's place; examine it next.
                self.remove(&key);
                deleted += 1;
            } else {
                self.cursor += 1;
            }
        }
        (seen, deleted)
    }

    fn clear(&mut self) {
        self.map.clear();
        self.expiring.clear();
        self.cursor = 0;
    }

    /// Checks the `expiring`/`slot` bookkeeping (tests).
    #[cfg(test)]
    pub(super) fn check(&self) {
        let with_ttl = self.map.values().filter(|e| e.expire.is_some()).count();
        assert_eq!(with_ttl, self.expiring.len());
        for (i, k) in self.expiring.iter().enumerate() {
            let e = &self.map[&**k];
            assert!(e.expire.is_some());
            assert_eq!(e.slot, i);
        }
    }
}

/// A shard on its own cache lines.
#[derive(Debug)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// What one [`Keyspace::active_expire`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Keys with a deadline examined.
    pub examined: usize,
    /// Expired keys deleted.
    pub deleted: usize,
}

/// The shared string keyspace of a [`super::Redis`] server (one Redis database, db 0).
///
/// Thread-safe: 64 shards, each behind its own `Mutex`. Operations on one key lock one
/// shard; multi-key commands (`MSET`, `DEL a b`) lock the shards one key at a time, so
/// they are not atomic with respect to other connections (a difference from Redis).
pub struct Keyspace {
    shards: Box<[Padded]>,
    shard_hash: FastBuild,
    sweep_next: AtomicUsize,
    /// Test clock skew in milliseconds, added to `Instant::now()`.
    #[cfg(test)]
    skew_ms: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Keyspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyspace")
            .field("keys", &self.len())
            .field("expires", &self.expires())
            .finish()
    }
}

impl Default for Keyspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Keyspace {
    /// An empty keyspace with freshly seeded hashes.
    pub fn new() -> Self {
        let map_hash = FastBuild::random();
        let shard_hash = FastBuild::random();
        Keyspace {
            shards: (0..SHARDS).map(|_| Padded(Mutex::new(Shard::new(map_hash)))).collect(),
            shard_hash,
            sweep_next: AtomicUsize::new(0),
            #[cfg(test)]
            skew_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The current time as the keyspace sees it.
    #[inline]
    pub(super) fn now(&self) -> Instant {
        let now = Instant::now();
        #[cfg(test)]
        let now = now + Duration::from_millis(self.skew_ms.load(Ordering::Relaxed));
        now
    }

    /// A lazily read clock for one command.
    #[inline]
    pub(super) fn clock(&self) -> Now<'_> {
        Now { ks: self, t: None }
    }

    /// Moves the keyspace's clock forward (tests).
    #[cfg(test)]
    pub(super) fn advance(&self, d: Duration) {
        self.skew_ms.fetch_add(d.as_millis() as u64, Ordering::Relaxed);
    }

    #[inline]
    fn index(&self, key: &[u8]) -> usize {
        // The top bits of a multiply-fold hash are the best mixed. A different seed from
        // the maps' hasher, so keys of one shard still spread over that shard's buckets.
        (self.shard_hash.hash_one(key) >> (64 - SHARDS.trailing_zeros())) as usize
    }

    fn lock_index(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard cannot leave it inconsistent in a way that matters
        // more than losing the whole keyspace would, so a poisoned lock is used anyway.
        self.shards[i].0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the shard holding `key`.
    #[inline]
    pub(super) fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        self.lock_index(self.index(key))
    }

    /// Number of keys, counting expired keys not yet reclaimed (like Redis's `DBSIZE`).
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.lock_index(i).map.len()).sum()
    }

    /// Whether there are no keys (see [`Keyspace::len`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of keys with a deadline (the `expires=` of `INFO keyspace`).
    pub fn expires(&self) -> usize {
        (0..SHARDS).map(|i| self.lock_index(i).expiring.len()).sum()
    }

    /// The value of a live key.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut now = self.clock();
        self.shard(key).with(key, &mut now, |e| e.map(|e| e.value.clone()))
    }

    /// Stores `value` under `key` without a deadline (like `SET key value`).
    pub fn set(&self, key: &[u8], value: &[u8]) {
        let mut now = self.clock();
        self.shard(key).set(key, value, Ttl::Clear, &mut now);
    }

    /// Deletes `key`; returns whether a live key was deleted.
    pub fn del(&self, key: &[u8]) -> bool {
        let mut now = self.clock();
        self.shard(key).delete_live(key, &mut now)
    }

    /// Deletes every key (`FLUSHALL`).
    pub fn clear(&self) {
        for i in 0..SHARDS {
            self.lock_index(i).clear();
        }
    }

    /// One step of active expiry, bounded in work and time: visits the next few shards
    /// (round-robin across calls and threads); in each, examines up to 20 keys that have
    /// a deadline and deletes the expired ones, repeating (up to 16 times) while more than
    /// a quarter of those examined had expired. Stops early after about 2 ms. Each shard
    /// lock is held for one round at a time.
    pub fn active_expire(&self) -> SweepStats {
        let start = Instant::now();
        let now = self.now();
        let mut stats = SweepStats::default();
        let first = self.sweep_next.fetch_add(SWEEP_SHARDS, Ordering::Relaxed);
        'shards: for i in 0..SWEEP_SHARDS {
            let idx = first.wrapping_add(i) % SHARDS;
            for _ in 0..SWEEP_ROUNDS {
                let (seen, deleted) = self.lock_index(idx).sweep_round(now);
                stats.examined += seen;
                stats.deleted += deleted;
                if start.elapsed() > SWEEP_BUDGET {
                    break 'shards;
                }
                if seen < SWEEP_SAMPLE || deleted * 4 <= seen {
                    break;
                }
            }
        }
        stats
    }

    /// Checks every shard's bookkeeping (tests).
    #[cfg(test)]
    pub(super) fn check(&self) {
        for i in 0..SHARDS {
            self.lock_index(i).check();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_spreads_keys_over_shards() {
        let ks = Keyspace::new();
        let mut counts = [0usize; SHARDS];
        for i in 0..64_000 {
            counts[ks.index(format!("key:{i:012}").as_bytes())] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 700 && *max < 1300, "min {min} max {max}");
    }

    #[test]
    fn set_get_del() {
        let ks = Keyspace::new();
        assert!(ks.is_empty());
        ks.set(b"a", b"1");
        ks.set(b"a", b"22");
        assert_eq!(ks.get(b"a"), Some(b"22".to_vec()));
        assert_eq!(ks.len(), 1);
        assert!(ks.del(b"a"));
        assert!(!ks.del(b"a"));
        assert_eq!(ks.get(b"a"), None);
    }

    #[test]
    fn big_buffer_is_not_kept_for_small_value() {
        let ks = Keyspace::new();
        ks.set(b"a", &[7u8; 10_000]);
        ks.set(b"a", b"x");
        let mut now = ks.clock();
        let cap = ks.shard(b"a").with(b"a", &mut now, |e| e.unwrap().value.capacity());
        assert!(cap < 100);
    }

    #[test]
    fn expiry_bookkeeping_survives_churn() {
        let ks = Keyspace::new();
        let later = ks.now() + Duration::from_secs(100);
        for round in 0..3u8 {
            for i in 0..500u32 {
                let k = i.to_le_bytes();
                let mut sh = ks.shard(&k);
                let mut now = ks.clock();
                match (i + u32::from(round)) % 5 {
                    0 => sh.set(&k, b"v", Ttl::At(later), &mut now),
                    1 => sh.set(&k, b"v", Ttl::Clear, &mut now),
                    2 => sh.set(&k, b"v", Ttl::Keep, &mut now),
                    3 => {
                        sh.set_expire(&k, Some(later));
                    }
                    _ => {
                        sh.remove(&k);
                    }
                }
            }
            ks.check();
        }
        for i in 0..500u32 {
            ks.shard(&i.to_le_bytes()).set_expire(&i.to_le_bytes(), None);
        }
        ks.check();
        assert_eq!(ks.expires(), 0);
    }

    #[test]
    fn active_expire_deletes_expired_keys_only() {
        let ks = Keyspace::new();
        // Far enough that a slow (debug, loaded) machine never reaches it by itself.
        let soon = ks.now() + Duration::from_secs(100);
        let later = ks.now() + Duration::from_secs(1000);
        for i in 0..2000u32 {
            let k = format!("k{i}");
            let ttl = if i % 2 == 0 { Ttl::At(soon) } else { Ttl::At(later) };
            ks.shard(k.as_bytes()).set(k.as_bytes(), b"v", ttl, &mut ks.clock());
        }
        for i in 0..100u32 {
            ks.set(format!("p{i}").as_bytes(), b"v");
        }
        assert_eq!(ks.len(), 2100);
        // Nothing has expired yet: a sweep deletes nothing.
        let s = ks.active_expire();
        assert_eq!(s.deleted, 0);
        assert!(s.examined > 0);
        ks.advance(Duration::from_secs(200));
        // Sweeps are bounded (and may stop early on their time budget if this thread is
        // descheduled), so run them until done, within a generous cap.
        let mut total = 0;
        for _ in 0..10_000 {
            let s = ks.active_expire();
            assert!(s.examined <= SWEEP_SHARDS * SWEEP_ROUNDS * SWEEP_SAMPLE);
            total += s.deleted;
            if ks.expires() == 1000 {
                break;
            }
        }
        ks.check();
        assert_eq!(total, 1000);
        assert_eq!(ks.len(), 1100);
        assert_eq!(ks.expires(), 1000);
        ks.advance(Duration::from_secs(2000));
        for _ in 0..10_000 {
            if ks.expires() == 0 {
                break;
            }
            ks.active_expire();
        }
        assert_eq!(ks.len(), 100);
        assert_eq!(ks.expires(), 0);
    }
}
