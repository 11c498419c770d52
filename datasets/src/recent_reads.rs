//! A bucket workspace's listings and manifests, remembered for a few seconds (opt in).
//!
//! Before it does anything, every command and every server request lists the workspace's
//! directories and reads its manifests, because another process may have committed since:
//! a SQL query over one tagged, embedded dataset makes about a dozen such requests, a text
//! search five. On a local disk they cost microseconds; on S3 each is a round trip of tens
//! of milliseconds, which a server pays on every request.
//!
//! [`RecentReads`] wraps the bucket's store (above [`crate::object_cache::ObjectCache`]) and
//! answers a listing, or a whole read of an object that is not content-keyed, from what the
//! same request got within the last `interval` (`SLICETEST_READ_CONSISTENCY_INTERVAL`, in
//! seconds; LanceDB calls the same knob `read_consistency_interval`). So commits by *other*
//! processes show up at most `interval` late; this process's own writes show up at once,
//! since any write through the store forgets everything remembered. Commits stay correct
//! whatever is remembered: they are conditional writes, and a failed one forgets too, so
//! the writer's retry lists afresh. Content-keyed files never change and are not kept here
//! (the disk cache has them); ranged and conditional reads always go to the bucket.
//!
//! Off by default (`0`): every listing and manifest read goes to the bucket, as on a
//! local disk.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use crate::object_cache::is_content_keyed;

/// The environment variable that turns it on.
pub const INTERVAL_VARIABLE: &str = "SLICETEST_READ_CONSISTENCY_INTERVAL";

/// Objects larger than this are never remembered (manifests are a few KB).
const MAX_OBJECT_BYTES: usize = 1 << 20;
/// Entries and bytes kept at most; past either everything is forgotten (a workspace's
/// directories and manifests are far fewer and smaller). A larger answer is not kept.
const MAX_ENTRIES: usize = 4096;
const MAX_BYTES: usize = 64 << 20;

/// The interval from `SLICETEST_READ_CONSISTENCY_INTERVAL` (seconds); `None` when it is
/// unset, zero, or not a number (which is warned about).
pub fn interval_from_env() -> Option<Duration> {
    parse_interval(&std::env::var(INTERVAL_VARIABLE).ok()?)
}

fn parse_interval(text: &str) -> Option<Duration> {
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds.is_finite() => Some(Duration::from_secs_f64(seconds)),
        Ok(_) => None,
        Err(_) => {
            tracing::warn!("ignoring {INTERVAL_VARIABLE}={text:?}: not a number of seconds");
            None
        }
    }
}

/// What a request was asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// `list` (every object under the prefix).
    List(Option<Path>),
    /// `list_with_delimiter` (one level).
    Level(Option<Path>),
    /// A whole read (or a head) of an object.
    Object(Path),
}

/// What it answered.
#[derive(Debug, Clone)]
enum Answer {
    List(Vec<ObjectMeta>),
    Level {
        prefixes: Vec<Path>,
        objects: Vec<ObjectMeta>,
    },
    /// `None`: not found. Bytes are `None` when only a head was asked.
    Object(Option<(ObjectMeta, Option<Bytes>)>),
}

impl Answer {
    /// About the memory it holds: an object's bytes, a listing's paths (and a little for
    /// each entry's size, time and tag).
    fn bytes(&self) -> usize {
        let meta = |meta: &ObjectMeta| meta.location.as_ref().len() + meta.e_tag.as_ref().map_or(0, String::len) + 64;
        match self {
            Answer::List(objects) => objects.iter().map(meta).sum(),
            Answer::Level { prefixes, objects } => {
                prefixes.iter().map(|p| p.as_ref().len() + 24).sum::<usize>() + objects.iter().map(meta).sum::<usize>()
            }
            Answer::Object(Some((object, bytes))) => meta(object) + bytes.as_ref().map_or(0, Bytes::len),
            Answer::Object(None) => 0,
        }
    }
}

