//! `slicetest demo`: the README's first command, on Fashion-MNIST.

use std::path::{Path, PathBuf};

use clap::Args;
use slicetest_engine::{
    DEFAULT_ALPHA, Engine, ImportOptions, IngestOptions, SliceThresholds, SourceFormat, TagOptions, Verify,
    write_stream,
};

use super::CliError;
use super::classifier::{TrainConfig, train_and_upload};
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

/// Arguments of `slicetest demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory with Fashion-MNIST's IDX files.
    #[arg(long, default_value = FASHION_MNIST_DIR)]
    pub source: PathBuf,
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
    };
    print_report(&engine.ingest(&args.source, &options).await?);
    engine.use_dataset(DEMO_DATASET)?;

    println!("\n== 2. slicetest tag --tagger pixels: brightness, contrast, sharpness, … as columns of images");
    let tag = TagOptions { taggers: vec!["pixels".into()], ..TagOptions::new(None) };
    for tagger in engine.tag(&tag)?.taggers {
        let rate = tagger.tagged as f64 / tagger.seconds.max(1e-9);
        println!(
            "{}: {} images tagged in {:.1} s ({rate:.0} images/s), {} already tagged",
            tagger.tagger, tagger.tagged, tagger.seconds, tagger.already_tagged
        );
    }
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
                    SliceThresholds { min_accuracy: Some(0.8), min_samples: None },
                )
                .await?;
        }
        let outcome = engine.freeze_slice(name, 0.2, 7).await?;
        let f = &outcome.frozen;
        let what = if outcome.created { "frozen as" } else { "unchanged, still" };
        println!("{name}: {what} version {} with {} members ({} held out)", f.version, f.members, f.holdout_members);
    }

    println!("\n== 5. models: two classifiers trained on candle (CPU, seed 7); their test-set predictions become runs");
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
    let html = workspace.join("reports").join(format!("{run}.html"));
    std::fs::create_dir_all(html.parent().expect("joined"))?;
    std::fs::write(&html, engine.html_report(&report)?)?;
    println!("\n== 7. the report with charts, confusion matrices and failure galleries: {}", html.display());

    let w = workspace.display();
    println!(
        "\n== 8. the web UI: `slicetest -w {w} serve`, then open \
         http://127.0.0.1:{}/#/runs/{run}?baseline={baseline}",
        slicetest_api::DEFAULT_PORT
    );
    println!("\nNext, try:");
    println!("  slicetest -w {w} slices");
    println!("  slicetest -w {w} report --run {run} --baseline {baseline}");
    println!("  slicetest -w {w} sql \"SELECT split, holdout, count(*) FROM slice('tops') GROUP BY 1, 2\"");
    println!("  slicetest -w {w} sql \"SELECT label, count(*) FROM images WHERE brightness < 0.15 GROUP BY label\"");
    println!("  slicetest -w {w} tag            # + faces; + CLIP zero-shot once `slicetest embed` ran");
    Ok(())
}
