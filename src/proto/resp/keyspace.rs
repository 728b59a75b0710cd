//! The shared keyspace: 64 mutex-protected shards of string keys with optional expiry.
//!
//! A key's shard is picked by a fast seeded hash of its bytes, so independent keys touched
//! from different event loops rarely contend. Each shard is padded to its own cache lines.
//!
//! ## Expiry
//!
//! An entry may carry a deadline ([`Instant`]). Expiry is *lazy* (every access of an
//! expired key deletes it and behaves as if it were missing) and *active*
//! ([`Keyspace::active_expire`], run from `Protocol::tick`).
//!
//! Each shard keeps an **expiry index**: a `BTreeMap` from `(deadline, seq)` to the key
//! (shared with the map as an `Arc<[u8]>`, so keys are not copied), and every entry with
//! a deadline remembers its `seq`, so adding, changing and removing a deadline are
//! O(log n). The sweep pops exactly the expired keys off the front of each index, with no
//! sampling, and is bounded in time per call (about 1 ms; what is left waits for the next
//! tick); busy sessions also run a small step (one shard, at most 64 keys) every 256
//! commands, so reclaiming keeps pace with traffic. Because ticks come about once a
//! second per loop, the commands that *count* or
//! *list* keys (`DBSIZE`, `KEYS`, `SCAN`, `RANDOMKEY`, `INFO keyspace`) also never count
//! an expired key: [`Keyspace::len`] subtracts the expired prefix of each index. So a
//! client sees a key vanish at its deadline exactly (Redis: within ~100 ms), and memory
//! is reclaimed by the next sweeps.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Number of shards (a power of two).
pub(super) const SHARDS: usize = 64;

/// Expired keys deleted per shard lock hold during an active-expiry sweep.
const SWEEP_BATCH: usize = 64;
/// Time budget of one sweep call.
const SWEEP_BUDGET: Duration = Duration::from_millis(1);

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
    /// The key's position in its shard's expiry index: `(expire, seq)` (meaningful when
    /// `expire` is set).
    seq: u64,
    /// Whether the value was modified in place (`APPEND`, `SETRANGE`, `SETBIT`), which
    /// makes Redis report the `raw` encoding whatever the value.
    pub(super) raw: bool,
    /// Whether the value was made as text even if it looks like an integer
    /// (`INCRBYFLOAT`'s results are `embstr` in Redis, never `int`).
    pub(super) text: bool,
}

impl Entry {
    /// The deadline, if any.
    #[inline]
    pub(super) fn expire(&self) -> Option<Instant> {
        self.expire
    }

