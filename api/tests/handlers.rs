//! Handler tests through `tower::ServiceExt::oneshot`: every endpoint on the fixture
//! workspace, the read-only guarantees, the limits, and the token.

mod common;

use axum::http::StatusCode;
use common::*;
use datafusion::arrow::array::{Array, AsArray};
use serde_json::{Value, json};
use slicetest_api::ServerConfig;

#[tokio::test]
async fn sql_answers_in_every_format() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let query = "SELECT image_id, label FROM images WHERE label = 'cat' ORDER BY image_id";

    let (status, headers, body) = send(&router, post_json("/sql", json!({"sql": query}))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json");
    let rows = json(&body);
    assert_eq!(rows.as_array().unwrap().len(), 3);
    assert_eq!(rows[0]["image_id"], "train/cat/c1.png");

    let request = axum::http::Request::post("/sql")
        .header("accept", "application/vnd.apache.arrow.stream")
        .body(axum::body::Body::from(query))
        .unwrap();
    let (status, headers, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/vnd.apache.arrow.stream");
    let batches = arrow_batches(&body);
    let ids: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let c =
                datafusion::arrow::compute::cast(b.column(0), &datafusion::arrow::datatypes::DataType::Utf8).unwrap();
            (0..c.len()).map(move |i| c.as_string::<i32>().value(i).to_string()).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(ids, ["train/cat/c1.png", "train/cat/c2.png", "val/cat/c3.png"]);

    let (_, headers, body) = send(&router, post("/sql?format=csv", "text/plain", query)).await;
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert_eq!(String::from_utf8(body).unwrap().lines().next(), Some("image_id,label"));
    let (_, _, body) = send(&router, post("/sql?format=parquet", "text/plain", query)).await;
    assert_eq!(&body[..4], b"PAR1");
    let (_, _, body) = send(&router, post("/sql?format=jsonl", "text/plain", query)).await;
    assert_eq!(String::from_utf8(body).unwrap().lines().count(), 3);
    // Zero rows still give a well-formed body with the columns.
    let (status, _, body) =
        send(&router, post("/sql?format=csv", "text/plain", "SELECT image_id FROM images WHERE false")).await;
    assert_eq!((status, String::from_utf8(body).unwrap().trim()), (StatusCode::OK, "image_id"));
}

#[tokio::test]
async fn sql_pages_summarises_and_says_where_an_error_is() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let query = "SELECT image_id, label FROM images ORDER BY image_id";
    let (_, _, body) = send(&router, post_json("/sql", json!({"sql": query}))).await;
    let all = json(&body).as_array().unwrap().clone();
    assert!(all.len() >= 5, "{all:?}");

    // Pages of the same result, from the body or from the query string.
    let (status, _, body) = send(&router, post_json("/sql", json!({"sql": query, "limit": 2, "offset": 3}))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body).as_array().unwrap()[..], all[3..5]);
    let (_, _, body) = send(&router, post("/sql?limit=2&format=json", "text/plain", query)).await;
    assert_eq!(json(&body).as_array().unwrap()[..], all[..2]);
    let (_, _, body) = send(&router, post_json("/sql?limit=1", json!({"sql": query, "limit": 3}))).await;
    assert_eq!(json(&body).as_array().unwrap().len(), 3, "the body's limit wins");
    // Statements that are no SELECT page too.
    for statement in ["SHOW TABLES", "EXPLAIN SELECT * FROM images", "DESCRIBE images"] {
        let (status, _, body) = send(&router, post_json("/sql", json!({"sql": statement, "limit": 1}))).await;
        assert_eq!(status, StatusCode::OK, "{statement}: {}", String::from_utf8_lossy(&body));
        assert_eq!(json(&body).as_array().unwrap().len(), 1, "{statement}");
    }

    // The summary describes the whole result, not a page.
    let summary_query = "SELECT label, width, image_id FROM images";
    let (status, headers, body) =
        send(&router, post_json("/sql", json!({"sql": summary_query, "summary": true}))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json");
    let summary = json(&body);
    assert_eq!(summary["rows"], all.len());
    let label = &summary["columns"][0];
    let labels: std::collections::BTreeSet<&str> = all.iter().filter_map(|r| r["label"].as_str()).collect();
    assert_eq!(label["name"], "label");
    assert_eq!(label["distinct"], labels.len());
    assert_eq!(label["min"], *labels.first().unwrap());
    assert_eq!(label["max"], *labels.last().unwrap());
    assert!(summary["columns"][1]["min"].is_number(), "{summary}");
    // A timestamp's range reads as times, not as the integers they are stored as.
    let times = "SELECT to_timestamp_seconds(1704070800) AS t UNION ALL SELECT to_timestamp_seconds(1705143600)";
    let (_, _, body) = send(&router, post_json("/sql", json!({"sql": times, "summary": true}))).await;
    let t = &json(&body)["columns"][0];
    assert_eq!((t["min"].as_str(), t["max"].as_str()), (Some("2024-01-01T01:00:00"), Some("2024-01-13T11:00:00")));
    let (status, _, body) =
        send(&router, post_json("/sql", json!({"sql": summary_query, "summary": true, "limit": 5}))).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "bad_request".to_string()));

    // Errors point at the place in the text sent: the parser's, the planner's.
    let cases = [
        ("SELECT image_id\nFROM images\nWHERE label = = 'cat'", StatusCode::BAD_REQUEST, 3, 15),
        ("SELECT image_id,\n       nope\nFROM images", StatusCode::BAD_REQUEST, 2, 8),
        ("SELECT * FROM nope.images", StatusCode::NOT_FOUND, 1, 15),
    ];
    for (sql, status, line, column) in cases {
        let (got, _, body) = send(&router, post_json("/sql", json!({"sql": sql, "limit": 10}))).await;
        let error = &json(&body)["error"];
        assert_eq!(got, status, "{sql}: {error}");
        assert_eq!(error["position"], json!({"line": line, "column": column}), "{sql}: {error}");
    }
}

#[tokio::test]
async fn sql_is_read_only_and_reads_no_files() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let outside = fx.dir.path().join("written-by-copy.csv");
    let refused = [
        "CREATE TABLE t AS SELECT 1".to_string(),
        "CREATE EXTERNAL TABLE p (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'".to_string(),
        format!("COPY (SELECT 1 AS x) TO '{}'", outside.display()),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "DROP TABLE images".to_string(),
    ];
    for sql in &refused {
        let (status, _, body) = send(&router, post("/sql", "text/plain", sql.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{sql}: {}", String::from_utf8_lossy(&body));
        assert_eq!(error_code(&body), "read_only");
    }
    assert!(!outside.exists(), "COPY wrote a file");
    // The slice statements of `slicetest sql`: the writes are refused with the endpoint to
    // use instead, the reads answered.
    for (sql, endpoint) in [
        ("CREATE SLICE s AS SELECT image_id FROM images", "POST /slices"),
        ("FREEZE SLICE s", "POST /slices/{name}/freeze"),
        ("DROP SLICE IF EXISTS s", "DROP SLICE"),
    ] {
        let (status, _, body) = send(&router, post("/sql", "text/plain", sql)).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::FORBIDDEN, "read_only"), "{sql}");
        assert!(json(&body)["error"]["message"].as_str().unwrap().contains(endpoint), "{sql}");
    }
    let (status, _, body) = send(&router, post("/sql?format=json", "text/plain", "SHOW SLICES")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(
        json(&body).as_array().is_some_and(|rows| rows.is_empty()),
        "no slices yet: {}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, body) = send(&router, post("/sql", "text/plain", "DESCRIBE SLICE nope")).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::NOT_FOUND, "not_found"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, _) = send(&router, post("/sql", "text/plain", "INSERT INTO images (image_id) VALUES ('x')")).await;
    assert!(matches!(status, StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST), "{status}");
    let (_, _, body) = send(&router, post("/sql", "text/plain", "SELECT count(*) AS n FROM images")).await;
    assert_eq!(json(&body)[0]["n"], 7, "nothing was inserted");
    // No table function or URL table reads a file by path.
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM parquet_metadata('/etc/passwd')",
        "SELECT * FROM slice('../../../etc/passwd')",
    ] {
        let (status, _, body) = send(&router, post("/sql", "text/plain", sql)).await;
        assert!(status.is_client_error(), "{sql}: {status}");
        assert!(!String::from_utf8_lossy(&body).contains("root:"), "{sql} leaked /etc/passwd");
    }
    // Malformed SQL says where.
    let (status, _, body) = send(&router, post("/sql", "text/plain", "SELEC image_id FROM images")).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::BAD_REQUEST, "query"));
    let (status, _, body) = send(&router, post("/sql", "application/json", "{\"query\": 1}")).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::BAD_REQUEST, "bad_request"));
    // A typo gets the engine's hint.
    let (_, _, body) = send(&router, post("/sql", "text/plain", "SELECT * FROM imagez")).await;
    assert!(json(&body)["error"]["message"].as_str().unwrap().contains("did you mean"));
}

