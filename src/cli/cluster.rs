//! `slicetest scheduler` and `slicetest executor`: a Ballista cluster that runs slicetest's
//! SQL (`slicetest sql --cluster`, `slicetest serve --cluster`). See docs/scale.md.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use slicetest_cluster::{DEFAULT_SCHEDULER_PORT, ExecutorOptions};

use super::CliError;

/// Arguments of `slicetest scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on (port 0 picks a free one and prints it). Executors and clients
    /// connect here; it has no authentication, so keep it on a private network.
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_SCHEDULER_PORT)))]
    pub bind: SocketAddr,
}

/// Arguments of `slicetest executor`.
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler, HOST:PORT (or df://HOST:PORT).
    #[arg(long, env = "SLICETEST_SCHEDULER")]
    pub scheduler: String,
    /// Address of this executor's data service (port 0 picks a free one and prints it).
    /// The scheduler, other executors and clients connect to it, so it must be this
    /// machine's address on their network (not 0.0.0.0).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: SocketAddr,
    /// Directory for shuffle files (default: a temporary directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Tasks run at once (default: the machine's cores).
    #[arg(long)]
    pub vcores: Option<usize>,
    /// Memory all queries' tasks on this executor share, in MiB (default: 70% of the
    /// machine's, or of its cgroup's limit). A query sent by `serve` also keeps to the
    /// server's per-query limit here.
    #[arg(long)]
    pub memory_mb: Option<u64>,
}

/// Runs a scheduler until the process is stopped.
pub async fn scheduler(args: SchedulerArgs) -> Result<(), CliError> {
    let listener =
        tokio::net::TcpListener::bind(args.bind).await.map_err(|e| format!("cannot listen on {}: {e}", args.bind))?;
    let address = listener.local_addr()?;
    // Tests and scripts read this line to find the port when port 0 was given.
    println!("slicetest scheduler listening on df://{address}");
    tokio::select! {
        served = slicetest_cluster::scheduler::serve(listener) => served?,
        _ = slicetest_api::shutdown_signal() => println!("slicetest scheduler: stopped"),
    }
    Ok(())
}

/// Runs an executor until the process is stopped.
pub async fn executor(args: ExecutorArgs) -> Result<(), CliError> {
    if args.bind.ip().is_unspecified() {
        return Err(format!(
            "--bind {}: give this machine's address on the cluster's network; the scheduler tells others to connect to it",
            args.bind
        )
        .into());
    }
    let url =
        if args.scheduler.starts_with("df://") { args.scheduler.clone() } else { format!("df://{}", args.scheduler) };
    let scheduler = slicetest_cluster::scheduler_address(&url)?;
    let bind = slicetest_cluster::executor::resolve_bind(args.bind)?;
    println!("slicetest executor at {bind} joining the scheduler at {}:{}", scheduler.0, scheduler.1);
    let options = ExecutorOptions {
        scheduler,
        bind,
        work_dir: args.work_dir,
        vcores: args.vcores,
        memory_limit: args.memory_mb.map(|mb| mb << 20),
    };
    slicetest_cluster::executor::run(options).await?;
    println!("slicetest executor: stopped");
    Ok(())
}
