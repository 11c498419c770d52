//! A scheduler and executors inside this process, on loopback ports: for tests and
//! benchmarks that need a real cluster without starting processes (the CLI's
//! `slicetest scheduler` / `slicetest executor` run the same code, one per process).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::executor::ExecutorOptions;
use crate::{ClusterError, Result};

/// A running in-process cluster; its tasks stop when it is dropped.
#[derive(Debug)]
pub struct LocalCluster {
    /// `df://127.0.0.1:PORT`, for `Engine::with_cluster`.
    pub url: String,
    tasks: Vec<JoinHandle<()>>,
}

impl LocalCluster {
    /// Starts a scheduler and `executors` executors of `vcores` task slots each, and waits
    /// until every executor answers on its port.
    pub async fn start(executors: usize, vcores: usize) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| ClusterError::Io { what: "binding a scheduler port".into(), source })?;
        let scheduler =
            listener.local_addr().map_err(|source| ClusterError::Io { what: "scheduler port".into(), source })?;
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = crate::scheduler::serve(listener).await {
                tracing::error!("in-process scheduler stopped: {e}");
            }
        })];
        let mut binds = Vec::new();
        for _ in 0..executors {
            let bind = crate::executor::resolve_bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            binds.push(bind);
            let options = ExecutorOptions {
                scheduler: (scheduler.ip().to_string(), scheduler.port()),
                bind,
                work_dir: None,
                vcores: Some(vcores),
                memory_limit: None,
            };
            tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::executor::run(options).await {
                    tracing::error!("in-process executor stopped: {e}");
                }
            }));
        }
        for bind in binds {
            wait_for_port(bind).await?;
        }
        Ok(LocalCluster { url: format!("df://{scheduler}"), tasks })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Waits up to 30 s for something to listen at `address`.
async fn wait_for_port(address: SocketAddr) -> Result<()> {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ClusterError::Unreachable {
        address: address.to_string(),
        reason: "an executor did not start within 30 s".into(),
    })
}
