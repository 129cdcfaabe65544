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

    @classmethod
    def into_config(cls, cfg, options: dict | None):
        """``cfg`` with ``options`` merged into ``cfg.extra[KEY]``, checked before anything
        runs."""
        if options:
            extra = dict(cfg.extra)
            extra[cls.KEY] = {**(extra.get(cls.KEY) or {}), **options}
            cfg = dataclasses.replace(cfg, extra=extra)
        cls.from_config(cfg)
        return cfg


__all__ = ["TaskOptions"]
