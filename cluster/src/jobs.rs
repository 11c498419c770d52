//! A query's job on the cluster, from the client's side: a result nobody reads any more
//! (a server request that ran past its time limit, a client that hung up) cancels its job,
//! so the executors stop working for it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{CancelJobParams, GetJobStatusParams, job_status};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::DataFrame;
use datafusion_proto::protobuf::LogicalPlanNode;
use futures::Stream;

use crate::runtime::ClusterOptions;
use crate::{ClusterError, scheduler_address};

/// Runs `df` and streams its batches (as `DataFrame::execute_stream`). When `df`'s session
/// runs on a cluster with [`crate::QueryLimits::cancel_dropped`], dropping the stream
/// before its end cancels the query's job there.
pub async fn execute_stream(df: DataFrame) -> Result<SendableRecordBatchStream> {
    let task_ctx = Arc::new(df.task_ctx());
    let options = ClusterOptions::of(task_ctx.session_config());
    let address = options.as_ref().map(|o| o.scheduler.clone()).filter(|s| !s.is_empty());
    let scheduler = options.filter(|o| o.cancel_dropped).map(|o| o.scheduler.clone());
    let plan = df.create_physical_plan().await?;
    let stream = datafusion::physical_plan::execute_stream(plan.clone(), task_ctx)?;
    let stream = match scheduler.filter(|s| !s.is_empty()) {
        Some(scheduler) => Box::pin(CancelOnDrop { stream, plan, scheduler, done: false }),
        None => stream,
    };
    let Some(address) = address else { return Ok(stream) };
    let schema = stream.schema();
    let explained = futures::StreamExt::map(stream, move |next| next.map_err(|e| explained(e, &address)));
    Ok(Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, explained)))
}

/// A cluster query's failure in words that say what and where, where Ballista's do not:
/// the scheduler lost while the query ran (a raw "h2 protocol error … broken pipe"), or a
/// plan that cannot be sent to the executors (which asked to report a DataFusion bug).
fn explained(error: DataFusionError, scheduler: &str) -> DataFusionError {
    let text = error.strip_backtrace();
    let lower = text.to_lowercase();
    let address = scheduler.strip_prefix("df://").unwrap_or(scheduler).to_string();
    if lower.contains("logicalextensioncodec is not provided") || lower.contains("failed to serialize logical plan") {
        let reason = "it reads a table function whose rows DataFusion does not send to executors \
                      (generate_series, range)"
            .to_string();
        return DataFusionError::External(Box::new(ClusterError::NotDistributable { reason }));
    }
    let lost = ["h2 protocol error", "transport error", "broken pipe", "connection reset", "connection refused"];
    if lost.iter().any(|l| lower.contains(l)) {
        return DataFusionError::External(Box::new(ClusterError::Lost { address, reason: text }));
    }
    error
}

/// The job id of the cluster query in `plan`, once the scheduler has accepted it.
pub fn job_id(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    if let Some(query) = plan.downcast_ref::<DistributedQueryExec<LogicalPlanNode>>() {
        return query.job_id().map(|id| id.to_string());
    }
    plan.children().into_iter().find_map(job_id)
}

/// A cluster query's stream that cancels its job when dropped before the end.
struct CancelOnDrop {
    stream: SendableRecordBatchStream,
    plan: Arc<dyn ExecutionPlan>,
    scheduler: String,
    /// The stream ended, or failed (then the job has failed already).
    done: bool,
}

impl Stream for CancelOnDrop {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.stream.as_mut().poll_next(cx);
        if matches!(next, Poll::Ready(None | Some(Err(_)))) {
            self.done = true;
        }
        next
    }
}

impl RecordBatchStream for CancelOnDrop {
    fn schema(&self) -> SchemaRef {
        self.stream.schema()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (Some(job), Ok(runtime)) = (job_id(&self.plan), tokio::runtime::Handle::try_current()) else { return };
        let scheduler = self.scheduler.clone();
        runtime.spawn(async move {
            match cancel(&scheduler, &job).await {
                Ok(()) => tracing::info!("cancelled cluster job {job}: its result is no longer read"),
                Err(e) => tracing::warn!("could not cancel cluster job {job}: {e}"),
            }
        });
    }
}

/// The gRPC endpoint of the scheduler at `url`, and how to say it cannot be reached.
fn endpoint(url: &str) -> crate::Result<(String, impl Fn(String) -> ClusterError)> {
    let (host, port) = scheduler_address(url)?;
    let address = format!("{host}:{port}");
    Ok((format!("http://{address}"), move |reason| ClusterError::Unreachable { address: address.clone(), reason }))
}

/// Asks the scheduler at `url` to cancel job `job` (its running tasks are stopped).
pub async fn cancel(url: &str, job: &str) -> crate::Result<()> {
    let (endpoint, unreachable) = endpoint(url)?;
    let mut client = SchedulerGrpcClient::connect(endpoint).await.map_err(|e| unreachable(e.to_string()))?;
    client
        .cancel_job(CancelJobParams { job_id: job.to_string() })
        .await
        .map_err(|e| ClusterError::Ballista { what: "cancelling a job", message: e.message().to_string() })?;
    Ok(())
}

