"""Our recomputed cost figures against the papers' tables (typed once in
``mobilenets.cost.paper_figures``): |ours - paper| below one unit of the last printed digit.

Known exceptions are listed below with the reason; for each, the test checks that the paper's
figure really is off (so the list cannot go stale) and that ours equals the reference code's
arithmetic (the 'derived' value of shared/reference/paper-tables.md, to its printed precision).
"""

import functools

import pytest
import torch

import mobilenets
from mobilenets.cost.paper_figures import (EFF_TABLE2, EFF_V2_README, FIGURES, LITE_README,
                                           V1_README, V1_TABLE2, V2_TABLE3_MAX_KB, V3_README,
                                           V3_TABLE9, V4_TABLE6, PaperFigure)

# (figure key, "macs" | "params", source) -> (reason, the reference code's arithmetic as
# printed in paper-tables.md, in the figure's own unit)
EXCEPTIONS = {
    ("efficientnet_b1@240", "macs", EFF_TABLE2): (
        "paper prints 0.70B; the reference builder's layers give 0.687B (its footnote: 'FLOPS "
        "may differ from theoretical value due to rounding')", "0.687"),
    ("efficientnet_b4@380", "macs", EFF_TABLE2): (
        "paper prints 4.2B; the reference builder's layers give 4.394B (same footnote)", "4.394"),
    ("efficientnet_b5@456", "macs", EFF_TABLE2): (
        "paper prints 9.9B; the reference builder's layers give 10.266B (same footnote)",
        "10.266"),
    **{(f"mobilenet_v1_075@{r}", "macs", V1_README): (
        "slim README's 0.75 row is ~2.5% below the arithmetic of slim's own layers; the paper "
        "itself prints 325 (Table 6) and 239 (Table 10) for 224 and 192", m)
       for r, m in ((224, "325.4"), (192, "239.3"), (160, "166.4"), (128, "106.8"))},
    **{(f"efficientnet_lite{b}@{r}", "macs", LITE_README): (
        "the Lite README's MAdds run 3-6% above the conv + linear multiply-adds of the "
        "builder's own layers at the same resolution (dense-and-families.md 1.2: unexplained; "
        "TF's counter probably counts more op types)", m)
       for b, r, m in ((0, 224, "385"), (1, 240, "600"), (2, 260, "860"), (3, 280, "1.383"),
                       (4, 300, "2.553"))},
    ("mobilenet_v1_025@192", "macs", V1_README): (
        "slim README prints 34; slim's layers give 30.2 (every other entry matches to 1M)",
        "30.2"),
    ("efficientnet_v2_m@480", "macs", EFF_V2_README): (
        "automl README prints 24.7B; automl's and torchvision's layers give 24.582B "
        "(torchvision's _ops for EfficientNet_V2_M_Weights)", "24.582"),
    ("efficientnet_v2_l@480", "macs", EFF_V2_README): (
        "automl README prints 56.3B; automl's and torchvision's layers give 56.08B "
        "(torchvision's _ops for EfficientNet_V2_L_Weights, a port of automl's checkpoint)",
        "56.08"),
    ("efficientnet_v2_l@480", "params", EFF_V2_README): (
        "automl README prints 119.5M; the layers give 118.515M, torchvision's num_params and "
        "timm's tf_efficientnetv2_l alike (unexplained)", "118.515"),
    ("mobilenet_v3_large_100@w1.25@224", "params", V3_TABLE9): (
        "Table 9's 7.5M implies the final 1280 layer kept its width at 1.25, but Small 1.25's "
        "3.6M implies it widened; we follow slim (finegrain_classification_mode keeps it only "
        "below 1)", "8.225"),
    ("mobilenet_v3_small_minimal_100@224", "macs", V3_README): (
        "slim README prints 65 for Small minimalistic, like its 66 for Small (the earlier paper "
        "version); the v5 layers give 52.3 (paper-tables.md: unexplained, unconfirmed)", "52.3"),
    # MobileNetV4: the rows of Tabs. 12 / 14, built as printed (timm and TF-models build the
    # same), give more than Table 6 prints; dense-and-families.md section 3.5: cause unknown
    ("mobilenet_v4_conv_medium_100@256", "params", V4_TABLE6): (
        "Table 6 prints 9.2M; Tab. 12's rows (timm, TF-models) give 9.72M (timm 9,715,512)",
        "9.72"),
    ("mobilenet_v4_conv_large_100@384", "params", V4_TABLE6): (
        "Table 6 prints 31M; Tab. 14's rows (timm, TF-models) give 32.59M (timm 32,590,864)",
        "32.59"),
    ("mobilenet_v4_conv_large_100@384", "macs", V4_TABLE6): (
        "Table 6 prints 5.9G; Tab. 14's rows at 384 px give 6.376G", "6.376"),
}


