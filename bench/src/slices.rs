//! bench-slices: the slices issue's targets, measured in one run against DuckDB.
//!
//! 1. Freezing a ~500,000-member slice over 1,000,000 synthetic images (target ≤ 2 s on
//!    2 cores): run the slice query, join to the images for sha256 and split, assign the
//!    hold-out, hash, write the members Parquet and manifest. Peer: DuckDB writing the
//!    same members (`COPY (SELECT image_id, sha256, split … ORDER BY image_id) TO parquet`).
//! 2. The breakdown of 100 frozen slices over the same images (target ≤ 1 s). Peer:
//!    DuckDB computing the same per-slice counts from the same 100 member files.
//!
//! Run: `cargo run --release -p slicetest-bench --bin bench-slices [-- --rows N --runs N]`.

use std::time::Instant;

use anyhow::{Context, bail};
use slicetest_bench::{duckdb_p50, median, synthetic_images, tempdir, verdict};
use slicetest_engine::Engine;

const LABELS: [&str; 10] = ["cat", "dog", "car", "person", "bike", "bus", "tree", "sign", "bird", "boat"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut rows, mut runs) = (1_000_000usize, 5usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: usize = it.next().with_context(|| format!("{flag} needs a value"))?.parse()?;
        match flag.as_str() {
            "--rows" => rows = value,
            "--runs" => runs = value,
            other => bail!("unknown flag {other} (flags: --rows N, --runs N)"),
        }
    }
    let dir = tempdir()?;
    println!("bench-slices on {} cores, {rows} images", std::thread::available_parallelism()?.get());
    let mut workspace = slicetest_datasets::Workspace::init(dir.join("ws"))?;
    let version = slicetest_datasets::import_table(&mut workspace, "synthetic", &synthetic_images(rows), "bench")?;
    let images = workspace.layout().images_file("synthetic", version.version);
    let engine = Engine::open(dir.join("ws"))?;

    // 1. Freeze a half-the-dataset slice, timing each freeze from a fresh definition.
    let mut ours = Vec::new();
    let mut members = 0;
    for run in 0..runs {
        let name = format!("half_{run}");
        engine
            .create_slice(&name, "SELECT image_id FROM images WHERE brightness < 0.5", None, Default::default())
            .await?;
        let started = Instant::now();
        let outcome = engine.freeze_slice(&name, 0.2, 7).await?;
        ours.push(started.elapsed().as_secs_f64() * 1000.0);
        members = outcome.frozen.members;
        engine.drop_slice(&name)?;
    }
    let ours_p50 = median(&mut ours);
    let out = dir.join("duck_members.parquet");
    let setup = [format!("CREATE VIEW images AS SELECT * FROM read_parquet('{}')", images.display())];
    let copy = format!(
        "COPY (SELECT image_id, sha256, split FROM images WHERE brightness < 0.5 ORDER BY image_id) TO '{}' (FORMAT parquet, COMPRESSION zstd)",
        out.display()
    );
    let (duck_p50, _) = duckdb_p50(&setup, &copy, runs)?;
    println!(
        "freeze  {members}-member slice over {rows} images, p50 of {runs}: slicetest {ours_p50:.0} ms (target <= 2000) {}, DuckDB COPY {duck_p50:.0} ms, ratio {:.2}x",
        verdict(ours_p50 <= 2000.0),
        ours_p50 / duck_p50
    );

    // 2. Breakdown of 100 frozen slices: label x brightness decile.
    for (i, label) in LABELS.iter().enumerate() {
        for decile in 0..10 {
            let name = format!("s{i}_{decile}");
            let query = format!(
                "SELECT image_id FROM images WHERE label = '{label}' AND brightness >= {lo} AND brightness < {hi}",
                lo = decile as f64 / 10.0,
                hi = (decile + 1) as f64 / 10.0
            );
            engine.create_slice(&name, &query, None, Default::default()).await?;
            engine.freeze_slice(&name, 0.2, 7).await?;
        }
    }
    let mut ours = Vec::new();
    let mut breakdown = engine.breakdown()?;
    for _ in 0..runs {
        let started = Instant::now();
        breakdown = engine.breakdown()?;
        ours.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let ours_p50 = median(&mut ours);
    let files = dir.join("ws/slices/*/v1.parquet");
    let duck_query = format!(
        "SELECT filename, count(*), count(*) FILTER (WHERE holdout), \
                count(*) FILTER (WHERE NOT holdout AND split = 'train'), \
                count(*) FILTER (WHERE NOT holdout AND split = 'val'), \
                count(*) FILTER (WHERE NOT holdout AND split = 'test') \
         FROM read_parquet('{}', filename = true) GROUP BY filename",
        files.display()
    );
    let (duck_p50, duck_rows) = duckdb_p50(&[], &duck_query, runs)?;
    println!(
        "breakdown {} slices over {rows} images, p50 of {runs}: slicetest {ours_p50:.0} ms (target <= 1000) {}, DuckDB {duck_p50:.0} ms, ratio {:.2}x",
        breakdown.len(),
        verdict(ours_p50 <= 1000.0),
        ours_p50 / duck_p50
    );
    if duck_rows != breakdown.len() {
        bail!("DuckDB saw {duck_rows} slices, slicetest {}", breakdown.len());
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
