//! `detection_matches('<run>')`: every box of a detection run at its operating point as a
//! SQL table — true positives with the object they matched and the IoU, false positives,
//! detections inside crowd regions, and the objects no detection found — so failures can
//! be queried, joined to `images` and `objects`, and counted per image:
//! `SELECT image_id, count(*) FROM detection_matches('yolo-7') WHERE outcome = 'fn' GROUP BY 1`.
//!
//! Planning only records the run; matching runs when the table is scanned.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use slicetest_datasets::Workspace;
use slicetest_datasets::run::{Task, read_run};

use super::BoxOutcome;
use super::cache::Evaluations;
use crate::EngineError;

/// The columns of `detection_matches()`.
fn schema() -> SchemaRef {
    let float = |name: &str| Field::new(name, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("outcome", DataType::Utf8, false),
        float("score"),
        Field::new("object_id", DataType::Int64, true),
        float("iou"),
        Field::new("detection", DataType::UInt32, true),
        float("x"),
        float("y"),
        float("w"),
        float("h"),
    ]))
}

/// The rows; `boxes` are the run's detection boxes by row.
fn to_batch(outcomes: &[BoxOutcome], boxes: &[[f64; 4]]) -> Result<RecordBatch> {
    let coordinate = |column: usize| -> ArrayRef {
        Arc::new(outcomes.iter().map(|o| o.detection.map(|d| boxes[d as usize][column])).collect::<Float64Array>())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(outcomes.iter().map(|o| o.image_id.as_str()))),
        Arc::new(StringArray::from_iter_values(outcomes.iter().map(|o| o.category.as_str()))),
        Arc::new(StringArray::from_iter_values(outcomes.iter().map(|o| o.outcome))),
        Arc::new(outcomes.iter().map(|o| o.score).collect::<Float64Array>()),
        Arc::new(outcomes.iter().map(|o| o.object_id).collect::<Int64Array>()),
        Arc::new(outcomes.iter().map(|o| o.iou).collect::<Float64Array>()),
        Arc::new(outcomes.iter().map(|o| o.detection).collect::<UInt32Array>()),
        coordinate(0),
        coordinate(1),
        coordinate(2),
        coordinate(3),
    ];
    debug_assert!(columns.iter().all(|c| c.len() == outcomes.len()));
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// The table function, over the workspace at `root`, sharing the engine's matched runs.
#[derive(Debug)]
pub struct DetectionMatchesFunction {
    root: PathBuf,
    evaluations: Arc<Evaluations>,
}

impl DetectionMatchesFunction {
    /// The function over the workspace at `root`.
    pub fn new(root: PathBuf, evaluations: Arc<Evaluations>) -> Self {
        DetectionMatchesFunction { root, evaluations }
    }
}

impl TableFunctionImpl for DetectionMatchesFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        match args.exprs() {
            [Expr::Literal(ScalarValue::Utf8(Some(run)) | ScalarValue::Utf8View(Some(run)), _)] => {
                Ok(Arc::new(MatchesTable {
                    root: self.root.clone(),
                    run: run.clone(),
                    evaluations: self.evaluations.clone(),
                }))
            }
            _ => plan_err!("usage: detection_matches('<run>'): the detection run's name as a string"),
        }
    }
}

#[derive(Debug)]
struct MatchesTable {
    root: PathBuf,
    run: String,
    evaluations: Arc<Evaluations>,
}

#[async_trait]
impl TableProvider for MatchesTable {
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
        let external = |e: EngineError| DataFusionError::External(Box::new(e));
        let workspace = Workspace::open(&self.root).map_err(|e| external(e.into()))?;
        let manifest = read_run(&workspace, &self.run).map_err(|e| external(e.into()))?;
        if manifest.task != Task::Detection {
            return Err(external(EngineError::InvalidArgument(format!(
                "detection_matches: run {} is a classification run, not a detection run",
                self.run
            ))));
        }
        let evaluation = self.evaluations.get(&workspace, &manifest).map_err(external)?;
        let batch = to_batch(&evaluation.box_outcomes(), &evaluation.detection_boxes)?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], schema(), projection.cloned())?)
    }
}
