//! Shared pieces of the benchmark binaries: synthetic data, timing helpers, and the
//! DuckDB peer (run through Python on the same files in the same run).

pub mod planted;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, bail};
use datafusion::arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

/// The `--flag value` pairs of the command line, in order; a flag without a value is an
/// error naming it. Each bench matches the flags it knows and refuses the others.
pub fn flag_values() -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        pairs.push((flag, value));
    }
    Ok(pairs)
}

/// The build profile this bench was compiled in, as every bench prints it first: numbers
/// from the two profiles are not comparable. The dev profile builds dependencies and the
/// hot crates (datasets, engine, embed, sql, eval) at opt-level 3 (Cargo.toml), so it is
/// close to release for most of the work, but not for the CLI binary, the API and the
/// bench harness itself, which keep opt-level 0 and debug assertions.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "dev (dependencies and datasets/engine/embed/sql/eval at opt-level 3)"
    } else {
        "release"
    }
}

/// "PASS" or "MISS" for a target.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// The median of `v` (sorted in place).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Runs `bench/scripts/<script>` with `args` and parses the one JSON object it prints;
/// `packages` names what to pip-install when Python fails. The interpreter is
/// `$SLICETEST_BENCH_PYTHON` (a virtualenv with torch, say), else `python3`.
pub fn python_json<I, S>(script: &str, args: I, packages: &str) -> anyhow::Result<serde_json::Value>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(script);
    let python = std::env::var("SLICETEST_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(path)
        .args(args)
        .output()
        .with_context(|| format!("running {python} (pip install {packages})"))?;
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// DuckDB in a long-running Python process, so its runs can alternate with slicetest's.
pub struct DuckDbPeer {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl DuckDbPeer {
    /// Starts the peer (`scripts/duckdb_peer.py`).
    pub fn start() -> anyhow::Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/duckdb_peer.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("running python3 (pip install duckdb)")?;
        let input = child.stdin.take().context("peer stdin")?;
        let output = std::io::BufReader::new(child.stdout.take().context("peer stdout")?);
        Ok(Self { child, input, output })
    }

    /// Runs `sql`; returns (milliseconds, result rows).
    pub fn run(&mut self, sql: &str) -> anyhow::Result<(f64, usize)> {
        self.request(serde_json::json!({ "sql": sql }))
    }

    /// Runs `sql` and materialises its result as Arrow (a pyarrow Table), as slicetest's
    /// side collects record batches; returns (milliseconds, result rows).
    pub fn run_arrow(&mut self, sql: &str) -> anyhow::Result<(f64, usize)> {
        self.request(serde_json::json!({ "sql": sql, "fetch": "arrow" }))
    }

    fn request(&mut self, request: serde_json::Value) -> anyhow::Result<(f64, usize)> {
        use std::io::{BufRead, Write};
        writeln!(self.input, "{request}")?;
        let mut line = String::new();
        if self.output.read_line(&mut line)? == 0 {
            bail!("the DuckDB peer exited (is duckdb installed?)");
        }
        let v: serde_json::Value = serde_json::from_str(&line)?;
        if let Some(error) = v["error"].as_str() {
            bail!("DuckDB: {error}");
        }
        Ok((v["ms"].as_f64().context("ms")?, v["rows"].as_u64().context("rows")? as usize))
    }
}

impl Drop for DuckDbPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory for one bench run.
pub fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("slicetest-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Marsaglia's xorshift64 from `seed` (not 0): the benches' fixed-seed data generator.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// `rows` synthetic image rows with tag-like columns, from a fixed-seed generator.
pub fn synthetic_images(rows: usize) -> RecordBatch {
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    const LABELS: [&str; 10] = ["cat", "dog", "car", "person", "bike", "bus", "tree", "sign", "bird", "boat"];
    const SPLITS: [&str; 4] = ["train", "train", "val", "test"];
    const FORMATS: [&str; 2] = ["jpeg", "png"];
    let (mut ids, mut uris, mut hashes) =
        (Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows));
    let (mut width, mut height) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
    let (mut fmt, mut bytes, mut split, mut label, mut bright, mut people) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..rows {
        let r = next();
        ids.push(format!("img_{i:08}"));
        uris.push(format!("/data/images/img_{i:08}.jpg"));
        hashes.push(format!("{:016x}{:016x}{:016x}{:016x}", r, next(), next(), next()));
        width.push(64 + (r % 1920) as i32);
        height.push(64 + ((r >> 16) % 1080) as i32);
        fmt.push(FORMATS[((r >> 32) % 2) as usize]);
        bytes.push(10_000 + ((r >> 8) % 2_000_000) as i64);
        split.push(SPLITS[((r >> 40) % 4) as usize]);
        label.push(LABELS[((r >> 44) % 10) as usize]);
        bright.push(((r >> 11) % 10_000) as f64 / 10_000.0);
        people.push(if (r >> 50).is_multiple_of(10) { None } else { Some(((r >> 52) % 12) as i64) });
    }
    // The core `images` columns, then two tag-like ones.
    let mut fields = slicetest_datasets::record::core_fields();
    fields.push(Field::new("brightness", DataType::Float64, true));
    fields.push(Field::new("num_people", DataType::Int64, true));
    let schema = Schema::new(fields);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids)),
        Arc::new(StringArray::from(uris)),
        Arc::new(StringArray::from(hashes)),
        Arc::new(Int32Array::from(width)),
        Arc::new(Int32Array::from(height)),
        Arc::new(StringArray::from(fmt)),
        Arc::new(Int64Array::from(bytes)),
        Arc::new(StringArray::from(split)),
        Arc::new(StringArray::from(label)),
        Arc::new(Float64Array::from(bright)),
        Arc::new(Int64Array::from(people)),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("consistent synthetic table")
}