#[tokio::test]
async fn queries_are_bounded_in_time_size_and_memory() {
    let fx = Fixture::new().await;
    let slow = "SELECT count(*) FROM generate_series(1, 100000000000) a";
    let router = fx.router_with_limits(|l| l.query_timeout = std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    let (status, _, body) = send(&router, post("/sql", "text/plain", slow)).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "timeout"));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // A result that streams without end, each batch ready at once, is cut at the deadline:
    // the body ends in an error before the rows do.
    use tower::ServiceExt as _;
    let router = fx.router_with_limits(|l| l.query_timeout = std::time::Duration::from_secs(2));
    let endless = "SELECT a.value, b.value AS other FROM generate_series(1, 100000) a, generate_series(1, 100000) b";
    for format in ["csv", "json", "arrow"] {
        let response =
            router.clone().oneshot(post(&format!("/sql?format={format}"), "text/plain", endless)).await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(response.status(), StatusCode::OK, "{format}: the stream has started");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await;
        assert!(body.is_err(), "{format}: the body ends in an error");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{format}: {:?}", started.elapsed());
    }

    let router = fx.router_with_limits(|l| l.max_request_bytes = 1000);
    let (status, _, body) =
        send(&router, post("/sql", "text/plain", format!("SELECT 1 -- {}", "x".repeat(2000)))).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"));

    let engine = fx.engine().with_query_memory(1 << 20).unwrap();
    let router = slicetest_api::router(slicetest_api::AppState::new(engine, &ServerConfig::default()));
    // A hash join's build side cannot spill: 2M rows do not fit in 1 MiB.
    let big_join =
        "SELECT count(*) FROM generate_series(1, 2000000) a JOIN generate_series(1, 2000000) b ON a.value = b.value";
    let (status, _, body) = send(&router, post("/sql", "text/plain", big_join)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_code(&body), "resources_exhausted");

    // One query's own cap holds inside a large shared pool.
    let engine = fx.engine().with_per_query_memory(1 << 20);
    let router = slicetest_api::router(slicetest_api::AppState::new(engine, &ServerConfig::default()));
    let (status, _, body) = send(&router, post("/sql", "text/plain", big_join)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(json(&body)["error"]["message"].as_str().unwrap().contains("its memory limit of 1 MiB"));
    let (status, _, _) = send(&router, post("/sql", "text/plain", "SELECT count(*) FROM images")).await;
    assert_eq!(status, StatusCode::OK, "small queries still run");
}

#[tokio::test]
async fn search_by_text_by_id_and_by_upload() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let (status, _, body) = send(&router, get("/search/text?q=a%20photo%20of%20a%20cat&k=3")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let hits = json(&body);
    assert_eq!(hits.as_array().unwrap().len(), 3);
    let scores: Vec<f64> = hits.as_array().unwrap().iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

    // Same ranking as SQL's text_search.
    let (_, _, body) =
        send(&router, post("/sql", "text/plain", "SELECT image_id FROM text_search('a photo of a cat', 3)")).await;
    let sql_ids: Vec<_> = json(&body).as_array().unwrap().iter().map(|r| r["image_id"].clone()).collect();
    let api_ids: Vec<_> = hits.as_array().unwrap().iter().map(|r| r["image_id"].clone()).collect();
    assert_eq!(sql_ids, api_ids);

    let id = "train/dog/d1.png";
    let (status, _, body) = send(&router, get(&format!("/search/image/{}?k=2", encode(id)))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)[0]["image_id"], id, "an image is closest to itself");

    let file = std::fs::read(fx.dir.path().join("src/photos").join(id)).unwrap();
    let (status, _, body) = send(&router, post("/search/image?k=1", "image/png", file)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)[0]["image_id"], id);

    for (bytes, what) in [(b"not an image".to_vec(), "garbage"), (huge_png_header(), "20000x20000 header")] {
        let (status, _, body) = send(&router, post("/search/image", "image/png", bytes)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(error_code(&body), "bad_image", "{what}");
    }
    let (status, _, _) = send(&router, get("/search/text?q=cat&k=0")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = send(&router, get("/search/text?k=3")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // An id without a vector is missing, as GET /images/nope.png is.
    let (status, _, body) = send(&router, get("/search/image/nope.png")).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn vectors_are_loaded_once_per_server_and_again_only_when_they_change() {
    let fx = Fixture::new().await;
    let state = slicetest_api::AppState::new(fx.engine(), &ServerConfig::default());
    let router = slicetest_api::router(state.clone());
    let requests = || {
        [
            get("/search/text?q=a%20cat&k=2"),
            get(&format!("/search/image/{}?k=2", encode("train/dog/d1.png"))),
            post("/sql", "text/plain", "SELECT image_id FROM text_search('a dog', 2)"),
            post("/sql", "text/plain", "SELECT max(clip_similarity(image_id, 'a bird')) FROM images"),
        ]
    };
    for _ in 0..3 {
        for request in requests() {
            let (status, _, body) = send(&router, request).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        }
    }
    let store = state.engine().vectors();
    assert_eq!(store.loads(), 1, "twelve requests, one load");
    assert!(store.resident_bytes() > 0);

    // An embed run adds a part: the next request sees it.
    let layout = state.engine().workspace().layout().clone();
    let model = slicetest_datasets::embeddings::model_names(&layout, "photos").unwrap().remove(0);
    let parts = slicetest_datasets::embeddings::read_parts(&layout, "photos", &model).unwrap();
    let last = parts.last().unwrap().slice(0, 1);
    slicetest_datasets::embeddings::append_part(&layout, "photos", &model, &last).unwrap();
    for request in requests() {
        assert_eq!(send(&router, request).await.0, StatusCode::OK);
    }
    assert_eq!(store.loads(), 2, "one more load, for the new part");

    // A new version of the dataset (an ingest elsewhere): the next search loads again.
    let src = fx.dir.path().join("src/photos");
    slicetest_test_support::write_image(&src.join("train/new.png"), 6, 6, 99);
    let mut workspace = slicetest_datasets::Workspace::open(fx.dir.path().join("ws")).unwrap();
    let options = slicetest_datasets::IngestOptions::new("photos");
    assert!(slicetest_datasets::ingest(&mut workspace, &src, &options).await.unwrap().created);
    for request in requests() {
        assert_eq!(send(&router, request).await.0, StatusCode::OK);
    }
    assert_eq!(store.loads(), 3, "one more load, for the new version");
}

/// A PNG whose header claims 20000×20000 pixels, with no pixel data.
fn huge_png_header() -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&20_000u32.to_be_bytes());
    ihdr.extend_from_slice(&20_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&ihdr);
    png.extend_from_slice(&chunk);
    png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    png
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[tokio::test]
async fn slices_are_created_frozen_listed_diffed_and_pulled() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let create =
        json!({"name": "cats", "query": "SELECT image_id FROM images WHERE label = 'cat'", "min_accuracy": 0.5});
    let (status, _, body) = send(&router, post_json("/slices", create.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["dataset"], "photos");
    let (status, _, body) = send(&router, post_json("/slices", create)).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::CONFLICT, "exists"));
    let (status, _, body) =
        send(&router, post_json("/slices", json!({"name": "../x", "query": "SELECT image_id FROM images"}))).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::BAD_REQUEST, "invalid_name"));
    let (status, _, body) =
        send(&router, post_json("/slices", json!({"name": "bad", "query": "SELECT label FROM images"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) =
        send(&router, post_json("/slices", json!({"name": "x", "query": "SELECT 1", "typo": 1}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Not frozen yet: data is a conflict that says what to do.
    let (status, _, body) = send(&router, get("/slices/cats/data")).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::CONFLICT, "not_frozen"));

    let (status, _, body) = send(&router, post_json("/slices/cats/freeze", json!({"holdout": 0.5, "seed": 3}))).await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["frozen"]["members"], 3);
    let (status, _, body) = send(&router, post_json("/slices/cats/freeze", json!({"holdout": 0.5, "seed": 3}))).await;
    assert_eq!((status, json(&body)["created"].clone()), (StatusCode::OK, json!(false)));
    let (status, _, _) = send(&router, post_json("/slices/cats/freeze", json!({"holdout": 2.0}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (status, _, body) = send(&router, get("/slices")).await;
    assert_eq!(status, StatusCode::OK);
    let listed = json(&body);
    let b = &listed[0]["breakdown"];
    assert_eq!(listed[0]["name"], "cats");
    assert_eq!(b["members"], 3);
    let parts = ["train", "val", "test", "holdout", "unsplit"].map(|k| b[k].as_u64().unwrap());
    assert_eq!(parts.iter().sum::<u64>(), 3);
    let (_, _, one) = send(&router, get("/slices/cats")).await;
    assert_eq!(json(&one), listed[0]);

    let (status, _, body) = send(&router, get("/slices/cats/data?format=arrow")).await;
    assert_eq!(status, StatusCode::OK);
    let batches = arrow_batches(&body);
    let schema = batches[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).take(5).collect();
    assert_eq!(names, ["image_id", "uri", "label", "split", "holdout"]);
    let all: usize = batches.iter().map(|b| b.num_rows()).sum();
    let (_, _, held) = send(&router, get("/slices/cats/data?holdout=true")).await;
    let (_, _, kept) = send(&router, get("/slices/cats/data?holdout=false")).await;
    let (held, kept) = (json(&held), json(&kept));
    assert_eq!(held.as_array().unwrap().len() + kept.as_array().unwrap().len(), all);
    assert!(held.as_array().unwrap().iter().all(|r| r["holdout"] == true));
    assert_eq!(held.as_array().unwrap().len() as u64, b["holdout"].as_u64().unwrap());
    let (status, _, body) = send(&router, get("/slices/cats/data?version=9")).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::NOT_FOUND, "not_found"));

    let (status, _, body) = send(&router, get("/slices/cats/diff")).await;
    assert_eq!((status, json(&body)), (StatusCode::OK, json!([])));
    let (status, _, _) = send(&router, get("/slices/dogs")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_freeze_without_a_share_keeps_the_latest_and_a_release_is_a_warning() {
    let fx = Fixture::new().await;
    let router = fx.router();
    // A query ending in a comment: created, then frozen (the comment is left out where embedded).
    let create = json!({"name": "cats", "query": "SELECT DISTINCT image_id FROM images WHERE label = 'cat' -- cats"});
    let (status, _, body) = send(&router, post_json("/slices", create)).await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    let agg = json!({"name": "agg", "query": "SELECT count(*) AS image_id FROM images"});
    let (status, _, body) = send(&router, post_json("/slices", agg)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("its image_id is Int64"));

    let (status, _, body) = send(&router, post_json("/slices/cats/freeze", json!({"holdout": 1, "seed": 3}))).await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    // Neither given: the latest version's share and seed, so nothing changed.
    let (status, _, body) = send(&router, post_json("/slices/cats/freeze", json!({}))).await;
    let body = json(&body);
    assert_eq!(
        (status, body["created"].clone(), body["frozen"]["version"].clone()),
        (StatusCode::OK, json!(false), json!(1))
    );
    assert_eq!((body["frozen"]["holdout_share"].clone(), body["frozen"]["seed"].clone()), (json!(1.0), json!(3)));
    // A smaller share: a new version that says so and warns of the images it releases.
    let (status, _, body) = send(&router, post_json("/slices/cats/freeze", json!({"holdout": 0}))).await;
    let body = json(&body);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["holdout_changed"].clone(), body["released_from_holdout"].clone()), (json!(true), json!(3)));
    assert_eq!(body["released_left_slice"], 0);
    assert_eq!(body["previous"]["version"], 1);
    assert_eq!(body["frozen"]["seed"], 3);
    assert_eq!(body["notes"][0], "hold-out changed from 1 (seed 3) in v1 to 0 (seed 3) in v2");
    assert!(body["warnings"][0].as_str().unwrap().starts_with("3 images held out by cats v1"), "{body}");
}

#[tokio::test]
async fn a_missing_thing_is_a_404_over_rest_and_over_sql_alike() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let sql = |query: &str| post("/sql", "text/plain", query.to_string());
    for (what, request) in [
        ("REST slice", get("/slices/nope")),
        ("SQL slice", sql("SELECT * FROM slice('nope')")),
        ("SQL in_slice", sql("SELECT image_id FROM images WHERE in_slice(image_id, 'nope')")),
        ("REST run", get("/runs/nope")),
        ("SQL run", sql("SELECT * FROM discover_slices('nope')")),
        ("REST dataset", get("/images/x.png?dataset=nope")),
        ("SQL dataset", sql("SELECT * FROM nope.images")),
    ] {
        let (status, _, body) = send(&router, request).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::NOT_FOUND, "not_found"),
            "{what}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // A misspelt table is a mistake in the query, with the fix.
    let (status, _, body) = send(&router, sql("SELECT * FROM imagez")).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::BAD_REQUEST, "query"));
    assert!(json(&body)["error"]["message"].as_str().unwrap().contains("did you mean the table \"images\""));
}

