//! Exact-match response cache: bounded in bytes, per-entry TTL plus a stale period for
//! `stale-on-error`, least-recently-used eviction, O(1) lookups and inserts.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// Bytes charged per entry on top of its body and strings (map slot, list links, timestamps).
pub const ENTRY_OVERHEAD: usize = 128;

/// An answer as the gateway needs it to replay it, whatever the client's API format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedAnswer {
    /// HTTP status of the answer.
    pub status: u16,
    /// `content-type` of the body.
    pub content_type: String,
    /// The response body, in the client's format.
    pub body: Bytes,
    /// The upstream model that answered.
    pub model: String,
    /// The target (`provider/model`) that answered.
    pub target: String,
}

impl CachedAnswer {
    /// Bytes this answer is charged in the cache.
    pub fn charged_bytes(&self) -> usize {
        ENTRY_OVERHEAD
            .saturating_add(self.body.len())
            .saturating_add(self.content_type.len())
            .saturating_add(self.model.len())
            .saturating_add(self.target.len())
    }
}

/// A cache hit.
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    /// The stored answer (cheap to clone).
    pub answer: Arc<CachedAnswer>,
    /// Within its TTL; `false` means stale: only for `stale-on-error`.
    pub fresh: bool,
    /// Time since it was stored.
    pub age: Duration,
}

/// Computes cache keys: a 128-bit hash of the route and the canonical request.
///
/// Two SipHash-1-3 hashes (std's `RandomState`) with independent random keys chosen when the keyer is
/// created. Keys are random, not fixed, on purpose: the cache is shared by every client of the gateway,
/// and with a public hash function (FNV, or SipHash with known keys) a client could craft a request
/// whose key collides with another client's and have its answer served to them. The cache lives in
/// one process's memory, so keys never need to be stable across processes. Create one keyer for the
/// cache's life and share it (it is cheap to clone and needs no lock).
#[derive(Clone, Debug, Default)]
pub struct CacheKeyer {
    high: RandomState,
    low: RandomState,
}

impl CacheKeyer {
    /// A keyer with fresh random keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cache key of `canonical_bytes` on `route`. The route's length is hashed first, so
    /// `("ab", "c")` and `("a", "bc")` differ.
    pub fn key(&self, route: &str, canonical_bytes: &[u8]) -> u128 {
        let hash = |state: &RandomState| {
            let mut h = state.build_hasher();
            h.write_usize(route.len());
            h.write(route.as_bytes());
            h.write(canonical_bytes);
            h.finish()
        };
        (u128::from(hash(&self.high)) << 64) | u128::from(hash(&self.low))
    }
}

const NIL: usize = usize::MAX;

#[derive(Debug)]
struct Node {
    key: u128,
    answer: Arc<CachedAnswer>,
    size: usize,
    stored_at: Instant,
    ttl: Duration,
    /// TTL plus stale period: past this age the entry is gone.
    lifetime: Duration,
    /// Towards the most recently used end.
    prev: usize,
    /// Towards the least recently used end.
    next: usize,
}

/// The response cache. Not thread-safe by itself: the caller wraps it in a mutex held only for a
/// `get` or an `insert` (compute the key outside the lock).
#[derive(Debug)]
pub struct ResponseCache {
    max_bytes: usize,
    max_entry_bytes: usize,
    used: usize,
    map: HashMap<u128, usize>,
    slots: Vec<Option<Node>>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used: evicted first.
    tail: usize,
}

