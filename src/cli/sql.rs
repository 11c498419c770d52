//! `slicetest sql`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use slicetest_engine::{Engine, OutputFormat, write_stream};

use super::CliError;

/// Arguments of `slicetest sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query (read-only: SELECT, WITH, EXPLAIN, SHOW, DESCRIBE).
    pub query: String,
    /// Output format [default: the output file's extension (.csv, .json, .jsonl, .parquet,
    /// .arrow), else table].
    #[arg(long, short, value_enum)]
    pub format: Option<OutputFormat>,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub async fn run(workspace: &Path, cluster: Option<String>, args: SqlArgs) -> Result<(), CliError> {
    let mut engine = Engine::open(workspace)?;
    if let Some(url) = cluster {
        engine = engine.with_cluster(url)?;
    }
    let stream = engine.execute(&args.query).await?;
    let out: Box<dyn Write + Send> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let format = args.format.or_else(|| {
        use OutputFormat::*;
        let known =
            [("csv", Csv), ("json", Json), ("jsonl", Jsonl), ("ndjson", Jsonl), ("parquet", Parquet), ("arrow", Arrow)];
        super::format_of_output(args.output.as_deref(), &known)
    });
    write_stream(stream, format.unwrap_or(OutputFormat::Table), out).await?;
    Ok(())
}
