//! The SQL view of a workspace: catalog `slicetest`, one schema per dataset, and in
//! each schema the tables of that dataset (`images` with every tag column, `embeddings`,
//! `detections`, the segmentation masks' class statistics `masks`, the segmentation
//! runs' per-image class scores `segmentation_scores`, the ground-truth boxes `objects` and the detection runs' boxes
//! `predicted_objects`), plus the slice and search functions.
//!
//! Tables are DataFusion `ListingTable`s over the dataset's Parquet files (in a
//! [`SubstringPruningTable`], which also skips row groups by substring filters), pinned to
//! the version that was latest when the session was built: a query never sees half of
//! a concurrent ingest, and projection/filter pushdown and statistics come for free.
//! Keeping access behind `TableProvider`s is what lets the same SQL run on Ballista
//! over object storage later.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Column, Result as DfResult};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown, TableType};
use datafusion::logical_expr::{JoinType, ScalarUDF, cast};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext, col, ident, lit};
use slicetest_datasets::version::DatasetVersion;
use slicetest_datasets::{Workspace, WorkspaceLayout};
use slicetest_datasets::{embeddings, masks, objects, run, tags};

use crate::error::Result;
use crate::first_copy::FirstCopyTable;
use crate::slices::{InSliceFunction, SliceTableFunction};
use crate::substring_pruning::SubstringPruningTable;
use crate::vectors::{
    ClipSimilarityFunction, CosineSimilarityFunction, ImageSearchFunction, TextSearchFunction, VectorCatalog,
    VectorStore,
};

/// Name of the catalog that holds one schema per dataset.
pub const CATALOG: &str = "slicetest";
/// Schema used as the default when the workspace has no dataset yet.
pub const EMPTY_SCHEMA: &str = "public";
/// Name of the per-dataset image table.
pub const IMAGES_TABLE: &str = "images";
/// The table of stored vectors in each dataset's schema (when something is embedded).
pub const EMBEDDINGS_TABLE: &str = "embeddings";
/// The table of boxes found by taggers (when a tagger found any).
pub const DETECTIONS_TABLE: &str = "detections";
/// The table of ground-truth boxes (when an import carried any).
pub const OBJECTS_TABLE: &str = "objects";
/// The per-class pixel statistics of imported segmentation masks (when there are any).
pub const MASKS_TABLE: &str = "masks";
/// Per image and class, the pixels segmentation runs got right and wrong (when there is one).
pub const SEGMENTATION_SCORES_TABLE: &str = "segmentation_scores";
/// The table of boxes uploaded by detection runs (when there is one).
pub const PREDICTED_OBJECTS_TABLE: &str = "predicted_objects";

/// Session settings for a workspace: catalog `slicetest`, the default dataset as default schema.
pub fn session_config(workspace: &Workspace) -> SessionConfig {
    dataset_config(workspace.config().default_dataset.as_deref())
}

/// DataFusion's own settings can be tuned with `DATAFUSION_*` environment variables
/// (e.g. `DATAFUSION_EXECUTION_TARGET_PARTITIONS=4`); a malformed one is ignored with a warning.
fn dataset_config(default_dataset: Option<&str>) -> SessionConfig {
    let default_schema = default_dataset.unwrap_or(EMPTY_SCHEMA).to_string();
    let mut base = SessionConfig::from_env().unwrap_or_else(|e| {
        tracing::warn!("ignoring DATAFUSION_* environment settings: {e}");
        SessionConfig::new()
    });
    // Plans remember where each column was named, so a planning error can point at it
    // (`EngineError::position`: the UI marks it, the API answers it).
    base.options_mut().sql_parser.collect_spans = true;
    base.with_default_catalog_and_schema(CATALOG, default_schema)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true)
}

/// A SessionContext over `workspace` with the given runtime (memory limits live there);
/// the vector functions read through `vectors` (the engine's store, shared by sessions).
pub async fn workspace_context(
    workspace: &Workspace,
    runtime: Arc<RuntimeEnv>,
    vectors: Arc<VectorStore>,
) -> Result<SessionContext> {
    dataset_context(workspace, runtime, workspace.config().default_dataset.as_deref(), vectors).await
}

