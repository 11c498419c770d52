//! The slicetest facade: one [`Engine`] per opened workspace. The CLI and the HTTP API
//! talk only to this crate: SQL, slices, runs and scoring, embedding and search, tagging,
//! slice discovery, and the errors they raise, each with its [`ErrorKind`].

pub mod bootstrap;
pub mod curation;
pub mod detection;
pub mod discovery;
pub mod embedding;
pub mod error;
pub mod images;
pub mod intake;
pub mod jobs;
pub mod metrics;
pub mod output;
pub mod query;
pub mod report_html;
pub mod scoring;
pub mod search;
pub mod segmentation;
pub mod slices;
pub mod statement;
pub mod tag_import;
pub mod tagging;

use std::path::Path;
use std::sync::Arc;

use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{DataFrame, SessionContext};
use slicetest_sql::vectors::VectorStore;

pub use curation::{DEFAULT_MIN_TEST_SAMPLES, SliceBreakdown};
pub use embedding::{EmbedOptions, EmbedProgress, EmbedReport, check_model_path};
pub use error::{EngineError, ErrorKind, Position, Result, kind_of};
pub use images::{ImageDetection, ImageFile, ImageFiles, ImageObject, ImagePrediction, ImageRunBoxes, SliceMembership};
pub use images::{open_image, read_image_bytes};
pub use intake::{IntakeEmbedding, IntakeOptions, IntakeReport, IntakeTagging, SliceChange};
pub use jobs::{EmbedJob, EmbedJobs, JobConflict, JobState, JobView};
pub use output::{OutputFormat, ResultWriter, write_stream};
pub use scoring::{BaselineChange, Check, DEFAULT_ALPHA, RunReport, SliceScore, Verdict};
pub use search::{SearchHit, SearchIndex, SearchQuery};
pub use segmentation::{MaskImportOptions, MaskImportReport};
pub use slices::SliceInfo;
pub use slicetest_datasets::DatasetError;
pub use slicetest_datasets::image_files::is_object_url;
pub use slicetest_datasets::names;
pub use slicetest_datasets::parts::Shard;
pub use slicetest_datasets::run::{RunManifest, Task, UploadOptions};
pub use slicetest_datasets::slice::{FreezeOutcome, FrozenSlice, SliceDefinition};
pub use slicetest_datasets::{
    DatasetInfo, DatasetSummary, DatasetVersion, ImportOptions, IngestOptions, IngestReport, KnownFiles, SourceFormat,
    Verify, Workspace,
};
pub use slicetest_embed::{DEFAULT_MODEL, EmbedError, decode_image};
pub use slicetest_sql::SqlError;
pub use statement::{SliceStatement, SliceThresholds};
pub use tag_import::{ImportKind, TagImportOptions};
pub use tagging::{
    ImageTagger, ImageTags, RunsByDefault, TagOptions, TagReport, TagValue, TaggerKind, TaggerRegistry, TaggerReport,
    TaggerSpec,
};

/// Default memory pool for query execution; operators that need more spill or fail with a clear error.
pub const DEFAULT_QUERY_MEMORY: usize = 4 << 30;

fn runtime_with_memory(bytes: usize) -> Result<Arc<RuntimeEnv>> {
    RuntimeEnvBuilder::new().with_memory_limit(bytes, 1.0).build_arc().map_err(|e| EngineError::query(e, None))
}

/// An opened workspace plus the runtime its queries execute in.
pub struct Engine {
    workspace: Workspace,
    runtime: Arc<RuntimeEnv>,
    /// Each query's own cap inside the shared pool (None: only the shared pool).
    per_query_memory: Option<usize>,
    /// The vectors, CLIP checkpoints and encoded sentences every session, search and the
    /// zero-shot tagger share: loaded once, not per query.
    vectors: Arc<VectorStore>,
    /// The taggers `tag` can run.
    taggers: tagging::TaggerRegistry,
    /// Detection runs matched against their ground truth, kept between requests.
    evaluations: Arc<detection::cache::Evaluations>,
    /// The Ballista scheduler (`df://HOST:PORT`) that executes this engine's SQL, if any.
    cluster: Option<String>,
}

