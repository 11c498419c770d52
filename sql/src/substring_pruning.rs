//! Parquet tables that skip the row groups where a `substr(column, start, length)`
//! filter is false on every row.
//!
//! DataFusion prunes row groups by their min/max statistics only for predicates on a
//! column itself; `substr(image_id, 5, 2) = '00'` is a function of the column, so every
//! row group was read (10M image ids: 155 ms where DuckDB, which prunes it, took 30 ms).
//! Yet every value of a row group lies between its min and max, so every value starts
//! with the longest prefix the two share; where that prefix covers the characters before
//! the substring's start, the values differ only from there on, and their substrings lie
//! between the min's and the max's (one string where the prefix covers the substring
//! too): a filter false for every string in those bounds is false for every row. Image
//! ids are written in id order, so the row groups of a large table share long prefixes.
//!
//! [`SubstringPruningTable`] wraps a `ListingTable`: its scan is the table's scan, each
//! file then carrying a `ParquetAccessPlan` that skips those row groups. The filter itself
//! still runs on the rows read (the table answers `Inexact`), so a skip can only save
//! work, never change an answer. Handled: `substr(col, start, length)` (or `substring(col
//! FROM start FOR length)`, or `left(col, length)`) with literal `start ≥ 1` and `length ≥
//! 0`, compared by `=`, `<>`, `IN` or `NOT IN` with string literals, as one conjunct of the
//! query's filter.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Constraints, Result, ScalarValue, Statistics};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::physical_plan::parquet::ParquetAccessPlan;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{FileScanConfig, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_plan::ExecutionPlan;

/// A `ListingTable` of Parquet files whose scans skip the row groups a substring filter
/// rules out (see the module documentation).
#[derive(Debug)]
pub struct SubstringPruningTable {
    files: Arc<ListingTable>,
}

impl SubstringPruningTable {
    /// How the files are read: Parquet files named `*.parquet`.
    pub fn options() -> ListingOptions {
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet")
    }

    /// The table of the Parquet files at `urls`, all of `schema`.
    pub fn try_new(urls: Vec<ListingTableUrl>, schema: SchemaRef) -> Result<Self> {
        let config =
            ListingTableConfig::new_with_multi_paths(urls).with_listing_options(Self::options()).with_schema(schema);
        Ok(SubstringPruningTable { files: Arc::new(ListingTable::try_new(config)?) })
    }

    /// `files`, scanned with the row-group skipping.
    pub fn new(files: Arc<ListingTable>) -> Self {
        SubstringPruningTable { files }
    }

    /// The table it scans.
    pub fn files(&self) -> &Arc<ListingTable> {
        &self.files
    }
}

#[async_trait::async_trait]
impl TableProvider for SubstringPruningTable {
    fn schema(&self) -> SchemaRef {
        self.files.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.files.constraints()
    }

    fn table_type(&self) -> TableType {
        self.files.table_type()
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        self.files.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.files.statistics()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let args = ScanArgs::default()
            .with_projection(projection.map(|p| p.as_slice()))
            .with_filters(Some(filters))
            .with_limit(limit);
        Ok(self.scan_with_args(state, args).await?.into_inner())
    }

    async fn scan_with_args<'a>(&self, state: &dyn Session, args: ScanArgs<'a>) -> Result<ScanResult> {
        let tests: Vec<SubstringTest> = args.filters().unwrap_or(&[]).iter().filter_map(SubstringTest::of).collect();
        let plan = self.files.scan_with_args(state, args).await?.into_inner();
        if tests.is_empty() {
            return Ok(ScanResult::new(plan));
        }
        Ok(ScanResult::new(skip_row_groups(plan, &tests, state).await?))
    }
}

/// One filter conjunct of the handled shape: `substr(column, start, length)` is (or with
/// `negated`, is not) one of `values`.
#[derive(Debug, Clone, PartialEq)]
struct SubstringTest {
    column: String,
    start: usize,
    length: usize,
    values: HashSet<String>,
    negated: bool,
}

