"""COCO's two label spaces, and the one mapping between them.

- **COCO-80** (``0`` .. ``79``): the 80 object categories numbered contiguously in COCO's own
  order, as YOLO label files (ultralytics, COCO128) write them.
- **COCO-91** (``1`` .. ``90``, ``0`` = background): COCO's category ids, which skip 10 ids
  that the 2014 paper listed but never annotated (12, 26, 29, 30, 45, 66, 68, 69, 71, 83).
  torchvision's detectors predict these ids (91 outputs, the unused ones named ``"N/A"``), so
  its checkpoints and ``pycocotools`` speak COCO-91.

``COCO80_TO_91[i]`` is the COCO id of YOLO class ``i``; the names agree one for one with
torchvision's ``categories`` (tested). Detection data is loaded as COCO-80 and turned into
COCO-91 labels for models with 91 classes; a model with ``K + 1`` classes for a data set of
``K`` classes uses ``label + 1`` (0 stays background).
"""

from __future__ import annotations

import torch

#: COCO category id (torchvision's label) of each COCO-80 class
COCO80_TO_91 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
                24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47,
                48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70,
                72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)
#: COCO-80 index of each COCO id, -1 for the background and the 10 unused ids
COCO91_TO_80 = tuple(COCO80_TO_91.index(i) if i in COCO80_TO_91 else -1 for i in range(91))


def coco91_names() -> list[str]:
    """torchvision's 91 category names (``"__background__"``, ``"person"`` ... with
    ``"N/A"`` for the unused ids), from its detection weights' metadata."""
    from torchvision.models.detection import SSDLite320_MobileNet_V3_Large_Weights
    return list(SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.meta["categories"])


def to_coco91(labels: torch.Tensor) -> torch.Tensor:
    """COCO-80 labels -> COCO ids."""
    return torch.as_tensor(COCO80_TO_91, dtype=torch.int64, device=labels.device)[labels.long()]


def to_coco80(labels: torch.Tensor) -> torch.Tensor:
    """COCO ids -> COCO-80 labels (-1 for background and unused ids)."""
    return torch.as_tensor(COCO91_TO_80, dtype=torch.int64, device=labels.device)[labels.long()]


__all__ = ["COCO80_TO_91", "COCO91_TO_80", "coco91_names", "to_coco80", "to_coco91"]
