//! bench-search-server (issue 17, "a vector store the engine owns"): search by image
//! through the real HTTP server over 1,000,000 stored 512-d vectors.
//!
//! Before the engine owned its vectors, every request built a new SQL session and read
//! every vector of the dataset from Parquet before searching. The first request of a
//! fresh server still does exactly that, so this bench times, in the same run:
//!
//! - **cold**: a fresh server's first `GET /search/image/{id}?k=10` (load + search): what
//!   every request cost before; `--cold` fresh servers, median;
//! - **warm**: the next `--requests` requests on one server (vectors already loaded), p50;
//! - the memory the store holds (`VectorStore::resident_bytes`) and the process's RSS growth;
//! - the peer, LanceDB (`bench/scripts/lancedb_search.py`, in `$SLICETEST_BENCH_PYTHON`):
//!   the same vectors in a Lance table, a flat (exact) top-10 search, opening the table
//!   and the first query (cold), then p50 of the rest (warm), in-process (no HTTP).
//!
//! Searches are exact scans on both sides (`SLICETEST_HNSW_MIN_ROWS` above the row count:
//! building an HNSW graph over 1M vectors is bench-embed's subject, not this one's).
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-search-server
//! [--vectors N] [--dim D] [--requests N] [--cold N]`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use datafusion::arrow::array::AsArray;
use slicetest_api::{AppState, ServerConfig};
use slicetest_bench::{median, python_json, synthetic_images, tempdir};
use slicetest_datasets::embeddings::{self, EmbeddingModel};
use slicetest_engine::Engine;

