//! `slicetest discover`: the slices where a run fails, found, confirmed, and saved as tests.

use std::path::Path;

use clap::Args;
use slicetest_engine::discovery::{DiscoverMethod, DiscoverOptions, DiscoverRank, Discovery};
use slicetest_engine::{DEFAULT_MIN_TEST_SAMPLES, Engine, SliceThresholds};

use super::{CliError, print_table};

/// Arguments of `slicetest discover`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// The run whose errors to explain.
    #[arg(long)]
    pub run: String,
    /// Regression mode: explain the images this run gets wrong and the baseline run got right.
    #[arg(long)]
    pub baseline: Option<String>,
    /// How many slices to report.
    #[arg(short, default_value_t = 10)]
    pub k: usize,
    /// Most predicates in one slice.
    #[arg(long, default_value_t = 3)]
    pub max_level: usize,
    /// Fewest images a slice needs in the discovery half.
    #[arg(long, default_value_t = 30)]
    pub min_support: u64,
    /// SliceLine's α in (0, 1]: near 1 favours high error rates, lower favours large slices.
    #[arg(long, default_value_t = 0.95)]
    pub alpha: f64,
    /// Only these columns of `images` (comma-separated; default: every usable column).
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Seeds the split of the images into discovery and confirmation halves.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Keep images with the same value of this `images` column in the same half
    /// (near-duplicates, frames of one video, one patient's images).
    #[arg(long)]
    pub group: Option<String>,
    /// False-discovery rate of the confirmation (Benjamini–Hochberg).
    #[arg(long, default_value_t = 0.05)]
    pub fdr: f64,
    /// Also list slices the confirmation half did not confirm.
    #[arg(long)]
    pub all: bool,
    /// Where to look: `tags` (the `images` columns), `embeddings` (the stored CLIP vectors),
    /// `both`, or `auto` (both when the dataset has vectors of one model).
    #[arg(long, value_enum, default_value_t = DiscoverMethod::Auto)]
    pub method: DiscoverMethod,
    /// The embedding model to search (default: the dataset's only one).
    #[arg(long)]
    pub model: Option<String>,
    /// Order of the list: `severity` (surely-worst error rate first), `excess` (most
    /// errors beyond the slice's share) or `sliceline` (SliceLine's score).
    #[arg(long, value_enum, default_value_t = DiscoverRank::Severity)]
    pub rank: DiscoverRank,
    /// `table` or `json`.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Save the slice ranked `--pick` as a slice definition with this name (then
    /// `slicetest slice freeze NAME`).
    #[arg(long)]
    pub save: Option<String>,
    /// Which listed slice `--save` takes (1 = the first).
    #[arg(long, default_value_t = 1, requires = "save",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub pick: usize,
}

pub async fn run(workspace: &Path, args: DiscoverArgs) -> Result<(), CliError> {
    if args.format != "table" && args.format != "json" {
        return Err(format!("--format must be table or json, not {:?}", args.format).into());
    }
    let engine = Engine::open(workspace)?;
    let options = DiscoverOptions {
        k: args.k,
        max_level: args.max_level,
        min_support: args.min_support,
        alpha: args.alpha,
        columns: args.columns.clone(),
        seed: args.seed,
        fdr: args.fdr,
        include_unconfirmed: args.all,
        baseline: args.baseline.clone(),
        method: args.method,
        model: args.model.clone(),
        rank: args.rank,
        group: args.group.clone(),
    };
    let found = engine.discover(&args.run, &options).await?;
    if args.format == "json" {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        print_discovery(&found);
    }
    if let Some(name) = &args.save {
        let default = engine.workspace().config().default_dataset.clone();
        if default.as_deref() != Some(found.dataset.as_str()) {
            return Err(format!(
                "--save: run {} is on dataset {}, and slices are defined on the default dataset ({}); run \
                 `slicetest use {}` first",
                found.run,
                found.dataset,
                default.unwrap_or_default(),
                found.dataset
            )
            .into());
        }
        let Some(slice) = found.slices.get(args.pick - 1) else {
            return Err(
                format!("--pick {}: only {} slices were listed, nothing saved", args.pick, found.slices.len()).into()
            );
        };
        // `--all` lists the unconfirmed too; a test made of one would rest on chance (and
        // may well pass already).
        if !slice.confirmed {
            return Err(format!(
                "--pick {}: {} was not confirmed on the held-apart images (adjusted p = {:.2e}), nothing saved;                  save a confirmed slice, or define this one yourself with `slicetest slice create`",
                args.pick,
                slice.predicates.join(" AND "),
                slice.adjusted_p
            )
            .into());
        }
        // Suggested test: the slice should do at least as well as the model does overall,
        // rounded down to 5 points. It fails now, as it should, and passes once fixed.
        let min_accuracy =
            (found.error == "misclassification").then(|| ((1.0 - found.mean_error) * 20.0).floor() / 20.0);
        // The slice may hold fewer scored images than a test needs by default: a test
        // that says "not enough data" for good could never fail. Ask for what it has.
        let scored = slice.discovery.size + slice.confirmation.size;
        let min_samples = (scored < DEFAULT_MIN_TEST_SAMPLES).then_some(scored);
        let comment = format!(
            "discovered on run {}: {} ({:.1}% errors vs {:.1}% for the rest, confirmed p = {:.2e})",
            found.run,
            slice.predicates.join(" AND "),
            100.0 * slice.confirmation.error_rate,
            100.0 * slice.confirmation.rest_rate,
            slice.adjusted_p
        );
        engine
            .create_slice(
                name,
                &slice.query,
                Some(comment),
                SliceThresholds { min_accuracy, min_samples, ..Default::default() },
            )
            .await?;
        let mut threshold = min_accuracy.map_or(String::new(), |a| format!(" with min_accuracy {a:.2}"));
        if let Some(n) = min_samples {
            threshold.push_str(&format!(
                " and min_samples {n} (the images it holds in this run; {DEFAULT_MIN_TEST_SAMPLES} by default)"
            ));
        }
        println!("saved slice {name}{threshold}: {}\nfreeze it with `slicetest slice freeze {name}`", slice.query);
    }
    Ok(())
}

