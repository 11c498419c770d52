//! `slicetest demo`: the README's first command, on Fashion-MNIST.

use std::path::{Path, PathBuf};

use clap::Args;
use slicetest_engine::{Engine, ImportOptions, IngestOptions, SliceThresholds, SourceFormat, Verify, write_stream};

use super::CliError;
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

    let query = "SELECT label, split, count(*) AS images FROM images GROUP BY 1, 2 ORDER BY 1, 2";
    println!("\n== 2. slicetest sql \"{query}\"");
    let stream = engine.sql_stream(query).await?;
    write_stream(stream, slicetest_engine::OutputFormat::Table, std::io::stdout()).await?;

    println!("\n== 3. slices: named populations, frozen as unit-test sets with a 20% hold-out");
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

    println!("\nNext, try:");
    println!("  slicetest -w {} datasets", workspace.display());
    println!("  slicetest -w {} describe {DEMO_DATASET}", workspace.display());
    println!(
        "  slicetest -w {} sql \"SELECT label, avg(bytes) FROM images WHERE split = 'test' GROUP BY label\"",
        workspace.display()
    );
    println!("  slicetest -w {} slices", workspace.display());
    println!(
        "  slicetest -w {} sql \"SELECT split, holdout, count(*) FROM slice('tops') GROUP BY 1, 2\"",
        workspace.display()
    );
    Ok(())
}
