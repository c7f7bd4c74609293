r"""One SVI step on Fabric: Pyro's ELBO gives the gradients; Fabric averages them across processes.

:class:`FabricSVI` is :class:`pyro.infer.SVI` with two additions, both off on one process in full
precision (then ``step`` *is* ``SVI.step``):

- mixed precision: the ELBO is evaluated under ``fabric.autocast()``;
- data parallelism: between the backward pass and the optimizer step, the gradients and the loss
  are all-reduced, each process weighted by its share of the global mini-batch.

Why the averaged estimator is unbiased. Let the global mini-batch :math:`B` (size :math:`b`) be
split into disjoint shards :math:`B_r` of sizes :math:`b_r` over :math:`W` processes, and let
:math:`N` be the size of the *whole* data set (``num_data``, the same on every process). Process
:math:`r` computes Pyro's subsampled estimate :math:`\hat g_r = \frac{N}{b_r}\sum_{i\in B_r}\nabla\ell_i`
(its plate scales by ``num_data / b_r``). The all-reduce forms

.. math::

    \hat g = \sum_r \frac{b_r}{b}\,\hat g_r = \frac{N}{b}\sum_{i\in B}\nabla\ell_i ,

which is exactly the one-process estimate on the whole global batch. Since the global batch is a
uniformly random subset (a shared permutation of the data), :math:`\mathbb E[\hat g] = \sum_{i=1}^N
\nabla\ell_i`, the full ELBO's gradient; each process's Monte Carlo draws are independent of the
others', so the reparameterized noise adds no bias either. (With equal shards the weights are
:math:`1/W`: a plain average.) Scaling each shard by its *local* size instead of :math:`N`, or
summing without the weights, would estimate :math:`W` times (or :math:`1/W` of) the gradient.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from pyro import poutine
from pyro.infer import SVI
from pyro.infer.util import torch_item, zero_grads

__all__ = ["FabricSVI", "NonFiniteGradients"]


def _non_finite_gradients(names: list[str], params: list) -> list[str]:
    """The names of the parameters whose gradient has a NaN or infinite entry (one device sync for all of them)."""
    grads = [(name, p.grad) for name, p in zip(names, params) if p.grad is not None]
    if not grads:
        return []
    finite = torch.stack([torch.isfinite(g).all() for _, g in grads]).tolist()
    return [name for (name, _), ok in zip(grads, finite) if not ok]


class NonFiniteGradients(FloatingPointError):
    r"""A step's loss was finite but some gradient was not (e.g. :math:`\sqrt{\cdot}` at 0): the step was not taken.
    ``names``: the parameters with NaN or infinite gradient entries."""

    def __init__(self, names: list[str]):
        self.names = names
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        super().__init__(f"non-finite gradient of {shown}")


class FabricSVI(SVI):
    """:class:`~pyro.infer.SVI` whose step averages gradients over Fabric's processes (see the module docstring).

    Unlike Pyro's, the step takes no optimizer step when the loss or a gradient is NaN or infinite, so the
    parameters (and any checkpoint written after) stay at the last good state: a non-finite loss is returned
    for the caller to stop on, non-finite gradients under a finite loss raise :class:`NonFiniteGradients`.

    :param fabric: a launched :class:`lightning.fabric.Fabric`, or ``None`` (plain SVI).
    :param autocast: evaluate the ELBO under ``fabric.autocast()`` (mixed precision).
    """

    def __init__(self, model, guide, optim, loss, fabric=None, autocast: bool = False, **kwargs):
        super().__init__(model, guide, optim, loss, **kwargs)
        self.fabric = fabric
        self.distributed = fabric is not None and fabric.world_size > 1
        self.autocast = autocast and fabric is not None

    def step(self, *args, **kwargs) -> float:
        with poutine.trace(param_only=True) as capture:
            with self.fabric.autocast() if self.autocast else nullcontext():
                loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
        # the trace's order is the program's order: the same on every process
        names = list(capture.trace.nodes)
        params = [site["value"].unconstrained() for site in capture.trace.nodes.values()]
        if self.distributed:
            loss = self._all_reduce(params, loss, batch=args[0].shape[0])
        loss = torch_item(loss)
        bad = _non_finite_gradients(names, params) if math.isfinite(loss) else []
        if math.isfinite(loss) and not bad:
            self.optim(set(params))
        zero_grads(set(params))
        if bad:
            raise NonFiniteGradients(bad)
        return loss

    def _all_reduce(self, params, loss, batch: int) -> float:
        """Replace each gradient by the batch-share-weighted sum over processes; return the same mean of the loss."""
        dtype = params[0].dtype if params else torch.get_default_dtype()
        device = params[0].device if params else self.fabric.device
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        extra = torch.tensor([float(loss) * batch, float(batch)], dtype=dtype, device=device)
        flat = torch.cat([g.reshape(-1).to(dtype) * batch for g in grads] + [extra])
        flat = self.fabric.all_reduce(flat, reduce_op="sum")
        total = flat[-1]
        offset = 0
        for p, g in zip(params, grads):
            size = g.numel()
            p.grad = (flat[offset : offset + size] / total).view_as(p).to(p.dtype)
            offset += size
        return float(flat[-2] / total)
