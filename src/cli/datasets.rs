//! `slicetest datasets` and `slicetest describe`.

use clap::Args;
use slicetest_engine::Engine;

use super::{CliError, print_table};

/// Arguments of `slicetest describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The dataset.
    pub dataset: String,
    /// A version number (default: the latest).
    #[arg(long)]
    pub version: Option<u64>,
}

pub fn list(engine: &Engine) -> Result<(), CliError> {
    let default = engine.workspace().config().default_dataset.clone();
    let rows: Vec<Vec<String>> = engine
        .datasets()?
        .into_iter()
        .map(|d| {
            let latest = &d.latest;
            let marker = if default.as_deref() == Some(latest.dataset.as_str()) { " (default)" } else { "" };
            vec![
                format!("{}{marker}", latest.dataset),
                d.versions.to_string(),
                latest.version.to_string(),
                latest.row_count.to_string(),
                latest.columns.len().to_string(),
                latest.created_at.format(super::TABLE_TIME_FORMAT).to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no datasets yet; add one with `slicetest ingest <folder|manifest|coco.json|idx-dir>`");
        return Ok(());
    }
    print_table(&["dataset", "versions", "latest", "images", "columns", "published"], rows);
    Ok(())
}

pub fn describe(engine: &Engine, args: DescribeArgs) -> Result<(), CliError> {
    let v = engine.describe(&args.dataset, args.version)?;
    println!("dataset       {}", v.dataset);
    println!("version       {}{}", v.version, v.parent.map(|p| format!(" (built on {p})")).unwrap_or_default());
    println!("images        {}", v.row_count);
    println!("published     {}", v.created_at.to_rfc3339());
    println!("source        {} [{}]", v.source, v.source_format);
    println!("content hash  {}", v.content_hash);
    println!("written by    slicetest {}", v.slicetest_version);
    let rows = v
        .columns
        .iter()
        .map(|c| vec![c.name.clone(), c.data_type.clone(), if c.nullable { "yes" } else { "no" }.to_string()])
        .collect();
    print_table(&["column", "type", "nullable"], rows);
    Ok(())
}
