r"""Aggressive inference-network training: the Lagging VAE strategy (He et al. 2019).

Posterior collapse can start because the encoder lags behind the decoder. In the
*aggressive phase*, before every decoder update the encoder alone is trained on fresh
mini-batches until its objective stops improving: the running sum of losses is
compared every ``check_every`` (15) inner steps, at most ``max_inner_steps`` (100).
The phase ends at the first epoch whose validation mutual information
:math:`I_q(x; z)` is not above the best seen so far. After that, training is ordinary: one step of
both parts per mini-batch, with the same two optimizers (:class:`JointOptim`), as in He et al.'s code.

Both parts are plain Pyro SVI steps on the same model and guide, with optimizers that
update only the encoder's or only the decoder's parameters (:class:`ParamSubsetOptim`);
the ELBO is unchanged.

Reference: J. He, D. Spokoyny, G. Neubig, T. Berg-Kirkpatrick, "Lagging Inference
Networks and Posterior Collapse in Variational Autoencoders", ICLR 2019.
"""

from __future__ import annotations

import math

import torch
from pyro.optim import PyroOptim

__all__ = ["JointOptim", "ParamSubsetOptim", "encoder_parameters", "LaggingState", "encoder_burn_in"]


class ParamSubsetOptim(PyroOptim):
    """A Pyro optimizer that steps only the parameters in ``keep`` (by identity); SVI zeroes the rest's gradients."""

    def __init__(self, optim_constructor, optim_args, keep, clip_args=None):
        super().__init__(optim_constructor, optim_args, clip_args)
        self.keep = {id(p) for p in keep}

    def __call__(self, params, *args, **kwargs):
        super().__call__([p for p in params if id(p) in self.keep], *args, **kwargs)


class JointOptim(PyroOptim):
    """Several :class:`ParamSubsetOptim` stepped together on one gradient, each on its own parameters and with its
    own state (so it holds no optimizer or state of its own): Lagging's ordinary phase goes on with the encoder's
    and the decoder's optimizers of its aggressive phase, as He et al.'s code does, and Adam's moments carry over."""

    def __init__(self, *parts: ParamSubsetOptim):  # no PyroOptim.__init__: nothing of its own to hold
        self.parts = parts

    def __call__(self, params, *args, **kwargs):
        params = list(params)
        for part in self.parts:
            part(params, *args, **kwargs)

    def get_state(self) -> dict:
        return {}

    def set_state(self, state_dict: dict) -> None:
        if state_dict:
            raise ValueError("JointOptim keeps no state: its parts' states are saved and loaded by their owner")


def encoder_parameters(model) -> list:
    """The inference network's parameters: ``model.encoder`` (and ``model.cluster_encoder`` if present)."""
    params = list(model.encoder.parameters())
    if hasattr(model, "cluster_encoder"):
        params += list(model.cluster_encoder.parameters())
    return params


class LaggingState:
    """Whether the aggressive phase is on, and the best validation MI so far."""

    def __init__(self):
        self.aggressive = True
        self.best_mi = -math.inf

    def end_of_epoch(self, mi: float) -> None:
        """Stop the aggressive phase when the validation MI did not rise."""
        if self.aggressive and mi <= self.best_mi:
            self.aggressive = False
        self.best_mi = max(self.best_mi, mi)

    def state_dict(self) -> dict:
        return {"aggressive": self.aggressive, "best_mi": self.best_mi}

    def load_state_dict(self, state: dict) -> None:
        self.aggressive, self.best_mi = state["aggressive"], state["best_mi"]


def encoder_burn_in(encoder_svi, sample_batch, num_data: int, max_inner_steps: int = 100, check_every: int = 15) -> int:
    """Encoder-only SVI steps on fresh batches until the loss stops improving; returns the number of steps."""
    previous, current = math.inf, 0.0
    for step in range(1, max_inner_steps + 1):
        current += encoder_svi.step(sample_batch(), num_data)
        if step % check_every == 0:
            if previous - current < 0:
                return step
            previous, current = current, 0.0
    return max_inner_steps


def random_batches(data: torch.Tensor, batch_size: int, generator: torch.Generator, binarize: bool, device, shard=None):
    """A function returning a fresh random mini-batch of ``data`` on each call.

    With ``shard`` (data parallelism) the indices of the global batch are drawn (the same on every
    process, whose generators agree) and ``shard(indices)`` picks this process's part.
    """

    def sample():
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
        if shard is not None:
            idx = shard(idx)
        x = data[idx].to(device)
        return torch.bernoulli(x) if binarize else x

    return sample
