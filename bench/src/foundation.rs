//! bench-foundation: the foundation issue's targets, measured in one run.
//!
//! 1. Ingest throughput on the 70,000 Fashion-MNIST images (target ≥ 5,000 images/s on 2 cores).
//! 2. p50 over 20 runs of a filter + group-by over 1,000,000 synthetic image rows,
//!    slicetest (DataFusion through the workspace catalog) vs DuckDB on the same
//!    Parquet file (target ≤ 1.5× DuckDB's time).
//!
//! Run: `cargo run --release -p slicetest-bench --bin bench-foundation [-- --rows N --runs N]`
//! (needs `apt-get install dataset-fashion-mnist` and `pip install duckdb`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use datafusion::arrow::array::RecordBatch;
use slicetest_bench::{DuckDbPeer, median, synthetic_images, tempdir, verdict};
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
    for (flag, value) in slicetest_bench::flag_values()? {
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
    println!(
        "bench-foundation on {} cores, build profile {}",
        std::thread::available_parallelism()?.get(),
        slicetest_bench::build_profile()
    );

    // 1. Ingest throughput.
    let mut engine = Engine::init(dir.join("ws"))?;
    let options = IngestOptions {
        dataset: "fashion_mnist".into(),
        format: SourceFormat::FashionMnist,
        import: ImportOptions::default(),
        verify: Verify::Full,
        strict: true,
        known: None,
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
    let manifest = slicetest_datasets::version::read_version(engine.workspace().layout(), "synthetic", report.version)?;
    let parquet = engine.workspace().layout().images_file(&manifest);
    let query = QUERY.replace("FROM images", "FROM synthetic.images");
    // Like DuckDB's connection, the session is built once; each run plans and executes.
    // Building it (what every CLI command does first) is timed and reported on its own.
    let started = Instant::now();
    let ctx = engine.context().await?;
    println!("session workspace catalog built in {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    let run =
        || async { slicetest_engine::query::plan(&ctx, &query).await?.collect().await.map_err(anyhow::Error::from) };
    // Runs alternate between the engines, so both see the same machine noise; each gets
    // one untimed warm-up first.
    let mut duck = DuckDbPeer::start()?;
    duck.run(&format!("CREATE VIEW images AS SELECT * FROM read_parquet('{}')", parquet.display()))?;
    let (_, duck_rows) = duck.run(QUERY)?;
    let mut rows = run().await?.iter().map(RecordBatch::num_rows).sum::<usize>();
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let started = Instant::now();
        let batches = run().await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        rows = batches.iter().map(RecordBatch::num_rows).sum();
        let (duck_ms, _) = duck.run(QUERY)?;
        ours.push(ms);
        theirs.push(duck_ms);
        ratios.push(ms / duck_ms);
    }
    let (ours_p50, duck_p50, ratio) = (median(&mut ours), median(&mut theirs), median(&mut ratios));
    println!(
        "query   filter+group-by over {} rows, p50 of {} interleaved runs: slicetest {ours_p50:.1} ms ({rows} groups), \
         DuckDB {duck_p50:.1} ms ({duck_rows} groups)",
        args.rows, args.runs
    );
    println!(
        "query   ratio slicetest/DuckDB = {:.2}x (p50 ratio of pairs {ratio:.2}x) (target <= 1.5x) {}",
        ours_p50 / duck_p50,
        verdict(ours_p50 / duck_p50 <= 1.5)
    );
    let duck = (duck_p50, duck_rows);
    if rows != duck.1 {
        bail!("result sizes differ: slicetest {rows} groups, DuckDB {}", duck.1);
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
