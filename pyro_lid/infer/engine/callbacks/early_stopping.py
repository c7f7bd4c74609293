"""The best validation loss so far, and stopping after ``patience`` epochs without a better one."""

from __future__ import annotations

import math

from .base import Callback

__all__ = ["EarlyStopping"]


class EarlyStopping(Callback):
    """Track ``best`` and ``since_best`` (checkpoint entries) from each record's ``val_loss``; with ``patience``
    (an integer >= 0) stop once ``since_best`` reaches it. Without ``val_loss`` in the records it does nothing."""

    def __init__(self, patience: int | None = None):
        self.patience, self.best, self.since_best = patience, math.inf, 0

    def on_fit_start(self, loop) -> None:
        # a run resumed at an epoch's end where it had stopped (same patience): it trains no further epoch
        if loop.epoch and not loop.step and self.patience is not None and self.since_best >= self.patience:
            loop.should_stop = True

    def on_train_epoch_end(self, loop, epoch: int, record: dict) -> None:
        if "val_loss" not in record:
            return
        if record["val_loss"] < self.best:
            self.best, self.since_best = record["val_loss"], 0
        else:
            self.since_best += 1
        if self.patience is not None and self.since_best >= self.patience:
            loop.should_stop = True

    def state_dict(self) -> dict:
        return {"best": self.best, "since_best": self.since_best}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.since_best = state["best"], state["since_best"]
