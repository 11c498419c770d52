//! `slicetest tag`: auto-taggers (pixel statistics, faces, CLIP zero-shot) and imports of
//! other models' outputs, all as columns of `images`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use slicetest_engine::{
    Engine, ImportKind, MaskImportOptions, RunsByDefault, Shard, TagImportOptions, TagOptions, TaggerRegistry,
    TaggerReport,
};

use super::CliError;

/// Arguments of `slicetest tag`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TagArgs {
    #[command(subcommand)]
    command: Option<TagCommand>,
    #[command(flatten)]
    run: TagRunArgs,
}

/// Arguments of a tagging run.
#[derive(Debug, Args)]
struct TagRunArgs {
    /// The dataset (default: the workspace default).
    dataset: Option<String>,
    /// Taggers to run (repeat or comma-separate); see --help for the list. Default: those
    /// marked "always", plus "once embedded" ones when the dataset has embeddings.
    #[arg(long = "tagger", short = 't', value_delimiter = ',', long_help = taggers_help())]
    taggers: Vec<String>,
    /// A CLIP zero-shot vocabulary (TOML: attribute → value → prompts); runs the tagger
    /// clip-<file stem>, whose columns add to the default vocabulary's.
    #[arg(long)]
    vocab: Option<PathBuf>,
    /// Which embeddings the clip taggers read (default: the dataset's only model).
    #[arg(long)]
    model: Option<String>,
    /// Images decoded in parallel at a time.
    #[arg(long, default_value_t = 1024)]
    chunk_size: usize,
    /// Seconds between saves of the tags while a tagger works (a killed run resumes from
    /// the last save).
    #[arg(long, default_value_t = 5.0)]
    checkpoint_secs: f64,
    /// Only shard i of n (`--shard 3/8`): run n of these, on as many machines, against one
    /// workspace; together they tag what one run would (see docs/scale.md).
    #[arg(long, value_name = "i/n")]
    shard: Option<Shard>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum TagCommand {
    /// Import another model's outputs: per-image columns, per-object boxes
    /// (image_id, label, x0, y0, x1, y1[, score]) counted into num_<label>, or segmentation
    /// masks (--masks: a folder of label maps or a COCO file) as <class>_pct and
    /// num_<class>_regions.
    Import {
        /// A CSV, Parquet, JSON-lines or Arrow file with an image_id column.
        #[arg(required_unless_present = "masks", conflicts_with = "masks")]
        file: Option<PathBuf>,
        /// A folder of PNG label maps (8/16-bit grayscale or palette; pixel value = class
        /// id), one per image, matched by relative path with any extension or by image_id;
        /// or a COCO instances JSON file whose annotations have segmentations (polygons or
        /// RLE), painted into one label map per image (background where none is).
        #[arg(long)]
        masks: Option<PathBuf>,
        /// The label maps' classes: classes.txt (one name per line, line number = id) or
        /// JSON (a list of names, {"id": "name"}, or [{"id", "name"}]). Not for a COCO file.
        #[arg(long, requires = "masks")]
        classes: Option<PathBuf>,
        /// The pixel value of unlabelled pixels in the masks.
        #[arg(long, default_value_t = 255, requires = "masks")]
        ignore_index: u16,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
        /// The dataset (default: the workspace default).
        #[arg(long)]
        dataset: Option<String>,
        /// The name the columns are stored under (default: the file name's stem, or the
        /// masks folder's name).
        #[arg(long)]
        name: Option<String>,
        /// What the rows are (default: detections when the file has label and x0..y1).
        #[arg(long, value_enum, default_value_t = ImportKind::Auto)]
        kind: ImportKind,
    },
    /// List the stored taggers with their columns and provenance, then the taggers
    /// `slicetest tag` can run.
    List {
        /// The dataset (default: the workspace default).
        dataset: Option<String>,
    },
    /// Rewrite a tagger's parts as one (after a sharded job: many parts make every query
    /// over `images` read them all), dropping rows of images that left or changed.
    Compact {
        /// The dataset (default: the workspace default).
        dataset: Option<String>,
        /// Taggers to compact (repeat or comma-separate); default: every stored tagger.
        #[arg(long = "tagger", short = 't', value_delimiter = ',')]
        taggers: Vec<String>,
    },
    /// Remove a tagger's columns (and boxes).
    Remove {
        /// The tagger's name.
        tagger: String,
        /// The dataset (default: the workspace default).
        #[arg(long)]
        dataset: Option<String>,
    },
}

pub async fn run(workspace: &Path, args: TagArgs) -> Result<(), CliError> {
    let engine = Engine::open(workspace)?;
    match args.command {
        None => {
            let options = TagOptions {
                dataset: args.run.dataset,
                taggers: args.run.taggers,
                vocabulary: args.run.vocab,
                model: args.run.model,
                progress: !args.run.quiet,
                chunk_size: args.run.chunk_size,
                checkpoint_seconds: args.run.checkpoint_secs,
                shard: args.run.shard.unwrap_or_default(),
            };
            let report = engine.tag(&options)?;
            let shard = if options.shard.is_all() { String::new() } else { format!(" (shard {})", options.shard) };
            for tagger in &report.taggers {
                print_report(&format!("{}{shard}", report.dataset), tagger);
            }
            // A shard's parts are not the job's: `tag compact` materialises after the job.
            if options.shard.is_all() {
                materialize(&engine, Some(&report.dataset)).await?;
            }
        }
        Some(TagCommand::Import { masks: Some(dir), classes, ignore_index, dataset, name, quiet, .. }) => {
            let options = MaskImportOptions {
                dataset,
                name,
                ignore_index: Some(ignore_index),
                progress: !quiet,
                skip_unmatched: false,
            };
            let report = engine.import_masks(&dir, classes.as_deref(), &options)?;
            println!(
                "{}: imported masks {} ({} images, {} without a mask; {} labelled pixels) in {:.1}s as columns {}",
                report.dataset,
                report.source,
                report.masks,
                report.images_without_mask,
                report.labelled_pixels,
                report.seconds,
                column_list(&report.columns)
            );
        }
        Some(TagCommand::Import { file, dataset, name, kind, .. }) => {
            let file = file.expect("clap requires a file without --masks");
            let options = TagImportOptions { dataset: dataset.clone(), name, kind };
            let (dataset, report) = engine.import_tags(&file, &options).await?;
            println!(
                "{dataset}: imported {} ({} images{}) as columns {}",
                report.tagger,
                report.tagged,
                if report.boxes > 0 { format!(", {} boxes", report.boxes) } else { String::new() },
                report.columns.join(", ")
            );
            materialize(&engine, Some(&dataset)).await?;
        }
        Some(TagCommand::List { dataset }) => {
            let rows = engine
                .taggers(dataset.as_deref())?
                .into_iter()
                .map(|(p, columns, rows)| {
                    vec![
                        p.tagger,
                        p.version,
                        rows.to_string(),
                        columns.join(", "),
                        p.model.unwrap_or_default(),
                        p.parameters_hash[..12].to_string(),
                    ]
                })
                .collect();
            super::print_table(&["tagger", "version", "rows", "columns", "model", "parameters"], rows);
            println!("\ntaggers `slicetest tag` can run:");
            let available = engine
                .tagger_registry()
                .iter()
                .map(|t| vec![t.name.clone(), runs_by_default(t.by_default).to_string(), t.about.clone()])
                .collect();
            super::print_table(&["tagger", "runs by default", "what it adds"], available);
        }
        Some(TagCommand::Compact { dataset, taggers }) => {
            let compacted = engine.compact_tags(dataset.as_deref(), &taggers)?;
            if compacted.is_empty() {
                println!("nothing to compact: every tagger is one part of current rows");
            }
            for (tagger, parts, rows) in compacted {
                println!("{tagger}: {parts} parts → 1 ({rows} rows)");
            }
            materialize(&engine, dataset.as_deref()).await?;
        }
        Some(TagCommand::Remove { tagger, dataset }) => {
            if engine.remove_tags(dataset.as_deref(), &tagger)? {
                println!("removed the tags of {tagger}");
            } else {
                return Err(format!("no tags named {tagger:?} (see `slicetest tag list`)").into());
            }
        }
    }
    Ok(())
}

/// Writes `images` with its tags as one file (see `Engine::materialize_images`) and says so.
/// The tags are stored already: a failure here only means queries keep using the join, so
/// it is reported, not an error of the command.
async fn materialize(engine: &Engine, dataset: Option<&str>) -> Result<(), CliError> {
    match engine.materialize_images(dataset).await {
        Ok(Some((_, rows))) if rows > 0 => {
            println!("images with every tag column written as one table ({rows} rows): tag filters need no join")
        }
        Ok(_) => {}
        Err(e) => eprintln!(
            "note: the tags are stored, but images could not be written as one table ({e}); queries join the tags instead"
        ),
    }
    Ok(())
}

/// `--tagger`'s long help: the registered taggers, from the registry.
fn taggers_help() -> String {
    let mut help = String::from("Taggers to run (repeat or comma-separate):\n");
    for t in TaggerRegistry::builtin().iter() {
        help.push_str(&format!("  {:<8} {} [{}]\n", t.name, t.about, runs_by_default(t.by_default)));
    }
    help.push_str(
        "Default: the taggers marked always, plus those marked once embedded when the dataset has \
         embeddings. `slicetest tag import` adds your own model's outputs.",
    );
    help
}

fn runs_by_default(when: RunsByDefault) -> &'static str {
    match when {
        RunsByDefault::Always => "always",
        RunsByDefault::WhenEmbedded => "once embedded",
        RunsByDefault::Never => "when named",
    }
}

fn print_report(dataset: &str, r: &TaggerReport) {
    let rate = if r.seconds > 0.0 { r.tagged as f64 / r.seconds } else { 0.0 };
    println!(
        "{dataset}: {} tagged {} images in {:.1} s ({rate:.0} images/s){}; {} already tagged{}",
        r.tagger,
        r.tagged,
        r.seconds,
        if r.boxes > 0 { format!(", {} boxes", r.boxes) } else { String::new() },
        r.already_tagged,
        if r.rebuilt { " (parameters changed: tags rebuilt)" } else { "" }
    );
    println!("  columns: {}", r.columns.join(", "));
    for (id, reason) in r.failed.iter().take(20) {
        println!("  not tagged {id}: {reason}");
    }
    if r.failed.len() > 20 {
        println!("  … and {} more not tagged", r.failed.len() - 20);
    }
}

/// Column names for a summary line: all of them up to 12, else the first 10 and a count.
pub(super) fn column_list(columns: &[String]) -> String {
    if columns.len() <= 12 {
        return columns.join(", ");
    }
    format!("{}, … ({} columns; `slicetest tag list` lists them)", columns[..10].join(", "), columns.len())
}
