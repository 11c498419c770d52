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
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use slicetest_datasets::run::{Task, read_predictions, read_run};

use super::{BoxOutcome, RunEvaluation};
use crate::{Engine, EngineError};

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

fn to_batch(outcomes: &[BoxOutcome], boxes: &RecordBatch) -> Result<RecordBatch> {
    let coordinate = |column: usize| -> ArrayRef {
        let values = boxes.column(column).as_primitive::<Float64Type>();
        Arc::new(outcomes.iter().map(|o| o.detection.map(|d| values.value(d as usize))).collect::<Float64Array>())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(outcomes.iter().map(|o| o.image_id.as_str()))),
        Arc::new(StringArray::from_iter_values(outcomes.iter().map(|o| o.category.as_str()))),
        Arc::new(StringArray::from_iter_values(outcomes.iter().map(|o| o.outcome))),
        Arc::new(outcomes.iter().map(|o| o.score).collect::<Float64Array>()),
        Arc::new(outcomes.iter().map(|o| o.object_id).collect::<Int64Array>()),
        Arc::new(outcomes.iter().map(|o| o.iou).collect::<Float64Array>()),
        Arc::new(outcomes.iter().map(|o| o.detection).collect::<UInt32Array>()),
        coordinate(4),
        coordinate(5),
        coordinate(6),
        coordinate(7),
    ];
    debug_assert!(columns.iter().all(|c| c.len() == outcomes.len()));
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// The table function, over the workspace at `root`.
#[derive(Debug)]
pub struct DetectionMatchesFunction {
    root: PathBuf,
}

impl DetectionMatchesFunction {
    /// The function over the workspace at `root`.
    pub fn new(root: PathBuf) -> Self {
        DetectionMatchesFunction { root }
    }
}

impl TableFunctionImpl for DetectionMatchesFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        match args.exprs() {
            [Expr::Literal(ScalarValue::Utf8(Some(run)) | ScalarValue::Utf8View(Some(run)), _)] => {
                Ok(Arc::new(MatchesTable { root: self.root.clone(), run: run.clone() }))
            }
            _ => plan_err!("usage: detection_matches('<run>'): the detection run's name as a string"),
        }
    }
}

#[derive(Debug)]
struct MatchesTable {
    root: PathBuf,
    run: String,
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
        let engine = Engine::open(&self.root).map_err(external)?;
        let manifest = read_run(engine.workspace(), &self.run).map_err(|e| external(e.into()))?;
        if manifest.task != Task::Detection {
            return Err(external(EngineError::InvalidArgument(format!(
                "detection_matches: run {} is a classification run, not a detection run",
                self.run
            ))));
        }
        let info = engine.workspace().dataset(&manifest.dataset).map_err(|e| external(e.into()))?;
        let latest = info.latest().expect("listed datasets have a version");
        let boxes = read_predictions(engine.workspace(), &manifest).map_err(|e| external(e.into()))?;
        let evaluation = RunEvaluation::new(engine.workspace().layout(), latest, &boxes, manifest.score_threshold)
            .map_err(external)?;
        let batch = to_batch(&evaluation.box_outcomes(), &boxes)?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], schema(), projection.cloned())?)
    }
}
