"""Data sets: synthetic generators (built in, no download)."""

from .pinwheel import pinwheel

__all__ = ["pinwheel"]
