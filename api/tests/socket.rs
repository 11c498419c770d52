//! Tests over a real loopback socket: a streamed (chunked) large result, concurrent
//! uploads, and graceful shutdown.

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
    let mut stream = TcpStream::connect(addr).expect("connects");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
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
