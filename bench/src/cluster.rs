//! bench-cluster: the foundation filter + group-by over N synthetic image rows, run in one
//! process, on a Ballista cluster of one executor and of two (scheduler and executors in
//! this process, on loopback, as `LocalCluster` starts them), and by DuckDB on the same
//! Parquet file, p50 of interleaved runs; then the two-executor job's stages with their
//! metrics (EXPLAIN ANALYZE, from the scheduler). On one small machine the cluster can only
//! cost: this measures the overhead and shows the plan's shape, not a speed-up.
//!
//! `cargo run --release -p slicetest-bench --bin bench-cluster -- --rows 10000000 --runs 5`

use std::time::Instant;

use anyhow::bail;
use datafusion::arrow::array::{AsArray, RecordBatch};
use slicetest_bench::{DuckDbPeer, median, synthetic_images, tempdir};
use slicetest_cluster::local::LocalCluster;
use slicetest_engine::Engine;

const QUERY: &str = "SELECT label, split, count(*) AS n, avg(brightness) AS mean_brightness, max(width * height) AS max_area \
                     FROM synthetic.images WHERE brightness < 0.5 AND num_people > 2 AND format = 'jpeg' \
                     GROUP BY label, split ORDER BY label, split";

fn args() -> anyhow::Result<(usize, usize)> {
    let (mut rows, mut runs) = (1_000_000, 5);
    for (flag, value) in slicetest_bench::flag_values()? {
        match flag.as_str() {
            "--rows" => rows = value.parse()?,
            "--runs" => runs = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok((rows, runs))
}

async fn run(engine: &Engine, sql: &str) -> anyhow::Result<(f64, Vec<RecordBatch>)> {
    let started = Instant::now();
    let batches = engine.sql(sql).await?.collect().await?;
    Ok((started.elapsed().as_secs_f64() * 1000.0, batches))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (rows, runs) = args()?;
    let cores = std::thread::available_parallelism()?.get();
    println!("bench-cluster on {cores} cores, build profile {}", slicetest_bench::build_profile());
    let dir = tempdir()?;
    let mut engine = Engine::init(dir.join("ws"))?;
    let report = slicetest_datasets::import_table(
        &mut engine.workspace().clone(),
        "synthetic",
        &synthetic_images(rows),
        "bench",
    )?;
    engine = Engine::open(dir.join("ws"))?;
    let manifest = slicetest_datasets::version::read_version(engine.workspace().layout(), "synthetic", report.version)?;
    let parquet = engine.workspace().layout().images_file(&manifest);

    // Each executor gets the machine's cores: one executor can do what one process does.
    let one = LocalCluster::start(1, cores).await?;
    let two = LocalCluster::start(2, cores).await?;
    let on_one = Engine::open(dir.join("ws"))?.with_cluster(one.url.clone())?;
    let on_two = Engine::open(dir.join("ws"))?.with_cluster(two.url.clone())?;
    let mut duck = DuckDbPeer::start()?;
    duck.run("CREATE SCHEMA synthetic")?;
    duck.run(&format!("CREATE VIEW synthetic.images AS SELECT * FROM read_parquet('{}')", parquet.display()))?;

    let engines = [("one process", &engine), ("1 executor", &on_one), ("2 executors", &on_two)];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); engines.len() + 1];
    let mut groups = None;
    for round in 0..=runs {
        for (i, (name, engine)) in engines.iter().enumerate() {
            let (ms, batches) = run(engine, QUERY).await?;
            let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
            if *groups.get_or_insert(n) != n {
                bail!("{name} answered {n} groups, not {}", groups.unwrap_or_default());
            }
            if round > 0 {
                times[i].push(ms);
            }
        }
        let (ms, n) = duck.run(QUERY)?;
        if Some(n) != groups {
            bail!("DuckDB answered {n} groups");
        }
        if round > 0 {
            times[engines.len()].push(ms);
        }
    }
    let p50: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    println!("filter+group-by over {rows} rows, p50 of {runs} interleaved runs (after one warm-up):");
    for (i, (name, _)) in engines.iter().enumerate() {
        println!(
            "  {name:<12} {:>9.1} ms  {:.2}x one process  {:.2}x DuckDB",
            p50[i],
            p50[i] / p50[0],
            p50[i] / p50[3]
        );
    }
    println!("  {:<12} {:>9.1} ms", "DuckDB", p50[3]);

    let (_, explain) = run(&on_two, &format!("EXPLAIN ANALYZE {QUERY}")).await?;
    println!("the two-executor job's stages (EXPLAIN ANALYZE, from the scheduler):");
    for batch in &explain {
        for plan in batch.column(1).as_string::<i32>().iter().flatten() {
            for line in plan.lines().filter(|l| l.contains("Stage[") || l.contains("ShuffleWriterExec")) {
                let line = line.trim();
                // Operator lines carry every metric; the elapsed times are what matter here.
                let short = match line.find("metrics=[") {
                    Some(at) => {
                        let metrics = &line[at..];
                        let elapsed: Vec<&str> =
                            metrics.split(", ").filter(|m| m.contains("time") || m.contains("output_rows")).collect();
                        format!("{} {}", &line[..at.min(60)], elapsed.join(", "))
                    }
                    None => line.to_string(),
                };
                println!("  {short}");
            }
        }
    }
    drop((one, two));
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
