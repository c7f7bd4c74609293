"""The interface of a callback: hooks the loop calls at fixed points, in the order the callbacks are listed."""

from __future__ import annotations

__all__ = ["Callback"]


class Callback:
    """Base class of the loop's callbacks; every hook does nothing by default.

    Order of the hooks in one run: :meth:`setup` (before the strategy builds its optimizers),
    :meth:`on_fit_start`; per epoch :meth:`on_train_step_start` before every step,
    :meth:`on_train_epoch_end` (fill the record: KL weight, validation, best loss),
    then the strategy's ``on_epoch_end``, then :meth:`on_epoch_recorded` (the record is in the
    history: print, log, checkpoint); :meth:`on_fit_end` after the last epoch, and
    :meth:`teardown` however the run ends (finished, diverged, interrupted).
    """

    def setup(self, loop) -> None: ...

    def on_fit_start(self, loop) -> None: ...

    def on_train_step_start(self, loop, epoch: int, step: int) -> None: ...

    def on_train_step_end(self, loop, epoch: int, step: int, x) -> None:
        """After a finite step, with the mini-batch ``x`` it trained on (this process's shard)."""

    def on_train_epoch_end(self, loop, epoch: int, record: dict) -> None: ...

    def on_epoch_recorded(self, loop, record: dict) -> None: ...

    def on_fit_end(self, loop) -> None: ...

    def teardown(self, loop) -> None: ...

    def state_dict(self) -> dict:
        """Top-level checkpoint entries."""
        return {}

    def load_state_dict(self, state: dict) -> None: ...
