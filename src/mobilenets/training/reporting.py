"""What a run leaves behind besides checkpoints: ``metrics.jsonl``, ``curves.png``, TensorBoard
events (when tensorboard is installed), console lines and progress bars. Rank 0 only."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


class Reporter:
    """Writes one metrics line per epoch, step and epoch scalars to TensorBoard, and the curves.

    ``enabled`` is False on ranks other than 0: every method is then a no-op. ``metrics``: the
    task's validation metrics besides the loss, name -> (label, shown as a percentage)."""

    def __init__(self, out: Path, enabled: bool = True, tensorboard: bool = True,
                 resume_step: int | None = None,
                 metrics: dict[str, tuple[str, bool]] | None = None):
        self.out, self.enabled, self.writer = Path(out), enabled, None
        self.metrics = dict(metrics or {})
        if not (enabled and tensorboard):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:       # tensorboard is optional
            return
        # purge_step drops events a killed run logged after its last checkpoint
        self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=resume_step)

    def step(self, global_step: int, loss: float, lr: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/loss_step", loss, global_step)
            self.writer.add_scalar("train/lr", lr, global_step)

    def epoch(self, metrics: dict, global_step: int) -> None:
        if not self.enabled:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        shown = "".join(f"  {label} {_value(metrics[key], percent)}"
                        for key, (label, percent) in self.metrics.items() if key in metrics)
        print(f"epoch {metrics['epoch']}: loss {metrics['train_loss']:.3f}{shown}  "
              f"{metrics['images_per_s']:.0f} img/s", flush=True)
        if self.writer is not None:
            for key in ("train_loss", "val_loss", *self.metrics, "images_per_s"):
                if key in metrics:       # epochs without validation (val_every) lack some
                    self.writer.add_scalar(f"epoch/{key}", metrics[key], metrics["epoch"])
            self.writer.flush()

    def truncate(self, epochs_done: int) -> None:
        """Drop metric lines a killed run wrote after its last checkpoint."""
        path = self.out / "metrics.jsonl"
        if self.enabled and path.is_file():
            lines = path.read_text().splitlines()[:epochs_done]
            path.write_text("".join(line + "\n" for line in lines))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.enabled:
            plot_curves(self.out, self.metrics)


def _value(value: float, percent: bool) -> str:
    return f"{100 * value:.1f}%" if percent else f"{value:.4g}"


def progress_bar(enabled: bool, total: int, desc: str, stream=None):
    """A tqdm bar on a terminal; on a log file or pipe (where a bar would write a line per
    refresh) a line per tenth of ``total``; or a silent stand-in (``--no-progress``, rank >
    0). ``stream``: where it writes (default stderr, as tqdm)."""
    if not enabled:
        return _NoBar()
    stream = stream or sys.stderr
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None and _is_terminal(stream):
        return tqdm(total=total, desc=desc, leave=False, file=stream)
    return _LineBar(total, desc, stream)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):      # no isatty, or a closed stream
        return False


class _LineBar:
    """Progress for logs: one line each time another tenth of the steps is done."""

    def __init__(self, total: int, desc: str, stream, parts: int = 10):
        self.total, self.desc, self.stream, self.parts = total, desc, stream, parts
        self.done, self.printed, self.postfix = 0, 0, {}
        self.start = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.total <= 0:
            return
        part = min(self.parts, self.done * self.parts // self.total)
        if part > self.printed:
            self.printed = part
            extra = "".join(f"  {k} {v}" for k, v in self.postfix.items())
            print(f"{self.desc}: {self.done}/{self.total} steps "
                  f"({100 * self.done / self.total:.0f}%)  "
                  f"{time.perf_counter() - self.start:.1f} s{extra}",
                  file=self.stream, flush=True)

    def set_postfix(self, **kw) -> None:
        self.postfix = kw

    def close(self) -> None:
        pass


class _NoBar:
    def update(self, n): pass
    def set_postfix(self, **kw): pass
    def close(self): pass


def validated(rows: list[dict]) -> list[dict]:
    """The ``metrics.jsonl`` rows of validated epochs (every epoch unless ``val_every`` > 1;
    the others hold the training figures only)."""
    return [r for r in rows if "val_loss" in r]


def plot_curves(out: Path, metrics: dict[str, tuple[str, bool]] | None = None) -> None:
    """``curves.png``: the losses per epoch, and beside them the task's validation ``metrics``
    (as :class:`Reporter` takes them); skipped when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    path = Path(out) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epochs, [r["train_loss"] for r in rows], label="train")
    val = validated(rows)
    style = "-" if len(val) == len(rows) else ".-"
    a.plot([r["epoch"] for r in val], [r["val_loss"] for r in val], style, label="val")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    for key, (label, percent) in (metrics or {}).items():
        if not any(key in r for r in val):      # e.g. top-5 with 5 classes or fewer
            continue
        b.plot([r["epoch"] for r in val if key in r],
               [(100 if percent else 1) * r[key] for r in val if key in r], style, label=label)
    percents = {percent for _, percent in (metrics or {}).values()}
    b.set_xlabel("epoch"), b.set_ylabel("validation" + (" (%)" if percents == {True} else ""))
    if metrics:
        b.legend()
    fig.tight_layout()
    fig.savefig(Path(out) / "curves.png", dpi=100)
    plt.close(fig)
