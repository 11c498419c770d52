//! `slicetest demo`: the README's first command, on Fashion-MNIST: classification, then
//! detection on canvases made from it ([`super::detection_demo`]), then search.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use slicetest_engine::{
    DEFAULT_ALPHA, DEFAULT_MODEL, EmbedOptions, Engine, EngineError, ImportOptions, IngestOptions, SearchQuery,
    SliceThresholds, SourceFormat, TagOptions, Verify, write_stream,
};

use super::CliError;
use super::classifier::{TrainConfig, train_and_upload};
use super::detection_demo::{self, DetectionDemo};
use super::ingest::print_report;

/// Where Debian's `dataset-fashion-mnist` package puts the IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// The dataset name the demo uses.
pub const DEMO_DATASET: &str = "fashion_mnist";

/// The demo's slices: classes a Fashion-MNIST classifier is known to mix up.
const DEMO_SLICES: [(&str, &str, &str); 2] = [
    (
        "tops",
        "SELECT image_id FROM images WHERE label IN ('Shirt', 'T-shirt/top', 'Pullover', 'Coat')",
        "upper-body garments, the classes most often confused with each other",
    ),
    ("footwear", "SELECT image_id FROM images WHERE label IN ('Sandal', 'Sneaker', 'Ankle boot')", "all shoes"),
];

/// The demo's runs: (run, model, training). The linear model on a tenth of the data is the
/// weaker baseline the MLP is compared with.
fn demo_models() -> [(&'static str, &'static str, TrainConfig); 2] {
    let base =
        TrainConfig { hidden: vec![], epochs: 3, train_limit: Some(6000), batch: 128, learning_rate: 1e-3, seed: 7 };
    [
        ("linear", "fashion-linear", base.clone()),
        ("mlp", "fashion-mlp", TrainConfig { hidden: vec![256], epochs: 5, train_limit: None, ..base }),
    ]
}

/// The run the demo reports on, and its baseline.
const DEMO_RUN: (&str, &str) = ("mlp", "linear");

/// The images the demo embeds, and what it searches them for.
const DEMO_EMBED_WHERE: &str = "split = 'test'";
const DEMO_SEARCH: &str = "a pair of sneakers";

/// Arguments of `slicetest demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory with Fashion-MNIST's IDX files.
    #[arg(long, default_value = FASHION_MNIST_DIR)]
    pub source: PathBuf,
    /// Leave out the detection part (a detection dataset made from Fashion-MNIST, two
    /// detectors trained on the CPU: about 3½ minutes on 2 cores).
    #[arg(long, conflicts_with = "detection_only")]
    pub skip_detection: bool,
    /// Ingest Fashion-MNIST, then only the detection part.
    #[arg(long)]
    pub detection_only: bool,
    /// Canvases the demo's detector trains on (tests shrink the detection part).
    #[arg(long, hide = true)]
    pub train_canvases: Option<usize>,
    /// Canvases of the detection dataset.
    #[arg(long, hide = true)]
    pub test_canvases: Option<usize>,
    /// Epochs of the demo's detector.
    #[arg(long, hide = true)]
    pub detection_epochs: Option<usize>,
}

impl DemoArgs {
    /// The detection part's sizes: the defaults, unless shrunk.
    fn detection(&self) -> DetectionDemo {
        let d = DetectionDemo::default();
        DetectionDemo {
            train_canvases: self.train_canvases.unwrap_or(d.train_canvases),
            test_canvases: self.test_canvases.unwrap_or(d.test_canvases),
            epochs: self.detection_epochs.unwrap_or(d.epochs),
            ..d
        }
    }
}

