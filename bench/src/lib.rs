//! Shared pieces of the benchmark binaries: synthetic data, timing helpers, and the
//! DuckDB peer (run through Python on the same files in the same run).

pub mod delayed_store;
pub mod planted;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, bail};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;

/// The `--flag value` pairs of the command line, in order; a flag without a value is an
/// error naming it. Each bench matches the flags it knows and refuses the others.
pub fn flag_values() -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        pairs.push((flag, value));
    }
    Ok(pairs)
}

/// The build profile this bench was compiled in, as every bench prints it first: numbers
/// from the two profiles are not comparable. The dev profile builds dependencies and the
/// hot crates (datasets, engine, embed, sql, eval) at opt-level 3 (Cargo.toml), so it is
/// close to release for most of the work, but not for the CLI binary, the API and the
/// bench harness itself, which keep opt-level 0 and debug assertions.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "dev (dependencies and datasets/engine/embed/sql/eval at opt-level 3)"
    } else {
        "release"
    }
}

/// CPU seconds of this process so far (user + system, all threads), from /proc: what a
/// bench compares with a peer process's `time.process_time()`.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Whether a peer's 12 COCO statistics (a JSON list) equal ours to 1e-12: `equal`, or
/// which ones differ.
pub fn stats_agreement(ours: &[f64], theirs: &serde_json::Value) -> String {
    let differs: Vec<usize> =
        (0..ours.len()).filter(|&i| theirs[i].as_f64().is_none_or(|v| (v - ours[i]).abs() > 1e-12)).collect();
    if differs.is_empty() { "equal".to_string() } else { format!("differ at {differs:?}") }
}

