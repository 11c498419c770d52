//! A local disk cache of a bucket workspace's immutable files.
//!
//! Every data file a commit writes is named by its content (`images-<sha16>.parquet`,
//! `v3-<sha16>.parquet`, see [`crate::version::keyed_name`]): the same key always holds the
//! same bytes, so a copy on local disk never goes stale and needs no revalidation. Without
//! it, every query over a bucket workspace downloads the whole images table again (each
//! CLI command is a new process; DataFusion caches only Parquet footers within one).
//!
//! [`ObjectCache`] wraps the bucket's store: a read of a content-keyed file is served from
//! `<cache dir>/<bucket>/<key>`, fetched whole on first use; everything else (manifests,
//! listings, writes) goes to the bucket. The cache is bounded: after a file is added, the
//! least recently used files are removed until the total is under the limit.
//!
//! Settings: `SLICETEST_CACHE_DIR` (default `$XDG_CACHE_HOME/slicetest/objects` or
//! `~/.cache/slicetest/objects`) and `SLICETEST_CACHE_MAX_GB` (default 10; `0` turns the
//! cache off).

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// The default bound of the cache, in GiB.
const DEFAULT_MAX_GB: f64 = 10.0;

/// Where the cache lives and how big it may grow, from the environment; `None` when the
/// cache is off (`SLICETEST_CACHE_MAX_GB=0`) or no directory can be found.
pub fn settings_from_env() -> Option<(PathBuf, u64)> {
    let max_gb = match std::env::var("SLICETEST_CACHE_MAX_GB") {
        Ok(text) => text.trim().parse::<f64>().unwrap_or_else(|_| {
            tracing::warn!("ignoring SLICETEST_CACHE_MAX_GB={text:?}: not a number");
            DEFAULT_MAX_GB
        }),
        Err(_) => DEFAULT_MAX_GB,
    };
    if max_gb <= 0.0 {
        return None;
    }
    let dir = std::env::var_os("SLICETEST_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("slicetest/objects")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/slicetest/objects")))?;
    Some((dir, (max_gb * (1u64 << 30) as f64) as u64))
}

/// Whether the object at `location` is named by its content (`<stem>-<16 hex>.<ext>`), or
/// is a dataset's materialised `images` (`wide/<32 hex>.parquet`, [`crate::tags::wide_images_file`]):
/// its key hashes the version and tag parts its rows come from, it is written once by
/// create-if-absent and never rewritten, so a key holds the same rows for good.
pub fn is_content_keyed(location: &Path) -> bool {
    let Some(name) = location.filename() else { return false };
    let Some((stem, _ext)) = name.rsplit_once('.') else { return false };
    let is_hex = |key: &str, len: usize| key.len() == len && key.bytes().all(|b| b.is_ascii_hexdigit());
    let in_wide_dir = location.parts().rev().nth(1).is_some_and(|dir| dir.as_ref() == "wide");
    stem.rsplit_once('-').is_some_and(|(_, key)| is_hex(key, 16)) || (in_wide_dir && is_hex(stem, 32))
}

/// An object store whose content-keyed objects are kept on local disk once read.
pub struct ObjectCache {
    inner: Arc<dyn ObjectStore>,
    dir: PathBuf,
    local: LocalFileSystem,
    max_bytes: u64,
}

impl ObjectCache {
    /// Wraps `inner`, keeping copies under `dir` (created if absent) up to `max_bytes`.
    pub fn new(inner: Arc<dyn ObjectStore>, dir: PathBuf, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let local = LocalFileSystem::new_with_prefix(&dir).map_err(std::io::Error::other)?;
        Ok(Self { inner, dir, local, max_bytes })
    }

    /// Removes the local copy of `location` (one that turned out damaged: the next read
    /// fetches it again) and returns where it was; None when there was none.
    pub fn evict(&self, location: &Path) -> Option<PathBuf> {
        let path = self.dir.join(location.as_ref());
        std::fs::remove_file(&path).is_ok().then_some(path)
    }

    /// Downloads `location` whole into the cache (an atomic write: a reader never sees
    /// part of it), then trims the cache to its bound. False when the file is larger than
    /// the whole cache (it is not kept).
    async fn fill(&self, location: &Path) -> Result<bool> {
        let bytes = self.inner.get(location).await?.bytes().await?;
        if bytes.len() as u64 > self.max_bytes {
            return Ok(false);
        }
        self.local.put(location, bytes.into()).await?;
        let (dir, max_bytes) = (self.dir.clone(), self.max_bytes);
        // Walking the cache is blocking file system work.
        tokio::task::spawn_blocking(move || evict(&dir, max_bytes)).await.ok();
        Ok(true)
    }
}

/// Removes the least recently used files under `dir` until they total at most `max_bytes`.
fn evict(dir: &FsPath, max_bytes: u64) {
    let mut files: Vec<(SystemTime, u64, PathBuf)> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_file())
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), entry.into_path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= max_bytes {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

/// Marks a cached file as just used: eviction removes the files with the oldest
/// modification time first (access times are unreliable under `noatime` mounts).
fn touch(dir: &FsPath, location: &Path) {
    let path = dir.join(location.as_ref());
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let now = SystemTime::now();
        let _ = file.set_times(std::fs::FileTimes::new().set_accessed(now).set_modified(now));
    }
}

impl fmt::Display for ObjectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectCache({}, {})", self.inner, self.dir.display())
    }
}

