"""EfficientNetV2-S/M/L (Tan & Le, arXiv 2104.00298), Table 4 and the reference configurations.

Sources (shared/reference/dense-and-families.md §2): the paper's Table 4 (V2-S, read through a
third-party copy), google/automl ``efficientnetv2/effnetv2_configs.py`` (``v2_s_block``,
``v2_m_block``, ``v2_l_block``) and torchvision's ``_efficientnet_conf`` (identical rows).
Where they disagree we follow the reference code (torchvision, automl):

- V2-S stage 6 has 256 channels and the head 1280 (a copy of the paper's first version prints
  272 / 1792; that variant is timm's ``efficientnetv2_rw_s``, not registered here).
- M and L are their own tables (automl, torchvision), not compound-scaled from S; the paper
  only says "about width 1.6, depth 2.2" / "2.0, 3.1". ``width_mult`` / ``depth_mult`` still
  scale every row (``make_divisible(c * w, 8)``, ``ceil(n * d)``) and the stem and head, as
  timm's ``round_chs_fn`` does.
- Blocks (torchvision ``FusedMBConv`` / ``MBConv``): Fused-MBConv has no squeeze-excite; MBConv
  has SE 0.25 of the block's *input* channels (``max(1, in // 4)``) with SiLU inside and a
  sigmoid gate; expanded widths ``make_divisible(in * e, 8)``.
- BatchNorm eps 1e-3 (automl ``bn_epsilon``, torchvision); momentum 0.1 in PyTorch's convention
  (automl's TF decay 0.9 = torchvision's PyTorch default; the paper text's "0.99" is not what
  the code uses). SiLU everywhere. Stochastic depth 0.2 ramped linearly over the block index
  (torchvision ``stochastic_depth_prob``; automl survival 0.8). Dropout before the classifier
  0.2 / 0.3 / 0.4 (automl, torchvision builders).
- Resolution: the registered ``resolution`` is the eval size, 384 / 480 / 480 (automl
  ``efficientnetv2_params`` eval sizes; torchvision's eval transforms), which the cost figures
  use; training was at 300 / 384 / 384 (``TRAIN_RESOLUTION``). Eval preprocessing follows
  torchvision's ``IMAGENET1K_V1`` transforms of S and M: resize the shorter side to the crop size
  and centre-crop it (crop_pct 1.0), bilinear, ImageNet mean/std. torchvision's L weights are
  automl ports with bicubic and mean = std = 0.5; loading them (``weights=``) takes that
  preprocessing from the weights' own transforms, as for every torchvision/timm checkpoint.

Names: torchvision's ``efficientnet_v2_s/m/l``; aliases timm's ``tf_efficientnetv2_s/m/l``
(the same layers; timm builds those with TF "SAME" padding and eps 1e-3, which loading their
checkpoints sets). timm's ``efficientnetv2_rw_*`` are other networks and are not aliased.
"""

from ..layers import NormConfig
from .architecture import Architecture
from .registry import ModelEntry, register
from .rounding import MakeDivisible
from .table import Conv, FusedMBConv, MBConv


def _v2(name: str, stem: int, body: tuple) -> Architecture:
    return Architecture(
        family="efficientnet_v2",
        source=f"EfficientNetV2 Table 4 (S); automl effnetv2_configs.py v2_{name}_block, "
               f"torchvision _efficientnet_conf",
        stem=Conv(stem, kernel=3, stride=2),      # stage 0: Conv3x3
        body=body,
        head=Conv(1280, kernel=1),                # last stage: Conv1x1 & Pooling & FC
        pre_logits=None,
        act="swish",
        round_channels=MakeDivisible(8),
        norm=NormConfig(eps=1e-3),
        reference_bn_momentum=0.1,
        dropout=0.2,
        drop_path_rate=0.2,
        depth_scalable=True,
        se_act="swish",
        se_gate="sigmoid",
    )


# rows: operator{e}, kernel k, channels c, layers n, stride s (of the stage's first block)
EFFICIENTNET_V2_S = _v2("s", 24, (               # paper Table 4
    FusedMBConv(e=1, k=3, c=24, n=2, s=1),
    FusedMBConv(e=4, k=3, c=48, n=4, s=2),
    FusedMBConv(e=4, k=3, c=64, n=4, s=2),
    MBConv(e=4, k=3, c=128, n=6, s=2, se=0.25),
    MBConv(e=6, k=3, c=160, n=9, s=1, se=0.25),
    MBConv(e=6, k=3, c=256, n=15, s=2, se=0.25),
))

EFFICIENTNET_V2_M = _v2("m", 24, (               # automl v2_m_block
    FusedMBConv(e=1, k=3, c=24, n=3, s=1),
    FusedMBConv(e=4, k=3, c=48, n=5, s=2),
    FusedMBConv(e=4, k=3, c=80, n=5, s=2),
    MBConv(e=4, k=3, c=160, n=7, s=2, se=0.25),
    MBConv(e=6, k=3, c=176, n=14, s=1, se=0.25),
    MBConv(e=6, k=3, c=304, n=18, s=2, se=0.25),
    MBConv(e=6, k=3, c=512, n=5, s=1, se=0.25),
))

EFFICIENTNET_V2_L = _v2("l", 32, (               # automl v2_l_block
    FusedMBConv(e=1, k=3, c=32, n=4, s=1),
    FusedMBConv(e=4, k=3, c=64, n=7, s=2),
    FusedMBConv(e=4, k=3, c=96, n=7, s=2),
    MBConv(e=4, k=3, c=192, n=10, s=2, se=0.25),
    MBConv(e=6, k=3, c=224, n=19, s=1, se=0.25),
    MBConv(e=6, k=3, c=384, n=25, s=2, se=0.25),
    MBConv(e=6, k=3, c=640, n=7, s=1, se=0.25),
))

# (architecture, eval resolution, dropout): automl efficientnetv2_params, torchvision builders
VARIANTS = {"s": (EFFICIENTNET_V2_S, 384, 0.2), "m": (EFFICIENTNET_V2_M, 480, 0.3),
            "l": (EFFICIENTNET_V2_L, 480, 0.4)}
# automl's training sizes (the largest of progressive learning, paper Table 6)
TRAIN_RESOLUTION = {"s": 300, "m": 384, "l": 384}

for _v, (_arch, _r, _p) in VARIANTS.items():
    register(ModelEntry(f"efficientnet_v2_{_v}", _arch, resolution=_r, dropout=_p, crop_pct=1.0,
                        interpolation="bilinear", aliases=(f"tf_efficientnetv2_{_v}",)))
