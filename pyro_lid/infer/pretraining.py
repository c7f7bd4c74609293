r"""Autoencoder pretraining with a decoder reset (Li et al. 2019).

The recipe: train the model as an autoencoder first (KL weight 0, so the encoder learns
an informative code unopposed); then put the decoder back to its initialization, forget
the decoder's optimizer state, and train with the full objective, usually with free bits,

.. math::

    \text{epochs } t < T_0:\ \mathbb{E}_q\log p(x\mid z); \qquad
    t \ge T_0:\ \mathbb{E}_q\log p(x\mid z) - \textstyle\sum_d \max(\lambda, \mathrm{KL}_d).

The reset makes the fresh decoder meet an encoder that already carries information, so
it cannot ignore :math:`z` the way a decoder trained from the start alongside a weak
encoder does. :func:`pyro_lid.infer.fit` runs it with ``pretrain_epochs``.

Reference: B. Li, J. He, G. Neubig, T. Berg-Kirkpatrick, Y. Yang, "A Surprisingly
Effective Fix for Deep Latent Variable Modeling of Text", EMNLP 2019.
"""

from __future__ import annotations

import torch.nn as nn
from pyro.optim import PyroOptim

__all__ = ["initial_state", "reset_decoder"]


def initial_state(module: nn.Module) -> dict:
    """A detached copy of ``module``'s parameters and buffers, to reset it to later."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def reset_decoder(model: nn.Module, state: dict, *optimizers: PyroOptim) -> None:
    """Put ``model.decoder`` back to ``state`` (in place) and drop its state in each Pyro optimizer.

    In-place copying keeps the parameter tensors (hence their Pyro parameter-store names),
    so SVI goes on with the same objects; the optimizers build fresh per-parameter state for
    them on their next step, as for a newly initialized decoder.
    """
    model.decoder.load_state_dict(state)
    decoder = dict(model.decoder.named_parameters())
    # state loaded from a checkpoint waits, under the parameter-store name "<module>$$$decoder.<name>",
    # for its parameter's first step; that must go too
    suffixes = tuple(f"$$$decoder.{name}" for name in decoder)
    for optim in optimizers:
        for p in decoder.values():
            optim.optim_objs.pop(p, None)
        for key in [k for k in optim._state_waiting_to_be_consumed if k.endswith(suffixes)]:
            del optim._state_waiting_to_be_consumed[key]
