"""MobileNetV2 (Sandler et al., arXiv 1801.04381 v4), Table 2.

Reference code: slim nets/mobilenet/mobilenet_v2.py ``V2_DEF``. Channels round with
``make_divisible(c * width, 8)``; the last 1x1 conv keeps 1280 channels for width < 1
(paper §4, slim ``finegrain_classification_mode``) and grows above 1. BatchNorm eps 1e-3,
decay 0.997 (reference momentum 3e-3; models are built with momentum 0.1, see
``architecture``); dropout keep 0.8.
"""

from ..layers import NormConfig
from .architecture import Architecture
from .registry import ModelEntry, register
from .rounding import MakeDivisible
from .table import UP_ONLY, Bottleneck, Conv

MOBILENET_V2 = Architecture(
    family="mobilenet_v2",
    source="MobileNetV2 Table 2; slim mobilenet_v2.py V2_DEF",
    stem=Conv(32, kernel=3, stride=2),        # conv2d, 32, s2
    body=(
        Bottleneck(t=1, c=16, n=1, s=1),
        Bottleneck(t=6, c=24, n=2, s=2),
        Bottleneck(t=6, c=32, n=3, s=2),
        Bottleneck(t=6, c=64, n=4, s=2),
        Bottleneck(t=6, c=96, n=3, s=1),
        Bottleneck(t=6, c=160, n=3, s=2),
        Bottleneck(t=6, c=320, n=1, s=1),
    ),
    head=Conv(1280, kernel=1, scale=UP_ONLY),  # conv2d 1x1, 1280
    pre_logits=None,
    act="relu6",
    round_channels=MakeDivisible(8),
    norm=NormConfig(eps=1e-3),
    reference_bn_momentum=3e-3,
    dropout=0.2,
    depth_scalable=True,
)

for _width, _suffix in ((1.4, "140"), (1.3, "130"), (1.0, "100"), (0.75, "075"), (0.5, "050"),
                        (0.35, "035")):
    _aliases = (f"mobilenetv2_{_suffix}",) if _suffix != "130" else ()
    if _suffix == "100":
        _aliases += ("mobilenet_v2",)
    register(ModelEntry(f"mobilenet_v2_{_suffix}", MOBILENET_V2, width_mult=_width,
                        aliases=_aliases))
