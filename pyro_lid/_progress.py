"""Progress for long work, one rule everywhere: ``progress=None`` shows bars on a terminal and a
plain line per finished stage (epoch, evaluation step) otherwise; ``True`` always shows bars;
``False`` is silent."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

__all__ = ["bars_enabled", "progress_bar", "progress_line"]


def bars_enabled(progress: bool | None) -> bool:
    """Whether live bars are drawn: ``progress`` itself, or (``None``) whether stderr is a terminal."""
    return bool(progress) if progress is not None else sys.stderr.isatty()


def progress_bar(iterable=None, progress: bool | None = None, **kwargs):
    """A ``tqdm`` bar that follows the rule above (it leaves no trace when finished)."""
    return tqdm(iterable, disable=not bars_enabled(progress), leave=False, file=sys.stderr, **kwargs)


def progress_line(message: str, progress: bool | None = None) -> None:
    """One line on stderr, unless ``progress`` is ``False`` (written above any live bar)."""
    if progress is False:
        return
    if bars_enabled(progress):
        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)