/// Prints what a discovery found as a table, with the columns it used and skipped.
pub(crate) fn print_discovery(d: &Discovery) {
    let against = d.baseline.as_ref().map_or(String::new(), |b| format!(" against baseline {b}"));
    println!(
        "run {}{against} on {}: {} scored images, mean {} {:.3}; discovery half {} / confirmation half {} (seed {}{})",
        d.run,
        d.dataset,
        d.images,
        d.error,
        d.mean_error,
        d.halves[0],
        d.halves[1],
        d.seed,
        d.group.as_ref().map_or(String::new(), |g| format!(", grouped by {g}"))
    );
    if d.method != "embeddings" {
        println!("columns: {}", d.columns.join(", "));
        if !d.skipped.is_empty() {
            let skipped: Vec<String> = d.skipped.iter().map(|(c, why)| format!("{c} ({why})")).collect();
            println!("skipped: {}", skipped.join(", "));
        }
    }
    if let Some(e) = &d.embeddings {
        println!(
            "embeddings: {} vectors of {}; PCA to {} dimensions ({:.0}% of the variance) and a {}-component \
             error-aware mixture on {} discovery images ({} EM iterations{}); {} candidate slices",
            e.vectors,
            e.model,
            e.pca_components,
            100.0 * e.explained_variance_ratio,
            e.components,
            e.sample,
            e.iterations,
            if e.converged { "" } else { ", not converged" },
            e.candidates
        );
    }
    for note in &d.notes {
        println!("note: {note}");
    }
    if d.slices.is_empty() {
        let why = if d.mean_error == 0.0 && d.baseline.is_some() {
            "nothing the baseline got right is wrong now".to_string()
        } else if d.mean_error == 0.0 {
            "the run makes no errors".to_string()
        } else if d.tested == 0 {
            "no slice is worse than the rest by enough to score above 0".to_string()
        } else {
            format!("{}, none confirmed at FDR {} (--all lists them)", d.tested_text(), d.fdr)
        };
        println!("no slice found: {why}");
        return;
    }
    // NaN: a slice with no image in the confirmation half has no rate there.
    let percent = |x: f64| match x {
        x if x.is_nan() => "–".to_string(),
        x if d.error == "loss" => format!("{x:.3}"),
        x => format!("{:.1}%", 100.0 * x),
    };
    let rows: Vec<Vec<String>> = d
        .slices
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let c = &s.confirmation;
            let mut slice = s.predicates.join("\nAND ");
            if let Some(e) = &s.explanation {
                if !e.phrases.is_empty() {
                    let phrases: Vec<String> = e.phrases.iter().map(|(p, _)| format!("\"{p}\"")).collect();
                    slice.push_str(&format!("\nlooks like: {}", phrases.join(", ")));
                }
                if !e.tags.is_empty() {
                    slice.push_str(&format!("\nin tags: {} (Jaccard {:.2})", e.tags.join(" AND "), e.tags_jaccard));
                }
            }
            vec![
                (i + 1).to_string(),
                slice,
                format!("{} / {}", s.discovery.size, c.size),
                format!("{} [{}, {}]", percent(c.error_rate), percent(c.interval[0]), percent(c.interval[1])),
                percent(c.rest_rate),
                if c.lift.is_finite() { format!("{:.1}x", c.lift) } else { "∞ (no rest errors)".into() },
                format!("{:.1e}", s.adjusted_p),
                if s.confirmed { "confirmed".into() } else { "not confirmed".into() },
            ]
        })
        .collect();
    print_table(&["#", "slice", "images (disc. / conf.)", "error [95% CI], conf.", "rest", "lift", "adj. p", ""], rows);
    println!(
        "{} listed, by {}; {} on the confirmation half at FDR {}. \
         `--save NAME --pick N` turns one into a slice test",
        d.slices.len(),
        d.rank.name(),
        d.tested_text(),
        d.fdr
    );
}
