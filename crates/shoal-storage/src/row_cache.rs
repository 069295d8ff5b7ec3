//! A cache of point reads in front of the engine's B-trees, kept exact by the commit protocol.
//!
//! A point read through redb walks three or four pages, each looked up in redb's own page
//! cache (a hash probe, a lock and a reference count per page) and binary-searched: about as
//! much CPU as the rest of a replica's work on a read. This cache answers a repeated point read
//! with one hash probe. It holds values (and absences) of single keys, bounded in bytes,
//! evicted by CLOCK (an entry read since the hand last passed gets a second chance).
//!
//! # Why it is never stale
//! Every entry equals the key's value in the latest committed state. The writer and the
//! readers keep that true with the engine's commit generation (odd while a commit is under
//! way), under the shard's lock:
//! - the writer moves the generation to odd *before* it invalidates the keys a commit touches,
//!   and commits after that;
//! - a reader that missed notes the generation (it must be even), reads the engine, and inserts
//!   only if the generation is still the one it noted.
//!
//! So an insert that passed its check before a commit began is removed by that commit's
//! invalidation (which waits for the shard's lock), and a read that overlaps any part of a
//! commit inserts nothing. Between the invalidation and the end of the commit the key is
//! simply absent, and every reader goes to the engine.

use parking_lot::Mutex;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use indexmap::IndexMap;

/// Shards: independent locks, so readers on different cores rarely meet.
const SHARDS: usize = 64;
/// Bytes an entry costs beyond its key and value (map slot, index, allocation headers).
const ENTRY_OVERHEAD: usize = 64;

/// The cache; all methods take `&self`.
pub(crate) struct RowCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Bytes one shard may hold.
    shard_budget: usize,
}

#[derive(Default)]
struct Shard {
    entries: IndexMap<Box<[u8]>, Entry>,
    bytes: usize,
    /// The CLOCK hand: index of the next entry eviction looks at.
    hand: usize,
    /// Lookups answered here and sent on, counted under the shard's lock (no counter shared
    /// by every core on the read path).
    hits: u64,
    misses: u64,
}

struct Entry {
    value: Option<Box<[u8]>>,
    /// Read since the hand last passed.
    referenced: bool,
}

/// What a miss must hand back to [`RowCache::fill`].
pub(crate) struct Miss {
    shard: usize,
    key: Box<[u8]>,
    /// The commit generation noted at the miss; `None` if a commit was under way.
    generation: Option<u64>,
}

