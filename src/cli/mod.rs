//! Subcommands and their arguments. Each subcommand lives in its own module and talks
//! only to `slicetest_engine`.

mod classifier;
#[cfg(feature = "ballista")]
mod cluster;
mod datasets;
mod demo;
mod detection_demo;
mod discover;
mod embed;
mod ingest;
mod run;
mod serve;
mod slice;
mod sql;
mod tag;
mod watch;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use slicetest_engine::Engine;

/// slicetest: test-driven development for computer-vision datasets.
#[derive(Debug, Parser)]
#[command(name = "slicetest", version, about, propagate_version = true)]
pub struct Cli {
    /// The workspace: a directory, file:///path, or s3://bucket/prefix (credentials, region
    /// and endpoint from the AWS_* variables; see docs/scale.md).
    #[arg(long, short = 'w', global = true, env = "SLICETEST_WORKSPACE", default_value = "slicetest-data")]
    workspace: PathBuf,
    /// Run SQL (`sql`, `serve`) on the Ballista cluster whose scheduler is at
    /// df://HOST:PORT: queries are planned here and executed by its executors, which must
    /// see the workspace at the same path (see docs/scale.md).
    #[arg(long, global = true, env = "SLICETEST_CLUSTER")]
    cluster: Option<String>,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Whether the command is `serve` (its log lines carry a time).
    pub fn is_serve(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }

    /// Whether this process is a scheduler or an executor of a cluster.
    pub fn is_cluster_process(&self) -> bool {
        #[cfg(feature = "ballista")]
        return matches!(self.command, Command::Scheduler(_) | Command::Executor(_));
        #[cfg(not(feature = "ballista"))]
        false
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a workspace.
    Init,
    /// Import images into a new immutable dataset version.
    Ingest(ingest::IngestArgs),
    /// Run SQL over the workspace: read-only queries, plus the slice statements.
    Sql(sql::SqlArgs),
    /// List datasets with their versions and sizes.
    Datasets,
    /// Show a dataset version: manifest and columns.
    Describe(datasets::DescribeArgs),
    /// Make a dataset the default schema for SQL.
    Use {
        /// The dataset name.
        dataset: String,
    },
    /// Define, freeze, diff and export slices (named critical populations).
    #[command(subcommand)]
    Slice(slice::SliceCommand),
    /// Per-slice breakdown: members by split and hold-out, coverage, too-few-test flags.
    Slices(slice::SlicesArgs),
    /// Hold-out curation: export the hold-out set and the training set.
    #[command(subcommand)]
    Holdout(slice::HoldoutCommand),
    /// Upload and list model runs (predictions).
    #[command(subcommand)]
    Run(run::RunCommand),
    /// Find the slices where a run fails (SliceLine over every column of images), confirmed
    /// on held-apart images; `--save` turns one into a slice test.
    Discover(discover::DiscoverArgs),
    /// Run the slice tests of a run; exits non-zero on a failed slice or a regression.
    Test(run::TestArgs),
    /// Per-slice metrics of a run, worst slices first (table or JSON).
    Report(run::ReportArgs),
    /// Embed a dataset's images with CLIP (resumable; only new images are embedded).
    Embed(embed::EmbedArgs),
    /// Auto-tag a dataset's images (pixel statistics, faces, CLIP zero-shot) or import
    /// another model's outputs; every tag is a column of `images`.
    Tag(tag::TagArgs),
    /// The images closest to a sentence or to an image (needs `slicetest embed` first).
    Search(embed::SearchArgs),
    /// Keep a dataset current with a folder that keeps filling up: ingest what is new,
    /// embed and tag it, and report (or POST to a webhook) how each slice changed.
    Watch(watch::WatchArgs),
    /// Serve the HTTP API on 127.0.0.1:7878 (documented at /openapi.json).
    Serve(serve::ServeArgs),
    /// Run the demo on Fashion-MNIST: ingest, tag, slices, two classifiers and two
    /// detectors scored per slice, reports, search.
    Demo(demo::DemoArgs),
    /// Run a Ballista scheduler for `--cluster` (see docs/scale.md).
    #[cfg(feature = "ballista")]
    Scheduler(cluster::SchedulerArgs),
    /// Run a Ballista executor that joins a scheduler (see docs/scale.md).
    #[cfg(feature = "ballista")]
    Executor(cluster::ExecutorArgs),
}

/// The error type of every subcommand: engine errors and output errors alike.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let ws = cli.workspace;
    let cluster = cli.cluster;
    match cli.command {
        Command::Init => {
            Engine::init(&ws)?;
            println!("created workspace {}", ws.display());
            Ok(())
        }
        Command::Ingest(args) => ingest::run(&ws, args).await,
        Command::Sql(args) => sql::run(&ws, cluster, args).await,
        Command::Datasets => datasets::list(&Engine::open(&ws)?),
        Command::Describe(args) => datasets::describe(&Engine::open(&ws)?, args),
        Command::Use { dataset } => {
            Engine::open(&ws)?.use_dataset(&dataset)?;
            println!("default dataset is now {dataset}");
            Ok(())
        }
        Command::Slice(command) => slice::run(&ws, command).await,
        Command::Slices(args) => slice::slices(&ws, args),
        Command::Holdout(command) => slice::holdout(&ws, command).await,
        Command::Run(command) => run::run(&ws, command).await,
        Command::Discover(args) => discover::run(&ws, args).await,
        Command::Test(args) => run::test(&ws, args),
        Command::Report(args) => run::report(&ws, args).await,
        Command::Embed(args) => embed::run(&ws, args).await,
        Command::Tag(args) => tag::run(&ws, args).await,
        Command::Search(args) => embed::search(&ws, args),
        Command::Watch(args) => watch::run(&ws, args).await,
        Command::Serve(args) => serve::run(&ws, cluster, args).await,
        Command::Demo(args) => demo::run(&ws, args).await,
        #[cfg(feature = "ballista")]
        Command::Scheduler(args) => cluster::scheduler(args).await,
        #[cfg(feature = "ballista")]
        Command::Executor(args) => cluster::executor(args).await,
    }
}

