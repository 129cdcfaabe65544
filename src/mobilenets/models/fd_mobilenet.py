"""FD-MobileNet, fast downsampling (Qin et al., arXiv 1802.03750).

The paper's tables were not available; the layers are the official code's
(qinzheng93/FD-MobileNet ``pyvision/models/ImageNet/MobileNet.py``):
channels [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 1024],
strides [2, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1], stem 32; 32x downsampling is done by layer 12.
Width rounds by truncation ``int(c * width)``; PyTorch BatchNorm defaults; no dropout.
"""

from ..layers import NormConfig
from .architecture import Architecture
from .registry import ModelEntry, register
from .rounding import Truncate
from .table import Conv, DepthSep

FD_MOBILENET = Architecture(
    family="fd_mobilenet",
    source="FD-MobileNet official code (qinzheng93/FD-MobileNet MobileNet.py)",
    stem=Conv(32, kernel=3, stride=2),
    body=(
        DepthSep(64, s=2),
        DepthSep(128, s=2),
        DepthSep(128, s=1),
        DepthSep(256, s=2),
        DepthSep(256, s=1),
        DepthSep(512, s=2),
        DepthSep(512, s=1, n=4),
        DepthSep(1024, s=1),
    ),
    head=None,
    pre_logits=None,
    act="relu",
    round_channels=Truncate(min_value=1),
    norm=NormConfig(eps=1e-5, momentum=0.1),
    reference_bn_momentum=0.1,
    dropout=0.0,
)

for _width, _suffix in ((1.0, "100"), (0.5, "050"), (0.25, "025")):
    register(ModelEntry(f"fd_mobilenet_{_suffix}", FD_MOBILENET, width_mult=_width))