impl RowCache {
    /// A cache holding about `budget` bytes; `None` for a budget of zero.
    pub(crate) fn new(budget: usize) -> Option<Self> {
        if budget == 0 {
            return None;
        }
        Some(RowCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            shard_budget: budget.div_ceil(SHARDS),
        })
    }

    /// The value of `key` in `tree` (`Ok`: known, `None` for an absent key), or the ticket
    /// with which to fill the entry after reading the engine.
    pub(crate) fn get(
        &self,
        tree: &str,
        key: &[u8],
        generation: &AtomicU64,
    ) -> Result<Option<Vec<u8>>, Miss> {
        let key = cache_key(tree, key);
        let shard = self.shard_of(&key);
        let mut s = self.lock(shard);
        if let Some(e) = s.entries.get_mut(&key) {
            e.referenced = true;
            let value = e.value.as_deref().map(<[u8]>::to_vec);
            s.hits += 1;
            return Ok(value);
        }
        s.misses += 1;
        // Read under the shard's lock: ordered with the writer's invalidations of this shard.
        let g = generation.load(Ordering::SeqCst);
        drop(s);
        Err(Miss {
            shard,
            key,
            generation: g.is_multiple_of(2).then_some(g),
        })
    }

    /// Remembers what the engine answered for a miss, unless a commit began since.
    pub(crate) fn fill(&self, miss: Miss, value: Option<&[u8]>, generation: &AtomicU64) {
        let Some(noted) = miss.generation else {
            return;
        };
        let cost = miss.key.len() + value.map_or(0, <[u8]>::len) + ENTRY_OVERHEAD;
        if cost > self.shard_budget / 4 {
            return;
        }
        let mut s = self.lock(miss.shard);
        if generation.load(Ordering::SeqCst) != noted {
            return;
        }
        while s.bytes + cost > self.shard_budget && !s.entries.is_empty() {
            s.evict_one();
        }
        let entry = Entry {
            value: value.map(Box::from),
            referenced: false,
        };
        if let Some(old) = s.entries.insert(miss.key, entry) {
            // Two readers filled the same key from the same state: same value, same cost.
            s.bytes -= cost_of_value(&old);
        }
        s.bytes += cost;
    }

    /// Forgets `key` of `tree`. The writer calls it for every key a commit touches, after the
    /// generation went odd and before the commit.
    pub(crate) fn invalidate(&self, tree: &str, key: &[u8]) {
        let key = cache_key(tree, key);
        let mut s = self.lock(self.shard_of(&key));
        // The last entry moves into the freed slot; a hand left past the end wraps at the
        // next eviction.
        if let Some(e) = s.entries.swap_remove(&key) {
            s.bytes -= key.len() + cost_of_value(&e);
        }
    }

    /// Forgets everything (the file was reopened: its state may be older than the cache's).
    pub(crate) fn clear(&self) {
        for i in 0..SHARDS {
            let mut s = self.lock(i);
            s.entries = IndexMap::default();
            s.bytes = 0;
            s.hand = 0;
        }
    }

    /// Point reads answered by the cache and by the engine, since the start.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (0..SHARDS)
            .map(|i| {
                let s = self.lock(i);
                (s.hits, s.misses)
            })
            .fold((0, 0), |(h, m), (sh, sm)| (h + sh, m + sm))
    }

    /// Bytes held (by the accounting eviction uses).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        (0..SHARDS).map(|i| self.lock(i).bytes).sum()
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    fn lock(&self, shard: usize) -> parking_lot::MutexGuard<'_, Shard> {
        // A panic while holding a shard leaves it consistent (no step of ours can panic
        // half-way): parking_lot locks do not poison, and need not.
        self.shards[shard].lock()
    }
}

impl Shard {
    fn evict_one(&mut self) {
        loop {
            if self.hand >= self.entries.len() {
                self.hand = 0;
            }
            let (_, e) = self
                .entries
                .get_index_mut(self.hand)
                .expect("the hand is within the entries");
            if e.referenced {
                e.referenced = false;
                self.hand += 1;
                continue;
            }
            let (k, e) = self
                .entries
                .swap_remove_index(self.hand)
                .expect("the hand is within the entries");
            self.bytes -= k.len() + cost_of_value(&e);
            return;
        }
    }
}

fn cost_of_value(e: &Entry) -> usize {
    e.value.as_ref().map_or(0, |v| v.len()) + ENTRY_OVERHEAD
}

