"""Monocular depth: RGB + depth PNG pairs (7-Scenes included), the SILog / masked L1 / MiDaS
SSI losses, AbsRel ... si-RMSE metrics over valid pixels, and the task on the engine."""

from .data import (DepthPairs, collate_depth, decode_depth, depth_eval_transform,
                   depth_train_transform, find_pairs, seven_scenes, split_pairs)
from .evaluate import evaluate_model, mean_depth, mean_depth_baseline
from .losses import align_scale_shift, masked_l1, silog_loss, ssi_loss, valid_mask
from .metrics import METRICS, DepthMetrics, image_metrics, scored_depth
from .task import DepthOptions, DepthTask, depth_config, train

__all__ = ["METRICS", "DepthMetrics", "DepthOptions", "DepthPairs", "DepthTask",
           "align_scale_shift", "collate_depth", "decode_depth", "depth_config",
           "depth_eval_transform", "depth_train_transform", "evaluate_model", "find_pairs",
           "image_metrics", "masked_l1", "mean_depth", "mean_depth_baseline", "scored_depth",
           "seven_scenes", "silog_loss", "split_pairs", "ssi_loss", "train", "valid_mask"]
