//! `discover_slices('<run>' [, k [, max_level [, min_support]]])`: slice discovery as a SQL
//! table, one row per confirmed slice, so discoveries can be joined, filtered and served
//! like any other table (`SELECT query FROM discover_slices('mlp') WHERE lift > 3`).
//!
//! Planning only records the arguments; the search runs when the table is scanned (it
//! reads the run and the images, which is I/O a planner should not do).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::{DiscoverOptions, Discovery};
use crate::Engine;

/// The columns of `discover_slices()`.
fn schema() -> SchemaRef {
    let float = |name: &str| Field::new(name, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        Field::new("rank", DataType::UInt32, false),
        Field::new("slice", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
        float("score"),
        Field::new("discovery_images", DataType::UInt64, false),
        float("discovery_error_rate"),
        Field::new("images", DataType::UInt64, false),
        float("error_rate"),
        float("error_rate_low"),
        float("error_rate_high"),
        float("rest_error_rate"),
        float("lift"),
        float("p_value"),
        float("adjusted_p"),
        Field::new("confirmed", DataType::Boolean, false),
        Field::new("method", DataType::Utf8, false),
        float("excess_errors"),
    ]))
}

/// One row per reported slice; the confirmation half's numbers are the plain columns.
fn to_batch(found: &Discovery) -> Result<RecordBatch> {
    let s = &found.slices;
    let floats = |f: &dyn Fn(&super::DiscoveredSlice) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(s.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(1..=s.len() as u32)),
        Arc::new(StringArray::from_iter_values(s.iter().map(|x| x.predicates.join(" AND ")))),
        Arc::new(StringArray::from_iter_values(s.iter().map(|x| x.query.as_str()))),
        floats(&|x| x.score),
        Arc::new(UInt64Array::from_iter_values(s.iter().map(|x| x.discovery.size))),
        floats(&|x| x.discovery.error_rate),
        Arc::new(UInt64Array::from_iter_values(s.iter().map(|x| x.confirmation.size))),
        floats(&|x| x.confirmation.error_rate),
        floats(&|x| x.confirmation.interval[0]),
        floats(&|x| x.confirmation.interval[1]),
        floats(&|x| x.confirmation.rest_rate),
        floats(&|x| x.confirmation.lift),
        floats(&|x| x.p_value),
        floats(&|x| x.adjusted_p),
        Arc::new(BooleanArray::from(s.iter().map(|x| x.confirmed).collect::<Vec<_>>())),
        Arc::new(StringArray::from_iter_values(s.iter().map(|x| x.method.as_str()))),
        floats(&|x| x.excess_errors),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// The table function, over the workspace at `root`.
#[derive(Debug)]
pub struct DiscoverSlicesFunction {
    root: PathBuf,
}

impl DiscoverSlicesFunction {
    /// The function over the workspace at `root`.
    pub fn new(root: PathBuf) -> Self {
        DiscoverSlicesFunction { root }
    }
}

impl TableFunctionImpl for DiscoverSlicesFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let usage = "usage: discover_slices('<run>' [, k [, max_level [, min_support]]])";
        let run = match exprs.first() {
            Some(Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _)) => s.clone(),
            _ => return plan_err!("{usage}: the first argument is the run's name as a string"),
        };
        if exprs.len() > 4 {
            return plan_err!("{usage}");
        }
        let mut numbers = Vec::new();
        for (i, e) in exprs.iter().enumerate().skip(1) {
            let what = ["", "k", "max_level", "min_support"][i];
            match e {
                // A negative literal cannot be cast to an unsigned type: that is the usage
                // error too, not a cast error.
                Expr::Literal(v, _) if v.data_type().is_integer() && !v.is_null() => match v.cast_to(&DataType::UInt64)
                {
                    Ok(ScalarValue::UInt64(Some(n))) if n >= 1 => numbers.push(n),
                    _ => return plan_err!("{usage}: {what} is a positive integer"),
                },
                _ => return plan_err!("{usage}: {what} is a positive integer"),
            }
        }
        let defaults = DiscoverOptions::default();
        let options = DiscoverOptions {
            k: numbers.first().map_or(defaults.k, |&n| n as usize),
            max_level: numbers.get(1).map_or(defaults.max_level, |&n| n as usize),
            min_support: numbers.get(2).copied().unwrap_or(defaults.min_support),
            ..defaults
        };
        Ok(Arc::new(DiscoveryTable { root: self.root.clone(), run, options }))
    }
}

/// The not-yet-run discovery of one `discover_slices(…)` call.
#[derive(Debug)]
struct DiscoveryTable {
    root: PathBuf,
    run: String,
    options: DiscoverOptions,
}

#[async_trait]
impl TableProvider for DiscoveryTable {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let external = |e: crate::EngineError| DataFusionError::External(Box::new(e));
        let engine = Engine::open(&self.root).map_err(external)?;
        let found = engine.discover(&self.run, &self.options).await.map_err(external)?;
        let batch = to_batch(&found)?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], schema(), projection.cloned())?)
    }
}