#[tokio::test]
async fn a_failure_of_the_server_is_a_500_that_names_no_path() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let create = json!({"name": "cats", "query": "SELECT image_id FROM images WHERE label = 'cat'"});
    assert_eq!(send(&router, post_json("/slices", create)).await.0, StatusCode::CREATED);
    assert_eq!(send(&router, post_json("/slices/cats/freeze", json!({}))).await.0, StatusCode::CREATED);
    // The frozen members vanish from under the server (a disk failure, a bad backup).
    let members = std::fs::read_dir(fx.root().join("slices/cats")).unwrap().map(|e| e.unwrap().path());
    let members: Vec<_> = members.filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    assert_eq!(members.len(), 1, "{members:?}");
    std::fs::remove_file(&members[0]).unwrap();
    for request in [post("/sql", "text/plain", "SELECT count(*) FROM slice('cats')"), get("/slices/cats/data")] {
        let (status, _, body) = send(&router, request).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "internal"), "{text}");
        let root = fx.root().display().to_string();
        assert!(!text.contains(&root) && !text.contains("parquet") && !text.contains("<workspace>"), "{text}");
    }
}

#[tokio::test]
async fn images_are_served_by_id_only() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let id = "test/dog/d2.jpg";
    let (status, headers, body) = send(&router, get(&format!("/images/{}", encode(id)))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "image/jpeg");
    assert_eq!(body, std::fs::read(fx.dir.path().join("src/photos").join(id)).unwrap());
    let etag = headers["etag"].clone();
    let request = axum::http::Request::get(format!("/images/{}", encode(id)))
        .header("if-none-match", etag)
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(send(&router, request).await.0, StatusCode::NOT_MODIFIED);

    let (status, headers, body) = send(&router, get(&format!("/images/{}/thumbnail?size=8", encode(id)))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "image/jpeg");
    let thumb = image::load_from_memory(&body).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (8, 4), "20x10 fits in 8x8 keeping its aspect");
    let (status, _, _) = send(&router, get(&format!("/images/{}/thumbnail?size=0", encode(id)))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = send(&router, get("/images/s1.png?dataset=street")).await;
    assert_eq!((status, &body[1..4]), (StatusCode::OK, &b"PNG"[..]));

    for attempt in ["..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "..%2Fsrc%2Fphotos%2Floose.png", "loose.png%00"] {
        let (status, _, body) = send(&router, get(&format!("/images/{attempt}"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{attempt}");
        assert!(!String::from_utf8_lossy(&body).contains("root:"));
    }
    let (status, _, body) = send(&router, get("/images/x.png?dataset=nope")).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::NOT_FOUND, "not_found"));

    // An image whose file was deleted after the ingest: the client's 404, naming the file.
    std::fs::remove_file(fx.dir.path().join("src/photos").join(id)).unwrap();
    for uri in [format!("/images/{}", encode(id)), format!("/images/{}/thumbnail?size=8", encode(id))] {
        let (status, _, body) = send(&router, get(&uri)).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::NOT_FOUND, "not_found"), "{uri}");
        let message = json(&body)["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains("d2.jpg, is gone (moved or deleted since it was ingested)"), "{message}");
    }
}

