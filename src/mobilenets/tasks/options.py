"""What the dense tasks' option dataclasses share: reading themselves from a run's config."""

from __future__ import annotations

import dataclasses
import json
import os
from numbers import Real
from typing import ClassVar

# What a field's annotation allows (annotations are strings here): a value of these types
_KINDS = {"str": (str, os.PathLike), "int": (int,), "float": (Real,), "tuple": (list, tuple),
          "dict": (dict,), "bool": (bool,)}


class TaskOptions:
    """Mixin for a task's options dataclass, kept in ``cfg.extra[KEY]`` (so that
    ``train_config.json`` and checkpoints record them); subclasses set ``KEY``."""

    KEY: ClassVar[str] = ""

    def check_types(self) -> None:
        """Raise ValueError naming an option whose value has the wrong type (a number for a
        pair, a word for a probability, ...), before the checks that compare values."""
        for f in dataclasses.fields(self):
            value, allowed = getattr(self, f.name), [a.strip() for a in str(f.type).split("|")]
            if value is None and "None" in allowed:
                continue
            kinds = tuple(k for a in allowed if a != "None" for k in _KINDS.get(a, (object,)))
            wrong = not isinstance(value, kinds) or (isinstance(value, bool)
                                                     and "bool" not in allowed)
            if not wrong and isinstance(value, (list, tuple)):
                wrong = not all(isinstance(v, Real) and not isinstance(v, bool) for v in value)
            if wrong:
                default = (f.default if f.default is not dataclasses.MISSING
                           else f.default_factory())
                example = list(default) if isinstance(default, tuple) else default
                want = {"tuple": "a list of numbers", "float": "a number", "int": "an integer",
                        "str": "a string", "dict": "a dict"}.get(allowed[0], allowed[0])
                raise ValueError(f"{self.KEY} option {f.name} must be {want}"
                                 + (f" (default {json.dumps(example)})" if example is not None
                                    else "") + f", not {value!r}")

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
