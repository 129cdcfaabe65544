"""COCO box mAP through pycocotools: mAP@[.5:.95], mAP@.5 and per-class AP.

:func:`coco_map` puts ground truth and detections (torchvision's per-image dicts, boxes
XYXY in pixels) into pycocotools' own structures and runs its ``COCOeval``: the numbers are
pycocotools', not a re-implementation. Ground-truth areas are box areas (YOLO labels carry no
masks), which only matters for the small / medium / large split.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch


def _xywh(boxes: torch.Tensor) -> list[list[float]]:
    b = boxes.detach().float().cpu().reshape(-1, 4)
    return torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], 1).tolist()


def coco_map(ground_truth: list[dict], detections: list[dict],
             categories: list[int] | None = None, max_dets: int = 100) -> dict:
    """COCO box metrics of ``detections`` against ``ground_truth`` (one dict per image, in
    the same order: ``boxes`` XYXY pixels and ``labels``; detections add ``scores``).

    ``categories``: the label values scored (default: every label in the ground truth).
    Returns ``map`` (mAP@[.5:.95]), ``map50``, ``map75``, ``per_class`` (label -> AP@[.5:.95],
    NaN for a class with no ground truth), and ``stats`` (pycocotools' 12 summary numbers)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(detections)} "
                         f"detection results: give one of each per image")
    if categories is None:
        categories = sorted({int(v) for t in ground_truth for v in t["labels"].tolist()})
    images, annotations, results = [], [], []
    for image_id, (gt, det) in enumerate(zip(ground_truth, detections)):
        images.append({"id": image_id})
        for box, label in zip(_xywh(gt["boxes"]), gt["labels"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(label), "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
        for box, label, score in zip(_xywh(det["boxes"]), det["labels"].tolist(),
                                     det["scores"].tolist()):
            results.append({"image_id": image_id, "category_id": int(label), "bbox": box,
                            "score": float(score)})
    out = {"map": 0.0, "map50": 0.0, "map75": 0.0,
           "per_class": {c: float("nan") for c in categories}, "stats": [0.0] * 12}
    if not annotations or not categories:
        return out
    with contextlib.redirect_stdout(io.StringIO()):      # pycocotools prints as it goes
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": int(c)} for c in categories]}
        gt.createIndex()
        if not results:
            return dict(out, per_class={c: 0.0 if gt.getAnnIds(catIds=[c]) else float("nan")
                                        for c in categories})
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.catIds = [int(c) for c in categories]
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # precision: [IoU thresholds, recall points, classes, area ranges, max dets]; area "all",
    # the largest max-dets; -1 marks a class without ground truth
    precision = ev.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, c in enumerate(ev.params.catIds):
        p = precision[:, :, k]
        per_class[int(c)] = float(np.mean(p[p > -1])) if (p > -1).any() else float("nan")
    stats = [float(v) for v in ev.stats]
    return {"map": max(stats[0], 0.0), "map50": max(stats[1], 0.0),
            "map75": max(stats[2], 0.0), "per_class": per_class, "stats": stats}


__all__ = ["coco_map"]