#[derive(Debug, Default)]
struct Remembered {
    /// Bumped by every write: an answer fetched across a write is not kept.
    generation: u64,
    answers: HashMap<Key, (Instant, Answer)>,
    /// Bytes `answers` hold ([`Answer::bytes`]).
    bytes: usize,
}

#[derive(Debug)]
struct Shared {
    interval: Duration,
    remembered: Mutex<Remembered>,
}

impl Shared {
    /// The answer to `key` if it was fetched within the interval; else the generation to
    /// keep a fresh answer under.
    fn recall(&self, key: &Key) -> Result<Answer, u64> {
        let remembered = self.remembered.lock().expect("not poisoned");
        match remembered.answers.get(key) {
            Some((at, answer)) if at.elapsed() < self.interval => Ok(answer.clone()),
            _ => Err(remembered.generation),
        }
    }

    fn keep(&self, key: Key, answer: Answer, generation: u64) {
        let mut remembered = self.remembered.lock().expect("not poisoned");
        if remembered.generation != generation {
            return;
        }
        let bytes = answer.bytes();
        if bytes > MAX_BYTES {
            return;
        }
        if remembered.answers.len() >= MAX_ENTRIES || remembered.bytes + bytes > MAX_BYTES {
            remembered.answers.clear();
            remembered.bytes = 0;
        }
        remembered.bytes += bytes;
        if let Some((_, replaced)) = remembered.answers.insert(key, (Instant::now(), answer)) {
            remembered.bytes -= replaced.bytes();
        }
    }

    fn forget(&self) {
        let mut remembered = self.remembered.lock().expect("not poisoned");
        remembered.generation += 1;
        remembered.answers.clear();
        remembered.bytes = 0;
    }
}

/// An object store whose listings and whole reads of mutable objects are answered from
/// memory for `interval` after they were fetched (see the module docs).
pub struct RecentReads {
    inner: Arc<dyn ObjectStore>,
    shared: Arc<Shared>,
}

impl RecentReads {
    /// Wraps `inner`, remembering answers for `interval`.
    pub fn new(inner: Arc<dyn ObjectStore>, interval: Duration) -> Self {
        Self { inner, shared: Arc::new(Shared { interval, remembered: Mutex::default() }) }
    }

    /// How long an answer is remembered.
    pub fn interval(&self) -> Duration {
        self.shared.interval
    }

    /// Forgets every answer remembered (as a write through the store does).
    pub fn forget(&self) {
        self.shared.forget();
    }
}

impl fmt::Display for RecentReads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecentReads({}, {:?})", self.inner, self.shared.interval)
    }
}

impl fmt::Debug for RecentReads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A whole read answered from memory.
fn get_result(meta: ObjectMeta, bytes: Bytes) -> GetResult {
    let range = 0..bytes.len() as u64;
    let payload = GetResultPayload::Stream(futures::stream::once(async move { Ok(bytes) }).boxed());
    GetResult { payload, meta, range, attributes: Default::default() }
}

/// Whether `options` ask for the whole current object (or its head), nothing conditional.
fn is_plain(options: &GetOptions) -> bool {
    options.if_match.is_none()
        && options.if_none_match.is_none()
        && options.if_modified_since.is_none()
        && options.if_unmodified_since.is_none()
        && options.range.is_none()
        && options.version.is_none()
}

