//! Stored bodies kept in memory (immutable, so an entry never goes stale).

use crate::ingest::Encoding;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// Stored bodies kept in memory, least recently used evicted first, bounded by bytes.
///
/// Written here rather than taken from a cache crate: our items are few and large (a
/// baseline is tens of MB), and general caches split their capacity into shards and
/// admit new items into a small probation section, so an item larger than a shard or
/// than that section is never cached at all (measured with quick_cache: a 26 MB body
/// was re-read from disk on every GET, 715 MB RSS under load).
pub(super) struct BodyCache {
    capacity: u64,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    entries: HashMap<(String, Encoding), (Bytes, u64)>,
    used: u64,
    clock: u64,
}

impl BodyCache {
    pub(super) fn new(capacity: u64) -> Self {
        BodyCache {
            capacity,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    pub(super) fn get(&self, key: &(String, Encoding)) -> Option<Bytes> {
        let mut inner = self.inner.lock().expect("body cache");
        inner.clock += 1;
        let clock = inner.clock;
        let (body, used) = inner.entries.get_mut(key)?;
        *used = clock;
        Some(body.clone())
    }

    pub(super) fn insert(&self, key: (String, Encoding), body: Bytes) {
        let size = body.len() as u64;
        if size > self.capacity {
            return;
        }
        let mut inner = self.inner.lock().expect("body cache");
        inner.clock += 1;
        let clock = inner.clock;
        if let Some((old, _)) = inner.entries.insert(key, (body, clock)) {
            inner.used -= old.len() as u64;
        }
        inner.used += size;
        while inner.used > self.capacity {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some((evicted, _)) = inner.entries.remove(&oldest) {
                inner.used -= evicted.len() as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_cache_keeps_large_items_and_evicts_the_least_recently_used() {
        let cache = BodyCache::new(100);
        let key = |name: &str| (name.to_owned(), Encoding::Identity);
        cache.insert(key("a"), Bytes::from(vec![0; 60]));
        assert!(
            cache.get(&key("a")).is_some(),
            "an item of 60 % of the capacity is kept"
        );
        cache.insert(key("b"), Bytes::from(vec![0; 30]));
        assert!(cache.get(&key("a")).is_some());
        cache.insert(key("c"), Bytes::from(vec![0; 30]));
        assert!(cache.get(&key("b")).is_none(), "b was least recently used");
        assert!(cache.get(&key("a")).is_some() && cache.get(&key("c")).is_some());
        cache.insert(key("huge"), Bytes::from(vec![0; 101]));
        assert!(cache.get(&key("huge")).is_none());
        assert_eq!(cache.inner.lock().unwrap().used, 90);
    }
}
