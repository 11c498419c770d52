//! Downloading a checkpoint by Hugging Face id, against a local stand-in for the hub that
//! speaks the protocol hf-hub uses (`GET /<id>/resolve/<revision>/<file>` with a `Range`
//! header; `etag`, `x-repo-commit` and `content-range` in the answer). The files served
//! are the tiny CLIP fixture, so the downloaded snapshot must load and embed.

#![cfg(feature = "hub")]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

const TINY_CLIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-clip");
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Serves the tiny CLIP as repo `org/tiny-clip` at revision main; anything else is 404.
fn fake_hub() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut start = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some(range) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    start = range.trim().split('-').next().unwrap().parse().unwrap();
                }
            }
            let file = path.strip_prefix("/org/tiny-clip/resolve/main/").map(|f| Path::new(TINY_CLIP).join(f));
            let Some(body) = file.and_then(|f| std::fs::read(f).ok()) else {
                let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                continue;
            };
            let part = &body[start.min(body.len())..];
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\netag: \"{:x}\"\r\nx-repo-commit: {COMMIT}\r\n\
                 content-range: bytes {start}-{}/{}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len(),
                body.len().saturating_sub(1),
                body.len(),
                part.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(part);
        }
    });
    format!("http://{address}")
}

#[test]
fn a_model_id_is_downloaded_into_the_hf_cache_and_loads() {
    let endpoint = fake_hub();
    let cache = tempfile::tempdir().unwrap();
    let dir = slicetest_embed::resolve::download_model(&endpoint, cache.path(), "org/tiny-clip", false).unwrap();
    assert_eq!(dir, cache.path().join("models--org--tiny-clip/snapshots").join(COMMIT));
    for file in slicetest_embed::resolve::MODEL_FILES {
        let want = std::fs::read(Path::new(TINY_CLIP).join(file)).unwrap();
        assert_eq!(std::fs::read(dir.join(file)).unwrap(), want, "{file}");
    }
    let clip = slicetest_embed::Clip::load(&dir, &candle_core::Device::Cpu, candle_core::DType::F32).unwrap();
    assert_eq!(clip.embed_texts(&["a photo of a cat"]).unwrap()[0].len(), 24);
    // The same fingerprint as the fixture: the bytes are the model.
    let fixture = slicetest_embed::fingerprint(Path::new(TINY_CLIP)).unwrap();
    assert_eq!(slicetest_embed::fingerprint(&dir).unwrap(), fixture);
}

#[test]
fn a_missing_model_says_what_the_hub_answered() {
    let endpoint = fake_hub();
    let cache = tempfile::tempdir().unwrap();
    let err = slicetest_embed::resolve::download_model(&endpoint, cache.path(), "org/nothing", false).unwrap_err();
    assert!(err.contains("org/nothing") && err.contains(&endpoint) && err.contains("404"), "{err}");
}
