"""Dense-prediction heads on any registered backbone: one file per head family.

A head is registered once with :func:`register_head`; ``create_model("lraspp",
backbone="mobilenet_v2_100")`` and ``create_model("lraspp_mobilenet_v2_100")`` both build it
(the second form is ``<head>_<backbone>``, where the backbone may be any registered name or
alias, so torchvision's names such as ``lraspp_mobilenet_v3_large`` resolve too).
``list_models`` lists each head once, on its default backbone, plus the names torchvision
users know (``HeadEntry.listed``), not every combination.

Importing this package registers every head.
"""

from __future__ import annotations

from .registry import HEADS, HeadEntry, register_head, resolve_head

from . import depth  # noqa: F401  (registers fastdepth, midas_small)
from . import detection  # noqa: F401  (registers ssdlite, ssdlite320)
from . import segmentation  # noqa: F401  (registers lraspp, deeplabv3)
from . import yolo  # noqa: F401  (registers yolov4)

__all__ = ["HEADS", "HeadEntry", "register_head", "resolve_head"]
