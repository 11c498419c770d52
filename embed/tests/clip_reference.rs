//! slicetest's CLIP against Hugging Face transformers, on a tiny random-weight CLIP and
//! real photos. The fixtures and the script that makes them are in `tests/fixtures/`
//! (see its README): token ids, `CLIPImageProcessor` pixels, pooled outputs, features and
//! normalised embeddings, all computed by transformers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use slicetest_embed::{Clip, ClipModel, ClipPreprocessor, CpuKernel};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn vector(reference: &HashMap<String, Tensor>, key: &str) -> Vec<f32> {
    reference[key].flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn clip() -> Clip {
    Clip::load(&fixtures().join("tiny-clip"), &Device::Cpu, DType::F32).unwrap()
}

fn weights(dtype: DType) -> VarBuilder<'static> {
    let weights = fixtures().join("tiny-clip/model.safetensors");
    // SAFETY: a test fixture, never written while mapped.
    unsafe { VarBuilder::from_mmaped_safetensors(&[weights], dtype, &Device::Cpu) }.unwrap()
}

/// The model on each path: the fused CPU kernels (what `Clip::load` picks for f32 on the
/// CPU: AVX-512 where the CPU has it, else the `gemm` crate, which AVX-512 machines also
/// run here), and candle's ops (what GPUs run).
fn clips() -> Vec<(String, Clip)> {
    let default = clip();
    let kernel = default.model.cpu_kernel().expect("f32 on the CPU runs the fused path");
    let mut candle = clip();
    candle.model = ClipModel::with_candle_ops(weights(DType::F32), candle.model.config()).unwrap();
    let mut paths = vec![(format!("fused {}", kernel.name()), default), ("candle".to_string(), candle)];
    if kernel != CpuKernel::Gemm {
        let mut gemm = clip();
        gemm.model = ClipModel::with_cpu_kernel(weights(DType::F32), gemm.model.config(), CpuKernel::Gemm).unwrap();
        paths.push(("fused gemm".to_string(), gemm));
    }
    paths
}

/// (cosine similarity, max |a − b|).
fn compare(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let max = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
    (dot / (norm(a) * norm(b)), max)
}

fn assert_close(what: &str, ours: &[f32], theirs: &[f32]) {
    let (cosine, max) = compare(ours, theirs);
    assert!(cosine >= 0.99999 && max <= 1e-4, "{what}: cosine {cosine}, max abs diff {max}");
}

#[derive(Deserialize)]
struct TokenCase {
    text: String,
    ids_truncated_77: Vec<u32>,
}

#[test]
fn token_ids_equal_hf_clip_tokenizer() {
    let clip = clip();
    let cases: Vec<TokenCase> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokens.json")).unwrap()).unwrap();
    assert!(cases.len() >= 12);
    for case in &cases {
        assert_eq!(clip.tokenizer.encode(&case.text).unwrap(), case.ids_truncated_77, "{:?}", case.text);
    }
    let long = cases.iter().find(|c| c.ids_truncated_77.len() == 77).expect("a case longer than the context");
    assert_eq!(*long.ids_truncated_77.last().unwrap(), 49407, "truncation keeps the end-of-text token");
}

/// Channel-first pixels subsampled as the fixture stores them: [:, ::4, ::4].
fn subsampled(pixels: &[f32], side: usize) -> Vec<f32> {
    let mut out = Vec::new();
    for c in 0..3 {
        for y in (0..side).step_by(4) {
            for x in (0..side).step_by(4) {
                out.push(pixels[(c * side + y) * side + x]);
            }
        }
    }
    out
}

fn photo(name: &str) -> image::DynamicImage {
    image::open(fixtures().join("photos").join(name)).unwrap()
}

#[test]
fn preprocessed_pixels_equal_clip_image_processor() {
    let reference = reference();
    let pre = ClipPreprocessor::openai(224);
    for name in ["coins.png", "microaneurysms.png", "dog.jpg", "scream.jpg"] {
        let ours = subsampled(&pre.pixels(&photo(name)), 224);
        let theirs = vector(&reference, &format!("pixels/{name}"));
        let max = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        if name.ends_with(".png") {
            // Lossless input: the same bytes reach the resampler, so the result is exact.
            assert!(max <= 1e-3, "{name}: max abs diff {max}");
        } else {
            // JPEG: the `image` crate's decoder and libjpeg-turbo may differ by a level or
            // two in places (chroma upsampling), never more.
            let mean = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).sum::<f32>() / ours.len() as f32;
            assert!(max <= 0.1 && mean <= 0.01, "{name}: max abs diff {max}, mean {mean}");
        }
    }
}

