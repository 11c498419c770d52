//! Tables of append-only parts in which two parts can hold the same image: each key's
//! rows come from the first part that has the key.
//!
//! Embeddings and a detector's boxes are stored as parts ([`slicetest_datasets::parts`]):
//! an image and content (`image_id`, `sha256`) has one vector, or its boxes, in a part.
//! Two writers that processed the same image at once (a retried shard still running, two
//! `watch --once`) each store it, and readers agree to take the parts in (`seq`, `key`)
//! order and keep the first part's copy: the vector store does so when it loads vectors
//! for search, and [`FirstCopyTable`] does the same for SQL's `embeddings` and
//! `detections`, so a query counts each image's vector or boxes once, and reads the
//! vectors search uses.
//!
//! An aggregate (`DISTINCT ON`, `first_value`) would hold every vector in its state —
//! gigabytes at a million images — and would not know the parts' order. Instead the scan
//! reads the parts one after another in their order and drops the rows of a key that an
//! earlier part had. It remembers 128 bits per key (two independently keyed SipHashes of
//! the key's values): 16 MB per million images, charged to the query's memory pool; two
//! different keys collide with a chance of about 2⁻¹²⁸ per pair.
//!
//! The scan is a leaf ([`FirstCopyExec`]) that holds its file scan (one group of files in
//! read order) rather than having it as a child, so no optimizer rule can split that scan
//! into partitions and lose the order; it runs it one file at a time, which is how it
//! knows where a part ends (the next few files are read ahead on other tasks, so a
//! million images in a thousand parts are not read one file open after another; a large
//! part is read as several byte ranges the same way, so a merged part decodes on every
//! core, and its keys become earlier ones only after its last range).
//!
//! A finished `embed` merges small parts into one (`embeddings::compact_parts`: the merged
//! part is written, then the parts it replaces are removed), so a query planned before a
//! merge can find a part gone. The scan then lists the parts' directory again and goes on
//! with the parts it has not read, in order: the merged part holds the first copies of
//! the parts it replaced, and the keys already returned are earlier ones, so each key
//! still comes once, from the copy it would have come from. A part gone with nothing new
//! in its place (a directory removed) fails the query as before. On a
//! cluster it travels whole: the codec encodes the file scan with datafusion-proto inside
//! the node's bytes.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, Result, internal_err, plan_err};
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl, PartitionedFile};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::object_store::{self, ObjectMeta, path::Path as ObjectPath};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use futures::{FutureExt, Stream, StreamExt, TryStreamExt, ready};
use slicetest_datasets::parts::PartName;

use crate::substring_pruning::{SubstringPruningTable, parquet_scan};

/// Parquet part files read in order, each key's rows from the first part that has the
/// key (see the module documentation). Filters on key columns alone are pushed into the scan (they drop every
/// copy of a key alike); any other filter runs on the rows kept, so it cannot make a later
/// copy win.
#[derive(Debug)]
pub struct FirstCopyTable {
    files: Arc<ListingTable>,
    key: Vec<String>,
}

impl FirstCopyTable {
    /// The table of the Parquet parts at `urls`, in that order, all of `schema`, whose
    /// rows are identified by the `key` columns.
    pub fn try_new(urls: Vec<ListingTableUrl>, schema: SchemaRef, key: &[&str]) -> Result<Self> {
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(SubstringPruningTable::options())
            .with_schema(schema);
        Self::new(Arc::new(ListingTable::try_new(config)?), key.iter().map(|k| k.to_string()).collect())
    }

    /// `files` (whose table paths are the parts in read order), keyed by `key`.
    pub fn new(files: Arc<ListingTable>, key: Vec<String>) -> Result<Self> {
        if key.is_empty() {
            return plan_err!("a first-copy table needs at least one key column");
        }
        for column in &key {
            files.schema().index_of(column)?;
        }
        Ok(FirstCopyTable { files, key })
    }

    /// The files it reads.
    pub fn files(&self) -> &Arc<ListingTable> {
        &self.files
    }

    /// The columns whose values identify a row.
    pub fn key(&self) -> &[String] {
        &self.key
    }

    fn is_key_filter(&self, filter: &Expr) -> bool {
        filter.column_refs().iter().all(|c| self.key.contains(&c.name))
    }
}

