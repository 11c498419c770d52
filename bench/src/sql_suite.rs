//! bench-sql: a suite of the query shapes users run, slicetest against DuckDB on the same
//! Parquet files in the same run.
//!
//! Two datasets of the same synthetic image rows (`synthetic_images`, fixed seed):
//! `plain`, untagged, and `tagged`, with three per-image tag imports (`quality`, `scene`,
//! `people`) and a detections import (`boxes`), materialised as slicetest keeps a tagged
//! dataset (one wide `images` file per version and tag set). A third dataset, `other`,
//! holds a third of the same image ids, for joins; each of the two has a frozen slice of
//! about a fifth of its images. DuckDB reads exactly the files slicetest's catalog reads:
//! the version's images file (`plain`), the wide file (`tagged`), the tag parts joined
//! to the current images as the `detections` view does, and the slices' frozen member
//! files; `slice('…')` is DuckDB's `read_parquet` of the same member file.
//!
//! Every query runs on both engines alternately (one untimed warm-up each, then `--runs`
//! pairs), both materialising their result as Arrow (DataFusion's batches; DuckDB's
//! `fetch_arrow_table`). Printed per query: the p50s, the ratio, the row counts (which must
//! agree); per shape: the geometric mean of the ratios and the largest.
//!
//! Targets (issue 23): geometric mean ≤ 1.0× DuckDB and no query above 2×, untagged and
//! tagged, at 1M and 10M rows.
//!
//! Run: `PATH=$HOME/.cache/slicetest-venv/bin:$PATH cargo run --release -p slicetest-bench
//! --bin bench-sql [-- --rows N --runs N --only NAME,…]` (needs `pip install duckdb pyarrow`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use datafusion::arrow::array::RecordBatch;
use slicetest_bench::{DuckDbPeer, median, synthetic_images, synthetic_tag_tables, tempdir, verdict, write_parquet};
use slicetest_engine::{Engine, ImportKind, SliceThresholds, TagImportOptions};

/// One query of the suite: a name, slicetest's text and DuckDB's (the same SQL with
/// `{images}`, `{other}`, `{slice}` and `{detections}` spelled for each engine), and
/// whether it needs the tagged dataset.
struct Case {
    name: &'static str,
    sql: &'static str,
    tagged_only: bool,
}

const fn case(name: &'static str, sql: &'static str) -> Case {
    Case { name, sql, tagged_only: false }
}

const fn tag_case(name: &'static str, sql: &'static str) -> Case {
    Case { name, sql, tagged_only: true }
}

