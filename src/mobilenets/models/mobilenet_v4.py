"""MobileNetV4 conv models (Qin et al., arXiv 2404.10518), Tables 11 (Conv-S), 12 (Conv-M) and
14 (Conv-L) of App. 0.D in the copy read.

Reference code: timm ``mobilenetv3.py`` ``_gen_mobilenet_v4`` and ``_efficientnet_blocks.py``
``UniversalInvertedResidual`` (timm trained the weights people load), which agree row for row
with the paper's tables and with tensorflow/models ``official/vision/modeling/backbones/
mobilenet.py`` (``MNV4ConvSmall_BLOCK_SPECS``, ``MNV4ConvMedium``, ``MNV4ConvLarge``). The
hybrid (attention) models are not here.

Choices where the sources differ, all following the reference code:

- **Conv-S's first two stages**: the paper calls them FusedIB (32 -> 32 and 96 -> 64). Both
  codebases build each as two plain conv rows, 3x3 stride 2 then 1x1, *both* conv -> BN -> ReLU
  (no linear projection, no shortcut); so do we, so timm's weights load. Their widths scale
  with ``width_mult`` like any conv row (timm ``mobilenetv4_conv_small_050``).
- **Parameters and MACs**: the paper prints 9.2M / 31M params for Conv-M / Conv-L and 5.9G MACs
  for Conv-L (Tab. 6); the rows, built exactly as printed (and by both codebases), give
  9,715,512 / 32,590,864 params and 6.38 GMACs at 384 px. We build the rows
  (``tests/test_paper_figures.py`` lists these as exceptions; the cause is not known).
- **BatchNorm** eps 1e-5, momentum 0.1 (timm's, with which its weights were trained; the
  TF-models defaults, eps 1e-3, are not verified). ReLU throughout, no squeeze-excite, no layer
  scale (timm uses layer scale only in the hybrid models).
- **Head** (App. 0.A: "same head layer configuration as MobileNet V3"): a 1x1 conv to 960
  (BN, ReLU; scaled with ``width_mult``, the /32 feature tap as in timm), global pooling, then a
  1x1 conv to 1280 **without bias, with BN and ReLU** (timm ``head_norm=True``; V3's has a bias
  and no BN), kept at 1280 for every width, as timm's ``num_features``.
- **Width multiplier**: the stem keeps its width below 1 (timm ``fix_stem``) and grows above;
  every row is ``make_divisible(c * width, 8)``; a UIB's expanded width is
  ``make_divisible(in * e, 8)`` of its scaled input (timm ``mid_chs``).
- **depth_mult** is refused: the tables are written one block per line (repeats only where the
  code groups identical lines) and neither the paper nor the code defines depth scaling.
- **Recipe** (App. 0.C, Tab. 10): dropout 0.3 / 0.2 / 0.2 and stochastic depth 0 / 0.075 /
  0.35 for S / M / L are the defaults here. Stochastic depth ramps linearly over the body's
  blocks, as for every family; timm's ramp also counts the 960 head conv as a block, so its
  per-block rates are a little lower (eval is unaffected).
- **Evaluation**: timm's pretrained configs, bicubic, ImageNet mean/std: Conv-S 224 px crop
  0.875 (``e2400_r224``), Conv-M 256 px crop 0.95 (``e500_r256``), Conv-L 384 px crop 0.95
  (``e600_r384``), the paper's resolutions.
"""

from dataclasses import replace

from ..layers import NormConfig
from .architecture import Architecture
from .registry import ModelEntry, register
from .rounding import MakeDivisible
from .table import NEVER, UP_ONLY, Conv, ConvNext, ExtraDW, FFN, FusedIB, IB

# paper's expanded width ("Exp", = input x e) in the comments
MOBILENET_V4_CONV_SMALL = Architecture(
    family="mobilenet_v4",
    source="MobileNetV4 Table 11; timm _gen_mobilenet_v4 (small)",
    stem=Conv(32, kernel=3, stride=2, scale=UP_ONLY),
    body=(
        Conv(32, kernel=3, stride=2),         # FusedIB, exp 32, out 32 (two conv rows in code)
        Conv(32, kernel=1),
        Conv(96, kernel=3, stride=2),         # FusedIB, exp 96, out 64
        Conv(64, kernel=1),
        ExtraDW(5, 5, e=3, out=96, s=2),      # exp 192
        IB(3, e=2, out=96, n=4),              # exp 192
        ConvNext(3, e=4, out=96),             # exp 384
        ExtraDW(3, 3, e=6, out=128, s=2),     # exp 576
        ExtraDW(5, 5, e=4, out=128),          # exp 512
        IB(5, e=4, out=128),                  # exp 512
        IB(5, e=3, out=128),                  # exp 384
        IB(3, e=4, out=128, n=2),             # exp 512
    ),
    head=Conv(960, kernel=1),
    pre_logits=Conv(1280, kernel=1, scale=NEVER),
    pre_logits_norm=True,
    act="relu",
    round_channels=MakeDivisible(8),
    norm=NormConfig(eps=1e-5),
    reference_bn_momentum=0.1,
    head_is_last_tap=True,
    dropout=0.3,
    drop_path_rate=0.0,
)

