//! How slicetest's tables and functions cross the wire to a cluster.
//!
//! Ballista ships a query as a logical plan (client → scheduler) and then as physical
//! plans of stages (scheduler → executors), both through datafusion-proto. DataFusion's own
//! tables (`ListingTable`, views) and nodes serialise themselves; this codec adds what only
//! slicetest knows, and hands everything else to Ballista's codecs:
//!
//! - tables: the Parquet tables ([`SubstringPruningTable`]: its `ListingTable`, as the plan
//!   of a scan; [`FirstCopyTable`]: its key and its `ListingTable`), the tagged `images` table ([`TaggedImages`]: the image table and each tagger's
//!   rows, as plans) and in-memory tables (`MemTable`: the answers of `slice()`,
//!   `text_search()`, `image_search()`, `discover_slices()`, … computed on the client when
//!   the query was planned), as Arrow IPC;
//! - physical nodes: the scan of a [`FirstCopyTable`] ([`FirstCopyExec`]: its settings and
//!   the file scan it holds), then Ballista's shuffle nodes;
//! - functions: `in_slice` (the workspace; planning pinned the slice version into its
//!   arguments), `clip_similarity` (the workspace, the dataset version and model planning
//!   read, and the sentence's vector planning encoded), `cosine_similarity` by name.
//!
//! Everything a function needs travels in its bytes: a process that decodes a plan needs
//! only read access to the workspace's files, no state of the client's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference, plan_err};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::{MemTable, provider_as_source, source_as_provider};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, LogicalPlanBuilder, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::bytes::{
    logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};
use slicetest_datasets::WorkspaceLayout;
use slicetest_sql::first_copy::{FirstCopyExec, FirstCopyTable};
use slicetest_sql::slices::InSliceFunction;
use slicetest_sql::substring_pruning::SubstringPruningTable;
use slicetest_sql::vectors::{ClipSimilarityFunction, CosineSimilarityFunction, VectorCatalog, VectorStore};
use slicetest_sql::{TaggedImages, TaggerJoin};

/// The first byte of an encoded table: which kind follows.
const TAGGED_IMAGES: u8 = b'T';
const MEMORY_TABLE: u8 = b'M';
const SUBSTRING_PRUNING: u8 = b'P';
const FIRST_COPY: u8 = b'F';

/// The workspaces plans were decoded for in this process, by root: a workspace is opened
/// once, and its vectors are loaded once and shared by every query that reads them (an
/// executor runs many tasks of many queries).
#[derive(Debug, Default)]
pub struct Workspaces {
    open: Mutex<HashMap<PathBuf, Arc<VectorStore>>>,
}

impl Workspaces {
    /// The vector store of the workspace at `root`, opened on first use.
    fn store(&self, root: &Path) -> Result<Arc<VectorStore>> {
        if let Some(store) = self.open.lock().expect("not poisoned").get(root) {
            return Ok(store.clone());
        }
        let layout = WorkspaceLayout::open(root).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let store = Arc::new(VectorStore::new(layout));
        self.open.lock().expect("not poisoned").insert(root.to_path_buf(), store.clone());
        Ok(store)
    }
}

/// The state of a slicetest function, as it travels.
#[derive(Debug, Serialize, Deserialize)]
enum FunctionState {
    /// `in_slice`: the workspace (the slice and its version are arguments).
    InSlice { workspace: PathBuf },
    /// `clip_similarity`: the workspace, the default dataset's version planning read, and
    /// the sentence with the model it was asked for (None: the only one) and its vector.
    ClipSimilarity {
        workspace: PathBuf,
        dataset: Option<(String, u64)>,
        text: Option<String>,
        #[serde(default)]
        model: Option<String>,
        vector: Vec<f32>,
    },
}

