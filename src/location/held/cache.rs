//! The HELD cache: the last location HELD served per device, keyed by IP and MAC address, which
//! the routing core reads as the "HELD-cached" source of a call's location
//! ([`crate::location::LocationSource::HeldCached`], [`crate::location::LastKnownLocation`]).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::location::{DeviceAttachment, Erl, Mac};

/// The last location HELD served per device, keyed by IP address and by MAC address, so the
/// routing core can use "the location that device last obtained over HELD"
/// ([`crate::location::LocationSource::HeldCached`]) when a call arrives without one.
///
/// Bounded: past its capacity the entry written longest ago is dropped. Cloning shares the cache.
/// Entries are recorded only under identifiers that named the device (the source address of a
/// request without device identity, or the `<ip>`/`<mac>` a request carried), never under a
/// third party's address.
#[derive(Clone)]
pub struct HeldCache {
    inner: Arc<Mutex<CacheInner>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CacheKey {
    Ip(IpAddr),
    Mac(Mac),
}

struct CacheEntry {
    erl: Arc<Erl>,
    at: Instant,
    /// Write order: ties in `at` are broken by it, and the eviction queue is checked against it.
    seq: u64,
}

struct CacheInner {
    map: HashMap<CacheKey, CacheEntry>,
    /// Keys in write order, with the write's `seq`; an item whose `seq` no longer matches the
    /// map is stale (the key was written again) and skipped.
    order: VecDeque<(CacheKey, u64)>,
    next_seq: u64,
    capacity: usize,
}

impl HeldCache {
    /// Entries kept by [`HeldCache::default`]: one IP and one MAC per device for ~32,000 devices,
    /// a few MB.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    /// A cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> HeldCache {
        let capacity = capacity.max(1);
        HeldCache {
            inner: Arc::new(Mutex::new(CacheInner {
                map: HashMap::with_capacity(capacity.min(4096)),
                order: VecDeque::new(),
                next_seq: 0,
                capacity,
            })),
        }
    }

    /// Remembers `erl` as served at `at` to the device with `device`'s IP and MAC (other fields
    /// are not keys: an access point or switch port is shared by many devices).
    pub fn record(&self, device: &DeviceAttachment, erl: Arc<Erl>, at: Instant) {
        let mut inner = self.lock();
        for key in keys(device) {
            inner.insert(key, erl.clone(), at);
        }
    }

    /// The location last served to the device with `device`'s MAC or IP, and when; the most
    /// recent of the two when both are known (the device may have moved and asked by IP only).
    pub fn last_for(&self, device: &DeviceAttachment) -> Option<(Arc<Erl>, Instant)> {
        let inner = self.lock();
        keys(device).filter_map(|k| inner.map.get(&k)).max_by_key(|e| e.seq).map(|e| (e.erl.clone(), e.at))
    }

    /// Number of entries (IP and MAC keys counted separately).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, CacheInner> {
        // Nothing under this lock can leave the map inconsistent, so a panic elsewhere while it
        // was held is no reason to stop serving locations.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for HeldCache {
    fn default() -> Self {
        HeldCache::new(HeldCache::DEFAULT_CAPACITY)
    }
}

impl fmt::Debug for HeldCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("HeldCache").field("len", &inner.map.len()).field("capacity", &inner.capacity).finish()
    }
}

fn keys(device: &DeviceAttachment) -> impl Iterator<Item = CacheKey> {
    let mac = device.mac.map(CacheKey::Mac);
    let ip = device.ip.map(|ip| CacheKey::Ip(ip.to_canonical()));
    mac.into_iter().chain(ip)
}

impl CacheInner {
    fn insert(&mut self, key: CacheKey, erl: Arc<Erl>, at: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.map.insert(key, CacheEntry { erl, at, seq });
        self.order.push_back((key, seq));
        while self.map.len() > self.capacity {
            let Some((old, old_seq)) = self.order.pop_front() else { break };
            if self.map.get(&old).is_some_and(|e| e.seq == old_seq) {
                self.map.remove(&old);
            }
        }
        // Rewrites of the same keys leave stale queue items behind; drop them once they
        // outnumber the live ones, so the queue stays O(capacity).
        if self.order.len() > 2 * self.capacity + 16 {
            let map = &self.map;
            self.order.retain(|(k, s)| map.get(k).is_some_and(|e| e.seq == *s));
        }
    }
}

impl crate::location::LastKnownLocation for HeldCache {
    fn last_known(&self, device: &DeviceAttachment) -> Option<Arc<Erl>> {
        self.last_for(device).map(|(erl, _)| erl)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::erl;
    use super::*;

    #[test]
    fn cache_keeps_the_newest_per_device_and_evicts_the_oldest() {
        let cache = HeldCache::new(3);
        let t0 = Instant::now();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let mac = Some([1, 2, 3, 4, 5, 6]);
        let dev = DeviceAttachment { ip: ip("10.0.0.1"), mac, ..Default::default() };
        cache.record(&dev, erl("1"), t0);
        assert_eq!(cache.len(), 2);
        // The device moved and asked by address only: the newer IP entry wins over the MAC one.
        let t1 = t0 + std::time::Duration::from_secs(1);
        cache.record(&DeviceAttachment { ip: ip("10.0.0.1"), ..Default::default() }, erl("2"), t1);
        let (e, at) = cache.last_for(&dev).unwrap();
        assert_eq!((e.civic.room.as_deref(), at), (Some("2"), t1));
        let (e, _) = cache.last_for(&DeviceAttachment { mac, ..Default::default() }).unwrap();
        assert_eq!(e.civic.room.as_deref(), Some("1"));
        // IPv4-mapped IPv6 is the same key.
        assert!(cache.last_for(&DeviceAttachment { ip: ip("::ffff:10.0.0.1"), ..Default::default() }).is_some());
        // Only IP and MAC are keys.
        assert!(cache.last_for(&DeviceAttachment { bssid: mac, ..Default::default() }).is_none());

        // Capacity 3: the MAC entry (written first) goes, then 10.0.0.1 (rewritten second).
        cache.record(&DeviceAttachment { ip: ip("10.0.0.2"), ..Default::default() }, erl("3"), t1);
        cache.record(&DeviceAttachment { ip: ip("10.0.0.3"), ..Default::default() }, erl("4"), t1);
        assert_eq!(cache.len(), 3);
        assert!(cache.last_for(&DeviceAttachment { mac, ..Default::default() }).is_none());
        cache.record(&DeviceAttachment { ip: ip("10.0.0.4"), ..Default::default() }, erl("5"), t1);
        assert!(cache.last_for(&DeviceAttachment { ip: ip("10.0.0.1"), ..Default::default() }).is_none());
        assert_eq!(cache.len(), 3);

        // Rewriting one key over and over keeps the queue bounded.
        for _ in 0..1000 {
            cache.record(&DeviceAttachment { ip: ip("10.0.0.4"), ..Default::default() }, erl("6"), t1);
        }
        let inner = cache.lock();
        assert!(inner.order.len() <= 2 * inner.capacity + 16 + 1, "{}", inner.order.len());
        assert_eq!(inner.map.len(), 3);
    }
}
