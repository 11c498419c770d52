//! Finding a CLIP checkpoint: a directory given by the user, else the Hugging Face cache
//! (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`). Downloading from the hub
//! is not built: this crate never opens a network connection.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{EmbedError, Result};

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "openai/clip-vit-base-patch32";

/// The files a checkpoint directory must hold.
pub const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// A checkpoint directory for `model`: the directory itself if `model` is one, else the
/// newest snapshot of the Hugging Face id `model` in the local HF cache.
pub fn resolve_model(model: &str) -> Result<PathBuf> {
    let given = Path::new(model);
    if given.is_dir() {
        return complete(given).map(|()| given.to_path_buf());
    }
    let mut tried = vec![format!("{model} (not a directory)")];
    for cache in hf_caches() {
        let repo = cache.join(format!("models--{}", model.replace('/', "--")));
        match snapshot(&repo) {
            Some(dir) => return Ok(dir),
            None => tried.push(format!("{} (no complete snapshot)", repo.display())),
        }
    }
    Err(EmbedError::Model {
        path: PathBuf::from(model),
        message: format!(
            "no CLIP checkpoint found; tried {}. Pass --model <dir> with {} (e.g. from \
             `huggingface-cli download {model} {}` on a machine with internet)",
            tried.join(", "),
            MODEL_FILES.join(", "),
            MODEL_FILES.join(" ")
        ),
    })
}

fn complete(dir: &Path) -> Result<()> {
    let missing: Vec<&str> = MODEL_FILES.iter().copied().filter(|f| !dir.join(f).is_file()).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(EmbedError::Model { path: dir.to_path_buf(), message: format!("missing {}", missing.join(", ")) })
    }
}

fn hf_caches() -> Vec<PathBuf> {
    let mut caches = Vec::new();
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        caches.push(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("HF_HOME") {
        caches.push(PathBuf::from(dir).join("hub"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        caches.push(PathBuf::from(home).join(".cache/huggingface/hub"));
    }
    caches
}

/// The snapshot `refs/main` points at, else any complete one (newest name last).
fn snapshot(repo: &Path) -> Option<PathBuf> {
    let snapshots = repo.join("snapshots");
    if let Ok(main) = std::fs::read_to_string(repo.join("refs/main")) {
        let dir = snapshots.join(main.trim());
        if complete(&dir).is_ok() {
            return Some(dir);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&snapshots).ok()?.flatten().map(|e| e.path()).collect();
    dirs.sort();
    dirs.into_iter().rev().find(|d| complete(d).is_ok())
}

/// SHA-256 over the config, the tokenizer and the safetensors header (names, shapes,
/// dtypes and offsets of every tensor): cheap to compute for a 600 MB checkpoint, and
/// different for any other model. Weight values are not hashed.
pub fn fingerprint(dir: &Path) -> Result<String> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| EmbedError::Model { path, message: format!("reading: {e}") })
    };
    let mut hash = Sha256::new();
    hash.update(read("config.json")?);
    hash.update(read("tokenizer.json")?);
    let weights = dir.join("model.safetensors");
    let bad = |message: String| EmbedError::Model { path: weights.clone(), message };
    let mut file = std::fs::File::open(&weights).map_err(|e| bad(format!("opening: {e}")))?;
    let mut len = [0u8; 8];
    std::io::Read::read_exact(&mut file, &mut len).map_err(|e| bad(format!("reading the header: {e}")))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(bad(format!("header of {len} bytes: not a safetensors file")));
    }
    let mut header = vec![0u8; len as usize];
    std::io::Read::read_exact(&mut file, &mut header).map_err(|e| bad(format!("reading the header: {e}")))?;
    hash.update(&header);
    Ok(hex::encode(hash.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_model_names_every_place_tried() {
        let err = resolve_model("nobody/no-such-clip").unwrap_err().to_string();
        assert!(err.contains("nobody/no-such-clip (not a directory)"), "{err}");
        assert!(err.contains("models--nobody--no-such-clip"), "{err}");
        assert!(err.contains("--model <dir>"), "{err}");
    }

    #[test]
    fn the_hf_cache_layout_is_found() {
        let cache = std::env::temp_dir().join(format!("slicetest-hf-cache-{}", std::process::id()));
        let repo = cache.join("models--org--tiny");
        let snap = repo.join("snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        for f in MODEL_FILES {
            std::fs::write(snap.join(f), b"{}").unwrap();
        }
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(snapshot(&repo).unwrap(), snap);
        std::fs::remove_dir_all(cache).unwrap();
    }
}
