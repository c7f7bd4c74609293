r"""A contractive residual map: an invertible map of :math:`\mathbb{R}^K` with a floor on its singular values.

.. math::

    h(z) = a \odot \bigl(z + f(z)\bigr), \qquad
    f(z) = c\, \hat W_L\, \phi\bigl(\hat W_{L-1} \cdots \phi(\hat W_1 z + b_1) \cdots + b_{L-1}\bigr) + b_L,

with :math:`\hat W_l = W_l / \max(1, \lVert W_l\rVert_2)` (the exact spectral norm, not a power-iteration
estimate), :math:`\phi` = ELU (1-Lipschitz) and a contraction factor :math:`0 < c < 1`, so that
:math:`\mathrm{Lip}(f) \le c` (Behrmann et al. 2019, "Invertible Residual Networks"). Then for every
:math:`v`, :math:`\lVert (I + J_f) v\rVert \ge (1 - c)\lVert v\rVert`, and with
:math:`a_i = \text{margin}/(1 - c) + \mathrm{softplus}(\tilde a_i)`,

.. math::

    \sigma_{\min}(J_h) \ge \min_i a_i\,(1 - c) \ge \text{margin}.

:math:`h` is injective (and onto), and :math:`h^{-1}(u)` is the fixed point of
:math:`z \mapsto u / a - f(z)`, a contraction with rate :math:`c`. Unlike a Brenier map its Jacobian
need not be symmetric: the residual map is a different nonlinear family with the same guarantee, offered
as ``inner="residual"`` of :class:`~pyro_lid.distributions.transforms.ProjectedInjective`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import nn

from ..._checks import is_positive_number
from .brenier import check_event
from .caching import CopyWithCache

__all__ = ["ContractiveResidual"]


class ContractiveResidual(CopyWithCache, TransformModule):
    r""":math:`h(z) = a\odot(z + f(z))` with :math:`\mathrm{Lip}(f) \le c < 1`: every singular value of
    :math:`\partial h/\partial z` is at least ``margin`` (see the module's description).

    :param int dim: :math:`K`.
    :param hidden_dims: hidden widths of :math:`f` (default ``(64, 64)``).
    :param float margin: the floor (> 0) on the Jacobian's singular values.
    :param float contraction: :math:`c \in (0, 1)`, the Lipschitz bound of :math:`f` (default 0.5).
    :param float inverse_tol: tolerance of the inverse's fixed-point iteration, per row (each point of the batch):
        a row is done, and no longer updated, once no coordinate of it moves more than
        ``inverse_tol * (1 + max_i |u_i / a_i|)`` (that row's own target) in one step; the iteration stops when every
        row is done. Default ``100 * eps`` of the dtype.
    :param int inverse_max_iter: it raises ``RuntimeError`` if it has not converged after this many steps.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    #: The sign of :math:`\det J_h`: :math:`\det\bigl(\mathrm{diag}(a)(I + tJ_f)\bigr)` never vanishes for
    #: :math:`t \in [0, 1]` (:math:`\lVert J_f\rVert \le c < 1`, :math:`a > 0`) and is :math:`\det\mathrm{diag}(a) > 0`
    #: at :math:`t = 0`, so by continuity it is positive at :math:`t = 1`.
    sign = +1

    def __init__(
        self,
        dim: int,
        hidden_dims: Sequence[int] | None = None,
        margin: float = 1.0,
        contraction: float = 0.5,
        inverse_tol: float | None = None,
        inverse_max_iter: int = 1000,
    ):
        super().__init__(cache_size=0)
        hidden_dims = (64, 64) if hidden_dims is None else tuple(hidden_dims)
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"ContractiveResidual: dim must be a positive integer, got {dim!r}")
        if not hidden_dims or not all(isinstance(h, int) and h >= 1 for h in hidden_dims):
            raise ValueError(f"ContractiveResidual: hidden_dims must be positive integer widths, got {hidden_dims!r}")
        if not is_positive_number(margin):
            raise ValueError(f"ContractiveResidual: margin must be a finite number > 0, got {margin!r}")
        if isinstance(contraction, bool) or not isinstance(contraction, (int, float)) or not 0 < contraction < 1:
            raise ValueError(f"ContractiveResidual: contraction must be in (0, 1), got {contraction!r}")
        self.dim, self.hidden_dims = dim, list(hidden_dims)
        self.margin, self.contraction = float(margin), float(contraction)
        self.inverse_tol, self.inverse_max_iter = inverse_tol, int(inverse_max_iter)
        sizes = [dim, *hidden_dims, dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        with torch.no_grad():  # start at h(z) = a z: the residual branch learns from zero
            self.layers[-1].weight.zero_()
            self.layers[-1].bias.zero_()
        # a = floor + softplus(raw) starts at max(1, 2 margin, 1.25 floor), as the diagonal map's s starts at
        # max(1, 2 margin)
        start = max(1.0, 2.0 * self.margin, 1.25 * self.scale_floor) - self.scale_floor
        self.scale_raw = nn.Parameter(torch.full((dim,), math.log(math.expm1(start))))

    @property
    def scale_floor(self) -> float:
        """:math:`\\text{margin}/(1 - c)`, the floor of every :math:`a_i`."""
        return self.margin / (1.0 - self.contraction)

    @property
    def scale(self) -> torch.Tensor:
        """:math:`a = \\text{margin}/(1 - c) + \\mathrm{softplus}(\\tilde a)`, shape ``(K,)``."""
        return self.scale_floor + F.softplus(self.scale_raw)

    def normalized_weights(self) -> list[torch.Tensor]:
        """:math:`\\hat W_l = W_l / \\max(1, \\lVert W_l\\rVert_2)`, the last one times :math:`c`."""
        weights = []
        for layer in self.layers:
            w = layer.weight
            weights.append(w / torch.linalg.matrix_norm(w, ord=2).clamp(min=1.0))
        weights[-1] = self.contraction * weights[-1]
        return weights

    def residual(self, z: torch.Tensor, weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        """:math:`f(z)`, shape ``(..., K)``."""
        weights = self.normalized_weights() if weights is None else weights
        for w, layer in zip(weights[:-1], self.layers[:-1]):
            z = F.elu(z @ w.transpose(-1, -2) + layer.bias)
        return z @ weights[-1].transpose(-1, -2) + self.layers[-1].bias

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        check_event("ContractiveResidual", z, self.dim)
        return self.scale * (z + self.residual(z))

    def _inverse(self, u: torch.Tensor) -> torch.Tensor:
        check_event("ContractiveResidual", u, self.dim, "output")
        target = u / self.scale
        tol = self.inverse_tol if self.inverse_tol is not None else 100 * torch.finfo(u.dtype).eps
        weights = self.normalized_weights()
        threshold = tol * (1.0 + target.abs().amax(-1))  # per row, so a small row is not judged by a large one
        z = target
        active = torch.ones_like(threshold, dtype=torch.bool)
        for _ in range(self.inverse_max_iter):
            new = target - self.residual(z, weights)
            moved = (new - z).abs().amax(-1)
            z = torch.where(active.unsqueeze(-1), new, z)  # rows already converged stay where they stopped
            active = active & ~(moved <= threshold)  # a NaN step is not converged
            if not active.any():
                return z
        raise RuntimeError(
            f"ContractiveResidual: the inverse's fixed-point iteration has not converged for {int(active.sum())} of "
            f"{active.numel()} rows after {self.inverse_max_iter} steps (largest last step "
            f"{moved[active].max().item():.3g}, tolerance {tol:.3g} * (1 + max|u / a|) per row); raise "
            "inverse_max_iter or inverse_tol"
        )

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\partial h/\\partial z = \\mathrm{diag}(a)(I + J_f)`, shape ``(..., K, K)``, by explicit products."""
        check_event("ContractiveResidual", z, self.dim)
        weights = self.normalized_weights()
        a = z @ weights[0].transpose(-1, -2) + self.layers[0].bias
        jac = weights[0].expand(*z.shape[:-1], *weights[0].shape)
        for w, layer in zip(weights[1:], self.layers[1:]):
            derivative = torch.where(a > 0, torch.ones_like(a), torch.exp(a.clamp(max=0)))  # ELU'
            jac = w @ (derivative.unsqueeze(-1) * jac)
            a = F.elu(a) @ w.transpose(-1, -2) + layer.bias
        eye = torch.eye(self.dim, dtype=z.dtype, device=z.device)
        return self.scale.unsqueeze(-1) * (eye + jac)

    def log_abs_det_jacobian(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """:math:`\\log\\lvert\\det J_h\\rvert`, shape ``(...)``."""
        return torch.linalg.slogdet(self.jacobian(z)).logabsdet

    def injectivity_bound(self) -> torch.Tensor:
        """The guaranteed floor on every singular value of :math:`J_h`: :math:`\\min_i a_i (1 - c) \\ge` margin."""
        return self.scale.min() * (1.0 - self.contraction)
