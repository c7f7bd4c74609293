"""The KL weight: the schedule's value at the strategy's schedule time, set on the model before each step."""

from __future__ import annotations

from ...schedules import make_schedule
from .base import Callback

__all__ = ["KLScheduleCallback"]


class KLScheduleCallback(Callback):
    """Set ``model.kl_weight`` to ``schedule(t)`` before every step, ``t`` in fractional epochs as the strategy
    counts them (``None`` from the strategy: weight 0); record the weight at the epoch's end; leave the model at
    weight 1 after every epoch and however training ends."""

    def __init__(self, schedule=None):
        self.schedule = make_schedule(schedule)

    def weight(self, loop, epoch: int, fraction: float) -> float:
        t = loop.strategy.kl_time(epoch, fraction)
        return 0.0 if t is None else self.schedule(t)

    def on_train_step_start(self, loop, epoch: int, step: int) -> None:
        loop.model.kl_weight = self.weight(loop, epoch, step / loop.steps_per_epoch)

    def on_train_epoch_end(self, loop, epoch: int, record: dict) -> None:
        loop.model.kl_weight = 1.0  # validation and diagnostics see the full objective
        record["kl_weight"] = self.weight(loop, epoch, 1.0)

    def teardown(self, loop) -> None:
        loop.model.kl_weight = 1.0