impl Engine {
    /// Opens the workspace at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        Self::from_workspace(Workspace::open(root.as_ref())?)
    }

    /// Creates a new workspace at `root`.
    pub fn init(root: impl AsRef<Path>) -> Result<Self> {
        Self::from_workspace(Workspace::init(root.as_ref())?)
    }

    /// Opens the workspace at `root`, creating it if needed.
    pub fn open_or_init(root: impl AsRef<Path>) -> Result<Self> {
        Self::from_workspace(Workspace::open_or_init(root.as_ref())?)
    }

    /// An engine over an opened workspace (one in any [`slicetest_datasets::Storage`]).
    pub fn from_workspace(workspace: Workspace) -> Result<Self> {
        let vectors = Arc::new(VectorStore::new(workspace.layout().clone()));
        Ok(Self {
            workspace,
            runtime: runtime_with_memory(DEFAULT_QUERY_MEMORY)?,
            per_query_memory: None,
            vectors,
            taggers: tagging::TaggerRegistry::builtin(),
            evaluations: Arc::default(),
            cluster: None,
        })
    }

    /// Runs this engine's SQL on the Ballista cluster whose scheduler is at `url`
    /// (`df://HOST:PORT`): queries are planned here, with the same catalog, functions and
    /// read-only rules, and executed there. Every process of the cluster must see the
    /// workspace at the same path. Checked when the first session is built: a scheduler
    /// that cannot be reached is an error naming its address.
    pub fn with_cluster(mut self, url: impl Into<String>) -> Result<Self> {
        let url = url.into();
        if !cfg!(feature = "ballista") {
            return Err(EngineError::InvalidArgument(format!(
                "cannot run SQL on the cluster {url}: this slicetest was built without the `ballista` feature"
            )));
        }
        #[cfg(feature = "ballista")]
        slicetest_cluster::scheduler_address(&url)?;
        self.cluster = Some(url);
        Ok(self)
    }

    /// Caps the memory all running queries of this engine share at `bytes` together
    /// (default [`DEFAULT_QUERY_MEMORY`]); a query that needs more fails with
    /// "Resources exhausted" instead of taking the machine's memory.
    pub fn with_query_memory(mut self, bytes: usize) -> Result<Self> {
        self.runtime = runtime_with_memory(bytes)?;
        Ok(self)
    }

    /// Also caps each query at `bytes` of the shared pool, so one query cannot starve the
    /// others (the HTTP server sets this; the CLI runs one query at a time). On a cluster
    /// the cap holds on each executor, and a query whose result is dropped (a request past
    /// its time limit) is cancelled there.
    pub fn with_per_query_memory(mut self, bytes: usize) -> Self {
        self.per_query_memory = Some(bytes);
        self
    }

    /// The runtime a new query runs in: the engine's, or a copy whose pool is the query's
    /// own allowance inside the engine's pool.
    fn query_runtime(&self) -> Arc<RuntimeEnv> {
        match self.per_query_memory {
            None => self.runtime.clone(),
            Some(limit) => {
                let mut runtime = (*self.runtime).clone();
                runtime.memory_pool =
                    Arc::new(slicetest_sql::memory::QueryMemoryPool::new(self.runtime.memory_pool.clone(), limit));
                Arc::new(runtime)
            }
        }
    }

    /// The taggers [`Engine::tag`] can run.
    pub fn tagger_registry(&self) -> &tagging::TaggerRegistry {
        &self.taggers
    }

    /// Adds a tagger (see [`tagging`]): from then on `tag` runs it by name, and by default
    /// when its [`TaggerSpec::by_default`] says so.
    pub fn register_tagger(&mut self, spec: TaggerSpec) -> Result<()> {
        self.taggers.register(spec)
    }

    /// For a long-lived process (the server): a search that finds a dataset's HNSW index
    /// missing readies it on a thread of its own and scans exactly meanwhile (see
    /// [`VectorStore::with_background_indexing`]). Call it before the first query.
    pub fn with_background_indexing(mut self) -> Self {
        self.vectors = Arc::new(VectorStore::new(self.workspace.layout().clone()).with_background_indexing());
        self
    }

    /// The vector store every session, search and the zero-shot tagger of this engine share.
    pub fn vectors(&self) -> &Arc<VectorStore> {
        &self.vectors
    }

    /// The underlying workspace.
    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    /// Ingests `path` (see [`slicetest_datasets::ingest`]). A COCO file whose annotations
    /// have segmentations also becomes a mask set named after the file, with its
    /// `<class>_pct` and `num_<class>_regions` columns (see [`Engine::import_masks`]); its
    /// segmentations are checked before anything is ingested.
    pub async fn ingest(&mut self, path: &Path, options: &IngestOptions) -> Result<IngestReport> {
        Ok(self.ingest_with_masks(path, options).await?.0)
    }

    /// [`Engine::ingest`], with the report of the mask set made from a COCO file's
    /// segmentations, if any.
    pub async fn ingest_with_masks(
        &mut self,
        path: &Path,
        options: &IngestOptions,
    ) -> Result<(IngestReport, Option<MaskImportReport>)> {
        let coco = options.format == slicetest_datasets::SourceFormat::Coco
            || (options.format == slicetest_datasets::SourceFormat::Auto
                && path.is_file()
                && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")));
        let checked =
            if coco { segmentation::import::check_coco_segmentations(self, path, &options.dataset)? } else { None };
        // The segmentations must fit the image files, whose sizes are known once the ingest
        // has read them: checked then, before it writes anything.
        let fit = |images: &[slicetest_datasets::AcceptedImage]| match &checked {
            Some((instances, _)) => segmentation::import::check_coco_sizes(instances, images),
            None => Ok(()),
        };
        let report = slicetest_datasets::ingest_checked(&mut self.workspace, path, options, &fit).await?;
        let mut masks = None;
        if let Some((instances, ignore_index)) = checked {
            let options = segmentation::MaskImportOptions {
                dataset: Some(report.dataset.clone()),
                ignore_index: Some(ignore_index),
                skip_unmatched: true,
                ..Default::default()
            };
            masks = Some(self.import_mask_set(path, None, Some(instances), &options)?);
        }
        Ok((report, masks))
    }

    /// Makes `dataset` the default schema for unqualified table names.
    pub fn use_dataset(&mut self, dataset: &str) -> Result<()> {
        Ok(self.workspace.set_default_dataset(dataset)?)
    }

    /// A fresh SQL session over the current versions of every dataset.
    pub async fn context(&self) -> Result<SessionContext> {
        self.dataset_context(self.workspace.config().default_dataset.as_deref()).await
    }

    /// Like [`Engine::context`], with `dataset` as the default schema (a slice's query runs
    /// against the dataset it was defined on).
    pub(crate) async fn dataset_context(&self, dataset: Option<&str>) -> Result<SessionContext> {
        let ctx = slicetest_sql::dataset_context(&self.workspace, self.query_runtime(), dataset, self.vectors.clone())
            .await?;
        // Discovery and detection matching live in the engine (they read runs and score
        // them), so their table functions are registered here rather than with the sql
        // crate's functions.
        let discover = discovery::table_function::DiscoverSlicesFunction::new(self.workspace.root().to_path_buf());
        ctx.register_udtf("discover_slices", Arc::new(discover));
        let matches = detection::table_function::DetectionMatchesFunction::new(
            self.workspace.root().to_path_buf(),
            self.evaluations.clone(),
        );
        ctx.register_udtf("detection_matches", Arc::new(matches));
        #[cfg(feature = "ballista")]
        if let Some(url) = &self.cluster {
            // Per-query limits are a server's: there, a request that gives up cancels its job.
            let limits = slicetest_cluster::QueryLimits {
                memory: self.per_query_memory,
                cancel_dropped: self.per_query_memory.is_some(),
            };
            return Ok(slicetest_cluster::remote_context(url, &ctx, limits).await?);
        }
        Ok(ctx)
    }

    /// Plans a read-only query.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        query::plan(&self.context().await?, sql).await
    }

    /// Like [`Engine::sql`], with unqualified table names (`images`, `embeddings`, …) and
    /// the search functions reading `dataset` instead of the default dataset (None: the
    /// default), as a slice's or a discovered slice's query on that dataset reads.
    pub async fn sql_in(&self, dataset: Option<&str>, sql: &str) -> Result<DataFrame> {
        let Some(dataset) = dataset else { return self.sql(sql).await };
        self.workspace.latest(dataset)?;
        query::plan(&self.dataset_context(Some(dataset)).await?, sql).await
    }

    /// Runs any statement the CLI accepts: a slice statement (see [`statement`]) or a
    /// read-only query. The HTTP API uses [`Engine::sql_stream`] instead, which refuses writes.
    pub async fn execute(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        match statement::parse(sql) {
            Some(parsed) => {
                let batch = self.run_slice_statement(parsed?).await?;
                let schema = batch.schema();
                let stream = futures::stream::iter([Ok(batch)]);
                Ok(Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, stream)))
            }
            None => self.sql_stream(sql).await,
        }
    }

    /// Runs a read-only query and streams its batches.
    pub async fn sql_stream(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        query::stream(&self.context().await?, sql).await
    }

    /// All datasets, sorted by name: each one's latest version and version count.
    pub fn datasets(&self) -> Result<Vec<DatasetSummary>> {
        Ok(self.workspace.summaries()?)
    }

    /// One version of a dataset (the latest when `version` is None).
    pub fn describe(&self, dataset: &str, version: Option<u64>) -> Result<DatasetVersion> {
        let info = self.workspace.dataset(dataset)?;
        let latest = info.latest().expect("a listed dataset has a version").version;
        match version {
            None => Ok(info.latest().cloned().expect("non-empty")),
            Some(v) => info.versions.into_iter().find(|d| d.version == v).ok_or_else(|| {
                slicetest_datasets::DatasetError::UnknownVersion { dataset: dataset.to_string(), version: v, latest }
                    .into()
            }),
        }
    }
}
