//! Fashion-MNIST's IDX files for the examples, read without new dependencies (gzip from
//! the system). Included by `classifier_bytes` and `detector_bytes` with `#[path]`.

use std::io::Read;
use std::path::Path;

/// The payload of IDX file `name` in `dir` (gzipped or not), after its header.
pub fn read_idx(dir: &Path, name: &str) -> Vec<u8> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    let bytes = std::fs::read(&plain).unwrap_or_else(|_| {
        let compressed = std::fs::read(&gz).unwrap_or_else(|e| panic!("{}: {e}", gz.display()));
        gunzip(&compressed)
    });
    // Header: magic (4 bytes, the last one the number of dimensions), then the sizes.
    let dims = bytes[3] as usize;
    bytes[4 + 4 * dims..].to_vec()
}

/// Decompresses with the system's gzip (examples keep the crate's dependencies as they are).
fn gunzip(compressed: &[u8]) -> Vec<u8> {
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip on PATH");
    let mut stdin = child.stdin.take().expect("piped");
    let input = compressed.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let mut out = Vec::new();
    child.stdout.take().expect("piped").read_to_end(&mut out).expect("gzip output");
    writer.join().expect("writer").expect("gzip input");
    assert!(child.wait().expect("gzip exit").success(), "gzip failed");
    out
}
