//! `slicetest run upload|list`, `slicetest test` and `slicetest report`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use slicetest_engine::discovery::DiscoverOptions;
use slicetest_engine::scoring::SLICE_METRICS;
use slicetest_engine::{DEFAULT_ALPHA, Engine, RunReport, SliceScore, UploadOptions, Verdict};

use super::{CliError, print_table};

/// `slicetest run <command>`.
#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Upload a model's predictions (CSV, Parquet, JSONL or Arrow IPC) as a new run.
    Upload {
        /// The predictions: image_id plus predicted and/or prob_<label> columns, optional score, loss;
        /// or detections: a COCO results .json, or a table of image_id, category, x, y, w, h, score;
        /// or segmentation: a folder of PNG label maps, one per image, scored against the
        /// dataset's imported masks.
        file: PathBuf,
        /// The run's name (unique).
        #[arg(long)]
        run: String,
        /// The model's name.
        #[arg(long)]
        model: String,
        /// The model's version.
        #[arg(long, default_value = "unversioned")]
        model_version: String,
        /// The dataset (default: the workspace default).
        #[arg(long, short)]
        dataset: Option<String>,
        /// Accept predictions for only part of the dataset.
        #[arg(long)]
        allow_partial: bool,
        /// Detection runs: the score threshold of the operating point (TP/FP/FN, recall
        /// tests); default: the one with the best F1 on the whole run.
        #[arg(long)]
        score_threshold: Option<f64>,
        /// Segmentation runs: the mask set to score against (default: the dataset's only one).
        #[arg(long)]
        mask_source: Option<String>,
        /// The file's masks are instance masks (a detection run scored with mask AP), also
        /// where a result has no bbox: it gets its mask's box, as pycocotools' loadRes
        /// gives one. Without it, masks without boxes are per-class masks of a
        /// segmentation run.
        #[arg(long)]
        instances: bool,
    },
    /// List runs.
    List,
}

/// Arguments shared by `test` and `report`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// The run to score.
    #[arg(long)]
    pub run: String,
    /// A baseline run: significant accuracy drops against it are regressions.
    #[arg(long)]
    pub baseline: Option<String>,
    /// Significance level of the regression test.
    #[arg(long, default_value_t = DEFAULT_ALPHA)]
    pub alpha: f64,
}

/// `slicetest test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub score: ScoreArgs,
    /// Write JUnit XML (one test case per slice) here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
}

/// `slicetest report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub score: ScoreArgs,
    /// Output format [default: the output file's extension (.json, .html), else table].
    #[arg(long, short, value_enum)]
    pub format: Option<ReportFormat>,
    /// Write the report (JSON or HTML) to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `slicetest report --format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    /// One self-contained HTML file: chart, table, confusion matrices, failure galleries.
    Html,
}