impl fmt::Debug for ObjectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[async_trait]
impl ObjectStore for ObjectCache {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let conditional = options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some()
            || options.version.is_some();
        if conditional || !is_content_keyed(location) {
            return self.inner.get_opts(location, options).await;
        }
        match self.local.get_opts(location, options.clone()).await {
            Ok(hit) => {
                touch(&self.dir, location);
                return Ok(hit);
            }
            // Only a head on a file not cached yet goes to the bucket; a read fills the cache.
            Err(object_store::Error::NotFound { .. }) if options.head => {
                return self.inner.get_opts(location, options).await;
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!("object cache {}: {e}; reading from the store", self.dir.display());
                return self.inner.get_opts(location, options).await;
            }
        }
        if self.fill(location).await?
            && let Ok(filled) = self.local.get_opts(location, options.clone()).await
        {
            return Ok(filled);
        }
        // Larger than the cache, or evicted at once by another process filling it.
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        // A copy left behind is harmless: the key can only ever hold the same bytes.
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn cache(max_bytes: u64) -> (Arc<InMemory>, ObjectCache, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "slicetest-object-cache-{}-{}",
            std::process::id(),
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos()
        ));
        let inner = Arc::new(InMemory::new());
        let cache = ObjectCache::new(inner.clone(), dir.clone(), max_bytes).unwrap();
        (inner, cache, dir)
    }

    #[test]
    fn content_keyed_names_are_recognised() {
        assert!(is_content_keyed(&Path::from("ws/datasets/d/versions/1/images-0123456789abcdef.parquet")));
        assert!(is_content_keyed(&Path::from("slices/s/v2-fedcba9876543210.parquet")));
        assert!(!is_content_keyed(&Path::from("datasets/d/versions/1/version.json")));
        assert!(!is_content_keyed(&Path::from("runs/r/predictions.parquet")));
        assert!(!is_content_keyed(&Path::from("images-0123456789abcde.parquet")), "15 hex digits");
        assert!(!is_content_keyed(&Path::from("images-0123456789abcdeg.parquet")), "not hex");
        let wide = "ws/datasets/d/wide/efbe75ffe63a08e0f65dd94c8c42bca5.parquet";
        assert!(is_content_keyed(&Path::from(wide)), "a materialised images file");
        assert!(
            !is_content_keyed(&Path::from("ws/datasets/d/efbe75ffe63a08e0f65dd94c8c42bca5.parquet")),
            "not in wide/"
        );
        assert!(!is_content_keyed(&Path::from("ws/datasets/d/wide/efbe75ffe63a08e0f65dd94c8c42bca.parquet")), "31 hex");
    }

    #[tokio::test]
    async fn a_keyed_object_is_read_from_disk_after_the_first_read() {
        let (inner, cache, dir) = cache(1 << 20);
        let keyed = Path::from("ws/v1-0123456789abcdef.parquet");
        let plain = Path::from("ws/version.json");
        inner.put(&keyed, PutPayload::from_static(b"0123456789")).await.unwrap();
        inner.put(&plain, PutPayload::from_static(b"{}")).await.unwrap();
        // A head does not download; a ranged read fills the cache and answers the range.
        assert_eq!(cache.head(&keyed).await.unwrap().size, 10);
        assert!(!dir.join("ws/v1-0123456789abcdef.parquet").exists());
        assert_eq!(cache.get_range(&keyed, 2..5).await.unwrap().as_ref(), b"234");
        assert_eq!(std::fs::read(dir.join("ws/v1-0123456789abcdef.parquet")).unwrap(), b"0123456789");
        assert_eq!(cache.get(&plain).await.unwrap().bytes().await.unwrap().as_ref(), b"{}");
        // Gone from the store: the keyed object is still read (from disk), the plain one is not.
        inner.delete(&keyed).await.unwrap();
        inner.delete(&plain).await.unwrap();
        assert_eq!(cache.get(&keyed).await.unwrap().bytes().await.unwrap().as_ref(), b"0123456789");
        assert_eq!(cache.head(&keyed).await.unwrap().size, 10);
        assert!(matches!(cache.get(&plain).await, Err(object_store::Error::NotFound { .. })));
        let missing = Path::from("ws/v2-0123456789abcdef.parquet");
        assert!(matches!(cache.get(&missing).await, Err(object_store::Error::NotFound { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn the_cache_keeps_the_most_recently_used_files_within_its_bound() {
        let (inner, cache, dir) = cache(25);
        let names = ["a-0000000000000001.bin", "b-0000000000000002.bin", "c-0000000000000003.bin"];
        for name in names {
            inner.put(&Path::from(name), PutPayload::from(vec![7u8; 10])).await.unwrap();
        }
        cache.get(&Path::from(names[0])).await.unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.get(&Path::from(names[1])).await.unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.get(&Path::from(names[0])).await.unwrap(); // a is used again: b is now the oldest
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.get(&Path::from(names[2])).await.unwrap();
        let kept: Vec<bool> = names.iter().map(|n| dir.join(n).exists()).collect();
        assert_eq!(kept, [true, false, true]);
        // A file larger than the whole cache is read from the store and not kept.
        let big = Path::from("d-0000000000000004.bin");
        inner.put(&big, PutPayload::from(vec![1u8; 100])).await.unwrap();
        assert_eq!(cache.get(&big).await.unwrap().bytes().await.unwrap().len(), 100);
        let kept: Vec<bool> =
            names.iter().chain(["d-0000000000000004.bin"].iter()).map(|n| dir.join(n).exists()).collect();
        assert_eq!(kept, [true, false, true, false]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
