//! Running SQL against a workspace: read-only by default, with errors that point at the fix.

use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use slicetest_datasets::closest;

use crate::error::{EngineError, Result};

/// Plans `sql` read-only; on failure adds a hint naming the closest table, schema or column.
pub async fn plan(ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
    match ctx.sql_with_options(sql, slicetest_sql::read_only()).await {
        Ok(df) => Ok(df),
        Err(e) => {
            let hint = hint_for(ctx, &e).await;
            Err(EngineError::query(e, hint))
        }
    }
}

/// Plans and starts `sql`, returning a stream of record batches.
pub async fn stream(ctx: &SessionContext, sql: &str) -> Result<SendableRecordBatchStream> {
    let df = plan(ctx, sql).await?;
    df.execute_stream().await.map_err(|e| EngineError::query(e, None))
}

/// Checks that `sql` parses, returning the parser's message (with line and column) if not.
pub fn parse_check(sql: &str) -> std::result::Result<(), String> {
    Parser::parse_sql(&GenericDialect {}, sql).map(|_| ()).map_err(|e| e.to_string())
}

async fn hint_for(ctx: &SessionContext, err: &DataFusionError) -> Option<String> {
    let text = err.strip_backtrace();
    // DataFusion already suggests close column names ("Did you mean …"); we add the same
    // for tables and datasets, which it does not.
    let missing = text.split("table '").nth(1)?.split('\'').next()?.to_string();
    let parts: Vec<&str> = missing.split('.').collect();
    let table = *parts.last()?;
    let catalog = ctx.catalog(slicetest_sql::CATALOG)?;
    let schemas = catalog.schema_names();
    if parts.len() >= 2 {
        let schema = parts[parts.len() - 2];
        if catalog.schema(schema).is_none() {
            return Some(match closest(schema, &schemas) {
                Some(c) => format!("there is no dataset {schema:?}; did you mean {c:?}?"),
                None => format!("there is no dataset {schema:?}; datasets are: {}", dataset_list(&schemas)),
            });
        }
    }
    let tables: Vec<String> = schemas
        .iter()
        .filter_map(|s| catalog.schema(s))
        .flat_map(|s| s.table_names())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    match closest(table, &tables) {
        Some(c) => Some(format!("did you mean the table {c:?}?")),
        None if tables.is_empty() => Some("the workspace has no datasets yet; run `slicetest ingest` first".into()),
        None => Some(format!("tables are: {}", tables.join(", "))),
    }
}

fn dataset_list(schemas: &[String]) -> String {
    let names: Vec<&str> =
        schemas.iter().map(String::as_str).filter(|s| *s != slicetest_sql::catalog::EMPTY_SCHEMA).collect();
    if names.is_empty() { "(none yet)".into() } else { names.join(", ") }
}