/// The tree's name, length-prefixed, then the key: distinct for distinct (tree, key) pairs.
fn cache_key(tree: &str, key: &[u8]) -> Box<[u8]> {
    let mut k = Vec::with_capacity(4 + tree.len() + key.len());
    k.extend_from_slice(&(tree.len() as u32).to_le_bytes());
    k.extend_from_slice(tree.as_bytes());
    k.extend_from_slice(key);
    k.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(
        c: &RowCache,
        g: &AtomicU64,
        tree: &str,
        key: &[u8],
        engine: Option<&[u8]>,
    ) -> Option<Vec<u8>> {
        match c.get(tree, key, g) {
            Ok(v) => v,
            Err(miss) => {
                c.fill(miss, engine, g);
                engine.map(<[u8]>::to_vec)
            }
        }
    }

    #[test]
    fn a_filled_key_is_answered_until_a_commit_touches_it() {
        let c = RowCache::new(1 << 20).unwrap();
        let g = AtomicU64::new(0);
        assert!(c.get("t", b"k", &g).is_err());
        read(&c, &g, "t", b"k", Some(b"v1"));
        assert_eq!(c.get("t", b"k", &g).ok(), Some(Some(b"v1".to_vec())));
        // Same key in another tree, and an absent key, are entries of their own.
        assert!(c.get("u", b"k", &g).is_err());
        read(&c, &g, "t", b"none", None);
        assert_eq!(c.get("t", b"none", &g).ok(), Some(None));
        // A commit: generation odd, invalidate, commit, generation even.
        g.fetch_add(1, Ordering::SeqCst);
        c.invalidate("t", b"k");
        g.fetch_add(1, Ordering::SeqCst);
        assert!(c.get("t", b"k", &g).is_err());
        assert_eq!(c.get("t", b"none", &g).ok(), Some(None));
        assert_eq!(c.counts().0, 3);
    }

    #[test]
    fn a_read_that_overlaps_a_commit_fills_nothing() {
        let c = RowCache::new(1 << 20).unwrap();
        let g = AtomicU64::new(0);
        // Missed before the commit began, filled with the old value after it began.
        let miss = c.get("t", b"k", &g).unwrap_err();
        g.fetch_add(1, Ordering::SeqCst);
        c.invalidate("t", b"k");
        c.fill(miss, Some(b"old"), &g);
        assert!(c.get("t", b"k", &g).is_err(), "the old value was not kept");
        // Missed while the commit was under way: its read may show either state.
        let miss = c.get("t", b"k", &g).unwrap_err();
        g.fetch_add(1, Ordering::SeqCst);
        c.fill(miss, Some(b"old"), &g);
        assert!(c.get("t", b"k", &g).is_err());
        // Filled before the commit began: the commit's invalidation removes it.
        let miss = c.get("t", b"k", &g).unwrap_err();
        c.fill(miss, Some(b"v2"), &g);
        g.fetch_add(1, Ordering::SeqCst);
        c.invalidate("t", b"k");
        g.fetch_add(1, Ordering::SeqCst);
        assert!(c.get("t", b"k", &g).is_err());
    }

    #[test]
    fn eviction_keeps_the_budget_and_spares_entries_read_since_the_hand_passed() {
        let budget = SHARDS * 4096;
        let c = RowCache::new(budget).unwrap();
        let g = AtomicU64::new(0);
        let hot = b"hot".to_vec();
        read(&c, &g, "t", &hot, Some(&[1u8; 100]));
        for i in 0..20_000u32 {
            read(&c, &g, "t", &i.to_be_bytes(), Some(&[0u8; 100]));
            // The hot key is read all the time.
            assert!(
                c.get("t", &hot, &g).is_ok(),
                "hot key evicted after {i} fills"
            );
            assert!(c.bytes() <= budget);
        }
        assert!(
            c.bytes() > budget / 2,
            "the cache is used: {} bytes",
            c.bytes()
        );
        // Entries too large for a shard are not kept.
        read(&c, &g, "t", b"big", Some(&vec![0u8; 4096]));
        assert!(c.get("t", b"big", &g).is_err());
        c.clear();
        assert_eq!(c.bytes(), 0);
        assert!(c.get("t", &hot, &g).is_err());
    }

    #[test]
    fn invalidating_under_the_hand_keeps_eviction_working() {
        let c = RowCache::new(SHARDS * 2048).unwrap();
        let g = AtomicU64::new(0);
        for round in 0..50u32 {
            for i in 0..200u32 {
                read(&c, &g, "t", &i.to_be_bytes(), Some(&round.to_be_bytes()));
            }
            for i in (0..200u32).step_by(3) {
                c.invalidate("t", &i.to_be_bytes());
            }
        }
        let total: usize = (0..SHARDS)
            .map(|i| {
                let s = c.lock(i);
                let counted: usize = s
                    .entries
                    .iter()
                    .map(|(k, e)| k.len() + cost_of_value(e))
                    .sum();
                assert_eq!(counted, s.bytes, "byte accounting matches the entries");
                s.bytes
            })
            .sum();
        assert!(total <= SHARDS * 2048);
    }
}
