//! The run report as one self-contained HTML file: a per-slice accuracy chart with 95%
//! whiskers and threshold lines (inline SVG), the slice table with deltas against the
//! baseline, and per slice a confusion matrix and a gallery of failed examples with
//! their thumbnails embedded as data URIs; when given a discovery of the run, the slices it
//! found and confirmed. No scripts, no external resources.

use std::collections::HashMap;
use std::fmt::Write as _;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use slicetest_datasets::version::read_image_columns;

use crate::Engine;
use crate::discovery::Discovery;
use crate::error::Result;
use crate::metrics::Estimate;
use crate::scoring::{RunReport, SLICE_METRICS, SliceScore, Verdict};
use crate::segmentation::MaskOverlay;

/// Failed examples shown per slice.
pub const GALLERY_SIZE: usize = 12;
/// Image files larger than this are not embedded (the gallery names them instead).
pub const MAX_THUMBNAIL_BYTES: u64 = 256 * 1024;

impl Engine {
    /// Renders `report` as a self-contained HTML page, with a section listing the
    /// confirmed slices of `discovery` (a discovery of the same run) when there is one.
    pub fn html_report(&self, report: &RunReport, discovery: Option<&Discovery>) -> Result<String> {
        let latest = self.workspace.latest(&report.run.dataset)?;
        let images = read_image_columns(self.workspace.layout(), &latest, &["image_id", "uri", "format"])?;
        let column = |name: &str| cast(images.column_by_name(name).expect("core column"), &DataType::Utf8);
        let (ids, uris, formats) = (column("image_id")?, column("uri")?, column("format")?);
        let (ids, uris, formats) = (ids.as_string::<i32>(), uris.as_string::<i32>(), formats.as_string::<i32>());
        let wanted: std::collections::HashSet<&str> = report
            .slices
            .iter()
            .flat_map(|s| s.failures.iter().take(GALLERY_SIZE).map(|f| f.image_id.as_str()))
            .chain(
                report
                    .slices
                    .iter()
                    .filter_map(|s| s.detection.as_ref())
                    .flat_map(|d| d.worst_images.iter().map(|w| w.image_id.as_str())),
            )
            .chain(segmentation_worst(report))
            .collect();
        let mut thumbnails: HashMap<String, String> = HashMap::new();
        for i in 0..ids.len() {
            if !wanted.contains(ids.value(i)) {
                continue;
            }
            let path = self.workspace.layout().resolve_uri(uris.value(i));
            if let Some(bytes) = small_image(&path) {
                let uri = format!("data:image/{};base64,{}", formats.value(i), base64(&bytes));
                thumbnails.insert(ids.value(i).to_string(), uri);
            }
        }
        let overlays = self.segmentation_overlays(&report.run, segmentation_worst(report))?;
        Ok(render(report, &thumbnails, &overlays, discovery))
    }
}

/// The bytes of the image at `path` if it is at most [`MAX_THUMBNAIL_BYTES`] (a local
/// file's size is checked before it is read; an object in a bucket is fetched first).
fn small_image(path: &std::path::Path) -> Option<bytes::Bytes> {
    let local = !slicetest_datasets::image_files::is_object_url(path);
    if local && !std::fs::metadata(path).is_ok_and(|m| m.len() <= MAX_THUMBNAIL_BYTES) {
        return None;
    }
    crate::read_image_bytes(path).ok().filter(|b| b.len() as u64 <= MAX_THUMBNAIL_BYTES)
}

/// The image ids of every segmentation slice's failure gallery.
fn segmentation_worst(report: &RunReport) -> impl Iterator<Item = &str> {
    report
        .slices
        .iter()
        .filter_map(|s| s.segmentation.as_ref())
        .flat_map(|m| m.worst_images.iter().map(|w| w.image_id.as_str()))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// RFC 4648 base64 (for data URIs).
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn verdict_class(s: &SliceScore) -> &'static str {
    if s.is_failure() {
        "fail"
    } else {
        match s.verdict {
            Verdict::Pass => "pass",
            Verdict::NotEnoughData => "nodata",
            _ => "info",
        }
    }
}

