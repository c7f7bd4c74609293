"""Checks run before any work starts, so that a bad device or output path fails in the first
second with one clear message instead of after a finished training run."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch

__all__ = ["is_positive_number", "resolve_device", "writable_dir", "writable_file"]


def is_positive_number(value) -> bool:
    """Whether ``value`` is a finite real number > 0 (not a bool, not a string): a rate, a margin, a multiplier."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def resolve_device(device) -> torch.device | None:
    """``torch.device(device)``, or a ``ValueError`` naming what is wrong (unknown name, no CUDA)."""
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N' ({error})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} asked for; this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type not in ("cpu", "mps", "meta"):
        raise ValueError(f"unsupported device {str(device)!r}: use 'cpu' or 'cuda'")
    return device


def writable_dir(path, what: str = "output directory") -> Path:
    """Create ``path`` (with parents) if needed and prove it writable by writing a file there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"cannot write to the {what} {path}: {error.strerror or error}") from None
    return path


def writable_file(path, what: str = "output file", suffixes=None) -> Path:
    """Check that ``path``'s folder is writable (creating it) and, with ``suffixes``, that its suffix is one of them."""
    path = Path(path)
    if suffixes is not None and path.suffix.lower().lstrip(".") not in suffixes:
        raise ValueError(f"the {what} {path} must end in one of {', '.join('.' + s for s in sorted(suffixes))}")
    writable_dir(path.parent if str(path.parent) else ".", f"folder of the {what}")
    if path.is_dir():
        raise ValueError(f"the {what} {path} is a directory; give a file name")
    return path
