//! Where a workspace's bytes live: a local directory, or a prefix of an object store
//! (`s3://bucket/prefix`). Every read, write and listing of the workspace's own files
//! (versions, slices, runs, the config) goes through [`Storage`], so the code above it is
//! the same for both.
//!
//! Paths stay [`Path`]s under the workspace root: for a bucket workspace the root is the
//! URL itself (`s3://bucket/prefix`), so `layout.images_file(..)` reads
//! `s3://bucket/prefix/datasets/…/images.parquet` in errors and DataFusion reads the same
//! string through the store registered in its runtime ([`Storage::register`]).
//!
//! Object stores have no rename and no lock, so commits are create-if-absent writes
//! ([`Storage::create`]): `PutMode::Create` on a bucket (S3's `If-None-Match: *`), a hard
//! link on a local disk. Data files get names no other writer uses; the manifest written
//! last by [`Storage::create`] is the commit, and a writer that finds it taken retries
//! under the next number. Because data files are named by their content, a bucket's
//! store is wrapped in a local disk cache of them ([`crate::object_cache`]), and, when
//! `SLICETEST_READ_CONSISTENCY_INTERVAL` is set, in a memory of its recent listings and
//! manifests ([`crate::recent_reads`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use datafusion::parquet::file::reader::{ChunkReader, Length};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};

use crate::atomic::write_atomic;
use crate::error::{DatasetError, Result};
use crate::object_cache::ObjectCache;
use crate::recent_reads::RecentReads;

/// How long one request to an object store may take before it is retried.
const REQUEST_TIMEOUT: &str = "60s";
/// How long connecting to an object store may take (an unreachable endpoint fails fast).
const CONNECT_TIMEOUT: &str = "5s";
/// Requests [`Storage::read_many`] and [`Storage::create_many`] keep in flight at once.
const CONCURRENT_READS: usize = 16;
/// Helper threads [`Storage::each`] and [`Storage::join`] may run at once, in the whole
/// process: each blocks on one request at a time, so this bounds a session's requests in
/// flight however deeply the listings nest.
pub const MAX_HELPER_THREADS: usize = 32;
/// Helper threads in use (see [`MAX_HELPER_THREADS`]).
static HELPERS_IN_USE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A share of the helper-thread budget, given back when dropped.
struct Helpers {
    count: usize,
}

impl Helpers {
    /// Up to `wanted` helpers (never more than one call's 15), as many as the budget has
    /// left: possibly none.
    fn reserve(wanted: usize) -> Helpers {
        use std::sync::atomic::Ordering;
        let wanted = wanted.min(CONCURRENT_READS - 1);
        let mut count = 0;
        let _ = HELPERS_IN_USE.fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_use| {
            count = wanted.min(MAX_HELPER_THREADS.saturating_sub(in_use));
            Some(in_use + count)
        });
        Helpers { count }
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        HELPERS_IN_USE.fetch_sub(self.count, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Reads and conditional writes [`Storage::update`] tries before it gives up.
const MAX_UPDATE_ATTEMPTS: usize = 32;
/// Retries of a failed request, and the time after which none is started.
const MAX_RETRIES: usize = 3;
const RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// The store behind a workspace: its root and how to reach it.
#[derive(Clone)]
pub struct Storage {
    root: PathBuf,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    /// A directory on this machine, read and written with `std::fs`.
    Local,
    /// An object store; keys are `prefix/<path under the root>`.
    Object {
        store: Arc<dyn ObjectStore>,
        /// `s3://bucket`: where DataFusion's registry finds `store`.
        base_url: url::Url,
        prefix: String,
        /// Its listings and manifests answered from memory for a while ([`RecentReads`]),
        /// when asked to: the same store as `store`'s outer layer.
        recent: Option<Arc<RecentReads>>,
        /// The local copies of its content-keyed files, when kept: a layer of `store`.
        cache: Option<Arc<ObjectCache>>,
    },
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Storage({})", self.root.display())
    }
}

impl PartialEq for Storage {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
    }
}
impl Eq for Storage {}

/// Whether `location` names an object store (`s3://…`) rather than a local path.
pub fn is_url(location: &str) -> bool {
    location.split_once("://").is_some_and(|(scheme, _)| scheme.chars().all(|c| c.is_ascii_alphanumeric()))
}

impl Storage {
    /// A local directory.
    pub fn local(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let root = match root.to_str().and_then(|s| s.strip_prefix("file://")) {
            Some(path) => PathBuf::from(path),
            None => root,
        };
        Self { root, backend: Backend::Local }
    }

    /// The store for `location`: a path, `file:///path`, or `s3://bucket[/prefix]`.
    /// Credentials, region and endpoint of a bucket come from the standard `AWS_*`
    /// variables (`AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP=true` for a local server).
    pub fn open(location: &Path) -> Result<Self> {
        Self::open_with(location, &[])
    }

    /// [`Storage::open`] with S3 settings given here rather than in the environment (they
    /// win over it): `("aws_endpoint", "http://127.0.0.1:9000")`, `("aws_allow_http",
    /// "true")`, `("aws_access_key_id", …)` — object_store's `AmazonS3ConfigKey` names.
    pub fn open_with(location: &Path, settings: &[(&str, &str)]) -> Result<Self> {
        Self::open_store(location, settings, true)
    }