/// Like [`workspace_context`], with `dataset` as the default schema (a slice's query runs
/// against the dataset it was defined on, whatever the workspace default is now).
pub async fn dataset_context(
    workspace: &Workspace,
    runtime: Arc<RuntimeEnv>,
    dataset: Option<&str>,
    vectors: Arc<VectorStore>,
) -> Result<SessionContext> {
    let state = SessionStateBuilder::new()
        .with_config(dataset_config(dataset))
        .with_runtime_env(runtime)
        .with_default_features()
        .with_optimizer_rule(Arc::new(crate::case_keys::GroupOnCaseBranchNumbers))
        .with_physical_optimizer_rule(Arc::new(crate::short_strings::CompareShortStringViews))
        .build();
    let ctx = SessionContext::new_with_state(state);
    let registered = register_workspace(&ctx, workspace).await?;
    // The version the session's tables read and the models listed for them, not read
    // again a moment later.
    let catalog = match dataset.and_then(|name| registered.into_iter().find(|(version, _)| version.dataset == name)) {
        Some((version, models)) => VectorCatalog::new(vectors, Some(version)).with_models(models),
        None => VectorCatalog::new(vectors, None),
    };
    register_functions(&ctx, workspace.layout(), Arc::new(catalog));
    Ok(ctx)
}

/// Registers slicetest's SQL functions on `ctx`: the one place to add one (the engine adds
/// `discover_slices`, which runs the engine, in `Engine::dataset_context`).
pub fn register_functions(ctx: &SessionContext, layout: &WorkspaceLayout, vectors: Arc<VectorCatalog>) {
    ctx.register_udtf("slice", Arc::new(SliceTableFunction::new(layout.clone())));
    ctx.register_udf(ScalarUDF::from(InSliceFunction::new(layout.clone())));
    ctx.register_udtf("text_search", Arc::new(TextSearchFunction(vectors.clone())));
    ctx.register_udtf("image_search", Arc::new(ImageSearchFunction(vectors.clone())));
    ctx.register_udf(ScalarUDF::from(ClipSimilarityFunction::new(vectors)));
    ctx.register_udf(ScalarUDF::from(CosineSimilarityFunction::default()));
    ctx.register_udf(ScalarUDF::from(crate::case_keys::CaseBranchFunction::default()));
    crate::output_bound::bound_function_outputs(ctx);
}

