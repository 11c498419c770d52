//! What SQL may do in slicetest.

use datafusion::execution::context::SQLOptions;

/// Read-only SQL, for the CLI and the HTTP API alike: no DDL (`CREATE EXTERNAL TABLE`
/// could read any file on the machine), no DML (`COPY … TO` could write one), no
/// statements such as `SET` that change the session.
pub fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}
