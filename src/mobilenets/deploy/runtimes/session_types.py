"""The small records a runtime's session returns, in ``onnxruntime.InferenceSession``'s shape
(see the package docstring): inputs and outputs with ``.name`` and ``.shape``, and
``get_modelmeta()`` with ``.custom_metadata_map``. Runtimes other than onnxruntime build
them from their own objects."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arg:
    """Name and shape of an input or output (ints, or a string for a symbolic or dynamic
    dimension such as the batch)."""

    name: str
    shape: list


@dataclass(frozen=True)
class Meta:
    custom_metadata_map: dict


__all__ = ["Arg", "Meta"]
