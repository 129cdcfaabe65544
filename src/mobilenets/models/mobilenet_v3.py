"""MobileNetV3 (Howard et al., arXiv 1905.02244 v5), Tables 1 (Large) and 2 (Small).

Reference code: slim nets/mobilenet/mobilenet_v3.py ``V3_LARGE``, ``V3_SMALL`` and the
``_MINIMALISTIC`` variants. Squeeze-excite after the depthwise conv, squeeze width
``make_divisible(exp / 4, 8)``, ReLU inside, hard-sigmoid gate. The final 1x1 NBN conv (1280 /
1024) keeps its width for multipliers below one, as the paper's 0.75 models do (slim
``finegrain_classification_mode``). Small's final layer is 1024 (v5 and slim; an earlier
version printed 1280), and Table 2's SE mark on the 576-channel conv is not in the code, so it is
not here. BatchNorm eps 1e-3, decay 0.99 (reference momentum 0.01, paper §6.1.1; models are
built with momentum 0.1, see ``architecture``); dropout keep 0.8. The 1x1 head conv (960 / 576)
is feature tap 4, the /32 map, as in timm.
"""

from dataclasses import replace

from ..layers import NormConfig
from .architecture import Architecture
from .registry import ModelEntry, register
from .rounding import MakeDivisible
from .table import UP_ONLY, Bneck, Conv

RE, HS = "relu", "hard_swish"

MOBILENET_V3_LARGE = Architecture(
    family="mobilenet_v3",
    source="MobileNetV3 Table 1; slim mobilenet_v3.py V3_LARGE",
    stem=Conv(16, kernel=3, stride=2, act=HS),
    body=(  #  k, exp, out,  SE,   NL, s
        Bneck(3,  16,  16, False, RE, 1),
        Bneck(3,  64,  24, False, RE, 2),
        Bneck(3,  72,  24, False, RE, 1),
        Bneck(5,  72,  40, True,  RE, 2),
        Bneck(5, 120,  40, True,  RE, 1),
        Bneck(5, 120,  40, True,  RE, 1),
        Bneck(3, 240,  80, False, HS, 2),
        Bneck(3, 200,  80, False, HS, 1),
        Bneck(3, 184,  80, False, HS, 1),
        Bneck(3, 184,  80, False, HS, 1),
        Bneck(3, 480, 112, True,  HS, 1),
        Bneck(3, 672, 112, True,  HS, 1),
        Bneck(5, 672, 160, True,  HS, 2),
        Bneck(5, 960, 160, True,  HS, 1),
        Bneck(5, 960, 160, True,  HS, 1),
    ),
    head=Conv(960, kernel=1, act=HS),
    pre_logits=Conv(1280, kernel=1, act=HS, scale=UP_ONLY),
    act=HS,
    round_channels=MakeDivisible(8),
    norm=NormConfig(eps=1e-3),
    reference_bn_momentum=0.01,
    head_is_last_tap=True,
    dropout=0.2,
)

MOBILENET_V3_SMALL = replace(
    MOBILENET_V3_LARGE,
    source="MobileNetV3 Table 2; slim mobilenet_v3.py V3_SMALL",
    body=(  #  k, exp, out,  SE,   NL, s
        Bneck(3,  16,  16, True,  RE, 2),
        Bneck(3,  72,  24, False, RE, 2),
        Bneck(3,  88,  24, False, RE, 1),
        Bneck(5,  96,  40, True,  HS, 2),
        Bneck(5, 240,  40, True,  HS, 1),
        Bneck(5, 240,  40, True,  HS, 1),
        Bneck(5, 120,  48, True,  HS, 1),
        Bneck(5, 144,  48, True,  HS, 1),
        Bneck(5, 288,  96, True,  HS, 2),
        Bneck(5, 576,  96, True,  HS, 1),
        Bneck(5, 576,  96, True,  HS, 1),
    ),
    head=Conv(576, kernel=1, act=HS),
    pre_logits=Conv(1024, kernel=1, act=HS, scale=UP_ONLY),
)


def minimalistic(arch: Architecture) -> Architecture:
    """slim's ``V3_*_MINIMALISTIC``: the same widths with no SE, no h-swish, 3x3 depthwise."""
    return replace(
        arch,
        source=arch.source + " (minimalistic)",
        stem=replace(arch.stem, act=RE),
        body=tuple(row.minimalistic() for row in arch.body),
        head=replace(arch.head, act=RE),
        pre_logits=replace(arch.pre_logits, act=RE),
        act=RE,
    )


for _size, _arch in (("large", MOBILENET_V3_LARGE), ("small", MOBILENET_V3_SMALL)):
    register(ModelEntry(f"mobilenet_v3_{_size}_100", _arch, aliases=(
        f"mobilenetv3_{_size}_100", f"mobilenet_v3_{_size}")))
    register(ModelEntry(f"mobilenet_v3_{_size}_075", _arch, width_mult=0.75,
                        aliases=(f"mobilenetv3_{_size}_075",)))
    register(ModelEntry(f"mobilenet_v3_{_size}_minimal_100", minimalistic(_arch),
                        aliases=(f"tf_mobilenetv3_{_size}_minimal_100",)))
