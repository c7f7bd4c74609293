"""The global random streams (torch, Python, NumPy, CUDA) as a checkpointable value."""

from __future__ import annotations

import random
import warnings

import numpy as np
import torch

__all__ = ["rng_state", "set_rng_state"]


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # samples drawn on the GPU use its generators
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`'s streams. A checkpoint written on a GPU resumes on a machine without CUDA too
    (its CUDA streams are then skipped, with a warning), and on fewer GPUs (the first ones' streams)."""
    torch.set_rng_state(state["torch"].cpu())  # map_location may have moved it
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state:
        if not torch.cuda.is_available():  # training goes on here without them: from the same state, not bit for bit
            warnings.warn(
                "the checkpoint was written while training on a GPU: its CUDA random streams cannot be restored "
                "on this machine without CUDA, so the resumed run does not repeat the GPU run's draws exactly",
                stacklevel=2,
            )
            return
        saved = [s.cpu() for s in state["cuda"]][: torch.cuda.device_count()]  # fewer GPUs here: the first ones
        for device, generator_state in enumerate(saved):
            torch.cuda.set_rng_state(generator_state, device)
