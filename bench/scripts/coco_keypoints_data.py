"""Generated people with COCO's 17 keypoints and a pose model's results, for
bench-keypoints: the generator of eval/tests/fixtures/coco_keypoints/make_reference.py
(the parity fixture's, so the bench times the inputs the tests hold to pycocotools) at
any size.

usage: coco_keypoints_data.py FOLDER IMAGES SEED

Writes FOLDER/instances.json and FOLDER/results.json; prints one JSON object with the
counts.
"""

import importlib.util
import json
import sys
from pathlib import Path

folder, images, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
reference = Path(__file__).resolve().parents[2] / "eval/tests/fixtures/coco_keypoints/make_reference.py"
spec = importlib.util.spec_from_file_location("make_reference", reference)
generator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generator)
instances, results = generator.make(images, seed)
folder.mkdir(parents=True, exist_ok=True)
(folder / "instances.json").write_text(json.dumps(instances))
(folder / "results.json").write_text(json.dumps(results))
print(json.dumps({"images": images, "annotations": len(instances["annotations"]), "detections": len(results)}))
