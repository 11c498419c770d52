//! Append-only part files and shards: how embeddings and tags are stored so that many
//! writers — shards of one job on several machines, a retried shard, a second run — add
//! to them without a lock and without losing or merging each other's work.
//!
//! A part is an immutable Parquet file named `part-<seq>-<key>.parquet`:
//! - `seq` (six digits) orders parts by when they were written: one more than the highest
//!   `seq` the writer saw. Two writers that race take the same `seq`; their `key`s differ,
//!   so both parts land, in a fixed order.
//! - `key` (16 hex digits) is a hash of the part's bytes ([`content_key`]). The same bytes
//!   written twice under the same `seq` are one file: the part is created only if absent
//!   ([`create_part`], [`Storage::create`]), and the loser of that race keeps nothing. A
//!   name therefore always holds the same bytes, which is what lets a bucket workspace's
//!   local cache keep parts without asking the bucket again.
//!
//! Readers take every part in (`seq`, `key`) order, and where two parts hold the same
//! (image_id, sha256) — two writers embedded the same image at once — the first part's
//! row wins, so the result does not depend on which writer finished first. Older stores
//! named parts `part-<seq>.parquet`; those read as parts with an empty key.
//!
//! Parts are written and listed through [`Storage`], so the same code adds parts to a
//! local directory (a hard link that fails if the name is taken) and to a bucket
//! (`PutMode::Create`).
//!
//! [`Shard`] splits a dataset's images between the processes of one job:
//! image `i` belongs to shard `u64(sha256(image_id)[..8]) mod n`, a rule any launcher or
//! script can compute (see docs/scale.md).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::atomic::{TMP_PREFIX, sync_dir, tmp_sibling};
use crate::error::{DatasetError, Result};
use crate::storage::Storage;

/// One shard of `count` (`index` in `0..count`): the images whose id hashes to `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which shard, from 0.
    pub index: u64,
    /// How many shards the job has.
    pub count: u64,
}

impl Shard {
    /// The whole dataset (shard 0 of 1).
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether `image_id` belongs to this shard.
    pub fn contains(&self, image_id: &str) -> bool {
        self.count <= 1 || shard_of(image_id, self.count) == self.index
    }

