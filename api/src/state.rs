//! What every handler shares: the engine, the limits, the token, the query slots, and the
//! embedding jobs.

use std::future::Future;
use std::sync::Arc;

use slicetest_engine::{EmbedJobs, Engine};
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
    queries: Arc<Semaphore>,
    images: ImageIndex,
    jobs: EmbedJobs,
    clip_model: String,
    /// The workspace directory for commands the CLI should run: known on a loopback-only
    /// server (its users are on this machine); elsewhere a placeholder, so that the
    /// server's directory layout stays its own.
    cli_workspace: Option<String>,
    /// Bound to a loopback address: requests must name it (`Host`), not some other name.
    loopback_only: bool,
    /// Other names such a server answers to (a reverse proxy's), lower-case.
    allowed_hosts: Vec<String>,
}

impl AppState {
    /// State over `engine` with `config`'s token and limits. A server readies search
    /// indexes in the background ([`Engine::with_background_indexing`]).
    pub fn new(engine: Engine, config: &ServerConfig) -> Self {
        let engine = engine.with_background_indexing();
        let limits = config.limits.clone();
        let cli_workspace = config.host.is_loopback().then(|| engine.workspace().root().display().to_string());
        AppState(Arc::new(Inner {
            engine: Arc::new(engine),
            token: config.token.clone(),
            queries: Arc::new(Semaphore::new(limits.concurrent_queries.max(1))),
            limits,
            images: ImageIndex::default(),
            jobs: EmbedJobs::default(),
            clip_model: config.clip_model.clone(),
            cli_workspace,
            loopback_only: config.host.is_loopback(),
            allowed_hosts: config.allowed_hosts.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }))
    }

    /// The embedding jobs of this server.
    pub(crate) fn jobs(&self) -> &EmbedJobs {
        &self.0.jobs
    }

    /// Asks every unfinished embedding job to stop after its current batch (what it stored
    /// stays; the next job resumes there).
    pub fn cancel_jobs(&self) {
        self.0.jobs.cancel_all();
    }

    /// Loads every embedded set of `datasets` (empty: of every dataset) and starts
    /// readying its search index, on a thread of its own (`slicetest serve --warm`):
    /// searches made meanwhile wait for their set's load, as the first search of a cold
    /// server does. Failures are logged; searches then load what they need as usual.
    pub fn warm_search(&self, datasets: Vec<String>) {
        let engine = Arc::clone(&self.0.engine);
        let started = std::thread::Builder::new().name("warm-search".into()).spawn(move || {
            let started = std::time::Instant::now();
            match engine.warm_search(&datasets) {
                Ok(sets) => {
                    for (dataset, model, loaded) in sets {
                        match loaded {
                            Ok(vectors) => tracing::info!(%dataset, %model, vectors, "search vectors loaded"),
                            Err(e) => tracing::warn!(%dataset, %model, "search vectors not loaded: {e}"),
                        }
                    }
                    tracing::info!(seconds = started.elapsed().as_secs_f64(), "search warmed");
                }
                Err(e) => tracing::warn!("warming search: {e}"),
            }
        });
        if let Err(e) = started {
            tracing::warn!("could not start warming search: {e}");
        }
    }

    /// Stops the jobs ([`AppState::cancel_jobs`]) and the background builds of search
    /// indexes (what was saved stays): the server is shutting down.
    pub fn stop_background_work(&self) {
        self.cancel_jobs();
        self.0.engine.vectors().stop_background_indexing();
    }

    /// The model an embedding job uses when the request names none.
    pub(crate) fn clip_model(&self) -> &str {
        &self.0.clip_model
    }

    /// The CLI command that embeds `dataset` with the server's default model.
    pub(crate) fn embed_command(&self, dataset: &str) -> String {
        let workspace = self.0.cli_workspace.as_deref().map_or_else(|| "<workspace>".to_string(), shell_word);
        let mut command = format!("slicetest -w {workspace} embed {}", shell_word(dataset));
        if self.0.clip_model != slicetest_engine::DEFAULT_MODEL {
            command.push_str(&format!(" --model {}", shell_word(&self.0.clip_model)));
        }
        command
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.0.engine
    }

    /// The request bounds.
    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }

    /// Whether the server listens on a loopback address only (its `Host` is checked).
    pub(crate) fn loopback_only(&self) -> bool {
        self.0.loopback_only
    }

    /// The names besides loopback ones a loopback server answers to (`--allowed-host`).
    pub(crate) fn allowed_hosts(&self) -> &[String] {
        &self.0.allowed_hosts
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

    /// Like [`AppState::query_slot`], for work that runs on a blocking thread: the slot
    /// moves with the work and is freed when the work ends, even after the request has
    /// timed out and been answered.
    pub(crate) async fn owned_query_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.0.queries.clone().acquire_owned().await.expect("the semaphore is never closed")
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

/// `word` as one shell word: as it is when it is plain, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word.chars().all(|c| c.is_ascii_alphanumeric() || "_-./:@+,=".contains(c))
        && !word.starts_with('-');
    if plain { word.to_string() } else { format!("'{}'", word.replace('\'', "'\\''")) }
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("/home/me/ws"), "/home/me/ws");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