fn encode_function(node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
    let inner = node.inner();
    let state = if let Some(f) = inner.downcast_ref::<InSliceFunction>() {
        FunctionState::InSlice { workspace: f.layout().root().to_path_buf() }
    } else if let Some(f) = inner.downcast_ref::<ClipSimilarityFunction>() {
        let catalog = f.catalog();
        let (text, model, vector) = match f.query() {
            Some(q) => (Some(q.text.clone()), q.model.clone(), q.vector.as_ref().clone()),
            None => (None, None, Vec::new()),
        };
        FunctionState::ClipSimilarity {
            workspace: catalog.store().layout().root().to_path_buf(),
            dataset: catalog.dataset_version().map(|v| (v.dataset.clone(), v.version)),
            text,
            model,
            vector,
        }
    } else {
        // Stateless (cosine_similarity, DataFusion's own): found by name.
        return Ok(());
    };
    serde_json::to_writer(buf, &state).map_err(|e| DataFusionError::External(Box::new(e)))
}

fn decode_function(workspaces: &Workspaces, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
    if buf.is_empty() {
        return match name {
            "cosine_similarity" => Ok(Arc::new(ScalarUDF::from(CosineSimilarityFunction::default()))),
            "case_branch" => Ok(Arc::new(ScalarUDF::from(slicetest_sql::case_keys::CaseBranchFunction::default()))),
            _ => plan_err!("unknown function {name}: not a slicetest function, and not registered here"),
        };
    }
    let state: FunctionState = serde_json::from_slice(buf)
        .map_err(|e| DataFusionError::Plan(format!("cannot decode the state of function {name}: {e}")))?;
    let udf = match state {
        FunctionState::InSlice { workspace } => {
            let layout = workspaces.store(&workspace)?.layout().clone();
            ScalarUDF::from(InSliceFunction::new(layout))
        }
        FunctionState::ClipSimilarity { workspace, dataset, text, model, vector } => {
            let store = workspaces.store(&workspace)?;
            let dataset = match dataset {
                Some((name, version)) => Some(
                    slicetest_datasets::version::read_version(store.layout(), &name, version)
                        .map_err(|e| DataFusionError::External(Box::new(e)))?,
                ),
                None => None,
            };
            let catalog = Arc::new(VectorCatalog::new(store, dataset));
            match text {
                Some(text) => {
                    ScalarUDF::from(ClipSimilarityFunction::with_query(catalog, text, model, Arc::new(vector)))
                }
                None => ScalarUDF::from(ClipSimilarityFunction::new(catalog)),
            }
        }
    };
    Ok(Arc::new(udf))
}

/// Length-prefixed parts of one encoded table.
fn put_part(buf: &mut Vec<u8>, part: &[u8]) {
    buf.extend_from_slice(&(part.len() as u64).to_le_bytes());
    buf.extend_from_slice(part);
}

fn take_part<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8]> {
    let corrupt = || DataFusionError::Plan("a slicetest table arrived cut short".to_string());
    let (len, rest) = buf.split_first_chunk::<8>().ok_or_else(corrupt)?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| corrupt())?;
    let (part, rest) = rest.split_at_checked(len).ok_or_else(corrupt)?;
    *buf = rest;
    Ok(part)
}

/// The logical codec: slicetest's tables and functions, then Ballista's.
#[derive(Debug, Default)]
pub struct LogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
    workspaces: Arc<Workspaces>,
}

impl LogicalCodec {
    /// A codec whose decoded functions share `workspaces`.
    pub fn new(workspaces: Arc<Workspaces>) -> Self {
        LogicalCodec { ballista: BallistaLogicalExtensionCodec::default(), workspaces }
    }

    fn encode_tagged_images(&self, table: &TaggedImages, buf: &mut Vec<u8>) -> Result<()> {
        buf.push(TAGGED_IMAGES);
        let columns: Vec<&[String]> = table.joins().iter().map(|j| j.columns.as_slice()).collect();
        put_part(buf, &serde_json::to_vec(&columns).map_err(|e| DataFusionError::External(Box::new(e)))?);
        let images = LogicalPlanBuilder::scan("images", provider_as_source(table.images().clone()), None)?.build()?;
        put_part(buf, &logical_plan_to_bytes_with_extension_codec(&images, self)?);
        for join in table.joins() {
            put_part(buf, &logical_plan_to_bytes_with_extension_codec(&join.rows, self)?);
        }
        Ok(())
    }

