"""The PyTorch peer of bench-embed: CLIP ViT-B/32 throughput with transformers on CPU.

Usage: clip_torch.py [--batch B] [--image-batches R] [--text-batches R] [--tokens T] [--threads N] [--dtype f32|bf16]
Builds transformers.CLIPModel from CLIPConfig() defaults (the ViT-B/32 shape: vision 768-d,
12 layers, patch 32, 224x224; text 512-d, 12 layers; projection 512) with random weights
(torch.manual_seed(0)), so no download is needed and the work per batch is the same as with
the real checkpoint. Inputs are fixed-seed: pixel_values ~ N(0, 1) of shape (B, 3, 224, 224);
input_ids of shape (B, T) with start token 49406, random ids in [1, 49405], end token 49407,
attention mask all ones. One untimed warm-up batch each, then R timed batches of
get_image_features and of get_text_features. Prints JSON {images_per_s, texts_per_s, batch,
tokens, threads, dtype, torch, transformers, image_p50_ms_per_batch, text_p50_ms_per_batch}.
`--dtype bf16` runs the forward passes under torch.autocast("cpu", torch.bfloat16), PyTorch's
own way to run a float model in bfloat16 on the CPU (oneDNN's bf16 kernels, AMX where the
CPU has it): the peer of slicetest's `--device cpu-bf16`.
With SLICETEST_CPU_KERNEL=avx2 (slicetest's kernels kept off AVX-512), PyTorch is held to
AVX2 too, unless the variables below are already set: ATEN_CPU_CAPABILITY=avx2 (ATen's own
kernels), MKL_ENABLE_INSTRUCTIONS=AVX2 (MKL's GEMMs), ONEDNN_MAX_CPU_ISA=AVX2 (oneDNN's),
read when torch loads: both sides as on an AVX2-only CPU. The JSON's `isa` says which.
"""

import argparse
import contextlib
import json
import os
import statistics
import time

AVX2_ONLY = os.environ.get("SLICETEST_CPU_KERNEL") == "avx2"
if AVX2_ONLY:
    for name, value in [("ATEN_CPU_CAPABILITY", "avx2"), ("MKL_ENABLE_INSTRUCTIONS", "AVX2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")]:
        os.environ.setdefault(name, value)

import torch  # noqa: E402  (after the ISA variables, which torch reads as it loads)
import transformers  # noqa: E402

START_TOKEN, END_TOKEN = 49406, 49407

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--batch", type=int, default=16)
parser.add_argument("--image-batches", type=int, default=5)
parser.add_argument("--text-batches", type=int, default=20)
parser.add_argument("--tokens", type=int, default=12, help="text length including start/end tokens")
parser.add_argument("--threads", type=int, default=os.cpu_count())
parser.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
args = parser.parse_args()
if args.tokens < 2:
    parser.error("--tokens must be at least 2 (start and end tokens)")

torch.set_num_threads(args.threads)
torch.manual_seed(0)
model = transformers.CLIPModel(transformers.CLIPConfig()).eval()

generator = torch.Generator().manual_seed(0)
pixel_values = torch.randn(args.batch, 3, 224, 224, generator=generator)
input_ids = torch.randint(1, END_TOKEN - 1, (args.batch, args.tokens), generator=generator)
input_ids[:, 0] = START_TOKEN
input_ids[:, -1] = END_TOKEN
attention_mask = torch.ones_like(input_ids)


def embeddings(out):
    # transformers 5 returns a BaseModelOutputWithPooling whose pooler_output holds the
    # projected embeddings; transformers 4 returned the tensor itself.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def image_batch():
    return embeddings(model.get_image_features(pixel_values=pixel_values))


def text_batch():
    return embeddings(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def precision():
    if args.dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def time_batches(fn, runs):
    out = fn()  # warm-up
    assert out.shape == (args.batch, model.config.projection_dim), out.shape
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


with torch.inference_mode(), precision():
    image_ms = time_batches(image_batch, args.image_batches)
    text_ms = time_batches(text_batch, args.text_batches)

print(
    json.dumps(
        {
            "images_per_s": args.batch * len(image_ms) / (sum(image_ms) / 1000),
            "texts_per_s": args.batch * len(text_ms) / (sum(text_ms) / 1000),
            "batch": args.batch,
            "tokens": args.tokens,
            "threads": torch.get_num_threads(),
            "dtype": args.dtype,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "isa": torch.backends.cpu.get_cpu_capability() + (" (held to AVX2)" if AVX2_ONLY else ""),
            "image_p50_ms_per_batch": statistics.median(image_ms),
            "text_p50_ms_per_batch": statistics.median(text_ms),
        }
    )
)