/// Registers catalog `slicetest` with a schema per dataset of `workspace`; returns each
/// dataset's latest version (the one its schema reads) with its embedding models.
pub async fn register_workspace(
    ctx: &SessionContext,
    workspace: &Workspace,
) -> Result<Vec<(DatasetVersion, Vec<embeddings::StoredModel>)>> {
    workspace.layout().storage().register(ctx);
    let catalog = Arc::new(MemoryCatalogProvider::new());
    catalog.register_schema(EMPTY_SCHEMA, Arc::new(MemorySchemaProvider::new()))?;
    let storage = workspace.layout().storage();
    // Every run's manifest (for the tables of detection and segmentation runs) beside the
    // datasets; each dataset's files listed while its latest version is found (on a
    // bucket, all at once: see `dataset_files`).
    let (listed, runs) = storage.join(
        || workspace.latest_versions_with(|dataset| dataset_files(workspace, dataset)),
        || run::read_runs(workspace),
    );
    let (listed, runs) = (listed?, runs?);
    let mut registered = Vec::with_capacity(listed.len());
    for (latest, files) in listed {
        let DatasetFiles { taggers, wide_files, embeddings, mask_sets } = files?;
        let schema = Arc::new(MemorySchemaProvider::new());
        let images = images_table(ctx, workspace, &latest).await?;
        // Materialised (`slicetest tag`, `tag compact`) for this version and these tags:
        // one file, no join; else the join.
        let wide = tags::wide_images_file(workspace.layout(), &latest, &taggers);
        let materialised = !taggers.is_empty()
            && wide.file_name().is_some_and(|name| wide_files.iter().any(|listed| name == listed.as_str()));
        let tagged = match materialised {
            true => parquet_files(ctx, &[wide]).await?,
            false => tagged_images(ctx, &taggers, images.clone()).await?,
        };
        schema.register_table(IMAGES_TABLE.to_string(), tagged)?;
        if let Some(embeddings) = embeddings_table(ctx, &embeddings, images.clone()).await? {
            schema.register_table(EMBEDDINGS_TABLE.to_string(), embeddings)?;
        }
        if let Some(detections) = detections_table(ctx, &taggers, images.clone()).await? {
            schema.register_table(DETECTIONS_TABLE.to_string(), detections)?;
        }
        if let Some(masks) = masks_table(ctx, workspace.layout(), &mask_sets, images).await? {
            schema.register_table(MASKS_TABLE.to_string(), masks)?;
        }
        if let Some(file) = objects::objects_file(workspace.layout(), &latest) {
            schema.register_table(OBJECTS_TABLE.to_string(), parquet_files(ctx, &[file]).await?)?;
        }
        let files = run_files(workspace, &runs, &latest.dataset, run::Task::Detection);
        if !files.is_empty() {
            schema.register_table(PREDICTED_OBJECTS_TABLE.to_string(), parquet_files(ctx, &files).await?)?;
        }
        let files = run_files(workspace, &runs, &latest.dataset, run::Task::Segmentation);
        if !files.is_empty() {
            schema.register_table(SEGMENTATION_SCORES_TABLE.to_string(), parquet_files(ctx, &files).await?)?;
        }
        catalog.register_schema(&latest.dataset, schema)?;
        registered.push((latest, embeddings));
    }
    ctx.register_catalog(CATALOG, catalog);
    Ok(registered)
}

/// Where a dataset's tables are, as listed in storage: its taggers' parts, the names in
/// its `wide/` (a materialised `images`, if one is written for the current key), each
/// embedding model's parts (none yet for a model whose first part is still being
/// written), its mask sets.
struct DatasetFiles {
    taggers: Vec<(String, tags::VisibleParts)>,
    wide_files: Vec<String>,
    embeddings: Vec<embeddings::StoredModel>,
    mask_sets: Vec<masks::MaskSetManifest>,
}

/// Lists `dataset`'s [`DatasetFiles`]. On a bucket, everything at once: the taggers (one
/// listing of all their tags, one of all their boxes), `wide/`, the embeddings (one
/// listing of every model and its parts) and the mask sets (then their manifests); two
/// round trips, which run beside the two that find the dataset's latest version
/// ([`Workspace::latest_versions_with`]). One after another, these chains of listings
/// were most of a session's set-up.
fn dataset_files(workspace: &Workspace, dataset: &str) -> Result<DatasetFiles> {
    let layout = workspace.layout();
    let storage = layout.storage();
    let tagged = || {
        storage.join(|| tags::stored_taggers(layout, dataset), || storage.list(&tags::wide_images_dir(layout, dataset)))
    };
    let embedded = || embeddings::stored_models(layout, dataset);
    let masked = || -> slicetest_datasets::Result<Vec<masks::MaskSetManifest>> {
        let sources = masks::mask_sources(layout, dataset)?;
        storage.each(&sources, |source| masks::read_mask_set(layout, dataset, source)).into_iter().collect()
    };
    let (((taggers, wide_files), embeddings), mask_sets) = storage.join(|| storage.join(tagged, embedded), masked);
    Ok(DatasetFiles { taggers: taggers?, wide_files: wide_files?, embeddings: embeddings?, mask_sets: mask_sets? })
}