#[test]
fn image_embeddings_equal_transformers() {
    let reference = reference();
    for (path, clip) in clips() {
        for name in ["coins.png", "microaneurysms.png"] {
            let pixels = clip.preprocessor.pixels(&photo(name));
            let batch = Tensor::from_vec(pixels, (1, 3, 224, 224), &Device::Cpu).unwrap();
            let features = clip.model.image_features(&batch).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let theirs = vector(&reference, &format!("image_features/{name}"));
            assert_close(&format!("{path}: features {name}"), &features, &theirs);
            let embeds = clip.embed_images(&[photo(name)]).unwrap();
            let theirs = vector(&reference, &format!("image_embeds/{name}"));
            assert_close(&format!("{path}: embedding {name}"), &embeds[0], &theirs);
        }
        // A batch gives what single images give.
        let batch = clip.embed_images(&[photo("coins.png"), photo("microaneurysms.png")]).unwrap();
        assert_close(&format!("{path}: batched"), &batch[1], &vector(&reference, "image_embeds/microaneurysms.png"));
    }
}

#[derive(Deserialize)]
struct TextCase {
    index: usize,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct ReferenceInfo {
    texts: Vec<TextCase>,
}

#[test]
fn text_embeddings_equal_transformers_alone_and_in_a_padded_batch() {
    let reference = reference();
    let info: ReferenceInfo =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap()).unwrap();
    let ids: Vec<Vec<u32>> = info.texts.iter().map(|t| t.ids.clone()).collect();
    for (path, clip) in clips() {
        let batched = clip.model.embed_texts(&ids).unwrap();
        for (case, batched) in info.texts.iter().zip(&batched) {
            let alone = clip.model.embed_texts(std::slice::from_ref(&case.ids)).unwrap();
            let theirs = vector(&reference, &format!("text_embeds/{}", case.index));
            assert_close(&format!("{path}: text {}", case.index), &alone[0], &theirs);
            assert_close(&format!("{path}: text {} in a batch", case.index), batched, &theirs);
            let features = clip.model.text_features(std::slice::from_ref(&case.ids)).unwrap();
            let features = features.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_close(
                &format!("{path}: text features {}", case.index),
                &features,
                &vector(&reference, &format!("text_features/{}", case.index)),
            );
        }
    }
}

/// `--device cpu-bf16`: both bf16 kernels (AMX, AVX512_BF16) round weights and
/// activations to bfloat16 (8 mantissa bits) before each dense layer, so they are held to
/// the reference by a looser bound than the f32 paths' (cosine ≥ 0.99999, max |a − b| ≤
/// 1e-4): on this tiny random-weight model the embeddings measured cosine ≥ 0.99996 and
/// max |a − b| ≤ 0.0042 (docs/sql.md).
#[test]
fn bf16_embeddings_stay_close_to_transformers_where_the_cpu_has_a_bf16_kernel() {
    let Some(kernel) = CpuKernel::select(true) else {
        eprintln!("skipped: this CPU (or OS) has no bf16 kernel");
        return;
    };
    let clip = Clip::load(&fixtures().join("tiny-clip"), &Device::Cpu, DType::BF16).unwrap();
    assert_eq!(clip.model.cpu_kernel(), Some(kernel));
    let reference = reference();
    let info: ReferenceInfo =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap()).unwrap();
    let mut cosines = Vec::new();
    for name in ["coins.png", "microaneurysms.png"] {
        let ours = clip.embed_images(&[photo(name)]).unwrap();
        cosines.push((name.to_string(), compare(&ours[0], &vector(&reference, &format!("image_embeds/{name}")))));
    }
    let ids: Vec<Vec<u32>> = info.texts.iter().map(|t| t.ids.clone()).collect();
    for (case, ours) in info.texts.iter().zip(clip.model.embed_texts(&ids).unwrap()) {
        let theirs = vector(&reference, &format!("text_embeds/{}", case.index));
        cosines.push((format!("text {}", case.index), compare(&ours, &theirs)));
    }
    eprintln!("{} vs transformers (cosine, max abs diff): {cosines:?}", kernel.name());
    for (what, (cosine, max)) in &cosines {
        assert!(*cosine >= 0.9999 && *max <= 0.01, "{what}: cosine {cosine}, max abs diff {max}");
    }
    assert!(cosines.iter().any(|(_, (cosine, _))| *cosine < 0.99999), "no bfloat16 rounding seen: not the bf16 kernel");
}

#[test]
fn a_missing_model_file_is_named() {
    let dir = tempfile_dir();
    std::fs::copy(fixtures().join("tiny-clip/config.json"), dir.join("config.json")).unwrap();
    let err = Clip::load(&dir, &Device::Cpu, DType::F32).expect_err("no weights").to_string();
    assert!(err.contains("model.safetensors") && err.contains("missing"), "{err}");
    std::fs::write(dir.join("config.json"), "{\"vision_config\": {\"image_size\": 100, \"patch_size\": 32}}").unwrap();
    let err = Clip::load(&dir, &Device::Cpu, DType::F32).expect_err("bad config").to_string();
    assert!(err.contains("config.json") && err.contains("patch_size"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("slicetest-embed-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
