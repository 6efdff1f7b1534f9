"""The worker's one source of "now" (Unix seconds). Tests and test clocks replace it."""

from __future__ import annotations

import time
from collections.abc import Callable

_source: Callable[[], float] = time.time


def now() -> int:
    return int(_source())


def set_source(source: Callable[[], float]) -> Callable[[], float]:
    """Replace the clock; returns the previous source so a caller can restore it."""
    global _source
    previous, _source = _source, source
    return previous