/// The predictions files of every run in `runs` of `task` uploaded for `dataset` (each row
/// names its run): detection runs' boxes, segmentation runs' per-image, per-class scores.
fn run_files(
    workspace: &Workspace,
    runs: &[run::RunManifest],
    dataset: &str,
    task: run::Task,
) -> Vec<std::path::PathBuf> {
    runs.iter()
        .filter(|manifest| manifest.dataset == dataset && manifest.task == task)
        .map(|manifest| run::run_file(workspace.layout(), manifest, run::predictions_file(manifest.task)))
        .collect()
}

pub(crate) async fn images_table(
    ctx: &SessionContext,
    workspace: &Workspace,
    version: &DatasetVersion,
) -> Result<Arc<dyn TableProvider>> {
    parquet_files(ctx, &[workspace.layout().images_file(version)]).await
}

/// One table over Parquet files of one schema (read from the first file's footer).
async fn parquet_files(ctx: &SessionContext, paths: &[std::path::PathBuf]) -> Result<Arc<dyn TableProvider>> {
    let (urls, schema) = parquet_urls(ctx, paths).await?;
    Ok(Arc::new(SubstringPruningTable::try_new(urls, schema)?))
}

/// The URLs of Parquet files `paths` and the schema of the first.
async fn parquet_urls(ctx: &SessionContext, paths: &[PathBuf]) -> Result<(Vec<ListingTableUrl>, SchemaRef)> {
    let urls = paths.iter().map(|p| ListingTableUrl::parse(p.to_string_lossy())).collect::<Result<Vec<_>, _>>()?;
    let schema = SubstringPruningTable::options().infer_schema(&ctx.state(), &urls[0]).await?;
    Ok((urls, schema))
}

/// Parts of embeddings or boxes (in read order) as one table in which each (image_id,
/// sha256) has the rows of the first part that has it: where two writers processed an
/// image at once, the first part's copy, as the vector store reads it (see
/// [`FirstCopyTable`]). One part has one copy of each image.
async fn first_copies(ctx: &SessionContext, parts: &[PathBuf]) -> Result<Arc<dyn TableProvider>> {
    if parts.len() == 1 {
        return parquet_files(ctx, parts).await;
    }
    let (urls, schema) = parquet_urls(ctx, parts).await?;
    Ok(Arc::new(FirstCopyTable::try_new(urls, schema, &["image_id", "sha256"])?))
}

async fn parquet_table(ctx: &SessionContext, path: &std::path::Path) -> Result<DataFrame> {
    Ok(ctx.read_table(parquet_files(ctx, &[path.to_path_buf()]).await?)?)
}

/// image_id and sha256 of the images as they are now, renamed so that a stored table's
/// (image_id, sha256) can be joined to them: see [`only_current`].
fn current_keys(ctx: &SessionContext, images: Arc<dyn TableProvider>) -> Result<DataFrame> {
    Ok(ctx.read_table(images)?.select(vec![col("image_id").alias("current_id"), col("sha256").alias("current_sha")])?)
}

/// The rows of `stored` whose (image_id, sha256) is an image as it is now.
///
/// The current keys are the join's left input, the side a hash join builds its table
/// from unless statistics say the other side is smaller: with equal row counts (one
/// embedding part of every image, whose exact statistics DataFusion reads) the join
/// keeps the order it was given, and a table of every vector as the build side read all
/// vectors 1.5–2× slower than the ids and hashes do.
fn only_current(stored: DataFrame, current: &DataFrame) -> Result<DataFrame> {
    Ok(current.clone().join(stored, JoinType::Inner, &["current_id", "current_sha"], &["image_id", "sha256"], None)?)
}

/// The union of `frames` as a view; None for no frames.
fn union_view(frames: Vec<DataFrame>) -> Result<Option<Arc<dyn TableProvider>>> {
    let mut union: Option<DataFrame> = None;
    for df in frames {
        union = Some(match union {
            None => df,
            Some(u) => u.union(df)?,
        });
    }
    Ok(union.map(|df| df.into_view()))
}