pub async fn run(workspace: &Path, args: DemoArgs) -> Result<(), CliError> {
    if !args.source.join("train-images-idx3-ubyte.gz").exists() && !args.source.join("train-images-idx3-ubyte").exists()
    {
        return Err(format!(
            "Fashion-MNIST not found in {}; install it with `apt-get install dataset-fashion-mnist` \
             (scripts/demo.sh does this) or pass --source",
            args.source.display()
        )
        .into());
    }
    let mut engine = Engine::open_or_init(workspace)?;
    println!("== 1. ingest Fashion-MNIST ({}) into {}", args.source.display(), workspace.display());
    let options = IngestOptions {
        dataset: DEMO_DATASET.into(),
        format: SourceFormat::FashionMnist,
        import: ImportOptions { progress: true, ..Default::default() },
        verify: Verify::Full,
        strict: true,
        known: None,
    };
    print_report(&engine.ingest(&args.source, &options).await?);
    engine.use_dataset(DEMO_DATASET)?;
    if args.detection_only {
        detection_demo::run(&mut engine, workspace, &args.detection(), 2).await?;
        let (run, baseline) = detection_demo::DETECTION_RUN;
        println!("\nNext, try:");
        println!("  slicetest -w {} report --run {run} --baseline {baseline}", workspace.display());
        return Ok(());
    }

    println!("\n== 2. slicetest tag --tagger pixels: brightness, contrast, sharpness, … as columns of images");
    let tag = TagOptions { taggers: vec!["pixels".into()], ..TagOptions::new(None) };
    for tagger in engine.tag(&tag)?.taggers {
        let rate = tagger.tagged as f64 / tagger.seconds.max(1e-9);
        println!(
            "{}: {} images tagged in {:.1} s ({rate:.0} images/s), {} already tagged",
            tagger.tagger, tagger.tagged, tagger.seconds, tagger.already_tagged
        );
    }
    engine.materialize_images(None).await?;
    let query = "SELECT label, split, count(*) AS images, round(avg(brightness), 3) AS brightness, \
                 round(avg(sharpness)) AS sharpness FROM images GROUP BY 1, 2 ORDER BY 1, 2";
    println!("\n== 3. slicetest sql \"{query}\"");
    let stream = engine.sql_stream(query).await?;
    write_stream(stream, slicetest_engine::OutputFormat::Table, std::io::stdout()).await?;

    println!("\n== 4. slices: named populations, frozen as unit-test sets with a 20% hold-out");
    for (name, query, comment) in DEMO_SLICES {
        if engine.slice(name).is_err() {
            engine
                .create_slice(
                    name,
                    query,
                    Some(comment.to_string()),
                    SliceThresholds { min_accuracy: Some(0.8), ..Default::default() },
                )
                .await?;
        }
        let outcome = engine.freeze_slice(name, 0.2, 7).await?;
        let f = &outcome.frozen;
        let what = if outcome.created { "frozen as" } else { "unchanged, still" };
        println!("{name}: {what} version {} with {} members ({} held out)", f.version, f.members, f.holdout_members);
    }

    println!(
        "\n== 5. models: two classifiers trained on the CPU (seed 7; the same bytes on every machine); their test-set predictions become runs"
    );
    let existing: Vec<String> = engine.runs()?.into_iter().map(|r| r.run).collect();
    for (run, model, config) in demo_models() {
        if existing.iter().any(|r| r == run) {
            println!("{run}: already uploaded (runs are immutable)");
            continue;
        }
        let (manifest, accuracy) = train_and_upload(&engine, run, model, &config).await?;
        println!(
            "{run}: {model} {} — test accuracy {:.1}%, {} predictions uploaded",
            manifest.model_version,
            100.0 * accuracy,
            manifest.predictions
        );
    }

    let (run, baseline) = DEMO_RUN;
    println!("\n== 6. slicetest test --run {run} --baseline {baseline}");
    let report = engine.score_run(run, Some(baseline), DEFAULT_ALPHA)?;
    super::run::print_report(&report);
    let failing: Vec<&str> = report.failures().map(|s| s.slice.as_str()).collect();
    if failing.is_empty() {
        println!("every slice test passes");
    } else {
        println!("failing slices: {} (in CI, `slicetest test` exits 1 here)", failing.join(", "));
    }
    println!(
        "\n== 7. slicetest discover --run {run}: where does it fail? (found on half the images, confirmed on the other)"
    );
    let options = slicetest_engine::discovery::DiscoverOptions { k: 5, ..Default::default() };
    let found = engine.discover(run, &options).await?;
    super::discover::print_discovery(&found);

    let html = workspace.join("reports").join(format!("{run}.html"));
    std::fs::create_dir_all(html.parent().expect("joined"))?;
    std::fs::write(&html, engine.html_report(&report, Some(&found))?)?;
    println!(
        "\n== 8. the report with charts, confusion matrices, failure galleries and the discovered slices: {}",
        html.display()
    );

    let w = workspace.display();
    println!(
        "\n== 9. the web UI: `slicetest -w {w} serve`, then open \
         http://127.0.0.1:{}/#/runs/{run}?baseline={baseline}",
        slicetest_api::DEFAULT_PORT
    );
    let mut step = 10;
    if args.skip_detection {
        println!("\n(the detection part is skipped: --skip-detection)");
    } else {
        detection_demo::run(&mut engine, workspace, &args.detection(), step).await?;
        step += detection_demo::STEPS;
    }

    println!("\n== {step}. search: CLIP embeddings of the test split, then a text search");
    match demo_clip_model() {
        Some(model) => search_step(&engine, &model, workspace).await?,
        None => println!(
            "skipped: no CLIP checkpoint on this machine (the demo looks at $SLICETEST_CLIP_MODEL and the Hugging \
             Face cache, and never downloads by itself). `slicetest -w {w} embed --model {DEFAULT_MODEL} --where \
             \"{DEMO_EMBED_WHERE}\"` downloads it once (~600 MB) and embeds the 10,000 test images at ~20-30 \
             images/s on 2 CPU cores (~5-10 min; `--device cpu-bf16` is 1.8-3.5x faster on CPUs with AMX or \
             AMD's AVX512_BF16); then `slicetest -w {w} search \"{DEMO_SEARCH}\"`"
        ),
    }

    println!("\nNext, try:");
    println!(
        "  slicetest -w {w} discover --run {run} --save shirts_high_contrast --pick 1   # a discovered slice as a test"
    );
    println!("  slicetest -w {w} slices");
    println!("  slicetest -w {w} report --run {run} --baseline {baseline}");
    println!("  slicetest -w {w} sql \"SELECT split, holdout, count(*) FROM slice('tops') GROUP BY 1, 2\"");
    println!("  slicetest -w {w} sql \"SELECT label, count(*) FROM images WHERE brightness < 0.15 GROUP BY label\"");
    println!("  slicetest -w {w} tag            # + faces; + CLIP zero-shot once `slicetest embed` ran");
    if !args.skip_detection {
        let (run, baseline) = detection_demo::DETECTION_RUN;
        println!("  slicetest -w {w} report --run {run} --baseline {baseline}   # the detection runs");
    }
    Ok(())
}

