//! SQL on a real cluster: `slicetest scheduler` and two `slicetest executor` processes on
//! loopback ports (port 0), queried by `slicetest sql --cluster` and `slicetest serve
//! --cluster` over a tagged workspace. The same queries answer the same rows as in one
//! process; a GROUP BY runs in more than one stage with tasks on both executors; a lost
//! executor or scheduler is a clear error, never a hang; the read-only rules hold.
//! (Every sqllogictest file also runs on an in-process cluster: sql/tests/slt.rs.)
#![cfg(feature = "ballista")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, setup};

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `slicetest ARGS` and returns it with the first stdout line that starts with
/// `prefix` (the line telling where it listens).
fn start(args: &[&str], prefix: &str) -> (Running, String) {
    start_logging(args, prefix, None)
}

/// [`start`], its log (at info level) written to `log` when given.
fn start_logging(args: &[&str], prefix: &str, log: Option<&Path>) -> (Running, String) {
    let (level, stderr) = match log {
        Some(path) => ("info", Stdio::from(std::fs::File::create(path).expect("a log file"))),
        None => ("warn", Stdio::null()),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_slicetest"))
        .args(args)
        .env("SLICETEST_LOG", level)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("slicetest starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = loop {
        let line = lines.next().expect("a line before exiting").expect("utf-8");
        if line.starts_with(prefix) {
            break line;
        }
    };
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Running(child), line)
}

struct Cluster {
    url: String,
    scheduler: Option<Running>,
    executors: Vec<Running>,
    work_dirs: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

/// A scheduler and `n` executors, each executor with 2 task slots and its own work dir;
/// the scheduler logs to `scheduler.log` in [`Cluster::dir`].
fn cluster(n: usize) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let (scheduler, line) = start_logging(
        &["scheduler", "--bind", "127.0.0.1:0"],
        "slicetest scheduler listening on ",
        Some(&dir.path().join("scheduler.log")),
    );
    let url = line.rsplit(' ').next().unwrap().to_string();
    let address = url.strip_prefix("df://").unwrap().to_string();
    let mut executors = Vec::new();
    let mut work_dirs = Vec::new();
    for i in 0..n {
        let work = dir.path().join(format!("executor-{i}"));
        std::fs::create_dir_all(&work).unwrap();
        let args = ["executor", "--scheduler", &address, "--vcores", "2", "--work-dir", work.to_str().unwrap()];
        executors.push(start(&args, "slicetest executor at ").0);
        work_dirs.push(work);
    }
    // Executors register within a heartbeat of starting.
    std::thread::sleep(Duration::from_secs(2));
    Cluster { url, scheduler: Some(scheduler), executors, work_dirs, dir }
}

/// A workspace of 60 generated images in train/val/test folders of three classes, tagged
/// with pixel statistics (a tag join in every query that reads them).
fn workspace() -> common::Setup {
    let s = setup();
    for i in 0..60u8 {
        let split = ["train", "val", "test"][usize::from(i % 3)];
        let label = ["cat", "dog", "bird"][usize::from(i / 3 % 3)];
        let dir = s.src.join(split).join(label);
        std::fs::create_dir_all(&dir).unwrap();
        slicetest_test_support::write_image(
            &dir.join(format!("img-{i:02}.png")),
            8 + u32::from(i % 7),
            6 + u32::from(i % 5),
            i,
        );
    }
    ok(&s.ws, &["ingest", "--dataset", "pets", s.src.to_str().unwrap()]);
    ok(&s.ws, &["tag", "--tagger", "pixels", "--quiet"]);
    ok(&s.ws, &["sql", "CREATE SLICE wide AS SELECT image_id FROM images WHERE width > height + 3"]);
    ok(&s.ws, &["sql", "FREEZE SLICE wide"]);
    s
}

fn sql(ws: &Path, cluster: Option<&str>, query: &str) -> String {
    let mut args = vec!["sql", "--format", "csv", query];
    if let Some(url) = cluster {
        args.splice(0..0, ["--cluster", url]);
    }
    ok(ws, &args)
}

const QUERIES: [&str; 6] = [
    "SELECT split, label, count(*) AS n, sum(width) AS w FROM images GROUP BY split, label ORDER BY split, label",
    "SELECT label, round(avg(brightness), 6) AS b, max(sharpness) > 0 AS sharp FROM images GROUP BY label ORDER BY label",
    "SELECT i.split, count(*) AS n FROM slice('wide') s JOIN images i USING (image_id) GROUP BY i.split ORDER BY 1",
    "SELECT image_id, rank() OVER (PARTITION BY label ORDER BY width DESC, image_id) AS r FROM images ORDER BY image_id",
    "SELECT count(*) AS n FROM images a JOIN images b ON a.label = b.label AND a.image_id < b.image_id",
    "SELECT in_slice(image_id, 'wide') AS wide, count(*) AS n FROM images GROUP BY 1 ORDER BY 1",
];

#[test]
fn queries_on_the_cluster_answer_what_one_process_answers_in_stages_on_both_executors() {
    let s = workspace();
    let c = cluster(2);
    for query in QUERIES {
        let local = sql(&s.ws, None, query);
        assert!(local.lines().count() > 1, "{query}: {local}");
        assert_eq!(sql(&s.ws, Some(&c.url), query), local, "{query}");
    }
    // EXPLAIN ANALYZE on a cluster is the job's stages with their metrics.
    // Four shuffle partitions: more tasks than one executor's two slots.
    let out = Command::new(env!("CARGO_BIN_EXE_slicetest"))
        .args(["--workspace", s.ws.to_str().unwrap(), "--cluster", &c.url, "sql", "--format", "csv"])
        .arg(format!("EXPLAIN ANALYZE {}", QUERIES[0]))
        .env("DATAFUSION_EXECUTION_TARGET_PARTITIONS", "4")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let explain = String::from_utf8(out.stdout).unwrap();
    let stages = explain.matches("SuccessfulStage[stage_id=").count();
    assert!(stages >= 2, "a GROUP BY shuffles, so it runs in stages:\n{explain}");
    assert!(explain.contains("ShuffleWriterExec"), "{explain}");
    // Both executors ran tasks: each wrote shuffle files under its work dir.
    for dir in &c.work_dirs {
        let jobs = std::fs::read_dir(dir).unwrap().count();
        assert!(jobs > 0, "no task ran on the executor working in {}", dir.display());
    }
}

