"""What the dense tasks' option dataclasses share: reading themselves from a run's config."""

from __future__ import annotations

import dataclasses
from typing import ClassVar


class TaskOptions:
    """Mixin for a task's options dataclass, kept in ``cfg.extra[KEY]`` (so that
    ``train_config.json`` and checkpoints record them); subclasses set ``KEY``."""

    KEY: ClassVar[str] = ""

    @classmethod
    def from_config(cls, cfg):
        given = dict(cfg.extra.get(cls.KEY) or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"unknown {cls.KEY} option(s) {', '.join(unknown)} in "
                             f"cfg.extra['{cls.KEY}']; known: {', '.join(sorted(known))}")
        return cls(**given)


__all__ = ["TaskOptions"]