MOBILENET_V4_CONV_MEDIUM = replace(
    MOBILENET_V4_CONV_SMALL,
    source="MobileNetV4 Table 12; timm _gen_mobilenet_v4 (medium)",
    body=(
        FusedIB(3, e=4, out=48, s=2),         # exp 128
        ExtraDW(3, 5, e=4, out=80, s=2),      # exp 192
        ExtraDW(3, 3, e=2, out=80),           # exp 160
        ExtraDW(3, 5, e=6, out=160, s=2),     # exp 480
        ExtraDW(3, 3, e=4, out=160, n=2),     # exp 640
        ExtraDW(3, 5, e=4, out=160),
        ExtraDW(3, 3, e=4, out=160),
        ConvNext(3, e=4, out=160),            # exp 640
        FFN(e=2, out=160),                    # exp 320 (timm's comment says ExtraDW: a0_k0)
        ConvNext(3, e=4, out=160),
        ExtraDW(5, 5, e=6, out=256, s=2),     # exp 960
        ExtraDW(5, 5, e=4, out=256),          # exp 1024
        ExtraDW(3, 5, e=4, out=256, n=2),
        FFN(e=4, out=256),                    # exp 1024
        ConvNext(3, e=4, out=256),
        ExtraDW(3, 5, e=2, out=256),          # exp 512
        ExtraDW(5, 5, e=4, out=256),          # exp 1024
        FFN(e=4, out=256, n=2),
        ConvNext(5, e=2, out=256),            # exp 512
    ),
    dropout=0.2,
    drop_path_rate=0.075,
)

MOBILENET_V4_CONV_LARGE = replace(
    MOBILENET_V4_CONV_SMALL,
    source="MobileNetV4 Table 14; timm _gen_mobilenet_v4 (large)",
    stem=Conv(24, kernel=3, stride=2, scale=UP_ONLY),
    body=(
        FusedIB(3, e=4, out=48, s=2),         # exp 96
        ExtraDW(3, 5, e=4, out=96, s=2),      # exp 192
        ExtraDW(3, 3, e=4, out=96),           # exp 384
        ExtraDW(3, 5, e=4, out=192, s=2),     # exp 384
        ExtraDW(3, 3, e=4, out=192, n=3),     # exp 768
        ExtraDW(3, 5, e=4, out=192),
        ExtraDW(5, 3, e=4, out=192, n=5),
        ConvNext(3, e=4, out=192),
        ExtraDW(5, 5, e=4, out=512, s=2, n=4),  # exp 768, then 2048
        ConvNext(5, e=4, out=512),            # exp 2048
        ExtraDW(5, 3, e=4, out=512),
        ConvNext(5, e=4, out=512, n=2),
        ExtraDW(5, 3, e=4, out=512),
        ExtraDW(5, 5, e=4, out=512),
        ConvNext(5, e=4, out=512, n=3),
    ),
    dropout=0.2,
    drop_path_rate=0.35,
)

# timm's width variants are width_mult on Conv-S: ``mobilenetv4_conv_small_050`` (its weights
# ``e3000_r224`` use the Inception mean/std 0.5, which their config.json brings along) and
# ``_035`` are ``create_model("mobilenet_v4_conv_small_100", width_mult=0.5 / 0.35)``, tested
# against timm; not registered, to keep the per-model test battery short.
# (registered name, architecture, timm's name, eval resolution, crop)
for _name, _arch, _alias, _res, _crop in (
        ("mobilenet_v4_conv_small_100", MOBILENET_V4_CONV_SMALL, "mobilenetv4_conv_small", 224,
         0.875),
        ("mobilenet_v4_conv_medium_100", MOBILENET_V4_CONV_MEDIUM, "mobilenetv4_conv_medium", 256,
         0.95),
        ("mobilenet_v4_conv_large_100", MOBILENET_V4_CONV_LARGE, "mobilenetv4_conv_large", 384,
         0.95)):
    register(ModelEntry(_name, _arch, resolution=_res, crop_pct=_crop, interpolation="bicubic",
                        aliases=(_alias,)))
