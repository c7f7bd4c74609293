r"""Brenier maps as Pyro transforms: :math:`y = \nabla\psi(x)` for a strongly convex :math:`\psi`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch.distributions import Transform, constraints

from ...nn.icnn import ICNN, PICNN
from ...nn.legendre import invert_gradient_map

__all__ = ["ConditionedBrenier", "Brenier", "ConditionalBrenier", "brenier", "conditional_brenier"]


def check_event(name: str, value: torch.Tensor, event_size: int, what: str = "input") -> None:
    """Raise a ``ValueError`` naming the problem if ``value`` is not a finite ``(..., event_size)`` tensor."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} expects a torch.Tensor {what}, got {type(value).__name__}")
    if value.dim() < 1 or value.shape[-1] != event_size:
        raise ValueError(
            f"{name} expects {what} with event size {event_size} (shape (..., {event_size})), "
            f"got shape {tuple(value.shape)}"
        )
    if not torch.isfinite(value).all():
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} got an {what} with {bad} NaN or infinite entries")


class ConditionedBrenier(Transform):
    r"""The Brenier map :math:`y = \nabla_x\psi(x; c)` of a strongly convex potential, context fixed.

    Bijective on :math:`\mathbb{R}^n` with a symmetric positive-definite Jacobian
    :math:`\nabla^2\psi`, so ``sign = +1`` and
    :math:`\log|\det J| = \log\det\nabla^2\psi(x)` (exact, by Cholesky: a failure
    would mean the potential is not strongly convex, and raises). The inverse solves
    :math:`\nabla\psi(x) = y` by Newton's method (see
    :func:`~pyro_lid.nn.invert_gradient_map`); gradients flow through it by the
    implicit function theorem. Inputs of any batch shape ``(..., n)`` are accepted.

    :param potential: an :class:`~pyro_lid.nn.ICNN` (or :class:`~pyro_lid.nn.PICNN` with ``context``).
    :param context: context tensor ``(..., c)`` broadcast against the input's batch shape.
    :param inverse_tol: Newton residual tolerance (default depends on dtype).
    :param int inverse_max_iter: Newton iteration cap; a :class:`RuntimeError` is raised beyond it.
    :param str solver: ``"auto"``, ``"newton"`` or ``"newton_cg"``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1

    def __init__(
        self,
        potential,
        context: torch.Tensor | None = None,
        inverse_tol: float | None = None,
        inverse_max_iter: int = 100,
        solver: str = "auto",
        cache_size: int = 1,
    ):
        super().__init__(cache_size=cache_size)
        self.potential = potential
        self.context = context
        self.inverse_tol = inverse_tol
        self.inverse_max_iter = inverse_max_iter
        self.solver = solver

    @property
    def input_dim(self) -> int:
        return self.potential.input_dim

    # Pyro caches the last (x, y) pair. A pair computed under ``torch.no_grad`` has no
    # graph, so it must not answer a later call made with gradients enabled.
    def _drop_cache_without_graph(self) -> None:
        if torch.is_grad_enabled() and getattr(self, "_cache_has_no_graph", False):
            self._cached_x_y = None, None

    def __call__(self, x):
        self._drop_cache_without_graph()
        y = super().__call__(x)
        self._cache_has_no_graph = not torch.is_grad_enabled()
        return y

    def _inv_call(self, y):
        self._drop_cache_without_graph()
        x = super()._inv_call(y)
        self._cache_has_no_graph = not torch.is_grad_enabled()
        return x

    def _flatten(self, value: torch.Tensor, what: str):
        """Check ``value`` and flatten it (and the context) to ``(batch, ...)`` rows."""
        check_event(type(self).__name__, value, self.input_dim, what)
        context = self.context
        batch_shape = value.shape[:-1]
        if context is not None:
            batch_shape = torch.broadcast_shapes(batch_shape, context.shape[:-1])
            context = context.expand(batch_shape + context.shape[-1:]).reshape(-1, context.shape[-1])
        flat = value.expand(batch_shape + value.shape[-1:]).reshape(-1, self.input_dim)
        return flat, context, batch_shape

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        flat, context, batch_shape = self._flatten(x, "input")
        return self.potential.gradient(flat, context).reshape(batch_shape + (self.input_dim,))

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        flat, context, batch_shape = self._flatten(y, "value to invert")
        x = invert_gradient_map(
            self.potential,
            flat,
            context,
            tol=self.inverse_tol,
            max_iter=self.inverse_max_iter,
            solver=self.solver,
        )
        return x.reshape(batch_shape + (self.input_dim,))

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        r"""The Jacobian :math:`\nabla^2\psi(x)`, shape ``(..., n, n)``."""
        flat, context, batch_shape = self._flatten(x, "input")
        return self.potential.hessian(flat, context).reshape(batch_shape + (self.input_dim, self.input_dim))

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r""":math:`\log\det\nabla^2\psi(x)`, shape ``x.shape[:-1]`` (exact, by Cholesky)."""
        chol, info = torch.linalg.cholesky_ex(self.jacobian(x))
        if (info > 0).any():
            raise RuntimeError(
                "Brenier Jacobian is not positive definite: the potential is not strongly convex "
                "(non-finite parameters?)"
            )
        return 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)


class Brenier(ConditionedBrenier, TransformModule):
    r"""A learnable Brenier map :math:`y = \nabla\psi(x)` on :math:`\mathbb{R}^n`.

    :math:`\psi` is a strongly convex input-convex neural network
    (:class:`~pyro_lid.nn.ICNN`), :math:`\psi(x) = \mathrm{ICNN}(x) + \tfrac{\alpha}{2}
    \lVert x\rVert^2` with :math:`\alpha \ge` ``alpha_floor``. The map is the optimal
    transport (Brenier) map between any base distribution and its push-forward,
    bijective with Lipschitz inverse, and initialized close to the identity.

    Example usage:

    >>> base_dist = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)
    >>> transform = Brenier(2)
    >>> pyro.module("my_transform", transform)  # doctest: +SKIP
    >>> flow_dist = dist.TransformedDistribution(base_dist, [transform])
    >>> flow_dist.log_prob(torch.randn(10, 2)).shape
    torch.Size([10])

    :param int input_dim: dimension of the input (and output).
    :param hidden_dims: ICNN widths (default ``[64, 64]``).
    :param float alpha_floor: strong-convexity floor (> 0).
    :param float alpha_init: initial strong-convexity constant.
    :param bool learn_alpha: learn :math:`\alpha` above its floor.

    References: Y. Wang, D. M. Blei, J. P. Cunningham, "Posterior Collapse and Latent
    Variable Non-identifiability", NeurIPS 2021; C.-W. Huang et al., "Convex Potential
    Flows", ICLR 2021.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] | None = None,
        alpha_floor: float = 1e-2,
        alpha_init: float | None = None,
        learn_alpha: bool = True,
        inverse_tol: float | None = None,
        inverse_max_iter: int = 100,
        solver: str = "auto",
    ):
        potential = ICNN(input_dim, hidden_dims, alpha_floor, alpha_init, learn_alpha)
        super().__init__(potential, None, inverse_tol, inverse_max_iter, solver)


