//! Key material that wipes itself and never prints.

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A plaintext data key. Zeroized on drop; `Debug` shows only its length.
///
/// Share it with `Arc<DataKey>`: the bytes are wiped when the last holder lets go,
/// whenever that is, not when a cache happens to evict its entry.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct DataKey(Vec<u8>);

impl DataKey {
    /// Takes ownership of key bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Fresh random key bytes from the operating system.
    pub fn random(len: usize) -> Result<Self, getrandom::Error> {
        let mut bytes = vec![0u8; len];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Key length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the key is empty (never true for a usable key).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({} bytes, redacted)", self.0.len())
    }
}

/// A derived 32-byte secret (content key or commitment key) that wipes itself.
pub type Secret32 = Zeroizing<[u8; 32]>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = DataKey::new(vec![0xAB; 32]);
        let shown = format!("{k:?}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
    }
}
