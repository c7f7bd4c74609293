r"""Priors over :math:`z`: the standard normal and a learned Gaussian mixture."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["StandardNormalPrior", "GaussianMixturePrior"]


class StandardNormalPrior(nn.Module):
    r""":math:`p(z) = \mathcal{N}(0, I_K)`."""

    factorized = True

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("_zero", torch.zeros(()))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self._zero.expand(self.latent_dim), 1.0).to_event(1)


class GaussianMixturePrior(nn.Module):
    r""":math:`p(z) = \sum_{c=1}^C \pi_c\,\mathcal{N}(z; \mu_c, \mathrm{diag}\,\sigma_c^2)`, all learned.

    The cluster is summed out exactly, so models using it train with plain ``Trace_ELBO``.

    :param int latent_dim: :math:`K`.
    :param int num_components: :math:`C`.
    :param bool learn_weights: learn :math:`\pi` (else uniform).
    """

    factorized = False

    def __init__(self, latent_dim: int, num_components: int = 10, learn_weights: bool = True):
        super().__init__()
        if num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        self.latent_dim = latent_dim
        self.num_components = num_components
        self.locs = nn.Parameter(torch.randn(num_components, latent_dim))
        self.scale_raw = nn.Parameter(torch.zeros(num_components, latent_dim))
        logits = torch.zeros(num_components)
        if learn_weights:
            self.weight_logits = nn.Parameter(logits)
        else:
            self.register_buffer("weight_logits", logits)

    @property
    def scales(self) -> torch.Tensor:
        return F.softplus(self.scale_raw) / math.log(2.0) + 1e-4  # softplus(0) = log 2: 1 at initialization, any dtype

    def mixing(self) -> dist.Categorical:
        return dist.Categorical(logits=self.weight_logits)

    def components(self) -> dist.TorchDistribution:
        return dist.Normal(self.locs, self.scales).to_event(1)

    def forward(self) -> dist.TorchDistribution:
        return dist.MixtureSameFamily(self.mixing(), self.components())

    def cluster_log_posterior(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(y = c \\mid z)`, shape ``(..., C)``."""
        joint = self.components().log_prob(z.unsqueeze(-2)) + self.mixing().logits
        return joint - joint.logsumexp(-1, keepdim=True)