pub async fn run(workspace: &Path, command: RunCommand) -> Result<(), CliError> {
    let engine = Engine::open(workspace)?;
    match command {
        RunCommand::Upload {
            file,
            run,
            model,
            model_version,
            dataset,
            allow_partial,
            score_threshold,
            mask_source,
            instances,
        } => {
            let options = UploadOptions {
                run,
                model,
                model_version,
                dataset,
                allow_partial,
                provenance: Default::default(),
                score_threshold,
                instances,
            };
            // The engine tells the kinds apart (a folder of PNG masks or of YOLO labels, a
            // results file, a table), as it does for an HTTP upload.
            let source = file.display().to_string();
            let m = engine.upload_run_from(&file, &source, &options, mask_source.as_deref()).await?;
            for warning in &m.warnings {
                eprintln!("warning: {warning}");
            }
            if let Some(s) = &m.segmentation {
                // Without --allow-partial, only a results file for a COCO-made mask set can
                // leave images out: they are read as all background.
                let unpredicted = match m.images_without_prediction {
                    0 => String::new(),
                    n if options.allow_partial => format!(" ({n} images with a mask but no prediction, not scored)"),
                    n => format!(" ({n} images given no mask in the file, scored as all background)"),
                };
                println!(
                    "segmentation run {} uploaded: {} predicted masks for {}@{} scored against mask set {}{unpredicted}",
                    m.run, m.predictions, m.dataset, m.dataset_version, s.mask_source
                );
                return Ok(());
            }
            if m.task == slicetest_engine::Task::Detection {
                println!(
                    "detection run {} uploaded: {} boxes for {}@{} ({} images without a detection)",
                    m.run, m.predictions, m.dataset, m.dataset_version, m.images_without_prediction
                );
                return Ok(());
            }
            println!(
                "run {} uploaded: {} predictions for {}@{} ({} images without a prediction){}",
                m.run,
                m.predictions,
                m.dataset,
                m.dataset_version,
                m.images_without_prediction,
                if m.classes.is_empty() {
                    String::new()
                } else {
                    format!(", probabilities over {} classes", m.classes.len())
                }
            );
        }
        RunCommand::List => {
            let rows = engine
                .runs()?
                .into_iter()
                .map(|m| {
                    let dataset = format!("{}@{}", m.dataset, m.dataset_version);
                    vec![
                        m.run,
                        m.model,
                        m.model_version,
                        dataset,
                        m.predictions.to_string(),
                        super::table_time(&m.created_at),
                    ]
                })
                .collect();
            print_table(&["run", "model", "version", "dataset", "predictions", "uploaded"], rows);
        }
    }
    Ok(())
}

fn score(engine: &Engine, args: &ScoreArgs) -> Result<RunReport, CliError> {
    if !(0.0..1.0).contains(&args.alpha) || args.alpha == 0.0 {
        return Err(format!("--alpha must be between 0 and 1, got {}", args.alpha).into());
    }
    Ok(engine.score_run(&args.run, args.baseline.as_deref(), args.alpha)?)
}