#[async_trait::async_trait]
impl TableProvider for FirstCopyTable {
    fn schema(&self) -> SchemaRef {
        self.files.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.is_key_filter(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.schema();
        let wanted: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..schema.fields().len()).collect());
        // Read the wanted columns, then any key column the query did not ask for.
        let mut read = wanted.clone();
        let mut key_at = Vec::with_capacity(self.key.len());
        for column in &self.key {
            let index = schema.index_of(column)?;
            key_at.push(read.iter().position(|&i| i == index).unwrap_or_else(|| {
                read.push(index);
                read.len() - 1
            }));
        }
        let output_schema = Arc::new(schema.project(&wanted)?);
        // Only key filters arrive here (see supports_filters_pushdown); a limit would cut
        // the copies before they are dropped, so it is applied after.
        let key_filters: Vec<Expr> = filters.iter().filter(|f| self.is_key_filter(f)).cloned().collect();
        let plan = self.files.scan(state, Some(&read), &key_filters, None).await?;
        if plan.downcast_ref::<EmptyExec>().is_some() {
            return Ok(Arc::new(EmptyExec::new(output_schema)));
        }
        let Some((config, source)) = parquet_scan(&plan) else {
            return internal_err!("the scan of a first-copy table is not a Parquet scan: {}", plan.name());
        };
        let mut config = in_read_order(config, self.files.table_paths())?;
        // DataFusion pushes a filter into a Parquet scan with a physical optimizer rule,
        // which never sees the scan this table's node holds: the key filters become the
        // scan's predicate here, so that row groups (and files) of other images are skipped.
        if let Some(filter) = conjunction(key_filters) {
            let predicate = state.create_physical_expr(filter, &DFSchema::try_from(schema.as_ref().clone())?)?;
            config =
                FileScanConfigBuilder::from(config).with_source(Arc::new(source.with_predicate(predicate))).build();
        }
        let scan = DataSourceExec::from_data_source(config);
        Ok(Arc::new(FirstCopyExec::try_new(scan, key_at, wanted.len(), limit)?))
    }
}

/// `config` with all its files in one group, in the order of `paths` (a listing returns
/// them in any order and spreads them over groups).
fn in_read_order(config: &FileScanConfig, paths: &[ListingTableUrl]) -> Result<FileScanConfig> {
    let order: HashMap<&str, usize> = paths.iter().enumerate().map(|(i, url)| (url.prefix().as_ref(), i)).collect();
    let mut files = Vec::new();
    for file in config.file_groups.iter().flat_map(|group| group.iter()) {
        let location = file.object_meta.location.as_ref();
        let Some(&at) = order.get(location) else {
            return internal_err!("a first-copy table read {location}, which is none of its parts");
        };
        files.push((at, file.range.as_ref().map(|r| r.start), file.clone()));
    }
    files.sort_by_key(|(at, start, _)| (*at, *start));
    let group = FileGroup::new(files.into_iter().map(|(_, _, file)| file).collect());
    Ok(FileScanConfigBuilder::from(config.clone()).with_file_groups(vec![group]).with_preserve_order(true).build())
}

/// The scan of a [`FirstCopyTable`]: its files' rows in order, each key's from the first
/// file that has it, and of those the first `output` columns of the scan (the rest are key
/// columns read only to compare).
#[derive(Debug)]
pub struct FirstCopyExec {
    scan: Arc<dyn ExecutionPlan>,
    key: Vec<usize>,
    output: usize,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
}

impl FirstCopyExec {
    /// Keeps the rows of each value of the `key` columns of `scan` (a Parquet scan of one
    /// group of files in read order) from the first file that has it, and their first
    /// `output` columns; at most `limit` rows.
    pub fn try_new(scan: Arc<dyn ExecutionPlan>, key: Vec<usize>, output: usize, limit: Option<usize>) -> Result<Self> {
        let Some((config, _)) = parquet_scan(&scan) else {
            return internal_err!("a first-copy scan reads Parquet files, not {}", scan.name());
        };
        if config.file_groups.len() != 1 {
            return internal_err!("a first-copy scan reads one group of files, not {}", config.file_groups.len());
        }
        let width = scan.schema().fields().len();
        if output > width || key.is_empty() || key.iter().any(|&k| k >= width) {
            return internal_err!(
                "a first-copy scan's key {key:?} or output width {output} does not fit {width} columns"
            );
        }
        let schema = Arc::new(scan.schema().project(&(0..output).collect::<Vec<_>>())?);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(FirstCopyExec { scan, key, output, limit, properties: Arc::new(properties) })
    }

    /// The file scan it reads.
    pub fn scan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.scan
    }

    /// Positions of the key columns in the scan.
    pub fn key(&self) -> &[usize] {
        &self.key
    }

    /// How many leading columns of the scan it returns.
    pub fn output(&self) -> usize {
        self.output
    }

    /// The most rows it returns.
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }
}