/// The suite: the DuckDB-parity test's kinds of query (filters, NULLs, strings, group-bys,
/// windows, joins, set operations) over the bench's columns, plus top-k, slice joins and,
/// on the tagged dataset, queries over tag columns and detections.
const CASES: &[Case] = &[
    case("count", "SELECT count(*) FROM {images}"),
    case(
        "filter_group_by",
        "SELECT label, split, count(*) AS n, avg(brightness) AS b, max(width * height) AS area FROM {images} \
         WHERE brightness < 0.5 AND num_people > 2 AND format = 'jpeg' GROUP BY label, split ORDER BY label, split",
    ),
    case("group_by_two", "SELECT label, split, count(*) FROM {images} GROUP BY 1, 2 ORDER BY 1, 2"),
    case("filter_rows", "SELECT image_id, width, height FROM {images} WHERE width > 1900 AND height <= 100"),
    case("in_or", "SELECT count(*) FROM {images} WHERE label IN ('cat', 'dog') OR split = 'val'"),
    case("is_null", "SELECT split, count(*) FROM {images} WHERE num_people IS NULL GROUP BY split"),
    case("between", "SELECT count(*), avg(bytes) FROM {images} WHERE num_people BETWEEN 2 AND 5"),
    case("like", "SELECT count(*) FROM {images} WHERE uri LIKE '%77.jpg' AND image_id NOT LIKE 'img_000%'"),
    case("string_funcs", "SELECT upper(format), count(*) FROM {images} WHERE substr(image_id, 5, 2) = '00' GROUP BY 1"),
    // `||` runs as the bounded `string_concat` (sql/src/output_bound.rs).
    case("concat", "SELECT label || '/' || split, max(length(image_id || uri)) FROM {images} GROUP BY 1 ORDER BY 1"),
    case("having", "SELECT label, count(*) AS n FROM {images} GROUP BY label HAVING count(*) > 1000"),
    case(
        "aggregates",
        "SELECT label, avg(brightness), min(width), max(height), sum(bytes), stddev_samp(brightness) FROM {images} GROUP BY label",
    ),
    case("count_distinct", "SELECT split, count(DISTINCT label), count(DISTINCT width) FROM {images} GROUP BY split"),
    case("median", "SELECT label, median(brightness) FROM {images} GROUP BY label"),
    case(
        "case_bucket",
        "SELECT CASE WHEN width < 640 THEN 's' WHEN width < 1280 THEN 'm' ELSE 'l' END, count(*) FROM {images} GROUP BY 1",
    ),
    case("distinct", "SELECT DISTINCT split, label, format FROM {images}"),
    case("top_k", "SELECT image_id, bytes FROM {images} ORDER BY bytes DESC, image_id LIMIT 10"),
    // The web UI's home page and its explorer's default query: rows in id order.
    case("first_page_by_id", "SELECT image_id, label FROM {images} ORDER BY image_id LIMIT 24"),
    case("ordered_by_id", "SELECT image_id, label, split FROM {images} WHERE label = 'cat' ORDER BY image_id"),
    case(
        "top_k_filtered",
        "SELECT image_id, brightness FROM {images} WHERE label = 'cat' ORDER BY brightness DESC, image_id LIMIT 100",
    ),
    case(
        "window_top_per_label",
        "SELECT * FROM (SELECT image_id, label, row_number() OVER (PARTITION BY label ORDER BY bytes DESC, image_id) AS r \
         FROM {images}) WHERE r <= 3",
    ),
    case(
        "window_running",
        "SELECT split, sum(bytes) OVER (PARTITION BY split ORDER BY image_id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS s \
         FROM {images} WHERE label = 'bus'",
    ),
    case(
        "join_other",
        "SELECT o.label, count(*), avg(i.bytes) FROM {images} i JOIN {other} o USING (image_id) GROUP BY o.label",
    ),
    case(
        "left_join",
        "SELECT i.split, count(o.image_id) FROM {images} i LEFT JOIN {other} o ON i.image_id = o.image_id GROUP BY i.split",
    ),
    case(
        "in_subquery",
        "SELECT count(*) FROM {images} WHERE image_id IN (SELECT image_id FROM {other} WHERE width < 200)",
    ),
    case(
        "set_ops",
        "SELECT label FROM {images} WHERE split = 'train' AND width > 1900 INTERSECT SELECT label FROM {images} WHERE split = 'test' \
         EXCEPT SELECT 'dog'",
    ),
    case(
        "slice_join",
        "SELECT i.split, count(*), avg(i.brightness) FROM {images} i JOIN {slice} s ON i.image_id = s.image_id GROUP BY i.split",
    ),
    case(
        "slice_members",
        "SELECT i.image_id, i.label FROM {images} i JOIN {slice} s ON i.image_id = s.image_id WHERE NOT s.holdout",
    ),
    tag_case(
        "tag_filter_group_by",
        "SELECT weather, count(*), avg(blur) FROM {images} WHERE crowd AND noise < 0.5 GROUP BY weather ORDER BY weather",
    ),
    tag_case("tag_null", "SELECT time_of_day, count(*) FROM {images} WHERE weather IS NULL GROUP BY time_of_day"),
    tag_case("tag_top_k", "SELECT image_id, blur FROM {images} WHERE faces > 3 ORDER BY blur DESC, image_id LIMIT 10"),
    tag_case("detections_per_label", "SELECT label, count(*), avg(score) FROM {detections} GROUP BY label"),
    tag_case(
        "detections_join",
        "SELECT i.split, count(*) FROM {images} i JOIN {detections} d ON i.image_id = d.image_id \
         WHERE d.label = 'person' AND d.score > 0.5 GROUP BY i.split",
    ),
];

/// What `--explain` prints of each query.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Explain {
    No,
    Plan,
    Analyze,
}

