//! What a query brings to the processes that run it: the object stores its files are in,
//! and the memory it may use.
//!
//! The client puts [`ClusterOptions`] in the session config Ballista ships with every job
//! (the scheduler's address, and the per-query memory limit of a server); the scheduler
//! and the executors build each session's runtime from it ([`session_builder`],
//! [`RuntimeFactory`]). Both resolve `s3://bucket` URLs themselves ([`BucketStores`]),
//! with the same `AWS_*` settings and local cache of content-keyed files as every other
//! slicetest command, so a workspace in a bucket needs nothing but those variables on
//! each process.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use ballista::prelude::SessionConfigExt;
use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool, UnboundedMemoryPool};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::SessionConfig;
use object_store::ObjectStore;
use slicetest_sql::memory::QueryMemoryPool;
use url::Url;

/// slicetest's settings of a query run on a cluster: keys `slicetest.*` of the session
/// config, which Ballista sends with each job to the scheduler and on to the executors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterOptions {
    /// `df://HOST:PORT` of the scheduler the client sent the job to (the client cancels
    /// the job there when it stops reading).
    pub scheduler: String,
    /// Bytes one query may hold on each executor (0: only the executor's own limit).
    pub query_memory_limit: usize,
    /// Whether the client cancels the job when its result is dropped before the end.
    pub cancel_dropped: bool,
}

impl ConfigExtension for ClusterOptions {
    const PREFIX: &'static str = "slicetest";
}

// By hand rather than with `extensions_options!`: the macro's entries leave out the
// prefix, so the settings Ballista sends by their entries would be dropped on arrival.
impl ExtensionOptions for ClusterOptions {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "scheduler" => self.scheduler = value.to_string(),
            "query_memory_limit" => {
                self.query_memory_limit = value.parse().map_err(|e| {
                    DataFusionError::Configuration(format!("slicetest.query_memory_limit {value:?}: {e}"))
                })?
            }
            "cancel_dropped" => {
                self.cancel_dropped = value
                    .parse()
                    .map_err(|e| DataFusionError::Configuration(format!("slicetest.cancel_dropped {value:?}: {e}")))?
            }
            _ => return Err(DataFusionError::Configuration(format!("no setting slicetest.{key}"))),
        }
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        vec![
            ConfigEntry {
                key: format!("{}.scheduler", Self::PREFIX),
                value: Some(self.scheduler.clone()),
                description: "the scheduler a cluster query was sent to",
            },
            ConfigEntry {
                key: format!("{}.query_memory_limit", Self::PREFIX),
                value: Some(self.query_memory_limit.to_string()),
                description: "bytes one query may hold on each executor (0: no limit of its own)",
            },
            ConfigEntry {
                key: format!("{}.cancel_dropped", Self::PREFIX),
                value: Some(self.cancel_dropped.to_string()),
                description: "whether the client cancels a job whose result it stops reading",
            },
        ]
    }
}

impl ClusterOptions {
    /// The options in `config`, if it has them.
    pub fn of(config: &SessionConfig) -> Option<&ClusterOptions> {
        config.options().extensions.get::<ClusterOptions>()
    }
}

/// The session config of a scheduler or executor: Ballista's, able to read the
/// `slicetest.*` keys a client sends (unknown keys are dropped).
pub fn config_producer() -> SessionConfig {
    SessionConfig::new_with_ballista().with_option_extension(ClusterOptions::default())
}

/// Opens the object stores of `s3://` URLs on first use (the AWS_* variables say how),
/// and is DataFusion's default registry for everything else (`file://`).
#[derive(Default)]
pub struct BucketStores {
    known: DefaultObjectStoreRegistry,
}

impl fmt::Debug for BucketStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BucketStores({:?})", self.known)
    }
}

