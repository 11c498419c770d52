//! sqllogictest runner: every `sql/tests/slt/*.slt` file runs against a real workspace
//! built from the fixture in `common/`, through the same path as `slicetest sql`
//! (`Engine::execute`: slice statements, else read-only DataFusion SQL). Each file gets
//! its own copy of the workspace, so files that freeze slices do not see each other.
//!
//! Every file runs four times: `images` as the join of the tag rows, as the table
//! `Engine::materialize_images` writes, on a Ballista cluster (a scheduler and two
//! executors in this process, on loopback ports), and on that cluster with the workspace
//! copied into a bucket of a local S3 server (moto's, started from the Python test
//! environment: `SLICETEST_PYTHON`, else `scripts/install-deps.sh`'s virtual environment;
//! without one the S3 run is skipped, saying so): the same queries, the same rows.
//!
//! Run one file with `cargo test --workspace --test slt -- images`. With `--complete`
//! the runner rewrites each file's expected output with what the engine answers now (as
//! DataFusion's `--complete`): write the queries, run it, review the diff (boolean columns
//! come out typed `?`, sqllogictest's "any", where hand-written files say `B`).

#![allow(clippy::print_stdout)] // the runner reports each file, as libtest would

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use futures::TryStreamExt;
use slicetest_engine::{Engine, EngineError};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

/// How long one statement may take in any mode.
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

struct SliceTestDb {
    engine: Engine,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

impl From<DataFusionError> for SltError {
    fn from(e: DataFusionError) -> Self {
        SltError(e.strip_backtrace())
    }
}

impl From<EngineError> for SltError {
    fn from(e: EngineError) -> Self {
        SltError(e.to_string())
    }
}

#[async_trait]
impl AsyncDB for SliceTestDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        // A query that hangs (on a cluster: a lost task) fails, naming itself.
        let answer = async {
            let stream = self.engine.execute(sql).await?;
            let schema = stream.schema();
            let batches: Vec<RecordBatch> = stream.try_collect().await?;
            Ok::<_, SltError>((schema, batches))
        };
        let (schema, batches) = tokio::time::timeout(QUERY_TIMEOUT, answer)
            .await
            .map_err(|_| SltError(format!("no answer within {} s", QUERY_TIMEOUT.as_secs())))??;
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let types = schema.fields().iter().map(|f| column_type(f.data_type())).collect();
        Ok(DBOutput::Rows { types, rows: rows(&batches)? })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "slicetest"
    }
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating() || matches!(t, DataType::Decimal128(..)) => DefaultColumnType::FloatingPoint,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, SltError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SltError(e.to_string()))?;
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| {
                        let v = f.value(row).to_string();
                        if v.is_empty() { "(empty)".to_string() } else { v }
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// How a file's workspace is queried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `images` joins the tag rows per query.
    Joined,
    /// `images` is the wide file `Engine::materialize_images` wrote.
    Materialised,
    /// Joined, executed by a scheduler and two executors.
    Cluster,
    /// The workspace in a bucket of a local S3 server, executed by the cluster.
    ClusterS3,
}

async fn start_cluster() -> slicetest_cluster::local::LocalCluster {
    slicetest_cluster::local::LocalCluster::start(2, 2).await.expect("an in-process cluster starts")
}

/// The bucket of the cluster-on-S3 mode.
const BUCKET: &str = "slicetest-slt";

/// A local S3-compatible server (moto's, from the Python test environment) with one empty
/// bucket; it stops with the runner.
struct S3Server {
    child: std::process::Child,
    /// Holds the local cache of content-keyed files while the server runs.
    _cache: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto's S3 server with the Python in `SLICETEST_PYTHON` (where it must work), or
/// the test environment `scripts/install-deps.sh` makes (where it may be missing: the
/// mode is then skipped, saying so). Points this process's S3 settings at it; call before
/// any thread reads the environment.
fn start_s3() -> Result<Option<S3Server>, Box<dyn std::error::Error>> {
    let required = std::env::var_os("SLICETEST_PYTHON");
    let python = match &required {
        Some(python) => PathBuf::from(python),
        None => {
            let venv = std::env::var_os("SLICETEST_VENV").map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/slicetest-venv")
            });
            let python = venv.join("bin/python");
            if !python.exists() {
                println!("skip cluster-on-S3 mode: no {} (run scripts/install-deps.sh)", python.display());
                return Ok(None);
            }
            python
        }
    };
    let script = format!(
        r#"
import logging, sys
import boto3
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.WARNING)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
boto3.client("s3", endpoint_url=f"http://{{host}}:{{port}}", aws_access_key_id="testing",
             aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket="{BUCKET}")