    /// A Parquet table with substring row-group skipping: its `ListingTable`, which
    /// datafusion-proto serialises itself, as the plan of a scan.
    fn encode_substring_pruning(&self, table: &SubstringPruningTable, buf: &mut Vec<u8>) -> Result<()> {
        buf.push(SUBSTRING_PRUNING);
        let files = LogicalPlanBuilder::scan("files", provider_as_source(table.files().clone()), None)?.build()?;
        buf.extend_from_slice(&logical_plan_to_bytes_with_extension_codec(&files, self)?);
        Ok(())
    }

    fn decode_substring_pruning(&self, buf: &[u8], ctx: &TaskContext) -> Result<SubstringPruningTable> {
        Ok(SubstringPruningTable::new(self.decode_files(buf, ctx)?))
    }

    /// The `ListingTable` of a scan encoded by [`Self::encode_substring_pruning`] or
    /// [`Self::encode_first_copy`].
    fn decode_files(&self, buf: &[u8], ctx: &TaskContext) -> Result<Arc<ListingTable>> {
        let LogicalPlan::TableScan(scan) = logical_plan_from_bytes_with_extension_codec(buf, ctx, self)? else {
            return plan_err!("a Parquet table arrived without its files");
        };
        let files: Arc<dyn std::any::Any + Send + Sync> = source_as_provider(&scan.source)?;
        match files.downcast::<ListingTable>() {
            Ok(files) => Ok(files),
            Err(_) => plan_err!("a Parquet table arrived with files that are not a listing table"),
        }
    }

    /// Parts read first copy first: the key columns, then the `ListingTable` (whose table
    /// paths keep the parts' order) as the plan of a scan.
    fn encode_first_copy(&self, table: &FirstCopyTable, buf: &mut Vec<u8>) -> Result<()> {
        buf.push(FIRST_COPY);
        put_part(buf, &serde_json::to_vec(table.key()).map_err(|e| DataFusionError::External(Box::new(e)))?);
        let files = LogicalPlanBuilder::scan("files", provider_as_source(table.files().clone()), None)?.build()?;
        buf.extend_from_slice(&logical_plan_to_bytes_with_extension_codec(&files, self)?);
        Ok(())
    }

    fn decode_first_copy(&self, mut buf: &[u8], ctx: &TaskContext) -> Result<FirstCopyTable> {
        let key: Vec<String> = serde_json::from_slice(take_part(&mut buf)?)
            .map_err(|e| DataFusionError::Plan(format!("cannot decode the key of a first-copy table: {e}")))?;
        FirstCopyTable::new(self.decode_files(buf, ctx)?, key)
    }

    fn decode_tagged_images(&self, mut buf: &[u8], schema: SchemaRef, ctx: &TaskContext) -> Result<TaggedImages> {
        let columns: Vec<Vec<String>> = serde_json::from_slice(take_part(&mut buf)?)
            .map_err(|e| DataFusionError::Plan(format!("cannot decode a tagged images table: {e}")))?;
        let images = match logical_plan_from_bytes_with_extension_codec(take_part(&mut buf)?, ctx, self)? {
            LogicalPlan::TableScan(scan) => source_as_provider(&scan.source)?,
            other => return plan_err!("a tagged images table arrived without its image table: {other}"),
        };
        let mut joins = Vec::with_capacity(columns.len());
        for columns in columns {
            let rows = logical_plan_from_bytes_with_extension_codec(take_part(&mut buf)?, ctx, self)?;
            joins.push(TaggerJoin { rows, columns });
        }
        Ok(TaggedImages::new(images, joins, schema))
    }
}

fn encode_memory_table(table: &MemTable, buf: &mut Vec<u8>) -> Result<()> {
    buf.push(MEMORY_TABLE);
    let mut writer = StreamWriter::try_new(buf, &table.schema())?;
    for partition in &table.batches {
        // A MemTable's partitions are locks shared with the session that planned the
        // query; nothing writes to a function's answer, so a held lock is a bug, not a wait.
        let partition = partition
            .try_read()
            .map_err(|_| DataFusionError::Internal("an in-memory table was being written while encoded".into()))?;
        for batch in partition.iter() {
            writer.write(batch)?;
        }
    }
    writer.finish()?;
    Ok(())
}

