"""COCO bbox evaluation by a Python peer on the same files, for bench-detection (and
mask evaluation, `--segm`, for bench-masks; keypoint evaluation, `--keypoints`, for
bench-keypoints).

usage: coco_eval_peer.py pycocotools|faster INSTANCES RESULTS [IMAGE_IDS_FILE] [--segm|--keypoints]

With --segm the results' boxes are dropped before `loadRes`, as Detectron2 does before a
`segm` evaluation, so a detection's area is its mask's.

Loads both files (not timed), then times evaluate() + accumulate() + summarize() in CPU
seconds (time.process_time, all threads) and wall seconds; prints one JSON object with
the times, the 12 stats (10 for keypoints) and the peak resident memory of the process.
"""

import contextlib
import io
import json
import resource
import sys
import time

segm = "--segm" in sys.argv
keypoints = "--keypoints" in sys.argv
argv = [a for a in sys.argv if a not in ("--segm", "--keypoints")]
peer, instances, results = argv[1:4]
image_ids = json.load(open(argv[4])) if len(argv) > 4 else None
if segm:
    results = [{k: v for k, v in r.items() if k != "bbox"} for r in json.load(open(results))]

with contextlib.redirect_stdout(io.StringIO()):
    if peer == "faster":
        from faster_coco_eval import COCO, COCOeval_faster as COCOeval
        import faster_coco_eval
        version = faster_coco_eval.__version__
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        version = "2.0.x"
        try:
            from importlib.metadata import version as _v
            version = _v("pycocotools")
        except Exception:
            pass
    gt = COCO(instances)
    dt = gt.loadRes(results)
    ev = COCOeval(gt, dt, "segm" if segm else "keypoints" if keypoints else "bbox")
    if image_ids is not None:
        ev.params.imgIds = sorted(image_ids)
    cpu, wall = time.process_time(), time.perf_counter()
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall

print(json.dumps({
    "peer": peer, "version": version, "cpu_s": cpu, "wall_s": wall,
    "stats": [float(s) for s in ev.stats],
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
