//! `--shard I/N`: a deterministic share of a job's objects, so that N workers, each
//! listing (or reading the manifest) the same way, together cover every object exactly
//! once with nothing to coordinate.
//!
//! An object belongs to shard `I` of `N` when
//!
//! ```text
//! u64::from_be_bytes(SHA-256(bucket || 0x00 || key [|| 0x00 || version])[0..8]) % N == I
//! ```
//!
//! with `bucket` and `key` the S3 object's (the key whole, not below the listed prefix:
//! shards agree whatever prefix each worker names), the version only where a manifest or
//! a single-object source names one, and, for local files, an empty bucket and the path
//! below the source directory with `/` between its components (shards agree wherever
//! the tree is mounted). SHA-256 spreads any naming scheme evenly and can be computed by
//! anyone (`scripts`, a spreadsheet of keys) to see which worker takes which object.

use sha2::{Digest, Sha256};

use crate::store::{ObjectId, RelativeName};

/// One share of `count`: shard `index` (counted from 0, as Kubernetes Indexed Jobs and
/// AWS Batch array jobs count).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Shard {
    index: u64,
    count: u64,
    by: ShardBy,
}

/// How objects are divided among shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardBy {
    /// By the hash of each object's name (module docs): every worker lists everything
    /// and keeps its share. Even shares whatever the names; works for manifests and
    /// local trees too.
    #[default]
    Hash,
    /// By ranges of the S3 prefixes one level below the source (the key up to its next
    /// `/`): each worker lists only the prefixes of its range, so a listing of billions
    /// of objects is not repeated by every worker. Objects directly below the source
    /// are divided by hash. Shares are even when the prefixes are many and alike.
    Prefix,
}

impl std::str::FromStr for ShardBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hash" => Ok(Self::Hash),
            "prefix" => Ok(Self::Prefix),
            other => Err(format!("expected hash or prefix, not {other:?}")),
        }
    }
}

/// The most shards a job can be split into.
pub const MAX_SHARDS: u64 = 1 << 20;

impl Shard {
    /// Shard `index` of `count`; `index` below `count`, `count` from 1 to
    /// [`MAX_SHARDS`].
    pub fn new(index: u64, count: u64) -> Result<Self, String> {
        if count == 0 || count > MAX_SHARDS {
            return Err(format!(
                "the shard count must be from 1 to {MAX_SHARDS}, not {count}"
            ));
        }
        if index >= count {
            return Err(format!(
                "shard index {index} is not below the shard count {count} (shards are \
                 counted from 0: 0/{count} to {}/{count})",
                count - 1
            ));
        }
        Ok(Self {
            index,
            count,
            by: ShardBy::Hash,
        })
    }

    /// This shard, divided `by` that way.
    pub fn divided_by(self, by: ShardBy) -> Self {
        Self { by, ..self }
    }

    /// How objects are divided.
    pub fn by(&self) -> ShardBy {
        self.by
    }

    /// The range of `items` (sorted, as a listing's prefixes are) this shard lists
    /// when divided by prefix: contiguous, and together the shards' ranges cover them
    /// all, once.
    pub fn range_of(&self, items: usize) -> std::ops::Range<usize> {
        let at = |i: u64| {
            usize::try_from(u128::from(i) * items as u128 / u128::from(self.count)).unwrap_or(items)
        };
        at(self.index)..at(self.index + 1)
    }

