"""Recognising a diagonal Gaussian, whose KL and entropy split over dimensions in closed form."""

from __future__ import annotations

import pyro.distributions as dist

__all__ = ["diagonal_normal"]


def diagonal_normal(fn) -> dist.Normal | None:
    """The ``Normal`` under any ``Independent`` wrappers of ``fn`` (a diagonal Gaussian), else ``None``."""
    while isinstance(fn, dist.Independent):
        fn = fn.base_dist
    return fn if isinstance(fn, dist.Normal) else None