    /// Whether this is the whole dataset.
    pub fn is_all(&self) -> bool {
        self.count <= 1
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::ALL
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `i/n` with `0 <= i < n`, e.g. `--shard 2/8` (what a Kubernetes indexed job's
    /// `$JOB_COMPLETION_INDEX` or a Slurm array's `$SLURM_ARRAY_TASK_ID` fills in).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("--shard {s:?}: expected i/n with 0 <= i < n, e.g. 0/4");
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// The shard of `count` that `image_id` belongs to: the first eight bytes of the SHA-256
/// of its UTF-8 bytes, read big-endian, modulo `count`.
pub fn shard_of(image_id: &str, count: u64) -> u64 {
    let digest = Sha256::digest(image_id.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("eight bytes")) % count.max(1)
}

/// A part file's name, parsed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartName {
    /// Write order.
    pub seq: u64,
    /// Hash of the part's (image_id, sha256) rows; empty for parts of older stores.
    pub key: String,
}

impl PartName {
    /// Parses `part-<seq>-<key>.parquet` (or the older `part-<seq>.parquet`).
    pub fn parse(file_name: &str) -> Option<PartName> {
        let stem = file_name.strip_prefix("part-")?.strip_suffix(".parquet")?;
        let (seq, key) = stem.split_once('-').unwrap_or((stem, ""));
        let valid_key = key.chars().all(|c| c.is_ascii_hexdigit());
        if !valid_key || seq.is_empty() || !seq.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        Some(PartName { seq: seq.parse().ok()?, key: key.to_string() })
    }

    /// The file name.
    pub fn file_name(&self) -> String {
        if self.key.is_empty() {
            format!("part-{:06}.parquet", self.seq)
        } else {
            format!("part-{:06}-{}.parquet", self.seq, self.key)
        }
    }
}

/// The key of a part whose files hold `contents` (a tag part and its boxes part, or one
/// embeddings part): the first 16 hex digits of the SHA-256 over their lengths and bytes.
pub fn content_key(contents: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for content in contents {
        hash.update((content.len() as u64).to_be_bytes());
        hash.update(content);
    }
    let mut key = hex::encode(hash.finalize());
    key.truncate(16);
    key
}

/// One stored part.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredPart {
    /// Its parsed name (what orders parts).
    pub name: PartName,
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// The parts in `dir`, in read order (`seq`, then `key`). A missing directory has none;
/// temporary files of writers (killed or still writing) are not parts.
pub fn list_parts(storage: &Storage, dir: &Path) -> Result<Vec<StoredPart>> {
    let mut parts: Vec<StoredPart> = storage
        .list_sizes(dir)?
        .into_iter()
        .filter_map(|(n, size)| Some(StoredPart { name: PartName::parse(&n)?, path: dir.join(n), size }))
        .collect();
    parts.sort();
    Ok(parts)
}

/// A directory listed with everything below it, in one listing
/// ([`Storage::list_files_sized`]: one request per thousand files on a bucket). Readers of
/// trees of parts — a dataset's taggers with their generations and boxes, its embedding
/// models — list the tree once and pick from it, instead of listing each level after the
/// one above, a round trip each.
#[derive(Debug, Clone)]
pub struct ListedTree {
    dir: PathBuf,
    /// `/`-separated paths relative to `dir`, with sizes, sorted.
    files: Vec<(String, u64)>,
}

impl ListedTree {
    /// Lists `dir` and everything below it; a missing directory is an empty tree.
    pub fn list(storage: &Storage, dir: &Path) -> Result<ListedTree> {
        let mut files = storage.list_files_sized(dir)?;
        files.sort();
        Ok(ListedTree { dir: dir.to_path_buf(), files })
    }

    /// The directory listed.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The names directly in the directory that hold files (a directory with nothing in
    /// it does not show), sorted.
    pub fn children(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.files.iter().map(|(rel, _)| rel.split('/').next().unwrap_or(rel)).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Whether the file `path` (`/`-separated, relative to the directory) is in the tree.
    pub fn has_file(&self, path: &str) -> bool {
        self.files.binary_search_by(|(rel, _)| rel.as_str().cmp(path)).is_ok()
    }

    /// The tree below the sub-directory `name`.
    pub fn subtree(&self, name: &str) -> ListedTree {
        let prefix = format!("{name}/");
        let files =
            self.files.iter().filter_map(|(rel, size)| Some((rel.strip_prefix(&prefix)?.to_string(), *size))).collect();
        ListedTree { dir: self.dir.join(name), files }
    }

    /// The parts directly in the directory, in read order: what [`list_parts`] lists.
    pub fn parts(&self) -> Vec<StoredPart> {
        let mut parts: Vec<StoredPart> = self
            .files
            .iter()
            .filter(|(rel, _)| !rel.contains('/'))
            .filter_map(|(rel, size)| {
                Some(StoredPart { name: PartName::parse(rel)?, path: self.dir.join(rel), size: *size })
            })
            .collect();
        parts.sort();
        parts
    }
}

/// Publishes `bytes` as a part in `dir`: `part-<next seq>-<content key>.parquet`, created
/// only if no file has that name. Returns the part's path, or None when an identical part
/// (same `seq`, same bytes: a racing writer's) was there first.
pub fn create_part(storage: &Storage, dir: &Path, bytes: Bytes) -> Result<Option<PathBuf>> {
    let path = dir.join(next_part_name(storage, dir, &content_key(&[&bytes]))?.file_name());
    Ok(storage.create(&path, bytes)?.then_some(path))
}

/// The name the next part with `key` takes in `dir`: one `seq` above the highest there.
pub fn next_part_name(storage: &Storage, dir: &Path, key: &str) -> Result<PartName> {
    let seq = list_parts(storage, dir)?.last().map_or(0, |p| p.name.seq + 1);
    Ok(PartName { seq, key: key.to_string() })
}

/// Creates `path` (and its directory) from what `write` puts in a temporary file, only
/// if nothing is at `path` yet; false when something was.
pub fn create_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<bool> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(DatasetError::io("creating", dir))?;
    let tmp = tmp_sibling(path);
    let result = write(&tmp).and_then(|()| {
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(DatasetError::io("syncing", &tmp))?;
        create_from(&tmp, path)
    });
    let _ = fs::remove_file(&tmp);
    let created = result?;
    sync_dir(dir).map_err(DatasetError::io("syncing", dir))?;
    Ok(created)
}

/// Writes `bytes` to `path` only if nothing is there yet; false when something was
/// (the commit of a manifest that a racing writer may also be making).
pub fn create_file(path: &Path, bytes: &[u8]) -> Result<bool> {
    create_with(path, |tmp| fs::write(tmp, bytes).map_err(DatasetError::io("writing", tmp)))
}

/// Makes the complete file `tmp` visible as `path` unless `path` exists (then false).
fn create_from(tmp: &Path, path: &Path) -> Result<bool> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(DatasetError::io("publishing", path)(e)),
    }
}

