r"""Injective linear lifts :math:`L:\mathbb{R}^K\to\mathbb{R}^D`: zero padding (fixed), or orthonormal columns
times positive scales (learned)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro.distributions.torch_transform import TransformModule
from torch.distributions import Transform, constraints

from .caching import CopyWithCache

__all__ = ["LearnedLift", "ZeroPadLift"]


def _orthonormal_columns(matrix: torch.Tensor) -> torch.Tensor:
    r"""The :math:`Q` factor of the QR decomposition of ``matrix`` with :math:`\mathrm{diag}(R) > 0`.

    That choice of signs makes :math:`Q` unique, deterministic and a smooth function of a
    full-rank ``matrix`` (LAPACK's own signs are arbitrary). Computed in float64 for
    float16/bfloat16 inputs (which ``torch.linalg.qr`` does not support), in the input's dtype otherwise.
    """
    work = matrix if matrix.dtype in (torch.float32, torch.float64) else matrix.double()
    q, r = torch.linalg.qr(work)
    diag = r.diagonal(dim1=-2, dim2=-1)
    q = q * torch.where(diag < 0, -torch.ones_like(diag), torch.ones_like(diag)).unsqueeze(-2)
    return q.to(matrix.dtype)


def lifted_shape(name: str, shape, expected: int, new: int) -> torch.Size:
    """``shape[:-1] + (new,)``: the shape ``(..., expected)`` with its last (event) dimension replaced by ``new``.

    Raises ``ValueError`` for a shape without that last dimension.
    """
    shape = torch.Size(shape)
    if len(shape) < 1 or shape[-1] != expected:
        raise ValueError(f"{name} expects a shape (..., {expected}), got {tuple(shape)}")
    return shape[:-1] + (new,)


def _check_dims(latent_dim, output_dim):
    if not (isinstance(latent_dim, int) and isinstance(output_dim, int) and 1 <= latent_dim <= output_dim):
        raise ValueError(
            f"the lift needs integers 1 <= latent_dim <= output_dim, got latent_dim={latent_dim!r}, "
            f"output_dim={output_dim!r} (an injective map cannot lower the dimension)"
        )


class EventDimensionChange:
    """Mixin for a map :math:`\\mathbb{R}^K\to\\mathbb{R}^D` (its ``latent_dim`` :math:`K`, ``output_dim`` :math:`D`):
    the event shapes torch asks of it (``TransformedDistribution.event_shape``)."""

    def forward_shape(self, shape) -> torch.Size:
        """``(..., K)`` to ``(..., D)``."""
        return lifted_shape(type(self).__name__, shape, self.latent_dim, self.output_dim)

    def inverse_shape(self, shape) -> torch.Size:
        """``(..., D)`` to ``(..., K)``."""
        return lifted_shape(type(self).__name__, shape, self.output_dim, self.latent_dim)


class ZeroPadLift(EventDimensionChange, CopyWithCache, Transform):
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
        _check_dims(latent_dim, output_dim)
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

    def right_multiply(self, m: torch.Tensor) -> torch.Tensor:
        r""":math:`M L`, shape ``(..., r, K)``, for ``m`` of shape ``(..., r, D)``: its first :math:`K` columns."""
        return m[..., : self.latent_dim]

    def injectivity_bound(self) -> float:
        """1, the smallest singular value of :math:`L` (:math:`L^\\top L = I`)."""
        return 1.0

    def log_abs_det_jacobian(self, x, y):
        return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)  # L^T L = I: unit volume element


class LearnedLift(EventDimensionChange, CopyWithCache, TransformModule):
    r"""A learned injective linear lift :math:`L u = Q\,(s\odot u)`: orthonormal columns times positive scales.

    :math:`Q` (:math:`D\times K`, :math:`Q^\top Q = I`) is the sign-fixed QR factor of a free parameter, a smooth
    function of it; :math:`s = \text{floor} + \mathrm{softplus}(\tilde s)`. The singular values of :math:`L`
    are exactly :math:`s`, so it is injective with margin :math:`\min_i s_i \ge` ``floor``, and its left
    inverse is :math:`L^+ v = (Q^\top v)/s`. It starts at the zero padding (:math:`Q` = the first :math:`K`
    unit vectors) with :math:`s` = ``scale_init``; in
    :class:`~pyro_lid.distributions.transforms.InjectiveBrenier` (``lift="learned"``) it lets training choose
    the :math:`K`-dimensional subspace and scales in which :math:`\nabla\psi_D` receives the latents.

    :param int latent_dim: :math:`K`.
    :param int output_dim: :math:`D \ge K`.
    :param float floor: the margin, > 0 (default 1: never below the zero padding's unit singular values).
    :param float scale_init: the initial :math:`s`, > floor (default ``floor`` + 0.01).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = False

    def __init__(self, latent_dim: int, output_dim: int, floor: float = 1.0, scale_init: float | None = None):
        super().__init__(cache_size=0)
        _check_dims(latent_dim, output_dim)
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not (0 < floor < math.inf):
            raise ValueError(f"LearnedLift: floor must be a finite number > 0 (its margin), got {floor!r}")
        scale_init = floor + 0.01 if scale_init is None else scale_init
        if isinstance(scale_init, bool) or not isinstance(scale_init, (int, float)) or not scale_init > floor:
            raise ValueError(f"LearnedLift: scale_init must be a number > floor={floor:g}, got {scale_init!r}")
        self.latent_dim, self.output_dim, self.floor = latent_dim, output_dim, float(floor)
        self.basis_raw = nn.Parameter(torch.eye(output_dim, latent_dim))
        self.scale_raw = nn.Parameter(torch.full((latent_dim,), math.log(math.expm1(scale_init - floor))))

    @property
    def basis(self) -> torch.Tensor:
        """:math:`Q`, shape ``(D, K)``, orthonormal columns."""
        return _orthonormal_columns(self.basis_raw)

    @property
    def scale(self) -> torch.Tensor:
        """:math:`s`, shape ``(K,)``, every entry at least ``floor``."""
        return self.floor + F.softplus(self.scale_raw)

    @property
    def matrix(self) -> torch.Tensor:
        r"""The :math:`D\times K` matrix :math:`Q\,\mathrm{diag}(s)` of the lift."""
        return self.basis * self.scale

    def injectivity_bound(self) -> torch.Tensor:
        r""":math:`\min_i s_i`, the smallest singular value of :math:`L` (at least ``floor``)."""
        return self.scale.min()

    def right_multiply(self, m: torch.Tensor) -> torch.Tensor:
        r""":math:`M L = M Q\,\mathrm{diag}(s)`, shape ``(..., r, K)``, for ``m`` of shape ``(..., r, D)``."""
        return m @ self.matrix

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        return u @ self.matrix.transpose(-1, -2)

    def _inverse(self, v: torch.Tensor) -> torch.Tensor:
        return self.left_inverse(v)

    def left_inverse(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`(Q^\top v)/s`: exact on the image of :math:`L`, a least-squares solution elsewhere."""
        return (v @ self.basis) / self.scale

    def log_abs_det_jacobian(self, x, y):
        r""":math:`\sum_i \log s_i`, the log volume element :math:`\tfrac12\log\det L^\top L` (constant in x)."""
        return self.scale.log().sum().expand(x.shape[:-1])