fn verdict_label(s: &SliceScore) -> String {
    let mut text = match s.verdict {
        Verdict::Pass => "pass".to_string(),
        Verdict::Fail => "fail".to_string(),
        Verdict::NotEnoughData => format!("not enough data ({})", escape(&s.not_enough_data_reason())),
        Verdict::NoThreshold => "no threshold".to_string(),
    };
    if s.regressed() {
        text.push_str(", regression");
    }
    text
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.4em}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th:first-child,td:first-child{text-align:left}td:first-child{max-width:24em;overflow-wrap:anywhere}tr.fail td{background:#fde2e2}tr.pass td{background:#e6f4ea}\
tr.nodata td{color:#888}.gallery{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;text-align:center;font-size:11px}\
figure img{width:84px;height:84px;image-rendering:pixelated;border:1px solid #c00}\
figure.masks img{width:140px;height:auto;border:1px solid #999;margin:1px}figure.masks{border:1px solid #ddd;padding:4px}section.slice{margin-top:2em}\
table.confusion td.diag{background:#e6f4ea;font-weight:bold}\
#discovery-table td.slice,#discovery-table td.query{text-align:left}#discovery-table td.query code{font-size:12px}";

/// The page for a scored run (`thumbnails`: image id → data URI; `overlays`: a
/// segmentation run's gallery masks; `discovery`: the run's discovered slices, if it was
/// searched).
pub fn render(
    report: &RunReport,
    thumbnails: &HashMap<String, String>,
    overlays: &HashMap<String, MaskOverlay>,
    discovery: Option<&Discovery>,
) -> String {
    let r = &report.run;
    let mut html = String::new();
    let failed = report.failures().count();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>slicetest report: {run}</title>\
         <style>{STYLE}</style></head><body><h1>Run {run}: {model} {version}</h1>\
         <p id=\"summary\">Dataset {ds}@{dv}, {n} predictions, {slices} slices, <strong>{failed} failing</strong>{base}.</p>",
        run = escape(&r.run),
        model = escape(&r.model),
        version = escape(&r.model_version),
        ds = escape(&r.dataset),
        dv = r.dataset_version,
        n = r.predictions,
        slices = report.slices.len(),
        base = report.baseline.as_ref().map_or(String::new(), |b| format!(", compared with baseline {}", escape(b))),
    );
    // The same page for every task: a chart, the tables, the discovered slices, a section per slice.
    let (detection, segmentation) = (report.overall.detection.is_some(), report.overall.segmentation.is_some());
    let (chart_html, tables) = if detection {
        (chart(report, "map-chart", "mAP", false, map_bar), detection_tables(report))
    } else if segmentation {
        (chart(report, "miou-chart", "mIoU", false, miou_bar), segmentation_tables(report))
    } else {
        (chart(report, "accuracy-chart", "accuracy", true, accuracy_bar), slice_table(report))
    };
    let section = |s: &SliceScore| match (detection, segmentation) {
        (true, _) => detection_section(s, thumbnails),
        (_, true) => segmentation_section(s, thumbnails, overlays),
        _ => slice_section(s, thumbnails),
    };
    html.push_str(&chart_html);
    html.push_str(&tables);
    if let Some(discovery) = discovery {
        html.push_str(&discovery_section(discovery));
    }
    for s in &report.slices {
        html.push_str(&section(s));
    }
    html.push_str("</body></html>\n");
    html
}

/// One slice's bar in a chart: the value, its 95% interval, the slice test's threshold and
/// the baseline's value.
struct Bar {
    value: f64,
    interval: Option<[f64; 2]>,
    threshold: Option<f64>,
    baseline: Option<f64>,
}

/// A classification slice's bar: accuracy.
fn accuracy_bar(s: &SliceScore) -> Option<Bar> {
    let acc = s.accuracy()?;
    Some(Bar {
        value: acc.value,
        interval: Some([acc.low, acc.high]),
        threshold: s.min_accuracy,
        baseline: s.regression.as_ref().map(|r| r.baseline_accuracy.value),
    })
}

/// A detection slice's bar: mAP (IoU 0.50:0.95) with its bootstrap interval.
fn map_bar(s: &SliceScore) -> Option<Bar> {
    let d = s.detection.as_ref()?;
    Some(Bar {
        value: d.coco.ap?,
        interval: d.ap_interval,
        threshold: s.checks.iter().find(|c| c.metric == "mAP").map(|c| c.threshold),
        baseline: s.detection_regression.as_ref().and_then(|r| r.boxes.baseline_map),
    })
}

/// A segmentation slice's bar: mIoU with its bootstrap interval.
fn miou_bar(s: &SliceScore) -> Option<Bar> {
    let m = s.segmentation.as_ref()?;
    Some(Bar {
        value: m.scores.mean_iou?,
        interval: m.mean_iou_ci,
        threshold: s.checks.iter().find(|c| c.metric == "mIoU").map(|c| c.threshold),
        baseline: s.segmentation_regression.as_ref().map(|r| r.baseline_miou),
    })
}

/// A slice name as the chart's left margin (180 px at 12 px) can hold it: names over 26
/// characters are cut with an ellipsis (the full name is the label's tooltip and the
/// table's first column).
fn chart_label(name: &str) -> String {
    const MAX_CHARS: usize = 26;
    if name.chars().count() <= MAX_CHARS {
        return name.to_string();
    }
    let mut cut: String = name.chars().take(MAX_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Horizontal bars, one per slice: the value, a whisker for its 95% interval, a red line
/// at the threshold, a black tick at the baseline's value. `id` names the SVG, `what` the
/// metric; values are in [0, 1], shown as percentages when `percent`.
fn chart(report: &RunReport, id: &str, what: &str, percent: bool, bar: fn(&SliceScore) -> Option<Bar>) -> String {
    let (row, left, width) = (26.0, 180.0, 500.0);
    let height = row * report.slices.len() as f64 + 30.0;
    let x = |v: f64| left + v * width;
    let mut svg = format!(
        "<svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" role=\"img\" \
         aria-label=\"{what} per slice with 95% intervals\">",
        left + width + 60.0
    );
    for tick in 0..=4 {
        let v = tick as f64 / 4.0;
        let label = if percent { format!("{}%", (v * 100.0) as u32) } else { format!("{v:.2}") };
        let _ = write!(
            svg,
            "<line x1=\"{0}\" x2=\"{0}\" y1=\"0\" y2=\"{1}\" stroke=\"#eee\"/><text x=\"{0}\" y=\"{2}\" font-size=\"11\" \
             text-anchor=\"middle\">{label}</text>",
            x(v),
            height - 18.0,
            height - 4.0,
        );
    }
    for (i, s) in report.slices.iter().enumerate() {
        let y = i as f64 * row + 4.0;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\"><title>{}</title>{}</text>",
            left - 6.0,
            y + 14.0,
            escape(&s.slice),
            escape(&chart_label(&s.slice))
        );
        let Some(b) = bar(s) else { continue };
        let colour = if s.is_failure() { "#d93025" } else { "#1e8e3e" };
        let _ = write!(
            svg,
            "<rect class=\"bar\" data-slice=\"{name}\" x=\"{left}\" y=\"{y}\" width=\"{w:.1}\" height=\"18\" fill=\"{colour}\" \
             opacity=\"0.7\"><title>{name}: {what} {value:.3}</title></rect>",
            name = escape(&s.slice),
            w = b.value * width,
            value = b.value,
        );
        if let Some([low, high]) = b.interval {
            let _ = write!(
                svg,
                "<line class=\"ci\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{mid}\" y2=\"{mid}\" stroke=\"#000\"/>",
                x(low),
                x(high),
                mid = y + 9.0
            );
        }
        if let Some(min) = b.threshold {
            let _ = write!(
                svg,
                "<line class=\"threshold\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#c00\" stroke-width=\"2\" stroke-dasharray=\"3,2\"/>",
                x(min),
                y - 2.0,
                y + 20.0
            );
        }
        if let Some(base) = b.baseline {
            let _ = write!(
                svg,
                "<line class=\"baseline\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#000\" stroke-width=\"3\"/>",
                x(base),
                y,
                y + 18.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A confusion matrix as a table, rows the truth and columns the prediction; only the
/// labels at `shown` (all when None).
fn confusion_table(labels: &[String], counts: &[Vec<u64>], shown: Option<&[usize]>) -> String {
    let all: Vec<usize> = (0..labels.len()).collect();
    let shown = shown.unwrap_or(&all);
    let mut html = String::from("<table class=\"confusion\"><tr><th>true \\ predicted</th>");
    for &j in shown {
        let _ = write!(html, "<th>{}</th>", escape(&labels[j]));
    }
    html.push_str("</tr>");
    for &i in shown {
        let _ = write!(html, "<tr><th>{}</th>", escape(&labels[i]));
        for &j in shown {
            let _ = write!(html, "<td{}>{}</td>", if i == j { " class=\"diag\"" } else { "" }, counts[i][j]);
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    html
}

/// A detection confusion matrix over the categories that appear in it (a COCO dataset
/// has 80), with its background row and column.
fn detection_confusion(c: &crate::detection::DetectionConfusion) -> String {
    let n = c.labels.len();
    let shown: Vec<usize> = (0..n)
        .filter(|&k| k + 1 == n || c.counts[k].iter().any(|&v| v > 0) || c.counts.iter().any(|r| r[k] > 0))
        .collect();
    if shown.len() <= 1 {
        return String::new();
    }
    format!(
        "<p>Class confusions at the operating point: a false detection overlapping (IoU ≥ 0.5) a missed object of \
         another category is that object mistaken for the detection's category; the rest are missed into, or \
         detected from, the background.</p>{}",
        confusion_table(&c.labels, &c.counts, Some(&shown))
    )
}

fn slice_table(report: &RunReport) -> String {
    let mut t = String::from(
        "<table id=\"slice-table\"><tr><th>slice</th><th>n</th><th>accuracy</th><th>95% CI</th><th>threshold</th>",
    );
    for m in SLICE_METRICS {
        let _ = write!(t, "<th title=\"{}\">{}</th>", escape(m.description), escape(m.header));
    }
    t.push_str("<th>vs baseline</th><th>test</th></tr>");
    // A value with its 95% interval underneath, smaller.
    // Nothing scored (n = 0) shows as "–", not NaN.
    let num = |v: Option<Estimate>| {
        v.filter(|e| e.n > 0 && e.value.is_finite()).map_or("–".into(), |e| {
            format!("{:.3}<br><small class=\"ci\">{:.3}–{:.3}</small>", e.value, e.low, e.high)
        })
    };
    for s in std::iter::once(&report.overall).chain(&report.slices) {
        let acc = s.accuracy();
        let _ = write!(
            t,
            "<tr class=\"{}\" data-slice=\"{}\"><td><a href=\"#slice-{1}\">{1}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             {}<td>{}</td><td>{}</td></tr>",
            if s.slice == "(all)" { "info" } else { verdict_class(s) },
            escape(&s.slice),
            s.scored,
            acc.map_or("–".into(), |a| format!("{:.1}%", 100.0 * a.value)),
            acc.map_or("–".into(), |a| format!("{:.1}–{:.1}%", 100.0 * a.low, 100.0 * a.high)),
            s.min_accuracy.map_or("–".into(), |m| format!("{:.0}%", 100.0 * m)),
            SLICE_METRICS.iter().map(|m| format!("<td>{}</td>", num((m.value)(s)))).collect::<String>(),
            s.regression.as_ref().map_or("–".into(), |r| format!(
                "{:+.1} pts (p={:.3}){}",
                100.0 * r.delta,
                r.p_value,
                if r.significant { " ▼" } else { "" }
            )),
            if s.slice == "(all)" { "–".into() } else { verdict_label(s) },
        );
    }
    t.push_str("</table>");
    t
}

fn slice_section(s: &SliceScore, thumbnails: &HashMap<String, String>) -> String {
    let mut html = format!(
        "<section class=\"slice {}\" id=\"slice-{}\"><h2>{1}</h2><p>{} scored of {} members (frozen version {}); {}.</p>",
        verdict_class(s),
        escape(&s.slice),
        s.scored,
        s.members,
        s.version.map_or("–".into(), |v| v.to_string()),
        verdict_label(s),
    );
    if let Some(c) = s.classification.as_ref().filter(|c| !c.labels.is_empty()) {
        html.push_str(&confusion_table(&c.labels, &c.confusion, None));
    }
    if !s.failures.is_empty() {
        html.push_str("<h3>Failed examples</h3><div class=\"gallery\">");
        for f in s.failures.iter().take(GALLERY_SIZE) {
            let img = thumbnails
                .get(&f.image_id)
                .map_or(String::new(), |uri| format!("<img src=\"{uri}\" alt=\"{}\">", escape(&f.image_id)));
            let _ = write!(
                html,
                "<figure class=\"failure\">{img}<figcaption>{}<br>{} → {}</figcaption></figure>",
                escape(&f.image_id),
                escape(&f.truth),
                escape(&f.predicted)
            );
        }
        html.push_str("</div>");
    }
    html.push_str("</section>");
    html
}

/// The confirmed slices of a discovery: predicates, sizes in both halves, the
/// confirmation half's error rate with its interval against the rest's, lift, adjusted
/// p-value, and the query that makes it a slice.
fn discovery_section(d: &Discovery) -> String {
    let confirmed: Vec<_> = d.slices.iter().filter(|s| s.confirmed).collect();
    let mut html = format!(
        "<section id=\"discovered-slices\" class=\"discovery\"><h2>Discovered slices</h2><p>Found by {} on {} of \
         the run's {} scored images and confirmed on the other {} (one-sided test of the slice's {} against the rest's, \
         Benjamini–Hochberg at FDR {}, seed {}). Each is a query: <code>slicetest slice create NAME \"QUERY\"</code> \
         makes it a slice test.</p>",
        match d.method.as_str() {
            "embeddings" => "an error-aware mixture of the image vectors",
            "tags+embeddings" => "SliceLine and an error-aware mixture of the image vectors",
            _ => "SliceLine",
        },
        d.halves[0],
        d.images,
        d.halves[1],
        if d.error == "loss" { "mean loss" } else { "error rate" },
        d.fdr,
        d.seed,
    );
    if confirmed.is_empty() {
        let why = if d.mean_error == 0.0 {
            "the run makes no errors".to_string()
        } else if d.tested == 0 {
            "no slice is worse than the rest by enough to score above 0".to_string()
        } else {
            format!("{}, none confirmed at FDR {}", d.tested_text(), d.fdr)
        };
        let _ = write!(html, "<p id=\"no-discovered-slices\">No slice found: {}.</p></section>", escape(&why));
        return html;
    }
    let rate = |x: f64| {
        if !x.is_finite() {
            "–".to_string()
        } else if d.error == "loss" {
            format!("{x:.3}")
        } else {
            format!("{:.1}%", 100.0 * x)
        }
    };
    html.push_str(
        "<table id=\"discovery-table\"><tr><th>#</th><th>slice</th><th>images (disc. / conf.)</th>\
         <th>error [95% CI], conf.</th><th>rest</th><th>lift</th><th>adj. p</th><th>query</th></tr>",
    );
    for (i, s) in confirmed.iter().enumerate() {
        let c = &s.confirmation;
        let predicates: Vec<String> = s.predicates.iter().map(|p| escape(p)).collect();
        let mut slice = predicates.join("<br>AND ");
        if let Some(e) = &s.explanation {
            if !e.phrases.is_empty() {
                let phrases: Vec<String> = e.phrases.iter().map(|(p, _)| format!("“{}”", escape(p))).collect();
                let _ = write!(slice, "<br><span class=\"explanation\">looks like {}</span>", phrases.join(", "));
            }
            if !e.tags.is_empty() {
                let tags: Vec<String> = e.tags.iter().map(|t| escape(t)).collect();
                let _ = write!(
                    slice,
                    "<br><span class=\"explanation\">in tags: {} (Jaccard {:.2})</span>",
                    tags.join(" AND "),
                    e.tags_jaccard
                );
            }
        }
        // An embedding slice's query carries its centroid: folded away.
        let query = if s.method == "embeddings" {
            format!("<details><summary>query</summary><code>{}</code></details>", escape(&s.query))
        } else {
            format!("<code>{}</code>", escape(&s.query))
        };
        let _ = write!(
            html,
            "<tr class=\"discovered\"><td>{}</td><td class=\"slice\">{}</td><td>{} / {}</td><td>{} [{}, {}]</td><td>{}</td>\
             <td>{}</td><td>{:.1e}</td><td class=\"query\">{}</td></tr>",
            i + 1,
            slice,
            s.discovery.size,
            c.size,
            rate(c.error_rate),
            rate(c.interval[0]),
            rate(c.interval[1]),
            rate(c.rest_rate),
            if c.lift.is_finite() { format!("{:.1}x", c.lift) } else { "∞".into() },
            s.adjusted_p,
            query,
        );
    }
    html.push_str("</table></section>");
    html
}

/// Precision-recall curves at IoU 0.5 (all images) of the categories with the most
/// ground truth, at most eight, as one inline SVG chart.
fn pr_chart(curves: &[crate::detection::PrCurve]) -> String {
    if curves.is_empty() {
        return String::new();
    }
    const PALETTE: [&str; 8] = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#d97706", "#0598bc", "#bf3989", "#57606a"];
    let (left, top, size) = (40.0, 10.0, 260.0);
    let mut svg = format!(
        "<h2>Precision-recall at IoU 0.5 (all images)</h2><svg id=\"pr-chart\" xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"precision-recall curves\">\
         <rect x=\"{left}\" y=\"{top}\" width=\"{size}\" height=\"{size}\" fill=\"none\" stroke=\"#ccc\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">recall</text>\
         <text x=\"10\" y=\"{}\" font-size=\"11\" transform=\"rotate(-90 10 {})\" text-anchor=\"middle\">precision</text>",
        left + size + 200.0,
        top + size + 30.0,
        left + size / 2.0,
        top + size + 25.0,
        top + size / 2.0,
        top + size / 2.0
    );
    for (n, curve) in curves.iter().take(PALETTE.len()).enumerate() {
        let last = curve.precision.len().saturating_sub(1).max(1) as f64;
        let points: Vec<String> = curve
            .precision
            .iter()
            .enumerate()
            .map(|(r, p)| format!("{:.1},{:.1}", left + size * r as f64 / last, top + size * (1.0 - p.max(0.0))))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{c}\">{}</text>",
            points.join(" "),
            left + size + 10.0,
            top + 14.0 * (n as f64 + 1.0),
            escape(&curve.category),
            c = PALETTE[n]
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Colours of the boxes in failure galleries: found, false, missed, in a crowd.
const BOX_COLOURS: [(&str, &str); 4] = [("tp", "#1a7f37"), ("fp", "#d97706"), ("fn", "#cf222e"), ("ignored", "#888")];

/// A detection slice: its confusion matrix, then its worst images with every box drawn
/// over the picture: found objects green, false detections orange (dashed), missed
/// objects red.
fn detection_section(s: &SliceScore, thumbnails: &HashMap<String, String>) -> String {
    let Some(d) = &s.detection else { return String::new() };
    let mut html = format!(
        "<section class=\"slice {class}\" id=\"slice-{name}\" data-slice=\"{name}\"><h2>{name}</h2><p>{images} images, \
         {objects} objects (frozen version {version}); {verdict}.</p>{confusion}",
        class = verdict_class(s),
        name = escape(&s.slice),
        images = d.images,
        objects = d.objects,
        version = s.version.map_or("–".into(), |v| v.to_string()),
        verdict = verdict_label(s),
        confusion = detection_confusion(&d.confusion),
    );
    if d.worst_images.is_empty() {
        html.push_str("</section>");
        return html;
    }
    let _ = write!(
        html,
        "<h3>{}: worst images</h3><p>Boxes at IoU {} and score ≥ {:.3}: \
         <span style=\"color:#1a7f37\">found</span>, <span style=\"color:#d97706\">false detection</span>, \
         <span style=\"color:#cf222e\">missed</span>.</p><div class=\"gallery\">",
        escape(&s.slice),
        d.iou,
        d.score_threshold
    );
    for image in &d.worst_images {
        let [w, h] = image.size;
        let _ = write!(
            html,
            "<figure class=\"detections\"><svg viewBox=\"0 0 {w} {h}\" width=\"220\" role=\"img\" \
             aria-label=\"{id}: {fn_} missed, {fp} false\">",
            id = escape(&image.image_id),
            fn_ = image.counts.fn_,
            fp = image.counts.fp
        );
        match thumbnails.get(&image.image_id) {
            Some(uri) => {
                let _ = write!(html, "<image href=\"{uri}\" width=\"{w}\" height=\"{h}\"/>");
            }
            None => {
                let _ = write!(html, "<rect width=\"{w}\" height=\"{h}\" fill=\"#eee\"/>");
            }
        }
        for b in &image.boxes {
            let colour = BOX_COLOURS.iter().find(|(o, _)| *o == b.outcome).map_or("#888", |(_, c)| c);
            let dash = if b.outcome == "fp" { " stroke-dasharray=\"4 3\"" } else { "" };
            let label = match b.score {
                Some(score) => format!("{} {} {score:.2}", b.outcome, b.category),
                None => format!("{} {}", b.outcome, b.category),
            };
            let [x, y, bw, bh] = b.bbox;
            let _ = write!(
                html,
                "<rect class=\"box {}\" x=\"{x}\" y=\"{y}\" width=\"{bw}\" height=\"{bh}\" fill=\"none\" \
                 stroke=\"{colour}\" stroke-width=\"2\" vector-effect=\"non-scaling-stroke\"{dash}><title>{}</title></rect>",
                b.outcome,
                escape(&label)
            );
        }
        let _ = write!(
            html,
            "</svg><figcaption>{} · {} missed · {} false</figcaption></figure>",
            escape(&image.image_id),
            image.counts.fn_,
            image.counts.fp
        );
    }
    html.push_str("</div></section>");
    html
}

/// A detection run: COCO numbers and the operating point per slice (failed checks named),
/// then every category on all images.
fn detection_tables(report: &RunReport) -> String {
    // A run with masks gets mask AP columns beside the boxes' (see `detection::masks`).
    // And a run with poses keypoint AP columns (see `detection::keypoints`).
    let masks = report.overall.detection.as_ref().is_some_and(|d| d.mask.is_some());
    let poses = report.overall.detection.as_ref().is_some_and(|d| d.keypoints.is_some());
    let mask_headers = format!(
        "{}{}",
        if masks { "<th>mask mAP</th><th>mask AP50</th>" } else { "" },
        if poses { "<th>keypoint AP</th><th>keypoint AP50</th>" } else { "" }
    );
    let mut html = format!(
        "<h2>Slices</h2><table id=\"detection-table\"><tr><th>slice</th><th>images</th><th>objects</th><th>mAP</th>\
         <th>95% CI</th><th>AP50</th><th>AP75</th><th>APs</th><th>AR100</th>{mask_headers}<th>recall</th>\
         <th>precision</th><th>vs baseline</th><th>test</th></tr>",
    );
    for s in report.slices.iter().chain(std::iter::once(&report.overall)) {
        let Some(d) = &s.detection else { continue };
        let mut cells = vec![
            d.images.to_string(),
            d.objects.to_string(),
            rate(d.coco.ap),
            d.ap_interval.map_or("–".into(), |[low, high]| format!("{low:.3}–{high:.3}")),
            rate(d.coco.ap50),
            rate(d.coco.ap75),
            rate(d.coco.ap_small),
            rate(d.coco.ar100),
        ];
        if masks {
            cells.extend([d.mask.and_then(|m| m.ap), d.mask.and_then(|m| m.ap50)].map(rate));
        }
        if poses {
            cells.extend([d.keypoints.and_then(|k| k.ap), d.keypoints.and_then(|k| k.ap50)].map(rate));
        }
        cells.extend([
            rate(d.counts.recall),
            rate(d.counts.precision),
            match s.baseline_changes().as_slice() {
                [] => "–".into(),
                changes => changes
                    .iter()
                    .map(|c| match c.delta {
                        Some(delta) => format!(
                            "{delta:+.3} {} (p={:.3}){}",
                            c.metric,
                            c.p_value,
                            if c.significant { " ▼" } else { "" }
                        ),
                        None => "–".into(),
                    })
                    .collect::<Vec<_>>()
                    .join("<br>"),
            },
            checks_label(s),
        ]);
        let _ = write!(
            html,
            "<tr class=\"{}\" data-slice=\"{}\"><td><a href=\"#slice-{1}\">{1}</a></td>{}</tr>",
            if s.slice == "(all)" { "info" } else { verdict_class(s) },
            escape(&s.slice),
            cells.iter().map(|c| format!("<td>{c}</td>")).collect::<String>()
        );
    }
    html.push_str("</table>");
    if masks || poses {
        let mut others = Vec::new();
        if masks {
            others.push("mask mAP and mask AP50 the instance masks' (COCO's <code>segm</code>)");
        }
        if poses {
            others.push("keypoint AP and keypoint AP50 the poses', by OKS (COCO's <code>keypoints</code>)");
        }
        let _ = write!(
            html,
            "<p>mAP, AP50, AP75, APs, AR100 and the operating point are the boxes'; {}.</p>",
            others.join("; ")
        );
    }
    if let Some(d) = &report.overall.detection {
        for note in [&d.mask_note, &d.keypoint_note].into_iter().flatten() {
            let _ = write!(html, "<p>{}</p>", escape(note));
        }
    }
    if let Some(d) = &report.overall.detection {
        html.push_str(&pr_chart(&d.pr_curves));
        let extra_headers = format!(
            "{}{}",
            if masks { "<th>mask AP</th>" } else { "" },
            if poses { "<th>keypoint AP</th>" } else { "" }
        );
        let _ = write!(
            html,
            "<p>Operating point: IoU {} and score ≥ {:.3} ({}).</p>\
             <h2>Categories (all images)</h2><table id=\"category-table\"><tr><th>category</th><th>objects</th>\
             <th>AP</th><th>AP50</th><th>AP75</th>{}<th>TP</th><th>FP</th><th>FN</th><th>recall</th><th>precision</th></tr>",
            d.iou,
            d.score_threshold,
            if report.run.score_threshold.is_some() { "given at upload" } else { "the best F1 on the whole run" },
            extra_headers
        );
        for c in &d.classes {
            let mut extra_cells = String::new();
            for (shown, ap) in [(masks, c.mask_ap), (poses, c.keypoint_ap)] {
                if shown {
                    let _ = write!(extra_cells, "<td>{}</td>", rate(ap));
                }
            }
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&c.category),
                c.objects,
                rate(c.ap),
                rate(c.ap50),
                rate(c.ap75),
                extra_cells,
                c.counts.tp,
                c.counts.fp,
                c.counts.fn_,
                rate(c.counts.recall),
                rate(c.counts.precision)
            );
        }
        html.push_str("</table><h2>Confusions (all images)</h2>");
        html.push_str(&detection_confusion(&d.confusion));
    }
    html
}

fn rate(v: Option<f64>) -> String {
    v.map_or("–".to_string(), |v| format!("{v:.3}"))
}

/// A slice test's verdict with the checks it failed.
fn checks_label(s: &SliceScore) -> String {
    let failed: Vec<String> = s
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| {
            // A check that cannot hold (a threshold on a class the dataset does not have)
            // says why.
            let problem = c.problem.as_ref().map_or(String::new(), |p| format!(" ({})", escape(p)));
            format!("{} {} &lt; {:.3}{problem}", escape(&c.metric), rate(c.value), c.threshold)
        })
        .collect();
    if failed.is_empty() { verdict_label(s) } else { format!("{}: {}", verdict_label(s), failed.join(", ")) }
}

/// A segmentation run: mIoU, accuracies and the worst classes per slice, then every class
/// and the pixel confusions on all images.
fn segmentation_tables(report: &RunReport) -> String {
    let mut html = String::from(
        "<h2>Slices</h2><p>IoU per class is Σ true positives / Σ (true positives + false positives + false \
         negatives) over the slice's pixels (Hugging Face evaluate's <code>mean_iou</code>); mIoU averages it \
         over the classes present in the slice's truth or predictions; intervals resample images.</p>\
         <table id=\"segmentation-table\"><tr><th>slice</th><th>images</th><th>mIoU</th><th>95% CI</th>\
         <th>pixel accuracy</th><th>mean accuracy</th><th>worst classes (IoU)</th><th>vs baseline</th><th>test</th></tr>",
    );
    for s in report.slices.iter().chain(std::iter::once(&report.overall)) {
        let Some(m) = &s.segmentation else { continue };
        let mut worst: Vec<(f64, &str)> = m.classes.iter().filter_map(|c| Some((c.iou?, c.class.as_str()))).collect();
        worst.sort_by(|a, b| a.0.total_cmp(&b.0));
        let worst: Vec<String> = worst.iter().take(3).map(|(iou, c)| format!("{} {iou:.3}", escape(c))).collect();
        let _ = write!(
            html,
            "<tr class=\"{}\" data-slice=\"{}\"><td><a href=\"#slice-{1}\">{1}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if s.slice == "(all)" { "info" } else { verdict_class(s) },
            escape(&s.slice),
            m.images,
            rate(m.scores.mean_iou),
            m.mean_iou_ci.map_or("–".into(), |[low, high]| format!("{low:.3}–{high:.3}")),
            rate(m.scores.pixel_accuracy),
            rate(m.scores.mean_accuracy),
            worst.join(", "),
            s.segmentation_regression.as_ref().map_or("–".into(), |r| format!(
                "{:+.3} mIoU (p={:.3}){}",
                r.delta,
                r.p_value,
                if r.significant { " ▼" } else { "" }
            )),
            checks_label(s)
        );
    }
    html.push_str("</table>");
    if let Some(m) = &report.overall.segmentation {
        html.push_str("<h2>Classes (all images)</h2>");
        html.push_str(&class_table(m));
        html.push_str("<h2>Pixel confusions (all images)</h2>");
        html.push_str(&pixel_confusion(m));
    }
    html
}

/// Per class: labelled pixels, tp, fp, fn, IoU and accuracy.
fn class_table(m: &crate::segmentation::SegmentationMetrics) -> String {
    let mut html = String::from(
        "<table class=\"classes\"><tr><th>class</th><th>pixels</th><th>TP</th><th>FP</th><th>FN</th><th>IoU</th>\
         <th>accuracy</th></tr>",
    );
    for c in &m.classes {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.class),
            c.pixels,
            c.tp,
            c.fp,
            c.fn_,
            rate(c.iou),
            rate(c.accuracy)
        );
    }
    html.push_str("</table>");
    html
}

/// The pixel confusion matrix over the classes that occur in it (truth or prediction).
fn pixel_confusion(m: &crate::segmentation::SegmentationMetrics) -> String {
    let labels: Vec<String> = m.classes.iter().map(|c| c.class.clone()).collect();
    let shown: Vec<usize> = (0..labels.len())
        .filter(|&k| m.confusion[k].iter().any(|&v| v > 0) || m.confusion.iter().any(|r| r[k] > 0))
        .collect();
    if shown.is_empty() {
        return "<p>No labelled pixels.</p>".into();
    }
    confusion_table(&labels, &m.confusion, Some(&shown))
}

/// A segmentation slice: its verdict, classes and pixel confusions, then its worst images:
/// the picture, the ground truth and the prediction in class colours, and where they
/// disagree (red wrong, green right, black ignored).
fn segmentation_section(
    s: &SliceScore,
    thumbnails: &HashMap<String, String>,
    overlays: &HashMap<String, MaskOverlay>,
) -> String {
    let Some(m) = &s.segmentation else { return String::new() };
    let mut gallery = String::new();
    for w in &m.worst_images {
        let Some(o) = overlays.get(&w.image_id) else { continue };
        let picture = thumbnails
            .get(&w.image_id)
            .map_or(String::new(), |uri| format!("<img src=\"{uri}\" alt=\"image\" title=\"image\">"));
        let _ = write!(
            gallery,
            "<figure class=\"masks\" data-image=\"{id}\">{picture}<img src=\"{}\" alt=\"ground truth\" title=\"ground truth\">\
             <img src=\"{}\" alt=\"prediction\" title=\"prediction\"><img src=\"{}\" alt=\"disagreement\" \
             title=\"disagreement\"><figcaption>{id}: {:.1}% of {} pixels wrong</figcaption></figure>",
            o.truth,
            o.predicted,
            o.disagreement,
            100.0 * w.wrong as f64 / w.pixels as f64,
            w.pixels,
            id = escape(&w.image_id),
        );
    }
    if !gallery.is_empty() {
        gallery = format!(
            "<h3>Worst images</h3><p>Picture, ground truth, prediction (class colours), and where they disagree \
             (<span style=\"color:#dc2626\">wrong</span>, <span style=\"color:#2ea043\">right</span>, black: \
             ignored).</p><div class=\"gallery\">{gallery}</div>"
        );
    }
    format!(
        "<section class=\"slice\" id=\"slice-{name}\"><h2>{name}</h2><p>{images} images, mIoU {miou}, pixel accuracy \
         {acc}: <strong>{verdict}</strong></p>{classes}{confusion}{gallery}</section>",
        name = escape(&s.slice),
        images = m.images,
        miou = rate(m.scores.mean_iou),
        acc = rate(m.scores.pixel_accuracy),
        verdict = checks_label(s),
        classes = class_table(m),
        confusion = pixel_confusion(m),
    )
}

#[cfg(test)]
mod tests {
    use super::{base64, chart_label, discovery_section};
    use crate::discovery::{DiscoveredSlice, Discovery, HalfStats};

    fn half(size: u64, error_rate: f64, rest_rate: f64) -> HalfStats {
        HalfStats {
            size,
            errors: error_rate * size as f64,
            error_rate,
            interval: [error_rate - 0.1, error_rate + 0.1],
            rest_rate,
            lift: error_rate / rest_rate,
        }
    }

    fn discovery(slices: Vec<DiscoveredSlice>) -> Discovery {
        Discovery {
            run: "r".into(),
            dataset: "d".into(),
            error: "misclassification".into(),
            baseline: None,
            images: 1000,
            halves: [500, 500],
            mean_error: 0.1,
            columns: vec!["label".into()],
            skipped: vec![],
            tested: slices.len(),
            slices,
            k: 10,
            max_level: 3,
            min_support: 30,
            alpha: 0.95,
            fdr: 0.05,
            seed: 7,
            method: "tags".into(),
            rank: Default::default(),
            embeddings: None,
            notes: vec![],
            group: None,
        }
    }

    #[test]
    fn the_discovery_section_lists_confirmed_slices_escaped() {
        let slice = |predicates: &[&str], confirmed: bool, rest: f64| DiscoveredSlice {
            method: "tags".into(),
            excess_errors: 10.0,
            explanation: None,
            failures: vec![],
            predicates: predicates.iter().map(|p| p.to_string()).collect(),
            query: format!("SELECT image_id FROM images WHERE {}", predicates.join(" AND ")),
            score: 1.0,
            discovery: half(60, 0.5, 0.1),
            confirmation: half(55, 0.4, rest),
            p_value: 1e-6,
            adjusted_p: if confirmed { 2e-6 } else { 0.3 },
            confirmed,
        };
        let html = discovery_section(&discovery(vec![
            slice(&["label = 'Shirt'", "caption = '<b>'"], true, 0.1),
            slice(&["weather = 'fog'"], false, 0.1),
            slice(&["label = 'Coat'"], true, 0.0),
        ]));
        assert_eq!(html.matches("<tr class=\"discovered\">").count(), 2, "confirmed only: {html}");
        assert!(html.contains("label = 'Shirt'<br>AND caption = '&lt;b&gt;'"), "{html}");
        assert!(!html.contains("<b>") && !html.contains("fog"), "{html}");
        assert!(html.contains("40.0% [30.0%, 50.0%]") && html.contains("4.0x") && html.contains("2.0e-6"), "{html}");
        assert!(html.contains("<td>∞</td>"), "no error in the rest: infinite lift: {html}");
        assert!(html.contains("<code>SELECT image_id FROM images WHERE label = 'Coat'</code>"), "{html}");

        let none = discovery_section(&discovery(vec![slice(&["weather = 'fog'"], false, 0.1)]));
        assert!(none.contains("1 candidate tested, none confirmed at FDR 0.05") && !none.contains("<table"), "{none}");
    }

    #[test]
    fn long_slice_names_are_cut_to_the_charts_margin() {
        assert_eq!(chart_label("tops"), "tops");
        assert_eq!(chart_label(&"é".repeat(26)), "é".repeat(26));
        let cut = chart_label(&"é".repeat(64));
        assert_eq!(cut.chars().count(), 26);
        assert!(cut.ends_with("é…"), "{cut}");
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
    }
}
