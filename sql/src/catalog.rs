//! The SQL view of a workspace: catalog `slicetest`, one schema per dataset, and in
//! each schema the tables of that dataset (`images` for now), plus the slice functions.
//!
//! Tables are DataFusion `ListingTable`s over the dataset's Parquet files, pinned to
//! the version that was latest when the session was built: a query never sees half of
//! a concurrent ingest, and projection/filter pushdown and statistics come for free.
//! Keeping access behind `TableProvider`s is what lets the same SQL run on Ballista
//! over object storage later.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::catalog::TableProvider;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{JoinType, ScalarUDF, cast};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext, col, lit};
use slicetest_datasets::Workspace;
use slicetest_datasets::embeddings;
use slicetest_datasets::version::DatasetVersion;

use crate::error::{Result, SqlError};
use crate::slices::{InSliceFunction, SliceTableFunction};
use crate::vectors::{
    ClipSimilarityFunction, CosineSimilarityFunction, ImageSearchFunction, TextSearchFunction, VectorCatalog,
};

/// Name of the catalog that holds one schema per dataset.
pub const CATALOG: &str = "slicetest";
/// Schema used as the default when the workspace has no dataset yet.
pub const EMPTY_SCHEMA: &str = "public";
/// Name of the per-dataset image table.
pub const IMAGES_TABLE: &str = "images";
/// The table of stored vectors in each dataset's schema (when something is embedded).
pub const EMBEDDINGS_TABLE: &str = "embeddings";

/// Session settings for a workspace: catalog `slicetest`, the default dataset as default schema.
pub fn session_config(workspace: &Workspace) -> SessionConfig {
    dataset_config(workspace.config().default_dataset.as_deref())
}

/// DataFusion's own settings can be tuned with `DATAFUSION_*` environment variables
/// (e.g. `DATAFUSION_EXECUTION_TARGET_PARTITIONS=4`); a malformed one is ignored with a warning.
fn dataset_config(default_dataset: Option<&str>) -> SessionConfig {
    let default_schema = default_dataset.unwrap_or(EMPTY_SCHEMA).to_string();
    let base = SessionConfig::from_env().unwrap_or_else(|e| {
        eprintln!("warning: ignoring DATAFUSION_* environment settings: {e}");
        SessionConfig::new()
    });
    base.with_default_catalog_and_schema(CATALOG, default_schema)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true)
}

/// A SessionContext over `workspace` with the given runtime (memory limits live there).
pub async fn workspace_context(workspace: &Workspace, runtime: Arc<RuntimeEnv>) -> Result<SessionContext> {
    dataset_context(workspace, runtime, workspace.config().default_dataset.as_deref()).await
}

/// Like [`workspace_context`], with `dataset` as the default schema (a slice's query runs
/// against the dataset it was defined on, whatever the workspace default is now).
pub async fn dataset_context(
    workspace: &Workspace,
    runtime: Arc<RuntimeEnv>,
    dataset: Option<&str>,
) -> Result<SessionContext> {
    let state = SessionStateBuilder::new()
        .with_config(dataset_config(dataset))
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    register_workspace(&ctx, workspace).await?;
    let layout = workspace.layout().clone();
    ctx.register_udtf("slice", Arc::new(SliceTableFunction::new(layout.clone())));
    ctx.register_udf(ScalarUDF::from(InSliceFunction::new(layout.clone())));
    let default_dataset = match dataset {
        Some(name) => workspace.dataset(name).ok().and_then(|info| info.latest().cloned()),
        None => None,
    };
    let vectors = Arc::new(VectorCatalog::new(layout, default_dataset));
    ctx.register_udtf("text_search", Arc::new(TextSearchFunction(vectors.clone())));
    ctx.register_udtf("image_search", Arc::new(ImageSearchFunction(vectors.clone())));
    ctx.register_udf(ScalarUDF::from(ClipSimilarityFunction::new(vectors)));
    ctx.register_udf(ScalarUDF::from(CosineSimilarityFunction::default()));
    Ok(ctx)
}

/// Registers catalog `slicetest` with a schema per dataset of `workspace`.
pub async fn register_workspace(ctx: &SessionContext, workspace: &Workspace) -> Result<()> {
    let catalog = Arc::new(MemoryCatalogProvider::new());
    catalog.register_schema(EMPTY_SCHEMA, Arc::new(MemorySchemaProvider::new()))?;
    for info in workspace.datasets()? {
        let latest = info.latest().expect("listed datasets have a version");
        let schema = Arc::new(MemorySchemaProvider::new());
        let images = images_table(ctx, workspace, latest).await?;
        schema.register_table(IMAGES_TABLE.to_string(), images.clone())?;
        if let Some(embeddings) = embeddings_table(ctx, workspace, latest, images).await? {
            schema.register_table(EMBEDDINGS_TABLE.to_string(), embeddings)?;
        }
        catalog.register_schema(&info.name, schema)?;
    }
    ctx.register_catalog(CATALOG, catalog);
    Ok(())
}

async fn images_table(
    ctx: &SessionContext,
    workspace: &Workspace,
    version: &DatasetVersion,
) -> Result<Arc<ListingTable>> {
    let path = workspace.layout().images_file(&version.dataset, version.version);
    let url = ListingTableUrl::parse(path.to_string_lossy())?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let schema = options.infer_schema(&ctx.state(), &url).await?;
    let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// `embeddings`: `image_id`, `model`, `vector` for every model that embedded the dataset,
/// only vectors of the images as they are now (the stored `sha256` equals the image's),
/// like the search functions. Vectors of models with different dimensions are unioned as
/// variable-length lists; with one dimension they stay `FixedSizeList<Float32, D>`.
/// None when nothing is embedded.
async fn embeddings_table(
    ctx: &SessionContext,
    workspace: &Workspace,
    version: &DatasetVersion,
    images: Arc<ListingTable>,
) -> Result<Option<Arc<dyn TableProvider>>> {
    let layout = workspace.layout();
    let mut per_model = Vec::new();
    for model in embeddings::model_names(layout, &version.dataset).map_err(SqlError::from)? {
        let parts = embeddings::part_files(layout, &version.dataset, &model).map_err(SqlError::from)?;
        if parts.is_empty() {
            continue;
        }
        let urls = parts.iter().map(|p| ListingTableUrl::parse(p.to_string_lossy())).collect::<Result<Vec<_>, _>>()?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let schema = options.infer_schema(&ctx.state(), &urls[0]).await?;
        let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema);
        per_model.push((model, ctx.read_table(Arc::new(ListingTable::try_new(config)?))?));
    }
    if per_model.is_empty() {
        return Ok(None);
    }
    let current = ctx
        .read_table(images)?
        .select(vec![col("image_id").alias("current_id"), col("sha256").alias("current_sha")])?;
    let types: std::collections::HashSet<DataType> = per_model
        .iter()
        .map(|(_, df)| df.schema().field_with_unqualified_name("vector").map(|f| f.data_type().clone()))
        .collect::<Result<_, _>>()?;
    let list = DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true)));
    let mut union: Option<DataFrame> = None;
    for (model, parts) in per_model {
        let vector = if types.len() > 1 { cast(col("vector"), list.clone()) } else { col("vector") };
        let df = parts
            .join(current.clone(), JoinType::Inner, &["image_id", "sha256"], &["current_id", "current_sha"], None)?
            .select(vec![col("image_id"), lit(model).alias("model"), vector.alias("vector")])?;
        union = Some(match union {
            None => df,
            Some(u) => u.union(df)?,
        });
    }
    Ok(union.map(|df| df.into_view()))
}
