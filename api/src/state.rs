//! What every handler shares: the engine, the limits, the token, and the query slots.

use std::future::Future;
use std::sync::Arc;

use slicetest_engine::Engine;
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};
use crate::images::ImageIndex;
use crate::{Limits, ServerConfig};

/// Shared state of the server (cheap to clone).
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    engine: Arc<Engine>,
    token: Option<String>,
    limits: Limits,
    queries: Semaphore,
    images: ImageIndex,
}

impl AppState {
    /// State over `engine` with `config`'s token and limits.
    pub fn new(engine: Engine, config: &ServerConfig) -> Self {
        let limits = config.limits.clone();
        AppState(Arc::new(Inner {
            engine: Arc::new(engine),
            token: config.token.clone(),
            queries: Semaphore::new(limits.concurrent_queries.max(1)),
            limits,
            images: ImageIndex::default(),
        }))
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.0.engine
    }

    /// The request bounds.
    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }

    /// The configured write token.
    pub(crate) fn token(&self) -> Option<&str> {
        self.0.token.as_deref()
    }

    pub(crate) fn images(&self) -> &ImageIndex {
        &self.0.images
    }

    /// Waits for one of the query slots (`Limits::concurrent_queries`).
    pub(crate) async fn query_slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.0.queries.acquire().await.expect("the semaphore is never closed")
    }

    /// An engine error as the client sees it: statuses mapped, the workspace path scrubbed.
    pub(crate) fn error(&self, error: slicetest_engine::EngineError) -> ApiError {
        ApiError::from_engine(error, self.0.engine.workspace().root())
    }

    /// Runs blocking engine work (scoring, search, writes that wait for the workspace
    /// lock) on the blocking pool, so a slow request never stalls the async workers.
    pub(crate) async fn blocking<T, F>(&self, work: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> slicetest_engine::Result<T> + Send + 'static,
    {
        let engine = self.0.engine.clone();
        match tokio::task::spawn_blocking(move || work(&engine)).await {
            Ok(result) => result.map_err(|e| self.error(e)),
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    /// Like [`AppState::blocking`], for the engine's async operations that take the
    /// workspace lock (a blocking `flock`): they run to completion on a blocking thread.
    pub(crate) async fn blocking_async<T, F, Fut>(&self, work: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Engine>) -> Fut + Send + 'static,
        Fut: Future<Output = slicetest_engine::Result<T>>,
    {
        let handle = tokio::runtime::Handle::current();
        let engine = self.0.engine.clone();
        self.blocking(move |_| handle.block_on(work(engine))).await
    }
}
