r"""Free bits (Kingma et al. 2016), per latent dimension, as a Pyro ELBO.

.. math::

    \mathcal{L}_\lambda = \mathbb{E}_q[\log p(x\mid z)]
        - \beta\sum_{d=1}^K \max\!\big(\lambda,\ \overline{\mathrm{KL}}_d\big),
    \qquad \overline{\mathrm{KL}}_d = \tfrac1B\textstyle\sum_b \mathrm{KL}(q(z_d\mid x_b)\,\|\,p(z_d)),

so no dimension is pushed below :math:`\lambda` nats of KL. The KL is analytic, which
needs a diagonal Gaussian guide and a factorized Normal prior at the latent site.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import ELBO

__all__ = ["FreeBitsELBO"]


def _normal_base(fn, where):
    base = fn.base_dist if isinstance(fn, dist.Independent) else fn
    while isinstance(base, dist.Independent):
        base = base.base_dist
    if not isinstance(base, dist.Normal):
        raise ValueError(
            f"free bits needs a diagonal Normal {where} at the latent site (analytic per-dimension KL); "
            f"got {type(fn).__name__}. Mixture priors are not supported."
        )
    return base


class FreeBitsELBO(ELBO):
    """Negative free-bits ELBO for a model with one latent site ``latent`` and one observed site ``observed``.

    :param float free_bits: :math:`\\lambda \\ge 0`, nats per dimension.
    """

    def __init__(self, free_bits: float, latent: str = "z", observed: str = "x"):
        super().__init__()
        if not free_bits >= 0:
            raise ValueError(f"free_bits must be >= 0, got {free_bits!r}")
        self.free_bits, self.latent, self.observed = float(free_bits), latent, observed

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("FreeBitsELBO builds its traces in terms()")

    def terms(self, model, guide, *args, **kwargs) -> dict:
        """The pieces of the objective: reconstruction, per-dimension KL, and their scales."""
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        obs = model_trace.nodes[self.observed]
        q_site, p_site = guide_trace.nodes[self.latent], model_trace.nodes[self.latent]
        q, p = _normal_base(q_site["fn"], "guide"), _normal_base(p_site["fn"], "prior")
        kl = torch.distributions.kl_divergence(q, p)  # (B, K)
        return {
            "reconstruction": obs["fn"].log_prob(obs["value"]).sum() * obs["scale"],
            "kl_per_dim": kl.mean(0),
            "batch_size": kl.shape[0],
            "latent_scale": q_site["scale"],
        }

    def differentiable_loss(self, model, guide, *args, **kwargs):
        t = self.terms(model, guide, *args, **kwargs)
        kl = t["kl_per_dim"].clamp_min(self.free_bits).sum() * t["batch_size"]
        return -(t["reconstruction"] - t["latent_scale"] * kl)

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.detach().item()