    /// [`Storage::open`] without the local cache of content-keyed files: for buckets
    /// slicetest did not write (images), whose names say nothing about their content.
    pub fn open_uncached(location: &Path) -> Result<Self> {
        Self::open_store(location, &[], false)
    }

    fn open_store(location: &Path, settings: &[(&str, &str)], cached: bool) -> Result<Self> {
        let Some(text) = location.to_str().filter(|s| is_url(s)) else { return Ok(Self::local(location)) };
        let bad = |message: String| DatasetError::BadInput { source_path: location.to_path_buf(), message };
        let url = url::Url::parse(text).map_err(|e| bad(format!("not a valid URL: {e}")))?;
        match url.scheme() {
            "file" => return Ok(Self::local(url.path())),
            "s3" | "s3a" => {}
            other => {
                return Err(bad(format!("unsupported storage scheme {other:?}: use a local path, file:// or s3://")));
            }
        }
        let bucket = url
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("the URL names no bucket: write s3://<bucket>/<prefix>".into()))?;
        let mut builder = AmazonS3Builder::from_env();
        for (key, value) in settings {
            let key: AmazonS3ConfigKey = key.parse().map_err(|e| bad(format!("unknown S3 setting {key:?}: {e}")))?;
            builder = builder.with_config(key, *value);
        }
        // object_store refuses a plain-HTTP endpoint at the first request, with "URL scheme
        // is not allowed": say what to set instead.
        let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint).unwrap_or_default();
        let allow_http = builder.get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp));
        if endpoint.starts_with("http://") && !allow_http.is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err(bad(format!(
                "the endpoint {endpoint} is plain HTTP: set AWS_ALLOW_HTTP=true to use a server without TLS \
                 (a local MinIO or moto), or give its https:// URL"
            )));
        }
        let store = builder
            .with_bucket_name(bucket)
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), REQUEST_TIMEOUT)
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), CONNECT_TIMEOUT)
            .with_retry(RetryConfig { max_retries: MAX_RETRIES, retry_timeout: RETRY_TIMEOUT, ..Default::default() })
            .build()
            .map_err(|e| bad(format!("cannot use this bucket: {e}")))?;
        let mut store: Arc<dyn ObjectStore> = Arc::new(store);
        let mut cache = None;
        if let Some((dir, max_bytes)) = crate::object_cache::settings_from_env().filter(|_| cached) {
            let dir = dir.join("s3").join(bucket);
            match ObjectCache::new(store.clone(), dir.clone(), max_bytes) {
                Ok(kept) => {
                    let kept = Arc::new(kept);
                    store = kept.clone();
                    cache = Some(kept);
                }
                Err(e) => tracing::warn!("not caching {text} in {}: {e}", dir.display()),
            }
        }
        // A workspace's listings and manifests, remembered for a few seconds when asked to.
        let recent = crate::recent_reads::interval_from_env()
            .filter(|_| cached)
            .map(|interval| Arc::new(RecentReads::new(store.clone(), interval)));
        if let Some(recent) = &recent {
            store = recent.clone() as Arc<dyn ObjectStore>;
        }
        let prefix = url.path().trim_matches('/').to_string();
        let base_url = url::Url::parse(&format!("s3://{bucket}")).expect("bucket names are valid hosts");
        let root =
            PathBuf::from(if prefix.is_empty() { format!("s3://{bucket}") } else { format!("s3://{bucket}/{prefix}") });
        Ok(Self { root, backend: Backend::Object { store, base_url, prefix, recent, cache } })
    }

    /// A workspace at `root` (a URL such as `memory://ws`) kept in `store`, for tests
    /// that need an object store whose conditional put is atomic (object_store's `InMemory`).
    pub fn with_object_store(store: Arc<dyn ObjectStore>, root: &str) -> Self {
        let base_url = url::Url::parse(root).expect("a URL");
        let prefix = base_url.path().trim_matches('/').to_string();
        let mut base = base_url.clone();
        base.set_path("");
        Self {
            root: PathBuf::from(root.trim_end_matches('/')),
            backend: Backend::Object { store, base_url: base, prefix, recent: None, cache: None },
        }
    }

    /// [`Storage::with_object_store`] over `cache` (an [`ObjectCache`] of the store), for
    /// tests of what a damaged local copy does.
    pub fn with_object_cache(cache: Arc<ObjectCache>, root: &str) -> Self {
        let mut storage = Self::with_object_store(cache.clone(), root);
        if let Backend::Object { cache: kept, .. } = &mut storage.backend {
            *kept = Some(cache);
        }
        storage
    }

    /// Removes the local copy of `path` kept by the object cache, if there is one, and
    /// returns where it was: a read after it fetches the stored file again.
    pub fn evict_cached(&self, path: &Path) -> Result<Option<PathBuf>> {
        match &self.backend {
            Backend::Object { cache: Some(cache), prefix, .. } => Ok(cache.evict(&self.key(path, prefix)?)),
            _ => Ok(None),
        }
    }

    /// The workspace root: a directory, or the URL of the bucket prefix.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the workspace is in an object store rather than a local directory.
    pub fn is_remote(&self) -> bool {
        matches!(self.backend, Backend::Object { .. })
    }

    /// For a bucket workspace opened with `SLICETEST_READ_CONSISTENCY_INTERVAL`: how long
    /// its listings and manifests are answered from memory ([`crate::recent_reads`]).
    pub fn read_consistency_interval(&self) -> Option<Duration> {
        match &self.backend {
            Backend::Local => None,
            Backend::Object { recent, .. } => recent.as_ref().map(|r| r.interval()),
        }
    }

    /// Forgets what is remembered of listings and manifests ([`crate::recent_reads`]), so
    /// the next reads see every process's commits: a server does this before a write, so
    /// that a freeze or an upload is computed from the workspace as it is, not as it was
    /// up to `SLICETEST_READ_CONSISTENCY_INTERVAL` ago.
    pub fn forget_recent_reads(&self) {
        if let Backend::Object { recent: Some(recent), .. } = &self.backend {
            recent.forget();
        }
    }

    /// `work` over every item, the calls at once when the store is a bucket, where each
    /// listing or read is a network round trip; one after another on a local disk, where
    /// they take microseconds. Results in the items' order.
    ///
    /// The calling thread works too, with up to 15 helper threads taking the next item as
    /// they finish one. Helpers come from a budget shared by the whole process
    /// ([`MAX_HELPER_THREADS`]): calls nest (every dataset's listings, within each its
    /// taggers'), and where the budget is spent a call runs its items on its own thread,
    /// so nesting never multiplies the threads and never waits for a free one.
    pub fn each<T: Sync, R: Send>(&self, items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
        if !self.is_remote() || items.len() < 2 {
            return items.iter().map(work).collect();
        }
        let helpers = Helpers::reserve(items.len() - 1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let take_items = || {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { return done };
                done.push((i, work(item)));
            }
        };
        let mut done = std::thread::scope(|scope| {
            let running: Vec<_> = (0..helpers.count).map(|_| scope.spawn(take_items)).collect();
            let mut done = take_items();
            for helper in running {
                done.extend(helper.join().expect("a storage thread panicked"));
            }
            done
        });
        done.sort_unstable_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, result)| result).collect()
    }

    /// `a` and `b` at once when the store is a bucket (`b` on a helper thread, if the
    /// budget of [`Storage::each`] has one), one after the other on a local disk.
    pub fn join<A: Send, B: Send>(&self, a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
        if !self.is_remote() {
            return (a(), b());
        }
        let helpers = Helpers::reserve(1);
        if helpers.count == 0 {
            return (a(), b());
        }
        std::thread::scope(|scope| {
            let b = scope.spawn(b);
            let a = a();
            (a, b.join().expect("a storage thread panicked"))
        })
    }

    /// Makes DataFusion read this store's URLs (a no-op for a local directory, which
    /// DataFusion reads by path).
    pub fn register(&self, ctx: &datafusion::prelude::SessionContext) {
        if let Backend::Object { store, base_url, .. } = &self.backend {
            ctx.runtime_env().register_object_store(base_url, store.clone());
        }
    }

    /// For a workspace in an object store: the store, for processes that register it in
    /// a runtime of their own (a cluster's scheduler and executors).
    pub fn object_store(&self) -> Option<&Arc<dyn ObjectStore>> {
        match &self.backend {
            Backend::Local => None,
            Backend::Object { store, .. } => Some(store),
        }
    }

    /// The object key of `path` (which must be under the root).
    fn key(&self, path: &Path, prefix: &str) -> Result<ObjectPath> {
        let rel = path
            .to_str()
            .and_then(|p| p.strip_prefix(self.root.to_str()?))
            .map(|rel| rel.trim_start_matches('/'))
            .ok_or_else(|| DatasetError::BadInput {
                source_path: path.to_path_buf(),
                message: format!("is not inside the workspace {}", self.root.display()),
            })?;
        let full = match (prefix.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}/{rel}"),
        };
        ObjectPath::parse(&full)
            .map_err(|e| DatasetError::BadInput { source_path: path.to_path_buf(), message: e.to_string() })
    }

    /// The whole content of `path`.
    pub fn read(&self, path: &Path) -> Result<Bytes> {
        self.read_opt(path)?.ok_or_else(|| {
            DatasetError::io("reading", path)(std::io::Error::new(std::io::ErrorKind::NotFound, "not found"))
        })
    }

    /// The content of `path`, or `None` when nothing is there.
    pub fn read_opt(&self, path: &Path) -> Result<Option<Bytes>> {
        match &self.backend {
            Backend::Local => match std::fs::read(path) {
                Ok(bytes) => Ok(Some(bytes.into())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(DatasetError::io("reading", path)(e)),
            },
            Backend::Object { store, prefix, .. } => {
                let (store, key) = (store.clone(), self.key(path, prefix)?);
                block_on(async move { get_opt(&store, &key).await }).map_err(object_error("reading", path))
            }
        }
    }

    /// The contents of `paths` (`None` where nothing is stored), read concurrently from an
    /// object store: one after another, a dataset with 300 versions would cost every
    /// command 300 round trips for its manifests.
    pub fn read_many(&self, paths: &[PathBuf]) -> Result<Vec<Option<Bytes>>> {
        self.read_each(paths).into_iter().collect()
    }

    /// [`Storage::read_many`] with a result per path, so one unreadable file does not
    /// hide the others (ingest reports each bad image and keeps the rest).
    pub fn read_each(&self, paths: &[PathBuf]) -> Vec<Result<Option<Bytes>>> {
        match &self.backend {
            Backend::Local => paths.iter().map(|path| self.read_opt(path)).collect(),
            Backend::Object { store, prefix, .. } => {
                let keys: Vec<Result<ObjectPath>> = paths.iter().map(|path| self.key(path, prefix)).collect();
                let wanted: Vec<ObjectPath> = keys.iter().filter_map(|k| k.as_ref().ok().cloned()).collect();
                let store = store.clone();
                let mut fetched = block_on(async move {
                    let reads = wanted.into_iter().map(|key| {
                        let store = store.clone();
                        async move { get_opt(&store, &key).await }
                    });
                    futures::stream::iter(reads).buffered(CONCURRENT_READS).collect::<Vec<_>>().await
                })
                .into_iter();
                keys.into_iter()
                    .zip(paths)
                    .map(|(key, path)| {
                        key?;
                        fetched.next().expect("one result per key").map_err(object_error("reading", path))
                    })
                    .collect()
            }
        }
    }

    /// Whether something is stored at `path`.
    pub fn exists(&self, path: &Path) -> Result<bool> {
        match &self.backend {
            Backend::Local => Ok(path.exists()),
            Backend::Object { store, prefix, .. } => {
                let (store, key) = (store.clone(), self.key(path, prefix)?);
                let found = block_on(async move {
                    match store.head(&key).await {
                        Ok(_) => Ok(true),
                        Err(object_store::Error::NotFound { .. }) => Ok(false),
                        Err(e) => Err(e),
                    }
                });
                found.map_err(object_error("reading", path))
            }
        }
    }

    /// Writes `bytes` to `path`, replacing what is there; readers see the old content or
    /// the new, never a part.
    pub fn write(&self, path: &Path, bytes: Bytes) -> Result<()> {
        match &self.backend {
            Backend::Local => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(DatasetError::io("creating", dir))?;
                }
                write_atomic(path, &bytes)
            }
            Backend::Object { store, prefix, .. } => {
                let (store, key) = (store.clone(), self.key(path, prefix)?);
                block_on(async move { store.put(&key, PutPayload::from_bytes(bytes)).await.map(drop) })
                    .map_err(object_error("writing", path))
            }
        }
    }

    /// Writes `bytes` to `path` only if nothing is there yet: true if this call created
    /// it, false if another writer had. Atomic on both backends (the commit primitive).
    pub fn create(&self, path: &Path, bytes: Bytes) -> Result<bool> {
        match &self.backend {
            Backend::Local => crate::parts::create_file(path, &bytes),
            Backend::Object { store, prefix, .. } => {
                let (store, key) = (store.clone(), self.key(path, prefix)?);
                block_on(async move { put_if_absent(&store, &key, bytes).await }).map_err(object_error("writing", path))
            }
        }
    }

    /// [`Storage::create`] for many files, up to 16 requests in flight on a bucket (one
    /// after another, ten thousand small objects would take minutes of round trips).
    /// Returns how many this call created.
    pub fn create_many(&self, files: Vec<(PathBuf, Bytes)>) -> Result<usize> {
        let Backend::Object { store, prefix, .. } = &self.backend else {
            let mut created = 0;
            for (path, bytes) in files {
                created += usize::from(self.create(&path, bytes)?);
            }
            return Ok(created);
        };
        let keyed = files
            .into_iter()
            .map(|(path, bytes)| Ok((self.key(&path, prefix)?, path, bytes)))
            .collect::<Result<Vec<_>>>()?;
        let store = store.clone();
        let results = block_on(async move {
            let puts = keyed.into_iter().map(|(key, path, bytes)| {
                let store = store.clone();
                async move { put_if_absent(&store, &key, bytes).await.map_err(object_error("writing", &path)) }
            });
            futures::stream::iter(puts).buffer_unordered(CONCURRENT_READS).collect::<Vec<_>>().await
        });
        results.into_iter().try_fold(0, |n, created| Ok(n + usize::from(created?)))
    }

    /// Replaces the content of `path` with what `change` makes of the current content
    /// (`None`: nothing stored; `change` returns `None` to leave it as it is), and returns
    /// the content that ended up stored. On a bucket the write is conditional on the
    /// content `change` saw (`PutMode::Update` on its ETag, `PutMode::Create` when there
    /// was none): a writer that lost to another reads again and re-applies its change, so
    /// two changes never overwrite each other. On a local disk the new content replaces the
    /// old atomically; writers on one machine serialise with the workspace lock.
    pub fn update(
        &self,
        path: &Path,
        mut change: impl FnMut(Option<&[u8]>) -> Result<Option<Bytes>>,
    ) -> Result<Option<Bytes>> {
        let Backend::Object { store, prefix, .. } = &self.backend else {
            let current = self.read_opt(path)?;
            return match change(current.as_deref())? {
                Some(new) => self.write(path, new.clone()).map(|()| Some(new)),
                None => Ok(current),
            };
        };
        let key = self.key(path, prefix)?;
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let (store2, key2) = (store.clone(), key.clone());
            let current = block_on(async move {
                match store2.get(&key2).await {
                    Ok(got) => {
                        let version = object_store::UpdateVersion {
                            e_tag: got.meta.e_tag.clone(),
                            version: got.meta.version.clone(),
                        };
                        got.bytes().await.map(|bytes| Some((bytes, version)))
                    }
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .map_err(object_error("reading", path))?;
            let Some(new) = change(current.as_ref().map(|(bytes, _)| bytes.as_ref()))? else {
                return Ok(current.map(|(bytes, _)| bytes));
            };
            let mode = match current {
                Some((_, version)) => PutMode::Update(version),
                None => PutMode::Create,
            };
            let (store2, key2, payload) = (store.clone(), key.clone(), new.clone());
            let put = block_on(async move {
                let options = PutOptions { mode, ..Default::default() };
                store2.put_opts(&key2, PutPayload::from_bytes(payload), options).await
            });
            match put {
                Ok(_) => return Ok(Some(new)),
                // Changed (or created) by another writer since it was read: read it again.
                Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(object_error("writing", path)(e)),
            }
        }
        Err(DatasetError::io("writing", path)(std::io::Error::other(format!(
            "changed by other writers {MAX_UPDATE_ATTEMPTS} times while this one tried to change it; try again"
        ))))
    }

    /// Names directly inside the directory `dir` (files and sub-directories); a missing
    /// directory has none.
    pub fn list(&self, dir: &Path) -> Result<Vec<String>> {
        match &self.backend {
            Backend::Local => {
                let entries = match std::fs::read_dir(dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(DatasetError::io("listing", dir)(e)),
                };
                Ok(entries.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect())
            }
            Backend::Object { store, prefix, .. } => {
                let listed = self.list_with_delimiter(store, prefix, dir)?;
                let names = listed.common_prefixes.iter().chain(listed.objects.iter().map(|o| &o.location));
                Ok(names.filter_map(|p| p.filename().map(str::to_string)).collect())
            }
        }
    }

    /// One level of the bucket "directory" `dir` in `store`: the objects directly in it
    /// and the prefixes below it.
    fn list_with_delimiter(
        &self,
        store: &Arc<dyn ObjectStore>,
        prefix: &str,
        dir: &Path,
    ) -> Result<object_store::ListResult> {
        let (store, key) = (store.clone(), self.key(dir, prefix)?);
        block_on(async move {
            let key = (!key.as_ref().is_empty()).then_some(key);
            store.list_with_delimiter(key.as_ref()).await
        })
        .map_err(object_error("listing", dir))
    }

    /// The files directly inside the directory `dir` with their sizes in bytes (not
    /// sub-directories); a missing directory has none.
    pub fn list_sizes(&self, dir: &Path) -> Result<Vec<(String, u64)>> {
        match &self.backend {
            Backend::Local => {
                let mut files = Vec::new();
                for name in self.list(dir)? {
                    let path = dir.join(&name);
                    match std::fs::metadata(&path) {
                        Ok(meta) if meta.is_file() => files.push((name, meta.len())),
                        Ok(_) => {}
                        // Removed between the listing and now (a writer's temporary file).
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(DatasetError::io("reading", &path)(e)),
                    }
                }
                Ok(files)
            }
            Backend::Object { store, prefix, .. } => {
                let listed = self.list_with_delimiter(store, prefix, dir)?;
                Ok(listed.objects.iter().filter_map(|o| Some((o.location.filename()?.to_string(), o.size))).collect())
            }
        }
    }

    /// `path` opened for Parquet's reader: a local file is read in place (only the pages
    /// a projection needs), an object is fetched whole (from the local cache when it is
    /// content-keyed).
    pub fn open_file(&self, path: &Path) -> Result<StoredFile> {
        match &self.backend {
            Backend::Local => {
                let file = std::fs::File::open(path).map_err(DatasetError::io("reading", path))?;
                Ok(StoredFile::Local(file))
            }
            Backend::Object { .. } => Ok(StoredFile::Fetched(self.read(path)?)),
        }
    }

    /// Every file under the directory `dir`, as `/`-separated paths relative to it (one
    /// listing request per thousand files on a bucket, instead of one per directory).
    pub fn list_files(&self, dir: &Path) -> Result<Vec<String>> {
        Ok(self.list_files_sized(dir)?.into_iter().map(|(rel, _)| rel).collect())
    }

    /// [`Storage::list_files`] with each file's size in bytes: what a reader of a tree of
    /// parts needs to know of them, in one listing rather than one per directory.
    pub fn list_files_sized(&self, dir: &Path) -> Result<Vec<(String, u64)>> {
        match &self.backend {
            Backend::Local => {
                let mut files = Vec::new();
                let mut pending = vec![String::new()];
                while let Some(rel) = pending.pop() {
                    for name in self.list(&dir.join(&rel))? {
                        let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                        match std::fs::metadata(dir.join(&path)) {
                            Ok(meta) if meta.is_dir() => pending.push(path),
                            Ok(meta) => files.push((path, meta.len())),
                            // Removed between the listing and now (a writer's temporary file).
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(DatasetError::io("reading", dir.join(&path))(e)),
                        }
                    }
                }
                Ok(files)
            }
            Backend::Object { store, prefix, .. } => Ok(self
                .list_objects_under(store, prefix, dir)?
                .into_iter()
                .map(|(rel, meta)| (rel, meta.size))
                .collect()),
        }
    }

    /// [`Storage::list_files`] with each file's stamp, which changes whenever its content
    /// does: size and ETag of an object (from the listing: no request per object), size
    /// and modification time of a local file.
    pub fn list_files_stamped(&self, dir: &Path) -> Result<Vec<(String, String)>> {
        match &self.backend {
            Backend::Local => {
                // A file removed since the listing is left out, as if listed a moment later.
                let stamped = self.list_files(dir)?.into_iter().filter_map(|rel| {
                    let stamp = file_stamp(&dir.join(&rel))?;
                    Some((rel, stamp))
                });
                Ok(stamped.collect())
            }
            Backend::Object { store, prefix, .. } => Ok(self
                .list_objects_under(store, prefix, dir)?
                .into_iter()
                .map(|(rel, meta)| {
                    let version = meta.e_tag.unwrap_or_else(|| meta.last_modified.to_rfc3339());
                    (rel, format!("{}:{version}", meta.size))
                })
                .collect()),
        }
    }

    /// Every object below `dir`, with its path relative to it.
    fn list_objects_under(
        &self,
        store: &Arc<dyn ObjectStore>,
        prefix: &str,
        dir: &Path,
    ) -> Result<Vec<(String, object_store::ObjectMeta)>> {
        let (store, key) = (store.clone(), self.key(dir, prefix)?);
        let base = key.clone();
        let listed: Vec<object_store::ObjectMeta> = block_on(async move { store.list(Some(&key)).try_collect().await })
            .map_err(object_error("listing", dir))?;
        Ok(listed
            .into_iter()
            .filter_map(|meta| {
                let rel = meta.location.prefix_match(&base)?.map(|p| p.as_ref().to_string()).collect::<Vec<_>>();
                Some((rel.join("/"), meta))
            })
            .collect())
    }

    /// Removes the file at `path`; nothing there is not an error.
    pub fn remove(&self, path: &Path) -> Result<()> {
        match &self.backend {
            Backend::Local => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DatasetError::io("removing", path)(e)),
                _ => Ok(()),
            },
            Backend::Object { store, prefix, .. } => {
                let (store, key) = (store.clone(), self.key(path, prefix)?);
                block_on(async move {
                    match store.delete(&key).await {
                        Err(object_store::Error::NotFound { .. }) => Ok(()),
                        other => other,
                    }
                })
                .map_err(object_error("removing", path))
            }
        }
    }

    /// Removes the directory `dir` and everything under it.
    pub fn remove_all(&self, dir: &Path) -> Result<()> {
        match &self.backend {
            Backend::Local => match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DatasetError::io("removing", dir)(e)),
                _ => Ok(()),
            },
            Backend::Object { store, prefix, .. } => {
                let (store, key) = (store.clone(), self.key(dir, prefix)?);
                block_on(async move {
                    let objects: Vec<_> = store.list(Some(&key)).try_collect().await?;
                    for object in objects {
                        match store.delete(&object.location).await {
                            Err(object_store::Error::NotFound { .. }) | Ok(()) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(())
                })
                .map_err(object_error("removing", dir))
            }
        }
    }
}

