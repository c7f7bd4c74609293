"""Shared network pieces: the MLP, the Gaussian encoder and the (non-identifiable) MLP likelihood."""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..distributions.likelihoods import LikelihoodFamily, make_family

__all__ = ["mlp", "GaussianEncoder", "BatchNormGaussianEncoder", "MLPLikelihood"]


def mlp(sizes: Sequence[int], activation=nn.ReLU) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    r"""Amortized diagonal Gaussian :math:`q(z \mid x[, c]) = \mathcal{N}(\mu(x), \mathrm{diag}\,\sigma^2(x))`.

    :param int input_dim: data dimension (plus any context concatenated to the input).
    :param int latent_dim: :math:`K`.
    :param hidden_dims: MLP widths.
    """

    def __init__(self, input_dim: int, latent_dim: int, hidden_dims: Sequence[int] = (512,)):
        super().__init__()
        self.body = mlp([input_dim, *hidden_dims], nn.ReLU)
        if hidden_dims:  # after the last hidden layer; with none the heads read the data itself (affine, no ReLU)
            self.body.append(nn.ReLU())
        width = hidden_dims[-1] if hidden_dims else input_dim
        self.loc = nn.Linear(width, latent_dim)
        self.scale = nn.Linear(width, latent_dim)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.loc(h), F.softplus(self.scale(h)) + 1e-4

    def distribution(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc, scale = self(x)
        return dist.Normal(loc, scale).to_event(1)


class BatchNormGaussianEncoder(GaussianEncoder):
    r"""BN-VAE's encoder (Zhu et al. 2020): batch-normalized posterior means with a fixed scale.

    :math:`\mu_d = \gamma\,\frac{\tilde\mu_d - m_d}{s_d} + \beta_d`, with batch statistics
    :math:`m, s` in training (running statistics in ``eval()``), a fixed :math:`\gamma > 0`
    and a learned shift :math:`\beta`. Over a batch :math:`\overline{\mu_d^2} = \gamma^2 + \beta_d^2`,
    so the expected KL to :math:`\mathcal{N}(0, I)` is at least :math:`K\gamma^2/2`.
    """

    def __init__(self, input_dim: int, latent_dim: int, hidden_dims: Sequence[int] = (512,), gamma: float = 0.5):
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}")
        super().__init__(input_dim, latent_dim, hidden_dims)
        self.gamma = float(gamma)
        self.norm = nn.BatchNorm1d(latent_dim, affine=False)
        self.shift = nn.Parameter(torch.zeros(latent_dim))

    @classmethod
    def around(cls, encoder: GaussianEncoder, gamma: float = 0.5) -> BatchNormGaussianEncoder:
        """The batch-normalized version of any :class:`GaussianEncoder` (an MLP's, an LSTM's): the same
        ``body``, ``loc`` and ``scale`` modules (shared, not copied), with the means normalized as above."""
        if not isinstance(encoder, GaussianEncoder):
            raise ValueError(f"BatchNormGaussianEncoder.around needs a GaussianEncoder, got {type(encoder).__name__}")
        wrapped = cls(encoder.loc.in_features, encoder.latent_dim, (), gamma)
        wrapped.body, wrapped.loc, wrapped.scale = encoder.body, encoder.loc, encoder.scale
        return wrapped

    def forward(self, x):
        loc, scale = super().forward(x)
        flat = loc.reshape(-1, loc.shape[-1])
        return (self.gamma * self.norm(flat) + self.shift).reshape(loc.shape), scale


class MLPLikelihood(nn.Module):
    """The ordinary VAE likelihood: natural parameters from an MLP of ``z`` (not injective in general)."""

    def __init__(
        self,
        latent_dim: int,
        data_dim: int,
        family: str | LikelihoodFamily = "bernoulli",
        hidden_dims: Sequence[int] = (512,),
        **family_kwargs,
    ):
        super().__init__()
        self.family = make_family(family, data_dim, **family_kwargs)
        self.net = mlp([latent_dim, *hidden_dims, self.family.param_dim], nn.ReLU)
        self.latent_dim = latent_dim

    def forward(self, z: torch.Tensor) -> dist.TorchDistribution:
        return self.family(self.net(z))
