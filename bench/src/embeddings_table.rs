//! bench-embeddings-table: reading the SQL table `embeddings` over many parts, where two
//! writers stored some images twice, against DuckDB reading the same part files and
//! keeping the first part's copy the way a DuckDB user would (`QUALIFY row_number() OVER
//! (PARTITION BY image_id, sha256 ORDER BY filename) = 1`).
//!
//! A dataset of `--rows` synthetic images (`synthetic_images`), embedded as slicetest's
//! `embed` stores it: `part-<seq>-<key>.parquet` files of 1024 512-d vectors, plus one
//! later part with a second writer's copies of the first part's images (negated vectors,
//! so a reader that keeps the wrong copy answers differently). Both engines read the same
//! files and keep only vectors of the images as they are now (joined on image_id and
//! sha256), as the catalog does. A third column times DataFusion reading the same files
//! with no deduplication (what `embeddings` did before: faster, but it counts the copied
//! images twice) to show what the first-copy scan costs.
//!
//! Queries, each p50 of `--runs` interleaved runs, results collected as Arrow: a count, a
//! filtered count, one image's vector by id, and every vector.
//!
//! Then the parts are merged as a finished `slicetest embed` merges them
//! (`embeddings::compact_parts`, timed), and the same queries run again over the merged
//! parts (DuckDB over the same merged files).
//!
//! Run: `PATH=$HOME/.cache/slicetest-venv/bin:$PATH cargo run -p slicetest-bench --bin
//! bench-embeddings-table [-- --rows N --runs N]` (needs `pip install duckdb pyarrow`).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use slicetest_bench::{DuckDbPeer, median, synthetic_images, tempdir};
use slicetest_datasets::embeddings::{self, EmbeddingModel};
use slicetest_engine::Engine;

const DIM: usize = 512;
const PART_ROWS: usize = 1024;

