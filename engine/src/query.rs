//! Running SQL against a workspace: read-only by default, with errors that point at the fix.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, ScalarValue, TableReference};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::functions_aggregate::count::count_all;
use datafusion::functions_aggregate::expr_fn::{approx_distinct, count, count_distinct, max, min};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::{DataFrame, SessionContext};
use slicetest_datasets::closest;

use crate::error::{EngineError, ErrorKind, Result};

/// Plans `sql` read-only; on failure adds a hint naming the closest table, schema or column.
pub async fn plan(ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
    let state = ctx.state();
    let plan = match state.create_logical_plan(sql).await {
        Ok(plan) => plan,
        Err(e) => return Err(planning_error(ctx, sql, e)),
    };
    let default_dataset = state.config().options().catalog.default_schema.clone();
    slicetest_sql::vectors::check_vector_dataset(&plan, &default_dataset).map_err(|e| EngineError::query(e, None))?;
    // What `SessionContext::sql_with_options` does, with the refusal kept apart from
    // other planning errors instead of recognised later by its text.
    slicetest_sql::read_only()
        .verify_plan(&plan)
        .map_err(|e| EngineError::ReadOnly { message: e.strip_backtrace() })?;
    ctx.execute_logical_plan(plan).await.map_err(|e| EngineError::query(e, None))
}

/// Plans and starts `sql`, returning a stream of record batches.
pub async fn stream(ctx: &SessionContext, sql: &str) -> Result<SendableRecordBatchStream> {
    let df = plan(ctx, sql).await?;
    execute(df).await
}

/// Starts `df`. On a cluster, a stream dropped before its end (a request past its time
/// limit, a client gone) cancels the query's job there.
async fn execute(df: DataFrame) -> Result<SendableRecordBatchStream> {
    #[cfg(feature = "ballista")]
    let stream = slicetest_cluster::execute_stream(df).await;
    #[cfg(not(feature = "ballista"))]
    let stream = df.execute_stream().await;
    stream.map_err(|e| EngineError::query(e, None))
}

/// Starts `df` from row `offset`, at most `limit` rows. A query is paged in its plan (so a
/// sort keeps only the top rows); EXPLAIN and DESCRIBE, which must stay at the root of a
/// plan, are paged after they ran (their output is a few rows). The whole result when
/// both are left out.
pub async fn stream_page(df: DataFrame, offset: usize, limit: Option<usize>) -> Result<SendableRecordBatchStream> {
    let paged = offset > 0 || limit.is_some();
    if !root_only(&df) {
        let df = if paged { df.limit(offset, limit)? } else { df };
        return execute(df).await;
    }
    let all = collect_root_only(df).await?;
    let start = offset.min(all.num_rows());
    let page = all.slice(start, limit.unwrap_or(usize::MAX).min(all.num_rows() - start));
    let schema = page.schema();
    let batches = futures::stream::iter([Ok(page)]);
    Ok(Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, batches)))
}

/// Whether `df` is a statement that must stay at the root of its plan (EXPLAIN, DESCRIBE).
fn root_only(df: &DataFrame) -> bool {
    matches!(df.logical_plan(), LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_))
}

/// Runs a [`root_only`] statement: its output (a few rows) as one batch.
async fn collect_root_only(df: DataFrame) -> Result<RecordBatch> {
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    Ok(concat_batches(&schema, &df.collect().await?)?)
}

/// `error` of planning `sql`; when the query names a table or dataset that does not exist,
/// with a hint at the closest one (DataFusion already suggests close column names, not
/// tables), and a query naming a missing dataset is [`ErrorKind::NotFound`] like the same
/// dataset named anywhere else.
fn planning_error(ctx: &SessionContext, sql: &str, error: DataFusionError) -> EngineError {
    let error = at_end_of_text(error, sql);
    let Some(missing) = missing_table(ctx, sql) else { return EngineError::query(error, None) };
    let catalog = ctx.catalog(slicetest_sql::CATALOG);
    let schemas = catalog.as_ref().map(|c| c.schema_names()).unwrap_or_default();
    if let Some(schema) = missing.schema()
        && catalog.as_ref().is_some_and(|c| c.schema(schema).is_none())
    {
        let hint = match closest(schema, &schemas) {
            Some(c) => format!("there is no dataset {schema:?}; did you mean {c:?}?"),
            None => format!("there is no dataset {schema:?}; datasets are: {}", dataset_list(&schemas)),
        };
        return EngineError::query_of_kind(error, Some(hint), ErrorKind::NotFound);
    }
    let tables: Vec<String> = schemas
        .iter()
        .filter_map(|s| catalog.as_ref()?.schema(s))
        .flat_map(|s| s.table_names())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let hint = match closest(missing.table(), &tables) {
        Some(c) => format!("did you mean the table {c:?}?"),
        None if tables.is_empty() => "the workspace has no datasets yet; run `slicetest ingest` first".into(),
        None => format!("tables are: {}", tables.join(", ")),
    };
    EngineError::query(error, Some(hint))
}