impl SubstringTest {
    /// The test `filter` makes, when it is of the handled shape.
    fn of(filter: &Expr) -> Option<SubstringTest> {
        match filter {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let negated = match op {
                    Operator::Eq => false,
                    Operator::NotEq => true,
                    _ => return None,
                };
                // Either side may be the literal.
                let (call, literal) = match (string_literal(left), string_literal(right)) {
                    (None, Some(value)) => (left, value),
                    (Some(value), None) => (right, value),
                    _ => return None,
                };
                Self::with_values(call, HashSet::from([literal]), negated)
            }
            Expr::InList(in_list) => {
                let values = in_list.list.iter().map(string_literal).collect::<Option<HashSet<String>>>()?;
                Self::with_values(&in_list.expr, values, in_list.negated)
            }
            _ => None,
        }
    }

    fn with_values(call: &Expr, values: HashSet<String>, negated: bool) -> Option<SubstringTest> {
        let Expr::ScalarFunction(function) = call else { return None };
        let (column, start, length) = match (function.name(), function.args.as_slice()) {
            ("substr", [Expr::Column(column), start, length]) => {
                (column, usize::try_from(integer_literal(start)?).ok().filter(|&s| s >= 1)?, integer_literal(length)?)
            }
            // `left(s, n)` is `substr(s, 1, n)` for n ≥ 0 (a negative n drops characters
            // from the end instead).
            ("left", [Expr::Column(column), length]) => (column, 1, integer_literal(length)?),
            _ => return None,
        };
        let length = usize::try_from(length).ok()?;
        Some(SubstringTest { column: column.name.clone(), start, length, values, negated })
    }

    /// Whether the test is false on every row of a row group whose values lie between
    /// `min` and `max` (and so true on none of them: a NULL value's substring is NULL).
    fn rules_out(&self, min: &str, max: &str) -> bool {
        let Some((low, high)) = substring_bounds(min, max, self.start, self.length) else { return false };
        if self.negated {
            // Every row's substring is one value, and it is excluded.
            low == high && self.values.contains(low)
        } else {
            self.values.iter().all(|v| v.as_str() < low || v.as_str() > high)
        }
    }
}

/// The value of a string literal that is not NULL.
fn string_literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Literal(value, _) => value.try_as_str().flatten().map(str::to_string),
        _ => None,
    }
}

/// The value of an integer literal that is not NULL.
fn integer_literal(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Literal(value, _) if value.data_type().is_integer() => match value.cast_to(&DataType::Int64).ok()? {
            ScalarValue::Int64(Some(v)) => Some(v),
            _ => None,
        },
        _ => None,
    }
}

/// Bounds of `substr(v, start, length)` over every string `v` between `min` and `max` in
/// byte order, when their shared prefix covers the characters before `start`: all such
/// `v` then differ only from `start` on, and the substring, a truncation of that tail,
/// keeps their order, so it lies between the substrings of `min` and `max` (equal when
/// the prefix covers the substring itself). Characters are Unicode scalar values, as
/// DataFusion's `substr` counts them; byte order of UTF-8 is their order.
fn substring_bounds<'a, 'b>(min: &'a str, max: &'b str, start: usize, length: usize) -> Option<(&'a str, &'b str)> {
    if shared_prefix(min, max).chars().count() < start - 1 {
        return None;
    }
    Some((substr(min, start, length), substr(max, start, length)))
}

/// `substr(v, start, length)` as DataFusion computes it for `start ≥ 1`.
fn substr(v: &str, start: usize, length: usize) -> &str {
    let mut boundaries = v.char_indices().map(|(i, _)| i).chain(std::iter::once(v.len()));
    let Some(begin) = boundaries.nth(start - 1) else { return "" };
    let end = if length == 0 { begin } else { boundaries.nth(length - 1).unwrap_or(v.len()) };
    &v[begin..end]
}

/// The longest prefix, in whole characters, of `min` and `max`: every string between
/// them in byte order starts with it.
fn shared_prefix<'s>(min: &'s str, max: &str) -> &'s str {
    // Without a differing character, the shorter string is the prefix (whole characters
    // of both).
    let end = min
        .char_indices()
        .zip(max.chars())
        .find(|((_, a), b)| a != b)
        .map_or_else(|| min.len().min(max.len()), |((i, _), _)| i);
    &min[..end]
}

