"""Per-block channel widths other than the table's: how a pruned network is described.

A pruned model is still a registered architecture; only the ``[in, mid, out]`` channels of its
blocks differ from what the table and multipliers give. ``create_model(name,
block_widths=...)`` builds it, so a saved pruned model reloads like any other (its
``config.json`` records the widths) and nothing below the compress package needs to know how
the widths were chosen.
"""

from __future__ import annotations

from dataclasses import replace

from .architecture import NetworkPlan
from .rounding import make_divisible

BlockWidths = list[list[list[int]]]


def block_widths(plan: NetworkPlan) -> BlockWidths:
    """``[in, mid, out]`` of every block, nested by table row."""
    return [[[s.in_ch, s.mid, s.out] for s in row] for row in plan.rows]


def with_block_widths(plan: NetworkPlan, widths: BlockWidths) -> NetworkPlan:
    """``plan`` with block widths ``widths`` (nested like :func:`block_widths`); the head (or
    pre-logits) input and the feature taps follow the last block's width."""
    if not isinstance(widths, (list, tuple)) or \
            [len(r) for r in widths] != [len(r) for r in plan.rows]:
        shape = [len(r) for r in widths] if isinstance(widths, (list, tuple)) else widths
        raise ValueError(f"block_widths for rows of {shape} blocks do not fit this network's "
                         f"rows of {[len(r) for r in plan.rows]} blocks")
    for row in widths:
        for w in row:
            if len(w) != 3 or not all(isinstance(c, int) and c > 0 for c in w):
                raise ValueError(f"each block width is [in, mid, out] of positive integers, "
                                 f"got {w!r}")
    rows = tuple(tuple(replace(s, in_ch=w[0], mid=w[1], out=w[2]) for s, w in zip(row, wrow))
                 for row, wrow in zip(plan.rows, widths))
    last = rows[-1][-1].out
    head, pre = plan.head, plan.pre_logits
    if head is not None:
        head = replace(head, in_ch=last)
    elif pre is not None:
        pre = replace(pre, in_ch=last)
    # the same taps (modules and strides); a block's tap carries its new output width
    taps = tuple(replace(t, channels=rows[int(t.module.split(".")[1])]
                         [int(t.module.split(".")[2])].out)
                 if t.module.startswith("blocks.") else t for t in plan.taps)
    return replace(plan, rows=rows, head=head, pre_logits=pre, taps=taps)


def reduce_tail(plan: NetworkPlan) -> NetworkPlan:
    """``plan`` with its tail halved: the MobileNetV3 paper's reduced-tail detection backbone
    (§6.3, Table 6's "†": every layer between C4 and C5 reduced x2), as torchvision's
    ``mobilenet_v3_*(reduced_tail=True)`` builds it. The last strided block's output, every
    later block's widths (and squeeze-excite width) and the head conv (and pre-logits) are
    halved, rounded to a multiple of 8; the last strided block's expansion (C4) keeps its
    width."""
    flat = [(r, i) for r, row in enumerate(plan.rows) for i in range(len(row))]
    strided = [k for k, (r, i) in enumerate(flat) if plan.rows[r][i].table_stride > 1]
    if not strided:
        raise ValueError("reduced_tail needs a strided block to start the tail from")
    half = lambda c: make_divisible(c / 2, 8)  # noqa: E731
    widths = block_widths(plan)
    first = strided[-1]
    for k, (r, i) in enumerate(flat[first:], start=first):
        w = widths[r][i]
        widths[r][i] = [w[0] if k == first else half(w[0]),
                        w[1] if k == first else half(w[1]), half(w[2])]
    reduced = with_block_widths(plan, widths)
    rows = tuple(tuple(replace(s, se=max(1, round(s.se * s.mid / old.mid))) if s.se else s
                       for s, old in zip(row, old_row))
                 for row, old_row in zip(reduced.rows, plan.rows))
    head, pre = reduced.head, reduced.pre_logits
    if head is not None:
        head = replace(head, out=half(head.out))
    if pre is not None:
        pre = replace(pre, in_ch=head.out if head is not None else pre.in_ch, out=half(pre.out))
    taps = tuple(replace(t, channels=head.out) if t.module == "head" else t
                 for t in reduced.taps)
    return replace(reduced, rows=rows, head=head, pre_logits=pre, taps=taps)


__all__ = ["BlockWidths", "block_widths", "reduce_tail", "with_block_widths"]