#[tokio::test]
async fn runs_are_uploaded_scored_tested_and_reported() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let slice = json!({"name": "cats", "query": "SELECT image_id FROM images WHERE label = 'cat'", "min_accuracy": 0.9, "min_samples": 1});
    send(&router, post_json("/slices", slice)).await;
    send(&router, post_json("/slices/cats/freeze", json!({}))).await;
    let dogs = json!({"name": "dogs", "query": "SELECT image_id FROM images WHERE label = 'dog'", "min_accuracy": 0.9, "min_samples": 1});
    send(&router, post_json("/slices", dogs)).await;
    send(&router, post_json("/slices/dogs/freeze", json!({}))).await;

    let upload = "/runs/r1?model=m&model_version=1";
    let (status, _, body) = send(&router, post(upload, "text/csv", PREDICTIONS_CSV)).await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["run"], "r1");
    let (status, _, body) = send(&router, post(upload, "text/csv", PREDICTIONS_CSV)).await;
    assert!(status.is_client_error(), "a run name is used once");
    assert!(json(&body)["error"]["message"].as_str().unwrap().contains("already exists"));

    let (_, _, body) = send(&router, get("/runs")).await;
    assert_eq!(json(&body).as_array().unwrap().len(), 1);
    let (status, _, body) = send(&router, get("/runs/r1/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["overall"]["scored"], 6);
    let (_, _, body) = send(&router, get("/runs/r1/test")).await;
    let verdicts = json(&body);
    assert_eq!(verdicts["passed"], false);
    assert_eq!(verdicts["failing"], json!(["dogs"]));
    let (status, headers, body) = send(&router, get("/runs/r1/report?format=html")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(String::from_utf8(body).unwrap().contains("dogs"));
    let (status, _, _) = send(&router, get("/runs/nope/test")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_uploads_are_refused_and_leave_nothing_behind() {
    let fx = Fixture::new().await;
    let router = fx.router_with_limits(|l| l.max_upload_bytes = 4096);
    let runs_dir = fx.root().join("runs");
    let upload = "/runs/bad?model=m&model_version=1";
    let unknown_ids = "image_id,predicted\nnot/an/image.png,cat\n";
    let (status, _, body) = send(&router, post(upload, "text/csv", unknown_ids)).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"));
    let message = json(&body)["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("not/an/image.png"), "{message}");
    assert!(!message.contains("/tmp"), "the temporary path leaked: {message}");

    let (status, _, body) = send(&router, post(upload, "application/xml", "<x/>")).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"));
    let oversize = format!("image_id,predicted\n{}", "train/cat/c1.png,cat\n".repeat(400));
    let (status, _, body) = send(&router, post(upload, "text/csv", oversize)).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"));
    let (status, _, body) = send(&router, post("/runs/bad?model=m", "text/csv", PREDICTIONS_CSV)).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "model_version is required"
    );
    assert!(json(&body)["error"]["message"].as_str().unwrap().contains("model_version"));
    let (status, _, _) = send(&router, post(upload, "text/csv", "")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let left: Vec<_> = std::fs::read_dir(&runs_dir).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "a refused upload left {left:?}");
}

#[tokio::test]
async fn writes_need_the_token_when_one_is_set() {
    let fx = Fixture::new().await;
    let config = ServerConfig { token: Some("s3cret".into()), ..ServerConfig::default() };
    let router = fx.router_with(&config);
    let slice = json!({"name": "cats", "query": "SELECT image_id FROM images WHERE label = 'cat'"});
    let (status, headers, body) = send(&router, post_json("/slices", slice.clone())).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    assert_eq!(headers["www-authenticate"], "Bearer");
    let with = |token: &str| {
        axum::http::Request::post("/slices")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::from(slice.to_string()))
            .unwrap()
    };
    assert_eq!(send(&router, with("wrong")).await.0, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&router, post("/runs/r?model=m&model_version=1", "text/csv", PREDICTIONS_CSV)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&router, post_json("/datasets/street/embed", json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(fx.engine().slices().unwrap().is_empty(), "nothing was written without the token");
    assert_eq!(send(&router, get("/jobs")).await.2, b"[]", "no job was started without the token");
    assert_eq!(send(&router, with("s3cret")).await.0, StatusCode::CREATED);
    // Reads stay open.
    assert_eq!(send(&router, get("/slices")).await.0, StatusCode::OK);
    assert_eq!(send(&router, post("/sql", "text/plain", "SELECT 1")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn unknown_endpoints_and_formats_answer_json_errors() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let (status, _, body) = send(&router, get("/nope")).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let request = axum::http::Request::post("/sql").header("accept", "image/png").body("SELECT 1".into()).unwrap();
    let (status, _, body) = send(&router, request).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::NOT_ACCEPTABLE, "not_acceptable"));
    let delete = axum::http::Request::delete("/slices").body(axum::body::Body::empty()).unwrap();
    let (status, headers, body) = send(&router, delete).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    assert!(headers.contains_key("allow"));
    let (status, _, body) = send(&router, get("/health")).await;
    assert_eq!((status, json(&body)["status"].clone()), (StatusCode::OK, json!("ok")));
}

/// Every route in the router is in the OpenAPI document, and every documented operation
/// reaches a handler (not the fallback, not 405).
#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let (status, _, body) = send(&router, get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let doc = json(&body);
    let paths = doc["paths"].as_object().unwrap();
    let source = include_str!("../src/routes/mod.rs");
    let routed: Vec<&str> = source.split(".route(\"").skip(1).map(|s| s.split('"').next().unwrap()).collect();
    assert!(routed.len() >= 15);
    for path in &routed {
        assert!(paths.contains_key(*path), "{path} is routed but not documented");
    }
    for (path, operations) in paths {
        assert!(routed.contains(&path.as_str()), "{path} is documented but not routed");
        for method in operations.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "x.png").replace("{name}", "x").replace("{file}", "app.js");
            let request = axum::http::Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .body(axum::body::Body::empty())
                .unwrap();
            let (status, _, body) = send(&router, request).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            let text = String::from_utf8_lossy(&body);
            assert!(!text.contains("no such endpoint"), "{method} {path} fell through");
        }
    }
}

#[tokio::test]
async fn an_image_info_has_its_row_slices_and_predictions() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let cats = json!({"name": "cats", "query": "SELECT image_id FROM images WHERE label = 'cat'"});
    send(&router, post_json("/slices", cats)).await;
    send(&router, post_json("/slices/cats/freeze", json!({"holdout": 0.0}))).await;
    send(&router, post("/runs/r1?model=m&model_version=1", "text/csv", PREDICTIONS_CSV)).await;
    let boxes = fx.root().with_file_name("boxes.csv");
    std::fs::write(&boxes, "image_id,label,score,x0,y0,x1,y1\ntrain/cat/c1.png,cat,0.5,1,1,5,4\n").unwrap();
    let import = slicetest_engine::TagImportOptions { dataset: Some("photos".into()), ..Default::default() };
    fx.engine().import_tags(&boxes, &import).await.unwrap();
    let (status, _, body) = send(&router, get(&format!("/images/{}/info", encode("train/cat/c1.png")))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let info = json(&body);
    assert_eq!((info["dataset"].clone(), info["image"]["label"].clone()), (json!("photos"), json!("cat")));
    assert_eq!(info["image"]["width"], 8);
    assert_eq!(info["slices"], json!([{"slice": "cats", "version": 1, "holdout": false}]));
    assert_eq!(info["predictions"][0]["run"], "r1");
    assert_eq!(info["predictions"][0]["predicted"], "cat");
    // Tags are columns of the row; boxes come with their tagger.
    assert_eq!(info["image"]["num_cat"], 1);
    let detections =
        json!([{"tagger": "boxes", "label": "cat", "score": 0.5, "x0": 1.0, "y0": 1.0, "x1": 5.0, "y1": 4.0}]);
    assert_eq!(info["detections"], detections);
    let (_, _, body) = send(&router, get(&format!("/images/{}/info", encode("test/dog/d2.jpg")))).await;
    assert_eq!(json(&body)["slices"], json!([]));
    // A quote in an id is data, not SQL.
    let (status, _, _) = send(&router, get(&format!("/images/{}/info", encode("x' OR '1'='1")))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_ui_is_served_from_the_binary() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let (status, headers, body) = send(&router, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(headers["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    assert!(String::from_utf8(body).unwrap().contains("/ui/app.js"));
    let (status, headers, body) = send(&router, get("/ui/app.js")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(String::from_utf8(body).unwrap().contains("function route()"));
    let (status, _, _) = send(&router, get("/ui/..%2FCargo.toml")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_job_runs_in_the_background_one_per_dataset() {
    let fx = Fixture::new().await;
    let router = fx.router_with_tiny_clip();
    let (_, _, body) = send(&router, get("/datasets")).await;
    let datasets = json(&body);
    assert_eq!(datasets[0]["name"], "photos");
    assert_eq!(
        (datasets[0]["default"].clone(), datasets[0]["embeddings"].clone()),
        (json!(true), json!(["tiny-clip"]))
    );
    assert_eq!((datasets[1]["name"].clone(), datasets[1]["images"].clone()), (json!("street"), json!(5)));
    assert_eq!(datasets[1]["embeddings"], json!([]));
    let command = datasets[1]["embed"]["command"].as_str().unwrap();
    assert!(command.starts_with("slicetest -w /") && command.contains(" embed street --model /"), "{command}");

    // While the test holds the workspace lock, the job waits at its first write: it is
    // unfinished for certain when the second start comes.
    let engine = fx.engine();
    let lock = engine.workspace().lock().unwrap();
    let (status, headers, body) = send(&router, post_json("/datasets/street/embed", json!({"batch_size": 2}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&body));
    let job = json(&body);
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(headers["location"], format!("/jobs/{id}"));
    assert_eq!((job["dataset"].clone(), job["model"].clone()), (json!("street"), json!(TINY_CLIP)));
    assert!(job["state"] == "queued" || job["state"] == "running", "{job}");

    let (status, _, body) = send(&router, post("/datasets/street/embed", "application/json", "")).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::CONFLICT, "job_running"));
    let error = &json(&body)["error"];
    assert!(error["message"].as_str().unwrap().contains(&format!("already being embedded by job {id}")), "{error}");
    assert_eq!(error["job"]["id"], id.as_str());
    // Another dataset is not blocked by it (photos is embedded already: nothing to do).
    let (status, _, body) = send(&router, post_json("/datasets/photos/embed", json!({}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&body));
    let photos = json(&body)["id"].as_str().unwrap().to_string();

    drop(lock);
    let job = wait_for_job(&router, &id).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!((job["total"].clone(), job["done"].clone(), job["embedded"].clone()), (json!(5), json!(5), json!(5)));
    assert_eq!((job["already_embedded"].clone(), job["embeddings"].clone()), (json!(0), json!("tiny-clip")));
    assert!(job["started_at"].is_string() && job["finished_at"].is_string() && job["error"].is_null(), "{job}");
    assert_eq!(fx.engine().embedding_models("street").unwrap(), ["tiny-clip"]);
    let photos = wait_for_job(&router, &photos).await;
    assert_eq!((photos["state"].clone(), photos["embedded"].clone()), (json!("done"), json!(0)));
    assert_eq!(photos["already_embedded"], 7);

    // A finished job frees the dataset; a new one resumes (everything is embedded).
    let (status, _, body) = send(&router, post_json("/datasets/street/embed", json!({}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let again = wait_for_job(&router, json(&body)["id"].as_str().unwrap()).await;
    assert_eq!((again["embedded"].clone(), again["already_embedded"].clone()), (json!(0), json!(5)));
    let (_, _, body) = send(&router, get("/jobs")).await;
    let ids: Vec<Value> = json(&body).as_array().unwrap().iter().map(|j| j["id"].clone()).collect();
    assert_eq!(ids, [json!("embed-3"), json!("embed-2"), json!("embed-1")], "newest first");
    let (status, _, body) = send(&router, get("/jobs/embed-99")).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_embeds_the_subset_where_and_limit_select() {
    let fx = Fixture::new().await;
    let router = fx.router_with_tiny_clip();
    let body = json!({"where": "split = 'train'", "limit": 1});
    let (status, _, body) = send(&router, post_json("/datasets/street/embed", body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&body));
    assert_eq!((json(&body)["where"].clone(), json(&body)["limit"].clone()), (json!("split = 'train'"), json!(1)));
    let job = wait_for_job(&router, json(&body)["id"].as_str().unwrap()).await;
    assert_eq!(
        (job["state"].clone(), job["total"].clone(), job["embedded"].clone()),
        (json!("done"), json!(1), json!(1))
    );
    // The whole train split now: the first image is done, the other is embedded.
    let (_, _, body) = send(&router, post_json("/datasets/street/embed", json!({"where": "split = 'train'"}))).await;
    let job = wait_for_job(&router, json(&body)["id"].as_str().unwrap()).await;
    assert_eq!((job["embedded"].clone(), job["already_embedded"].clone()), (json!(1), json!(1)), "{job}");
    let (_, _, body) =
        send(&router, post("/sql", "text/plain", "SELECT image_id FROM street.embeddings ORDER BY image_id")).await;
    let ids: Vec<Value> = json(&body).as_array().unwrap().iter().map(|r| r["image_id"].clone()).collect();
    assert_eq!(ids, [json!("s1.png"), json!("s3.png")], "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn bad_models_and_predicates_are_refused_before_anything_is_written() {
    let fx = Fixture::new().await;
    let router = fx.router_with_tiny_clip();
    let half = fx.dir.path().join("half-model");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::copy(std::path::Path::new(TINY_CLIP).join("config.json"), half.join("config.json")).unwrap();
    let cases = [
        (json!({"model": "/no/such/clip"}), StatusCode::BAD_REQUEST, "no such directory"),
        (
            json!({"model": half.to_str().unwrap()}),
            StatusCode::BAD_REQUEST,
            "missing model.safetensors, tokenizer.json",
        ),
        (json!({"where": "no_such_column = 1"}), StatusCode::BAD_REQUEST, "no_such_column"),
        (json!({"where": "caption"}), StatusCode::BAD_REQUEST, "not a boolean SQL predicate"),
        (json!({"where": "true) UNION SELECT image_id FROM photos.images --"}), StatusCode::BAD_REQUEST, "--where"),
        (json!({"where": "  "}), StatusCode::BAD_REQUEST, "empty"),
        (json!({"limit": 0}), StatusCode::BAD_REQUEST, "limit"),
        (json!({"batch_size": 0}), StatusCode::BAD_REQUEST, "batch_size"),
        (json!({"modle": "x"}), StatusCode::BAD_REQUEST, "unknown field `modle`"),
    ];
    for (body, expected, says) in cases {
        let (status, _, reply) = send(&router, post_json("/datasets/street/embed", body.clone())).await;
        let message = json(&reply)["error"]["message"].as_str().unwrap().to_string();
        assert_eq!(status, expected, "{body}: {message}");
        assert!(message.contains(says), "{body}: {message}");
        assert!(!message.contains("Error during planning"), "{body}: {message}");
    }
    let (status, _, body) = send(&router, post_json("/datasets/streeet/embed", json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(json(&body)["error"]["message"].as_str().unwrap().contains("street"), "did you mean");
    let (_, _, body) = send(&router, get("/jobs")).await;
    assert_eq!(json(&body), json!([]), "no job was started");
    assert!(fx.engine().embedding_models("street").unwrap().is_empty(), "nothing was written");
    assert!(!fx.root().join("datasets/street/embeddings").exists());
}

#[tokio::test]
async fn search_without_embeddings_says_how_to_embed() {
    let fx = Fixture::new().await;
    let mut engine = fx.engine();
    engine.use_dataset("street").unwrap();
    let router = slicetest_api::router(slicetest_api::AppState::new(engine, &ServerConfig::default()));
    for uri in ["/search/text?q=a%20car", "/search/image/s1.png"] {
        let (status, _, body) = send(&router, get(uri)).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::CONFLICT, "no_embeddings"), "{uri}");
        let error = &json(&body)["error"];
        assert_eq!(error["dataset"], "street");
        assert_eq!(error["model"], slicetest_engine::DEFAULT_MODEL);
        let command = error["command"].as_str().unwrap();
        assert_eq!(command, format!("slicetest -w {} embed street", fx.root().display()));
        assert!(error["hint"].as_str().unwrap().contains("POST /datasets/street/embed"), "{error}");
    }
    // The same through SQL's search functions, without DataFusion's prefix.
    let (status, _, body) = send(&router, post("/sql", "text/plain", "SELECT * FROM text_search('a car', 3)")).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::CONFLICT, "no_embeddings"));
    let message = json(&body)["error"]["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("dataset street has no embeddings yet"), "{message}");
    // A server others reach does not tell them where its workspace is.
    let public = ServerConfig { host: "0.0.0.0".parse().unwrap(), insecure: true, ..ServerConfig::default() };
    let router = slicetest_api::router(slicetest_api::AppState::new(fx.engine(), &public));
    let (_, _, body) = send(&router, get("/search/text?q=car")).await;
    assert_eq!(json(&body)["error"]["command"], "slicetest -w <workspace> embed street");
}

#[tokio::test]
async fn discovery_finds_a_planted_failure_and_confirms_it() {
    let (fx, predictions) = Fixture::planted().await;
    let router = fx.router();
    let (status, _, body) = send(&router, post("/runs/r1?model=m&model_version=1", "text/csv", predictions)).await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));

    let (status, headers, body) = send(&router, get("/runs/r1/discover?min_support=20")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json");
    let found = json(&body);
    assert_eq!((found["run"].clone(), found["dataset"].clone()), (json!("r1"), json!("street")));
    assert_eq!(found["error"], "misclassification");
    assert_eq!(found["images"], 800);
    assert_eq!(found["min_support"], 20);
    assert_eq!(found["k"], 10, "the CLI's defaults");
    let first = &found["slices"][0];
    assert_eq!(first["predicates"], json!(["weather = 'rain'", "time = 'night'"]), "{found:#}");
    assert_eq!(first["confirmed"], true);
    assert_eq!(first["query"], "SELECT image_id FROM images WHERE weather = 'rain' AND time = 'night'");
    let rate = first["confirmation"]["error_rate"].as_f64().unwrap();
    assert!((0.5..0.9).contains(&rate), "{rate}");
    assert!(first["confirmation"]["lift"].as_f64().unwrap() > 3.0);
    assert!(first["adjusted_p"].as_f64().unwrap() < 1e-6);
    assert!(found["slices"].as_array().unwrap().iter().all(|s| s["confirmed"] == true), "confirmed only by default");

    // The query selects what the predicates say.
    let (_, _, body) = send(
        &router,
        post_json("/sql", json!({"sql": format!("SELECT count(*) AS n FROM ({})", first["query"].as_str().unwrap())})),
    )
    .await;
    assert_eq!(
        json(&body)[0]["n"],
        first["discovery"]["size"].as_u64().unwrap() + first["confirmation"]["size"].as_u64().unwrap()
    );

    // Settings are passed through: columns (comma-separated, spaces allowed), k, seed.
    let (status, _, body) =
        send(&router, get("/runs/r1/discover?min_support=20&columns=weather,%20time&k=1&seed=3")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let narrow = json(&body);
    assert_eq!(narrow["columns"], json!(["weather", "time"]));
    assert_eq!((narrow["seed"].clone(), narrow["slices"].as_array().unwrap().len()), (json!(3), 1));
    assert_eq!(narrow["slices"][0]["predicates"], json!(["weather = 'rain'", "time = 'night'"]));
}

#[tokio::test]
async fn discovery_lists_unconfirmed_slices_when_asked_and_refuses_bad_settings() {
    let (fx, predictions) = Fixture::planted().await;
    let router = fx.router();
    send(&router, post("/runs/r1?model=m&model_version=1", "text/csv", predictions)).await;

    // At an absurdly strict FDR nothing is confirmed; `all=true` still lists what was tested.
    let (status, _, body) = send(&router, get("/runs/r1/discover?min_support=20&fdr=1e-100")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let strict = json(&body);
    assert_eq!(strict["slices"], json!([]));
    assert!(strict["tested"].as_u64().unwrap() > 0);
    let (_, _, body) = send(&router, get("/runs/r1/discover?min_support=20&fdr=1e-100&all=true")).await;
    let all = json(&body);
    let listed = all["slices"].as_array().unwrap();
    assert!(!listed.is_empty(), "{all:#}");
    assert!(listed.iter().all(|s| s["confirmed"] == false && s["adjusted_p"].as_f64().unwrap() > 1e-100));
    assert_eq!(listed[0]["predicates"], json!(["weather = 'rain'", "time = 'night'"]));

    let (status, _, body) = send(&router, get("/runs/nope/discover")).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::NOT_FOUND, "not_found"));
    assert!(json(&body)["error"]["message"].as_str().unwrap().contains("nope"));
    // Bad settings are 400 and name the query parameter, not the CLI's flag.
    for (query, says) in [
        ("alpha=0", "alpha must be in (0, 1], not 0"),
        ("alpha=1.5", "alpha must be in (0, 1]"),
        ("fdr=1", "fdr must be between 0 and 1"),
        ("k=0", "k and max_level must be at least 1"),
        ("k=5000", "k must be at most 1000"),
        ("max_level=9", "max_level must be at most 6"),
        ("min_support=100000", "min_support 100000 (the fewest images a slice may have) is more than the"),
        ("columns=weather,wether", "has no column \"wether\""),
        ("alpha=high", "alpha"),
        ("all=maybe", "all"),
        ("method=nearby", "method must be auto, tags, embeddings or both, not \"nearby\""),
        ("rank=best", "rank must be severity, excess or sliceline"),
        ("method=embeddings", "has no embeddings; run `slicetest embed` first"),
        ("method=both&model=clip", "model clip: dataset"),
        ("group=scene", "group: street.images has no column \"scene\""),
    ] {
        let (status, _, body) = send(&router, get(&format!("/runs/r1/discover?{query}"))).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::BAD_REQUEST, "bad_request"), "{query}");
        let message = json(&body)["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(says) && !message.contains("--"), "{query}: {message}");
    }
    // Another order; without vectors, `auto` searches the tags and says why.
    let (status, _, body) = send(&router, get("/runs/r1/discover?min_support=20&rank=sliceline")).await;
    assert_eq!(status, StatusCode::OK);
    let found = json(&body);
    assert_eq!((found["rank"].as_str(), found["method"].as_str()), (Some("sliceline"), Some("tags")));
    assert!(found["notes"][0].as_str().unwrap().contains("embeddings not searched"), "{found}");
    let scores: Vec<f64> = found["slices"].as_array().unwrap().iter().map(|s| s["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // Discovery reads only: no token needed, nothing written.
    let config = ServerConfig { token: Some("s3cret".into()), ..ServerConfig::default() };
    let (status, _, _) = send(&fx.router_with(&config), get("/runs/r1/discover?min_support=20")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(fx.engine().slices().unwrap().is_empty());
}

#[tokio::test]
async fn discovery_is_bounded_by_the_query_timeout() {
    let (fx, predictions) = Fixture::planted().await;
    send(&fx.router(), post("/runs/r1?model=m&model_version=1", "text/csv", predictions)).await;
    let router = fx.router_with_limits(|l| l.query_timeout = std::time::Duration::from_nanos(1));
    let (status, _, body) = send(&router, get("/runs/r1/discover?min_support=20")).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "timeout"));
}

#[tokio::test]
async fn the_html_report_lists_the_discovered_slices() {
    let (fx, predictions) = Fixture::planted().await;
    let router = fx.router();
    send(&router, post("/runs/r1?model=m&model_version=1", "text/csv", predictions)).await;
    let (status, _, body) = send(&router, get("/runs/r1/report?format=html")).await;
    assert_eq!(status, StatusCode::OK);
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("<h2>Discovered slices</h2>"), "{html}");
    assert!(html.contains("<td class=\"slice\">weather = 'rain'<br>AND time = 'night'</td>"), "{html}");
    assert!(html.contains("<tr class=\"discovered\">"), "{html}");
}

/// The RGBA pixel at (x, y) of a PNG body.
fn rgba_at(png: &[u8], x: u32, y: u32) -> [u8; 4] {
    image::load_from_memory_with_format(png, image::ImageFormat::Png).expect("a PNG").to_rgba8().get_pixel(x, y).0
}

fn class_rgba(position: u16) -> [u8; 4] {
    let [r, g, b] = slicetest_engine::segmentation::class_colour(position);
    [r, g, b, 255]
}

#[tokio::test]
async fn an_image_info_lists_its_masks_and_each_segmentation_runs_scores_on_it() {
    let fx = Fixture::segmented().await;
    let router = fx.router();
    let (status, _, body) = send(&router, get("/images/a.png/info")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let info = json(&body);
    let hex = |p: u16| {
        let [r, g, b] = slicetest_engine::segmentation::class_colour(p);
        format!("#{r:02x}{g:02x}{b:02x}")
    };
    let share = |class: &str, id: u16, pixels: u64| json!({"class": class, "class_id": id, "colour": hex(id), "pixels": pixels, "share": pixels as f64 / 14.0});
    assert_eq!(
        info["masks"],
        json!([{"source": "seg", "width": 4, "height": 4, "labelled_pixels": 14, "ignored_pixels": 2,
                "classes": [share("road", 0, 6), share("car", 1, 4), share("sky", 2, 4)]}])
    );
    let runs = info["segmentation_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!((run["run"].as_str(), run["model_version"].as_str()), (Some("unet"), Some("3")));
    assert_eq!((run["mask_source"].as_str(), run["pixels"].as_u64()), (Some("seg"), Some(14)));
    let close = |v: &Value, expected: f64| assert!((v.as_f64().unwrap() - expected).abs() < 1e-12, "{v} vs {expected}");
    close(&run["pixel_accuracy"], 13.0 / 14.0);
    close(&run["mean_iou"], (5.0 / 6.0 + 0.8 + 1.0) / 3.0);
    assert_eq!((run["right"]["pixels"].as_u64(), run["wrong"]["pixels"].as_u64()), (Some(13), Some(1)));
    assert_eq!((run["right"]["colour"].as_str(), run["wrong"]["colour"].as_str()), (Some("#2ea043"), Some("#dc2626")));
    let classes = run["classes"].as_array().unwrap();
    let names: Vec<&str> = classes.iter().map(|c| c["class"].as_str().unwrap()).collect();
    assert_eq!(names, ["road", "car", "sky"]);
    for (class, iou, predicted) in [(&classes[0], 5.0 / 6.0, 5), (&classes[1], 0.8, 5), (&classes[2], 1.0, 4)] {
        close(&class["iou"], iou);
        assert_eq!(class["predicted"], predicted, "{class}");
    }
    // An image without masks has none, and no run predicted it.
    let (_, _, body) = send(&router, get("/images/c.png/info")).await;
    let info = json(&body);
    assert_eq!((info["masks"].clone(), info["segmentation_runs"].clone()), (json!([]), json!([])));
}

#[tokio::test]
async fn a_mask_layer_is_a_png_in_the_class_colours() {
    let fx = Fixture::segmented().await;
    let router = fx.router();
    let (status, headers, truth) = send(&router, get("/images/a.png/mask?source=seg")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&truth));
    assert_eq!(headers["content-type"], "image/png");
    let decoded = image::load_from_memory(&truth).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (4, 4), "the image's size");
    // Sky, road and car where the ground truth has them; its ignored pixels transparent.
    assert_eq!(rgba_at(&truth, 0, 0), class_rgba(2));
    assert_eq!(rgba_at(&truth, 1, 2), class_rgba(0));
    assert_eq!(rgba_at(&truth, 2, 1), class_rgba(1));
    assert_eq!(rgba_at(&truth, 0, 3)[3], 0);
    assert_eq!(rgba_at(&truth, 2, 3), class_rgba(0));
    // Revalidated by ETag.
    let etag = headers["etag"].clone();
    let request = axum::http::Request::get("/images/a.png/mask?source=seg")
        .header("if-none-match", etag.clone())
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(send(&router, request).await.0, StatusCode::NOT_MODIFIED);

    // The prediction: car at (1, 2), a class where the truth is ignored.
    let (status, headers, predicted) = send(&router, get("/images/a.png/mask?run=unet")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&predicted));
    assert_ne!(headers["etag"], etag, "each layer has its own tag");
    assert_eq!(rgba_at(&predicted, 1, 2), class_rgba(1));
    assert_eq!(rgba_at(&predicted, 0, 3), class_rgba(0));
    assert_eq!(rgba_at(&predicted, 0, 0), class_rgba(2));
    let (_, _, same) = send(&router, get("/images/a.png/mask?run=unet&view=prediction")).await;
    assert_eq!(same, predicted);

    // Where it disagrees with the truth: red at (1, 2), green where right, ignored transparent.
    let (status, _, errors) = send(&router, get("/images/a.png/mask?run=unet&view=errors")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&errors));
    assert_eq!(rgba_at(&errors, 1, 2), [220, 38, 38, 255]);
    assert_eq!(rgba_at(&errors, 0, 0), [46, 160, 67, 255]);
    assert_eq!(rgba_at(&errors, 2, 2), [46, 160, 67, 255]);
    assert_eq!(rgba_at(&errors, 1, 3)[3], 0);
    let (_, _, body) = send(&router, get("/images/b.png/mask?run=unet&view=errors")).await;
    let b = image::load_from_memory(&body).unwrap().to_rgba8();
    assert_eq!(b.dimensions(), (8, 5));
    assert!(b.pixels().all(|p| p.0 == [46, 160, 67, 255]), "b.png is right everywhere");

    // What is not there is a 404; a request that does not say which layer, a 400.
    for missing in [
        "/images/a.png/mask?source=nope",
        "/images/a.png/mask?run=nope",
        "/images/a.png/mask?run=nope&view=errors",
        "/images/c.png/mask?source=seg",
        "/images/c.png/mask?run=unet",
        "/images/c.png/mask?run=unet&view=errors",
        "/images/nope.png/mask?source=seg",
        "/images/a.png/mask?source=seg&dataset=nope",
    ] {
        let (status, headers, body) = send(&router, get(missing)).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::NOT_FOUND, "not_found"), "{missing}");
        assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
        assert!(!String::from_utf8_lossy(&body).contains(fx.root().to_str().unwrap()), "no path: {missing}");
    }
    let (_, _, body) = send(&router, get("/images/c.png/mask?run=unet")).await;
    assert_eq!(json(&body)["error"]["message"], "run unet has no prediction for image \"c.png\"");
    let (_, _, body) = send(&router, get("/images/a.png/mask?source=nope")).await;
    assert_eq!(json(&body)["error"]["message"], "dataset scenes has no mask set \"nope\" (mask sets: seg)");
    for bad in [
        "/images/a.png/mask",
        "/images/a.png/mask?source=seg&run=unet",
        "/images/a.png/mask?run=unet&view=diff",
        "/images/a.png/mask?source=seg&view=errors",
    ] {
        let (status, _, body) = send(&router, get(bad)).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::BAD_REQUEST, "bad_request"), "{bad}");
    }
}

#[tokio::test]
async fn a_segmentation_run_is_tested_and_reported_with_miou() {
    let fx = Fixture::segmented().await;
    let router = fx.router();
    let slice = json!({"name": "scenes", "query": "SELECT image_id FROM images WHERE image_id IN ('a.png', 'b.png')",
                       "min_miou": 0.95, "min_samples": 1});
    let (status, _, body) = send(&router, post_json("/slices", slice)).await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    send(&router, post_json("/slices/scenes/freeze", json!({}))).await;
    // a.png and b.png summed: road 37 of 38 right, one road pixel taken for car (car 4 / 5), sky all right.
    let miou = (37.0 / 38.0 + 0.8 + 1.0) / 3.0;
    let (status, _, body) = send(&router, get("/runs/unet/test")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let verdicts = json(&body);
    assert_eq!((verdicts["passed"].clone(), verdicts["failing"].clone()), (json!(false), json!(["scenes"])));
    let slice = &verdicts["slices"][0];
    assert_eq!(slice["slice"], "scenes");
    assert!((slice["miou"].as_f64().unwrap() - miou).abs() < 1e-12, "{slice}");
    assert!(slice["map"].is_null(), "mAP is for detection runs");
    let (status, _, body) = send(&router, get("/runs/unet/report?format=json")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let report = json(&body);
    let scored = report["slices"].as_array().unwrap().iter().find(|s| s["slice"] == "scenes").expect("slice scored");
    let m = &scored["segmentation"];
    assert_eq!(m["images"], 2);
    assert!((m["scores"]["mean_iou"].as_f64().unwrap() - miou).abs() < 1e-12, "{m}");
    assert!((m["scores"]["pixel_accuracy"].as_f64().unwrap() - 53.0 / 54.0).abs() < 1e-12, "{m}");
    assert_eq!(m["confusion"], json!([[37, 1, 0], [0, 4, 0], [0, 0, 12]]));
}

/// A ZIP archive of `(path in the archive, bytes)` entries, deflated.
fn zip_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

#[tokio::test]
async fn a_folder_of_masks_travels_as_a_zip_archive() {
    let fx = Fixture::segmented().await;
    let router = fx.router();
    let pred = fx.dir.path().join("src/pred");
    let folder: Vec<(String, Vec<u8>)> =
        ["a.png", "b.png"].iter().map(|n| (format!("pred/{n}"), std::fs::read(pred.join(n)).unwrap())).collect();
    let request = axum::http::Request::post("/runs/unet-zip?model=unet&model_version=4")
        .header("content-type", "application/zip")
        .header("content-disposition", "attachment; filename=\"pred\"")
        .body(axum::body::Body::from(zip_of(&folder)))
        .unwrap();
    let (status, _, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    assert_eq!((json(&body)["task"].clone(), json(&body)["source"].clone()), (json!("segmentation"), json!("pred")));
    // Scored as the same folder uploaded from disk (the fixture's run unet).
    let miou = |run: &str| {
        let router = router.clone();
        let uri = format!("/runs/{run}/report?format=json");
        async move {
            let (status, _, body) = send(&router, get(&uri)).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            json(&body)["overall"]["segmentation"]["scores"]["mean_iou"].as_f64().unwrap()
        }
    };
    assert_eq!(miou("unet-zip").await, miou("unet").await);

    // Refused with what and where, nothing written: a mask of the wrong size (named by its
    // path in the archive), an entry that would land outside the folder, a file that is
    // not an archive.
    let runs = || std::fs::read_dir(fx.root().join("runs")).unwrap().count();
    let before = runs();
    let mut wrong = folder.clone();
    wrong[1].1 = std::fs::read(pred.join("a.png")).unwrap();
    let refusals = [
        (
            zip_of(&wrong),
            "predictions.zip/pred: predicted masks rejected, nothing was written:\n  - b.png: the mask is 4×4",
        ),
        (zip_of(&[("../b.png".to_string(), folder[1].1.clone())]), "\"../b.png\" points outside the archive's folder"),
        (b"a.png,b.png".to_vec(), "not a readable ZIP archive"),
    ];
    for (body, said) in refusals {
        let (status, _, body) = send(&router, post("/runs/bad?model=m&model_version=1", "application/zip", body)).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"));
        let message = json(&body)["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(said), "{said}: {message}");
        assert!(
            !message.contains("/tmp") && !message.contains("slicetest-unzip"),
            "a temporary path leaked: {message}"
        );
    }
    assert_eq!(runs(), before, "a refused upload leaves nothing behind");
}

#[tokio::test]
async fn sql_names_the_dataset_of_its_image_ids() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let create = json!({"name": "cats", "query": "SELECT image_id FROM images WHERE label = 'cat'"});
    assert_eq!(send(&router, post_json("/slices", create)).await.0, StatusCode::CREATED);
    assert_eq!(send(&router, post_json("/slices/cats/freeze", json!({}))).await.0, StatusCode::CREATED);
    let cases = [
        ("SELECT image_id FROM images", Some("photos")),
        ("SELECT image_id FROM street.images", Some("street")),
        ("SELECT image_id FROM \"street\".images -- a comment: FROM images", Some("street")),
        ("SELECT image_id FROM slicetest.street.images", Some("street")),
        ("WITH s AS (SELECT image_id FROM street.images) SELECT image_id FROM s", Some("street")),
        ("SELECT image_id FROM street.images WHERE image_id IN (SELECT image_id FROM street.images)", Some("street")),
        ("SELECT 'a.png' AS image_id", Some("photos")),
        ("SELECT * FROM slice('cats')", Some("photos")),
        ("SELECT image_id FROM text_search('a cat', 3)", Some("photos")),
        // Two datasets: which one an id is of cannot be said.
        ("SELECT s.image_id FROM images p, street.images s", None),
        ("SELECT image_id FROM images UNION ALL SELECT image_id FROM street.images", None),
        ("SELECT image_id FROM slice('cats') JOIN street.images USING (image_id)", None),
        ("SELECT image_id FROM images WHERE image_id IN (SELECT image_id FROM street.images)", None),
    ];
    for (sql, dataset) in cases {
        let (status, headers, body) = send(&router, post_json("/sql", json!({"sql": sql, "limit": 5}))).await;
        assert_eq!(status, StatusCode::OK, "{sql}: {}", String::from_utf8_lossy(&body));
        let got = headers.get("slicetest-dataset").map(|v| v.to_str().unwrap());
        assert_eq!(got, dataset, "{sql}");
    }
    // Every format says it.
    let (_, headers, _) =
        send(&router, post("/sql?format=csv", "text/plain", "SELECT image_id FROM street.images")).await;
    assert_eq!(headers["slicetest-dataset"], "street");
}

#[tokio::test]
async fn sql_reads_unqualified_names_in_the_dataset_asked_for() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let count = |body: &[u8]| serde_json::from_slice::<Value>(body).unwrap()[0]["n"].as_i64().unwrap();
    let sql = "SELECT count(*) AS n FROM images";
    let (_, _, photos) = send(&router, post_json("/sql?format=json", json!({"sql": sql}))).await;
    let (status, headers, street) =
        send(&router, post_json("/sql?format=json", json!({"sql": sql, "dataset": "street"}))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&street));
    let (_, _, qualified) =
        send(&router, post_json("/sql?format=json", json!({"sql": "SELECT count(*) AS n FROM street.images"}))).await;
    assert_eq!(count(&street), count(&qualified));
    assert_ne!(count(&street), count(&photos), "the fixture's datasets differ in size");
    assert_eq!(headers["slicetest-dataset"], "street");
    // As a query parameter, in a summary, and a qualified name still reads its own dataset.
    let (_, headers, _) = send(&router, post("/sql?dataset=street", "text/plain", "SELECT image_id FROM images")).await;
    assert_eq!(headers["slicetest-dataset"], "street");
    let (_, headers, _) =
        send(&router, post_json("/sql", json!({"sql": "SELECT image_id FROM photos.images", "dataset": "street"})))
            .await;
    assert_eq!(headers["slicetest-dataset"], "photos");
    let (status, _, summary) =
        send(&router, post_json("/sql", json!({"sql": sql, "dataset": "street", "summary": true}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&summary).unwrap()["rows"], 1);
    // An unknown dataset is named.
    let (status, _, body) = send(&router, post_json("/sql", json!({"sql": sql, "dataset": "nope"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("nope"));
}

/// A request with `headers` (name, value) besides the method, path and body.
fn with_headers(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<axum::body::Body>,
) -> axum::http::Request<axum::body::Body> {
    let mut request = axum::http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body.into()).unwrap()
}

#[tokio::test]
async fn writes_take_only_json_bodies_so_a_page_cannot_send_one_without_asking() {
    let fx = Fixture::new().await;
    for config in [ServerConfig::default(), ServerConfig { token: Some("s3cret".into()), ..ServerConfig::default() }] {
        let router = fx.router_with(&config);
        let auth = ("authorization", "Bearer s3cret");
        // What a no-cors fetch or a form can send without a preflight: text/plain, a form,
        // or no Content-Type at all.
        for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
            let mut headers = vec![auth];
            headers.extend(content_type.map(|c| ("content-type", c)));
            for (uri, body) in [
                ("/datasets/street/embed", "{}".to_string()),
                ("/slices/tops/freeze", "{\"holdout\": 0.5}".to_string()),
                ("/slices", json!({"name": "s", "query": "SELECT image_id FROM images"}).to_string()),
            ] {
                let (status, _, answer) = send(&router, with_headers("POST", uri, &headers, body)).await;
                assert_eq!(
                    (status, error_code(&answer).as_str()),
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
                    "{uri} with {content_type:?}: {}",
                    String::from_utf8_lossy(&answer)
                );
                let message = json(&answer)["error"]["message"].as_str().unwrap().to_string();
                assert!(message.contains("application/json"), "{message}");
            }
        }
        assert_eq!(send(&router, get("/jobs")).await.2, b"[]", "no job was started");
        assert!(fx.engine().slices().unwrap().is_empty(), "no slice was written");
        // Prediction uploads keep their table types; text/plain is not one of them.
        let (status, _, _) = send(
            &router,
            with_headers(
                "POST",
                "/runs/r?model=m&model_version=1",
                &[auth, ("content-type", "text/plain")],
                PREDICTIONS_CSV,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    // An empty body needs no type: `curl -X POST …/embed` starts a job with the defaults.
    let router = fx.router_with_tiny_clip();
    let (status, _, body) = send(&router, with_headers("POST", "/datasets/photos/embed", &[], "")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&body));
    wait_for_job(&router, json(&body)["id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn a_write_from_another_sites_page_is_refused_and_a_loopback_server_answers_only_its_own_names() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let slice = |name: &str| json!({"name": name, "query": "SELECT image_id FROM images"}).to_string();
    let json_type = ("content-type", "application/json");
    let host = ("host", "127.0.0.1:7878");
    for origin in
        ["http://evil.example", "http://evil.example:7878", "http://127.0.0.1:9999", "http://127.0.0.1", "null"]
    {
        let request = with_headers("POST", "/slices", &[json_type, host, ("origin", origin)], slice("s"));
        let (status, _, body) = send(&router, request).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::FORBIDDEN, "cross_origin"), "{origin}");
        let request = with_headers("POST", "/sql", &[host, ("origin", origin)], "SELECT 1");
        assert_eq!(send(&router, request).await.0, StatusCode::FORBIDDEN, "{origin}: /sql too");
    }
    let request = with_headers("POST", "/datasets/street/embed", &[host, ("origin", "http://evil.example")], "");
    assert_eq!(send(&router, request).await.0, StatusCode::FORBIDDEN);
    assert_eq!(send(&router, get("/jobs")).await.2, b"[]", "no job was started");
    assert!(fx.engine().slices().unwrap().is_empty(), "no slice was written");
    // Reads from anywhere are answered (a page cannot read them without CORS).
    let request = with_headers("GET", "/health", &[host, ("origin", "http://evil.example")], "");
    assert_eq!(send(&router, request).await.0, StatusCode::OK);
    // The web UI is same-origin; clients that are not browsers send no Origin.
    for (i, (origin, host)) in [
        (Some("http://127.0.0.1:7878"), "127.0.0.1:7878"),
        (Some("http://LOCALHOST:7878"), "localhost:7878"),
        (Some("http://[::1]:7878"), "[::1]:7878"),
        (Some("http://localhost"), "localhost"),
        (None, "127.0.0.1:7878"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut headers = vec![json_type, ("host", host)];
        headers.extend(origin.map(|o| ("origin", o)));
        let (status, _, body) = send(&router, with_headers("POST", "/slices", &headers, slice(&format!("s{i}")))).await;
        assert_eq!(status, StatusCode::CREATED, "{origin:?} {host}: {}", String::from_utf8_lossy(&body));
    }

    // DNS rebinding: a page's own name resolved to 127.0.0.1 reads nothing, writes nothing.
    for bad in ["evil.example:7878", "evil.example", "0.0.0.0:7878", "localhost.evil.example", "127.0.0.1.nip.io:7878"]
    {
        let (status, _, body) = send(&router, with_headers("GET", "/health", &[("host", bad)], "")).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::FORBIDDEN, "forbidden_host"), "{bad}");
        let request = with_headers("POST", "/sql", &[("host", bad), ("origin", &format!("http://{bad}"))], "SELECT 1");
        assert_eq!(send(&router, request).await.0, StatusCode::FORBIDDEN, "{bad}");
    }
    for good in ["localhost:7878", "LOCALHOST", "127.0.0.1", "127.0.0.1:1", "[::1]:7878", "[::1]", "localhost."] {
        let (status, _, _) = send(&router, with_headers("GET", "/health", &[("host", good)], "")).await;
        assert_eq!(status, StatusCode::OK, "{good}");
    }
    // Behind a reverse proxy that passes its public name through: that name (and only it)
    // is answered too, and its pages write same-origin.
    let proxied = ServerConfig { allowed_hosts: vec!["Slices.Example.com".into()], ..ServerConfig::default() };
    let router = fx.router_with(&proxied);
    for good in ["slices.example.com", "SLICES.example.com:443", "slices.example.com.", "127.0.0.1:7878"] {
        let (status, _, _) = send(&router, with_headers("GET", "/health", &[("host", good)], "")).await;
        assert_eq!(status, StatusCode::OK, "{good}");
    }
    let headers = [json_type, ("host", "slices.example.com"), ("origin", "https://slices.example.com")];
    let (status, _, body) = send(&router, with_headers("POST", "/slices", &headers, slice("proxied"))).await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    for bad in ["evil.example", "example.com", "slices.example.com.evil.example", "x.slices.example.com"] {
        let (status, _, body) = send(&router, with_headers("GET", "/health", &[("host", bad)], "")).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::FORBIDDEN, "forbidden_host"), "{bad}");
        assert!(String::from_utf8_lossy(&body).contains("--allowed-host"), "{bad}");
    }
    for bad in ["https://slices.example.com", "slices.example.com:443", "", "a b"] {
        let config = ServerConfig { allowed_hosts: vec![bad.into()], ..ServerConfig::default() };
        assert!(config.check().unwrap_err().contains("--allowed-host"), "{bad}");
    }

    // A server on a public address (which needs a token) is reached by its names.
    let public = ServerConfig { host: "0.0.0.0".parse().unwrap(), token: Some("t".into()), ..ServerConfig::default() };
    let router = fx.router_with(&public);
    let (status, _, _) = send(&router, with_headers("GET", "/health", &[("host", "ml-box.example:7878")], "")).await;
    assert_eq!(status, StatusCode::OK);
    let request =
        with_headers("POST", "/sql", &[("host", "ml-box.example:7878"), ("origin", "http://evil.example")], "SELECT 1");
    assert_eq!(send(&router, request).await.0, StatusCode::FORBIDDEN, "Origin is checked on every server");
}

#[tokio::test]
async fn body_errors_answer_the_same_status_on_every_write() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let huge = json!({"name": "s", "query": format!("SELECT image_id FROM images -- {}", "x".repeat(2 << 20))});
    for uri in ["/slices", "/slices/s/freeze", "/datasets/street/embed"] {
        let (status, _, body) = send(&router, post_json(uri, huge.clone())).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"), "{uri}");
        let (status, _, body) = send(&router, post(uri, "text/plain", "{}")).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{uri}: {}", String::from_utf8_lossy(&body));
        let (status, _, body) = send(&router, post(uri, "application/json", "{not json")).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::BAD_REQUEST, "bad_request"), "{uri}");
    }
    let (status, _, body) = send(&router, post("/slices", "application/json", "")).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::BAD_REQUEST, "bad_request"));
    assert!(json(&body)["error"]["message"].as_str().unwrap().contains("\"name\", \"query\""));
    // A leading comment does not hide a slice statement from the read-only check.
    for sql in ["/* cleanup */ DROP SLICE x", "-- cleanup\nDROP SLICE x", "/* a */ /* b */ FREEZE SLICE x"] {
        let (status, _, body) = send(&router, post("/sql", "text/plain", sql)).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::FORBIDDEN, "read_only"), "{sql}");
    }
    // A streamed result says how long it may still take before the time limit cuts it.
    let router = fx.router_with_limits(|l| l.query_timeout = std::time::Duration::from_secs(30));
    let (status, headers, _) = send(&router, post("/sql?format=arrow", "text/plain", "SELECT 1")).await;
    assert_eq!(status, StatusCode::OK);
    let left: u64 = headers["slicetest-deadline-ms"].to_str().unwrap().parse().unwrap();
    assert!(left > 20_000 && left <= 30_000, "{left}");
}