print(port, flush=True)
sys.stdin.read()
server.stop()
"#
    );
    let mut child = std::process::Command::new(&python)
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("piped")), &mut line)?;
    let Ok(port) = line.trim().parse::<u16>() else {
        let _ = child.kill();
        return Err(format!("{} did not start moto's S3 server (is moto installed?)", python.display()).into());
    };
    let cache = tempfile::tempdir()?;
    let settings = [
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("SLICETEST_CACHE_DIR", cache.path().to_string_lossy().into_owned()),
    ];
    for (key, value) in settings {
        // SAFETY: called from `main` before the runtime or any other thread exists.
        unsafe { std::env::set_var(key, value) };
    }
    Ok(Some(S3Server { child, _cache: cache }))
}

/// Copies the workspace at `dir` into the bucket under `prefix`; its `s3://` URL.
fn upload(dir: &std::path::Path, prefix: &str) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let url = format!("s3://{BUCKET}/{prefix}");
    let storage = slicetest_datasets::Storage::open(std::path::Path::new(&url))?;
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(true) {
        let entry = entry?;
        if entry.file_type().is_file() {
            let relative = entry.path().strip_prefix(dir)?;
            files.push((storage.root().join(relative), bytes::Bytes::from(std::fs::read(entry.path())?)));
        }
    }
    storage.create_many(files)?;
    Ok(url)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let s3 = start_s3()?;
    let result = tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(s3.is_some()));
    drop(s3);
    result
}

async fn run(with_s3: bool) -> Result<(), Box<dyn std::error::Error>> {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let complete = std::env::args().any(|a| a == "--complete");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "slt"));
    files.sort();
    let mut failures = 0;
    let mut passed = 0;
    let cluster = tokio::sync::OnceCell::new();
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        for mode in [Mode::Joined, Mode::Materialised, Mode::Cluster, Mode::ClusterS3] {
            if (complete && mode != Mode::Joined) || (mode == Mode::ClusterS3 && !with_s3) {
                continue;
            }
            let cluster_url = match mode {
                Mode::Cluster | Mode::ClusterS3 => Some(cluster.get_or_init(start_cluster).await.url.clone()),
                _ => None,
            };
            let fixture = Arc::new(common::fixture_workspace().await);
            if mode == Mode::Materialised {
                let engine = Engine::open(fixture.path())?;
                for dataset in ["photos", "street", "traffic"] {
                    let written = engine.materialize_images(Some(dataset)).await?;
                    // photos has taggers and traffic mask columns; street has no tags.
                    assert_eq!(written.is_some_and(|(_, rows)| rows > 0), dataset != "street", "{dataset}");
                }
            }
            let location = match mode {
                Mode::ClusterS3 => {
                    let (path, prefix) = (fixture.path(), name.clone());
                    tokio::task::spawn_blocking(move || upload(&path, &prefix)).await?.map_err(|e| e.to_string())?
                }
                _ => fixture.path().to_string_lossy().into_owned(),
            };
            let how = match mode {
                Mode::Joined => "",
                Mode::Materialised => " (materialised)",
                Mode::Cluster => " (cluster)",
                Mode::ClusterS3 => " (cluster, s3)",
            };
            let mut runner = sqllogictest::Runner::new(move || {
                let location = location.clone();
                let cluster_url = cluster_url.clone();
                // Keeps the local copy (and its images) while the file runs.
                let _fixture = fixture.clone();
                async move {
                    let mut engine = Engine::open(&location)?;
                    if let Some(url) = cluster_url {
                        engine = engine.with_cluster(url)?;
                    }
                    Ok(SliceTestDb { engine })
                }
            });
            // `skipif cluster` marks a statement known not to run on a cluster yet.
            if matches!(mode, Mode::Cluster | Mode::ClusterS3) {
                runner.add_label("cluster");
            }
            let result = if complete {
                runner
                    .update_test_file(
                        file,
                        " ",
                        sqllogictest::default_validator,
                        sqllogictest::default_normalizer,
                        sqllogictest::strict_column_validator,
                    )
                    .await
                    .map_err(|e| e.to_string())
            } else {
                runner.run_file_async(file).await.map_err(|e| e.to_string())
            };
            match result {
                Ok(()) => {
                    passed += 1;
                    println!("{} {name}{how}", if complete { "completed" } else { "ok  " });
                }
                Err(e) => {
                    failures += 1;
                    println!("FAIL {name}{how}\n{e}");
                }
            }
        }
    }
    println!("slt: {passed} passed, {failures} failed");
    if failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}
