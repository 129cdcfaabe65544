"""MobileNetV1 (Howard et al., arXiv 1704.04861), Table 1.

Reference code: tensorflow/models research/slim/nets/mobilenet_v1.py (``_CONV_DEFS``).
Width rounding is slim's ``max(int(d * alpha), 8)`` (truncation, no divisor). BatchNorm
eps 1e-3 and decay 0.9997 (reference momentum 3e-4; models are built with momentum 0.1, see
``architecture``), dropout keep 0.999, as in slim's arg scope.
"""

from ..layers import NormConfig
from .architecture import Architecture
from .registry import ModelEntry, register
from .rounding import Truncate
from .table import Conv, DepthSep

MOBILENET_V1 = Architecture(
    family="mobilenet_v1",
    source="MobileNetV1 Table 1; slim mobilenet_v1.py _CONV_DEFS",
    stem=Conv(32, kernel=3, stride=2),        # Conv / s2, 3x3x3x32
    body=(                                    # Conv dw / s; Conv 1x1 / s1
        DepthSep(64, s=1),
        DepthSep(128, s=2),
        DepthSep(128, s=1),
        DepthSep(256, s=2),
        DepthSep(256, s=1),
        DepthSep(512, s=2),
        DepthSep(512, s=1, n=5),              # 5x
        DepthSep(1024, s=2),
        DepthSep(1024, s=1),                  # Table 1 prints s2 (typo: 7x7 in and out); slim: 1
    ),
    head=None,
    pre_logits=None,
    act="relu",
    round_channels=Truncate(min_value=8),
    norm=NormConfig(eps=1e-3),
    reference_bn_momentum=3e-4,
    dropout=0.001,
)

for _alpha, _suffix in ((1.0, "100"), (0.75, "075"), (0.5, "050"), (0.25, "025")):
    register(ModelEntry(f"mobilenet_v1_{_suffix}", MOBILENET_V1, width_mult=_alpha,
                        aliases=("mobilenetv1_100", "mobilenet_v1") if _suffix == "100" else ()))
