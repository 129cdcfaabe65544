"""The two-image COCO128 overfit of tests/test_yolo.py (YOLOv4 on MobileNetV2 0.5, 128 px,
200 full-batch AdamW steps under one-cycle, BatchNorm frozen for the last 70) over seeds
and objectness targets: mAP@.5 and mAP@[.5:.95] in eval mode, one JSON line per run.

    .venv/bin/python experiments/yolo_overfit_seeds.py --seeds 0 1 2 3 4 5 \\
        --objectness-iou 1.0 0.0

``--objectness-iou`` is the head's option of that name (1.0: YOLOv5's IoU-aware target,
the default; 0.0: YOLOv4's target 1). Needs ../shared/datasets (COCO128); about 35 s a run
on one core (15 s on a quiet one).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_yolo import (COCO128, STEPS, coco_map, overfit_data, overfit_yolov4,  # noqa: E402
                       unpack_overfit_images)


def run(images, targets, seed: int, objectness_iou: float) -> dict:
    """The test's recipe (tests/test_yolo.py, ``overfit_yolov4``) with ``seed`` and
    ``objectness_iou``."""
    start = time.perf_counter()
    found = overfit_yolov4(images, targets, seed, objectness_iou=objectness_iou)
    result = coco_map(targets, found)
    return {"seed": seed, "objectness_iou": objectness_iou, "steps": STEPS,
            "map50": round(result["map50"], 3), "map": round(result["map"], 3),
            "seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--objectness-iou", type=float, nargs="+", default=[1.0, 0.0])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not COCO128.exists():
        sys.exit(f"{COCO128} is absent: this experiment needs ../shared/datasets")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        images, targets = overfit_data(unpack_overfit_images(Path(tmp)))
        for r in args.objectness_iou:
            for seed in args.seeds:
                print(json.dumps(run(images, targets, seed, r)), flush=True)


if __name__ == "__main__":
    main()