    /// `OBJECT ENCODING` as Redis 7.0 answers it for this string.
    pub(super) fn encoding(&self) -> &'static [u8] {
        if self.raw {
            b"raw"
        } else if !self.text
            && self.value.len() <= 20
            && super::parse::parse_i64(&self.value).is_some()
        {
            b"int"
        } else if self.value.len() <= 44 {
            b"embstr"
        } else {
            b"raw"
        }
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

/// One shard: the map plus the expiry index of its keys that have a deadline.
#[derive(Debug)]
pub(super) struct Shard {
    map: HashMap<Arc<[u8]>, Entry, FastBuild>,
    expiring: BTreeMap<(Instant, u64), Arc<[u8]>>,
    next_seq: u64,
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
        Shard { map: HashMap::with_hasher(build), expiring: BTreeMap::new(), next_seq: 0 }
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
            e.raw = false;
            e.text = false;
            // Only a changed deadline costs a second lookup.
            let new = match ttl {
                Ttl::Keep => return,
                Ttl::Clear => None,
                Ttl::At(d) => Some(d),
            };
            if e.expire != new {
                self.set_expire(key, new);
            }
            return;
        }
        self.insert_new(key, value.to_vec(), ttl);
    }

    /// Inserts a key known to be absent.
    fn insert_new(&mut self, key: &[u8], value: Vec<u8>, ttl: Ttl) {
        let expire = match ttl {
            Ttl::At(d) => Some(d),
            Ttl::Keep | Ttl::Clear => None,
        };
        self.insert_absent(key, Entry { value, expire, seq: 0, raw: false, text: false });
    }

    /// Stores `entry` (value, deadline, encoding) under `key`, replacing any old entry
    /// (`RENAME`, `COPY`).
    pub(super) fn put(&mut self, key: &[u8], entry: Entry) {
        self.remove(key);
        self.insert_absent(key, entry);
    }

    /// Stores `entry` under `key`, known to be absent.
    fn insert_absent(&mut self, key: &[u8], mut entry: Entry) {
        let k: Arc<[u8]> = Arc::from(key);
        if let Some(d) = entry.expire {
            entry.seq = self.next_seq;
            self.next_seq += 1;
            self.expiring.insert((d, entry.seq), Arc::clone(&k));
        }
        self.map.insert(k, entry);
    }

    /// A copy of a live entry (`COPY`).
    pub(super) fn clone_live(&mut self, key: &[u8], now: &mut Now<'_>) -> Option<Entry> {
        self.with(key, now, |e| {
            e.map(|e| Entry {
                value: e.value.clone(),
                expire: e.expire,
                seq: 0,
                raw: e.raw,
                text: e.text,
            })
        })
    }

    /// Removes and returns a live entry (`RENAME`).
    pub(super) fn take_live(&mut self, key: &[u8], now: &mut Now<'_>) -> Option<Entry> {
        let e = self.remove(key)?;
        (!is_expired(&e, now)).then_some(e)
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
        if let Some(d) = e.expire {
            self.expiring.remove(&(d, e.seq));
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
        let Some((k, e)) = self.map.get_key_value(key) else {
            return false;
        };
        if e.expire == deadline {
            return true;
        }
        let k = Arc::clone(k);
        let seq = self.next_seq;
        self.next_seq += 1;
        let Some(e) = self.map.get_mut(key) else {
            return false;
        };
        if let Some(old) = e.expire {
            self.expiring.remove(&(old, e.seq));
        }
        e.expire = deadline;
        if let Some(d) = deadline {
            e.seq = seq;
            self.expiring.insert((d, seq), k);
        }
        true
    }

    /// Number of keys with a deadline at or before `now`, still stored.
    fn expired_count(&self, now: Instant) -> usize {
        self.expiring.range(..=(now, u64::MAX)).count()
    }

    /// Live keys in this shard.
    fn live_len(&self, now: Instant) -> usize {
        self.map.len() - self.expired_count(now).min(self.map.len())
    }

    /// Deletes up to `max` expired keys, earliest deadline first. Returns how many.
    fn sweep(&mut self, now: Instant, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(entry) = self.expiring.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.map.remove(&*key);
            n += 1;
        }
        n
    }

    /// Calls `f` on every live key and entry.
    pub(super) fn for_each_live(&self, now: Instant, mut f: impl FnMut(&[u8], &Entry)) {
        for (k, e) in &self.map {
            if e.expire.is_none_or(|d| now < d) {
                f(k, e);
            }
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.expiring.clear();
    }

    /// Checks the expiry index bookkeeping (tests).
    #[cfg(test)]
    pub(super) fn check(&self) {
        let with_ttl = self.map.values().filter(|e| e.expire.is_some()).count();
        assert_eq!(with_ttl, self.expiring.len());
        for ((d, seq), k) in &self.expiring {
            let e = &self.map[&**k];
            assert_eq!(e.expire, Some(*d));
            assert_eq!(e.seq, *seq);
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
    /// The shard of the next [`Keyspace::sweep_step`].
    sweep_step_next: AtomicUsize,
    /// The clock's origin, as a monotonic instant and as Unix time in milliseconds, so
    /// deadlines and Unix times (`EXPIREAT`, `EXPIRETIME`) convert exactly both ways.
    base: Instant,
    base_unix_ms: i64,
    /// State of the `RANDOMKEY` generator.
    rng: AtomicU64,
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
            sweep_step_next: AtomicUsize::new(0),
            base: Instant::now(),
            base_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            rng: AtomicU64::new(map_hash.hash_one(1u64)),
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

    /// Unix time in milliseconds of the instant `t` (at or after the keyspace's creation).
    pub(super) fn unix_ms_of(&self, t: Instant) -> i64 {
        let ms = i64::try_from(t.saturating_duration_since(self.base).as_millis());
        self.base_unix_ms.saturating_add(ms.unwrap_or(i64::MAX))
    }

    /// The instant of Unix time `ms` (instants before the keyspace's creation are clamped
    /// to it: they are in the past either way); None if not representable.
    pub(super) fn instant_of_unix_ms(&self, ms: i64) -> Option<Instant> {
        let rel = ms.saturating_sub(self.base_unix_ms).max(0);
        self.base.checked_add(Duration::from_millis(rel as u64))
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

    /// Number of live keys (`DBSIZE`): keys past their deadline are not counted, even
    /// before a sweep reclaims them (a difference from Redis, which counts them until its
    /// ~100 ms expire cycle does; see the module docs).
    pub fn len(&self) -> usize {
        let now = self.now();
        (0..SHARDS)
            .map(|i| {
                let mut sh = self.lock_index(i);
                // Reclaim a bounded number on the way, so counting stays cheap.
                sh.sweep(now, SWEEP_BATCH);
                sh.live_len(now)
            })
            .sum()
    }

    /// Whether there are no live keys (see [`Keyspace::len`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of live keys with a deadline (the `expires=` of `INFO keyspace`).
    pub fn expires(&self) -> usize {
        let now = self.now();
        (0..SHARDS)
            .map(|i| {
                let sh = self.lock_index(i);
                sh.expiring.len() - sh.expired_count(now)
            })
            .sum()
    }

    /// Keys stored, expired or not (tests: what the sweep has left to reclaim).
    pub fn stored(&self) -> usize {
        (0..SHARDS).map(|i| self.lock_index(i).map.len()).sum()
    }

    /// Calls `f` on every live key, one shard locked at a time (`KEYS`).
    pub(super) fn for_each_live(&self, mut f: impl FnMut(&[u8], &Entry)) {
        let now = self.now();
        for i in 0..SHARDS {
            self.lock_index(i).for_each_live(now, &mut f);
        }
    }

    /// One `SCAN` step from `cursor`: calls `f` on live keys until about `count` were
    /// visited, and returns the next cursor (0 when the scan is complete).
    ///
    /// The cursor is a position in the 64-bit space of the shard hash (whose top bits
    /// pick the shard): a step visits every key whose hash lies in `[cursor, next)`, a
    /// range taken under the shard's lock. The ranges of successive steps are contiguous
    /// and cover the space once, so a key present for the whole scan is returned exactly
    /// once however keys are added or removed meanwhile. A step's range is sized from the
    /// shard's key count so it holds about `count` keys, but never less than 1/16 of a
    /// shard (so a full scan hashes every key at most 16 times).
    pub(super) fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&[u8], &Entry)) -> u64 {
        const SPAN: u128 = 1 << 58;
        let now = self.now();
        let mut pos = u128::from(cursor);
        let mut visited = 0usize;
        let count = count.max(1);
        while pos < 1 << 64 && visited < count {
            let idx = (pos >> 58) as usize;
            let shard_end = (idx as u128 + 1) * SPAN;
            let sh = self.lock_index(idx);
            let len = sh.map.len();
            let width = if len <= count - visited {
                SPAN
            } else {
                (SPAN * (count - visited) as u128 / len as u128).max(SPAN / 16)
            };
            let hi = (pos + width).min(shard_end);
            for (k, e) in &sh.map {
                let h = u128::from(self.shard_hash.hash_one(&**k));
                if h >= pos && h < hi && e.expire.is_none_or(|d| now < d) {
                    visited += 1;
                    f(k, e);
                }
            }
            pos = hi;
        }
        if pos >= 1 << 64 { 0 } else { pos as u64 }
    }

    /// A random live key (`RANDOMKEY`).
    pub(super) fn random_key(&self) -> Option<Vec<u8>> {
        let now = self.now();
        let mut x = self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        for _ in 0..SHARDS * 2 {
            x = fold_mul(x ^ M1, M2);
            let sh = self.lock_index((x >> 58) as usize);
            let live = sh.live_len(now);
            if live == 0 {
                continue;
            }
            let skip = (x as usize) % live;
            let mut found = None;
            let mut i = 0;
            sh.for_each_live(now, |k, _| {
                if i == skip {
                    found = Some(k.to_vec());
                }
                i += 1;
            });
            if found.is_some() {
                return found;
            }
        }
        let mut any = None;
        self.for_each_live(|k, _| {
            if any.is_none() {
                any = Some(k.to_vec());
            }
        });
        any
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

    /// A small active-expiry step for busy servers: deletes up to `SWEEP_BATCH` expired
    /// keys of the next shard (round-robin). Sessions run one every few hundred commands,
    /// so reclaiming keeps pace with traffic between ticks.
    pub(super) fn sweep_step(&self) -> usize {
        let idx = self.sweep_step_next.fetch_add(1, Ordering::Relaxed) % SHARDS;
        let now = self.now();
        self.lock_index(idx).sweep(now, SWEEP_BATCH)
    }

    /// One step of active expiry, bounded in time: from the shard where the previous
    /// call stopped, deletes the expired keys of each shard, earliest first, from the
    /// front of its expiry index, taking the shard's lock for at most `SWEEP_BATCH` keys
    /// at a time. Stops after about 1 ms; the next call continues there.
    pub fn active_expire(&self) -> SweepStats {
        self.active_expire_within(SWEEP_BUDGET)
    }

    /// [`Keyspace::active_expire`] with a time budget of `budget`.
    pub fn active_expire_within(&self, budget: Duration) -> SweepStats {
        let start = Instant::now();
        let now = self.now();
        let mut stats = SweepStats::default();
        let first = self.sweep_next.load(Ordering::Relaxed);
        for i in 0..SHARDS {
            let idx = first.wrapping_add(i) % SHARDS;
            loop {
                let n = self.lock_index(idx).sweep(now, SWEEP_BATCH);
                stats.examined += n;
                stats.deleted += n;
                if start.elapsed() > budget {
                    self.sweep_next.store(idx, Ordering::Relaxed);
                    return stats;
                }
                if n < SWEEP_BATCH {
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
        ks.advance(Duration::from_secs(200));
        // Sweeps are bounded (and may stop early on their time budget if this thread is
        // descheduled), so run them until done, within a generous cap.
        let mut total = 0;
        assert_eq!(ks.stored(), 2100);
        for _ in 0..10_000 {
            let s = ks.active_expire();
            total += s.deleted;
            if ks.stored() == 1100 {
                break;
            }
        }
        ks.check();
        assert_eq!(total, 1000);
        // Expired keys are not counted, before or after a sweep.
        assert_eq!(ks.expires(), 1000);
        assert_eq!(ks.len(), 1100);
        assert_eq!(ks.expires(), 1000);
        ks.advance(Duration::from_secs(2000));
        assert_eq!(ks.expires(), 0);
        for _ in 0..10_000 {
            if ks.stored() == 100 {
                break;
            }
            ks.active_expire();
        }
        ks.check();
        assert_eq!(ks.stored(), 100);
        assert_eq!(ks.expires(), 0);
    }
}
