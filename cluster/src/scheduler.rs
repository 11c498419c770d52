//! `slicetest scheduler`: Ballista's scheduler with slicetest's codec.
//!
//! It receives a query's optimised logical plan from a client, plans it physically (the
//! tagged `images` table builds its joins here), splits it into stages at its shuffles and
//! hands the stages' tasks to the executors that registered with it. It holds no data and
//! keeps its state in memory: a restarted scheduler has forgotten its jobs, and executors
//! register again.

use std::sync::Arc;
use std::time::Duration;

use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use tokio::net::TcpListener;

use crate::codec::{LogicalCodec, PhysicalCodec, Workspaces};
use crate::{ClusterError, Result};

/// How long an executor may stay silent before the scheduler gives its tasks to others.
pub const EXECUTOR_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves a scheduler on `listener` until the process ends.
pub async fn serve(listener: TcpListener) -> Result<()> {
    let address =
        listener.local_addr().map_err(|source| ClusterError::Io { what: "scheduler address".into(), source })?;
    let workspaces = Arc::new(Workspaces::default());
    let mut config = SchedulerConfig::default()
        .with_hostname(address.ip().to_string())
        .with_port(address.port())
        // With no executor registered, a job fails after this long instead of waiting.
        .with_no_executors_grace_period_seconds(EXECUTOR_TIMEOUT.as_secs());
    config.bind_host = address.ip().to_string();
    config.executor_timeout_seconds = EXECUTOR_TIMEOUT.as_secs();
    config.expire_dead_executor_interval_seconds = 2;
    config.override_logical_codec = Some(Arc::new(LogicalCodec::new(workspaces.clone())));
    config.override_physical_codec = Some(Arc::new(PhysicalCodec::new(workspaces)));
    // Planning lists a query's files, so the scheduler reads buckets as executors do.
    let stores = Arc::new(crate::runtime::BucketStores::default());
    config.override_session_builder = Some(Arc::new(crate::runtime::session_builder(stores)));
    config.override_config_producer = Some(Arc::new(crate::runtime::config_producer));
    let ballista = |message: ballista_core::error::BallistaError| ClusterError::Ballista {
        what: "the scheduler",
        message: message.to_string(),
    };
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(ballista)?;
    let scheduler =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config)).await.map_err(ballista)?;
    start_grpc_service_with_listener(listener, scheduler).await.map_err(ballista)
}