struct Args {
    rows: usize,
    runs: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { rows: 100_000, runs: 5 };
    for (flag, value) in slicetest_bench::flag_values()? {
        match flag.as_str() {
            "--rows" => a.rows = value.parse()?,
            "--runs" => a.runs = value.parse()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// Writes the dataset and its embedding parts; returns the parts in read order and the
/// version's image file.
fn build(root: &Path, rows: usize) -> anyhow::Result<(Vec<std::path::PathBuf>, std::path::PathBuf)> {
    let engine = Engine::init(root)?;
    let mut workspace = engine.workspace().clone();
    let images = synthetic_images(rows);
    slicetest_datasets::import_table(&mut workspace, "ds", &images, "bench")?;
    let layout = workspace.layout().clone();
    let model = EmbeddingModel {
        name: "m".into(),
        source: "bench".into(),
        fingerprint: "bench".into(),
        dim: DIM,
        preprocessing: "none".into(),
        slicetest_version: env!("CARGO_PKG_VERSION").into(),
        computed_on: None,
    };
    embeddings::register_model(&layout, "ds", &model)?;
    let ids = images.column(0).as_string::<i32>();
    let shas = images.column(2).as_string::<i32>();
    let mut next = slicetest_bench::xorshift(7);
    let mut first_part = None;
    for start in (0..rows).step_by(PART_ROWS) {
        let end = (start + PART_ROWS).min(rows);
        let part_ids: Vec<String> = (start..end).map(|i| ids.value(i).to_string()).collect();
        let part_shas: Vec<String> = (start..end).map(|i| shas.value(i).to_string()).collect();
        let vectors: Vec<f32> = (0..(end - start) * DIM).map(|_| (next() % 2000) as f32 / 1000.0 - 1.0).collect();
        if first_part.is_none() {
            first_part = Some((part_ids.clone(), part_shas.clone(), vectors.clone()));
        }
        embeddings::append_part(&layout, "ds", "m", &embeddings::part_batch(&part_ids, &part_shas, vectors, DIM)?)?;
    }
    // A second writer's copies of the first part's images, stored last.
    let (ids, shas, vectors) = first_part.context("at least one part")?;
    let negated = vectors.into_iter().map(|v| -v).collect();
    embeddings::append_part(&layout, "ds", "m", &embeddings::part_batch(&ids, &shas, negated, DIM)?)?;
    let parts = embeddings::part_files(&layout, "ds", "m")?.into_iter().map(|p| p.path).collect();
    let version = workspace.latest("ds")?;
    Ok((parts, layout.images_file(&version)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let dir = tempdir()?;
    println!(
        "bench-embeddings-table on {} cores, build profile {}: {} images of {DIM}-d vectors in parts of {PART_ROWS} \
         (+1 part of copies), p50 of {} interleaved runs",
        std::thread::available_parallelism()?.get(),
        slicetest_bench::build_profile(),
        args.rows,
        args.runs
    );
    let (parts, images_file) = build(&dir.join("ws"), args.rows)?;
    println!("{} parts", parts.len());
    compare(&dir, &parts, &images_file, &args).await?;

    let layout = slicetest_datasets::WorkspaceLayout::open(&dir.join("ws"))?;
    let started = Instant::now();
    let merged = embeddings::compact_parts(&layout, "ds", "m")?;
    println!(
        "\nmerged {} parts into {} in {:.1} s (what a finished `slicetest embed` does)",
        merged.parts_before,
        merged.parts_after,
        started.elapsed().as_secs_f64()
    );
    let parts: Vec<_> = embeddings::part_files(&layout, "ds", "m")?.into_iter().map(|p| p.path).collect();
    compare(&dir, &parts, &images_file, &args).await?;
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// Runs the queries over `parts` with slicetest, DuckDB and DataFusion without
/// deduplication, and prints the table.
async fn compare(dir: &Path, parts: &[std::path::PathBuf], images_file: &Path, args: &Args) -> anyhow::Result<()> {
    let engine = Engine::open(dir.join("ws"))?;
    let ctx = engine.context().await?;

    // DataFusion over the same files without deduplication (the table as it was).
    let plain = SessionContext::new();
    let list: Vec<String> = parts.iter().map(|p| p.display().to_string()).collect();
    plain
        .register_parquet(
            "parts",
            &dir.join("ws/datasets/ds/embeddings/m").display().to_string(),
            ParquetReadOptions::default(),
        )
        .await?;
    plain.register_parquet("images", &images_file.display().to_string(), ParquetReadOptions::default()).await?;
    plain
        .sql(
            "CREATE VIEW embeddings AS SELECT p.image_id, 'm' AS model, p.vector FROM parts p \
             JOIN images i ON p.image_id = i.image_id AND p.sha256 = i.sha256",
        )
        .await?;

    let mut duck = DuckDbPeer::start()?;
    let files = list.iter().map(|f| format!("'{f}'")).collect::<Vec<_>>().join(", ");
    duck.run(&format!("CREATE VIEW images AS SELECT * FROM read_parquet('{}')", images_file.display()))?;
    duck.run(&format!(
        "CREATE VIEW embeddings AS SELECT p.image_id, 'm' AS model, p.vector FROM \
         (SELECT * FROM read_parquet([{files}], filename = true) \
          QUALIFY row_number() OVER (PARTITION BY image_id, sha256 ORDER BY filename) = 1) p \
         JOIN images i ON p.image_id = i.image_id AND p.sha256 = i.sha256"
    ))?;

    let probe = format!("img_{:08}", args.rows / 2);
    let queries = [
        ("count", "SELECT count(*) FROM embeddings".to_string()),
        ("count_filtered", "SELECT count(*) FROM embeddings WHERE image_id < 'img_00001000'".to_string()),
        ("one_vector", format!("SELECT vector FROM embeddings WHERE image_id = '{probe}'")),
        ("all_vectors", "SELECT image_id, vector FROM embeddings".to_string()),
    ];
    println!(
        "\n  {:<15} {:>11} {:>11} {:>7} {:>15} {:>9}",
        "query", "slicetest", "DuckDB", "ratio", "no dedupe (DF)", "rows"
    );
    let mut ratios = Vec::new();
    for (name, sql) in &queries {
        let time = |ctx: &SessionContext| {
            let (ctx, sql) = (ctx.clone(), sql.clone());
            async move {
                let started = Instant::now();
                let batches = ctx.sql(&sql).await?.collect().await?;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                anyhow::Ok((ms, batches.iter().map(RecordBatch::num_rows).sum::<usize>(), batches))
            }
        };
        // One untimed run each; the first answer is checked against DuckDB's row count.
        let (_, ours_rows, batches) = time(&ctx).await?;
        let (_, duck_rows) = duck.run_arrow(sql)?;
        time(&plain).await?;
        anyhow::ensure!(ours_rows == duck_rows, "{name}: slicetest {ours_rows} rows, DuckDB {duck_rows}");
        if *name == "count" {
            let n = batches[0].column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0);
            anyhow::ensure!(n as usize == args.rows, "count {n}, expected {}", args.rows);
        }
        let (mut ours, mut theirs, mut undeduped) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.runs {
            ours.push(time(&ctx).await?.0);
            theirs.push(duck.run_arrow(sql)?.0);
            undeduped.push(time(&plain).await?.0);
        }
        let (ours, theirs, undeduped) = (median(&mut ours), median(&mut theirs), median(&mut undeduped));
        let ratio = ours / theirs;
        ratios.push(ratio);
        println!("  {name:<15} {ours:>9.1}ms {theirs:>9.1}ms {ratio:>6.2}x {undeduped:>13.1}ms {ours_rows:>9}");
    }
    let geomean = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
    println!("\n  geometric mean of the ratios: {geomean:.2}x DuckDB");
    Ok(())
}