/// Runs the slice tests; fails (non-zero exit) on any failed slice or significant regression.
pub fn test(workspace: &Path, args: TestArgs) -> Result<(), CliError> {
    let report = score(&Engine::open(workspace)?, &args.score)?;
    print_report(&report);
    if let Some(path) = &args.junit {
        std::fs::write(path, junit(&report)).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let failures: Vec<&str> = report.failures().map(|s| s.slice.as_str()).collect();
    if failures.is_empty() {
        println!("all slice tests passed");
        Ok(())
    } else {
        Err(format!("{} slice(s) failed: {}", failures.len(), failures.join(", ")).into())
    }
}

/// Prints the report as a table (worst slices first) or JSON, or writes it as HTML (with
/// the slices `slicetest discover` finds with its default settings).
pub async fn report(workspace: &Path, args: ReportArgs) -> Result<(), CliError> {
    let engine = Engine::open(workspace)?;
    let known = [("json", ReportFormat::Json), ("html", ReportFormat::Html), ("htm", ReportFormat::Html)];
    let format = args.format.or_else(|| super::format_of_output(args.output.as_deref(), &known));
    let format = format.unwrap_or(ReportFormat::Table);
    if let (ReportFormat::Table, Some(path)) = (format, &args.output) {
        return Err(format!(
            "{}: the table is for the terminal (redirect it with >); --output writes --format json or html (a .json \
             or .html file name picks it)",
            path.display()
        )
        .into());
    }
    let report = score(&engine, &args.score)?;
    let text = match format {
        ReportFormat::Table => {
            print_report(&report);
            return Ok(());
        }
        ReportFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        ReportFormat::Html => {
            let discovery = match engine.discover(&args.score.run, &DiscoverOptions::default()).await {
                Ok(discovery) => Some(discovery),
                Err(e) => {
                    eprintln!("note: the report lists no discovered slices: {e}");
                    None
                }
            };
            engine.html_report(&report, discovery.as_ref())?
        }
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
            println!("report written to {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn percent(e: Option<slicetest_engine::metrics::Estimate>) -> String {
    match e {
        Some(e) => format!("{:.1}% [{:.1}, {:.1}]", 100.0 * e.value, 100.0 * e.low, 100.0 * e.high),
        None => "-".into(),
    }
}

/// A metric's value, or "-" when there is none or nothing was scored (n = 0, NaN).
fn estimate(e: Option<slicetest_engine::metrics::Estimate>) -> String {
    e.filter(|e| e.n > 0 && e.value.is_finite()).map_or("-".into(), |e| format!("{:.3}", e.value))
}

fn verdict_text(s: &SliceScore) -> String {
    if s.detection.is_some() || s.segmentation.is_some() {
        return checks_verdict_text(s);
    }
    let mut text = match s.verdict {
        Verdict::Pass => format!("pass (>= {:.0}%)", 100.0 * s.min_accuracy.unwrap_or(0.0)),
        Verdict::Fail => format!("FAIL (< {:.0}%)", 100.0 * s.min_accuracy.unwrap_or(0.0)),
        Verdict::NotEnoughData => format!("not enough data (< {})", s.min_samples),
        Verdict::NoThreshold => "no threshold".into(),
    };
    if let Some(r) = &s.regression {
        let _ = write!(text, "; {:+.1} pts vs baseline (p={:.3})", 100.0 * r.delta, r.p_value);
        if r.significant {
            text.push_str(" REGRESSION");
        }
    }
    text
}

/// A detection or segmentation slice test's outcome with the checks it failed (or all it passed).
fn checks_verdict_text(s: &SliceScore) -> String {
    let checks = |only_failed: bool| {
        s.checks.iter().filter(|c| !only_failed || !c.passed).map(|c| c.text()).collect::<Vec<_>>().join(", ")
    };
    let mut text = match s.verdict {
        Verdict::Pass => format!("pass ({})", checks(false)),
        Verdict::Fail => format!("FAIL ({})", checks(true)),
        Verdict::NotEnoughData => format!("not enough data ({})", s.not_enough_data_reason()),
        Verdict::NoThreshold => "no threshold".into(),
    };
    for change in s.baseline_changes() {
        let (metric, delta, p_value) = (change.metric, change.delta.unwrap_or(0.0), change.p_value);
        let _ = write!(text, "; {metric} {delta:+.3} vs baseline (p={p_value:.3})");
        if change.significant {
            text.push_str(" REGRESSION");
        }
    }
    text
}

/// Prints a segmentation run's report: mIoU, pixel and mean accuracy and the worst
/// classes per slice.
fn print_segmentation_report(report: &RunReport) {
    let row = |s: &SliceScore| {
        let m = s.segmentation.as_ref().expect("segmentation runs have segmentation metrics");
        let mut worst: Vec<_> = m.classes.iter().filter_map(|c| Some((c.iou?, c.class.as_str()))).collect();
        worst.sort_by(|a, b| a.0.total_cmp(&b.0));
        vec![
            s.slice.clone(),
            m.images.to_string(),
            with_interval(m.scores.mean_iou, m.mean_iou_ci),
            with_interval(m.scores.pixel_accuracy, m.pixel_accuracy_ci),
            rate(m.scores.mean_accuracy),
            worst.iter().take(3).map(|(iou, c)| format!("{c} {iou:.3}")).collect::<Vec<_>>().join(", "),
            verdict_text(s),
        ]
    };
    let mut rows: Vec<Vec<String>> = report.slices.iter().map(row).collect();
    let mut overall = row(&report.overall);
    overall[6] = report.overall.segmentation_regression.as_ref().map_or("-".into(), |_| verdict_text(&report.overall));
    rows.push(overall);
    print_table(
        &[
            "slice",
            "images",
            "mIoU [95% CI]",
            "pixel accuracy [95% CI]",
            "mean accuracy",
            "worst classes (IoU)",
            "test",
        ],
        rows,
    );
    if let Some(m) = &report.overall.segmentation {
        let mut confusions: Vec<(u64, &str, &str)> = Vec::new();
        for (t, row) in m.confusion.iter().enumerate() {
            for (p, &n) in row.iter().enumerate() {
                if t != p && n > 0 {
                    confusions.push((n, &m.classes[t].class, &m.classes[p].class));
                }
            }
        }
        confusions.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)).then(a.2.cmp(b.2)));
        let top: Vec<String> = confusions.iter().take(5).map(|(n, t, p)| format!("{t} taken for {p} {n} px")).collect();
        if !top.is_empty() {
            println!("most frequent errors (all images): {}", top.join(" · "));
        }
    }
}