/// `images` with every tagger's columns: the version's image table left-joined to each
/// tagger's rows (in tagger name order) on image_id and the image's current sha256, so a
/// tag computed from an older content of the image reads as NULL. Without tags it is the
/// plain Parquet table (nothing to join, full pushdown); with tags, a [`TaggedImages`]
/// that joins only the taggers a query reads.
pub(crate) async fn tagged_images(
    ctx: &SessionContext,
    taggers: &[(String, tags::VisibleParts)],
    images: Arc<dyn TableProvider>,
) -> Result<Arc<dyn TableProvider>> {
    if taggers.is_empty() {
        return Ok(images);
    }
    let mut fields: Vec<FieldRef> = images.schema().fields().iter().cloned().collect();
    let mut joins = Vec::new();
    for (_, parts) in taggers {
        let table = tag_rows(ctx, parts).await?;
        let existing: HashSet<String> = fields.iter().map(|f| f.name().clone()).collect();
        // Writers refuse clashing names; a file copied in by hand could still clash, and
        // then the earlier column wins rather than the whole dataset becoming unqueryable.
        let columns: Vec<FieldRef> = (table.schema().fields().iter().skip(tags::KEY_COLUMNS.len()))
            .filter(|f| !existing.contains(f.name()))
            .map(|f| Arc::new(f.as_ref().clone().with_nullable(true)))
            .collect();
        let mut select = vec![col("image_id").alias(TAG_ID), col("sha256").alias(TAG_SHA)];
        select.extend(columns.iter().map(|f| ident(f.name())));
        let rows = table.select(select)?.into_unoptimized_plan();
        fields.extend(columns.iter().cloned());
        joins.push(TaggerJoin { rows, columns: columns.iter().map(|f| f.name().clone()).collect() });
    }
    let schema = Arc::new(Schema::new(fields));
    Ok(Arc::new(TaggedImages { images, joins, schema }))
}

/// The renamed keys of a tagger's rows while they are joined.
const TAG_ID: &str = "__tag_image_id";
const TAG_SHA: &str = "__tag_sha256";

/// The `images` table of a tagged dataset. A view of all the joins would make every query
/// pay for every tagger (an outer join is never dropped by the optimiser: it cannot know
/// the tag rows are unique); this provider joins, for each scan, only the taggers whose
/// columns the query projects or filters on, so a query on the dataset's own columns reads
/// the Parquet table alone with full pushdown.
#[derive(Debug)]
pub struct TaggedImages {
    images: Arc<dyn TableProvider>,
    joins: Vec<TaggerJoin>,
    schema: SchemaRef,
}

/// One tagger's rows (`__tag_image_id`, `__tag_sha256`, its columns) and its column names.
#[derive(Debug)]
pub struct TaggerJoin {
    /// The plan of the tagger's rows.
    pub rows: LogicalPlan,
    /// The tagger's columns as `images` shows them.
    pub columns: Vec<String>,
}

impl TaggedImages {
    /// The table of `images` joined to each of `joins`, with `schema` (the image table's
    /// columns, then each tagger's): what a cluster's codec rebuilds from its parts.
    pub fn new(images: Arc<dyn TableProvider>, joins: Vec<TaggerJoin>, schema: SchemaRef) -> Self {
        TaggedImages { images, joins, schema }
    }

    /// The dataset version's image table.
    pub fn images(&self) -> &Arc<dyn TableProvider> {
        &self.images
    }

    /// The taggers' rows, in join order.
    pub fn joins(&self) -> &[TaggerJoin] {
        &self.joins
    }
}