@functools.lru_cache(maxsize=None)
def ours(model: str, width_mult: float | None, resolution: int):
    """Built on the meta device: the profile needs shapes only (no initialisation cost)."""
    options = {} if width_mult is None else {"width_mult": width_mult}
    with torch.device("meta"):
        model = mobilenets.create_model(model, **options)
    return mobilenets.profile(model, (3, resolution, resolution))


def _cases():
    for f in FIGURES:
        for what in ("macs", "params"):
            if getattr(f, what) is not None:
                yield pytest.param(f, what, id=f"{f.key}-{what}-{f.source.split()[0]}"
                                   f"{f.source.split()[-1]}")


def _value(f: PaperFigure, what: str) -> tuple[float, str, float]:
    """(ours in the figure's unit, the printed figure, the unit's size)."""
    p = ours(f.model, f.width_mult, f.resolution)
    if what == "macs":
        return p.macs / f.macs_unit, f.macs, f.macs_unit
    return (p.params if f.params_bn else p.params_no_bn) / 1e6, f.params, 1e6


@pytest.mark.parametrize("figure,what", list(_cases()))
def test_paper_figure(figure, what):
    mine, printed, _ = _value(figure, what)
    unit = PaperFigure.unit(printed)
    exception = EXCEPTIONS.get((figure.key, what, figure.source))
    if exception is None:
        assert abs(mine - float(printed)) < unit, (
            f"{figure.key} {what}: ours {mine}, {figure.source} prints {printed}")
    else:
        reason, derived = exception
        assert abs(mine - float(printed)) >= unit, f"listed as an exception but matches: {reason}"
        # ours rounds to the reference code's arithmetic as printed
        assert abs(mine - float(derived)) <= PaperFigure.unit(derived) / 2 + 1e-9, (
            f"ours {mine} does not round to the derived {derived}")


def test_every_exception_names_a_figure():
    keys = {(f.key, w, f.source) for f in FIGURES for w in ("macs", "params")}
    assert set(EXCEPTIONS) <= keys


def test_v1_table2_split_by_layer_type():
    """MobileNetV1 Table 2 to 0.1 point (Conv 3x3 Mult-Adds: the printed 1.19 is 1.91)."""
    shares = ours("mobilenet_v1_100", None, 224).by_type_share()
    for layer_type, (macs, params) in V1_TABLE2.items():
        expected_macs = 1.91 if layer_type == "conv" else float(macs)
        assert abs(shares[layer_type]["macs"] - expected_macs) < 0.1, layer_type
        assert abs(shares[layer_type]["params"] - float(params)) < 0.1, layer_type
    assert abs(shares["conv"]["macs"] - float(V1_TABLE2["conv"][0])) > 0.5   # the typo


@pytest.mark.parametrize("name", sorted(V2_TABLE3_MAX_KB))
def test_v2_table3_peak_memory(name):
    """MobileNetV2 Table 3's max row (16-bit activations, in thousands of bytes, rounded to
    two significant digits by the paper): within 1%."""
    peak_bytes = ours(name, None, 224).peak_memory_bottleneck * 2
    assert abs(peak_bytes / 1000 - float(V2_TABLE3_MAX_KB[name])) <= 0.01 * float(
        V2_TABLE3_MAX_KB[name])
