"""Checkpoints: every write and read of a training checkpoint goes through :func:`save_checkpoint` and
:func:`load_checkpoint`, here and nowhere else.

A checkpoint is a dict of top-level entries, each owned by one piece of the engine: ``model``,
``history``, ``epoch`` and ``rng`` (the loop), ``optim`` (and for Lagging ``optim_encoder``,
``optim_decoder``, ``lagging``, ``batch_rng``; for pretraining ``decoder_at_init``: the strategy),
``best`` and ``since_best`` (early stopping); between two steps of an epoch also ``step`` and
``epoch_partial`` (the loop) and ``max_batch_kl_partial`` (:class:`~.batch_kl.MaxBatchKL`).

Beside it, :func:`validation_file` keeps the finished stages of the validation in progress (an
:class:`~pyro_lid.diagnostics.EvaluationCheckpoint`, written by :class:`~.validation.ValidationMetrics`);
:class:`Checkpointing` deletes it once the epoch's checkpoint holds that validation, or when it is stale.
"""

from __future__ import annotations

import time
from pathlib import Path

from ... import checkpoints
from ..first_process import on_first_process
from .base import Callback

__all__ = ["Checkpointing", "load_checkpoint", "save_checkpoint", "validation_file"]

#: Entries every training checkpoint has (the strategy's and callbacks' own come beside them).
REQUIRED_KEYS = ("model", "optim", "history", "epoch", "best", "since_best", "rng")


def validation_file(path) -> Path:
    """Where the validation of the epoch in progress keeps its finished stages, beside the checkpoint ``path``
    (``run.pt`` -> ``run.pt.validation``), until that epoch's checkpoint is written."""
    path = Path(path)
    return path.with_name(path.name + ".validation")


def save_checkpoint(state: dict, path) -> None:
    """Write ``state`` to ``path`` (creating its folder), whole or not at all: the previous checkpoint
    stays until the new one is complete (:func:`~pyro_lid.infer.checkpoints.atomic_save`)."""
    checkpoints.atomic_save(state, path)


def load_checkpoint(path, map_location, config: dict | None = None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, its tensors on ``map_location``. An empty,
    truncated or corrupt file, or (with ``config``) one written under another training configuration
    or on other data, raises a :class:`~pyro_lid.infer.checkpoints.CheckpointError` naming the file
    and every difference."""
    state = checkpoints.load_checkpoint(path, map_location=map_location, required=REQUIRED_KEYS)
    if config is not None:
        checkpoints.check_resumable(state.get("config"), config, path)
    return state


class Checkpointing(Callback):
    """Write the loop's state to ``path`` after every epoch (the first process writes; the others wait),
    with the training ``config`` (:func:`~pyro_lid.infer.checkpoints.training_config`) that a resumed
    run must share; also between two steps every ``every_n_steps`` steps of an epoch and/or once
    ``every_seconds`` of wall-clock time have passed since the last write (a long epoch then loses at
    most that much work), and after the epoch's last step, before its validation (which can take long:
    SA-VAE refines every validation posterior); a run resumed from that checkpoint trains no step again
    and goes straight to the validation. After the step at which a stop signal was seen, it always writes. The
    first process decides the time rule, and the others follow its decision."""

    def __init__(self, path, config: dict | None = None, every_n_steps: int | None = None,
                 every_seconds: float | None = None):  # fmt: skip
        self.path = Path(path)
        self.config = config
        self.every_n_steps, self.every_seconds = every_n_steps, every_seconds
        self.last_write = time.monotonic()

    def state_dict(self) -> dict:
        return {"config": self.config}

    def on_fit_start(self, loop) -> None:
        loop.checkpoint_path = self.path  # named in TrainingDiverged's message
        self.last_write = time.monotonic()
        kept = validation_file(self.path)

        def drop_stale_validation():  # the stages of an epoch this checkpoint already holds
            from ....diagnostics.resumable import EvaluationCheckpoint

            if not kept.exists():
                return
            saved = EvaluationCheckpoint.saved_fingerprint(kept)
            if saved is None or not isinstance(saved.get("epoch"), int) or saved["epoch"] <= loop.epoch:
                kept.unlink(missing_ok=True)

        on_first_process(loop.fabric, drop_stale_validation, f"reading the kept validation {kept}")

    def _write(self, loop) -> None:
        what = f"writing the checkpoint {self.path}"
        on_first_process(loop.fabric, lambda: save_checkpoint(loop.state_dict(), self.path), what)
        loop.last_checkpoint = loop.position()
        self.last_write = time.monotonic()

    def _due(self, loop) -> bool:
        if loop.step >= loop.steps_per_epoch:  # the last step: what follows (validation) may take long
            return True
        if self.every_n_steps is not None and loop.step % self.every_n_steps == 0:
            return True
        if self.every_seconds is None:
            return False
        due = time.monotonic() - self.last_write >= self.every_seconds
        if loop.world_size > 1:  # clocks differ between processes: all follow the first one
            due = loop.fabric.broadcast(due, src=0)
        return due

    def on_train_step_end(self, loop, epoch: int, step: int, x) -> None:
        if loop.stopping:  # a stop signal: the run ends after this step (agreed on by every process)
            self._write(loop)
        elif self.every_n_steps is not None or self.every_seconds is not None:
            if self._due(loop):
                self._write(loop)

    def on_epoch_recorded(self, loop, record: dict) -> None:
        self._write(loop)
        kept = validation_file(self.path)  # the epoch's checkpoint holds its validation now
        on_first_process(loop.fabric, lambda: kept.unlink(missing_ok=True), f"removing {kept}")
