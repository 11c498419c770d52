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
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
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
    write_stream(stream, args.format, out).await?;
    Ok(())
}