/// `plan` (a table's scan) with each Parquet file's row groups that `tests` rule out
/// skipped by an access plan.
async fn skip_row_groups(
    plan: Arc<dyn ExecutionPlan>,
    tests: &[SubstringTest],
    state: &dyn Session,
) -> Result<Arc<dyn ExecutionPlan>> {
    // The scan is built before it is rewritten: collect the files' footers first (async),
    // then rewrite the plan (a synchronous tree walk).
    let mut scans = Vec::new();
    plan.apply(|node| {
        if let Some((config, _)) = parquet_scan(node) {
            scans.push(config.clone());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    let mut rewritten = Vec::with_capacity(scans.len());
    for config in scans {
        rewritten.push(with_access_plans(config, tests, state).await?);
    }
    let mut rewritten = rewritten.into_iter();
    Ok(plan
        .transform_down(|node| {
            if parquet_scan(&node).is_none() {
                return Ok(Transformed::no(node));
            }
            match (node.downcast_ref::<DataSourceExec>(), rewritten.next().flatten()) {
                (Some(exec), Some(config)) => {
                    let exec = exec.clone().with_data_source(Arc::new(config));
                    Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>))
                }
                _ => Ok(Transformed::no(node)),
            }
        })?
        .data)
}

/// The file scan of `node` and its Parquet source when it is a scan of Parquet files.
pub(crate) fn parquet_scan(node: &Arc<dyn ExecutionPlan>) -> Option<(&FileScanConfig, &ParquetSource)> {
    node.downcast_ref::<DataSourceExec>()?.downcast_to_file_source::<ParquetSource>()
}

/// `config` with an access plan on each file some of whose row groups `tests` rule out,
/// and its byte range narrowed to the row groups left (so that DataFusion, which splits
/// scans into byte ranges per partition, splits what is read: without it, when the
/// matching rows sit together in id order, one partition held them all); a file with
/// none left is dropped. None when no row group of any file is ruled out.
async fn with_access_plans(
    mut config: FileScanConfig,
    tests: &[SubstringTest],
    state: &dyn Session,
) -> Result<Option<FileScanConfig>> {
    let store = state.runtime_env().object_store(&config.object_store_url)?;
    let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
    let mut changed = false;
    for group in config.file_groups.iter_mut() {
        // Taken out and put back, so the group keeps its statistics.
        let mut files = Vec::with_capacity(group.len());
        while let Some(file) = group.pop() {
            files.push(file);
        }
        for file in files.into_iter().rev() {
            if file.range.is_some() || file.extension::<ParquetAccessPlan>().is_some() {
                group.push(file);
                continue;
            }
            let metadata = DFParquetMetadata::new(store.as_ref(), &file.object_meta)
                .with_metadata_size_hint(file.metadata_size_hint)
                .with_file_metadata_cache(Some(cache.clone()))
                .fetch_metadata()
                .await?;
            let Some(access) = access_plan(&metadata, tests)? else {
                group.push(file);
                continue;
            };
            changed = true;
            if access.row_group_index_iter().next().is_some() {
                let file = match span_of_row_groups(&metadata, &access, file.object_meta.size) {
                    Some((start, end)) => file.with_range(start, end),
                    None => file,
                };
                group.push(file.with_extension(access));
            }
        }
    }
    Ok(changed.then_some(config))
}

/// The bytes from the first row group `access` reads to the end of the last, as
/// DataFusion places a row group in a byte range: by the offset of its first column's
/// first page. None when a row group has no columns.
fn span_of_row_groups(metadata: &ParquetMetaData, access: &ParquetAccessPlan, file_size: u64) -> Option<(i64, i64)> {
    let offsets = metadata
        .row_groups()
        .iter()
        .map(|group| {
            let column = group.columns().first()?;
            Some(column.dictionary_page_offset().unwrap_or_else(|| column.data_page_offset()))
        })
        .collect::<Option<Vec<i64>>>()?;
    let read = || access.row_group_index_iter().map(|i| offsets[i]);
    let (start, last) = (read().min()?, read().max()?);
    // The next row group's start, or the end of the file.
    let end = offsets.iter().copied().filter(|&o| o > last).min().unwrap_or(file_size as i64);
    Some((start, end))
}

/// The access plan of a file skipping the row groups `tests` rule out; None when none is.
fn access_plan(metadata: &ParquetMetaData, tests: &[SubstringTest]) -> Result<Option<ParquetAccessPlan>> {
    let file = metadata.file_metadata();
    // The file's own schema: the table's may order or type its columns otherwise.
    let schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())?;
    let row_groups = metadata.row_groups();
    let mut access = ParquetAccessPlan::new_all(row_groups.len());
    let mut skipped = false;
    for test in tests {
        let Ok(converter) = StatisticsConverter::try_new(&test.column, &schema, file.schema_descr()) else {
            continue; // not a column of this file
        };
        let mins = as_strings(converter.row_group_mins(row_groups)?)?;
        let maxes = as_strings(converter.row_group_maxes(row_groups)?)?;
        let (Some(mins), Some(maxes)) = (mins, maxes) else { continue };
        for (index, (min, max)) in mins.into_iter().zip(maxes).enumerate() {
            if let (Some(min), Some(max)) = (min, max)
                && access.should_scan(index)
                && test.rules_out(&min, &max)
            {
                access.skip(index);
                skipped = true;
            }
        }
    }
    Ok(skipped.then_some(access))
}

