"""The PyTorch peer of bench-faces: facenet-pytorch MTCNN face detection throughput on CPU.

Usage: mtcnn_facenet.py [--repeats R] [--warmup W] [--threads N] FILE...
Decodes every FILE with PIL (`.convert("RGB")`, outside the timing), builds
`facenet_pytorch.MTCNN(keep_all=True, device="cpu")` (defaults: min face 20, thresholds
0.6/0.7/0.7, factor 0.709), runs W untimed passes over all files, then R timed passes, each
calling `mtcnn.detect(img)` once per image (one image at a time, as a tagger would on
photos of different sizes). Prints JSON {images_per_s, images, repeats, threads, faces,
p50_ms_per_pass, torch, facenet_pytorch}.
Needs: pip install torch torchvision pillow requests; pip install --no-deps facenet-pytorch==2.6.0
"""

import argparse
import importlib.metadata
import json
import os
import statistics
import time

import torch
from PIL import Image

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--warmup", type=int, default=1)
parser.add_argument("--threads", type=int, default=os.cpu_count())
parser.add_argument("files", nargs="+")
args = parser.parse_args()

torch.set_num_threads(args.threads)
from facenet_pytorch import MTCNN  # noqa: E402 (after set_num_threads)

images = []
for path in args.files:
    with Image.open(path) as im:
        images.append(im.convert("RGB"))
mtcnn = MTCNN(keep_all=True, device="cpu")


def one_pass():
    faces = []
    for img in images:
        boxes, _ = mtcnn.detect(img)
        faces.append(0 if boxes is None else len(boxes))
    return faces


with torch.no_grad():
    for _ in range(args.warmup):
        faces = one_pass()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        faces = one_pass()
        times.append(time.perf_counter() - start)

print(
    json.dumps(
        {
            "images_per_s": len(images) * len(times) / sum(times),
            "images": len(images),
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "faces": faces,
            "p50_ms_per_pass": statistics.median(times) * 1000,
            "torch": torch.__version__,
            "facenet_pytorch": importlib.metadata.version("facenet-pytorch"),
        }
    )
)
