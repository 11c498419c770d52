"""transformers' CLIPImageProcessor on one photo-sized image: bench-embed's preprocessing peer.

Usage: clip_preprocess.py --width W --height H [--runs R]
Makes a W x H RGB image of seeded random bytes (the resampling's work does not depend on
the values) and times, after one untimed call each, R calls of CLIPImageProcessor with
OpenAI's defaults (shortest side to 224 with Pillow's bicubic filter, centre crop 224,
rescale, normalise; the Pillow backend, as slicetest reproduces it bit for bit) and R
calls of Pillow's resize alone (the part of it that is Pillow's C code). Prints JSON
{width, height, processor_ms_p50, pillow_resize_ms_p50, transformers, pillow, processor}.
"""

import argparse
import json
import statistics
import time

import numpy as np
import PIL
import transformers
from PIL import Image

try:  # transformers 5 names the Pillow backend apart from the torchvision one
    from transformers import CLIPImageProcessorPil as Processor
except ImportError:
    from transformers import CLIPImageProcessor as Processor

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--width", type=int, required=True)
parser.add_argument("--height", type=int, required=True)
parser.add_argument("--runs", type=int, default=5)
args = parser.parse_args()

image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8))
processor = Processor()
short = min(args.width, args.height)
resized = (args.width * 224 // short, args.height * 224 // short)


def p50_ms(fn):
    fn()
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


processor_ms = p50_ms(lambda: processor(images=image, return_tensors="np"))
resize_ms = p50_ms(lambda: image.resize(resized, Image.BICUBIC))
print(
    json.dumps(
        {
            "width": args.width,
            "height": args.height,
            "processor_ms_p50": processor_ms,
            "pillow_resize_ms_p50": resize_ms,
            "transformers": transformers.__version__,
            "pillow": PIL.__version__,
            "processor": Processor.__name__,
        }
    )
)
