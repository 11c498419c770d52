//! `slicetest watch`: continuous intake of a folder or bucket prefix that keeps filling up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use std::sync::Arc;

use slicetest_engine::{Engine, ImportOptions, IngestReport, IntakeOptions, IntakeReport, KnownFiles, is_object_url};

use super::CliError;

/// Slice members listed by id in a webhook message (the counts are always whole).
const IDS_IN_WEBHOOK: usize = 100;

/// Arguments of `slicetest watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The folder, bucket prefix (`s3://bucket/images/`) or manifest to watch; every look
    /// ingests it as `slicetest ingest` does.
    pub source: PathBuf,
    #[command(flatten)]
    pub into: super::ingest::IntoDataset,
    /// Time between two looks: seconds, or a number with s, m or h (`30s`, `5m`, `1h`).
    #[arg(long, default_value = "60s", value_parser = parse_every)]
    pub every: Duration,
    /// Look once and exit (for cron, CI, or a first catch-up).
    #[arg(long)]
    pub once: bool,
    /// POST a JSON message here after each look that found something new.
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// Taggers to run on new images (repeat or comma-separate); default: the built-in
    /// taggers the dataset already has tags of.
    #[arg(long = "tagger", short = 't', value_delimiter = ',')]
    pub taggers: Vec<String>,
    /// Do not embed new images (default: with every model the dataset is embedded with).
    #[arg(long)]
    pub no_embed: bool,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `90` → 90 s; `30s`, `5m`, `1h`.
fn parse_every(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{text:?}: give seconds, or a number with s, m or h (30s, 5m, 1h)")),
    };
    let n: u64 = number.parse().map_err(|_| format!("{text:?}: give seconds, or a number with s, m or h"))?;
    if n == 0 {
        return Err("--every must be at least 1s".into());
    }
    Ok(Duration::from_secs(n * seconds))
}