fn main() -> anyhow::Result<()> {
    let (mut vectors, mut dim, mut requests, mut cold) = (1_000_000usize, 512usize, 20usize, 3usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context("a value after the flag")?.parse::<usize>().context("a number");
        match arg.as_str() {
            "--vectors" => vectors = value()?,
            "--dim" => dim = value()?,
            "--requests" => requests = value()?,
            "--cold" => cold = value()?,
            other => bail!("unknown argument {other}"),
        }
    }
    println!("bench-search-server, build profile {}", slicetest_bench::build_profile());
    // SAFETY: set before any thread is started.
    unsafe { std::env::set_var("SLICETEST_HNSW_MIN_ROWS", (vectors + 1).to_string()) };
    let dir = tempdir()?;
    let root = dir.join("ws");
    let started = Instant::now();
    let ids = build_workspace(&root, vectors, dim)?;
    println!("workspace: {vectors} images, {dim}-d vectors written in {:.1} s", started.elapsed().as_secs_f64());
    let runtime = tokio::runtime::Runtime::new()?;
    let query_id = |i: usize| ids[(i * 7919) % ids.len()].clone();

    let mut cold_ms = Vec::new();
    for i in 0..cold {
        let server = Server::start(&runtime, &root)?;
        let t = Instant::now();
        server.search(&query_id(i))?;
        cold_ms.push(t.elapsed().as_secs_f64() * 1e3);
        server.stop(&runtime);
    }
    let server = Server::start(&runtime, &root)?;
    let rss_before = rss_bytes();
    let t = Instant::now();
    server.search(&query_id(100))?;
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    let mut warm_ms = Vec::new();
    for i in 0..requests {
        let t = Instant::now();
        server.search(&query_id(200 + i))?;
        warm_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let store = server.state.engine().vectors();
    let (loads, resident) = (store.loads(), store.resident_bytes());
    server.stop(&runtime);
    let (cold_p50, warm_p50) = (median(&mut cold_ms), median(&mut warm_ms));

    println!("\nslicetest through the server (GET /search/image/{{id}}?k=10, exact scan):");
    println!("  cold (a fresh server's first request = every request before): median {cold_p50:.0} ms of {cold}");
    println!("  warm (vectors kept by the engine's store):                    p50 {warm_p50:.1} ms of {requests}");
    println!("  speed-up: {:.0}x; one load for {} requests (loads: {loads})", cold_p50 / warm_p50, requests + 1);
    println!(
        "  memory held: {:.0} MiB in the store ({:.0} MiB of it vectors); RSS grew {:.0} MiB on the first request",
        resident as f64 / 1048576.0,
        (vectors * dim * 4) as f64 / 1048576.0,
        rss_growth as f64 / 1048576.0
    );
    println!("  (first request of the warm server: {first_ms:.0} ms)");

    let parts = root.join("datasets/bench/embeddings/bench");
    let queries: Vec<String> = (0..requests + 1).map(|i| query_id(200 + i)).collect();
    let queries = queries.join(",");
    match python_json(
        "lancedb_search.py",
        [parts.to_string_lossy().as_ref(), dir.join("lance").to_string_lossy().as_ref(), &queries],
        "lancedb",
    ) {
        Ok(peer) => {
            let (peer_cold, peer_warm) =
                (peer["cold_ms"].as_f64().unwrap_or(f64::NAN), peer["warm_p50_ms"].as_f64().unwrap_or(f64::NAN));
            println!("\nLanceDB {} in-process (flat search, limit 10):", peer["version"].as_str().unwrap_or("?"));
            println!("  cold (open + first query): {peer_cold:.0} ms; warm p50 {peer_warm:.1} ms");
            println!("  ratio LanceDB / slicetest, warm p50: {:.2}x (> 1: slicetest is faster)", peer_warm / warm_p50);
            println!(
                "  same top-10 as slicetest for the first query: {}",
                same_top(&server_hits_of(&root, &runtime, &query_id(200))?, &peer)
            );
        }
        Err(e) => println!("\nLanceDB peer not run: {e:#}"),
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// A workspace with dataset `bench` of `rows` images and one embedding model of
/// deterministic random unit vectors for all of them; returns the image ids.
fn build_workspace(root: &Path, rows: usize, dim: usize) -> anyhow::Result<Vec<String>> {
    let mut workspace = slicetest_datasets::Workspace::init(root)?;
    let table = synthetic_images(rows);
    slicetest_datasets::import_table(&mut workspace, "bench", &table, "bench")?;
    let ids: Vec<String> = table.column(0).as_string::<i32>().iter().map(|s| s.unwrap_or("").to_string()).collect();
    let shas: Vec<String> = table.column(2).as_string::<i32>().iter().map(|s| s.unwrap_or("").to_string()).collect();
    let layout = workspace.layout().clone();
    let model = EmbeddingModel {
        name: "bench".into(),
        source: "bench (random unit vectors)".into(),
        fingerprint: "bench".into(),
        dim,
        preprocessing: "none".into(),
        slicetest_version: env!("CARGO_PKG_VERSION").into(),
        computed_on: None,
    };
    embeddings::register_model(&layout, "bench", &model)?;
    let mut next = slicetest_bench::xorshift(0x9E37_79B9_7F4A_7C15);
    for (chunk_ids, chunk_shas) in ids.chunks(100_000).zip(shas.chunks(100_000)) {
        let mut matrix = Vec::with_capacity(chunk_ids.len() * dim);
        for _ in 0..chunk_ids.len() {
            let start = matrix.len();
            for _ in 0..dim {
                matrix.push((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5);
            }
            let norm = matrix[start..].iter().map(|x| x * x).sum::<f32>().sqrt();
            matrix[start..].iter_mut().for_each(|x| *x /= norm);
        }
        let batch = embeddings::part_batch(chunk_ids, chunk_shas, matrix, dim)?;
        embeddings::append_part(&layout, "bench", "bench", &batch)?;
    }
    Ok(ids)
}

struct Server {
    addr: SocketAddr,
    state: AppState,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    fn start(runtime: &tokio::runtime::Runtime, root: &Path) -> anyhow::Result<Server> {
        let config = ServerConfig { port: 0, ..ServerConfig::default() };
        let state = AppState::new(Engine::open(root)?, &config);
        let (listener, addr) = runtime.block_on(slicetest_api::bind(&config))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = runtime.spawn(slicetest_api::serve(listener, state.clone(), async move {
            stopped.await.ok();
        }));
        Ok(Server { addr, state, stop, task })
    }

    /// `GET /search/image/{id}?k=10` over a real socket; the body (JSON rows).
    fn search(&self, id: &str) -> anyhow::Result<String> {
        let mut stream = std::net::TcpStream::connect(self.addr)?;
        // HTTP/1.0: the body comes whole, not chunked, and the connection closes after it.
        write!(stream, "GET /search/image/{id}?k=10 HTTP/1.0\r\nHost: bench\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response.split_once("\r\n\r\n").context("an HTTP response")?;
        if !head.lines().next().is_some_and(|status| status.contains(" 200 ")) {
            bail!("search failed: {head}\n{body}");
        }
        Ok(body.to_string())
    }

    fn stop(self, runtime: &tokio::runtime::Runtime) {
        let _ = self.stop.send(());
        let _ = runtime.block_on(self.task);
    }
}

fn server_hits_of(root: &Path, runtime: &tokio::runtime::Runtime, id: &str) -> anyhow::Result<Vec<String>> {
    let server = Server::start(runtime, root)?;
    let body = server.search(id)?;
    server.stop(runtime);
    let rows: serde_json::Value = serde_json::from_str(&body)?;
    Ok(rows.as_array().into_iter().flatten().filter_map(|r| r["image_id"].as_str().map(str::to_string)).collect())
}

fn same_top(ours: &[String], peer: &serde_json::Value) -> String {
    let theirs: Vec<String> =
        peer["first_top"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
    if ours == theirs.as_slice() { "yes".into() } else { format!("no (ours {ours:?}, LanceDB {theirs:?})") }
}

/// The process's resident memory (Linux), 0 elsewhere.
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<usize>().ok()))
        .map_or(0, |kb| kb * 1024)
}
