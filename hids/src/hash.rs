//! The hasher for maps and fingerprints that see text from logs (program names, source
//! addresses) on every event: ahash, whose keys are drawn from the operating system's randomness
//! through std's `RandomState`, so that chosen keys cannot make a map degrade. For the short keys
//! these maps hold it costs a fraction of std's SipHash.

use std::hash::BuildHasher;

/// A randomly keyed ahash builder; each `default()` draws new keys.
#[derive(Clone, Debug)]
pub struct Keyed(ahash::RandomState);

impl Default for Keyed {
    fn default() -> Self {
        let std = std::collections::hash_map::RandomState::new();
        Keyed(ahash::RandomState::with_seeds(
            std.hash_one(0u8),
            std.hash_one(1u8),
            std.hash_one(2u8),
            std.hash_one(3u8),
        ))
    }
}

impl BuildHasher for Keyed {
    type Hasher = ahash::AHasher;

    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// A `HashMap` hashed with [`Keyed`].
pub type Map<K, V> = std::collections::HashMap<K, V, Keyed>;
/// A `HashSet` hashed with [`Keyed`].
pub type Set<T> = std::collections::HashSet<T, Keyed>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_builder_has_its_own_keys() {
        let (a, b) = (Keyed::default(), Keyed::default());
        let k = "203.0.113.7";
        assert_eq!(a.hash_one(k), a.hash_one(k));
        assert_ne!(a.hash_one(k), b.hash_one(k));
        let mut m: Map<Box<str>, u32> = Map::default();
        m.insert("sshd".into(), 1);
        assert_eq!(m.get("sshd"), Some(&1));
    }
}