pub async fn run(workspace: &Path, args: WatchArgs) -> Result<(), CliError> {
    if !is_object_url(&args.source) && !args.source.exists() {
        return Err(format!("{}: no such folder or file to watch", args.source.display()).into());
    }
    if let Some(url) = &args.webhook
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(format!("--webhook {url:?}: give an http:// or https:// URL").into());
    }
    let mut engine = Engine::open_or_init(workspace)?;
    let import = ImportOptions { progress: !args.quiet, ..ImportOptions::default() };
    let mut ingest = args.into.options(&args.source, import, false);
    // Each look reads only the files that are new or changed since the last one.
    ingest.known = Some(Arc::new(KnownFiles::default()));
    let mut first = true;
    // Rejections already said: a bad file stays bad look after look, and is named once.
    let mut rejections_said = std::collections::HashSet::new();
    // Images of the dataset the source no longer has, as of the last look.
    let mut not_in_source: Option<usize> = None;
    loop {
        let started = Instant::now();
        let options = IntakeOptions {
            taggers: (!args.taggers.is_empty()).then(|| args.taggers.clone()),
            embed: !args.no_embed,
            catch_up: first,
            progress: !args.quiet,
            ..IntakeOptions::new(ingest.clone())
        };
        first = false;
        match engine.intake(&args.source, &options).await {
            Ok(report) => {
                print_report(&report, &mut rejections_said);
                if let Some(note) = not_in_source_note(&report.ingest, &args.source, not_in_source) {
                    println!("  {note}");
                }
                not_in_source = Some(report.ingest.merge.kept);
                if let Some(url) = &args.webhook
                    && report.ingest.created
                {
                    // A receiver that is down must not stop the intake: said, and retried
                    // with the next look's message. With --once there is no next look.
                    if let Err(e) = post(url, &message(&report)) {
                        if args.once {
                            return Err(format!("webhook {url}: {e}").into());
                        }
                        eprintln!("watch: webhook {url}: {e}");
                    }
                }
            }
            // One failed look (a file mid-copy, a model that is busy) is reported, and the
            // next look tries again; with --once it is the command's error.
            Err(e) if !args.once => eprintln!("watch: {}", CliError::from(e)),
            Err(e) => return Err(e.into()),
        }
        if args.once {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(args.every.saturating_sub(started.elapsed())) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Prints a look's report; rejections not in `said` are named with their reasons (as
/// `slicetest ingest` names them) and added to it.
fn print_report(report: &IntakeReport, said: &mut std::collections::HashSet<(String, String)>) {
    let ingest = &report.ingest;
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S");
    let read = format!("read {} of {} files", ingest.files_read, ingest.candidates);
    if !ingest.created {
        println!("{now} {}: nothing new (v{}, {} images; {read})", ingest.dataset, ingest.version, ingest.total_images);
    } else {
        println!(
            "{now} {} v{}: {} new, {} changed, {} rejected ({} images; {read})",
            ingest.dataset,
            ingest.version,
            ingest.merge.added,
            ingest.merge.changed,
            ingest.rejected.len(),
            ingest.total_images
        );
    }
    let mut work: Vec<String> =
        report.embeddings.iter().map(|e| format!("embedded {} images ({})", e.embedded, e.model)).collect();
    work.extend(report.taggers.iter().map(|t| format!("{} tagged {}", t.tagger, t.tagged)));
    if !work.is_empty() {
        println!("  {}", work.join("; "));
    }
    for change in &report.slices {
        // Members whose bytes changed: a frozen version of the slice still reads the old
        // content (`slicetest slice diff` lists them; freeze again to test the new).
        let changed = match change.changed.len() {
            0 => String::new(),
            1 => ", 1 member changed content".to_string(),
            n => format!(", {n} members changed content"),
        };
        println!(
            "  slice {}: {} → {} (+{}, −{}{changed})",
            change.slice,
            change.before,
            change.after,
            change.added.len(),
            change.removed.len()
        );
    }
    if ingest.created && report.unchanged_slices > 0 {
        println!("  {} slices unchanged", report.unchanged_slices);
    }
    let new: Vec<_> = ingest.rejected.iter().filter(|r| said.insert((r.item.clone(), r.reason.clone()))).collect();
    for rejection in new.iter().take(20) {
        eprintln!("  rejected {}: {}", rejection.item, rejection.reason);
    }
    if new.len() > 20 {
        eprintln!("  … and {} more rejected (the version's ingest-report-<key>.json lists them)", new.len() - 20);
    }
}

/// What to say when images of the dataset are not (or no longer) in the source: a file deleted
/// or moved away. A watch only adds and updates; the dataset keeps such an image (its
/// file, and so its picture, is gone), so the user hears of it once rather than never.
fn not_in_source_note(ingest: &IngestReport, source: &Path, before: Option<usize>) -> Option<String> {
    let (dataset, kept) = (&ingest.dataset, ingest.merge.kept);
    let images = |n: usize| if n == 1 { "1 image".to_string() } else { format!("{n} images") };
    match before {
        None if kept > 0 => {
            Some(format!("{} of {dataset} not in {}; the dataset keeps them", images(kept), source.display()))
        }
        Some(before) if kept > before => Some(format!(
            "{} left {} since the last look (deleted, moved, or now rejected); the dataset keeps them",
            images(kept - before),
            source.display()
        )),
        _ => None,
    }
}

/// The webhook's JSON: the new version, the work done, and each changed slice with
/// counts and the first ids.
fn message(report: &IntakeReport) -> serde_json::Value {
    let ingest = &report.ingest;
    let first = |ids: &[String]| ids.iter().take(IDS_IN_WEBHOOK).cloned().collect::<Vec<_>>();
    serde_json::json!({
        "event": "slicetest.intake",
        "dataset": ingest.dataset,
        "version": ingest.version,
        "images": ingest.total_images,
        "added": ingest.merge.added,
        "changed": ingest.merge.changed,
        "rejected": ingest.rejected.len(),
        "not_in_source": ingest.merge.kept,
        "embeddings": report.embeddings,
        "taggers": report.taggers,
        "slices": report.slices.iter().map(|c| serde_json::json!({
            "slice": c.slice,
            "before": c.before,
            "after": c.after,
            "added": c.added.len(),
            "removed": c.removed.len(),
            "changed": c.changed.len(),
            "added_ids": first(&c.added),
            "removed_ids": first(&c.removed),
            "changed_ids": first(&c.changed),
        })).collect::<Vec<_>>(),
        "unchanged_slices": report.unchanged_slices,
    })
}

/// POSTs `body` as JSON; bounded, so a receiver that hangs cannot stall the watch.
fn post(url: &str, body: &serde_json::Value) -> Result<(), String> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    agent
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_missing_from_the_source_are_said_when_first_seen_and_when_more_leave() {
        let mut ingest = IngestReport {
            dataset: "photos".into(),
            source: "/src".into(),
            format: "folder".into(),
            version: 3,
            created: false,
            total_images: 5,
            candidates: 4,
            files_read: 0,
            merge: Default::default(),
            rejected: Vec::new(),
            ignored: 0,
            seconds: 0.0,
        };
        ingest.merge.kept = 1;
        let src = Path::new("/src");
        assert_eq!(
            not_in_source_note(&ingest, src, None).unwrap(),
            "1 image of photos not in /src; the dataset keeps them"
        );
        assert_eq!(not_in_source_note(&ingest, src, Some(1)), None, "said once");
        ingest.merge.kept = 3;
        let note = not_in_source_note(&ingest, src, Some(1)).unwrap();
        assert_eq!(
            note,
            "2 images left /src since the last look (deleted, moved, or now rejected); the dataset keeps them"
        );
        ingest.merge.kept = 0;
        assert_eq!(not_in_source_note(&ingest, src, None), None);
        assert_eq!(not_in_source_note(&ingest, src, Some(3)), None, "files back");
    }

    #[test]
    fn intervals_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_every("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_every("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_every("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_every("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["0", "5d", "m", "", "-1s", "1.5m"] {
            assert!(parse_every(bad).is_err(), "{bad}");
        }
    }
}
