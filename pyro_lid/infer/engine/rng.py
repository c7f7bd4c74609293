"""The global random streams (torch, Python, NumPy, CUDA) as a checkpointable value."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["rng_state", "set_rng_state"]


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # samples drawn on the GPU use its generators
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())  # map_location may have moved it
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state:
        if not torch.cuda.is_available():
            raise ValueError("the checkpoint was written while training on a GPU; resume it on a machine with CUDA")
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
