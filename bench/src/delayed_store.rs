//! An in-memory object store that answers each request after a fixed delay: the round
//! trip of S3 across a network, without moto's CPU cost (which, on a 2-core box, makes
//! concurrent requests no faster than sequential ones). Counts the requests it answers.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

/// See the module docs.
#[derive(Debug, Default)]
pub struct DelayedStore {
    inner: Arc<InMemory>,
    delay_us: Arc<AtomicU64>,
    requests: Arc<AtomicUsize>,
}

impl DelayedStore {
    /// Each request from now on takes `delay` (zero while a workspace is being built).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_us.store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    async fn wait(delay_us: &AtomicU64, requests: &AtomicUsize) {
        requests.fetch_add(1, Ordering::Relaxed);
        let delay = delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
    }
}

impl fmt::Display for DelayedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DelayedStore({} µs)", self.delay_us.load(Ordering::Relaxed))
    }
}

#[async_trait]
impl ObjectStore for DelayedStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        Self::wait(&self.delay_us, &self.requests).await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        Self::wait(&self.delay_us, &self.requests).await;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        Self::wait(&self.delay_us, &self.requests).await;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let (inner, delay_us, requests) = (self.inner.clone(), self.delay_us.clone(), self.requests.clone());
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            Self::wait(&delay_us, &requests).await;
            Ok::<_, object_store::Error>(inner.list(prefix.as_ref()))
        })
        .try_flatten()
        .boxed()
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        Self::wait(&self.delay_us, &self.requests).await;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        Self::wait(&self.delay_us, &self.requests).await;
        self.inner.copy_opts(from, to, options).await
    }
}