fn with_interval(v: Option<f64>, interval: Option<[f64; 2]>) -> String {
    match (v, interval) {
        (Some(v), Some([low, high])) => format!("{v:.3} [{low:.3}, {high:.3}]"),
        (v, _) => rate(v),
    }
}

fn rate(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite()).map_or("-".into(), |v| format!("{v:.3}"))
}

/// Prints a detection run's report: COCO numbers and the operating point per slice.
fn print_detection_report(report: &RunReport) {
    let masks = report.overall.detection.as_ref().is_some_and(|d| d.mask.is_some());
    let poses = report.overall.detection.as_ref().is_some_and(|d| d.keypoints.is_some());
    let row = |s: &SliceScore| {
        let d = s.detection.as_ref().expect("detection runs have detection metrics");
        let mut cells = vec![
            s.slice.clone(),
            d.images.to_string(),
            d.objects.to_string(),
            with_interval(d.coco.ap, d.ap_interval),
            with_interval(d.coco.ap50, d.ap50_interval),
            rate(d.coco.ap75),
            rate(d.coco.ap_small),
            rate(d.coco.ar100),
        ];
        if masks {
            cells.extend([
                with_interval(d.mask.and_then(|m| m.ap), d.mask_ap_interval),
                rate(d.mask.and_then(|m| m.ap50)),
            ]);
        }
        if poses {
            cells.extend([
                with_interval(d.keypoints.and_then(|k| k.ap), d.keypoint_ap_interval),
                rate(d.keypoints.and_then(|k| k.ap50)),
            ]);
        }
        cells.extend([rate(d.counts.recall), rate(d.counts.precision), verdict_text(s)]);
        cells
    };
    let mut rows: Vec<Vec<String>> = report.slices.iter().map(row).collect();
    let mut overall = row(&report.overall);
    *overall.last_mut().expect("a test column") =
        report.overall.detection_regression.as_ref().map_or("-".into(), |_| verdict_text(&report.overall));
    rows.push(overall);
    let mut headers = vec!["slice", "images", "objects", "mAP [95% CI]", "AP50 [95% CI]", "AP75", "APs", "AR100"];
    if masks {
        headers.extend(["mask mAP [95% CI]", "mask AP50"]);
    }
    if poses {
        headers.extend(["keypoint AP [95% CI]", "keypoint AP50"]);
    }
    headers.extend(["recall", "precision", "test"]);
    print_table(&headers, rows);
    if let Some(d) = &report.overall.detection {
        println!(
            "operating point: IoU {} and score >= {:.3} ({}): precision {}, recall {}, F1 {}",
            d.iou,
            d.score_threshold,
            if report.run.score_threshold.is_some() { "given at upload" } else { "the best F1 on the whole run" },
            rate(d.counts.precision),
            rate(d.counts.recall),
            rate(d.counts.f1)
        );
        let top: Vec<String> = d
            .confusion
            .top_confusions(5)
            .into_iter()
            .map(|(truth, predicted, n)| match (truth, predicted) {
                (_, "background") => format!("missed {truth} {n}"),
                ("background", _) => format!("false {predicted} {n}"),
                _ => format!("{truth} taken for {predicted} {n}"),
            })
            .collect();
        if !top.is_empty() {
            println!("most frequent errors (all images): {}", top.join(" · "));
        }
        if masks || poses {
            let mut others = Vec::new();
            if masks {
                others.push("mask mAP and AP50 the masks'");
            }
            if poses {
                others.push("keypoint AP and AP50 the poses' (OKS)");
            }
            println!("mAP, AP50, AP75, APs, AR100 and the operating point are the boxes'; {}", others.join("; "));
        }
        for note in [&d.mask_note, &d.keypoint_note].into_iter().flatten() {
            println!("{note}");
        }
    }
}

