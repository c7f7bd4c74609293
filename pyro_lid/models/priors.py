r"""Priors over :math:`z`: the standard normal and a learned Gaussian mixture."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["StandardNormalPrior", "GaussianMixturePrior", "kmeans"]


def kmeans(points: torch.Tensor, k: int, iterations: int = 50, generator: torch.Generator | None = None):
    r"""Lloyd's k-means with k-means++ seeding: ``(centres (k, K), assignment (N,))``.

    k-means++ draws each new centre with probability proportional to the squared distance to
    the nearest centre chosen so far (Arthur & Vassilvitskii 2007); Lloyd's iterations then
    alternate nearest-centre assignment and centre = mean of its points, until the assignment
    stops changing. An emptied cluster keeps its centre.
    """
    if not isinstance(points, torch.Tensor) or points.dim() != 2 or not torch.isfinite(points).all():
        raise ValueError(f"kmeans needs a finite (N, K) tensor, got {getattr(points, 'shape', type(points))}")
    if not isinstance(k, int) or not 1 <= k <= points.shape[0]:
        raise ValueError(f"k must be an integer in [1, N = {points.shape[0]}], got {k!r}")
    first = torch.randint(points.shape[0], (1,), generator=generator, device=points.device)
    centres = points[first]
    for _ in range(k - 1):
        distance = torch.cdist(points, centres).min(1).values.square()
        weights = distance / distance.sum() if distance.sum() > 0 else torch.ones_like(distance)
        centres = torch.cat([centres, points[torch.multinomial(weights, 1, generator=generator)]])
    assignment = torch.cdist(points, centres).argmin(1)
    for _ in range(iterations):
        counts = torch.bincount(assignment, minlength=k).unsqueeze(-1)
        sums = torch.zeros_like(centres).index_add_(0, assignment, points)
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
        new = torch.cdist(points, centres).argmin(1)
        if torch.equal(new, assignment):
            break
        assignment = new
    return centres, assignment


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

    @torch.no_grad()
    def initialize_from(
        self,
        points: torch.Tensor,
        generator: torch.Generator | None = None,
        point_variances: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""Place the components on ``points`` (e.g. the encoder's posterior means after a warm-up):
        :math:`\mu_c` = the k-means centres and, with learned weights, :math:`\pi_c` = the cluster's
        share. Each :math:`\sigma_c^2` matches the second moment of the cluster's part of the
        aggregate posterior :math:`\frac1N\sum_n q(z\mid x_n)`, per dimension:

        .. math:: \sigma_{c}^2 = \operatorname{Var}_{n \in c}[m_n] + \operatorname{mean}_{n \in c}\, v_n,

        with :math:`m_n, v_n` the posterior means (``points``) and variances (``point_variances``;
        zero when not given). The second term matters: in a dimension the encoder does not use yet,
        the means barely spread while :math:`v_n \approx 1`, and a component as narrow as the means'
        spread would make the KL term tear the posteriors away from every component (measured on
        Fashion-MNIST: without it every image falls in one component one epoch later; with it all
        ten stay used). Components that start on top of each other are exchangeable, which is the
        non-identifiable mixture of the classical demonstration; components on the data's clusters
        are not. Every :math:`\sigma_c` is at least 0.05.

        :returns: the k-means assignment of each point, shape ``(N,)``.
        """
        if points.dim() != 2 or points.shape[1] != self.latent_dim:
            raise ValueError(f"points must have shape (N, {self.latent_dim}), got {tuple(points.shape)}")
        if point_variances is not None and (point_variances.shape != points.shape or (point_variances < 0).any()):
            raise ValueError(
                f"point_variances must be non-negative with the points' shape {tuple(points.shape)}, got "
                f"{tuple(point_variances.shape)}"
            )
        points = points.to(self.locs.dtype)
        centres, assignment = kmeans(points, self.num_components, generator=generator)
        counts = torch.bincount(assignment, minlength=self.num_components)
        sums = torch.zeros_like(centres).index_add_(0, assignment, (points - centres[assignment]).square())
        variance = sums / (counts - 1).clamp_min(1).unsqueeze(-1)
        if point_variances is not None:
            inner = torch.zeros_like(centres).index_add_(0, assignment, point_variances.to(points.dtype))
            variance = variance + inner / counts.clamp_min(1).unsqueeze(-1)
        spread = variance.sqrt()
        spread = torch.where(counts.unsqueeze(-1) > 1, spread, torch.ones_like(spread)).clamp_min(0.05)
        self.locs.copy_(centres)
        self.scale_raw.copy_(torch.log(torch.expm1((spread - 1e-4) * math.log(2.0))))  # inverse of ``scales``
        if isinstance(self.weight_logits, nn.Parameter):
            self.weight_logits.copy_(counts.clamp_min(1).to(self.locs.dtype).log())
        return assignment

    def cluster_log_posterior(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(y = c \\mid z)`, shape ``(..., C)``."""
        joint = self.components().log_prob(z.unsqueeze(-2)) + self.mixing().logits
        return joint - joint.logsumexp(-1, keepdim=True)