impl DisplayAs for FirstCopyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FirstCopyExec: key={:?}", self.key)?;
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        write!(f, ", scan={}", datafusion::physical_plan::displayable(self.scan.as_ref()).one_line())
    }
}

impl ExecutionPlan for FirstCopyExec {
    fn name(&self) -> &str {
        "FirstCopyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("FirstCopyExec has no children");
        }
        Ok(self)
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("FirstCopyExec has one partition, not {partition}");
        }
        let Some((config, _)) = parquet_scan(&self.scan) else {
            return internal_err!("a first-copy scan reads Parquet files");
        };
        // One scan per piece of a file, run one after another: a part's end is its last
        // piece's end.
        let parts = (config.file_groups.iter().flat_map(|group| group.iter()))
            .flat_map(|file| Piece::of_part(config, file))
            .collect();
        let reservation = MemoryConsumer::new("FirstCopyExec").register(context.memory_pool());
        let planned = (config.file_groups.iter().flat_map(|group| group.iter()))
            .map(|file| file.object_meta.location.to_string())
            .collect();
        Ok(Box::pin(FirstCopyStream {
            parts,
            config: config.clone(),
            planned,
            read: HashSet::new(),
            relists_left: RELISTS,
            relisting: None,
            started: VecDeque::new(),
            context,
            schema: self.schema(),
            key: self.key.clone(),
            output: self.output,
            left: self.limit,
            earlier: HashSet::new(),
            this_part: HashSet::new(),
            hashers: (RandomState::new(), RandomState::new()),
            reservation,
        }))
    }
}

/// Bytes of a part file read by one scan: a larger file (a merged part, up to 256 MB)
/// is read as byte ranges of about this size, which are read ahead on other tasks like
/// the next parts are, so one big part decodes on every core as many small ones do.
/// Each row group is read by the range its first page starts in. About one row group
/// of a merged part (~2 MB of vectors): a read-ahead task holds two batches, so a range
/// of many row groups would wait for the reader instead of decoding ahead (8 MB ranges
/// read every vector of 100,000 no faster than one scan of the whole file).
const PIECE_BYTES: u64 = 2 << 20;

/// `file` as byte ranges of about [`PIECE_BYTES`] in order (itself, if it is small or
/// already a range).
fn pieces(file: &PartitionedFile) -> Vec<PartitionedFile> {
    let size = file.object_meta.size;
    if file.range.is_some() || size <= PIECE_BYTES {
        return vec![file.clone()];
    }
    let count = size.div_ceil(PIECE_BYTES);
    (0..count)
        .map(|i| {
            let (start, end) = (i * size / count, (i + 1) * size / count);
            file.clone().with_range(start as i64, end as i64)
        })
        .collect()
}

/// The scan of one piece of a part, and whether the part ends with it.
struct Piece {
    scan: Arc<DataSourceExec>,
    ends_part: bool,
    /// The part's file.
    location: String,
}

impl Piece {
    /// The scans of the [`pieces`] of the part `file`, in order, the last ending it.
    fn of_part(config: &FileScanConfig, file: &PartitionedFile) -> Vec<Piece> {
        let pieces = pieces(file);
        let last = pieces.len() - 1;
        pieces.into_iter().enumerate().map(|(i, piece)| Piece::new(config, piece, i == last)).collect()
    }

    /// `piece` (of a part file) read as `config` reads its files.
    fn new(config: &FileScanConfig, piece: PartitionedFile, ends_part: bool) -> Piece {
        let location = piece.object_meta.location.to_string();
        let one =
            FileScanConfigBuilder::from(config.clone()).with_file_groups(vec![FileGroup::new(vec![piece])]).build();
        Piece { scan: DataSourceExec::from_data_source(one), ends_part, location }
    }
}

/// How often one scan lists its parts again after finding one gone (merges that follow
/// each other while it reads).
const RELISTS: usize = 3;

