"""The papers' reported cost figures, typed once, as printed, with their source.

Values are strings exactly as printed so that the precision of the last printed digit is part of
the data (``"4.2"`` means +-0.1 M). Our own figures are never typed here: tests and
``mobilenets demo`` recompute them with :func:`mobilenets.profile` and compare.

``params_bn`` says whether a table's parameter counts include BatchNorm's scale and shift: the
MobileNetV2 slim README and the MobileNetV3 paper count conv/SE/FC weights and biases only; the
MobileNetV1 slim README and the EfficientNet paper (TensorFlow's trainable variables) include BN.
MobileNetV4's Table 6 does not say; its Conv-S figure fits either count (Conv-M/L fit neither).
The MobileNetV1 paper's one-decimal figures fit either count.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class PaperFigure:
    model: str                    # registered name
    resolution: int
    macs: str | None              # as printed, in units of ``macs_unit``
    params: str | None            # as printed, millions
    source: str
    width_mult: float | None = None   # None: the registered width
    macs_unit: float = 1e6            # EfficientNet prints billions of FLOPs (= multiply-adds)
    params_bn: bool = False

    @property
    def key(self) -> str:
        w = "" if self.width_mult is None else f"@w{self.width_mult}"
        return f"{self.model}{w}@{self.resolution}"

    @staticmethod
    def unit(printed: str) -> float:
        """One unit of the last printed digit: ``"4.2"`` -> 0.1, ``"569"`` -> 1."""
        return float(Decimal(1).scaleb(Decimal(printed).as_tuple().exponent))


def _grid(prefix, widths, resolutions, macs_rows, params, source, params_bn):
    out = []
    for (suffix, w), row, p in zip(widths, macs_rows, params):
        for r, m in zip(resolutions, row):
            out.append(PaperFigure(f"{prefix}_{suffix}", r, m, p, source, params_bn=params_bn))
    return out


V1_TABLE6 = "MobileNetV1 paper Table 6"
V1_TABLE7 = "MobileNetV1 paper Table 7"
V1_README = "slim research/slim/nets/mobilenet_v1.md (float checkpoints 2018_02_22)"
V2_README = "slim research/slim/nets/mobilenet/README.md"
V3_TABLE9 = "MobileNetV3 paper (arXiv 1905.02244 v5) Table 9"
V3_README = "slim research/slim/nets/mobilenet/README.md (MobileNetV3 checkpoints)"
EFF_TABLE2 = "EfficientNet paper Table 2"
# EfficientNetV2 paper Table 7 could not be read (only third-party copies: 22M/8.8B, 54M/24B,
# 120M/53B, unverified); the reference code's README is typed instead
EFF_V2_README = "google/automl efficientnetv2/README.md"
FD_README = "qinzheng93/FD-MobileNet README, Results on ImageNet 2012"
LITE_README = "tensorflow/tpu models/official/efficientnet/lite/README.md"
V4_TABLE6 = "MobileNetV4 paper (arXiv 2404.10518) Table 6"

_V1_WIDTHS = (("100", 1.0), ("075", 0.75), ("050", 0.5), ("025", 0.25))

FIGURES: list[PaperFigure] = [
    # MobileNetV1 Table 6 (width) and Table 7 (resolution): Million Mult-Adds, Million Params
    PaperFigure("mobilenet_v1_100", 224, "569", "4.2", V1_TABLE6),
    PaperFigure("mobilenet_v1_075", 224, "325", "2.6", V1_TABLE6),
    PaperFigure("mobilenet_v1_050", 224, "149", "1.3", V1_TABLE6),
    PaperFigure("mobilenet_v1_025", 224, "41", "0.5", V1_TABLE6),
    PaperFigure("mobilenet_v1_100", 192, "418", "4.2", V1_TABLE7),
    PaperFigure("mobilenet_v1_100", 160, "290", "4.2", V1_TABLE7),
    PaperFigure("mobilenet_v1_100", 128, "186", "4.2", V1_TABLE7),
    *_grid("mobilenet_v1", _V1_WIDTHS, (224, 192, 160, 128),
           (("569", "418", "291", "186"), ("317", "233", "162", "104"),
            ("150", "110", "77", "49"), ("41", "34", "21", "14")),
           ("4.24", "2.59", "1.34", "0.47"), V1_README, params_bn=True),
    # MobileNetV2 width x resolution grid (MACs M, params M)
    PaperFigure("mobilenet_v2_140", 224, "582", "6.06", V2_README),
    PaperFigure("mobilenet_v2_130", 224, "509", "5.34", V2_README),
    *_grid("mobilenet_v2", (("100", 1.0), ("075", 0.75), ("050", 0.5), ("035", 0.35)),
           (224, 192, 160, 128, 96),
           (("300", "221", "154", "99", "56"), ("209", "153", "107", "69", "39"),
            ("97", "71", "50", "32", "18"), ("59", "43", "30", "20", "11")),
           ("3.47", "2.61", "1.95", "1.66"), V2_README, params_bn=False),
    # MobileNetV3 Table 9 (v5): MAdds M, Params M
    PaperFigure("mobilenet_v3_large_100", 224, "356", "7.5", V3_TABLE9, width_mult=1.25),
    PaperFigure("mobilenet_v3_large_100", 224, "217", "5.4", V3_TABLE9),
    PaperFigure("mobilenet_v3_large_075", 224, "155", "4.0", V3_TABLE9),
    PaperFigure("mobilenet_v3_large_100", 224, "69", "2.6", V3_TABLE9, width_mult=0.5),
    PaperFigure("mobilenet_v3_large_100", 224, "40", "2.2", V3_TABLE9, width_mult=0.35),
    *[PaperFigure("mobilenet_v3_large_100", r, m, "5.4", V3_TABLE9)
      for r, m in ((256, "282"), (192, "160"), (160, "112"), (128, "73"), (96, "43"))],
    PaperFigure("mobilenet_v3_small_100", 224, "91", "3.6", V3_TABLE9, width_mult=1.25),
    PaperFigure("mobilenet_v3_small_100", 224, "57", "2.5", V3_TABLE9),
    PaperFigure("mobilenet_v3_small_075", 224, "44", "2.0", V3_TABLE9),
    PaperFigure("mobilenet_v3_small_100", 224, "21", "1.6", V3_TABLE9, width_mult=0.5),
    PaperFigure("mobilenet_v3_small_100", 224, "12", "1.4", V3_TABLE9, width_mult=0.35),
    *[PaperFigure("mobilenet_v3_small_100", r, m, "2.5", V3_TABLE9)
      for r, m in ((256, "74"), (160, "30"), (128, "20"), (96, "12"))],
    PaperFigure("mobilenet_v3_large_minimal_100", 224, "209", "3.9", V3_README),
    PaperFigure("mobilenet_v3_small_minimal_100", 224, "65", "2.0", V3_README),
    # EfficientNet Table 2: #Params (M), #FLOPs (B; the paper's FLOPs are multiply-adds)
    *[PaperFigure(f"efficientnet_b{b}", r, f, p, EFF_TABLE2, macs_unit=1e9, params_bn=True)
      for b, r, p, f in ((0, 224, "5.3", "0.39"), (1, 240, "7.8", "0.70"), (2, 260, "9.2", "1.0"),
                         (3, 300, "12", "1.8"), (4, 380, "19", "4.2"), (5, 456, "30", "9.9"),
                         (6, 528, "43", "19"), (7, 600, "66", "37"))],
    # EfficientNet-Lite README table: Params (M, TF trainable variables: BN included), MAdds
    # at the builder's resolutions
    *[PaperFigure(f"efficientnet_lite{b}", r, m, p, LITE_README, macs_unit=u, params_bn=True)
      for b, r, p, m, u in ((0, 224, "4.7", "407", 1e6), (1, 240, "5.4", "631", 1e6),
                            (2, 260, "6.1", "899", 1e6), (3, 280, "8.2", "1.44", 1e9),
                            (4, 300, "13.0", "2.64", 1e9))],
    # EfficientNetV2 (automl README): Params (M), FLOPs (B; multiply-adds) at the eval size
    *[PaperFigure(f"efficientnet_v2_{v}", r, f, p, EFF_V2_README, macs_unit=1e9, params_bn=True)
      for v, r, p, f in (("s", 384, "21.5", "8.4"), ("m", 480, "54.1", "24.7"),
                         ("l", 480, "119.5", "56.3"))],
    # FD-MobileNet: MFLOPs (multiply-adds) from the official README
    PaperFigure("fd_mobilenet_100", 224, "144", None, FD_README),
    PaperFigure("fd_mobilenet_050", 224, "40", None, FD_README),
    PaperFigure("fd_mobilenet_025", 224, "12", None, FD_README),
    # MobileNetV4 Table 6: Params (M), MACs (G), at the tables' input sizes
    *[PaperFigure(f"mobilenet_v4_conv_{size}_100", r, m, p, V4_TABLE6, macs_unit=1e9,
                  params_bn=True)
      for size, r, p, m in (("small", 224, "3.8", "0.2"), ("medium", 256, "9.2", "1.0"),
                            ("large", 384, "31", "5.9"))],
]

# MobileNetV1 paper Table 2, "Resource Per Layer Type" (percent of Mult-Adds, of parameters).
# The printed Conv 3x3 Mult-Adds "1.19" is a digit swap of 1.91 (10.84M of 568.7M; the printed
# column sums to 99.29%).
V1_TABLE2 = {"conv1x1": ("94.86", "74.59"), "depthwise": ("3.06", "1.06"),
             "conv": ("1.19", "0.02"), "fc": ("0.18", "24.33")}

# MobileNetV2 paper (arXiv v4) Table 3, "max" row: peak memory in Kb of 16-bit activations.
V2_TABLE3_MAX_KB = {"mobilenet_v1_100": "1600", "mobilenet_v2_100": "400"}
