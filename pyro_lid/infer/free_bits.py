r"""Free bits (Kingma et al. 2016) as a Pyro ELBO, for factorized and mixture priors.

Free bits floors the KL of each *group* of latent dimensions, averaged over the batch:

.. math::

    \mathcal{L}_\lambda = \mathbb{E}_q[\log p(x\mid z)]
        - \beta\sum_{g} \max\!\big(\lambda_g,\ \overline{\mathrm{KL}}_g\big),
    \qquad \overline{\mathrm{KL}}_g = \tfrac1B\textstyle\sum_b \mathrm{KL}(q(z_g\mid x_b)\,\|\,p(z_g)),

so no group is pushed below :math:`\lambda_g` nats. With ``per_point=True`` the floor applies to each data
point's KL instead of the batch mean (Li et al. 2019's code, ``--fb 2``):
the KL term per data point becomes
:math:`\beta\,\tfrac1B\sum_b\sum_g \max(\lambda_g, \mathrm{KL}(q(z_g\mid x_b)\,\|\,p(z_g)))`, so a point whose KL in a
group is below the floor exerts no pull there, whatever the other points of the batch carry. (With a mixture
prior that floor applies to each point's one-sample Monte Carlo KL, a noisy quantity: Li et al. floored closed-form
KLs only.)

The KL splits into groups only where the prior factorizes over them:

- a factorized Normal prior (:class:`~pyro_lid.models.priors.StandardNormalPrior`): every
  dimension is a group, :math:`\lambda_g = \lambda`, and the KL is analytic;
- any other prior, e.g. a Gaussian mixture (its dimensions are dependent): the whole
  latent vector is one group with floor :math:`K\lambda` (the same budget in nats), and
  :math:`\overline{\mathrm{KL}}` is the Monte Carlo estimate
  :math:`\tfrac1B\sum_b \log q(z_b\mid x_b) - \log p(z_b)` at the guide's sample.

The guide must be a diagonal Normal at the latent site, the only latent site.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.poutine.util import site_is_subsample

from ..distributions.diagonal import diagonal_normal

__all__ = ["FreeBitsELBO"]


class FreeBitsELBO(ELBO):
    """Negative free-bits ELBO for a model with one latent site ``latent`` and one observed site ``observed``.

    :param float free_bits: :math:`\\lambda \\ge 0`, nats per latent dimension.
    :param bool per_point: floor each data point's KL (Li et al.), not the batch mean (Kingma et al.).
    """

    def __init__(self, free_bits: float, latent: str = "z", observed: str = "x", per_point: bool = False):
        super().__init__()
        if not free_bits >= 0:
            raise ValueError(f"free_bits must be >= 0, got {free_bits!r}")
        if not isinstance(per_point, bool):
            raise ValueError(f"per_point must be True or False, got {per_point!r}")
        self.free_bits, self.latent, self.observed, self.per_point = float(free_bits), latent, observed, per_point

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("FreeBitsELBO builds its traces in terms()")

    def terms(self, model, guide, *args, **kwargs) -> dict:
        """The objective's pieces: ``reconstruction``, each data point's KL per group ``kl`` (``(B, G)``), its batch
        mean ``kl_per_group`` with the ``floor`` (per dimension for factorized priors, else one group),
        ``batch_size`` and ``latent_scale``."""
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        others = [
            name
            for name, site in guide_trace.nodes.items()
            if site["type"] == "sample"
            and not site["is_observed"]
            and not site_is_subsample(site)
            and name != self.latent
        ]
        if others:
            raise ValueError(
                f"free bits needs the guide's only latent site to be {self.latent!r}; it also samples {others} "
                "(for mixture models use the summed-out prior, e.g. GMVAE(enumerate_clusters=False))"
            )
        obs = model_trace.nodes[self.observed]
        q_site, p_site = guide_trace.nodes[self.latent], model_trace.nodes[self.latent]
        q, p = diagonal_normal(q_site["fn"]), diagonal_normal(p_site["fn"])
        if q is None:
            raise ValueError(f"free bits needs a diagonal Normal guide at {self.latent!r}, got {q_site['fn']}")
        latent_dim = q.batch_shape[-1]
        if p is not None:  # analytic KL per dimension
            kl = torch.distributions.kl_divergence(q, p)  # (B, K)
            kl_per_group, floor = kl.mean(0), self.free_bits
        else:  # one group: the whole vector, Monte Carlo KL at the guide's sample
            z = q_site["value"]
            kl = (q_site["fn"].log_prob(z) - p_site["fn"].log_prob(z)).unsqueeze(-1)  # (B, 1)
            kl_per_group, floor = kl.mean(0), self.free_bits * latent_dim
        return {
            "reconstruction": obs["fn"].log_prob(obs["value"]).sum() * obs["scale"],
            "kl": kl,
            "kl_per_group": kl_per_group,
            "floor": floor,
            "batch_size": kl.shape[0],
            "latent_scale": q_site["scale"],
        }

    def differentiable_loss(self, model, guide, *args, **kwargs):
        t = self.terms(model, guide, *args, **kwargs)
        if self.per_point:
            kl = t["kl"].clamp_min(t["floor"]).sum()
        else:
            kl = t["kl_per_group"].clamp_min(t["floor"]).sum() * t["batch_size"]
        return -(t["reconstruction"] - t["latent_scale"] * kl)

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.detach().item()