/// Where job `job` stands on the scheduler at `url`: `queued`, `running`, `successful`, or
/// `failed: <why>` (a cancelled job has failed, saying so).
pub async fn job_state(url: &str, job: &str) -> crate::Result<String> {
    let (endpoint, unreachable) = endpoint(url)?;
    let mut client = SchedulerGrpcClient::connect(endpoint).await.map_err(|e| unreachable(e.to_string()))?;
    let answer = client
        .get_job_status(GetJobStatusParams { job_id: job.to_string() })
        .await
        .map_err(|e| ClusterError::Ballista { what: "asking for a job's status", message: e.message().to_string() })?
        .into_inner();
    Ok(match answer.status.and_then(|s| s.status) {
        None => "unknown".to_string(),
        Some(job_status::Status::Queued(_)) => "queued".to_string(),
        Some(job_status::Status::Running(_)) => "running".to_string(),
        Some(job_status::Status::Successful(_)) => "successful".to_string(),
        Some(job_status::Status::Failed(failed)) => format!("failed: {}", failed.error),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use datafusion::prelude::SessionContext;
    use futures::StreamExt;

    use super::*;
    use crate::local::LocalCluster;
    use crate::{QueryLimits, remote_context};

    /// A query that keeps an executor busy for minutes in a debug build.
    const SLOW: &str = "SELECT count(*) FROM t AS a CROSS JOIN t AS b WHERE (a.v * b.v) % 7 = 3";

    /// A cluster session with table `t`: column `v`, 1 to `rows` (it travels in the plan).
    async fn session(url: &str, rows: i64, query_memory_limit: Option<usize>) -> SessionContext {
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let values = Arc::new(Int64Array::from_iter_values(1..=rows));
        let batch = RecordBatch::try_new(schema.clone(), vec![values]).expect("a batch");
        let table = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]]).expect("a table");
        let ctx = remote_context(
            url,
            &SessionContext::new(),
            QueryLimits { memory: query_memory_limit, cancel_dropped: true },
        )
        .await
        .expect("connects");
        ctx.register_table("t", Arc::new(table)).expect("registers");
        ctx
    }

    async fn wait_for(url: &str, job: &str, done: impl Fn(&str) -> bool) -> String {
        let mut state = String::new();
        for _ in 0..200 {
            state = job_state(url, job).await.expect("the scheduler answers");
            if done(&state) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        state
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_result_dropped_before_its_end_cancels_the_job() {
        let cluster = LocalCluster::start(1, 2).await.expect("starts");
        let ctx = session(&cluster.url, 50_000, None).await;
        let df = ctx.sql(SLOW).await.expect("plans");
        let task_ctx = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await.expect("plans");
        let stream = datafusion::physical_plan::execute_stream(plan.clone(), task_ctx).expect("starts");
        let mut stream = CancelOnDrop { stream, plan: plan.clone(), scheduler: cluster.url.clone(), done: false };
        // The job is submitted when the stream is first polled; it does not end in 2 s.
        assert!(tokio::time::timeout(Duration::from_secs(2), stream.next()).await.is_err(), "the query is slow");
        let job = job_id(&plan).expect("the scheduler accepted the job");
        assert_eq!(job_state(&cluster.url, &job).await.expect("answers"), "running");
        drop(stream);
        let state = wait_for(&cluster.url, &job, |s| s.starts_with("failed")).await;
        assert!(state.starts_with("failed") && state.to_lowercase().contains("cancel"), "{state}");
    }

    #[test]
    fn a_lost_scheduler_and_a_plan_that_cannot_travel_are_said_so() {
        let broken = DataFusionError::Execution(
            "Status { code: Internal, message: \"h2 protocol error: http2 error\" } stream closed because of a broken \
             pipe"
                .into(),
        );
        let said = explained(broken, "df://10.0.0.1:50050").to_string();
        assert!(said.contains("lost the connection to the slicetest scheduler at 10.0.0.1:50050"), "{said}");
        let codec =
            DataFusionError::Internal("failed to serialize logical plan: LogicalExtensionCodec is not provided".into());
        let said = explained(codec, "df://10.0.0.1:50050").to_string();
        assert!(said.contains("cannot run on a cluster") && said.contains("without --cluster"), "{said}");
        assert!(!said.contains("bug"), "{said}");
        let other = explained(DataFusionError::Plan("no such column".into()), "df://h:1").to_string();
        assert!(other.contains("no such column"), "{other}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_result_read_to_the_end_is_not_cancelled() {
        let cluster = LocalCluster::start(1, 2).await.expect("starts");
        let ctx = session(&cluster.url, 1000, None).await;
        let df = ctx.sql("SELECT v % 3 AS k, count(*) FROM t GROUP BY 1").await.expect("plans");
        let task_ctx = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await.expect("plans");
        let stream = datafusion::physical_plan::execute_stream(plan.clone(), task_ctx).expect("starts");
        let stream = CancelOnDrop { stream, plan: plan.clone(), scheduler: cluster.url.clone(), done: false };
        let batches: Vec<RecordBatch> = futures::TryStreamExt::try_collect(stream).await.expect("answers");
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        let job = job_id(&plan).expect("submitted");
        assert_eq!(wait_for(&cluster.url, &job, |s| s != "running").await, "successful");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_memory_limit_holds_on_the_executors() {
        let cluster = LocalCluster::start(1, 2).await.expect("starts");
        // Four million values kept in lists: far more than 1 MiB, and nothing to spill.
        let sql = "SELECT cardinality(array_agg(a.v * 10000 + b.v)) FROM t AS a CROSS JOIN t AS b";
        let limited = session(&cluster.url, 2000, Some(1 << 20)).await;
        let outcome = async {
            let stream = execute_stream(limited.sql(sql).await?).await?;
            futures::TryStreamExt::try_collect::<Vec<RecordBatch>>(stream).await
        };
        let error = outcome.await.expect_err("over the limit");
        assert!(error.to_string().contains("memory limit of 1 MiB"), "{error}");
        let unlimited = session(&cluster.url, 2000, None).await;
        let stream = execute_stream(unlimited.sql(sql).await.expect("plans")).await.expect("runs");
        let batches: Vec<RecordBatch> = futures::TryStreamExt::try_collect(stream).await.expect("answers");
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    }
}
