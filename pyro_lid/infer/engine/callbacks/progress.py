"""One line per epoch on stderr (see :mod:`pyro_lid._progress` for when)."""

from __future__ import annotations

from ...._progress import progress_line
from ..first_process import on_first_process
from .base import Callback

__all__ = ["ProgressLine", "describe"]


def describe(record: dict) -> str:
    parts = [f"epoch {record['epoch']}: loss {record['train_loss']:.3f}"]
    for key in ("val_loss", "kl", "au", "mi", "max_batch_kl"):
        if key in record:
            parts.append(f"{key} {record[key]:.3f}")
    if "tokens_per_second" in record:
        parts.append(f"{record['tokens_per_second']:.0f} tokens/s")
    return ", ".join(parts)


class ProgressLine(Callback):
    """Write each epoch's summary line (first process only), also when no bar is drawn."""

    def __init__(self, progress: bool | None = None):
        self.progress = progress

    def on_epoch_recorded(self, loop, record: dict) -> None:
        line = describe(record)
        on_first_process(loop.fabric, lambda: progress_line(line, self.progress), "writing the progress line")
