"""Checkpoints: every write and read of a training checkpoint goes through :func:`save_checkpoint` and
:func:`load_checkpoint`, here and nowhere else.

A checkpoint is a dict of top-level entries, each owned by one piece of the engine: ``model``,
``history``, ``epoch`` and ``rng`` (the loop), ``optim`` (and for Lagging ``optim_encoder``,
``optim_decoder``, ``lagging``, ``batch_rng``; for pretraining ``decoder_at_init``: the strategy),
``best`` and ``since_best`` (early stopping).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import Callback

__all__ = ["Checkpointing", "load_checkpoint", "save_checkpoint"]


def save_checkpoint(state: dict, path) -> None:
    """Write ``state`` to ``path`` (creating its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def load_checkpoint(path, map_location) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, its tensors on ``map_location``."""
    return torch.load(path, map_location=map_location, weights_only=False)


class Checkpointing(Callback):
    """Write the loop's state to ``path`` after every epoch (the first process writes; the others wait)."""

    def __init__(self, path):
        self.path = Path(path)

    def on_fit_start(self, loop) -> None:
        loop.checkpoint_path = self.path  # named in TrainingDiverged's message

    def on_epoch_recorded(self, loop, record: dict) -> None:
        if loop.is_global_zero:
            save_checkpoint(loop.state_dict(), self.path)
        if loop.world_size > 1:
            loop.fabric.barrier()