impl ResponseCache {
    /// An empty cache holding at most `max_bytes`, refusing entries over `max_entry_bytes` (both as
    /// counted by [`CachedAnswer::charged_bytes`]).
    pub fn new(max_bytes: usize, max_entry_bytes: usize) -> Self {
        Self {
            max_bytes,
            max_entry_bytes,
            used: 0,
            map: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    /// Entries held (including stale ones not yet looked up or evicted).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes held.
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// The answer stored under `key`, fresh or stale; `None` on a miss or once the entry is past its
    /// TTL plus stale period (it is then dropped). A hit makes the entry the most recently used.
    pub fn get(&mut self, key: u128, now: Instant) -> Option<Lookup> {
        let idx = *self.map.get(&key)?;
        let node = self.slots.get(idx)?.as_ref()?;
        let age = now.saturating_duration_since(node.stored_at);
        if age >= node.lifetime {
            self.remove_at(idx);
            return None;
        }
        let lookup = Lookup {
            answer: Arc::clone(&node.answer),
            fresh: age < node.ttl,
            age,
        };
        self.unlink(idx);
        self.push_front(idx);
        Some(lookup)
    }

    /// Stores `value` under `key`, fresh for `ttl` and then stale for `stale_ttl` more (use zero when
    /// the route does not serve stale answers). Replaces an older entry under the same key, then evicts
    /// least recently used entries until everything fits. Returns whether it was stored: an entry over
    /// `max_entry_bytes` or `max_bytes`, or with no lifetime at all, is not (and leaves any older entry
    /// under the key in place).
    pub fn insert(
        &mut self,
        key: u128,
        value: CachedAnswer,
        now: Instant,
        ttl: Duration,
        stale_ttl: Duration,
    ) -> bool {
        let size = value.charged_bytes();
        let lifetime = ttl.saturating_add(stale_ttl);
        if size > self.max_entry_bytes || size > self.max_bytes || lifetime.is_zero() {
            return false;
        }
        if let Some(&old) = self.map.get(&key) {
            self.remove_at(old);
        }
        while self.used.saturating_add(size) > self.max_bytes && self.tail != NIL {
            self.remove_at(self.tail);
        }
        let node = Node {
            key,
            answer: Arc::new(value),
            size,
            stored_at: now,
            ttl,
            lifetime,
            prev: NIL,
            next: NIL,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                if let Some(slot) = self.slots.get_mut(i) {
                    *slot = Some(node);
                }
                i
            }
            None => {
                self.slots.push(Some(node));
                self.slots.len() - 1
            }
        };
        self.map.insert(key, idx);
        self.used = self.used.saturating_add(size);
        self.push_front(idx);
        true
    }

    /// Drops the entry under `key`; returns whether there was one.
    pub fn remove(&mut self, key: u128) -> bool {
        match self.map.get(&key) {
            Some(&idx) => {
                self.remove_at(idx);
                true
            }
            None => false,
        }
    }

    /// Drops every entry past its TTL plus stale period (O(entries): for a periodic sweep, not the
    /// request path).
    pub fn purge_expired(&mut self, now: Instant) {
        let mut idx = self.tail;
        while idx != NIL {
            let Some(node) = self.node(idx) else { break };
            let prev = node.prev;
            if now.saturating_duration_since(node.stored_at) >= node.lifetime {
                self.remove_at(idx);
            }
            idx = prev;
        }
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.map.clear();
        self.slots.clear();
        self.free.clear();
        self.used = 0;
        self.head = NIL;
        self.tail = NIL;
    }

    fn node(&self, idx: usize) -> Option<&Node> {
        self.slots.get(idx).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, idx: usize) -> Option<&mut Node> {
        self.slots.get_mut(idx).and_then(Option::as_mut)
    }

    fn remove_at(&mut self, idx: usize) {
        self.unlink(idx);
        if let Some(node) = self.slots.get_mut(idx).and_then(Option::take) {
            self.map.remove(&node.key);
            self.used = self.used.saturating_sub(node.size);
            self.free.push(idx);
        }
    }

    fn unlink(&mut self, idx: usize) {
        let Some(node) = self.node_mut(idx) else {
            return;
        };
        let (prev, next) = (node.prev, node.next);
        node.prev = NIL;
        node.next = NIL;
        match self.node_mut(prev) {
            Some(p) => p.next = next,
            None => {
                if self.head == idx {
                    self.head = next;
                }
            }
        }
        match self.node_mut(next) {
            Some(n) => n.prev = prev,
            None => {
                if self.tail == idx {
                    self.tail = prev;
                }
            }
        }
    }

    fn push_front(&mut self, idx: usize) {
        let old_head = self.head;
        if let Some(node) = self.node_mut(idx) {
            node.prev = NIL;
            node.next = old_head;
        } else {
            return;
        }
        match self.node_mut(old_head) {
            Some(h) => h.prev = idx,
            None => self.tail = idx,
        }
        self.head = idx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// An answer charged exactly `bytes` (at least the overhead plus its short strings).
    fn answer(bytes: usize, tag: &str) -> CachedAnswer {
        let fixed = ENTRY_OVERHEAD + "application/json".len() + tag.len() + "t".len();
        CachedAnswer {
            status: 200,
            content_type: "application/json".to_owned(),
            body: Bytes::from(vec![b'x'; bytes - fixed]),
            model: tag.to_owned(),
            target: "t".to_owned(),
        }
    }

    #[test]
    fn hit_and_miss() {
        let t0 = Instant::now();
        let mut c = ResponseCache::new(10_000, 10_000);
        assert!(c.get(1, t0).is_none());
        assert!(c.insert(1, answer(500, "a"), t0, secs(60), Duration::ZERO));
        let hit = c.get(1, t0 + secs(3)).expect("hit");
        assert_eq!(hit.answer.model, "a");
        assert_eq!(hit.answer.charged_bytes(), 500);
        assert!(hit.fresh);
        assert_eq!(hit.age, secs(3));
        assert!(c.get(2, t0).is_none());
        assert_eq!((c.len(), c.used_bytes()), (1, 500));
    }

    #[test]
    fn fresh_then_stale_then_gone() {
        let t0 = Instant::now();
        let mut c = ResponseCache::new(10_000, 10_000);
        c.insert(7, answer(300, "a"), t0, secs(10), secs(20));
        let at = |c: &mut ResponseCache, s: u64| {
            c.get(7, t0 + Duration::from_millis(s)).map(|l| l.fresh)
        };
        assert_eq!(at(&mut c, 0), Some(true));
        assert_eq!(at(&mut c, 9_999), Some(true));
        assert_eq!(at(&mut c, 10_000), Some(false));
        assert_eq!(at(&mut c, 29_999), Some(false));
        assert_eq!(at(&mut c, 30_000), None);
        // Dropped once gone.
        assert_eq!((c.len(), c.used_bytes()), (0, 0));
        // Without a stale period, the entry is gone at its TTL.
        c.insert(8, answer(300, "b"), t0, secs(10), Duration::ZERO);
        assert!(c.get(8, t0 + secs(10)).is_none());
        // With no lifetime at all, nothing is stored.
        assert!(!c.insert(9, answer(300, "c"), t0, Duration::ZERO, Duration::ZERO));
        assert!(c.is_empty());
    }

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let t0 = Instant::now();
        let mut c = ResponseCache::new(1_000, 1_000);
        let ttl = secs(60);
        c.insert(1, answer(300, "a"), t0, ttl, ttl);
        c.insert(2, answer(300, "b"), t0, ttl, ttl);
        c.insert(3, answer(300, "c"), t0, ttl, ttl);
        assert!(c.get(1, t0).is_some()); // 1 is now the most recently used; 2 the least
        c.insert(4, answer(300, "d"), t0, ttl, ttl);
        assert!(c.get(2, t0).is_none());
        assert_eq!(c.used_bytes(), 900);
        // A large entry evicts as many as it needs, oldest first.
        c.insert(5, answer(700, "e"), t0, ttl, ttl);
        assert_eq!(c.used_bytes(), 1_000);
        assert!(c.get(3, t0).is_none() && c.get(1, t0).is_none());
        assert!(c.get(4, t0).is_some() && c.get(5, t0).is_some());
    }

    #[test]
    fn oversize_entries_are_not_stored() {
        let t0 = Instant::now();
        let mut c = ResponseCache::new(1_000, 400);
        let ttl = secs(60);
        assert!(c.insert(1, answer(400, "a"), t0, ttl, ttl));
        assert!(!c.insert(2, answer(401, "b"), t0, ttl, ttl));
        // An oversize answer does not replace or evict what is there.
        assert!(!c.insert(1, answer(401, "c"), t0, ttl, ttl));
        assert_eq!(c.get(1, t0).expect("kept").answer.model, "a");
        assert_eq!((c.len(), c.used_bytes()), (1, 400));
        let mut tiny = ResponseCache::new(300, 1_000);
        assert!(!tiny.insert(1, answer(301, "a"), t0, ttl, ttl));
    }

    #[test]
    fn replacing_an_entry_updates_its_bytes_and_value() {
        let t0 = Instant::now();
        let mut c = ResponseCache::new(1_000, 1_000);
        c.insert(1, answer(300, "old"), t0, secs(10), Duration::ZERO);
        c.insert(
            1,
            answer(500, "new"),
            t0 + secs(5),
            secs(10),
            Duration::ZERO,
        );
        assert_eq!((c.len(), c.used_bytes()), (1, 500));
        let hit = c.get(1, t0 + secs(12)).expect("hit");
        assert_eq!(
            (hit.answer.model.as_str(), hit.fresh, hit.age),
            ("new", true, secs(7))
        );
        assert!(c.remove(1));
        assert!(!c.remove(1));
        assert_eq!((c.len(), c.used_bytes()), (0, 0));
    }

    #[test]
    fn purge_drops_only_expired_entries() {
        let t0 = Instant::now();
        let mut c = ResponseCache::new(10_000, 10_000);
        c.insert(1, answer(200, "a"), t0, secs(10), Duration::ZERO);
        c.insert(2, answer(200, "b"), t0, secs(10), secs(10));
        c.insert(3, answer(200, "c"), t0, secs(30), Duration::ZERO);
        c.purge_expired(t0 + secs(15));
        assert_eq!((c.len(), c.used_bytes()), (2, 400));
        assert!(c.get(1, t0 + secs(15)).is_none());
        assert!(c.get(2, t0 + secs(15)).is_some());
        c.clear();
        assert!(c.is_empty() && c.used_bytes() == 0);
        assert!(c.insert(4, answer(200, "d"), t0, secs(10), Duration::ZERO));
    }

    /// Random operations against a plain model (a vector in recency order): same hits, same bytes.
    #[test]
    fn matches_a_simple_lru_model() {
        let t0 = Instant::now();
        let ttl = secs(3_600);
        let mut rng = fastrand::Rng::with_seed(11);
        let mut c = ResponseCache::new(3_000, 1_500);
        // (key, bytes), most recently used last.
        let mut model: Vec<(u128, usize)> = Vec::new();
        for _ in 0..20_000 {
            let key = rng.u128(0..24);
            match rng.u8(0..10) {
                0..=3 => {
                    let bytes = rng.usize(160..1_700);
                    let stored = c.insert(key, answer(bytes, "m"), t0, ttl, ttl);
                    assert_eq!(stored, bytes <= 1_500);
                    if stored {
                        model.retain(|(k, _)| *k != key);
                        while model.iter().map(|(_, b)| b).sum::<usize>() + bytes > 3_000 {
                            model.remove(0);
                        }
                        model.push((key, bytes));
                    }
                }
                4 => {
                    let had = model.iter().any(|(k, _)| *k == key);
                    assert_eq!(c.remove(key), had);
                    model.retain(|(k, _)| *k != key);
                }
                _ => {
                    let hit = c.get(key, t0).map(|l| l.answer.charged_bytes());
                    let pos = model.iter().position(|(k, _)| *k == key);
                    assert_eq!(hit, pos.map(|p| model[p].1));
                    if let Some(p) = pos {
                        let entry = model.remove(p);
                        model.push(entry);
                    }
                }
            }
            assert_eq!(c.len(), model.len());
            assert_eq!(c.used_bytes(), model.iter().map(|(_, b)| b).sum::<usize>());
            assert!(c.used_bytes() <= 3_000);
        }
    }

    #[test]
    fn keys_depend_on_route_and_request() {
        let k = CacheKeyer::new();
        let body = br#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(k.key("chat", body), k.key("chat", body));
        assert_eq!(k.clone().key("chat", body), k.key("chat", body));
        assert_ne!(k.key("chat", body), k.key("other", body));
        assert_ne!(k.key("chat", body), k.key("chat", &body[1..]));
        assert_ne!(k.key("ab", b"c"), k.key("a", b"bc"));
        assert_ne!(k.key("", b""), k.key("", b"\0"));
        // Both halves carry bits.
        let key = k.key("chat", body);
        assert!(key >> 64 != 0 && key as u64 != 0);
        // Another keyer (another process) uses other random keys.
        assert_ne!(CacheKeyer::new().key("chat", body), k.key("chat", body));
    }
}