/// A stored file as Parquet's reader takes it (see [`Storage::open_file`]).
pub enum StoredFile {
    /// A file of a local workspace.
    Local(std::fs::File),
    /// The whole content of an object.
    Fetched(Bytes),
}

impl Length for StoredFile {
    fn len(&self) -> u64 {
        match self {
            StoredFile::Local(file) => Length::len(file),
            StoredFile::Fetched(bytes) => bytes.len() as u64,
        }
    }
}

impl ChunkReader for StoredFile {
    type T = Box<dyn std::io::Read + Send>;

    fn get_read(&self, start: u64) -> datafusion::parquet::errors::Result<Self::T> {
        Ok(match self {
            StoredFile::Local(file) => Box::new(file.get_read(start)?),
            StoredFile::Fetched(bytes) => Box::new(bytes.get_read(start)?),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> datafusion::parquet::errors::Result<Bytes> {
        match self {
            StoredFile::Local(file) => file.get_bytes(start, length),
            StoredFile::Fetched(bytes) => bytes.get_bytes(start, length),
        }
    }
}

fn is_missing_bucket(e: &object_store::Error) -> bool {
    error_chain(e).contains("NoSuchBucket")
}

/// Wraps an object-store error as an I/O error on `path`, keeping "not found" and
/// "already exists" recognisable, and saying first what the usual causes mean.
fn object_error(action: &'static str, path: &Path) -> impl FnOnce(object_store::Error) -> DatasetError {
    let path = path.to_path_buf();
    move |e| {
        let kind = match &e {
            object_store::Error::NotFound { .. } if !is_missing_bucket(&e) => std::io::ErrorKind::NotFound,
            object_store::Error::AlreadyExists { .. } => std::io::ErrorKind::AlreadyExists,
            _ => std::io::ErrorKind::Other,
        };
        let chain = error_chain(&e);
        let cause = if is_missing_bucket(&e) {
            "the bucket does not exist (create it, or check the URL and AWS_ENDPOINT_URL)"
        } else if chain.contains("169.254.169.254") {
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an instance role is available"
        } else if ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden"]
            .iter()
            .any(|c| chain.contains(c))
        {
            "access denied: check the AWS_* credentials and the bucket's policy"
        } else if chain.contains("error sending request") || chain.contains("timed out") {
            "the storage endpoint cannot be reached (check AWS_ENDPOINT_URL and the network)"
        } else {
            ""
        };
        let message = if cause.is_empty() { chain } else { format!("{cause}; {chain}") };
        DatasetError::Io { action, path, source: std::io::Error::new(kind, message) }
    }
}

/// An error and its sources on one line (object_store's top-level message alone often
/// says only "Generic S3 error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// The object at `key`, or `None` when nothing is stored there.
/// The stamp of the local file at `path` (its size and modification time, which change
/// whenever its content does); None when it cannot be read.
pub(crate) fn file_stamp(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let modified = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(format!("{}:{}", meta.len(), modified.as_nanos()))
}

/// Stores `bytes` at `key` only if nothing is there (`PutMode::Create`): true if this
/// call created it, false if another writer had.
async fn put_if_absent(store: &Arc<dyn ObjectStore>, key: &ObjectPath, bytes: Bytes) -> object_store::Result<bool> {
    let options = PutOptions { mode: PutMode::Create, ..Default::default() };
    match store.put_opts(key, PutPayload::from_bytes(bytes), options).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn get_opt(store: &Arc<dyn ObjectStore>, key: &ObjectPath) -> object_store::Result<Option<Bytes>> {
    match store.get(key).await {
        Ok(result) => result.bytes().await.map(Some),
        // A missing bucket is a 404 too, but not "nothing stored here".
        Err(e @ object_store::Error::NotFound { .. }) if !is_missing_bucket(&e) => {
            drop(e);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Runs an object-store request to completion from synchronous code.
///
/// The datasets crate is synchronous and is called both from plain threads and from
/// inside async handlers, so requests run on a runtime of their own: blocking on it never
/// nests runtimes, and the caller's runtime keeps its threads.
fn block_on<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("slicetest-storage")
            .enable_all()
            .build()
            .expect("the storage runtime starts")
    });
    let task = runtime.spawn(future);
    // `unconstrained`: called from a task of another tokio runtime (the server, an async
    // engine call), polling the handle would spend that task's cooperative budget, which
    // only refills when the task yields — and a blocked task never does: after ~128 calls
    // in one poll the handle would answer "pending" forever and this loop would spin.
    futures::executor::block_on(tokio::task::unconstrained(task)).expect("a storage request panicked")
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[test]
    fn each_and_join_run_at_once_on_a_bucket_and_in_turn_on_a_disk() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let bucket = Storage::with_object_store(Arc::new(InMemory::new()), "memory://ws/each");
        for (storage, at_once) in [(Storage::local(dir.path()), false), (bucket, true)] {
            let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let work = |i: &usize| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                running.fetch_sub(1, Ordering::SeqCst);
                i * 10
            };
            let items: Vec<usize> = (0..20).collect();
            assert_eq!(storage.each(&items, work), items.iter().map(|i| i * 10).collect::<Vec<_>>(), "in order");
            assert_eq!(storage.join(|| work(&1), || work(&2)), (10, 20));
            let seen = most.load(Ordering::SeqCst);
            assert_eq!(seen > 1, at_once, "{seen} at once on {storage:?}");
            assert!(seen <= CONCURRENT_READS, "{seen} at once");

            // Nested calls (every dataset's listings, within each its taggers') share the
            // process's helpers: 20 × 20 items never run on more than the budget's threads
            // and the callers', and every item runs once, in order.
            most.store(0, Ordering::SeqCst);
            let outer: Vec<usize> = (0..20).collect();
            let nested = storage.each(&outer, |o| storage.each(&items, |i| work(&(o * 100 + i))));
            let expected: Vec<Vec<usize>> =
                outer.iter().map(|o| items.iter().map(|i| (o * 100 + i) * 10).collect()).collect();
            assert_eq!(nested, expected);
            let seen = most.load(Ordering::SeqCst);
            assert_eq!(seen > 1, at_once, "{seen} at once on {storage:?}");
            // The outer call's thread and helpers, each also the caller of an inner call.
            assert!(seen <= MAX_HELPER_THREADS + 1, "{seen} at once with nesting");
        }
    }

    #[test]
    fn locations_parse_into_backends() {
        assert!(!Storage::open(Path::new("/tmp/ws")).unwrap().is_remote());
        let local = Storage::open(Path::new("file:///tmp/ws")).unwrap();
        assert_eq!(local.root(), Path::new("/tmp/ws"));
        let err = Storage::open(Path::new("s3:///prefix")).unwrap_err().to_string();
        assert!(err.contains("no bucket") && err.contains("s3:///prefix"), "{err}");
        let err = Storage::open(Path::new("gs://b/p")).unwrap_err().to_string();
        assert!(err.contains("unsupported storage scheme \"gs\""), "{err}");
        let s3 = Storage::open(Path::new("s3://bucket/some/prefix/")).unwrap();
        assert_eq!(s3.root(), Path::new("s3://bucket/some/prefix"));
        assert!(s3.is_remote());
        // A plain-HTTP endpoint needs allow_http, and says so before any request.
        let local_server = [("aws_endpoint", "http://127.0.0.1:9000"), ("aws_allow_http", "false")];
        let err = Storage::open_with(Path::new("s3://bucket/p"), &local_server).unwrap_err().to_string();
        assert!(err.contains("plain HTTP: set AWS_ALLOW_HTTP=true"), "{err}");
        let allowed = [("aws_endpoint", "http://127.0.0.1:9000"), ("aws_allow_http", "true")];
        assert!(Storage::open_with(Path::new("s3://bucket/p"), &allowed).is_ok());
    }

    /// The same contract on both backends: create-if-absent, overwrite, list, remove.
    /// Many calls within one poll of a task of another runtime (what a handler reading
    /// hundreds of manifests does) must not exhaust that task's cooperative budget.
    #[test]
    fn many_calls_from_inside_a_tokio_task_finish() {
        let storage = Storage::with_object_store(Arc::new(InMemory::new()), "memory://ws/coop");
        let file = storage.root().join("f.json");
        storage.write(&file, Bytes::from_static(b"{}")).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                for _ in 0..1_000 {
                    storage.read_opt(&file).unwrap();
                }
            });
            done.send(()).unwrap();
        });
        assert!(finished.recv_timeout(Duration::from_secs(60)).is_ok(), "the calls spin on an exhausted budget");
    }

    /// Conditional updates: 8 threads each append 10 lines to one object; none is lost.
    #[test]
    fn concurrent_updates_of_a_bucket_object_lose_nothing() {
        let storage = Storage::with_object_store(Arc::new(InMemory::new()), "memory://ws/upd");
        let file = storage.root().join("workspace.toml");
        std::thread::scope(|scope| {
            for t in 0..8 {
                let (storage, file) = (&storage, &file);
                scope.spawn(move || {
                    for i in 0..10 {
                        storage
                            .update(file, |current| {
                                let mut text = current.map(|c| c.to_vec()).unwrap_or_default();
                                text.extend_from_slice(format!("{t}-{i}\n").as_bytes());
                                Ok(Some(text.into()))
                            })
                            .unwrap();
                    }
                });
            }
        });
        let text = String::from_utf8(storage.read(&file).unwrap().to_vec()).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        lines.dedup();
        assert_eq!(lines.len(), 80, "{text}");
    }

    #[test]
    fn both_backends_keep_the_same_contract() {
        let dir = tempfile::tempdir().unwrap();
        let stores =
            [Storage::local(dir.path()), Storage::with_object_store(Arc::new(InMemory::new()), "memory://ws/pre")];
        for s in stores {
            let root = s.root().to_path_buf();
            let file = root.join("a/b/v1.json");
            assert_eq!(s.read_opt(&file).unwrap(), None);
            assert!(!s.exists(&file).unwrap());
            assert!(s.create(&file, Bytes::from_static(b"one")).unwrap());
            assert!(!s.create(&file, Bytes::from_static(b"two")).unwrap(), "{root:?}: a second create is refused");
            assert_eq!(s.read(&file).unwrap(), Bytes::from_static(b"one"));
            s.write(&file, Bytes::from_static(b"three")).unwrap();
            assert_eq!(s.read(&file).unwrap(), Bytes::from_static(b"three"));
            s.write(&root.join("a/c.txt"), Bytes::from_static(b"x")).unwrap();
            let mut names = s.list(&root.join("a")).unwrap();
            names.sort();
            assert_eq!(names, ["b", "c.txt"], "{root:?}");
            assert!(s.list(&root.join("nothing")).unwrap().is_empty());
            assert_eq!(s.list_sizes(&root.join("a")).unwrap(), [("c.txt".to_string(), 1)], "{root:?}: files only");
            assert!(s.list_sizes(&root.join("nothing")).unwrap().is_empty());
            // Parquet reads through `open_file`, projected, on either backend.
            let batch = datafusion::arrow::array::RecordBatch::try_from_iter([
                ("a", Arc::new(datafusion::arrow::array::Int32Array::from(vec![1, 2])) as _),
                ("b", Arc::new(datafusion::arrow::array::Int32Array::from(vec![3, 4])) as _),
            ])
            .unwrap();
            let table = root.join("t.parquet");
            s.write(&table, crate::version::encode_parquet(&batch, Vec::new()).unwrap()).unwrap();
            let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                s.open_file(&table).unwrap(),
            )
            .unwrap();
            let mask = datafusion::parquet::arrow::ProjectionMask::roots(reader.parquet_schema(), [1]);
            let read: Vec<_> = reader.with_projection(mask).build().unwrap().collect::<Result<_, _>>().unwrap();
            assert_eq!(read[0], batch.project(&[1]).unwrap(), "{root:?}");
            s.remove(&table).unwrap();
            // update: created when absent, changed from what is there, left alone on None.
            let config = root.join("u.toml");
            let add = |c: Option<&[u8]>| Ok(Some(Bytes::from([c.unwrap_or_default(), b"x"].concat())));
            assert_eq!(s.update(&config, add).unwrap(), Some(Bytes::from_static(b"x")));
            assert_eq!(s.update(&config, add).unwrap(), Some(Bytes::from_static(b"xx")));
            assert_eq!(s.update(&config, |_| Ok(None)).unwrap(), Some(Bytes::from_static(b"xx")));
            assert_eq!(s.read(&config).unwrap(), Bytes::from_static(b"xx"), "{root:?}");
            s.remove(&config).unwrap();
            let mut files = s.list_files(&root.join("a")).unwrap();
            files.sort();
            assert_eq!(files, ["b/v1.json", "c.txt"], "{root:?}");
            let many = s.read_many(&[root.join("a/c.txt"), root.join("a/none"), file.clone()]).unwrap();
            assert_eq!(many, [Some(Bytes::from_static(b"x")), None, Some(Bytes::from_static(b"three"))], "{root:?}");
            s.remove_all(&root.join("a/b")).unwrap();
            assert_eq!(s.list(&root.join("a")).unwrap(), ["c.txt"], "{root:?}");
            s.remove(&root.join("a/c.txt")).unwrap();
            s.remove(&root.join("a/c.txt")).unwrap();
            let err = s.read(&root.join("a/c.txt")).unwrap_err().to_string();
            assert!(err.contains("a/c.txt") && err.contains("not found"), "{err}");
        }
    }
}