/// "PASS" or "MISS" for a target.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// The median of `v` (sorted in place).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Runs `bench/scripts/<script>` with `args` and parses the one JSON object it prints;
/// `packages` names what to pip-install when Python fails. The interpreter is
/// `$SLICETEST_BENCH_PYTHON` (a virtualenv with torch, say), else `python3`.
pub fn python_json<I, S>(script: &str, args: I, packages: &str) -> anyhow::Result<serde_json::Value>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(script);
    let python = std::env::var("SLICETEST_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(path)
        .args(args)
        .output()
        .with_context(|| format!("running {python} (pip install {packages})"))?;
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// A COCO evaluation of ours timed against the Python peers on the same files, in the
/// same run, interleaved: `ours` (returning its summary statistics) and faster-coco-eval
/// every rep, pycocotools once (it is slow); `mode` is `coco_eval_peer.py`'s flag
/// (`--segm`, `--keypoints`). Prints the statistics' agreement with both (headline `ap`
/// named `ap_name`) and a CPU / wall table headed `what`, medians over the reps.
pub fn compare_with_coco_peers(
    (gt_path, dt_path): (&Path, &Path),
    mode: &str,
    reps: usize,
    (what, ap_name): (&str, &str),
    mut ours: impl FnMut() -> Vec<f64>,
) -> anyhow::Result<()> {
    let (mut ours_cpu, mut ours_wall, mut faster, mut faster_wall) = (vec![], vec![], vec![], vec![]);
    let (mut pyco, mut stats, mut peer_stats) = (None, Vec::new(), Vec::new());
    let peer = |name: &str, packages: &str| {
        python_json("coco_eval_peer.py", [name, gt_path.to_str().unwrap(), dt_path.to_str().unwrap(), mode], packages)
    };
    for rep in 0..reps {
        let (cpu, wall) = (cpu_seconds(), std::time::Instant::now());
        stats = ours();
        ours_wall.push(wall.elapsed().as_secs_f64());
        ours_cpu.push(cpu_seconds() - cpu);
        let f = peer("faster", "faster-coco-eval")?;
        faster.push(f["cpu_s"].as_f64().context("cpu_s")?);
        faster_wall.push(f["wall_s"].as_f64().context("wall_s")?);
        if rep == 0 {
            let p = peer("pycocotools", "pycocotools")?;
            pyco = Some((p["cpu_s"].as_f64().context("cpu_s")?, p["wall_s"].as_f64().context("wall_s")?));
            peer_stats.push(("pycocotools", p["stats"].clone()));
            peer_stats.push(("faster-coco-eval", f["stats"].clone()));
        }
    }
    for (peer, theirs) in &peer_stats {
        let agreement = stats_agreement(&stats, theirs);
        println!("  {} stats vs {peer}: {agreement} ({ap_name} {:.4})", stats.len(), stats[0]);
    }
    let (oc, ow) = (median(&mut ours_cpu), median(&mut ours_wall));
    let (fc, fw) = (median(&mut faster), median(&mut faster_wall));
    let (pc, pw) = pyco.context("pycocotools ran")?;
    println!("  {what:<20} {:>9} {:>9}", "CPU s", "wall s");
    println!("  {:<20} {oc:>9.3} {ow:>9.3}", "slicetest");
    println!("  {:<20} {fc:>9.3} {fw:>9.3}", "faster-coco-eval");
    println!("  {:<20} {pc:>9.3} {pw:>9.3}", "pycocotools");
    println!("  CPU ratio slicetest / faster-coco-eval = {:.3}; / pycocotools = {:.3}", oc / fc, oc / pc);
    Ok(())
}

/// DuckDB in a long-running Python process, so its runs can alternate with slicetest's.
pub struct DuckDbPeer {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl DuckDbPeer {
    /// Starts the peer (`scripts/duckdb_peer.py`).
    pub fn start() -> anyhow::Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/duckdb_peer.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("running python3 (pip install duckdb)")?;
        let input = child.stdin.take().context("peer stdin")?;
        let output = std::io::BufReader::new(child.stdout.take().context("peer stdout")?);
        Ok(Self { child, input, output })
    }

    /// Runs `sql`; returns (milliseconds, result rows).
    pub fn run(&mut self, sql: &str) -> anyhow::Result<(f64, usize)> {
        self.request(serde_json::json!({ "sql": sql }))
    }

    /// Runs `sql` and materialises its result as Arrow (a pyarrow Table), as slicetest's
    /// side collects record batches; returns (milliseconds, result rows).
    pub fn run_arrow(&mut self, sql: &str) -> anyhow::Result<(f64, usize)> {
        self.request(serde_json::json!({ "sql": sql, "fetch": "arrow" }))
    }

    fn request(&mut self, request: serde_json::Value) -> anyhow::Result<(f64, usize)> {
        use std::io::{BufRead, Write};
        writeln!(self.input, "{request}")?;
        let mut line = String::new();
        if self.output.read_line(&mut line)? == 0 {
            bail!("the DuckDB peer exited (is duckdb installed?)");
        }
        let v: serde_json::Value = serde_json::from_str(&line)?;
        if let Some(error) = v["error"].as_str() {
            bail!("DuckDB: {error}");
        }
        Ok((v["ms"].as_f64().context("ms")?, v["rows"].as_u64().context("rows")? as usize))
    }
}

impl Drop for DuckDbPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory for one bench run.
pub fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("slicetest-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Marsaglia's xorshift64 from `seed` (not 0): the benches' fixed-seed data generator.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// `rows` synthetic image rows with tag-like columns, from a fixed-seed generator.
pub fn synthetic_images(rows: usize) -> RecordBatch {
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    const LABELS: [&str; 10] = ["cat", "dog", "car", "person", "bike", "bus", "tree", "sign", "bird", "boat"];
    const SPLITS: [&str; 4] = ["train", "train", "val", "test"];
    const FORMATS: [&str; 2] = ["jpeg", "png"];
    let (mut ids, mut uris, mut hashes) =
        (Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows));
    let (mut width, mut height) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
    let (mut fmt, mut bytes, mut split, mut label, mut bright, mut people) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..rows {
        let r = next();
        ids.push(format!("img_{i:08}"));
        uris.push(format!("/data/images/img_{i:08}.jpg"));
        hashes.push(format!("{:016x}{:016x}{:016x}{:016x}", r, next(), next(), next()));
        width.push(64 + (r % 1920) as i32);
        height.push(64 + ((r >> 16) % 1080) as i32);
        fmt.push(FORMATS[((r >> 32) % 2) as usize]);
        bytes.push(10_000 + ((r >> 8) % 2_000_000) as i64);
        split.push(SPLITS[((r >> 40) % 4) as usize]);
        label.push(LABELS[((r >> 44) % 10) as usize]);
        bright.push(((r >> 11) % 10_000) as f64 / 10_000.0);
        people.push(if (r >> 50).is_multiple_of(10) { None } else { Some(((r >> 52) % 12) as i64) });
    }
    // The core `images` columns, then two tag-like ones.
    let mut fields = slicetest_datasets::record::core_fields();
    fields.push(Field::new("brightness", DataType::Float64, true));
    fields.push(Field::new("num_people", DataType::Int64, true));
    let schema = Schema::new(fields);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids)),
        Arc::new(StringArray::from(uris)),
        Arc::new(StringArray::from(hashes)),
        Arc::new(Int32Array::from(width)),
        Arc::new(Int32Array::from(height)),
        Arc::new(StringArray::from(fmt)),
        Arc::new(Int64Array::from(bytes)),
        Arc::new(StringArray::from(split)),
        Arc::new(StringArray::from(label)),
        Arc::new(Float64Array::from(bright)),
        Arc::new(Int64Array::from(people)),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("consistent synthetic table")
}

