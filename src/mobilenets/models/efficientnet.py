"""EfficientNet-B0..B7 (Tan & Le, arXiv 1905.11946), Table 1 plus compound scaling, and
EfficientNet-Lite0..4 (the mobile variant of tensorflow/tpu ``efficientnet/lite``).

Reference code: tensorflow/tpu models/official/efficientnet (``efficientnet_builder.py`` block
strings and ``efficientnet_params``; ``efficientnet_model.py`` ``round_filters`` /
``round_repeats``). MBConv with SE on the block's input channels (ratio 0.25), swish, sigmoid
gate; BatchNorm eps 1e-3, momentum 0.99 (PyTorch 0.01: the reference momentum; models are built
with momentum 0.1, see ``architecture``); stochastic depth 0.2 ramped linearly over blocks; the
stem and head convs are scaled with ``round_filters`` too.
"""

from dataclasses import replace

from ..layers import NormConfig
from .architecture import Architecture
from .registry import ModelEntry, register
from .rounding import MakeDivisible
from .table import NEVER, Conv, MBConv

EFFICIENTNET = Architecture(
    family="efficientnet",
    source="EfficientNet Table 1; tensorflow/tpu efficientnet_builder.py",
    stem=Conv(32, kernel=3, stride=2),        # stage 1: Conv3x3
    body=(   # MBConv{e}, k, channels, layers, stride (stride of the stage's first block)
        MBConv(e=1, k=3, c=16, n=1, s=1),
        MBConv(e=6, k=3, c=24, n=2, s=2),
        MBConv(e=6, k=5, c=40, n=2, s=2),
        MBConv(e=6, k=3, c=80, n=3, s=2),
        MBConv(e=6, k=5, c=112, n=3, s=1),
        MBConv(e=6, k=5, c=192, n=4, s=2),
        MBConv(e=6, k=3, c=320, n=1, s=1),
    ),
    head=Conv(1280, kernel=1),                # stage 9: Conv1x1 & Pooling & FC
    pre_logits=None,
    act="swish",
    round_channels=MakeDivisible(8),
    norm=NormConfig(eps=1e-3),
    reference_bn_momentum=0.01,
    dropout=0.2,
    drop_path_rate=0.2,
    depth_scalable=True,
    se_act="swish",
    se_gate="sigmoid",
)

# (width, depth, resolution, dropout): efficientnet_builder.py efficientnet_params
COEFFICIENTS = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}

for _b, (_w, _d, _r, _p) in COEFFICIENTS.items():
    # the reference eval crops image_size from image_size + 32 (CROP_PADDING), bicubic
    register(ModelEntry(f"efficientnet_{_b}", EFFICIENTNET, width_mult=_w, depth_mult=_d,
                        resolution=_r, dropout=_p, crop_pct=_r / (_r + 32),
                        interpolation="bicubic"))


# EfficientNet-Lite (tensorflow/tpu efficientnet/lite: README and efficientnet_lite_builder.py;
# efficientnet_model.py for the fixed stem/head and the unscaled first and last stages):
# B0's table without squeeze-excite, ReLU6 everywhere, the stem (32) and head (1280) not
# width-scaled, and the first and last stages not depth-scaled. The TF pooling work-around
# (``local_pooling``, an average pool over the whole map) is global average pooling here.
EFFICIENTNET_LITE = replace(
    EFFICIENTNET,
    family="efficientnet_lite",
    source="tensorflow/tpu efficientnet/lite README and efficientnet_lite_builder.py",
    stem=Conv(32, kernel=3, stride=2, scale=NEVER),
    body=tuple(row.lite(depth_scaled=i not in (0, len(EFFICIENTNET.body) - 1))
               for i, row in enumerate(EFFICIENTNET.body)),
    head=Conv(1280, kernel=1, scale=NEVER),
    act="relu6",
)

# (width, depth, resolution, dropout): efficientnet_lite_builder.py efficientnet_lite_params
LITE_COEFFICIENTS = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}

for _b, (_w, _d, _r, _p) in LITE_COEFFICIENTS.items():
    # The builder's resolutions (timm's tf_ ports use 300 and 380 for Lite3/4). Eval: the TF
    # reference's centre crop of image_size from image_size + 32, bicubic, and inputs
    # (x - 127) / 128, i.e. mean = std = 0.5 of [0, 1] pixels (MEAN_RGB/STDDEV_RGB of the
    # lite builder; timm's tf_efficientnet_lite configs agree).
    register(ModelEntry(f"efficientnet_{_b}", EFFICIENTNET_LITE, width_mult=_w, depth_mult=_d,
                        resolution=_r, dropout=_p, crop_pct=_r / (_r + 32),
                        interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