/// The CLIP model the demo embeds with, found without touching the network:
/// `SLICETEST_CLIP_MODEL` if set (a directory, or an id: naming one is asking for it, so an
/// id that is not cached may be downloaded), else the default model when the local Hugging
/// Face cache holds a complete snapshot of it. None: skip the search step.
fn demo_clip_model() -> Option<String> {
    if let Some(model) = std::env::var("SLICETEST_CLIP_MODEL").ok().filter(|m| !m.trim().is_empty()) {
        return Some(model);
    }
    slicetest_embed::resolve::resolve_local(DEFAULT_MODEL).map(|_| DEFAULT_MODEL.to_string())
}

/// Embeds the test split with `model` (resumable: a second demo embeds nothing) and
/// searches it by text.
async fn search_step(engine: &Engine, model: &str, workspace: &Path) -> Result<(), CliError> {
    slicetest_embed::keep_freed_memory_for_reuse();
    println!(
        "embedding the test split with {model} (the default ViT-B/32 embeds ~20-30 images/s on 2 CPU cores; \
         a killed run resumes)"
    );
    let options = EmbedOptions {
        model: model.to_string(),
        dataset: Some(DEMO_DATASET.into()),
        filter: Some(DEMO_EMBED_WHERE.into()),
        progress: true,
        ..EmbedOptions::default()
    };
    let report = engine.embed(&options).await?;
    println!(
        "{}: embedded {} images with {} in {:.1} s; {} already embedded",
        report.dataset, report.embedded, report.model.name, report.seconds, report.already_embedded
    );
    println!("\nslicetest -w {} search \"{DEMO_SEARCH}\" -k 8", workspace.display());
    let hits = engine.search(&SearchQuery::Text(DEMO_SEARCH.into()), 8, Some(&report.model.name))?;
    let labels = labels_of(engine, hits.iter().map(|h| h.image_id.as_str())).await?;
    let rows = hits
        .into_iter()
        .map(|h| {
            let label = labels.get(&h.image_id).cloned().unwrap_or_default();
            vec![h.image_id, format!("{:.4}", h.score), label]
        })
        .collect();
    super::print_table(&["image_id", "score", "label"], rows);
    Ok(())
}

/// image_id → label of the given images of the default dataset.
async fn labels_of(engine: &Engine, ids: impl Iterator<Item = &str>) -> Result<HashMap<String, String>, CliError> {
    let quoted: Vec<String> = ids.map(|id| format!("'{}'", id.replace('\'', "''"))).collect();
    let query = format!("SELECT image_id, label FROM images WHERE image_id IN ({})", quoted.join(", "));
    let batches = engine.sql(&query).await?.collect().await.map_err(|e| EngineError::query(e, None))?;
    let mut labels = HashMap::new();
    for batch in batches {
        let (ids, values) = (cast(batch.column(0), &DataType::Utf8)?, cast(batch.column(1), &DataType::Utf8)?);
        let (ids, values) = (ids.as_string::<i32>(), values.as_string::<i32>());
        for row in 0..batch.num_rows() {
            labels.insert(ids.value(row).to_string(), values.value(row).to_string());
        }
    }
    Ok(labels)
}