#[async_trait]
impl ObjectStore for RecentReads {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.shared.forget();
        let put = self.inner.put_opts(location, payload, opts).await;
        // Also after: a read that started meanwhile may have kept the old content.
        self.shared.forget();
        put
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        // slicetest writes whole objects; an upload in parts is forgotten as it starts.
        self.shared.forget();
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if !is_plain(&options) || is_content_keyed(location) {
            return self.inner.get_opts(location, options).await;
        }
        let key = Key::Object(location.clone());
        let generation = match self.shared.recall(&key) {
            Ok(Answer::Object(None)) => {
                let source = "not found (remembered from a read less than the read consistency interval ago)";
                return Err(object_store::Error::NotFound { path: location.to_string(), source: source.into() });
            }
            Ok(Answer::Object(Some((meta, _)))) if options.head => return Ok(get_result(meta, Bytes::new())),
            Ok(Answer::Object(Some((meta, Some(bytes))))) => return Ok(get_result(meta, bytes)),
            // Only its head is remembered: read it.
            Ok(_) => self.shared.remembered.lock().expect("not poisoned").generation,
            Err(generation) => generation,
        };
        match self.inner.get_opts(location, options.clone()).await {
            Ok(got) if options.head => {
                self.shared.keep(key, Answer::Object(Some((got.meta.clone(), None))), generation);
                Ok(got)
            }
            Ok(got) if got.meta.size as usize <= MAX_OBJECT_BYTES => {
                let meta = got.meta.clone();
                let bytes = got.bytes().await?;
                self.shared.keep(key, Answer::Object(Some((meta.clone(), Some(bytes.clone())))), generation);
                Ok(get_result(meta, bytes))
            }
            Ok(got) => Ok(got),
            Err(e @ object_store::Error::NotFound { .. }) => {
                self.shared.keep(key, Answer::Object(None), generation);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.shared.forget();
        let shared = self.shared.clone();
        self.inner.delete_stream(locations).inspect(move |_| shared.forget()).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let key = Key::List(prefix.cloned());
        let generation = match self.shared.recall(&key) {
            Ok(Answer::List(objects)) => return futures::stream::iter(objects.into_iter().map(Ok)).boxed(),
            Ok(_) => unreachable!("a list key holds a listing"),
            Err(generation) => generation,
        };
        let (inner, shared) = (self.inner.clone(), self.shared.clone());
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            let objects: Vec<ObjectMeta> = inner.list(prefix.as_ref()).try_collect().await?;
            shared.keep(key, Answer::List(objects.clone()), generation);
            Ok::<_, object_store::Error>(futures::stream::iter(objects.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let key = Key::Level(prefix.cloned());
        let generation = match self.shared.recall(&key) {
            Ok(Answer::Level { prefixes, objects }) => {
                return Ok(ListResult { common_prefixes: prefixes, objects });
            }
            Ok(_) => unreachable!("a level key holds a level's listing"),
            Err(generation) => generation,
        };
        let listed = self.inner.list_with_delimiter(prefix).await?;
        let answer = Answer::Level { prefixes: listed.common_prefixes.clone(), objects: listed.objects.clone() };
        self.shared.keep(key, answer, generation);
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.shared.forget();
        let copied = self.inner.copy_opts(from, to, options).await;
        self.shared.forget();
        copied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutMode};

    const LONG: Duration = Duration::from_secs(3600);

    fn stores(interval: Duration) -> (Arc<InMemory>, RecentReads) {
        let inner = Arc::new(InMemory::new());
        (inner.clone(), RecentReads::new(inner, interval))
    }

    async fn names(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
        let mut listed: Vec<String> =
            store.list(Some(&Path::from(prefix))).map_ok(|meta| meta.location.to_string()).try_collect().await.unwrap();
        listed.sort();
        listed
    }

    async fn level(store: &dyn ObjectStore, prefix: &str) -> (Vec<String>, Vec<String>) {
        let listed = store.list_with_delimiter(Some(&Path::from(prefix))).await.unwrap();
        let prefixes = listed.common_prefixes.iter().map(ToString::to_string).collect();
        (prefixes, listed.objects.iter().map(|o| o.location.to_string()).collect())
    }

    async fn read(store: &dyn ObjectStore, path: &str) -> Option<Bytes> {
        match store.get(&Path::from(path)).await {
            Ok(got) => Some(got.bytes().await.unwrap()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn another_writers_changes_show_once_the_interval_has_passed() {
        let interval = Duration::from_secs(1);
        let (inner, store) = stores(interval);
        inner.put(&Path::from("ws/d/versions/1/version.json"), "v1".into()).await.unwrap();
        inner.put(&Path::from("ws/config.toml"), "a".into()).await.unwrap();
        assert_eq!(names(&store, "ws/d/versions").await, ["ws/d/versions/1/version.json"]);
        assert_eq!(level(&store, "ws/d/versions").await, (vec!["ws/d/versions/1".to_string()], vec![]));
        assert_eq!(read(&store, "ws/config.toml").await.unwrap(), "a");
        assert_eq!(read(&store, "ws/missing.json").await, None);
        let started = Instant::now();
        // Another process commits version 2, changes the config and writes the missing file.
        inner.put(&Path::from("ws/d/versions/2/version.json"), "v2".into()).await.unwrap();
        inner.put(&Path::from("ws/config.toml"), "b".into()).await.unwrap();
        inner.put(&Path::from("ws/missing.json"), "{}".into()).await.unwrap();
        let remembered = (
            names(&store, "ws/d/versions").await.len(),
            level(&store, "ws/d/versions").await.0.len(),
            read(&store, "ws/config.toml").await.unwrap(),
            read(&store, "ws/missing.json").await,
            store.head(&Path::from("ws/config.toml")).await.unwrap().size,
        );
        assert!(started.elapsed() < interval, "the box was too slow for this test's interval");
        assert_eq!(remembered, (1, 1, Bytes::from("a"), None, 1), "answered from memory within the interval");
        tokio::time::sleep(interval).await;
        assert_eq!(names(&store, "ws/d/versions").await.len(), 2);
        assert_eq!(level(&store, "ws/d/versions").await.0.len(), 2);
        assert_eq!(read(&store, "ws/config.toml").await.unwrap(), "b");
        assert_eq!(read(&store, "ws/missing.json").await.unwrap(), "{}");
    }

    #[tokio::test]
    async fn forgetting_makes_another_writers_commit_show_at_once() {
        let (inner, store) = stores(LONG);
        assert!(names(&store, "ws/d/versions").await.is_empty());
        assert_eq!(read(&store, "ws/config.toml").await, None);
        // Another process (a CLI ingest) commits; this one still answers what it had ...
        inner.put(&Path::from("ws/d/versions/1/version.json"), "v1".into()).await.unwrap();
        inner.put(&Path::from("ws/config.toml"), "a".into()).await.unwrap();
        assert!(names(&store, "ws/d/versions").await.is_empty());
        // ... until a write is about to be computed (a server's freeze), which forgets.
        store.forget();
        assert_eq!(names(&store, "ws/d/versions").await, ["ws/d/versions/1/version.json"]);
        assert_eq!(read(&store, "ws/config.toml").await.unwrap(), "a");
        assert_eq!(store.interval(), LONG);
    }

    #[tokio::test]
    async fn its_own_writes_show_at_once() {
        let (_, store) = stores(LONG);
        assert!(names(&store, "ws/runs").await.is_empty());
        assert_eq!(read(&store, "ws/runs/r/run.json").await, None);
        store.put(&Path::from("ws/runs/r/run.json"), "r".into()).await.unwrap();
        assert_eq!(names(&store, "ws/runs").await, ["ws/runs/r/run.json"]);
        assert_eq!(read(&store, "ws/runs/r/run.json").await.unwrap(), "r");
        store.copy(&Path::from("ws/runs/r/run.json"), &Path::from("ws/runs/s/run.json")).await.unwrap();
        assert_eq!(names(&store, "ws/runs").await.len(), 2);
        store.delete(&Path::from("ws/runs/r/run.json")).await.unwrap();
        assert_eq!(names(&store, "ws/runs").await, ["ws/runs/s/run.json"]);
        assert_eq!(read(&store, "ws/runs/r/run.json").await, None);
    }

    #[tokio::test]
    async fn a_failed_commit_forgets_so_the_retry_sees_the_winner() {
        let (inner, store) = stores(LONG);
        assert!(names(&store, "ws/d/versions").await.is_empty());
        inner.put(&Path::from("ws/d/versions/1/version.json"), "theirs".into()).await.unwrap();
        assert!(names(&store, "ws/d/versions").await.is_empty(), "remembered");
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        let lost = store.put_opts(&Path::from("ws/d/versions/1/version.json"), "ours".into(), create).await;
        assert!(matches!(lost, Err(object_store::Error::AlreadyExists { .. })), "{lost:?}");
        assert_eq!(names(&store, "ws/d/versions").await, ["ws/d/versions/1/version.json"]);
        assert_eq!(read(&store, "ws/d/versions/1/version.json").await.unwrap(), "theirs");
    }

    #[tokio::test]
    async fn ranged_conditional_large_and_content_keyed_reads_go_to_the_store() {
        let (inner, store) = stores(LONG);
        let (manifest, keyed, large) = (
            Path::from("ws/version.json"),
            Path::from("ws/images-0123456789abcdef.parquet"),
            Path::from("ws/runs/r/predictions.parquet"),
        );
        inner.put(&manifest, "0123456789".into()).await.unwrap();
        inner.put(&keyed, "old".into()).await.unwrap();
        inner.put(&large, vec![1u8; MAX_OBJECT_BYTES + 1].into()).await.unwrap();
        for path in [&manifest, &keyed, &large] {
            store.get(path).await.unwrap().bytes().await.unwrap();
        }
        inner.put(&manifest, "abcdefghij".into()).await.unwrap();
        // Content-keyed names never change in a workspace; here one does, to show it is read again.
        inner.put(&keyed, "new".into()).await.unwrap();
        inner.put(&large, vec![2u8; MAX_OBJECT_BYTES + 1].into()).await.unwrap();
        assert_eq!(store.get_range(&manifest, 2..4).await.unwrap(), "cd");
        let etag = inner.head(&manifest).await.unwrap().e_tag;
        let conditional = GetOptions { if_match: etag, ..Default::default() };
        assert_eq!(store.get_opts(&manifest, conditional).await.unwrap().bytes().await.unwrap(), "abcdefghij");
        assert_eq!(read(&store, keyed.as_ref()).await.unwrap(), "new");
        assert_eq!(read(&store, large.as_ref()).await.unwrap()[0], 2);
        assert_eq!(read(&store, manifest.as_ref()).await.unwrap(), "0123456789", "the whole read is remembered");
    }

    #[tokio::test]
    async fn what_is_remembered_stays_within_its_bounds() {
        let (inner, store) = stores(LONG);
        let object = Bytes::from(vec![7u8; MAX_OBJECT_BYTES]);
        let count = MAX_BYTES / MAX_OBJECT_BYTES + 6;
        for i in 0..count {
            let path = format!("ws/m{i}.json");
            inner.put(&Path::from(path.as_str()), object.clone().into()).await.unwrap();
            read(&store, &path).await.unwrap();
            // Read twice: a replaced answer's bytes are not counted twice.
            read(&store, &path).await.unwrap();
            let remembered = store.shared.remembered.lock().unwrap();
            let counted: usize = remembered.answers.values().map(|(_, answer)| answer.bytes()).sum();
            assert_eq!(remembered.bytes, counted);
            assert!(remembered.bytes <= MAX_BYTES, "{} bytes after {i} objects", remembered.bytes);
        }
        for i in 0..MAX_ENTRIES + 10 {
            names(&store, &format!("ws/dir{i}")).await;
            assert!(store.shared.remembered.lock().unwrap().answers.len() <= MAX_ENTRIES);
        }
    }

    #[test]
    fn the_interval_is_read_in_seconds_and_off_unless_positive() {
        assert_eq!(parse_interval(" 2.5 "), Some(Duration::from_millis(2500)));
        for off in ["0", "-1", "soon", "inf", ""] {
            assert_eq!(parse_interval(off), None, "{off}");
        }
    }
}