/// Prints a run's report as a table, worst slices first.
pub(crate) fn print_report(report: &RunReport) {
    let r = &report.run;
    let truth = match report.truth_version {
        Some(v) if v != r.dataset_version => format!(", scored against the ground truth of {}@{v}", r.dataset),
        _ => String::new(),
    };
    println!("run {} — model {} {} on {}@{}{truth}", r.run, r.model, r.model_version, r.dataset, r.dataset_version);
    if report.overall.detection.is_some() {
        print_detection_report(report);
        return;
    }
    if report.overall.segmentation.is_some() {
        print_segmentation_report(report);
        return;
    }
    let row = |s: &SliceScore| {
        let mut cells = vec![s.slice.clone(), s.scored.to_string(), percent(s.accuracy())];
        // Nothing scored (a slice never frozen, no member predicted) is "-" like every
        // other empty cell, never NaN.
        cells.extend(SLICE_METRICS.iter().map(|m| estimate((m.value)(s))));
        cells.push(verdict_text(s));
        cells
    };
    let mut rows: Vec<Vec<String>> = report.slices.iter().map(row).collect();
    let mut overall = row(&report.overall);
    *overall.last_mut().expect("a test column") =
        report.overall.regression.as_ref().map_or("-".into(), |_| verdict_text(&report.overall));
    rows.push(overall);
    let mut headers = vec!["slice", "n", "accuracy [95% CI]"];
    headers.extend(SLICE_METRICS.iter().map(|m| m.header));
    headers.push("test");
    print_table(&headers, rows);
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// JUnit XML: one test case per slice; a failure element for failed tests and
/// regressions, a skipped element for not-enough-data.
fn junit(report: &RunReport) -> String {
    // With a baseline, the whole run is a test case too: `(all)` fails when it regressed.
    let overall = report.baseline.is_some().then_some(&report.overall);
    let cases: Vec<&SliceScore> = report.slices.iter().chain(overall).collect();
    let failures = cases.iter().filter(|s| s.is_failure()).count();
    // A case is a failure or skipped, never both (a small slice that regressed fails).
    let skipped = cases.iter().filter(|s| !s.is_failure() && s.verdict == Verdict::NotEnoughData).count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuite name=\"slicetest {}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
        xml_escape(&report.run.run),
        cases.len()
    );
    for s in cases {
        let _ = write!(xml, "  <testcase classname=\"slices\" name=\"{}\">", xml_escape(&s.slice));
        if s.is_failure() {
            let _ = write!(
                xml,
                "<failure message=\"{}\"/>",
                xml_escape(&match (&s.detection, &s.segmentation) {
                    (Some(d), _) => format!("mAP {}: {}", rate(d.coco.ap), verdict_text(s)),
                    (_, Some(m)) => format!("mIoU {}: {}", rate(m.scores.mean_iou), verdict_text(s)),
                    _ => format!("{}: {}", percent(s.accuracy()), verdict_text(s)),
                })
            );
        } else if s.verdict == Verdict::NotEnoughData {
            let _ = write!(xml, "<skipped message=\"{}\"/>", xml_escape(&verdict_text(s)));
        }
        xml.push_str("</testcase>\n");
    }
    xml.push_str("</testsuite>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;
    use slicetest_engine::metrics::Estimate;

    #[test]
    fn an_empty_metric_shows_a_dash_not_nan() {
        let nan = Estimate { value: f64::NAN, n: 0, low: f64::NAN, high: f64::NAN };
        assert_eq!(estimate(Some(nan)), "-");
        assert_eq!(estimate(None), "-");
        assert_eq!(estimate(Some(Estimate { value: 0.5, n: 4, low: 0.1, high: 0.9 })), "0.500");
        assert_eq!(rate(Some(f64::NAN)), "-");
        assert_eq!(rate(Some(0.25)), "0.250");
    }
}
