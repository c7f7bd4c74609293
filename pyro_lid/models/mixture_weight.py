r"""A two-component 1-D Gaussian mixture whose mixing weight is the latent variable.

.. math::

    w \sim \mathrm{Beta}(a, b), \qquad
    x_i \mid w \sim w\,\mathcal{N}(\mu_1, s^2) + (1 - w)\,\mathcal{N}(\mu_2, s^2).

The component means and scale are known. When the two components coincide
(:math:`\mu_1 = \mu_2`: one true cluster) the likelihood does not depend on :math:`w`
at all, so :math:`w` is non-identifiable and its posterior *is* its prior, under exact
inference, with no neural network anywhere. Overlapping components make the
likelihood nearly flat; well-separated ones pin :math:`w` down.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

__all__ = ["MixtureWeightModel"]


class MixtureWeightModel:
    """Pyro model for the mixing weight of a two-component 1-D Gaussian mixture.

    :param locs: the two component means :math:`(\\mu_1, \\mu_2)`.
    :param float scale: the common component scale :math:`s > 0`.
    :param prior: Beta prior parameters :math:`(a, b)` (default ``(5, 5)``).
    """

    def __init__(self, locs=(0.0, 0.0), scale: float = 1.0, prior=(5.0, 5.0)):
        if len(locs) != 2:
            raise ValueError(f"locs must hold two component means, got {locs!r}")
        if not scale > 0 or not all(p > 0 for p in prior):
            raise ValueError(f"scale and prior parameters must be > 0, got scale={scale!r}, prior={prior!r}")
        self.locs = torch.as_tensor(locs, dtype=torch.get_default_dtype())
        self.scale = float(scale)
        self.prior = tuple(float(p) for p in prior)

    def prior_distribution(self) -> dist.Beta:
        return dist.Beta(*self.prior)

    def _likelihood(self, weight: torch.Tensor) -> dist.MixtureSameFamily:
        probs = torch.stack([weight, 1 - weight], -1)
        components = dist.Normal(self.locs.to(weight).expand(probs.shape), self.scale)
        return dist.MixtureSameFamily(dist.Categorical(probs=probs), components)

    def model(self, x: torch.Tensor) -> None:
        """The cluster of each point is summed out exactly (``MixtureSameFamily``)."""
        if x.dim() != 1 or not torch.isfinite(x).all():
            raise ValueError(f"MixtureWeightModel expects a finite 1-D data tensor, got shape {tuple(x.shape)}")
        weight = pyro.sample("weight", self.prior_distribution())
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", self._likelihood(weight), obs=x)

    def log_likelihood_curve(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_i \log p(x_i \mid w)` for each :math:`w` in ``grid`` (shape ``grid.shape``)."""
        return self._likelihood(grid.unsqueeze(-1)).log_prob(x).sum(-1)