#[test]
fn a_lost_executor_is_retried_or_a_clear_error_and_a_lost_scheduler_one_error_naming_it() {
    let s = workspace();
    let mut c = cluster(2);
    // A query long enough to be running when one executor is killed (-9).
    let query = "SELECT a.label, count(*) AS n FROM images a, images b, images c \
                 WHERE a.width + b.height >= c.width GROUP BY a.label ORDER BY 1";
    let expected = sql(&s.ws, None, query);
    let child = Command::new(env!("CARGO_BIN_EXE_slicetest"))
        .args(["--workspace", s.ws.to_str().unwrap(), "--cluster", &c.url, "sql", "--format", "csv", query])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let victim = c.executors.remove(0);
    drop(victim); // SIGKILL
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(120), "the query hung after losing an executor");
    if out.status.success() {
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected, "retried on the other executor");
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "a clear error, not a crash: {stderr}");
    }
    // The remaining executor still answers.
    assert_eq!(sql(&s.ws, Some(&c.url), QUERIES[0]), sql(&s.ws, None, QUERIES[0]));

    // The scheduler gone: one error naming its address, at once.
    let address = c.url.strip_prefix("df://").unwrap().to_string();
    drop(c.scheduler.take());
    let started = Instant::now();
    let err = common::fails(&s.ws, &["--cluster", &c.url, "sql", "SELECT count(*) FROM images"]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(err.contains(&format!("cannot reach the slicetest scheduler at {address}")), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error")).count(), 1, "{err}");
    let bad = common::fails(&s.ws, &["--cluster", "http://nowhere", "sql", "SELECT 1"]);
    assert!(bad.contains("expected df://HOST:PORT"), "{bad}");
}

/// POSTs `sql` to the server's /sql and returns (status, body).
fn post_sql(url: &str, sql: &str) -> (u16, serde_json::Value) {
    let response = ureq::post(&format!("{url}/sql")).send_json(serde_json::json!({ "sql": sql }));
    let response = match response {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = response.status();
    (status, response.into_json().unwrap_or(serde_json::Value::Null))
}

#[test]
fn the_server_on_a_cluster_answers_queries_and_refuses_writes_as_in_one_process() {
    let s = workspace();
    let c = cluster(1);
    let ws = s.ws.to_str().unwrap();
    let (_server, line) =
        start(&["--workspace", ws, "--cluster", &c.url, "serve", "--port", "0"], "slicetest serving ");
    let url = line.rsplit(' ').next().unwrap().to_string();
    let (status, body) = post_sql(&url, "SELECT label, count(*) AS n FROM images GROUP BY label ORDER BY label");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_array().map(Vec::len), Some(3), "{body}");
    for probe in [
        "COPY (SELECT 1) TO '/tmp/slicetest-cluster-copy.csv'",
        "CREATE EXTERNAL TABLE p (x VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
        "DROP TABLE images",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let (status, body) = post_sql(&url, probe);
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("read_only")), "{probe}: {body}");
    }
    let (status, body) = post_sql(&url, "SELECT * FROM read_csv('/etc/passwd')");
    assert!(status == 400 || status == 403, "{status} {body}");
    assert!(!Path::new("/tmp/slicetest-cluster-copy.csv").exists());
}

#[test]
fn a_request_past_the_servers_time_limit_cancels_its_job_on_the_cluster() {
    let s = workspace();
    let c = cluster(1);
    let ws = s.ws.to_str().unwrap();
    let (_server, line) = start(
        &["--workspace", ws, "--cluster", &c.url, "serve", "--port", "0", "--query-timeout", "2"],
        "slicetest serving ",
    );
    let url = line.rsplit(' ').next().unwrap().to_string();
    // 60^5 rows: minutes of work for the executor's two task slots.
    let slow = "SELECT count(*) AS n FROM images a, images b, images c, images d, images e \
                WHERE a.width + b.width + c.width + d.width > e.height * 5";
    let started = Instant::now();
    let (status, body) = post_sql(&url, slow);
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("timeout")), "{body}");
    assert!(started.elapsed() < Duration::from_secs(20), "the request waited {:?}", started.elapsed());
    // The server cancelled the job: the scheduler says so, and the executor's slots are
    // free for the next query at once.
    let log = c.dir.path().join("scheduler.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("Received cancellation request for job") {
        assert!(
            Instant::now() < deadline,
            "no cancellation in the scheduler's log:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The scheduler has the cancellation; the executor aborts the job's tasks at their
    // next yield and then reports its slots free, which on a loaded machine can take
    // longer than the server's 2 s limit. So the next query may time out a few times;
    // were the job not cancelled, it would hold both slots for minutes.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    loop {
        let (status, body) = post_sql(&url, "SELECT label, count(*) AS n FROM images GROUP BY label ORDER BY label");
        if status == 200 {
            break;
        }
        assert_eq!((status, body["error"]["code"].as_str()), (503, Some("timeout")), "{body}");
        assert!(Instant::now() < deadline, "the executor's slots were still taken after {:?}", started.elapsed());
    }
}