/// The format an output file's extension names, among `known` (extension, format), for a
/// command given `-o FILE` without `--format`: `-o members.csv` writes CSV rather than
/// the command's default format under a name that says otherwise.
pub(crate) fn format_of_output<F: Copy>(output: Option<&std::path::Path>, known: &[(&str, F)]) -> Option<F> {
    let extension = output?.extension()?.to_str()?.to_ascii_lowercase();
    known.iter().find(|(e, _)| *e == extension).map(|&(_, format)| format)
}

/// How the CLI's tables show a time: to the second, in UTC, so a column's
/// width does not follow how many fractional digits a timestamp happens to have.
pub(crate) const TABLE_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S UTC";

/// A manifest's RFC 3339 time as the tables show it ([`TABLE_TIME_FORMAT`]);
/// a value that does not parse is shown as written rather than hidden.
pub(crate) fn table_time(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t.with_timezone(&chrono::Utc).format(TABLE_TIME_FORMAT).to_string(),
        Err(_) => rfc3339.to_string(),
    }
}

/// Prints a boxed table with the given header and rows.
pub(crate) fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::ASCII_FULL_CONDENSED);
    table.set_header(header.iter().copied());
    for row in rows {
        table.add_row(row);
    }
    println!("{table}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_times_have_one_width_whatever_their_fraction() {
        let shown: Vec<String> = [
            "2026-12-06T11:45:13+00:00",
            "2026-12-06T11:45:13.120+00:00",
            "2026-12-06T11:45:13.123456789+00:00",
            "2026-12-06T12:45:13.5+01:00",
        ]
        .iter()
        .map(|t| table_time(t))
        .collect();
        assert!(shown.iter().all(|t| t == "2026-12-06 11:45:13 UTC"), "{shown:?}");
        assert_eq!(table_time("yesterday"), "yesterday");
    }
}
