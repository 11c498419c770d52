//! The slicetest HTTP API: read-only SQL, text and image search, slices, images by id,
//! model runs, and background embedding jobs, over one opened workspace. `slicetest serve` runs it; the Python
//! client in `python/` and the web UI talk to it. The endpoints are documented in
//! `openapi.json` (served at `/openapi.json`).
//!
//! Safety by default: it binds to loopback; SQL is read-only (DataFusion `SQLOptions`);
//! images are found by id, never by a client's path; writes need the bearer token when
//! one is configured; bodies, query time, concurrent queries and query memory are bounded.

pub mod error;
mod images;
mod routes;
mod state;
pub mod tabular;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

pub use error::{ApiError, ApiResult};
pub use routes::router;
pub use state::AppState;

/// The OpenAPI document of every endpoint.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Default port of `slicetest serve`.
pub const DEFAULT_PORT: u16 = 7878;

/// Bounds on what one request may cost.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock limit of a query, results streamed included.
    pub query_timeout: Duration,
    /// Queries that run at once; more wait for a slot.
    pub concurrent_queries: usize,
    /// Largest JSON or SQL request body.
    pub max_request_bytes: usize,
    /// Largest uploaded image (image search).
    pub max_image_bytes: usize,
    /// Largest predictions upload.
    pub max_upload_bytes: u64,
    /// Largest `k` of a search.
    pub max_k: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            query_timeout: Duration::from_secs(60),
            concurrent_queries: 32,
            max_request_bytes: 1 << 20,
            max_image_bytes: 32 << 20,
            max_upload_bytes: 2 << 30,
            max_k: 10_000,
        }
    }
}

/// How `slicetest serve` listens.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind (default 127.0.0.1).
    pub host: IpAddr,
    /// Port (default 7878; 0 picks a free one).
    pub port: u16,
    /// Bearer token every write must carry (None: writes are open, loopback only).
    pub token: Option<String>,
    /// Allow a non-loopback address without a token.
    pub insecure: bool,
    /// Request bounds.
    pub limits: Limits,
    /// The CLIP model an embedding job uses when the request names none: a checkpoint
    /// directory on the server, or a Hugging Face id (`slicetest serve --clip-model`,
    /// `SLICETEST_CLIP_MODEL`; default [`slicetest_engine::DEFAULT_MODEL`]).
    pub clip_model: String,
    /// Names a loopback server also answers to (`Host`) besides `localhost` and loopback
    /// addresses: a reverse proxy's public name, which it passes through.
    pub allowed_hosts: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
            token: None,
            insecure: false,
            limits: Limits::default(),
            clip_model: slicetest_engine::DEFAULT_MODEL.to_string(),
            allowed_hosts: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// Refuses to expose writes beyond this machine without a token.
    pub fn check(&self) -> Result<(), String> {
        if self.token.as_deref().is_some_and(str::is_empty) {
            return Err("the token is empty".into());
        }
        for name in &self.allowed_hosts {
            let valid = !name.is_empty()
                && name
                    .split('.')
                    .all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            if !valid {
                return Err(format!(
                    "--allowed-host {name:?}: give a host name as a browser sends it in Host, without scheme or \
                     port (slices.example.com)"
                ));
            }
        }
        if !self.host.is_loopback() && self.token.is_none() && !self.insecure {
            return Err(format!(
                "refusing to listen on {} without a token: anyone who can reach it could write to the \
                 workspace. Set --token (or SLICETEST_TOKEN), or pass --insecure if the network is trusted",
                self.host
            ));
        }
        Ok(())
    }
}

/// Binds `config`'s address; returns the listener and the address it got (the real port
/// when 0 was asked for).
pub async fn bind(config: &ServerConfig) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    config.check().map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind((config.host, config.port)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Serves `state` on `listener` until `shutdown` completes, then lets requests in flight
/// finish and cancels the embedding jobs still running (they stop after their current
/// batch; what they stored stays) and the search indexes being built in the background.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let jobs = state.clone();
    let served = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await;
    jobs.stop_background_work();
    served
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_address_needs_a_token_or_insecure() {
        let mut config = ServerConfig::default();
        config.check().unwrap();
        config.host = "0.0.0.0".parse().unwrap();
        assert!(config.check().unwrap_err().contains("--token"));
        config.token = Some("s3cret".into());
        config.check().unwrap();
        config.token = None;
        config.insecure = true;
        config.check().unwrap();
        config.token = Some(String::new());
        assert!(config.check().is_err());
    }
}