struct Args {
    rows: usize,
    runs: usize,
    only: Option<Vec<String>>,
    /// Print slicetest's plan of each query before timing it.
    /// `EXPLAIN` each query first (`true`), or `EXPLAIN ANALYZE` it after its runs (`analyze`).
    explain: Explain,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { rows: 1_000_000, runs: 5, only: None, explain: Explain::No };
    for (flag, value) in slicetest_bench::flag_values()? {
        match flag.as_str() {
            "--rows" => a.rows = value.parse()?,
            "--runs" => a.runs = value.parse()?,
            "--only" => a.only = Some(value.split(',').map(str::to_string).collect()),
            "--explain" => {
                a.explain = match value.as_str() {
                    "true" => Explain::Plan,
                    "analyze" => Explain::Analyze,
                    "false" => Explain::No,
                    other => bail!("--explain {other}: true, analyze or false"),
                }
            }
            other => bail!("unknown flag {other} (flags: --rows N, --runs N, --only NAME,…, --explain true|analyze)"),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let dir = tempdir()?;
    println!(
        "bench-sql on {} cores, build profile {}: {} rows, p50 of {} interleaved runs per query",
        std::thread::available_parallelism()?.get(),
        slicetest_bench::build_profile(),
        args.rows,
        args.runs
    );
    let started = Instant::now();
    let files = build_workspace(&dir.join("ws"), args.rows).await?;
    println!("workspace built in {:.1} s", started.elapsed().as_secs_f64());
    let engine = Engine::open(dir.join("ws"))?;
    let ctx = engine.context().await?;

    let mut duck = DuckDbPeer::start()?;
    let read = |p: &Path| format!("read_parquet('{}')", p.display());
    for (schema, images) in
        [("plain", &files.plain_images), ("tagged", &files.tagged_images), ("other", &files.other_images)]
    {
        duck.run(&format!("CREATE SCHEMA {schema}"))?;
        duck.run(&format!("CREATE VIEW {schema}.images AS SELECT * FROM {}", read(images)))?;
    }
    // The `detections` view: the boxes of images as they are now (image_id and sha256 of
    // the current images), as slicetest's catalog builds it.
    duck.run(&format!(
        "CREATE VIEW tagged.detections AS SELECT d.image_id, 'boxes' AS tagger, d.label, d.score, d.x0, d.y0, d.x1, d.y1 \
         FROM read_parquet('{}') d JOIN (SELECT image_id AS current_id, sha256 AS current_sha FROM {}) c \
         ON d.image_id = c.current_id AND d.sha256 = c.current_sha",
        files.boxes_parts.display(),
        read(&files.tagged_version_images)
    ))?;

    let mut shapes = Vec::new();
    for tagged in [false, true] {
        let shape = if tagged { "tagged" } else { "plain" };
        let slice = if tagged { "tagged_slice" } else { "plain_slice" };
        let members = if tagged { &files.tagged_members } else { &files.plain_members };
        println!("\n{shape} ({}):", if tagged { "3 tag imports + detections, materialised" } else { "untagged" });
        println!("  {:<22} {:>11} {:>11} {:>7} {:>9}", "query", "slicetest", "DuckDB", "ratio", "rows");
        let mut ratios = Vec::new();
        for case in CASES.iter().filter(|c| tagged || !c.tagged_only) {
            if args.only.as_ref().is_some_and(|only| !only.iter().any(|o| o == case.name)) {
                continue;
            }
            // The engines differ only in how a frozen slice is named.
            let spelled = |slice: &str| {
                case.sql
                    .replace("{images}", &format!("{shape}.images"))
                    .replace("{other}", "other.images")
                    .replace("{slice}", slice)
                    .replace("{detections}", "tagged.detections")
            };
            let ours_sql = spelled(&format!("slice('{slice}')"));
            let duck_sql = spelled(&read(members));
            let run = || async {
                let started = Instant::now();
                let batches = slicetest_engine::query::plan(&ctx, &ours_sql).await?.collect().await?;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                anyhow::Ok((ms, batches.iter().map(RecordBatch::num_rows).sum::<usize>()))
            };
            let explain = |verb: &'static str| {
                let sql = format!("{verb} {ours_sql}");
                let ctx = &ctx;
                async move {
                    let plan = slicetest_engine::query::plan(ctx, &sql).await?.collect().await?;
                    println!("{}", datafusion::arrow::util::pretty::pretty_format_batches(&plan)?);
                    anyhow::Ok(())
                }
            };
            if args.explain == Explain::Plan {
                explain("EXPLAIN").await?;
            }
            run().await.with_context(|| format!("{}: {ours_sql}", case.name))?;
            duck.run_arrow(&duck_sql).with_context(|| format!("{}: {duck_sql}", case.name))?;
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            let (mut our_rows, mut their_rows) = (0, 0);
            for _ in 0..args.runs {
                let (ms, rows) = run().await?;
                let (duck_ms, duck_rows) = duck.run_arrow(&duck_sql)?;
                ours.push(ms);
                theirs.push(duck_ms);
                (our_rows, their_rows) = (rows, duck_rows);
            }
            if args.explain == Explain::Analyze {
                explain("EXPLAIN ANALYZE").await?;
            }
            let (ours, theirs) = (median(&mut ours), median(&mut theirs));
            let ratio = ours / theirs;
            ratios.push((case.name, ratio));
            println!("  {:<22} {ours:>8.1} ms {theirs:>8.1} ms {ratio:>6.2}× {our_rows:>9}", case.name);
            if our_rows != their_rows {
                bail!("{}: slicetest returned {our_rows} rows, DuckDB {their_rows}", case.name);
            }
        }
        if ratios.is_empty() {
            continue;
        }
        let geomean = (ratios.iter().map(|(_, r)| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
        let (worst, worst_ratio) = ratios.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)).expect("non-empty");
        println!(
            "  {shape}: geometric mean {geomean:.2}× DuckDB over {} queries (target ≤ 1.0×) {}; largest {worst} {worst_ratio:.2}× \
             (target ≤ 2×) {}",
            ratios.len(),
            verdict(geomean <= 1.0),
            verdict(worst_ratio <= 2.0)
        );
        shapes.push((shape, geomean, worst_ratio));
    }
    println!();
    for (shape, geomean, worst) in shapes {
        println!("summary {shape}: {} rows, geometric mean {geomean:.2}×, largest {worst:.2}×", args.rows);
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// The files DuckDB reads: what slicetest's catalog reads for the same tables.
struct Files {
    plain_images: PathBuf,
    tagged_images: PathBuf,
    tagged_version_images: PathBuf,
    other_images: PathBuf,
    boxes_parts: PathBuf,
    plain_members: PathBuf,
    tagged_members: PathBuf,
}

/// Builds the bench workspace at `root` (see the module docs); returns the files each
/// table reads.
async fn build_workspace(root: &Path, rows: usize) -> anyhow::Result<Files> {
    let mut workspace = Engine::init(root)?.workspace().clone();
    let table = synthetic_images(rows);
    for dataset in ["plain", "tagged"] {
        slicetest_datasets::import_table(&mut workspace, dataset, &table, "bench")?;
    }
    drop(table);
    slicetest_datasets::import_table(&mut workspace, "other", &synthetic_images(rows / 3), "bench")?;
    eprintln!("  imported plain, tagged and other");
    let mut engine = Engine::open(root)?;

    let ids: Vec<String> = (0..rows).map(|i| format!("img_{i:08}")).collect();
    let tags_dir = root.join("../tag-files");
    std::fs::create_dir_all(&tags_dir)?;
    for (name, batch) in synthetic_tag_tables(&ids)? {
        let path = tags_dir.join(format!("{name}.parquet"));
        write_parquet(&path, &batch)?;
        let options = TagImportOptions {
            dataset: Some("tagged".into()),
            name: Some(name.into()),
            kind: if name == "boxes" { ImportKind::Detections } else { ImportKind::PerImage },
        };
        engine.import_tags(&path, &options).await.with_context(|| format!("importing {name}"))?;
        eprintln!("  imported tags {name}");
    }
    engine.materialize_images(Some("tagged")).await?;
    eprintln!("  materialised the tagged images");

    let mut members = Vec::new();
    for dataset in ["plain", "tagged"] {
        engine.use_dataset(dataset)?;
        let name = format!("{dataset}_slice");
        engine
            .create_slice(
                &name,
                "SELECT image_id FROM images WHERE label IN ('cat', 'dog')",
                None,
                SliceThresholds::default(),
            )
            .await?;
        let outcome = engine.freeze_slice(&name, 0.2, 0).await?;
        eprintln!("  froze {name}: {} members", outcome.frozen.members);
        members.push(slicetest_datasets::slice::members_file(engine.workspace().layout(), &outcome.frozen));
    }

    let layout = engine.workspace().layout().clone();
    let images_file = |dataset: &str| -> anyhow::Result<PathBuf> {
        let info = engine.workspace().dataset(dataset)?;
        let latest = info.latest().context("a version")?;
        Ok(layout.images_file(latest))
    };
    let wide_dir = slicetest_datasets::tags::wide_images_dir(&layout, "tagged");
    let wide: Vec<PathBuf> = std::fs::read_dir(&wide_dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    let [tagged_images] = &wide[..] else {
        bail!("expected one materialised file in {}, found {wide:?}", wide_dir.display())
    };
    Ok(Files {
        plain_images: images_file("plain")?,
        tagged_images: tagged_images.clone(),
        tagged_version_images: images_file("tagged")?,
        other_images: images_file("other")?,
        boxes_parts: root.join("datasets/tagged/detections/boxes/g*/part-*.parquet"),
        plain_members: members[0].clone(),
        tagged_members: members[1].clone(),
    })
}