    /// The shard's index, from 0.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// How many shards there are.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether the object `id`, named `relative` below the source, is in this shard.
    pub fn owns(&self, id: &ObjectId, relative: &RelativeName) -> bool {
        self.count == 1 || place(id, relative) % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N`, as `--shard` takes it.
    fn from_str(s: &str) -> Result<Self, String> {
        let (index, count) = s
            .split_once('/')
            .ok_or_else(|| format!("expected INDEX/COUNT such as 0/4, not {s:?}"))?;
        let number = |part: &str, what: &str| {
            part.trim()
                .parse::<u64>()
                .map_err(|_| format!("the shard {what} in {s:?} is not a whole number"))
        };
        Self::new(number(index, "index")?, number(count, "count")?)
    }
}

/// The object's place in the hash space (module docs).
fn place(id: &ObjectId, relative: &RelativeName) -> u64 {
    let mut hash = Sha256::new();
    match id {
        ObjectId::S3 {
            bucket,
            key,
            version,
        } => {
            hash.update(bucket.as_bytes());
            hash.update([0]);
            hash.update(key.as_bytes());
            if let Some(version) = version {
                hash.update([0]);
                hash.update(version.as_bytes());
            }
        }
        ObjectId::Local(_) => {
            hash.update([0]);
            hash_relative(&mut hash, relative);
        }
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The local name's components joined by `/`, as bytes (non-UTF-8 names included).
fn hash_relative(hash: &mut Sha256, relative: &RelativeName) {
    let mut first = true;
    for component in std::path::Path::new(relative.as_os_str()).components() {
        if !std::mem::replace(&mut first, false) {
            hash.update(b"/");
        }
        hash.update(component.as_os_str().as_encoded_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, key: &str, version: Option<&str>) -> ObjectId {
        ObjectId::S3 {
            bucket: bucket.into(),
            key: key.into(),
            version: version.map(str::to_string),
        }
    }

    #[test]
    fn parses_index_over_count_and_refuses_the_rest() {
        assert_eq!("3/4".parse::<Shard>().unwrap(), Shard::new(3, 4).unwrap());
        assert_eq!("0/1".parse::<Shard>().unwrap().to_string(), "0/1");
        for bad in [
            "4/4",
            "1/0",
            "-1/4",
            "1",
            "a/4",
            "1/b",
            "",
            "/",
            "1/2/3",
            "0/2000000",
        ] {
            assert!(bad.parse::<Shard>().is_err(), "{bad:?}");
        }
        assert!(
            "4/4"
                .parse::<Shard>()
                .unwrap_err()
                .contains("counted from 0: 0/4 to 3/4")
        );
    }

    /// The documented formula, computed independently (Python: `int.from_bytes(
    /// hashlib.sha256(b"bucket\0key").digest()[:8], "big")`).
    #[test]
    fn the_place_is_the_documented_hash() {
        let name = RelativeName::from("ignored/for/s3");
        assert_eq!(
            place(&s3("bucket", "key", None), &name),
            0xc716_800e_a46c_49ba
        );
        assert_eq!(
            place(&s3("bucket", "key", Some("v1")), &name),
            0x01f5_1661_55af_ceb6
        );
        let local = ObjectId::Local("/anywhere/dir/file.txt".into());
        assert_eq!(
            place(&local, &RelativeName::from("dir/file.txt")),
            0x0c3d_efe7_395e_d92f
        );
    }

    #[test]
    fn prefix_ranges_cover_every_item_once() {
        for (items, count) in [(0, 3), (1, 4), (5, 4), (10, 3), (1000, 7), (3, 3)] {
            let mut next = 0;
            for i in 0..count {
                let range = Shard::new(i, count).unwrap().range_of(items);
                assert_eq!(range.start, next, "{items} {count}");
                assert!(range.end - range.start <= items / count as usize + 1);
                next = range.end;
            }
            assert_eq!(next, items);
        }
    }

    /// Every object is in exactly one shard, and the shards are about even.
    #[test]
    fn shards_partition_evenly() {
        let count = 7;
        let shards: Vec<Shard> = (0..count).map(|i| Shard::new(i, count).unwrap()).collect();
        let mut sizes = vec![0u32; count as usize];
        for n in 0..14_000 {
            let id = s3("logs", &format!("2026/12/{n:06}.json"), None);
            let owners: Vec<usize> = shards
                .iter()
                .enumerate()
                .filter(|(_, s)| s.owns(&id, &RelativeName::from("")))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(owners.len(), 1, "{n}");
            sizes[owners[0]] += 1;
        }
        for size in sizes {
            assert!((1_800..2_200).contains(&size), "{size}");
        }
    }
}
