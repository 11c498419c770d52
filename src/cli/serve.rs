//! `slicetest serve`: the HTTP API and the web UI over the workspace.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use clap::Args;
use slicetest_api::{AppState, DEFAULT_PORT, Limits, ServerConfig};
use slicetest_engine::{DEFAULT_MODEL, Engine};

use super::CliError;

/// Arguments of `slicetest serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs --token (or --insecure).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port (0 picks a free one and prints it).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Bearer token that every write (create/freeze slice, upload run, embedding job) must carry.
    #[arg(long, env = "SLICETEST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Listen on a non-loopback address without a token.
    #[arg(long)]
    pub insecure: bool,
    /// Seconds a query may run, streaming its result included.
    #[arg(long, default_value_t = 60)]
    pub query_timeout: u64,
    /// Memory all running queries share, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub query_memory_mb: usize,
    /// Memory one query may take of that, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub max_query_memory_mb: usize,
    /// Queries that run at once; more wait for a slot.
    #[arg(long, default_value_t = 32)]
    pub concurrent_queries: usize,
    /// Largest predictions upload, in MiB.
    #[arg(long, default_value_t = 2048)]
    pub max_upload_mb: u64,
    /// The CLIP model of embedding jobs that name none (the same default as `slicetest
    /// embed`): a checkpoint directory on this machine or a Hugging Face id.
    #[arg(long, default_value = DEFAULT_MODEL, env = "SLICETEST_CLIP_MODEL")]
    pub clip_model: String,
    /// Load every dataset's embeddings and ready their search indexes at start-up, in the
    /// background, instead of at each one's first search.
    #[arg(long)]
    pub warm: bool,
}

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn run(workspace: &Path, cluster: Option<String>, args: ServeArgs) -> Result<(), CliError> {
    let mut engine = Engine::open(workspace)?
        .with_query_memory(args.query_memory_mb << 20)?
        .with_per_query_memory(args.max_query_memory_mb << 20);
    if let Some(url) = &cluster {
        engine = engine.with_cluster(url.clone())?;
    }
    let limits = Limits {
        query_timeout: Duration::from_secs(args.query_timeout),
        concurrent_queries: args.concurrent_queries,
        max_upload_bytes: args.max_upload_mb << 20,
        ..Limits::default()
    };
    let config = ServerConfig {
        host: args.host,
        port: args.port,
        token: args.token,
        insecure: args.insecure,
        limits,
        clip_model: args.clip_model,
    };
    let (listener, addr) = slicetest_api::bind(&config).await?;
    // Tests and scripts read this line to find the port when --port 0 was given.
    println!("slicetest serving {} at http://{addr}", workspace.display());
    if let Some(url) = &cluster {
        println!("SQL runs on the cluster at {url}");
    }
    if config.token.is_some() {
        println!("writes need the token (Authorization: Bearer …)");
    }
    let state = AppState::new(engine, &config);
    if args.warm {
        println!("loading embeddings and readying search indexes in the background (--warm)");
        state.warm_search();
    }
    slicetest_api::serve(listener, state, slicetest_api::shutdown_signal()).await?;
    println!("slicetest serve: stopped");
    Ok(())
}