/// Whether a directory entry is a writer's temporary file.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with(TMP_PREFIX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A tree listed once answers what listing it level by level answers, on a disk and
    /// in a bucket: the names in each directory, its files, its parts in read order
    /// (writers' temporary files and other files are not parts).
    #[test]
    fn a_listed_tree_answers_what_listing_each_level_answers() {
        let dir = tempfile::tempdir().unwrap();
        let memory = std::sync::Arc::new(object_store::memory::InMemory::new());
        let bucket = Storage::with_object_store(memory, "memory://ws/tree");
        for storage in [Storage::local(dir.path()), bucket] {
            let root = storage.root().join("models");
            let files = [
                "a/model.json",
                "a/part-000002-00000000000000ff.parquet",
                "a/part-000001.parquet",
                "a/index/graph.bin",
                "a.parquet",
                "ab/part-000001-0a.parquet",
                &format!("ab/{TMP_PREFIX}part-000002-0b.parquet"),
                "ab/g000001/part-000003-0c.parquet",
                "b/notes.txt",
            ];
            for (i, file) in files.iter().enumerate() {
                storage.write(&root.join(file), Bytes::from(vec![0u8; i + 1])).unwrap();
            }
            let tree = ListedTree::list(&storage, &root).unwrap();
            let mut listed = storage.list(&root).unwrap();
            listed.sort();
            assert_eq!(tree.children(), listed, "{storage:?}");
            assert!(tree.has_file("a.parquet") && !tree.has_file("a") && tree.has_file("a/model.json"));
            for child in ["a", "ab", "ab/g000001", "b", "missing"] {
                let sub = child.split('/').fold(tree.clone(), |tree, name| tree.subtree(name));
                assert_eq!(sub.dir(), root.join(child));
                assert_eq!(sub.parts(), list_parts(&storage, &root.join(child)).unwrap(), "{child} on {storage:?}");
            }
            assert!(tree.subtree("a").has_file("model.json") && !tree.subtree("ab").has_file("model.json"));
            assert_eq!(tree.subtree("a").parts().iter().map(|p| p.size).collect::<Vec<_>>(), [3, 2]);
            assert!(ListedTree::list(&storage, &root.join("missing")).unwrap().children().is_empty());
        }
    }

    #[test]
    fn shard_specs_parse_and_refuse_nonsense() {
        assert_eq!("2/8".parse::<Shard>().unwrap(), Shard { index: 2, count: 8 });
        assert_eq!(" 0 / 1 ".parse::<Shard>().unwrap(), Shard::ALL);
        for bad in ["8/8", "1/0", "-1/3", "a/3", "3", "", "1/2/3"] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.contains("expected i/n"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_shard_rule_is_the_documented_one() {
        // From docs/scale.md's Python:
        // int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "big") % n
        let expected = [("dog.jpg", 7, 3), ("dog.jpg", 3, 2), ("coins.png", 3, 2), ("microaneurysms.png", 3, 1)];
        for (id, n, shard) in expected {
            assert_eq!(shard_of(id, n), shard, "{id} of {n}");
        }
    }

    proptest! {
        #[test]
        fn every_image_is_in_exactly_one_shard(ids in proptest::collection::vec("[a-z0-9/._-]{1,24}", 1..60), n in 1u64..9) {
            for id in &ids {
                let owners = (0..n).filter(|&i| Shard { index: i, count: n }.contains(id)).count();
                prop_assert_eq!(owners, 1);
            }
        }

        #[test]
        fn part_names_round_trip(seq in 0u64..10_000_000, key in "[0-9a-f]{16}|") {
            let name = PartName { seq, key };
            prop_assert_eq!(PartName::parse(&name.file_name()), Some(name));
        }
    }

    #[test]
    fn parts_list_in_write_order_and_identical_parts_are_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let memory = std::sync::Arc::new(object_store::memory::InMemory::new());
        for storage in [Storage::local(dir.path()), Storage::with_object_store(memory, "memory://ws/p")] {
            let d = storage.root().join("parts");
            let first = create_part(&storage, &d, Bytes::from_static(b"a")).unwrap().unwrap();
            let second = create_part(&storage, &d, Bytes::from_static(b"b")).unwrap().unwrap();
            let (ka, kb) = (content_key(&[b"a"]), content_key(&[b"b"]));
            assert!(first.ends_with(format!("part-000000-{ka}.parquet")), "{first:?}");
            assert!(second.ends_with(format!("part-000001-{kb}.parquet")), "{second:?}");
            // Older names and temporary files.
            storage.write(&d.join("part-000007.parquet"), Bytes::from_static(b"old")).unwrap();
            let tmp = tmp_sibling(&d.join("part-000008-00000000000000cc.parquet"));
            storage.write(&tmp, Bytes::from_static(b"half")).unwrap();
            let parts = list_parts(&storage, &d).unwrap();
            let names: Vec<String> = parts.iter().map(|p| p.name.file_name()).collect();
            let expected = [
                format!("part-000000-{ka}.parquet"),
                format!("part-000001-{kb}.parquet"),
                "part-000007.parquet".into(),
            ];
            assert_eq!(names, expected);
            assert_eq!(parts.iter().map(|p| p.size).collect::<Vec<_>>(), [1, 1, 3]);
            // The same bytes under a taken name: the first stays, the second reports it lost.
            let name = PartName { seq: 0, key: ka.clone() }.file_name();
            assert!(!storage.create(&d.join(name), Bytes::from_static(b"a")).unwrap());
            assert_eq!(list_parts(&storage, &d).unwrap().len(), 3);
        }
    }

    #[test]
    fn content_keys_depend_on_every_byte_and_boundary() {
        let a = content_key(&[b"ab", b"c"]);
        assert_eq!(a.len(), 16);
        assert_ne!(a, content_key(&[b"a", b"bc"]));
        assert_ne!(a, content_key(&[b"abc"]));
        assert_eq!(a, content_key(&[b"ab", b"c"]));
    }

    #[test]
    fn a_taken_manifest_name_keeps_the_first_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d/manifest.json");
        assert!(create_file(&path, b"one").unwrap());
        assert!(!create_file(&path, b"two").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"one");
        let leftovers = fs::read_dir(dir.path().join("d")).unwrap().flatten();
        assert!(leftovers.map(|e| e.file_name()).all(|n| !is_temporary(n.to_str().unwrap())), "no temporary file left");
    }
}
