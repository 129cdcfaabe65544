"""Object detection: YOLO-layout data, box-aware augmentation, COCO mAP, the task."""

from .data import Mosaic, YoloDetection, collate_detection, detection_eval_transform, \
    detection_train_transform, read_names
from .metrics import coco_map
from .task import (DetectionOptions, DetectionTask, detection_config, evaluate,
                   evaluate_detector, train)

__all__ = ["DetectionOptions", "Mosaic", "DetectionTask", "YoloDetection", "coco_map",
           "collate_detection", "detection_config", "detection_eval_transform",
           "detection_train_transform", "evaluate", "evaluate_detector", "read_names", "train"]