/// The values of a statistics array of a string column (None for another type).
fn as_strings(array: Arc<dyn Array>) -> Result<Option<Vec<Option<String>>>> {
    if !matches!(array.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        return Ok(None);
    }
    let array = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
    Ok(Some(array.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn substrings_count_characters_and_stop_at_the_end() {
        assert_eq!(substr("img_00131071", 5, 2), "00");
        assert_eq!(substr("ab", 3, 0), "");
        assert_eq!(substr("ab", 2, 5), "b");
        assert_eq!(substr("ab", 4, 1), "");
        assert_eq!(substr("é€x", 2, 2), "€x");
    }

    #[test]
    fn substring_bounds_need_the_characters_before_start_shared() {
        // A row group straddling img_01999999 / img_02000000.
        assert_eq!(substring_bounds("img_01966080", "img_02097151", 5, 2), Some(("01", "02")));
        assert_eq!(substring_bounds("img_01966080", "img_02097151", 6, 1), Some(("1", "2")));
        assert_eq!(substring_bounds("img_01966080", "img_02097151", 7, 1), None);
        assert_eq!(substring_bounds("img_00000000", "img_00131071", 5, 2), Some(("00", "00")));
        assert_eq!(substring_bounds("é€1_00", "é€1_99", 2, 2), Some(("€1", "€1")));
        assert_eq!(substring_bounds("a", "b", 1, 3), Some(("a", "b")));
    }

    #[test]
    fn shared_prefix_stops_at_a_character() {
        assert_eq!(shared_prefix("img_0013", "img_0099"), "img_00");
        assert_eq!(shared_prefix("abc", "abc"), "abc");
        assert_eq!(shared_prefix("ab", "abc"), "ab");
        assert_eq!(shared_prefix("abc", "ab"), "ab");
        // 'é' (C3 A9) and 'ê' (C3 AA) share a byte, not a character.
        assert_eq!(shared_prefix("aé", "aê"), "a");
        assert_eq!(shared_prefix("", "a"), "");
    }

    /// A Parquet file of `ids` (in row groups of 100) and their row numbers.
    fn write_ids(dir: &std::path::Path, ids: &[String]) -> std::path::PathBuf {
        use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
        use datafusion::arrow::datatypes::{Field, Schema};
        use datafusion::parquet::arrow::ArrowWriter;
        use datafusion::parquet::file::properties::WriterProperties;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter(ids.iter().map(|id| (id != "NULL").then_some(id.as_str())))),
                Arc::new(Int64Array::from_iter_values(0..ids.len() as i64)),
            ],
        )
        .unwrap();
        let path = dir.join("ids.parquet");
        let properties = WriterProperties::builder().set_max_row_group_row_count(Some(100)).build();
        let mut writer = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, Some(properties)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        path
    }

    /// The row groups the scans of `plan` skip by access plans (each file's once, however
    /// many byte ranges it was split into), and the bytes of the ranges they read.
    fn skipped_row_groups(plan: &Arc<dyn ExecutionPlan>) -> (usize, u64) {
        let (mut skipped, mut bytes) = (HashSet::new(), 0);
        plan.apply(|node| {
            if let Some((config, _)) = parquet_scan(node) {
                for file in config.file_groups.iter().flat_map(|g| g.iter()) {
                    bytes += file.effective_size();
                    if let Some(access) = file.extension::<ParquetAccessPlan>() {
                        skipped.extend(
                            (0..access.len()).filter(|&i| !access.should_scan(i)).map(|i| (file.path().clone(), i)),
                        );
                    }
                }
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .unwrap();
        (skipped.len(), bytes)
    }

    /// Ids in id order (30 row groups), some non-ASCII and some NULL: every query gives
    /// the same rows through the skipping table as through the plain one, and the ones
    /// whose substring is decided by row groups' prefixes skip some.
    #[tokio::test]
    async fn skipping_row_groups_keeps_every_answer() {
        use datafusion::prelude::SessionContext;
        let dir = tempfile::tempdir().unwrap();
        let mut ids: Vec<String> = (0..2500).map(|i| format!("img_{i:05}")).collect();
        ids.extend((0..400).map(|i| format!("é€{}_{:02}", i / 100, i % 100)));
        ids.extend((0..100).map(|_| "NULL".to_string()));
        let path = write_ids(dir.path(), &ids);
        // Three partitions and no minimum size: DataFusion splits each scan into byte
        // ranges, which must still cover every row group left.
        let config =
            datafusion::prelude::SessionConfig::new().with_target_partitions(3).with_repartition_file_min_size(1);
        let ctx = SessionContext::new_with_config(config);
        let url = ListingTableUrl::parse(path.to_string_lossy()).unwrap();
        let schema = SubstringPruningTable::options().infer_schema(&ctx.state(), &url).await.unwrap();
        let table = Arc::new(SubstringPruningTable::try_new(vec![url], schema).unwrap());
        ctx.register_table("skipping", table.clone()).unwrap();
        ctx.register_table("plain", table.files().clone()).unwrap();

        let queries = [
            // (filter, row groups skipped). 30 row groups: `img_00000`–`img_02499` in 25,
            // whose ids share 7 characters (`img_0kk`); `é€j_00`–`é€j_99` for j in 0..4, 4
            // characters (`é€j_`); then one of NULLs, without statistics.
            ("substr(id, 5, 2) = '00'", 15),
            ("substr(id, 5, 2) = '01'", 15),
            ("substring(id FROM 5 FOR 3) IN ('000', '024')", 23),
            ("substr(id, 5, 2) NOT IN ('00', '01', '02')", 25),
            ("substr(id, 5, 2) <> '00'", 10),
            ("'00' = substr(id, 5, 2)", 15),
            ("substr(id, 2, 2) = '€1'", 25 + 3),
            ("substr(id, 1, 0) = ''", 0),
            ("substr(id, 1, 0) <> ''", 29),
            ("substr(id, 5, 2) = '00' AND n % 2 = 0", 15),
            // Bounds: the `é€j_` groups' substrings from 5 lie in ['00', '99'].
            ("substr(id, 5, 2) = 'zz'", 25 + 4),
            ("substr(id, 5, 2) IN ('/', '0', 'zz')", 25 + 4),
            ("substr(id, 5, 3) = '50'", 25),
            // `left(id, n)` is `substr(id, 1, n)`; the `é€` ids sort after every `img_`.
            ("left(id, 6) = 'img_01'", 15 + 4),
            ("left(id, -6) = 'img_01'", 0),
            // Not decided by a prefix, or not of the handled shape: nothing skipped.
            ("substr(id, 9) = '1'", 0),
            ("substr(id, 0, 3) = 'im'", 0),
            ("substr(id, 5, 2) = '00' OR n = 2600", 0),
            ("substr(id, 5, 2) > '00'", 0),
            ("substr(id, 5, 2) IN ('00', NULL)", 0),
            ("upper(substr(id, 5, 2)) = '00'", 0),
        ];
        for (filter, skipped) in queries {
            let run = |table: &str| {
                let ctx = ctx.clone();
                let sql = format!("SELECT n, id FROM {table} WHERE {filter} ORDER BY n");
                async move {
                    let df = ctx.sql(&sql).await.unwrap();
                    let plan = df.clone().create_physical_plan().await.unwrap();
                    let rows = datafusion::arrow::util::pretty::pretty_format_batches(&df.collect().await.unwrap())
                        .unwrap()
                        .to_string();
                    (rows, skipped_row_groups(&plan))
                }
            };
            let (expected, (none, whole_file)) = run("plain").await;
            let (rows, (actual, read)) = run("skipping").await;
            assert_eq!(rows, expected, "{filter}");
            assert_eq!(none, 0);
            assert_eq!(actual, skipped, "row groups skipped for {filter}");
            assert_eq!(whole_file, std::fs::metadata(&path).unwrap().len());
            // The ranges cover the row groups left: for '€1', the 27th to the 30th of 30.
            if filter.contains("'€1'") {
                assert!(read < whole_file / 4, "{read} of {whole_file} bytes in ranges");
            }
        }
    }

    /// DataFusion's `substr(v, start, length)` for `start ≥ 1`, counted the plain way.
    fn substr_by_chars(v: &str, start: usize, length: usize) -> String {
        v.chars().skip(start - 1).take(length).collect()
    }

    proptest! {
        /// The claim the skipping rests on: in byte order, every string between a row
        /// group's min and max has its substring between the bounds `substring_bounds`
        /// gives (when it gives any).
        #[test]
        fn every_value_between_min_and_max_has_its_substring_within_the_bounds(
            mut values in prop::collection::vec("[ab0éê€]{0,6}", 1..40),
            group in 1usize..10,
            start in 1usize..6,
            length in 0usize..4,
        ) {
            values.sort();
            for rows in values.chunks(group) {
                let (min, max) = (rows.first().unwrap(), rows.last().unwrap());
                if let Some((low, high)) = substring_bounds(min, max, start, length) {
                    for v in rows {
                        let sub = substr_by_chars(v, start, length);
                        prop_assert_eq!(substr(v, start, length), sub.as_str());
                        prop_assert!(low <= sub.as_str() && sub.as_str() <= high, "{} in [{}, {}]: {} not in [{}, {}]", v, min, max, sub, low, high);
                    }
                }
            }
        }
    }
}
