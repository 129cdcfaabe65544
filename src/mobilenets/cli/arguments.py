"""Argument types shared by the commands: numbers checked when the command line is parsed,
so a bad value is a usage error naming the option, not a traceback later."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1 (sizes, counts, threads, top-k)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (worker processes, warm-up calls, caps where 0 means none)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


__all__ = ["non_negative_int", "positive_int"]
