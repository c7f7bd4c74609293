"""Building the Fabric for ``fit`` and running the loop in every process it launches."""

from __future__ import annotations

import io
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from ..._checks import resolve_device

__all__ = ["make_fabric", "quiet_lightning", "train_in_process"]

_MIXED = ("16-mixed", "16", 16)


@contextmanager
def quiet_lightning(quiet: bool = True):
    """Keep Lightning's informational lines (e.g. about Tensor Cores) off stderr: ``fit(progress=False)`` is
    silent on one process. Several processes keep them (which rank is which is worth seeing)."""
    logger = logging.getLogger("lightning.fabric")
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def make_fabric(model, *, device=None, accelerator=None, devices=1, num_nodes=1, distributed=None, precision=None,
                loggers=()):  # fmt: skip
    """A :class:`lightning.fabric.Fabric` from ``fit``'s arguments (names as Lightning's, except ``distributed``,
    Lightning's ``strategy``: ``fit``'s ``strategy`` is the training recipe).

    ``device`` (``"cpu"``, ``"cuda:1"``) fixes accelerator and device index; without it the accelerator is
    the one the model's parameters are on.
    """
    from lightning.fabric import Fabric

    if isinstance(devices, bool) or not isinstance(devices, (int, list, tuple, str)):
        raise ValueError(f"devices must be a positive integer, a list of device indices or 'auto', got {devices!r}")
    if isinstance(devices, int) and devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise ValueError(f"num_nodes must be an integer >= 1, got {num_nodes!r}")
    if precision in _MIXED:
        raise ValueError(
            "precision='16-mixed' needs a gradient scaler, which Pyro's SVI step does not apply; use 'bf16-mixed'"
        )
    where = resolve_device(device) if device is not None else next(model.parameters()).device
    if accelerator is None:
        accelerator = where.type
    if where.index is not None and devices == 1:  # "cuda:1", or a model already on it
        devices = [where.index]
    with warnings.catch_warnings():  # e.g. "srun is available but not used": fit says how it runs in its docstring
        warnings.simplefilter("ignore")
        return Fabric(
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=distributed or "auto",
            precision=precision if precision is not None else "32-true",
            loggers=list(loggers),
        )


def train_in_process(
    fabric, model, train_data, loop_options: dict, checkpoint=None, resume: bool = False, config: dict | None = None
):
    """What every process runs: build the loop, resume or seed, train. Returns ``(history, state)`` where
    ``state`` is the model's state dict (saved to bytes) when several processes trained, so that a spawning
    parent can take the trained parameters; ``None`` otherwise."""
    from .callbacks.checkpoint import load_checkpoint, validation_file
    from .first_process import on_first_process
    from .loop import TrainingLoop

    loop = TrainingLoop(fabric, model, train_data, **loop_options)
    if resume and Path(checkpoint).exists():
        loop.load_state_dict(load_checkpoint(checkpoint, map_location=fabric.device, config=config), checkpoint)
    else:
        loop.seed_streams()
        if not resume and checkpoint is not None:  # a fresh run: an earlier run's kept validation is not its own
            kept = validation_file(checkpoint)
            on_first_process(fabric, lambda: kept.unlink(missing_ok=True), f"removing {kept}")
    history = loop.run()
    if fabric.world_size == 1:
        return history, None
    # bytes, not tensors: a spawned process's tensors travel through shared memory that ends with the process
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return history, buffer.getvalue()