/// Whether `error` is a file not found: a part removed after the query was planned.
fn is_missing_file(error: &DataFusionError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(DataFusionError::ObjectStore(e)) = e.downcast_ref::<DataFusionError>()
            && matches!(e.as_ref(), object_store::Error::NotFound { .. })
        {
            return true;
        }
        if matches!(e.downcast_ref::<object_store::Error>(), Some(object_store::Error::NotFound { .. }))
            || e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// After the part file `missing` was not found: the parts (`part-<seq>-<key>.parquet`)
/// of the directory as `listed` now that are not `read` yet, in read order. None when
/// `missing` was removed with no part in its place (no part the query was not `planned`
/// with), or is there after all: the query cannot know what it would have read.
fn parts_to_read(
    listed: Vec<ObjectMeta>,
    missing: &str,
    planned: &HashSet<String>,
    read: &HashSet<String>,
) -> Option<Vec<ObjectMeta>> {
    let mut parts: Vec<(PartName, ObjectMeta)> =
        listed.into_iter().filter_map(|meta| Some((PartName::parse(meta.location.filename()?)?, meta))).collect();
    let gone = !parts.iter().any(|(_, meta)| meta.location.as_ref() == missing);
    let replaced = parts.iter().any(|(_, meta)| !planned.contains(meta.location.as_ref()));
    if !(gone && replaced) {
        return None;
    }
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    Some(parts.into_iter().map(|(_, meta)| meta).filter(|meta| !read.contains(meta.location.as_ref())).collect())
}

/// Runs the one-file scan `part` on a task of its own, its batches (at most two ahead)
/// read from the stream returned; the task stops when the stream is dropped.
fn read_ahead(part: Arc<dyn ExecutionPlan>, context: Arc<TaskContext>) -> SendableRecordBatchStream {
    let mut builder = RecordBatchReceiverStreamBuilder::new(part.schema(), 2);
    let sender = builder.tx();
    builder.spawn(async move {
        let mut rows = match part.execute(0, context) {
            Ok(rows) => rows,
            Err(e) => {
                sender.send(Err(e)).await.ok();
                return Ok(());
            }
        };
        while let Some(batch) = rows.next().await {
            // The reader is gone (the query stopped): nothing to read ahead for.
            if sender.send(batch).await.is_err() {
                break;
            }
        }
        Ok(())
    });
    builder.build()
}

/// What one key costs in the set of seen keys: the u128 and a hash table's spare room.
const BYTES_PER_KEY: usize = 2 * std::mem::size_of::<u128>();

/// Parts read at once: the one being kept from, and the next ones, read ahead on other
/// tasks (each holding at most two batches) so that opening a file and decoding it
/// overlap with the work on the one before.
const PARTS_AT_ONCE: usize = 4;

struct FirstCopyStream {
    /// Scans of the pieces of parts not yet started, in read order.
    parts: VecDeque<Piece>,
    /// How the parts are read (a new piece's scan is made from it).
    config: FileScanConfig,
    /// The part files the query was planned with.
    planned: HashSet<String>,
    /// The part files read to their end (or as far as they were there).
    read: HashSet<String>,
    /// Listings left to look again for parts gone.
    relists_left: usize,
    /// A listing of the parts' directory under way, after a part was found gone.
    relisting: Option<Relisting>,
    /// The pieces started, in read order, whether each ends its part, and its file: the
    /// first is the one being kept from.
    started: VecDeque<(SendableRecordBatchStream, bool, String)>,
    context: Arc<TaskContext>,
    schema: SchemaRef,
    key: Vec<usize>,
    output: usize,
    left: Option<usize>,
    /// Keys of the parts read before this one: their rows here are later copies.
    earlier: HashSet<u128>,
    /// Keys of the part being read.
    this_part: HashSet<u128>,
    hashers: (RandomState, RandomState),
    reservation: MemoryReservation,
}

/// Listing the parts again because `missing` was not there.
struct Relisting {
    listing: futures::future::BoxFuture<'static, Result<Vec<ObjectMeta>>>,
    missing: String,
    /// The error to return if no other part took its place.
    error: DataFusionError,
}

impl FirstCopyStream {
    /// Starts listing the directory of the part the front piece reads, which was not
    /// found (`error`); reading goes on with the listing (see the module documentation).
    fn relist(&mut self, error: DataFusionError) -> Result<()> {
        self.relists_left -= 1;
        let (_, _, missing) = self.started.pop_front().expect("a piece was read");
        // Rows of it returned before it went stay returned: its keys are earlier ones,
        // and its other rows come from the part that replaced it.
        let this_part = std::mem::take(&mut self.this_part);
        self.earlier.extend(this_part);
        self.read.insert(missing.clone());
        self.started.clear();
        self.parts.clear();
        let store = self.context.runtime_env().object_store(&self.config.object_store_url)?;
        let dir = ObjectPath::from(missing.rsplit_once('/').map_or("", |(dir, _)| dir));
        let listing = async move { Ok(store.list(Some(&dir)).try_collect().await?) }.boxed();
        self.relisting = Some(Relisting { listing, missing, error });
        Ok(())
    }

    /// The rows of `batch` whose key no earlier part had, with the output columns.
    fn first_copies(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let keys = self.keys(batch)?;
        let before = self.this_part.len();
        let mut keep = Vec::with_capacity(keys.len());
        for key in keys {
            let first = !self.earlier.contains(&key);
            if first {
                self.this_part.insert(key);
            }
            keep.push(Some(first));
        }
        self.reservation.try_grow((self.this_part.len() - before) * BYTES_PER_KEY)?;
        let mut keep = BooleanArray::from(keep);
        if let Some(left) = self.left.as_mut() {
            let kept = keep.true_count();
            if kept > *left {
                // Keep the first `left` rows kept; the set is not used again.
                let mut budget = *left;
                keep = keep
                    .iter()
                    .map(|k| {
                        let take = k == Some(true) && budget > 0;
                        budget -= usize::from(take);
                        Some(take)
                    })
                    .collect();
            }
            *left -= keep.true_count();
        }
        let kept =
            if keep.true_count() == batch.num_rows() { batch.clone() } else { filter_record_batch(batch, &keep)? };
        Ok(kept.project(&(0..self.output).collect::<Vec<_>>())?)
    }

    /// A 128-bit hash of each row's key values.
    fn keys(&self, batch: &RecordBatch) -> Result<Vec<u128>> {
        let mut hashers: Vec<_> =
            (0..batch.num_rows()).map(|_| (self.hashers.0.build_hasher(), self.hashers.1.build_hasher())).collect();
        for &k in &self.key {
            hash_strings(batch.column(k), &mut hashers)?;
        }
        Ok(hashers.into_iter().map(|(a, b)| (u128::from(a.finish()) << 64) | u128::from(b.finish())).collect())
    }
}

/// Feeds each row's value of a string column to its pair of hashers (`Option<&str>`
/// hashes its presence and a terminator, so the values of several columns stay apart).
fn hash_strings<H: Hasher>(column: &ArrayRef, hashers: &mut [(H, H)]) -> Result<()> {
    fn feed<'a, H: Hasher>(values: impl Iterator<Item = Option<&'a str>>, hashers: &mut [(H, H)]) {
        for (value, (a, b)) in values.zip(hashers.iter_mut()) {
            value.hash(a);
            value.hash(b);
        }
    }
    match column.data_type() {
        DataType::Utf8 => feed(column.as_string::<i32>().iter(), hashers),
        DataType::LargeUtf8 => feed(column.as_string::<i64>().iter(), hashers),
        DataType::Utf8View => feed(column.as_string_view().iter(), hashers),
        other => return internal_err!("a first-copy key column must hold strings, not {other}"),
    }
    Ok(())
}

