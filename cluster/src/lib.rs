//! slicetest's SQL on an Apache DataFusion Ballista cluster.
//!
//! A query is planned where it is asked (the client: `slicetest sql --cluster`, or
//! `slicetest serve --cluster`), with the workspace's catalog, slicetest's functions and
//! the read-only rules, exactly as in one process; Ballista then ships the optimised plan
//! to the scheduler ([`scheduler`]), which splits it into stages at its shuffles and hands
//! their tasks to executors ([`executor`]). Both are Ballista's own, embedded in the
//! slicetest binary so that they decode slicetest's tables and functions ([`codec`]).
//! Executors read the workspace's files themselves: every process must see the same
//! workspace path (one machine, or a shared mount).

pub mod codec;
pub mod executor;
pub mod jobs;
pub mod local;
pub mod runtime;
pub mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;

pub use codec::{LogicalCodec, PhysicalCodec, Workspaces};
pub use executor::ExecutorOptions;
pub use jobs::execute_stream;
pub use runtime::ClusterOptions;

/// The scheduler's address when a URL names no port (Ballista's default).
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// How long a client waits for the scheduler to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong between slicetest and a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The `--cluster` value is not `df://HOST[:PORT]`.
    #[error("invalid cluster address {url:?}: expected df://HOST:PORT (e.g. df://127.0.0.1:50050)")]
    BadUrl {
        /// What was given.
        url: String,
    },
    /// Nothing answers at the scheduler's address.
    #[error("cannot reach the slicetest scheduler at {address}: {reason} (is `slicetest scheduler` running there?)")]
    Unreachable {
        /// host:port.
        address: String,
        /// Why the connection failed.
        reason: String,
    },
    /// The connection to the scheduler broke while a query ran (the scheduler stopped).
    #[error("lost the connection to the slicetest scheduler at {address} while the query ran (did it stop?): {reason}")]
    Lost {
        /// host:port.
        address: String,
        /// What the transport said.
        reason: String,
    },
    /// A query the cluster cannot run: its plan does not travel to the executors.
    #[error("this query cannot run on a cluster: {reason}; run it without --cluster")]
    NotDistributable {
        /// Why.
        reason: String,
    },
    /// Ballista refused to start or stopped with an error.
    #[error("{what}: {message}")]
    Ballista {
        /// Which component.
        what: &'static str,
        /// Ballista's message.
        message: String,
    },
    /// DataFusion failed while the client session was set up.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// A socket could not be bound or read.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ClusterError {
    /// What kind of failure this is (see [`slicetest_error::ErrorKind`]).
    pub fn kind(&self) -> slicetest_error::ErrorKind {
        use slicetest_error::ErrorKind;
        match self {
            ClusterError::BadUrl { .. } => ErrorKind::InvalidArgument,
            ClusterError::Unreachable { .. } | ClusterError::Lost { .. } => ErrorKind::ClusterUnavailable,
            ClusterError::NotDistributable { .. } => ErrorKind::InvalidQuery,
            ClusterError::Ballista { .. } | ClusterError::DataFusion(_) | ClusterError::Io { .. } => {
                ErrorKind::Internal
            }
        }
    }
}

/// `Result` with a [`ClusterError`].
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// `host:port` of a `df://HOST[:PORT]` cluster URL.
pub fn scheduler_address(url: &str) -> Result<(String, u16)> {
    let bad = || ClusterError::BadUrl { url: url.to_string() };
    let rest = url.strip_prefix("df://").ok_or_else(bad)?.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
        None => (rest, DEFAULT_SCHEDULER_PORT),
    };
    if host.is_empty() || host.contains('/') {
        return Err(bad());
    }
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

/// What a server bounds each of its queries by on a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryLimits {
    /// Bytes each query may hold on each executor.
    pub memory: Option<usize>,
    /// Whether a job whose result is dropped before its end (a request past its time
    /// limit, a client gone) is cancelled ([`execute_stream`]). The client then asks for
    /// the job's status every 50 ms instead of being told its end, which costs a short
    /// query up to that much; a one-shot command, which reads every result to its end,
    /// leaves this off.
    pub cancel_dropped: bool,
}

/// `ctx` (its catalog, functions and settings) with its queries executed by the cluster at
/// `url`: planning stays here; execution goes to the scheduler, within `limits`. Fails at
/// once, naming the address, when the scheduler cannot be reached.
pub async fn remote_context(url: &str, ctx: &SessionContext, limits: QueryLimits) -> Result<SessionContext> {
    let (host, port) = scheduler_address(url)?;
    let address = format!("{host}:{port}");
    let unreachable = |reason: String| ClusterError::Unreachable { address: address.clone(), reason };
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((host.as_str(), port))).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => return Err(unreachable(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))),
    }
    let state = ctx.state();
    let mut config = state
        .config()
        .clone()
        .upgrade_for_ballista()
        .with_ballista_logical_extension_codec(Arc::new(LogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(PhysicalCodec::default()))
        .with_option_extension(ClusterOptions {
            scheduler: format!("df://{address}"),
            query_memory_limit: limits.memory.unwrap_or(0),
            cancel_dropped: limits.cancel_dropped,
        });
    // Only a client that asks for the job's status learns the job's id while it runs (told
    // its end, it learns the id with the end), which cancelling needs.
    if limits.cancel_dropped {
        config.options_mut().set(ballista_core::config::BALLISTA_CLIENT_PULL, "true")?;
    }
    // Ballista's static planner, not its adaptive one: the adaptive planner serialises the
    // expressions of the nodes it adds without the codec it was given (an ORDER BY
    // clip_similarity(…) then cannot reach the executors), and never finished a UNION ALL
    // of two counts answered from statistics. Both are in sql/tests/slt.
    config.options_mut().set(ballista_core::config::BALLISTA_ADAPTIVE_PLANNER_ENABLED, "false")?;
    let functions: Vec<_> = state.scalar_functions().values().cloned().collect();
    let state = SessionStateBuilder::new_from_existing(state).with_config(config).build();
    let remote = SessionContext::remote_with_state(&format!("df://{address}"), state).await?;
    // Ballista's upgrade replaces the scalar functions with its defaults: slicetest's
    // (in_slice, clip_similarity, …) are registered again, as they were.
    for function in functions {
        if remote.state().scalar_functions().get(function.name()).is_none() {
            remote.register_udf(function.as_ref().clone());
        }
    }
    // And DataFusion's functions that can make far more than they are given are bounded
    // again, as in the session it came from (`slicetest_sql::output_bound`).
    slicetest_sql::output_bound::bound_function_outputs(&remote);
    Ok(remote)
}
