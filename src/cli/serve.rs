//! `slicetest serve`: the HTTP API and the web UI over the workspace.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use clap::Args;
use slicetest_api::{AppState, DEFAULT_PORT, Limits, ServerConfig};
use slicetest_engine::{DEFAULT_MODEL, Engine};

use super::CliError;

/// `println!` that outlives its reader: `slicetest serve | head -1` closes stdout while the
/// server runs on, and a server must not panic for a log line nobody reads.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

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
    /// A name a loopback server also answers to besides localhost and 127.0.0.1 (repeat
    /// or comma-separate): a reverse proxy's public name, passed through as Host.
    #[arg(long = "allowed-host", value_name = "NAME", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
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
    /// Load the embeddings and ready the search indexes at start-up, in the background,
    /// instead of at each one's first search: every dataset's (`--warm`), or the named
    /// datasets' only (`--warm=photos,scans`).
    #[arg(long, value_name = "DATASETS", num_args = 0.., value_delimiter = ',', require_equals = true)]
    pub warm: Option<Vec<String>>,
}

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn run(workspace: &Path, cluster: Option<String>, args: ServeArgs) -> Result<(), CliError> {
    let mut engine = Engine::open(workspace)?
        .with_query_memory(args.query_memory_mb << 20)?
        .with_per_query_memory(args.max_query_memory_mb << 20);
    if let Some(url) = &cluster {
        engine = engine.with_cluster(url.clone())?;
    }
    // A misspelt dataset is an error at start-up, not a warning in the log.
    for dataset in args.warm.iter().flatten() {
        engine.latest_manifest(Some(dataset)).map_err(|e| format!("--warm={dataset}: {e}"))?;
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
        allowed_hosts: args.allowed_hosts,
    };
    let (listener, addr) = slicetest_api::bind(&config).await?;
    // Tests and scripts read this line to find the port when --port 0 was given.
    say!("slicetest serving {} at http://{addr}", workspace.display());
    if let Some(url) = &cluster {
        say!("SQL runs on the cluster at {url}");
    }
    if config.token.is_some() {
        say!("writes need the token (Authorization: Bearer …)");
    }
    if let Some(interval) = engine.workspace().layout().storage().read_consistency_interval() {
        say!(
            "listings and manifests read from the bucket in the last {} s are answered from memory \
             (SLICETEST_READ_CONSISTENCY_INTERVAL): other processes' commits show up at most that late",
            interval.as_secs_f64()
        );
    }
    let state = AppState::new(engine, &config);
    if let Some(datasets) = args.warm {
        let which = if datasets.is_empty() { "every dataset".to_string() } else { datasets.join(", ") };
        say!("loading embeddings and readying search indexes of {which} in the background (--warm)");
        state.warm_search(datasets);
    }
    slicetest_api::serve(listener, state, slicetest_api::shutdown_signal()).await?;
    say!("slicetest serve: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn warm(args: &[&str]) -> Result<Option<Vec<String>>, clap::Error> {
        let cli = Cli::try_parse_from([&["slicetest", "serve"], args].concat())?;
        let Command::Serve(serve) = cli.command else { unreachable!("parsed serve") };
        Ok(serve.warm)
    }

    #[test]
    fn warm_takes_every_dataset_or_the_named_ones() {
        assert_eq!(warm(&[]).unwrap(), None);
        assert_eq!(warm(&["--warm"]).unwrap(), Some(vec![]));
        assert_eq!(warm(&["--warm", "--port", "0"]).unwrap(), Some(vec![]));
        assert_eq!(warm(&["--warm=photos,scans"]).unwrap(), Some(vec!["photos".into(), "scans".into()]));
        assert_eq!(warm(&["--warm=a", "--warm=b"]).unwrap(), Some(vec!["a".into(), "b".into()]));
        // A bare word after --warm is not taken as its value.
        assert!(warm(&["--warm", "photos"]).is_err());
    }
}
