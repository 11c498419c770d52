//! `slicetest executor`: Ballista's executor with slicetest's codec.
//!
//! It registers with a scheduler, runs the tasks it is given (reading the workspace's
//! Parquet files itself, so it must see the same workspace path as the client) and serves
//! the shuffle files it wrote to the executors and clients that read them (Arrow Flight).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};

use crate::codec::{LogicalCodec, PhysicalCodec, Workspaces};
use crate::runtime::RuntimeFactory;
use crate::{ClusterError, Result};

/// The share of the machine's memory an executor takes when not told (Ballista's default).
const DEFAULT_MEMORY_SHARE: f64 = 0.7;

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
    /// The memory its tasks share, in bytes (default: 70% of the machine's). A query may
    /// also bring a limit of its own (a server's per-query limit), which then holds on
    /// each executor inside this one.
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

/// The functions an executor finds by name. Ballista's default registry for executors
/// leaves out DataFusion's array functions (`cardinality`, `array_has`, `make_array`, …)
/// that its scheduler and every client plan with, so a query using one failed on the
/// executors ("task could not be prepared or was rejected by executor").
fn function_registry() -> BallistaFunctionRegistry {
    let mut registry = BallistaFunctionRegistry::default();
    for function in ballista_core::extension::ballista_scalar_functions() {
        registry.scalar_functions.entry(function.name().to_string()).or_insert(function);
    }
    // The functions that can make far more than they are given refuse a call over the
    // bound the client's session has (`slicetest_sql::output_bound`).
    for function in registry.scalar_functions.values_mut() {
        if let Some(bounded) = slicetest_sql::output_bound::bounded(function) {
            *function = Arc::new(bounded);
        }
    }
    // And the function the `||` operator is planned as.
    for function in slicetest_sql::output_bound::operator_functions() {
        registry.scalar_functions.insert(function.name().to_string(), Arc::new(function));
    }
    registry
}

/// 70% of the machine's memory (of its cgroup's limit where that is lower), or None when
/// neither can be read.
fn default_memory_limit() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let host = meminfo.as_deref().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib << 10)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    let total = match (host, cgroup) {
        (Some(h), Some(c)) => h.min(c),
        (h, c) => h.or(c)?,
    };
    Some((total as f64 * DEFAULT_MEMORY_SHARE) as u64)
}

/// Runs an executor until the process is told to stop (SIGTERM, Ctrl-C) or the
/// scheduler stops it.
pub async fn run(options: ExecutorOptions) -> Result<()> {
    let bind = resolve_bind(options.bind)?;
    let workspaces = Arc::new(Workspaces::default());
    let memory_limit = options.memory_limit.or_else(default_memory_limit);
    // Ballista's own start-up line says "unbounded": its pool is off, this one holds.
    match memory_limit {
        Some(bytes) => tracing::info!("executor memory: {} MiB shared by every query's tasks", bytes >> 20),
        None => tracing::warn!("executor memory: unbounded (the machine's memory could not be read; give --memory-mb)"),
    }
    let runtimes = Arc::new(RuntimeFactory::new(
        memory_limit,
        options.work_dir.as_ref().map(|d| d.to_string_lossy().into_owned()),
    ));
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
        // Ballista would give each task a pool of its own; slicetest's runtimes hold the
        // executor's limit and each query's ([`RuntimeFactory`]), so Ballista's is off.
        memory_pool_size: Some(0),
        override_runtime_producer: Some(Arc::new(move |config| runtimes.runtime(config))),
        override_config_producer: Some(Arc::new(crate::runtime::config_producer)),
        override_function_registry: Some(Arc::new(function_registry())),
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
