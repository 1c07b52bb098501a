//! A map split into independently locked shards, so that work on one key (a busy
//! channel) does not serialise work on the others.

use std::hash::{BuildHasher, Hash};

use parking_lot::Mutex;

/// `N` mutex-protected values chosen by key hash.
pub struct Sharded<T> {
    shards: Box<[Mutex<T>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl<T: Default> Sharded<T> {
    /// `count` shards (rounded up to a power of two), each starting as `T::default()`.
    pub fn new(count: usize) -> Self {
        let count = count.max(1).next_power_of_two();
        Sharded {
            shards: (0..count).map(|_| Mutex::new(T::default())).collect(),
            hasher: Default::default(),
        }
    }
}

impl<T> Sharded<T> {
    /// The shard that holds `key`.
    pub fn shard<K: Hash + ?Sized>(&self, key: &K) -> &Mutex<T> {
        let index = self.hasher.hash_one(key) as usize & (self.shards.len() - 1);
        &self.shards[index]
    }

    /// Every shard, for whole-map walks (stats, listings).
    pub fn iter(&self) -> impl Iterator<Item = &Mutex<T>> {
        self.shards.iter()
    }
}