#[async_trait::async_trait]
impl TableProvider for TaggedImages {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Applied in the plan `scan` builds, below the joins where they only name the
        // images table's columns (the optimiser pushes them into the Parquet scan).
        Ok(vec![TableProviderFilterPushDown::Exact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Filters arrive qualified with the name the query gave the table; the plan built
        // here has its own qualifiers, so columns are matched by name.
        let filters: Vec<Expr> = filters.iter().map(unqualified).collect::<DfResult<_>>()?;
        let mut needed: HashSet<String> = match projection {
            Some(p) => p.iter().map(|&i| self.schema.field(i).name().clone()).collect(),
            None => self.schema.fields().iter().map(|f| f.name().clone()).collect(),
        };
        for filter in &filters {
            needed.extend(filter.column_refs().into_iter().map(|c| c.name.clone()));
        }
        // A filter on image_id alone selects the same ids among a tagger's rows: applied to
        // them too, the join holds only those rows (materialisation goes a range of ids
        // at a time, and this keeps each range's joins to that range's tags).
        let id_only: Option<Expr> = filters
            .iter()
            .filter(|f| {
                let columns = f.column_refs();
                !columns.is_empty() && columns.iter().all(|c| c.name == "image_id") && !f.is_volatile()
            })
            .map(|f| renamed(f, "image_id", TAG_ID))
            .collect::<DfResult<Vec<_>>>()?
            .into_iter()
            .reduce(Expr::and);
        let source = datafusion::datasource::provider_as_source(self.images.clone());
        let mut plan = LogicalPlanBuilder::scan("images", source, None)?;
        let mut kept: Vec<Expr> = self.images.schema().fields().iter().map(|f| ident(f.name())).collect();
        for join in self.joins.iter().filter(|j| j.columns.iter().any(|c| needed.contains(c))) {
            kept.extend(join.columns.iter().map(ident));
            // `tags RIGHT JOIN images`, not `images LEFT JOIN tags`: the hash join builds
            // its left side, so the tag rows are the table held in memory and the images
            // stream through it. Built the other way, each tagger's join collected the
            // previous join's output into one batch whose string views every output batch
            // then shares, so the memory accounted for a sort over four taggers multiplied
            // with each join (66 GB asked for 100,000 images) and compacting it really
            // did allocate that much (a 1M-image dataset was killed for memory).
            let mut rows = LogicalPlanBuilder::from(join.rows.clone());
            if let Some(filter) = &id_only {
                rows = rows.filter(filter.clone())?;
            }
            plan = rows
                .join(
                    plan.build()?,
                    JoinType::Right,
                    (
                        vec![Column::from_name(TAG_ID), Column::from_name(TAG_SHA)],
                        vec![Column::from_name("image_id"), Column::from_name("sha256")],
                    ),
                    None,
                )?
                // Drops the tagger's keys, so the next tagger's can be joined.
                .project(kept.clone())?;
        }
        if let Some(filter) = filters.into_iter().reduce(Expr::and) {
            plan = plan.filter(filter)?;
        }
        if let Some(p) = projection {
            plan = plan.project(p.iter().map(|&i| ident(self.schema.field(i).name())))?;
        }
        if let Some(limit) = limit {
            plan = plan.limit(0, Some(limit))?;
        }
        state.create_physical_plan(&plan.build()?).await
    }
}

/// `expr` with the column `from` renamed `to`.
fn renamed(expr: &Expr, from: &str, to: &str) -> DfResult<Expr> {
    map_columns(expr, |c| if c.name == from { Column::from_name(to) } else { c })
}

/// `expr` with every column reference stripped of its table qualifier.
fn unqualified(expr: &Expr) -> DfResult<Expr> {
    map_columns(expr, |c| Column::from_name(c.name))
}

/// `expr` with each column reference replaced by `f` of it.
fn map_columns(expr: &Expr, f: impl Fn(Column) -> Column) -> DfResult<Expr> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    Ok(expr
        .clone()
        .transform(|e| match e {
            Expr::Column(c) => Ok(Transformed::yes(Expr::Column(f(c)))),
            other => Ok(Transformed::no(other)),
        })?
        .data)
}

