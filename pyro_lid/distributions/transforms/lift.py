r"""The fixed injective lift :math:`L:\mathbb{R}^K\to\mathbb{R}^D`, zero padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Transform, constraints

__all__ = ["ZeroPadLift"]


class ZeroPadLift(Transform):
    r"""The linear lift :math:`L u = (u, 0, \dots, 0)`, the :math:`D\times K` matrix with ones on its diagonal.

    Injective (not bijective) for :math:`K \le D`, with left inverse :math:`L^\top`
    (keep the first :math:`K` coordinates), since :math:`L^\top L = I_K`. It has no
    parameters and is never trained.

    :param int latent_dim: :math:`K`.
    :param int output_dim: :math:`D \ge K`.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = False

    def __init__(self, latent_dim: int, output_dim: int):
        super().__init__(cache_size=0)
        if not (isinstance(latent_dim, int) and isinstance(output_dim, int) and 1 <= latent_dim <= output_dim):
            raise ValueError(
                f"the lift needs integers 1 <= latent_dim <= output_dim, got latent_dim={latent_dim!r}, "
                f"output_dim={output_dim!r} (an injective map cannot lower the dimension)"
            )
        self.latent_dim = latent_dim
        self.output_dim = output_dim

    def __eq__(self, other):
        return (
            isinstance(other, ZeroPadLift)
            and other.latent_dim == self.latent_dim
            and other.output_dim == self.output_dim
        )

    def __hash__(self):
        return hash((ZeroPadLift, self.latent_dim, self.output_dim))

    @property
    def matrix(self) -> torch.Tensor:
        """The :math:`D\\times K` matrix of the lift."""
        return torch.eye(self.output_dim, self.latent_dim)

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        return F.pad(u, (0, self.output_dim - self.latent_dim))

    def _inverse(self, v: torch.Tensor) -> torch.Tensor:
        return self.left_inverse(v)

    def left_inverse(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`L^\top v`: exact on the image of :math:`L`, the orthogonal projection elsewhere."""
        return v[..., : self.latent_dim]

    def log_abs_det_jacobian(self, x, y):
        return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)  # L^T L = I: unit volume element