impl ObjectStoreRegistry for BucketStores {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.known.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.known.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        match self.known.get_store(url) {
            Ok(store) => return Ok(store),
            Err(e) if !matches!(url.scheme(), "s3" | "s3a") => return Err(e),
            Err(_) => {}
        }
        let bucket = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
        let storage = slicetest_datasets::Storage::open(std::path::Path::new(&bucket))
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let store = storage.object_store().expect("an s3:// URL opens an object store").clone();
        // Under this URL's own scheme and bucket: an s3a:// URL finds it next time too.
        self.known.register_store(url, store.clone());
        Ok(store)
    }
}

/// A scheduler's session: Ballista's default, with [`BucketStores`].
pub fn session_builder(stores: Arc<BucketStores>) -> impl Fn(SessionConfig) -> Result<SessionState> + Send + Sync {
    move |config| {
        let state = ballista_core::utils::default_session_builder(config)?;
        let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
            .with_object_store_registry(stores.clone())
            .build_arc()?;
        // The functions that can make far more than they are given are bounded here as in
        // the client's session (`slicetest_sql::output_bound`).
        let functions = (state.scalar_functions().values())
            .map(|f| slicetest_sql::output_bound::bounded(f).map_or_else(|| f.clone(), Arc::new))
            .chain(slicetest_sql::output_bound::operator_functions().into_iter().map(Arc::new))
            .collect::<Vec<_>>();
        Ok(datafusion::execution::SessionStateBuilder::new_from_existing(state)
            .with_runtime_env(runtime)
            .with_scalar_functions(functions)
            .build())
    }
}

/// Builds the runtime of each query's tasks on an executor: the executor's object stores
/// and disk, and a memory pool of the query's own (its `query_memory_limit`) inside the
/// executor's (`--memory-mb`), shared by all the query's tasks on this executor.
pub struct RuntimeFactory {
    stores: Arc<BucketStores>,
    executor_pool: Arc<dyn MemoryPool>,
    work_dir: Option<String>,
}

impl RuntimeFactory {
    /// Runtimes drawing on `memory_limit` bytes in all (None: no limit of the executor's).
    pub fn new(memory_limit: Option<u64>, work_dir: Option<String>) -> Self {
        let executor_pool: Arc<dyn MemoryPool> = match memory_limit {
            Some(bytes) => Arc::new(FairSpillPool::new(usize::try_from(bytes).unwrap_or(usize::MAX))),
            None => Arc::new(UnboundedMemoryPool::default()),
        };
        RuntimeFactory { stores: Arc::default(), executor_pool, work_dir }
    }

    /// The runtime of a session whose config is `config`.
    pub fn runtime(&self, config: &SessionConfig) -> Result<Arc<RuntimeEnv>> {
        let limit = ClusterOptions::of(config).map(|o| o.query_memory_limit).filter(|&l| l > 0);
        let pool: Arc<dyn MemoryPool> = match limit {
            Some(limit) => Arc::new(QueryMemoryPool::new(self.executor_pool.clone(), limit)),
            None => self.executor_pool.clone(),
        };
        let mut builder =
            RuntimeEnvBuilder::new().with_object_store_registry(self.stores.clone()).with_memory_pool(pool);
        if let Some(dir) = &self.work_dir {
            builder = builder.with_temp_file_path(dir);
        }
        builder.build_arc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_arrive_by_their_entries_as_ballista_sends_them() {
        let sent = ClusterOptions {
            scheduler: "df://10.0.0.1:50050".into(),
            query_memory_limit: 64 << 20,
            cancel_dropped: true,
        };
        let entries = SessionConfig::new().with_option_extension(sent.clone()).options().entries();
        let mut received = config_producer();
        for entry in entries.iter().filter(|e| e.key.starts_with("slicetest.")) {
            received.options_mut().set(&entry.key, entry.value.as_deref().unwrap_or_default()).expect("a known key");
        }
        assert_eq!(ClusterOptions::of(&received), Some(&sent));
        assert!(received.options_mut().set("slicetest.nothing", "1").is_err());
    }
}
