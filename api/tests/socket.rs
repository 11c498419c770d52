//! Tests over a real loopback socket: a streamed (chunked) large result, concurrent
//! uploads, graceful shutdown, and what a web page of another site can send.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use slicetest_api::{AppState, ServerConfig};

/// A server on a free loopback port; dropping the sender shuts it down.
struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(fx: &Fixture) -> Running {
    let config = ServerConfig { port: 0, ..ServerConfig::default() };
    let (listener, addr) = slicetest_api::bind(&config).await.expect("binds");
    assert!(addr.ip().is_loopback());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new(fx.engine(), &config);
    let task = tokio::spawn(slicetest_api::serve(listener, state, async {
        let _ = stopped.await;
    }));
    Running { addr, stop: Some(stop), task }
}

/// A parsed HTTP/1.1 response.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`), chunked bodies decoded.
fn request(addr: SocketAddr, method: &str, path: &str, content_type: &str, body: &[u8]) -> Reply {
    let headers = format!("Host: {addr}\r\nContent-Type: {content_type}\r\n");
    request_with(addr, method, path, &headers, body)
}

/// [`request`] with the header lines `headers` (each ending in CRLF; `Host` included).
fn request_with(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connects");
    let head =
        format!("{method} {path} HTTP/1.1\r\n{headers}Connection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).expect("a status line").parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (k, v) = trimmed.split_once(':').expect("a header");
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let size = usize::from_str_radix(line.trim(), 16).expect("a chunk size");
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body).unwrap();
    }
    Reply { status, headers, body }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_streams_in_chunks() {
    let fx = Fixture::new().await;
    let server = start(&fx).await;
    let addr = server.addr;
    let reply = tokio::task::spawn_blocking(move || {
        let sql = b"SELECT value FROM generate_series(1, 2000000) ORDER BY value";
        request(addr, "POST", "/sql?format=csv", "text/plain", sql)
    })
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"), "not streamed: {:?}", reply.headers);
    let text = String::from_utf8(reply.body).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2_000_001);
    assert_eq!((lines[1], lines[2_000_000]), ("1", "2000000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_and_queries_all_succeed() {
    let fx = Fixture::new().await;
    let server = start(&fx).await;
    let addr = server.addr;
    let mut handles = Vec::new();
    for i in 0..4 {
        handles.push(tokio::task::spawn_blocking(move || {
            let path = format!("/runs/run{i}?model=m&model_version={i}");
            request(addr, "POST", &path, "text/csv", PREDICTIONS_CSV.as_bytes())
        }));
        handles.push(tokio::task::spawn_blocking(move || {
            request(addr, "POST", "/sql", "text/plain", b"SELECT count(*) AS n FROM images")
        }));
    }
    for handle in handles {
        let reply = handle.await.unwrap();
        assert!(matches!(reply.status, 200 | 201), "{} {}", reply.status, String::from_utf8_lossy(&reply.body));
    }
    let runs = fx.engine().runs().unwrap();
    assert_eq!(runs.iter().map(|r| r.run.as_str()).collect::<Vec<_>>(), ["run0", "run1", "run2", "run3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_server_finish() {
    let fx = Fixture::new().await;
    let mut server = start(&fx).await;
    let addr = server.addr;
    let reply = tokio::task::spawn_blocking(move || request(addr, "GET", "/health", "text/plain", b"")).await.unwrap();
    assert_eq!(reply.status, 200);
    drop(server.stop.take());
    let finished = tokio::time::timeout(std::time::Duration::from_secs(10), server.task).await;
    finished.expect("stops within 10 s").unwrap().expect("serves without error");
    assert!(TcpStream::connect(addr).is_err(), "still listening after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_site_can_neither_write_nor_read_through_dns_rebinding() {
    let fx = Fixture::new().await;
    let server = start(&fx).await;
    let addr = server.addr;
    let replies = tokio::task::spawn_blocking(move || {
        let port = addr.port();
        // A no-cors fetch from http://evil.example: text/plain, no preflight.
        let csrf = format!("Host: {addr}\r\nOrigin: http://evil.example\r\nContent-Type: text/plain\r\n");
        let plain = format!("Host: {addr}\r\nContent-Type: text/plain\r\n");
        // After rebinding evil.example to 127.0.0.1, the page is same-origin with its Host.
        let rebound = format!("Host: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\n");
        let ui =
            format!("Host: localhost:{port}\r\nOrigin: http://localhost:{port}\r\nContent-Type: application/json\r\n");
        [
            request_with(addr, "POST", "/datasets/street/embed", &csrf, b"{}"),
            request_with(addr, "POST", "/datasets/street/embed", &plain, b"{}"),
            request_with(addr, "POST", "/sql?format=json", &rebound, b"SELECT image_id FROM images"),
            request_with(addr, "GET", "/images/train%2Fcat%2Fc1.png", &rebound, b""),
            request_with(addr, "POST", "/sql?format=json", &ui, br#"{"sql": "SELECT 1 AS one"}"#),
            request_with(addr, "GET", "/jobs", &format!("Host: [::1]:{port}\r\n"), b""),
        ]
    })
    .await
    .unwrap();
    let answer = |r: &Reply| (r.status, json(&r.body)["error"]["code"].as_str().unwrap_or("").to_string());
    assert_eq!(answer(&replies[0]), (403, "cross_origin".into()));
    assert_eq!(answer(&replies[1]), (415, "unsupported_media_type".into()));
    assert_eq!(answer(&replies[2]), (403, "forbidden_host".into()));
    assert_eq!(answer(&replies[3]), (403, "forbidden_host".into()));
    assert_eq!((replies[4].status, json(&replies[4].body)), (200, serde_json::json!([{"one": 1}])), "the web UI");
    assert_eq!((replies[5].status, replies[5].body.as_slice()), (200, b"[]".as_slice()), "no job was started");
}