class ConditionalBrenier(ConditionalTransformModule):
    r"""A Brenier map conditioned on a context: :math:`y = \nabla_x\psi(x; c)`.

    :math:`\psi(\cdot; c)` is a partially input-convex network (:class:`~pyro_lid.nn.PICNN`),
    strongly convex in :math:`x` for every context :math:`c`, so each conditioned map
    is a bijection.

    Example usage:

    >>> transform = ConditionalBrenier(2, context_dim=3)
    >>> base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)
    >>> flow = dist.ConditionalTransformedDistribution(base, [transform])
    >>> flow.condition(torch.randn(3)).sample(torch.Size([4])).shape
    torch.Size([4, 2])

    :param int input_dim: dimension of the input (and output).
    :param int context_dim: dimension of the context.
    :param hidden_dims: widths of the convex layers.
    :param context_hidden_dims: widths of the context network.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        input_dim: int,
        context_dim: int,
        hidden_dims: Sequence[int] | None = None,
        context_hidden_dims: Sequence[int] | None = None,
        alpha_floor: float = 1e-2,
        alpha_init: float | None = None,
        learn_alpha: bool = True,
        inverse_tol: float | None = None,
        inverse_max_iter: int = 100,
        solver: str = "auto",
    ):
        super().__init__()
        self.potential = PICNN(
            input_dim, context_dim, hidden_dims, context_hidden_dims, alpha_floor, alpha_init, learn_alpha
        )
        self.inverse_tol = inverse_tol
        self.inverse_max_iter = inverse_max_iter
        self.solver = solver

    def condition(self, context: torch.Tensor) -> ConditionedBrenier:
        check_event(type(self).__name__, context, self.potential.context_dim, "context")
        return ConditionedBrenier(self.potential, context, self.inverse_tol, self.inverse_max_iter, self.solver)


def brenier(input_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs) -> Brenier:
    """A helper function to create a :class:`Brenier` object, for consistency with other helpers in this package.

    :param int input_dim: dimension of the input (and output).
    :param hidden_dims: ICNN widths (default ``[64, 64]``).
    :param kwargs: passed on to :class:`Brenier`.
    """
    return Brenier(input_dim, hidden_dims, **kwargs)


def conditional_brenier(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs
) -> ConditionalBrenier:
    """A helper function to create a :class:`ConditionalBrenier` object.

    :param int input_dim: dimension of the input (and output).
    :param int context_dim: dimension of the context.
    :param hidden_dims: widths of the convex layers.
    :param kwargs: passed on to :class:`ConditionalBrenier`.
    """
    return ConditionalBrenier(input_dim, context_dim, hidden_dims, **kwargs)
