//! `slicetest embed`: CLIP image embeddings of a dataset.

use std::path::Path;

use clap::Args;
use slicetest_embed::DEFAULT_MODEL;
use slicetest_engine::Shard;
use slicetest_engine::{EmbedOptions, Engine};

use super::CliError;

/// Arguments of `slicetest embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// The dataset (default: the workspace default).
    pub dataset: Option<String>,
    /// A CLIP checkpoint directory (config.json, model.safetensors, tokenizer.json) or a
    /// Hugging Face id (`id[@revision]`), from the local HF cache or downloaded into it.
    #[arg(long, short, default_value = DEFAULT_MODEL, env = "SLICETEST_CLIP_MODEL")]
    pub model: String,
    /// Store (and query) the embeddings under this name; default: derived from --model.
    #[arg(long)]
    pub name: Option<String>,
    /// auto, cpu, cpu-bf16 (bfloat16 on CPUs with AMX-BF16, or AMD CPUs with AVX512_BF16),
    /// cuda or metal (GPUs need a build with --features cuda / metal).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Images per stored part: a killed run resumes after the last finished part.
    #[arg(long, default_value_t = 1024)]
    pub chunk_size: usize,
    /// Only the images this boolean SQL predicate over `images` selects, e.g.
    /// `--where "split = 'test'"` (any column, tag or SQL function).
    #[arg(long = "where", value_name = "SQL")]
    pub filter: Option<String>,
    /// Only the first N selected images by image_id (a fixed subset: running the same
    /// command again resumes it rather than adding N more).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Only shard i of n (`--shard 3/8`): run n of these, on as many machines, against
    /// one workspace; together they embed what one run would (see docs/scale.md).
    #[arg(long, value_name = "i/n")]
    pub shard: Option<Shard>,
    /// The dataset version to embed (default: the latest); give every shard of a job the
    /// same one.
    #[arg(long, value_name = "N")]
    pub version: Option<u64>,
    /// Build no search index (a later run, or a server at its first search, builds it;
    /// searches scan exactly until then). By default a run (but not one shard of a job)
    /// ends by building or extending the HNSW graph of the dataset's vectors once there
    /// are 50,000 or more (`SLICETEST_HNSW_MIN_ROWS`), so that searches are fast from the
    /// first one.
    #[arg(long)]
    pub no_index: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn run(workspace: &Path, args: EmbedArgs) -> Result<(), CliError> {
    slicetest_embed::keep_freed_memory_for_reuse();
    let engine = Engine::open(workspace)?;
    let options = EmbedOptions {
        model: args.model,
        name: args.name,
        dataset: args.dataset,
        device: args.device,
        batch_size: args.batch_size,
        chunk_size: args.chunk_size,
        progress: !args.quiet,
        filter: args.filter,
        limit: args.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        counters: None,
        shard: args.shard.unwrap_or(Shard::ALL),
        version: args.version,
        index: !args.no_index,
    };
    let report = engine.embed(&options).await?;
    let rate = if report.seconds > 0.0 { report.embedded as f64 / report.seconds } else { 0.0 };
    let shard = if report.shard.is_all() { String::new() } else { format!(" (shard {})", report.shard) };
    println!(
        "{} v{}{shard}: embedded {} images with {} ({}-d) in {:.1} s ({rate:.1} images/s); {} already embedded",
        report.dataset,
        report.version,
        report.embedded,
        report.model.name,
        report.model.dim,
        report.seconds,
        report.already_embedded
    );
    if let Some(c) = report.compaction {
        println!("parts: merged {} into {}", c.parts_before, c.parts_after);
    }
    if let Some(rows) = report.indexed {
        println!("search index: HNSW graph over {rows} vectors, ready in {:.1} s", report.index_seconds);
    }
    if let Some(why) = &report.index_unsaved {
        eprintln!("warning: the search index could not be saved ({why}); the next search builds it again");
    }
    for (id, reason) in report.failed.iter().take(20) {
        println!("  skipped {id}: {reason}");
    }
    if report.failed.len() > 20 {
        println!("  … and {} more skipped", report.failed.len() - 20);
    }
    Ok(())
}

/// Arguments of `slicetest search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The sentence to search for (or use --image).
    #[arg(required_unless_present = "image", conflicts_with = "image")]
    pub text: Option<String>,
    /// Search by image: an image_id of the dataset, or a path to an image file.
    #[arg(long)]
    pub image: Option<String>,
    /// How many results.
    #[arg(long, short, default_value_t = 10)]
    pub k: usize,
    /// Which embeddings (default: the dataset's only model).
    #[arg(long)]
    pub model: Option<String>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn search(workspace: &Path, args: SearchArgs) -> Result<(), CliError> {
    use slicetest_engine::SearchQuery;
    let engine = Engine::open(workspace)?;
    if !(1..=100_000).contains(&args.k) {
        return Err(format!("-k must be between 1 and 100000, got {}", args.k).into());
    }
    let query = match (args.text, args.image) {
        (Some(text), _) => SearchQuery::Text(text),
        (None, Some(image)) if Path::new(&image).is_file() => SearchQuery::ImageFile(image.into()),
        (None, Some(image)) => SearchQuery::ImageId(image),
        (None, None) => unreachable!("clap requires one"),
    };
    let hits = engine.search(&query, args.k, args.model.as_deref())?;
    if args.json {
        for hit in &hits {
            println!("{}", serde_json::to_string(hit)?);
        }
    } else {
        let rows = hits.into_iter().map(|h| vec![h.image_id, format!("{:.4}", h.score), h.uri]).collect();
        super::print_table(&["image_id", "score", "uri"], rows);
    }
    Ok(())
}
