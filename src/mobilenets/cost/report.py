"""Text tables of cost figures, for the command line."""

from __future__ import annotations

from .paper_figures import FIGURES, PaperFigure
from .profile import TYPE_LABELS, Profile


def _m(n: float) -> str:
    return f"{n / 1e6:,.3f}"


def summary(name: str, p: Profile) -> str:
    # the Table 3 figure needs a block sequence (``blocks``); heads and detectors have none
    table3 = (f"{p.peak_memory_bottleneck:,} elements (MobileNetV2 Table 3 definition), "
              if p.peak_memory_bottleneck else "")
    return "\n".join([
        f"model            {name}",
        f"input            {p.input_size[0]}x{p.input_size[1]}x{p.input_size[2]}",
        f"params           {p.params:,} ({_m(p.params)} M; {p.params_no_bn:,} without BatchNorm)",
        f"MACs             {p.macs:,} ({_m(p.macs)} M multiply-adds)",
        f"peak memory      {table3}{p.peak_memory_live:,} elements (live tensors, in order)",
    ])


def by_type_table(p: Profile) -> str:
    rows = [f"{'type':18s} {'MACs':>14s} {'% MACs':>8s} {'params':>12s} {'% params':>9s}"]
    shares = p.by_type_share()
    for t, v in p.by_type().items():
        if t == "norm":
            rows.append(f"{TYPE_LABELS[t]:18s} {v['macs']:>14,} {'':>8s} {v['params']:>12,} "
                        f"{'(not in %)':>9s}")
        else:
            rows.append(f"{TYPE_LABELS[t]:18s} {v['macs']:>14,} {shares[t]['macs']:>7.2f}% "
                        f"{v['params']:>12,} {shares[t]['params']:>8.2f}%")
    return "\n".join(rows)


def per_layer_table(p: Profile) -> str:
    rows = [f"{'layer':36s} {'type':10s} {'in':>14s} {'out':>14s} {'params':>10s} {'MACs':>13s}"]
    for layer in p.layers:
        rows.append(f"{layer.name:36s} {layer.type:10s} {_shape(layer.in_shape):>14s} "
                    f"{_shape(layer.out_shape):>14s} {layer.params:>10,} {layer.macs:>13,}")
    return "\n".join(rows)


def _shape(s: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in s)


def paper_figure_for(name: str, resolution: int, width_mult: float | None = None
                     ) -> PaperFigure | None:
    """The first paper figure for this registered model at its own width and ``resolution``."""
    for f in FIGURES:
        if f.model == name and f.resolution == resolution and f.width_mult == width_mult:
            return f
    return None


def paper_params(f: PaperFigure, p: Profile) -> float:
    """Our params in the counting convention of ``f``'s table (with or without BatchNorm)."""
    return p.params if f.params_bn else p.params_no_bn