impl Stream for FirstCopyStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.left == Some(0) {
                return Poll::Ready(None);
            }
            if let Some(relisting) = self.relisting.as_mut() {
                let listed = ready!(relisting.listing.poll_unpin(cx));
                let Relisting { missing, error, .. } = self.relisting.take().expect("listing");
                let this = &mut *self;
                let Some(unread) = parts_to_read(listed?, &missing, &this.planned, &this.read) else {
                    return Poll::Ready(Some(Err(error)));
                };
                let config = &this.config;
                this.parts =
                    unread.into_iter().flat_map(|meta| Piece::of_part(config, &PartitionedFile::from(meta))).collect();
                continue;
            }
            while self.started.len() < PARTS_AT_ONCE
                && let Some(next) = self.parts.pop_front()
            {
                let started = read_ahead(next.scan, self.context.clone());
                self.started.push_back((started, next.ends_part, next.location));
            }
            let Some((piece, ends_part, _)) = self.started.front_mut() else { return Poll::Ready(None) };
            let ends_part = *ends_part;
            let batch = match piece.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(batch))) => batch,
                Poll::Ready(Some(Err(e))) if self.relists_left > 0 && is_missing_file(&e) => {
                    self.relist(e)?;
                    continue;
                }
                Poll::Ready(None) => {
                    let (_, _, location) = self.started.pop_front().expect("a piece was read");
                    if ends_part {
                        // The part is read: its keys are now earlier ones.
                        let this_part = std::mem::take(&mut self.this_part);
                        self.earlier.extend(this_part);
                        self.read.insert(location);
                    }
                    continue;
                }
                other => return other,
            };
            let kept = self.first_copies(&batch);
            if matches!(&kept, Ok(kept) if kept.num_rows() == 0) {
                continue;
            }
            return Poll::Ready(Some(kept));
        }
    }
}