fn decode_memory_table(buf: &[u8]) -> Result<MemTable> {
    let reader = StreamReader::try_new(buf, None)?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    MemTable::try_new(schema, vec![batches])
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> Result<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match buf.split_first() {
            Some((&TAGGED_IMAGES, rest)) => Ok(Arc::new(self.decode_tagged_images(rest, schema, ctx)?)),
            Some((&MEMORY_TABLE, rest)) => Ok(Arc::new(decode_memory_table(rest)?)),
            Some((&SUBSTRING_PRUNING, rest)) => Ok(Arc::new(self.decode_substring_pruning(rest, ctx)?)),
            Some((&FIRST_COPY, rest)) => Ok(Arc::new(self.decode_first_copy(rest, ctx)?)),
            _ => self.ballista.try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(table) = node.downcast_ref::<TaggedImages>() {
            self.encode_tagged_images(table, buf)
        } else if let Some(table) = node.downcast_ref::<MemTable>() {
            encode_memory_table(table, buf)
        } else if let Some(table) = node.downcast_ref::<SubstringPruningTable>() {
            self.encode_substring_pruning(table, buf)
        } else if let Some(table) = node.downcast_ref::<FirstCopyTable>() {
            self.encode_first_copy(table, buf)
        } else {
            self.ballista.try_encode_table_provider(table_ref, node, buf)
        }
    }

    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_function(&self.workspaces, name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_function(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.ballista.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.ballista.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udwf(node, buf)
    }
}

/// The physical codec: slicetest's functions, then Ballista's (its shuffle nodes).
#[derive(Debug, Default)]
pub struct PhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
    workspaces: Arc<Workspaces>,
}

impl PhysicalCodec {
    /// A codec whose decoded functions share `workspaces`.
    pub fn new(workspaces: Arc<Workspaces>) -> Self {
        PhysicalCodec { ballista: BallistaPhysicalExtensionCodec::default(), workspaces }
    }
}

/// How a [`FirstCopyExec`] travels besides its file scan.
#[derive(Debug, Serialize, Deserialize)]
struct FirstCopyState {
    key: Vec<usize>,
    output: usize,
    limit: Option<usize>,
}

impl PhysicalCodec {
    /// A first-copy scan: its settings, then its file scan (which it holds rather than
    /// has as a child, so it is encoded here, by datafusion-proto with this codec).
    fn encode_first_copy(&self, exec: &FirstCopyExec, buf: &mut Vec<u8>) -> Result<()> {
        buf.push(FIRST_COPY);
        let state = FirstCopyState { key: exec.key().to_vec(), output: exec.output(), limit: exec.limit() };
        put_part(buf, &serde_json::to_vec(&state).map_err(|e| DataFusionError::External(Box::new(e)))?);
        buf.extend_from_slice(&physical_plan_to_bytes_with_extension_codec(exec.scan().clone(), self)?);
        Ok(())
    }

    fn decode_first_copy(&self, mut buf: &[u8], ctx: &TaskContext) -> Result<FirstCopyExec> {
        let state: FirstCopyState = serde_json::from_slice(take_part(&mut buf)?)
            .map_err(|e| DataFusionError::Plan(format!("cannot decode a first-copy scan: {e}")))?;
        let scan = physical_plan_from_bytes_with_extension_codec(buf, ctx, self)?;
        FirstCopyExec::try_new(scan, state.key, state.output, state.limit)
    }
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match buf.split_first() {
            Some((&FIRST_COPY, rest)) => Ok(Arc::new(self.decode_first_copy(rest, ctx)?)),
            _ => self.ballista.try_decode(buf, inputs, ctx, proto_converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(exec) = node.downcast_ref::<FirstCopyExec>() {
            return self.encode_first_copy(exec, buf);
        }
        self.ballista.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_function(&self.workspaces, name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_function(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.ballista.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.ballista.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udwf(node, buf)
    }
}