/// A tagger's rows, one per (image_id, sha256): its parts read as one table. Parts of
/// one generation only overlap where two writers tagged the same image at once (a retried
/// shard still running); then each column takes the smaller value, which is the same row
/// whoever finished first (and on one kind of CPU, the same value twice).
async fn tag_rows(ctx: &SessionContext, parts: &tags::VisibleParts) -> Result<DataFrame> {
    let table = ctx.read_table(parquet_files(ctx, &parts.tags).await?)?;
    if parts.tags.len() == 1 {
        return Ok(table);
    }
    let keys: Vec<_> = tags::KEY_COLUMNS.iter().map(|c| col(*c)).collect();
    let values: Vec<_> = (table.schema().fields().iter().skip(tags::KEY_COLUMNS.len()))
        .map(|f| datafusion::functions_aggregate::expr_fn::min(ident(f.name())).alias(f.name()))
        .collect();
    Ok(table.aggregate(keys, values)?)
}

/// `detections`: image_id, tagger, label, score, x0, y0, x1, y1 — every stored box of the
/// images as they are now (same sha256 rule as `images`). None when no tagger found boxes.
async fn detections_table(
    ctx: &SessionContext,
    taggers: &[(String, tags::VisibleParts)],
    images: Arc<dyn TableProvider>,
) -> Result<Option<Arc<dyn TableProvider>>> {
    let current = current_keys(ctx, images)?;
    let mut frames = Vec::new();
    for (tagger, parts) in taggers.iter().filter(|(_, parts)| parts.has_detections()) {
        let files: Vec<_> = parts.detections.iter().flatten().cloned().collect();
        let boxes = ctx.read_table(first_copies(ctx, &files).await?)?;
        let mut select = vec![col("image_id"), lit(tagger.as_str()).alias("tagger")];
        select.extend(tags::DETECTION_COLUMNS.iter().map(|c| col(*c)));
        frames.push(only_current(boxes, &current)?.select(select)?);
    }
    union_view(frames)
}

/// `masks`: image_id, source, class, class_id, pixels, regions — one row per image and
/// class present in its mask, for every mask set, only for images as they are now (same
/// sha256 rule as `images`). None when no masks were imported.
async fn masks_table(
    ctx: &SessionContext,
    layout: &WorkspaceLayout,
    sets: &[masks::MaskSetManifest],
    images: Arc<dyn TableProvider>,
) -> Result<Option<Arc<dyn TableProvider>>> {
    let current = current_keys(ctx, images)?;
    let mut frames = Vec::new();
    for set in sets {
        let file = masks::classes_path(layout, set);
        let select = ["image_id", "source", "class", "class_id", "pixels", "regions"].map(col).to_vec();
        frames.push(only_current(parquet_table(ctx, &file).await?, &current)?.select(select)?);
    }
    union_view(frames)
}

/// `embeddings`: `image_id`, `model`, `vector` for every model that embedded the dataset,
/// only vectors of the images as they are now (the stored `sha256` equals the image's),
/// like the search functions. Vectors of models with different dimensions are unioned as
/// variable-length lists; with one dimension they stay `FixedSizeList<Float32, D>`.
/// None when nothing is embedded.
async fn embeddings_table(
    ctx: &SessionContext,
    models: &[embeddings::StoredModel],
    images: Arc<dyn TableProvider>,
) -> Result<Option<Arc<dyn TableProvider>>> {
    let mut per_model = Vec::new();
    for model in models.iter().filter(|model| !model.parts.is_empty()) {
        let parts: Vec<PathBuf> = model.parts.iter().map(|part| part.path.clone()).collect();
        per_model.push((model.name.clone(), ctx.read_table(first_copies(ctx, &parts).await?)?));
    }
    if per_model.is_empty() {
        return Ok(None);
    }
    let current = current_keys(ctx, images)?;
    let types: HashSet<DataType> = per_model
        .iter()
        .map(|(_, df)| df.schema().field_with_unqualified_name("vector").map(|f| f.data_type().clone()))
        .collect::<Result<_, _>>()?;
    let list = DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true)));
    let mut frames = Vec::new();
    for (model, parts) in per_model {
        let vector = if types.len() > 1 { cast(col("vector"), list.clone()) } else { col("vector") };
        let select = vec![col("image_id"), lit(model).alias("model"), vector.alias("vector")];
        frames.push(only_current(parts, &current)?.select(select)?);
    }
    union_view(frames)
}