/// sqlparser's error for a query that stops too soon (`… WHERE a = 1 AND`) is "…, found:
/// EOF" without the "at Line: L, Column: C" its other errors end with: give it the place
/// just after the text's last character, so it says where like every parse error.
fn at_end_of_text(error: DataFusionError, sql: &str) -> DataFusionError {
    use datafusion::sql::sqlparser::parser::ParserError;
    let DataFusionError::SQL(parser, backtrace) = error else { return error };
    match *parser {
        ParserError::ParserError(text) if text.ends_with("found: EOF") => {
            let trimmed = sql.trim_end();
            let line = trimmed.lines().count().max(1);
            let column = trimmed.lines().last().map_or(0, |l| l.chars().count()) + 1;
            let text = format!("{text} at Line: {line}, Column: {column}");
            DataFusionError::SQL(Box::new(ParserError::ParserError(text)), backtrace)
        }
        other => DataFusionError::SQL(Box::new(other), backtrace),
    }
}

/// The first table `sql` names that is neither a table of the session nor a table function.
fn missing_table(ctx: &SessionContext, sql: &str) -> Option<TableReference> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(sql, &dialect).ok()?;
    let references = state.resolve_table_references(&statement).ok()?;
    let functions = state.table_functions();
    references.into_iter().find(|r| {
        let function = matches!(r, TableReference::Bare { table } if functions.contains_key(table.as_ref()));
        !function && !ctx.table_exist(r.clone()).unwrap_or(false)
    })
}

fn dataset_list(schemas: &[String]) -> String {
    let names: Vec<&str> =
        schemas.iter().map(String::as_str).filter(|s| *s != slicetest_sql::catalog::EMPTY_SCHEMA).collect();
    if names.is_empty() { "(none yet)".into() } else { names.join(", ") }
}

/// What a query's whole result holds: its row count and, per column, how many values are
/// set, about how many distinct ones, and the range. The web UI shows it under a table's
/// header; `POST /sql` answers it for `"summary": true`.
#[derive(Debug, Clone)]
pub struct QuerySummary {
    /// Rows in the result.
    pub rows: u64,
    /// One entry per column, in the result's order.
    pub columns: Vec<ColumnSummary>,
}

/// One column of a [`QuerySummary`].
#[derive(Debug, Clone)]
pub struct ColumnSummary {
    /// The column's name.
    pub name: String,
    /// Its Arrow type, as Arrow writes it (`Utf8`, `Float32`, `List(Float32)`…).
    pub data_type: String,
    /// Non-NULL values.
    pub non_null: u64,
    /// Distinct non-NULL values, estimated by HyperLogLog (`approx_distinct`) for the types
    /// it hashes, counted exactly for the others; None for nested types.
    pub distinct: Option<u64>,
    /// The smallest value; None for nested types and when every value is NULL.
    pub min: Option<ScalarValue>,
    /// The largest value, as `min`.
    pub max: Option<ScalarValue>,
}

/// Summarises the whole result of `df` in one aggregate pass (see [`QuerySummary`]).
pub async fn summarize(df: DataFrame) -> Result<QuerySummary> {
    // EXPLAIN and DESCRIBE cannot be aggregated over: summarise their (few) rows instead.
    let df = if root_only(&df) {
        let (state, _) = df.clone().into_parts();
        SessionContext::new_with_state(state).read_batch(collect_root_only(df).await?)?
    } else {
        df
    };
    let fields: Vec<(Column, DataType)> = df
        .schema()
        .iter()
        .map(|(qualifier, field)| (Column::from((qualifier, field)), field.data_type().clone()))
        .collect();
    let mut aggregates = vec![count_all().alias("rows")];
    for (i, (column, data_type)) in fields.iter().enumerate() {
        let value = Expr::Column(column.clone());
        aggregates.push(count(value.clone()).alias(format!("n{i}")));
        if data_type.is_nested() {
            continue;
        }
        let distinct = if approx_distinct_hashes(data_type) {
            approx_distinct(value.clone())
        } else {
            count_distinct(value.clone())
        };
        aggregates.push(distinct.alias(format!("d{i}")));
        aggregates.push(min(value.clone()).alias(format!("lo{i}")));
        aggregates.push(max(value).alias(format!("hi{i}")));
    }
    // Through `execute`, so a summary a server gives up on cancels its cluster job too.
    let batches: Vec<RecordBatch> =
        futures::TryStreamExt::try_collect(execute(df.aggregate(vec![], aggregates)?).await?).await?;
    let batch =
        batches.iter().find(|b| b.num_rows() > 0).ok_or_else(|| EngineError::Output("no summary row".into()))?;
    let value = |name: &str| -> Result<Option<ScalarValue>> {
        let Some(array) = batch.column_by_name(name) else { return Ok(None) };
        let scalar = ScalarValue::try_from_array(array, 0)?;
        Ok((!scalar.is_null()).then_some(scalar))
    };
    let as_count = |scalar: Option<ScalarValue>| -> u64 {
        match scalar {
            Some(ScalarValue::Int64(Some(n))) => n.max(0) as u64,
            Some(ScalarValue::UInt64(Some(n))) => n,
            _ => 0,
        }
    };
    let rows = as_count(value("rows")?);
    let mut columns = Vec::with_capacity(fields.len());
    for (i, (column, data_type)) in fields.iter().enumerate() {
        let nested = data_type.is_nested();
        let non_null = as_count(value(&format!("n{i}"))?);
        columns.push(ColumnSummary {
            name: column.name.clone(),
            data_type: data_type.to_string(),
            non_null,
            // HyperLogLog's estimate can pass the count it estimates; never more values
            // than there are.
            distinct: (!nested).then(|| value(&format!("d{i}"))).transpose()?.map(as_count).map(|d| d.min(non_null)),
            min: value(&format!("lo{i}"))?,
            max: value(&format!("hi{i}"))?,
        });
    }
    Ok(QuerySummary { rows, columns })
}

