"""Semantic segmentation: the task, its data layouts (and the COCO panoptic adapter), loss
and metrics."""

from .data import (COCO_VOC_IDS, IGNORE, VOC_CLASSES, MaskPairs, coco_label_map, collate_masks,
                   find_split, segmentation_eval_transform, segmentation_train_transform)
from .evaluate import evaluate, evaluate_model
from .losses import cross_entropy_sum, main_output, segmentation_loss
from .metrics import confusion_matrix, scores
from .task import SegmentationOptions, SegmentationTask, segmentation_config, train

__all__ = ["COCO_VOC_IDS", "IGNORE", "VOC_CLASSES", "MaskPairs", "SegmentationOptions",
           "SegmentationTask", "coco_label_map", "collate_masks", "confusion_matrix",
           "cross_entropy_sum", "evaluate", "evaluate_model", "find_split", "main_output",
           "scores", "segmentation_config", "segmentation_eval_transform", "segmentation_loss",
           "segmentation_train_transform", "train"]
