//! `slicetest executor`: Ballista's executor with slicetest's codec.
//!
//! It registers with a scheduler, runs the tasks it is given (reading the workspace's
//! Parquet files itself, so it must see the same workspace path as the client) and serves
//! the shuffle files it wrote to the executors and clients that read them (Arrow Flight).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};

use crate::codec::{LogicalCodec, PhysicalCodec, Workspaces};
use crate::{ClusterError, Result};

/// How an executor is started.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler's host and port.
    pub scheduler: (String, u16),
    /// Where its Flight service listens (port 0: a free port, printed by the CLI) and
    /// the address it gives the scheduler.
    pub bind: SocketAddr,
    /// Where its shuffle files go (default: a temporary directory).
    pub work_dir: Option<PathBuf>,
    /// How many tasks it runs at once (default: the machine's cores).
    pub vcores: Option<usize>,
    /// The memory its tasks share, in bytes (default: Ballista's share of the machine's).
    pub memory_limit: Option<u64>,
}

/// A port nobody listens on now on `ip` (a free one from the OS for 0). Ballista binds its
/// ports itself and tells the scheduler the port it was given, so port 0 cannot go to it.
fn free_port(ip: IpAddr, port: u16) -> Result<u16> {
    if port != 0 {
        return Ok(port);
    }
    let listener = std::net::TcpListener::bind((ip, 0))
        .map_err(|source| ClusterError::Io { what: format!("finding a free port on {ip}"), source })?;
    listener.local_addr().map(|a| a.port()).map_err(|source| ClusterError::Io { what: "a free port".into(), source })
}

/// The Flight address the executor will serve on: `bind` with a free port for port 0.
pub fn resolve_bind(bind: SocketAddr) -> Result<SocketAddr> {
    Ok(SocketAddr::new(bind.ip(), free_port(bind.ip(), bind.port())?))
}

/// Runs an executor until the process is told to stop (SIGTERM, Ctrl-C) or the
/// scheduler stops it.
pub async fn run(options: ExecutorOptions) -> Result<()> {
    let bind = resolve_bind(options.bind)?;
    let workspaces = Arc::new(Workspaces::default());
    let config = ExecutorProcessConfig {
        bind_host: bind.ip().to_string(),
        external_host: Some(bind.ip().to_string()),
        port: bind.port(),
        grpc_port: free_port(bind.ip(), 0)?,
        scheduler_host: options.scheduler.0.clone(),
        scheduler_port: options.scheduler.1,
        // Executors started beside a scheduler wait for it rather than fail at once.
        scheduler_connect_timeout_seconds: 30,
        vcores: options.vcores.unwrap_or(0),
        work_dir: options.work_dir.map(|d| d.to_string_lossy().into_owned()),
        memory_pool_size: options.memory_limit,
        // Often enough that the scheduler notices a lost executor within its timeout.
        executor_heartbeat_interval_seconds: 5,
        override_logical_codec: Some(Arc::new(LogicalCodec::new(workspaces.clone()))),
        override_physical_codec: Some(Arc::new(PhysicalCodec::new(workspaces))),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| ClusterError::Ballista { what: "the executor", message: e.to_string() })
}
