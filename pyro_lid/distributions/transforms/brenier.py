r"""Brenier maps as Pyro transforms: :math:`y = \nabla\psi(x)` for a strongly convex :math:`\psi`."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import NamedTuple

import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch.distributions import Transform, constraints

from ...nn.icnn import ICNN, PICNN
from ...nn.legendre import invert_gradient_map
from .caching import CopyWithCache

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


class _Remembered(NamedTuple):
    """The last pair a :class:`ConditionedBrenier` computed, and what it was computed from.

    ``given`` is the caller's own input, kept as is (with whatever graph the caller gave it);
    ``result`` is the computed output *detached* (its graph belongs to the caller, and a
    backward pass may free it), recognised by a weak reference to the tensor handed back.
    ``state`` holds every tensor the map depends on with its version counter.
    """

    direction: str  # "call" or "inverse": the direction that was computed
    given: torch.Tensor
    given_version: int
    result_ref: weakref.ref
    result: torch.Tensor
    result_version: int
    result_has_graph: bool
    state: tuple


class ConditionedBrenier(CopyWithCache, Transform):
    r"""The Brenier map :math:`y = \nabla_x\psi(x; c)` of a strongly convex potential, context fixed.

    Bijective on :math:`\mathbb{R}^n` with a symmetric positive-definite Jacobian
    :math:`\nabla^2\psi`, so ``sign = +1`` and
    :math:`\log|\det J| = \log\det\nabla^2\psi(x)` (exact, by Cholesky: a failure
    would mean the potential is not strongly convex, and raises). The inverse solves
    :math:`\nabla\psi(x) = y` by Newton's method (see
    :func:`~pyro_lid.nn.invert_gradient_map`); gradients flow through it by the
    implicit function theorem. Inputs of any batch shape ``(..., n)`` are accepted.

    With ``cache_size=1`` (the default) the transform remembers its last pair, as Pyro's
    transforms do, so that the inverse of a tensor it has just produced (``log_prob`` of a
    ``sample`` or ``rsample``) costs no Newton solve. Unlike
    :class:`torch.distributions.Transform`'s cache, the memory is tied to the state of the
    map and never holds a graph of its own:

    * a remembered pair counts only while the potential's parameters and buffers (and the
      context) are the same tensors with the same version counters and the same sums, so any
      change (an optimizer step, ``load_state_dict``, ``module.double()``) forgets it; the sums
      see the changes that bypass the version counters (``param.data`` writes, as Pyro's
      ``ClippedAdam`` and torch's fused Adam make);
    * under ``torch.inference_mode()`` nothing is remembered (inference tensors have no version
      counter);
    * the inverse of a tensor the map produced returns the caller's own input tensor, as
      :class:`~torch.distributions.Transform` does, when the produced tensor carried a graph
      (so every gradient through it is right) or the call needs none; otherwise Newton's
      method starts at that input (no iteration) and takes one differentiable step;
    * a result the map computed is kept detached and returned again only to a call that needs
      no gradients; a call that needs them computes afresh, the inverse starting Newton's
      method at the remembered solution (no iteration, one differentiable step), so scoring
      one data tensor at every step (full-batch training) never backpropagates through a
      graph twice;
    * copies and pickles of the transform (``copy.deepcopy`` of a model) start with an empty memory.

    :param potential: an :class:`~pyro_lid.nn.ICNN` (or :class:`~pyro_lid.nn.PICNN` with ``context``).
    :param context: context tensor ``(..., c)`` broadcast against the input's batch shape.
    :param inverse_tol: Newton residual tolerance (default depends on dtype).
    :param int inverse_max_iter: Newton iteration cap; a :class:`RuntimeError` is raised beyond it.
    :param str solver: ``"auto"``, ``"newton"`` or ``"newton_cg"``.
    :param int cache_size: 1 to remember the last pair (see above), 0 not to.
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
        self._remembered = None

    @property
    def input_dim(self) -> int:
        return self.potential.input_dim

    def __getstate__(self):
        state = super().__getstate__()
        state["_remembered"] = None  # the caller's tensors (and their graphs) are not part of the map
        return state

    # ----------------------------------------------------------------- the memory of the last pair
    def _state(self) -> tuple:
        """Every tensor the map depends on, with its version counter and storage, and the sums of all of them (one
        tensor: a write through ``.data`` changes a sum but no version counter; see the class docstring)."""
        tensors = [*self.potential.parameters(), *self.potential.buffers()]
        if self.context is not None:
            tensors.append(self.context)
        sums = torch.stack([t.detach().sum().to(torch.float64) for t in tensors]) if tensors else None
        return tuple((t, t._version, t.data_ptr(), t.requires_grad) for t in tensors), sums

    @staticmethod
    def _same_state(a: tuple, b: tuple) -> bool:
        (a_tensors, a_sums), (b_tensors, b_sums) = a, b
        same = len(a_tensors) == len(b_tensors) and all(
            s[0] is t[0] and s[1:] == t[1:] for s, t in zip(a_tensors, b_tensors)
        )
        return same and (a_sums is None or torch.equal(a_sums, b_sums))  # NaN sums never match: recomputed

    def _needs_graph(self, value: torch.Tensor, state: tuple) -> bool:
        """Whether a result for ``value`` must carry gradients (to the input, context or parameters)."""
        return torch.is_grad_enabled() and (value.requires_grad or any(requires_grad for *_, requires_grad in state[0]))

    def _recall(self, direction: str, value: torch.Tensor, state: tuple):
        """Look ``value`` up in the memory: ``(answer, start)``, the tensor to return or a Newton start point.

        Both are ``None`` when the memory does not apply: another tensor, a tensor changed in
        place since, or a map whose parameters have changed since.
        """
        entry = self._remembered
        if entry is None or not self._same_state(entry.state, state):
            return None, None
        if entry.given._version != entry.given_version or entry.result._version != entry.result_version:
            return None, None
        needs_graph = self._needs_graph(value, state)
        if entry.direction == direction and value is entry.given:
            # computed for this very tensor before: the value holds, the graph was handed out
            if not needs_graph:
                self._remembered = entry._replace(result_ref=weakref.ref(entry.result))
                return entry.result, None
            return None, entry.result
        if entry.direction != direction and entry.result_ref() is value:
            # the tensor handed back last time: its preimage is the caller's own input, and if the
            # handed-back tensor carried a graph, every gradient through it is right
            if entry.result_has_graph or not needs_graph:
                return entry.given, None
            return None, entry.given
        return None, None

    def _remember(self, direction: str, given: torch.Tensor, result: torch.Tensor, state: tuple) -> None:
        self._remembered = _Remembered(
            direction,
            given,
            given._version,
            weakref.ref(result),
            result.detach(),
            result._version,
            result.requires_grad,
            state,
        )

    def _no_memory(self, value: torch.Tensor) -> bool:
        """Whether to compute without the memory: ``cache_size=0``, or inference tensors (no version counters)."""
        return self._cache_size == 0 or torch.is_inference_mode_enabled() or value.is_inference()

    def _forget(self) -> None:
        self._remembered = None  # a copy (with_cache) starts with an empty memory

    def __call__(self, x):
        if self._no_memory(x):
            return self._call(x)
        state = self._state()
        answer, _ = self._recall("call", x, state)
        if answer is not None:
            return answer
        y = self._call(x)  # one gradient evaluation: no start point to use
        self._remember("call", x, y, state)
        return y

    def _inv_call(self, y):
        if self._no_memory(y):
            return self._inverse(y)
        state = self._state()
        answer, start = self._recall("inverse", y, state)
        if answer is not None:
            return answer
        x = self._solve(y, start)
        self._remember("inverse", y, x, state)
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
        return self._solve(y)

    def _solve(self, y: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        r"""Newton's method for :math:`\nabla\psi(x) = y`, from ``start`` (broadcastable to ``y``) if given."""
        flat, context, batch_shape = self._flatten(y, "value to invert")
        if start is not None:
            start = start.detach().expand(batch_shape + (self.input_dim,)).reshape(-1, self.input_dim)
        x = invert_gradient_map(
            self.potential,
            flat,
            context,
            x0=start,
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
    :param float output_gain: scale of the ICNN's output weights (see :class:`~pyro_lid.nn.ICNN`).
    :param float sharpness: :math:`\beta` of the ICNN's activations :math:`\mathrm{softplus}(\beta a)/\beta`.

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
        output_gain: float = 1.0,
        sharpness: float = 1.0,
    ):
        potential = ICNN(input_dim, hidden_dims, alpha_floor, alpha_init, learn_alpha, output_gain, sharpness)
        super().__init__(potential, None, inverse_tol, inverse_max_iter, solver)

    def injectivity_bound(self) -> torch.Tensor:
        r"""The guaranteed floor :math:`\alpha` on every eigenvalue of :math:`\nabla^2\psi`, so on every singular
        value of the Jacobian (the strong-convexity constant, at least ``alpha_floor``)."""
        return self.potential.alpha


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