/// Tag imports for [`synthetic_images`]' ids (`img_{i:08}`): three per-image tables
/// (`quality`: blur, noise; `scene`: weather, time_of_day; `people`: crowd, faces) and one of
/// boxes, from a fixed-seed generator.
pub fn synthetic_tag_tables(ids: &[String]) -> anyhow::Result<Vec<(&'static str, RecordBatch)>> {
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let n = ids.len();
    let id_array = || Arc::new(StringArray::from_iter_values(ids.iter())) as ArrayRef;
    let unit = |r: u64| (r % 1_000_000) as f64 / 1_000_000.0;
    let (mut blur, mut noise) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut weather, mut time_of_day) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut crowd, mut faces) = (Vec::with_capacity(n), Vec::with_capacity(n));
    const WEATHER: [&str; 4] = ["sunny", "rain", "fog", "snow"];
    const TIMES: [&str; 3] = ["day", "dusk", "night"];
    const OBJECTS: [&str; 5] = ["person", "car", "bike", "dog", "sign"];
    let (mut box_ids, mut box_labels, mut scores) = (Vec::new(), Vec::new(), Vec::new());
    let (mut x0, mut y0, mut x1, mut y1) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for id in ids {
        let r = next();
        blur.push(unit(r));
        noise.push(unit(r >> 20));
        weather.push(if (r >> 40).is_multiple_of(8) { None } else { Some(WEATHER[((r >> 43) % 4) as usize]) });
        time_of_day.push(TIMES[((r >> 46) % 3) as usize]);
        crowd.push((r >> 49).is_multiple_of(5));
        faces.push(if (r >> 52).is_multiple_of(10) { None } else { Some(((r >> 55) % 8) as i64) });
        // A box on every fourth image, up to three.
        if (r >> 58).is_multiple_of(4) {
            for _ in 0..1 + (r >> 60) % 3 {
                let b = next();
                let (x, y) = ((b % 500) as f64, ((b >> 10) % 500) as f64);
                box_ids.push(id.as_str());
                box_labels.push(OBJECTS[((b >> 20) % 5) as usize]);
                scores.push(unit(b >> 24));
                x0.push(x);
                y0.push(y);
                x1.push(x + 20.0 + (b >> 34) as f64 % 200.0);
                y1.push(y + 20.0 + (b >> 44) as f64 % 200.0);
            }
        }
    }
    let table = |fields: Vec<Field>, columns: Vec<ArrayRef>| -> anyhow::Result<RecordBatch> {
        let mut all = vec![Field::new("image_id", DataType::Utf8, false)];
        all.extend(fields);
        let mut arrays = vec![id_array()];
        arrays.extend(columns);
        Ok(RecordBatch::try_new(Arc::new(Schema::new(all)), arrays)?)
    };
    let quality = table(
        vec![Field::new("blur", DataType::Float64, false), Field::new("noise", DataType::Float64, false)],
        vec![Arc::new(Float64Array::from(blur)), Arc::new(Float64Array::from(noise))],
    )?;
    let scene = table(
        vec![Field::new("weather", DataType::Utf8, true), Field::new("time_of_day", DataType::Utf8, false)],
        vec![Arc::new(StringArray::from(weather)), Arc::new(StringArray::from(time_of_day))],
    )?;
    let people = table(
        vec![Field::new("crowd", DataType::Boolean, false), Field::new("faces", DataType::Int64, true)],
        vec![Arc::new(BooleanArray::from(crowd)), Arc::new(Int64Array::from(faces))],
    )?;
    let boxes = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("image_id", DataType::Utf8, false),
            Field::new("label", DataType::Utf8, false),
            Field::new("score", DataType::Float64, false),
            Field::new("x0", DataType::Float64, false),
            Field::new("y0", DataType::Float64, false),
            Field::new("x1", DataType::Float64, false),
            Field::new("y1", DataType::Float64, false),
        ])),
        vec![
            Arc::new(StringArray::from(box_ids)),
            Arc::new(StringArray::from(box_labels)),
            Arc::new(Float64Array::from(scores)),
            Arc::new(Float64Array::from(x0)),
            Arc::new(Float64Array::from(y0)),
            Arc::new(Float64Array::from(x1)),
            Arc::new(Float64Array::from(y1)),
        ],
    )?;
    Ok(vec![("quality", quality), ("scene", scene), ("people", people), ("boxes", boxes)])
}

/// Writes `batch` to a Parquet file at `path`.
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> anyhow::Result<()> {
    let mut writer = ArrowWriter::try_new(std::fs::File::create(path)?, batch.schema(), None)?;
    writer.write(batch)?;
    writer.close()?;
    Ok(())
}
