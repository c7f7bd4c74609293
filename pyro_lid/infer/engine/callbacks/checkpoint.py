"""Checkpoints: every write and read of a training checkpoint goes through :func:`save_checkpoint` and
:func:`load_checkpoint`, here and nowhere else.

A checkpoint is a dict of top-level entries, each owned by one piece of the engine: ``model``,
``history``, ``epoch`` and ``rng`` (the loop), ``optim`` (and for Lagging ``optim_encoder``,
``optim_decoder``, ``lagging``, ``batch_rng``; for pretraining ``decoder_at_init``: the strategy),
``best`` and ``since_best`` (early stopping).
"""

from __future__ import annotations

from pathlib import Path

from ... import checkpoints
from .base import Callback

__all__ = ["Checkpointing", "load_checkpoint", "save_checkpoint"]

#: Entries every training checkpoint has (the strategy's and callbacks' own come beside them).
REQUIRED_KEYS = ("model", "optim", "history", "epoch", "best", "since_best", "rng")


def save_checkpoint(state: dict, path) -> None:
    """Write ``state`` to ``path`` (creating its folder), whole or not at all: the previous checkpoint
    stays until the new one is complete (:func:`~pyro_lid.infer.checkpoints.atomic_save`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    run must share."""

    def __init__(self, path, config: dict | None = None):
        self.path = Path(path)
        self.config = config

    def state_dict(self) -> dict:
        return {"config": self.config}

    def on_fit_start(self, loop) -> None:
        loop.checkpoint_path = self.path  # named in TrainingDiverged's message

    def on_epoch_recorded(self, loop, record: dict) -> None:
        if loop.is_global_zero:
            save_checkpoint(loop.state_dict(), self.path)
        if loop.world_size > 1:
            loop.fabric.barrier()