impl RecordBatchStream for FirstCopyStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("image_id", DataType::Utf8, false),
            Field::new("sha256", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]))
    }

    /// Writes one part per entry of `parts` (rows of image_id, sha256, v) and returns
    /// their paths in that order.
    fn write_parts(dir: &std::path::Path, parts: &[&[(&str, &str, i64)]]) -> Vec<std::path::PathBuf> {
        // Named so that a listing sorted by name reads them backwards.
        parts.iter().enumerate().map(|(i, rows)| write_part(dir, &format!("part-{}.parquet", 9 - i), rows)).collect()
    }

    /// A session (batches of one row, so that copies meet across batches too) with the
    /// table `parts` of `paths` in that order.
    fn session(paths: &[std::path::PathBuf]) -> SessionContext {
        let config = SessionConfig::new().with_batch_size(1).with_target_partitions(4);
        let ctx = SessionContext::new_with_config(config);
        let urls = paths.iter().map(|p| ListingTableUrl::parse(p.to_string_lossy()).unwrap()).collect();
        let table = FirstCopyTable::try_new(urls, schema(), &["image_id", "sha256"]).unwrap();
        ctx.register_table("parts", Arc::new(table)).unwrap();
        ctx
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    const FIRST: &[(&str, &str, i64)] = &[("a", "s1", 1), ("b", "s1", 2)];
    const SECOND: &[(&str, &str, i64)] = &[("a", "s1", 9), ("c", "s1", 3), ("b", "s2", 7)];
    const THIRD: &[(&str, &str, i64)] = &[("c", "s1", 8), ("a", "s1", 6), ("d", "s1", 4)];

    #[tokio::test]
    async fn the_first_part_in_the_given_order_wins_each_key() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_parts(dir.path(), &[FIRST, SECOND, THIRD]);
        let ctx = session(&paths);
        let rows = answer(&ctx, "SELECT image_id, sha256, v FROM parts ORDER BY image_id, sha256").await;
        let expected = "\
+----------+--------+---+
| image_id | sha256 | v |
+----------+--------+---+
| a        | s1     | 1 |
| b        | s1     | 2 |
| b        | s2     | 7 |
| c        | s1     | 3 |
| d        | s1     | 4 |
+----------+--------+---+";
        assert_eq!(rows, expected);
        // The other order: the third part's copies win.
        let backwards: Vec<_> = paths.iter().rev().cloned().collect();
        let rows =
            answer(&session(&backwards), "SELECT image_id, v FROM parts WHERE sha256 = 's1' ORDER BY image_id").await;
        assert!(rows.contains("| a        | 6 |") && rows.contains("| c        | 8 |"), "{rows}");
    }

    #[tokio::test]
    async fn counts_projections_filters_and_limits_see_each_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = session(&write_parts(dir.path(), &[FIRST, SECOND, THIRD]));
        // No column read but the keys.
        assert!(answer(&ctx, "SELECT count(*) AS n FROM parts").await.contains("| 5 |"));
        assert!(answer(&ctx, "SELECT count(v) AS n FROM parts").await.contains("| 5 |"));
        // A filter on a value runs on the first copies: a later copy (a: 9, 6; c: 8)
        // never passes in their place.
        let rows = answer(&ctx, "SELECT image_id, v FROM parts WHERE v > 4 ORDER BY image_id").await;
        assert!(rows.contains("| b        | 7 |") && rows.lines().count() == 5, "{rows}");
        // A filter on the key is read into the scan and drops every copy alike.
        let rows = answer(&ctx, "SELECT v FROM parts WHERE image_id = 'a'").await;
        assert!(rows.contains("| 1 |") && rows.lines().count() == 5, "{rows}");
        let rows = answer(&ctx, "SELECT v FROM parts WHERE image_id IN ('a', 'c') AND v < 5 ORDER BY v").await;
        assert!(rows.contains("| 1 |") && rows.contains("| 3 |") && rows.lines().count() == 6, "{rows}");
        // A limit counts rows kept, not rows read.
        for n in 0..=6 {
            let rows = answer(&ctx, &format!("SELECT count(*) AS n FROM (SELECT * FROM parts LIMIT {n})")).await;
            assert!(rows.contains(&format!("| {} |", n.min(5))), "LIMIT {n}: {rows}");
        }
        let plan = answer(&ctx, "EXPLAIN SELECT v FROM parts").await;
        assert!(plan.contains("FirstCopyExec: key=[1, 2]"), "{plan}");
    }

    #[tokio::test]
    async fn a_key_with_several_rows_keeps_all_of_its_first_parts_rows() {
        // Boxes: an image has any number of rows in a part.
        let dir = tempfile::tempdir().unwrap();
        let first: &[(&str, &str, i64)] = &[("a", "s1", 1), ("a", "s1", 2), ("b", "s1", 3)];
        let second: &[(&str, &str, i64)] = &[("b", "s1", 7), ("a", "s1", 8), ("c", "s1", 4), ("c", "s1", 5)];
        let third: &[(&str, &str, i64)] = &[("c", "s1", 9), ("d", "s1", 6)];
        let ctx = session(&write_parts(dir.path(), &[first, second, third]));
        let rows = answer(&ctx, "SELECT string_agg(image_id || v, ' ' ORDER BY image_id, v) AS r FROM parts").await;
        assert!(rows.contains("| a1 a2 b3 c4 c5 d6 |"), "{rows}");
    }

    #[tokio::test]
    async fn one_part_and_empty_parts_read_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = session(&write_parts(dir.path(), &[SECOND]));
        assert!(answer(&ctx, "SELECT count(*) AS n FROM parts").await.contains("| 3 |"));
        let dir = tempfile::tempdir().unwrap();
        let ctx = session(&write_parts(dir.path(), &[&[], FIRST, &[]]));
        assert!(answer(&ctx, "SELECT count(*) AS n FROM parts").await.contains("| 2 |"));
    }

    #[tokio::test]
    async fn a_large_part_read_in_pieces_keeps_all_its_rows_of_a_key() {
        // A part over PIECE_BYTES is read as several byte ranges: a key in its first and
        // its last row group keeps both rows (they are one part), a later part's copy
        // of it does not win, and every row is read once.
        let dir = tempfile::tempdir().unwrap();
        let rows = 90_000;
        let pad = "x".repeat(200);
        let id = |i: usize| format!("k{}{pad}", if i == rows - 1 { 0 } else { i });
        let batch = |ids: Vec<String>, v: Vec<i64>| {
            let shas = vec!["s"; ids.len()];
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(StringArray::from(shas)),
                Arc::new(Int64Array::from(v)),
            ];
            RecordBatch::try_new(schema(), columns).unwrap()
        };
        let write = |name: &str, batch: RecordBatch| {
            let path = dir.path().join(name);
            let properties = datafusion::parquet::file::properties::WriterProperties::builder()
                .set_max_row_group_row_count(Some(2048))
                .set_dictionary_enabled(false)
                .build();
            let file = std::fs::File::create(&path).unwrap();
            let mut writer = ArrowWriter::try_new(file, schema(), Some(properties)).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
            path
        };
        let big = write("part-0.parquet", batch((0..rows).map(id).collect(), (0..rows as i64).collect()));
        let size = std::fs::metadata(&big).unwrap().len();
        assert!(size > 2 * PIECE_BYTES, "{size} bytes is not several pieces");
        let later = write("part-1.parquet", batch(vec![id(0), id(5)], vec![-1, -2]));
        let ctx = session(&[big, later]);
        let all = answer(&ctx, "SELECT count(*) AS n, sum(v) AS s, min(v) AS m FROM parts").await;
        let sum: i64 = (0..rows as i64).sum();
        assert!(all.contains(&format!("| {rows} | {sum} | 0 |")), "{all}");
        let k0 = answer(&ctx, &format!("SELECT v FROM parts WHERE image_id = '{}' ORDER BY v", id(0))).await;
        assert!(k0.contains("| 0 ") && k0.contains(&format!("| {} ", rows - 1)) && k0.lines().count() == 6, "{k0}");
    }

    /// Writes the rows (image_id, sha256, v) as the part `name` in `dir`.
    fn write_part(dir: &std::path::Path, name: &str, rows: &[(&str, &str, i64)]) -> std::path::PathBuf {
        let path = dir.join(name);
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        let mut writer = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        path
    }

    /// Runs a physical plan made before the parts changed.
    async fn run_planned(ctx: &SessionContext, plan: Arc<dyn ExecutionPlan>) -> Result<String> {
        let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await?;
        let mut rows: Vec<String> = Vec::new();
        for batch in &batches {
            let (ids, values) = (batch.column(0).as_string::<i32>(), batch.column(1).as_primitive::<Int64Type>());
            rows.extend((0..batch.num_rows()).map(|i| format!("{}{}", ids.value(i), values.value(i))));
        }
        rows.sort();
        Ok(rows.join(" "))
    }

    #[tokio::test]
    async fn a_query_planned_before_a_merge_reads_the_part_that_replaced_the_ones_gone() {
        let dir = tempfile::tempdir().unwrap();
        let parts = [
            write_part(dir.path(), "part-000000-aa.parquet", &[("a", "s", 1), ("b", "s", 2)]),
            write_part(dir.path(), "part-000001-bb.parquet", &[("c", "s", 3), ("a", "s", 9)]),
            write_part(dir.path(), "part-000002-cc.parquet", &[("d", "s", 4)]),
            write_part(dir.path(), "part-000003-dd.parquet", &[("e", "s", 5)]),
        ];
        let plan = |ctx: SessionContext| async move {
            let plan = ctx.sql("SELECT image_id, v FROM parts").await.unwrap().create_physical_plan().await.unwrap();
            (ctx, plan)
        };
        let (ctx, before) = plan(session(&parts)).await;
        assert_eq!(run_planned(&ctx, before.clone()).await.unwrap(), "a1 b2 c3 d4 e5");
        // Parts 1 and 2 merged (the merged part named by the first one's seq), then removed.
        write_part(dir.path(), "part-000001-ee.parquet", &[("c", "s", 3), ("a", "s", 9), ("d", "s", 4)]);
        std::fs::remove_file(&parts[1]).unwrap();
        std::fs::remove_file(&parts[2]).unwrap();
        assert_eq!(run_planned(&ctx, before).await.unwrap(), "a1 b2 c3 d4 e5");
    }

    #[test]
    fn a_part_gone_is_read_on_from_the_part_that_replaced_it_and_only_then() {
        let meta = |name: &str| ObjectMeta {
            location: ObjectPath::from(format!("ds/m/{name}")),
            last_modified: Default::default(),
            size: 1,
            e_tag: None,
            version: None,
        };
        let names = |parts: Option<Vec<ObjectMeta>>| {
            parts.map(|p| p.iter().map(|m| m.location.filename().unwrap().to_string()).collect::<Vec<_>>())
        };
        let set = |names: &[&str]| names.iter().map(|n| format!("ds/m/{n}")).collect::<HashSet<String>>();
        let planned = set(&["part-000000-aa.parquet", "part-000001-bb.parquet", "part-000002-cc.parquet"]);
        let read = set(&["part-000000-aa.parquet", "part-000001-bb.parquet"]);
        let missing = "ds/m/part-000001-bb.parquet";
        // Merged into a part named by the first one's seq: read on from there, in order,
        // skipping what was read (a writer's temporary file is no part).
        let listed = ["part-000002-cc.parquet", "part-000000-aa.parquet", "part-000001-ee.parquet", ".tmp-x"];
        assert_eq!(
            names(parts_to_read(listed.iter().map(|n| meta(n)).collect(), missing, &planned, &read)),
            Some(vec!["part-000001-ee.parquet".into(), "part-000002-cc.parquet".into()])
        );
        // Removed with nothing new in its place, or not gone after all: no way on.
        let listed = ["part-000000-aa.parquet", "part-000002-cc.parquet"];
        assert_eq!(names(parts_to_read(listed.iter().map(|n| meta(n)).collect(), missing, &planned, &read)), None);
        assert_eq!(names(parts_to_read(Vec::new(), missing, &planned, &read)), None);
        let listed = ["part-000001-bb.parquet", "part-000001-ee.parquet"];
        assert_eq!(names(parts_to_read(listed.iter().map(|n| meta(n)).collect(), missing, &planned, &read)), None);
    }

    #[test]
    fn pieces_cover_a_large_file_in_order() {
        let file = PartitionedFile::new("part.parquet", 3 * PIECE_BYTES + 5);
        let pieces = pieces(&file);
        assert_eq!(pieces.len(), 4);
        let mut end = 0;
        for piece in &pieces {
            let range = piece.range.as_ref().unwrap();
            assert_eq!(range.start, end);
            end = range.end;
        }
        assert_eq!(end as u64, 3 * PIECE_BYTES + 5);
        assert_eq!(super::pieces(&PartitionedFile::new("small.parquet", PIECE_BYTES)).len(), 1);
    }

    #[test]
    fn a_key_names_columns_of_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_parts(dir.path(), &[FIRST]);
        let urls = vec![ListingTableUrl::parse(paths[0].to_string_lossy()).unwrap()];
        let err = FirstCopyTable::try_new(urls.clone(), schema(), &["nope"]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(FirstCopyTable::try_new(urls, schema(), &[]).is_err());
    }
}
