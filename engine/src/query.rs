//! Running SQL against a workspace: read-only by default, with errors that point at the fix.

use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
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
    df.execute_stream().await.map_err(|e| EngineError::query(e, None))
}

/// `error` of planning `sql`; when the query names a table or dataset that does not exist,
/// with a hint at the closest one (DataFusion already suggests close column names, not
/// tables), and a query naming a missing dataset is [`ErrorKind::NotFound`] like the same
/// dataset named anywhere else.
fn planning_error(ctx: &SessionContext, sql: &str, error: DataFusionError) -> EngineError {
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