#[tokio::test]
async fn predictions_that_are_not_utf8_are_the_clients_mistake() {
    let fx = Fixture::new().await;
    let router = fx.router();
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02".to_vec();
    let bad_header = b"\xff\xfeimage_id,predicted\ntrain/cat/c1.png,cat\n".to_vec();
    for body in [png, bad_header] {
        let (status, _, answer) =
            send(&router, post("/runs/bin?model=m&model_version=1&allow_partial=true", "text/csv", body)).await;
        assert_eq!(
            (status, error_code(&answer).as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        let message = json(&answer)["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains("predictions") && message.contains("line 1 (the header) is not UTF-8"), "{message}");
        assert!(!message.contains("/tmp"), "the temporary path leaked: {message}");
    }
}

#[tokio::test]
async fn a_test_against_a_baseline_says_why_a_segmentation_slice_failed() {
    use slicetest_test_support::write_label_map;
    let fx = Fixture::segmented().await;
    let router = fx.router();
    // No threshold: the slice can only fail by regressing.
    let slice = json!({"name": "scenes", "query": "SELECT image_id FROM images WHERE image_id IN ('a.png', 'b.png')",
                       "min_samples": 1});
    let (status, _, body) = send(&router, post_json("/slices", slice)).await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    send(&router, post_json("/slices/scenes/freeze", json!({}))).await;
    // Run `flat`: road everywhere, worse than `unet` on both images.
    let pred = fx.dir.path().join("src/flat");
    write_label_map(&pred.join("a.png"), 4, 4, &[0; 16]);
    write_label_map(&pred.join("b.png"), 8, 5, &[0; 40]);
    let run = slicetest_engine::UploadOptions {
        run: "flat".into(),
        model: "flat".into(),
        model_version: "1".into(),
        dataset: None,
        allow_partial: false,
        instances: false,
        provenance: Default::default(),
        score_threshold: None,
    };
    fx.engine().upload_segmentation_run(&pred, &run, None).expect("uploads the run");

    let (status, _, body) = send(&router, get("/runs/flat/test?baseline=unet")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let verdicts = json(&body);
    assert_eq!(verdicts["passed"], false);
    assert!(verdicts["failing"].as_array().unwrap().contains(&json!("scenes")), "{verdicts}");
    let scenes = verdicts["slices"].as_array().unwrap().iter().find(|s| s["slice"] == "scenes").unwrap();
    assert_eq!(scenes["failed"], true, "{scenes}");
    let regression = &scenes["regression"];
    assert_eq!(
        (regression["metric"].clone(), regression["significant"].clone()),
        (json!("mIoU"), json!(true)),
        "{scenes}"
    );
    assert!(regression["delta"].as_f64().unwrap() < 0.0 && regression["p_value"].as_f64().unwrap() < 0.05, "{scenes}");
    let (_, _, metrics) = send(&router, get("/runs/flat/metrics?baseline=unet")).await;
    let scored = json(&metrics)["slices"].as_array().unwrap().iter().find(|s| s["slice"] == "scenes").unwrap().clone();
    assert_eq!(regression["delta"], scored["segmentation_regression"]["delta"], "the same numbers as /metrics");
    assert_eq!(regression["baseline"], scored["segmentation_regression"]["baseline_miou"]);
    // The whole run regressed too: `(all)` fails, with its reason, as `slicetest test` says.
    let overall = &verdicts["overall"];
    assert_eq!((overall["slice"].clone(), overall["failed"].clone()), (json!("(all)"), json!(true)), "{verdicts}");
    assert!(verdicts["failing"].as_array().unwrap().contains(&json!("(all)")), "{verdicts}");
    assert!(overall["reasons"][0].as_str().unwrap().contains("significant regression"), "{overall}");
    let reasons = scenes["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{scenes}");
    let reason = reasons[0].as_str().unwrap();
    assert!(
        reason.starts_with("mIoU -0.") && reason.contains("vs baseline") && reason.contains("significant regression"),
        "{reason}"
    );
    // The baseline itself, against itself: no failure, no reasons.
    let (_, _, body) = send(&router, get("/runs/unet/test?baseline=unet")).await;
    let same = json(&body);
    assert_eq!(same["passed"], true, "{same}");
    for slice in same["slices"].as_array().unwrap() {
        assert_eq!((slice["failed"].clone(), slice["reasons"].clone()), (json!(false), json!([])), "{slice}");
        assert_eq!(slice["regression"]["significant"], false, "{slice}");
    }
}