/// Whether `approx_distinct` hashes values of `data_type` (integers, strings, binary); the
/// others (floats, booleans, dates) are counted exactly.
fn approx_distinct_hashes(data_type: &DataType) -> bool {
    data_type.is_integer()
        || matches!(
            data_type,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_summary_describes_the_whole_result() {
        let ctx = SessionContext::new();
        ctx.sql(
            "CREATE TABLE t AS VALUES ('a', 1.5, 10, [1, 2]), ('b', NULL, 10, NULL), ('a', -2.0, 30, [3]), (NULL, 4.0, 20, [])",
        )
        .await
        .unwrap();
        let df =
            plan(&ctx, "SELECT column1 AS label, column2 AS score, column3 AS n, column4 AS xs FROM t").await.unwrap();
        let summary = summarize(df).await.unwrap();
        assert_eq!(summary.rows, 4);
        let [label, score, n, xs] = &summary.columns[..] else { panic!("{summary:?}") };
        assert_eq!((label.name.as_str(), label.non_null, label.distinct), ("label", 3, Some(2)));
        assert_eq!(
            (label.min.clone(), label.max.clone()),
            (Some(ScalarValue::from("a")), Some(ScalarValue::from("b")))
        );
        assert_eq!((score.non_null, score.distinct), (3, Some(3)));
        assert_eq!(
            (score.min.clone(), score.max.clone()),
            (Some(ScalarValue::from(-2.0)), Some(ScalarValue::from(4.0)))
        );
        assert_eq!((n.data_type.as_str(), n.distinct), ("Int64", Some(3)));
        assert_eq!((xs.non_null, xs.distinct, xs.min.clone()), (3, None, None), "nested columns have no range");
        let empty = summarize(plan(&ctx, "SELECT column2 FROM t WHERE false").await.unwrap()).await.unwrap();
        assert_eq!((empty.rows, empty.columns[0].non_null, empty.columns[0].min.clone()), (0, 0, None));
    }

    #[tokio::test]
    async fn queries_and_explains_page() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t AS VALUES (1), (2), (3), (4)").await.unwrap();
        let rows = |sql: &'static str, offset, limit| {
            let ctx = ctx.clone();
            async move {
                let stream = stream_page(plan(&ctx, sql).await.unwrap(), offset, limit).await.unwrap();
                let batches: Vec<_> = datafusion::physical_plan::common::collect(stream).await.unwrap();
                batches.iter().map(|b| b.num_rows()).sum::<usize>()
            }
        };
        assert_eq!(rows("SELECT * FROM t ORDER BY column1", 1, Some(2)).await, 2);
        assert_eq!(rows("SELECT * FROM t", 3, None).await, 1);
        let plan_lines = rows("EXPLAIN SELECT * FROM t", 0, None).await;
        assert!(plan_lines >= 2);
        assert_eq!(rows("EXPLAIN SELECT * FROM t", 1, Some(1)).await, 1);
        assert_eq!(rows("EXPLAIN SELECT * FROM t", 99, Some(1)).await, 0);
        assert_eq!(rows("DESCRIBE t", 0, Some(1)).await, 1);
        let summary = summarize(plan(&ctx, "EXPLAIN SELECT * FROM t").await.unwrap()).await.unwrap();
        assert_eq!(summary.rows as usize, plan_lines);
    }

    #[tokio::test]
    async fn a_join_with_one_column_name_twice_is_summarised() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t AS VALUES (1), (2)").await.unwrap();
        let df = plan(&ctx, "SELECT a.column1, b.column1 FROM t a JOIN t b ON a.column1 = b.column1").await.unwrap();
        let summary = summarize(df).await.unwrap();
        assert_eq!(summary.columns.len(), 2);
        assert!(summary.columns.iter().all(|c| c.non_null == 2 && c.distinct == Some(2)), "{summary:?}");
    }
}
