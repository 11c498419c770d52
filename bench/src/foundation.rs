//! bench-foundation: the foundation issue's targets, measured in one run.
//!
//! 1. Ingest throughput on the 70,000 Fashion-MNIST images (target ≥ 5,000 images/s on 2 cores).
//! 2. p50 over 20 runs of a filter + group-by over 1,000,000 synthetic image rows,
//!    slicetest (DataFusion through the workspace catalog) vs DuckDB on the same
//!    Parquet file (target ≤ 1.5× DuckDB's time).
//!
//! Run: `cargo run --release -p slicetest-bench --bin bench-foundation [-- --rows N --runs N]`
//! (needs `apt-get install dataset-fashion-mnist` and `pip install duckdb`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use datafusion::arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use slicetest_engine::{Engine, ImportOptions, IngestOptions, SourceFormat, Verify};

const QUERY: &str = "SELECT label, split, count(*) AS n, avg(brightness) AS mean_brightness, max(width * height) AS max_area \
                     FROM images WHERE brightness < 0.5 AND num_people > 2 AND format = 'jpeg' \
                     GROUP BY label, split ORDER BY label, split";

struct Args {
    fashion: PathBuf,
    rows: usize,
    runs: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { fashion: PathBuf::from("/usr/share/datasets/fashion-mnist"), rows: 1_000_000, runs: 20 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--fashion-mnist" => a.fashion = value.into(),
            "--rows" => a.rows = value.parse()?,
            "--runs" => a.runs = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let dir = tempdir()?;
    println!("bench-foundation on {} cores", std::thread::available_parallelism()?.get());

    // 1. Ingest throughput.
    let mut engine = Engine::init(dir.join("ws"))?;
    let options = IngestOptions {
        dataset: "fashion_mnist".into(),
        format: SourceFormat::FashionMnist,
        import: ImportOptions::default(),
        verify: Verify::Full,
        strict: true,
    };
    let started = Instant::now();
    let report = engine.ingest(&args.fashion, &options).await?;
    let secs = started.elapsed().as_secs_f64();
    let rate = report.total_images as f64 / secs;
    println!(
        "ingest  Fashion-MNIST: {} images in {secs:.2}s = {rate:.0} images/s (target >= 5000) {}",
        report.total_images,
        verdict(rate >= 5000.0)
    );

    // 2. Filter + group-by over synthetic rows, slicetest vs DuckDB on the same Parquet.
    let table = synthetic_images(args.rows);
    let report = slicetest_datasets::import_table(
        &mut Engine::open(dir.join("ws"))?.workspace().clone(),
        "synthetic",
        &table,
        "bench",
    )?;
    let engine = Engine::open(dir.join("ws"))?;
    let parquet = engine.workspace().layout().images_file("synthetic", report.version);
    let query = QUERY.replace("FROM images", "FROM synthetic.images");
    let mut ours = Vec::with_capacity(args.runs);
    let mut rows = engine.sql(&query).await?.collect().await?.iter().map(RecordBatch::num_rows).sum::<usize>();
    for _ in 0..args.runs {
        let started = Instant::now();
        let batches = engine.sql(&query).await?.collect().await?;
        ours.push(started.elapsed().as_secs_f64() * 1000.0);
        rows = batches.iter().map(RecordBatch::num_rows).sum();
    }
    let ours_p50 = median(&mut ours);
    let duck = duckdb_p50(&parquet, args.runs)?;
    let ratio = ours_p50 / duck.0;
    println!(
        "query   filter+group-by over {} rows, p50 of {}: slicetest {ours_p50:.1} ms ({rows} groups), DuckDB {:.1} ms ({} groups)",
        args.rows, args.runs, duck.0, duck.1
    );
    println!("query   ratio slicetest/DuckDB = {ratio:.2}x (target <= 1.5x) {}", verdict(ratio <= 1.5));
    if rows != duck.1 {
        bail!("result sizes differ: slicetest {rows} groups, DuckDB {}", duck.1);
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn duckdb_p50(parquet: &Path, runs: usize) -> anyhow::Result<(f64, usize)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/duckdb_query.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(parquet)
        .arg(runs.to_string())
        .arg(QUERY)
        .output()
        .context("running python3 (pip install duckdb)")?;
    if !out.status.success() {
        bail!("DuckDB bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((v["p50_ms"].as_f64().context("p50_ms")?, v["rows"].as_u64().context("rows")? as usize))
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("slicetest-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `rows` synthetic image rows with tag-like columns, from a fixed-seed generator.
fn synthetic_images(rows: usize) -> RecordBatch {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
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
        people.push(if (r >> 50) % 10 == 0 { None } else { Some(((r >> 52) % 12) as i64) });
    }
    let schema = Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("uri", DataType::Utf8, false),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("width", DataType::Int32, false),
        Field::new("height", DataType::Int32, false),
        Field::new("format", DataType::Utf8, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("split", DataType::Utf8, true),
        Field::new("label", DataType::Utf8, true),
        Field::new("brightness", DataType::Float64, true),
        Field::new("num_people", DataType::Int64, true),
    ]);
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
