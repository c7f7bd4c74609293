r"""Strongly convex potentials: input-convex neural networks with closed-form derivatives.

A fully input-convex network (Amos et al. 2017) with softplus activations of sharpness
:math:`\beta` (:math:`s(a) = \mathrm{softplus}(\beta a)/\beta`; :math:`\beta = 1` by default, larger is closer
to a ReLU, smaller closer to a linear map),

.. math::

    a_0 = W_0 x + b_0, \qquad
    a_k = U_k\, s(a_{k-1}) + W_k x + b_k \quad (k \ge 1), \qquad
    \psi(x) = v^\top s(a_{L-1}) + w^\top x + \tfrac{\alpha}{2}\lVert x \rVert^2,

is convex in :math:`x` whenever :math:`U_k \ge 0` and :math:`v \ge 0` elementwise,
because :math:`s` is convex and non-decreasing. Both are
positive by reparameterization (:math:`U_k = \mathrm{softplus}(\tilde U_k)/\text{fan\_in}`,
:math:`v = \gamma\,\mathrm{softplus}(\tilde v)\min(1, n/\text{width})` with the output gain
:math:`\gamma`, 1 by default), never by clamping, so
no unit is dead and the network is convex from the first step. At initialization the
linear term cancels the network's gradient at the origin, so :math:`\nabla\psi(0) = 0`. The quadratic term
with :math:`\alpha \ge \alpha_{\min} > 0` makes :math:`\psi` *strongly* convex, so
its gradient :math:`\nabla\psi` (a Brenier map) is a bijection of
:math:`\mathbb{R}^n` with a Lipschitz inverse.

All derivatives are explicit tensor operations (no double backpropagation, valid
under :func:`torch.no_grad`):

* gradient, by a hand-written backward pass: with :math:`m_{L-1} = v` and
  :math:`r_k = m_k \odot s'(a_k)`, :math:`m_{k-1} = U_k^\top r_k`,
  :math:`\nabla\psi(x) = \sum_k W_k^\top r_k + w + \alpha x`;
* Hessian, exactly: since every layer is affine and the nonlinearities act
  elementwise, :math:`\nabla^2\psi(x) = \alpha I + \sum_k J_k^\top
  \mathrm{diag}(m_k \odot s''(a_k))\, J_k` with :math:`J_k = \partial a_k/\partial x`,
  a sum of positive semi-definite terms (so :math:`\lambda_{\min} \ge \alpha`);
* Hessian-vector products with the same sum, in one forward and one backward sweep.

:class:`PICNN` is partially input-convex: convex in :math:`x`, any smooth function
of a context :math:`c`. It modulates each layer with non-negative (hidden path) or
arbitrary (input path) per-sample gains, which keeps every layer affine in
:math:`x`, so the same closed forms apply.

References: B. Amos, L. Xu, J. Z. Kolter, "Input Convex Neural Networks", ICML 2017;
C.-W. Huang, R. T. Q. Chen, C. Tsirigotis, A. Courville, "Convex Potential Flows",
ICLR 2021.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._checks import is_positive_number

__all__ = ["ICNN", "PICNN"]

_SOFTPLUS_ONE = math.log(math.expm1(1.0))  # softplus(_SOFTPLUS_ONE) == 1


def _softplus(a: torch.Tensor) -> torch.Tensor:
    """Fused softplus whose linear cut-off lies where exp(-a) is below the dtype's precision.

    ``F.softplus``'s default cut-off (a > 20) would make the value disagree with its
    derivative sigmoid(a) by exp(-20) = 2e-9, visible in float64.
    """
    return F.softplus(a, threshold=40.0 if a.dtype == torch.float64 else 20.0)


def _inverse_softplus(value: float) -> float:
    return math.log(math.expm1(value))


class _Modulation(NamedTuple):
    """Per-sample gains of one forward pass (``None`` means "no modulation").

    ``hidden_gain[k]`` (>= 0) scales the hidden input of layer k, ``input_gain[k]``
    scales the network input of layer k, ``bias[k]`` is added to the pre-activation,
    ``linear`` is the coefficient of the linear term :math:`w^\\top x`.
    """

    hidden_gain: Sequence[torch.Tensor | None]
    input_gain: Sequence[torch.Tensor | None]
    bias: Sequence[torch.Tensor | None]
    linear: torch.Tensor | None


class ICNN(nn.Module):
    r"""Strongly convex fully input-convex potential :math:`\psi:\mathbb{R}^n\to\mathbb{R}`.

    See the module docstring for the equations. The map :math:`x\mapsto\nabla\psi(x)`
    is initialized close to the identity (:math:`\alpha = 1` and a small network term).

    Example::

        >>> psi = ICNN(2, hidden_dims=[32, 32])
        >>> x = torch.randn(5, 2)
        >>> psi(x).shape, psi.gradient(x).shape, psi.hessian(x).shape
        (torch.Size([5]), torch.Size([5, 2]), torch.Size([5, 2, 2]))

    :param int input_dim: dimension :math:`n` of the input.
    :param hidden_dims: widths of the hidden layers (default ``[64, 64]``).
    :param float alpha_floor: lower bound :math:`\alpha_{\min} > 0` on the strong
        convexity constant; the smallest Hessian eigenvalue is at least this.
    :param float alpha_init: initial :math:`\alpha` (must exceed ``alpha_floor``; default
        ``max(1, 2 * alpha_floor)``).
    :param bool learn_alpha: learn :math:`\alpha` (through softplus, above the floor).
    :param float output_gain: :math:`\gamma > 0`, the scale of the output weights :math:`v`, so of the
        network term at initialization and of how fast Adam moves the map (default 1).
    :param float sharpness: :math:`\beta > 0` of the activation :math:`\mathrm{softplus}(\beta a)/\beta`
        (default 1): its curvature :math:`\beta\sigma(\beta a)(1-\sigma(\beta a))` peaks at :math:`\beta/4`.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] | None = None,
        alpha_floor: float = 1e-2,
        alpha_init: float | None = None,
        learn_alpha: bool = True,
        output_gain: float = 1.0,
        sharpness: float = 1.0,
    ):
        super().__init__()
        hidden_dims = [64, 64] if hidden_dims is None else list(hidden_dims)
        if not isinstance(input_dim, int) or input_dim < 1:
            raise ValueError(f"input_dim must be a positive integer, got {input_dim!r}")
        if len(hidden_dims) == 0 or any(int(h) < 1 for h in hidden_dims):
            raise ValueError(f"hidden_dims must be a non-empty list of positive widths, got {hidden_dims!r}")
        if not math.isfinite(alpha_floor) or alpha_floor <= 0:
            raise ValueError(
                f"alpha_floor must be a finite number > 0 (it is the strong-convexity "
                f"constant that makes the Brenier map injective), got {alpha_floor!r}"
            )
        for option, value in (("output_gain", output_gain), ("sharpness", sharpness)):
            if not is_positive_number(value):
                raise ValueError(f"{option} must be a finite number > 0, got {value!r}")
        alpha_init = max(1.0, 2.0 * alpha_floor) if alpha_init is None else alpha_init
        if not alpha_init > alpha_floor:
            raise ValueError(f"alpha_init ({alpha_init!r}) must be larger than alpha_floor ({alpha_floor!r})")
        self.input_dim = input_dim
        self.hidden_dims = [int(h) for h in hidden_dims]
        self.alpha_floor = float(alpha_floor)
        self.sharpness = float(sharpness)

        self.input_weights = nn.ParameterList(
            [nn.Parameter(torch.randn(h, input_dim) / math.sqrt(input_dim)) for h in self.hidden_dims]
        )
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(h)) for h in self.hidden_dims])
        # free parameters of the positive hidden-to-hidden weights (layer k >= 1)
        self.hidden_weights_raw = nn.ParameterList(
            [
                nn.Parameter(torch.empty(h_out, h_in).uniform_(-1.0, 1.0) + _SOFTPLUS_ONE)
                for h_in, h_out in zip(self.hidden_dims[:-1], self.hidden_dims[1:])
            ]
        )
        self.output_weight_raw = nn.Parameter(torch.full((self.hidden_dims[-1],), _SOFTPLUS_ONE))
        # The size of v sets how fast the map can learn: under Adam the input weights move by about lr
        # a step whatever their scale, so grad psi moves by about |v| * width * lr. v = 1/width (a plain
        # 1/fan_in rule) kept a 784-dimensional decoder map near the identity for whole epochs
        # (Fashion-MNIST LIDVAE, 2 epochs: -487 nats against -311 with v = 1). min(1, n / width) gives
        # v = 1 for wide inputs and keeps low-dimensional maps close to the identity at initialization.
        self.output_scale = float(output_gain) * min(1.0, input_dim / self.hidden_dims[-1])
        self.linear = nn.Parameter(torch.zeros(input_dim))
        with torch.no_grad():  # centre the map: grad psi(0) = 0 at initialization
            none = [None] * self.num_layers
            mod = _Modulation(none, none, none, None)
            weights = self._hidden_weights()
            pre, _ = self._forward_pass(self.linear.new_zeros(1, input_dim), mod, weights, last_activation=False)
            self.linear.copy_(-self._backward_pass(pre, mod, weights)[1][0])
        alpha_raw = torch.tensor(_inverse_softplus(alpha_init - alpha_floor))
        if learn_alpha:
            self.alpha_raw = nn.Parameter(alpha_raw)
        else:
            self.register_buffer("alpha_raw", alpha_raw)

    # ----------------------------------------------------------------- parameters
    @property
    def num_layers(self) -> int:
        return len(self.hidden_dims)

    @property
    def alpha(self) -> torch.Tensor:
        r"""Strong convexity constant :math:`\alpha = \alpha_{\min} + \mathrm{softplus}(\cdot)`."""
        return self.alpha_floor + F.softplus(self.alpha_raw)

    def hidden_weight(self, k: int) -> torch.Tensor:
        """Positive weight :math:`U_k = \\mathrm{softplus}(\\tilde U_k) / \\text{fan\\_in}` (k >= 1)."""
        raw = self.hidden_weights_raw[k - 1]
        return F.softplus(raw) / raw.shape[1]

    @property
    def output_weight(self) -> torch.Tensor:
        r"""Positive :math:`v = \gamma\,\mathrm{softplus}(\tilde v)\cdot\min(1, n/\text{width})` (see ``__init__``)."""
        return F.softplus(self.output_weight_raw) * self.output_scale

    # ----------------------------------------------------------------- internals
    def _activation(self, a: torch.Tensor) -> torch.Tensor:
        """:math:`s(a) = \\mathrm{softplus}(\\beta a)/\\beta`."""
        return _softplus(self.sharpness * a) / self.sharpness

    def _slope(self, a: torch.Tensor) -> torch.Tensor:
        """:math:`s'(a) = \\sigma(\\beta a)`; the curvature is :math:`s''(a) = \\beta s'(a)(1 - s'(a))`."""
        return torch.sigmoid(self.sharpness * a)

    def _modulation(self, x: torch.Tensor, context: torch.Tensor | None) -> _Modulation:
        if context is not None:
            raise ValueError("ICNN takes no context; use PICNN for a potential conditioned on a context")
        none = [None] * self.num_layers
        return _Modulation(none, none, none, None)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"{type(self).__name__} expects a (batch, {self.input_dim}) tensor, got shape {tuple(x.shape)}"
            )

    def _hidden_weights(self) -> list:
        """``[None, U_1, ..., U_{L-1}]``, computed once per call (the reparameterization is not free)."""
        return [None] + [self.hidden_weight(k) for k in range(1, self.num_layers)]

    def _forward_pass(self, x: torch.Tensor, mod: _Modulation, weights: list, last_activation: bool = True):
        """Pre-activations ``a_k`` of every layer (and the last activations, if asked for)."""
        pre = []
        z = None
        for k in range(self.num_layers):
            gx = mod.input_gain[k]
            a = F.linear(x if gx is None else x * gx, self.input_weights[k], self.biases[k])
            if mod.bias[k] is not None:
                a = a + mod.bias[k]
            if k > 0:
                gz = mod.hidden_gain[k]
                a = a + F.linear(z if gz is None else z * gz, weights[k])
            pre.append(a)
            if k < self.num_layers - 1 or last_activation:
                z = self._activation(a)
        return pre, z

    def _backward_pass(self, pre, mod: _Modulation, weights: list):
        """Signals ``m_k = dF/ds(a_k)`` of the network term F and its input gradient."""
        m = self.output_weight.expand_as(pre[-1])
        signals = [None] * self.num_layers
        grad = None
        for k in reversed(range(self.num_layers)):
            signals[k] = m
            r = m * self._slope(pre[k])
            gx = mod.input_gain[k]
            term = r @ self.input_weights[k]
            term = term if gx is None else term * gx
            grad = term if grad is None else grad + term
            if k > 0:
                m = r @ weights[k]
                gz = mod.hidden_gain[k]
                if gz is not None:
                    m = m * gz
        return signals, grad

    def _linear_coefficient(self, mod: _Modulation) -> torch.Tensor:
        return self.linear if mod.linear is None else self.linear + mod.linear

    # ----------------------------------------------------------------- public API
    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        r"""Potential value :math:`\psi(x)`, shape ``(batch,)``."""
        self._check(x)
        mod = self._modulation(x, context)
        _, z = self._forward_pass(x, mod, self._hidden_weights())
        return z @ self.output_weight + (x * self._linear_coefficient(mod)).sum(-1) + 0.5 * self.alpha * (x * x).sum(-1)

    def gradient(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        r"""The Brenier map :math:`\nabla\psi(x)` in closed form, shape ``(batch, n)``."""
        self._check(x)
        mod = self._modulation(x, context)
        weights = self._hidden_weights()
        pre, _ = self._forward_pass(x, mod, weights, last_activation=False)
        _, grad = self._backward_pass(pre, mod, weights)
        return grad + self._linear_coefficient(mod) + self.alpha * x

    def _curvature_terms(self, x, context, weights):
        mod = self._modulation(x, context)
        pre, _ = self._forward_pass(x, mod, weights, last_activation=False)
        signals, _ = self._backward_pass(pre, mod, weights)
        slopes = [self._slope(a) for a in pre]
        curvatures = [self.sharpness * m * s * (1 - s) for m, s in zip(signals, slopes)]  # m_k * s''(a_k) >= 0
        return mod, slopes, curvatures

    def _effective_input_weight(self, k, mod):
        gx = mod.input_gain[k]
        w = self.input_weights[k]
        return w if gx is None else w * gx.unsqueeze(-2)  # (h, n) or (B, h, n)

    def hessian(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        r"""Exact Hessian :math:`\nabla^2\psi(x)`, shape ``(batch, n, n)``, symmetric positive definite.

        Memory is :math:`O(\text{batch}\cdot\text{width}\cdot n)`; for large ``n`` prefer :meth:`hvp`.
        """
        self._check(x)
        weights = self._hidden_weights()
        mod, slopes, curvatures = self._curvature_terms(x, context, weights)
        batch = x.shape[0]
        jac = self._effective_input_weight(0, mod).expand(batch, -1, -1)  # J_0 = da_0/dx
        hess = torch.einsum("bhi,bh,bhj->bij", jac, curvatures[0], jac)
        for k in range(1, self.num_layers):
            gz = mod.hidden_gain[k]
            scale = slopes[k - 1] if gz is None else slopes[k - 1] * gz
            jac = torch.matmul(weights[k], scale.unsqueeze(-1) * jac) + self._effective_input_weight(k, mod)
            hess = hess + torch.einsum("bhi,bh,bhj->bij", jac, curvatures[k], jac)
        eye = torch.eye(self.input_dim, dtype=x.dtype, device=x.device)
        return hess + self.alpha * eye

    def hvp(self, x: torch.Tensor, v: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        r"""Hessian-vector products :math:`\nabla^2\psi(x)\,v` for ``v`` of shape ``(batch, n)``.

        One forward sweep computes :math:`t_k = J_k v`, one backward sweep accumulates
        :math:`\sum_k J_k^\top (c_k \odot t_k)`; cost is that of two gradient evaluations.
        """
        self._check(x)
        if v.shape != x.shape:
            raise ValueError(f"hvp expects v with the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
        weights = self._hidden_weights()
        mod, slopes, curvatures = self._curvature_terms(x, context, weights)
        weighted = []
        t = None
        for k in range(self.num_layers):
            gx = mod.input_gain[k]
            tk = F.linear(v if gx is None else v * gx, self.input_weights[k])
            if k > 0:
                gz = mod.hidden_gain[k]
                inner = slopes[k - 1] * t
                tk = tk + F.linear(inner if gz is None else inner * gz, weights[k])
            t = tk
            weighted.append(curvatures[k] * tk)
        out = self.alpha * v
        e = weighted[-1]
        for k in reversed(range(self.num_layers)):
            gx = mod.input_gain[k]
            term = e @ self.input_weights[k]
            out = out + (term if gx is None else term * gx)
            if k > 0:
                back = e @ weights[k]
                gz = mod.hidden_gain[k]
                if gz is not None:
                    back = back * gz
                e = weighted[k - 1] + slopes[k - 1] * back
        return out


class PICNN(ICNN):
    r"""Partially input-convex potential :math:`\psi(x; c)`: convex in :math:`x`, any function of :math:`c`.

    A context network :math:`h(c)` (an MLP) produces per-sample gains for every layer,

    .. math::

        a_k = U_k\,\big(s(a_{k-1}) \odot \mathrm{softplus}(A_k h)\big)
              + W_k\,(x \odot (B_k h + 1)) + b_k + C_k h,

    and a linear coefficient :math:`w + D h`. The hidden gains are non-negative, so
    :math:`\psi` stays (strongly) convex in :math:`x` for every context. The head producing
    :math:`A_k h, B_k h, C_k h, D h` starts with zero weights and bias, so at initialization, for every
    context, the gains are one (to rounding), the context terms vanish and :math:`\psi(\cdot; c)` is the
    unconditioned :class:`ICNN` (so :math:`\nabla\psi(0; c) = 0`). The head's weights still get gradients
    (they multiply :math:`h(c)`); the context MLP gets them once the head has moved.

    :param int input_dim: dimension :math:`n` of the convex argument.
    :param int context_dim: dimension of the context.
    :param hidden_dims: widths of the convex layers (default ``[64, 64]``).
    :param context_hidden_dims: widths of the context MLP (default ``[64]``).
    """

    def __init__(
        self,
        input_dim: int,
        context_dim: int,
        hidden_dims: Sequence[int] | None = None,
        context_hidden_dims: Sequence[int] | None = None,
        alpha_floor: float = 1e-2,
        alpha_init: float | None = None,
        learn_alpha: bool = True,
        output_gain: float = 1.0,
        sharpness: float = 1.0,
    ):
        super().__init__(input_dim, hidden_dims, alpha_floor, alpha_init, learn_alpha, output_gain, sharpness)
        if not isinstance(context_dim, int) or context_dim < 1:
            raise ValueError(f"context_dim must be a positive integer, got {context_dim!r}")
        self.context_dim = context_dim
        context_hidden_dims = [64] if context_hidden_dims is None else list(context_hidden_dims)
        layers = []
        width = context_dim
        for h in context_hidden_dims:
            layers += [nn.Linear(width, h), nn.Softplus()]
            width = h
        self.context_net = nn.Sequential(*layers)
        # one head producing all gains: hidden gains (k >= 1), input gains, biases, linear term
        self._head_sizes = self.hidden_dims[:-1] + [input_dim] * self.num_layers + self.hidden_dims + [input_dim]
        self.context_head = nn.Linear(width, sum(self._head_sizes))
        with torch.no_grad():  # context-free at initialization: every gain one, every context term zero
            self.context_head.weight.zero_()
            self.context_head.bias.zero_()

    def _modulation(self, x: torch.Tensor, context: torch.Tensor | None) -> _Modulation:
        if context is None:
            raise ValueError("PICNN needs a context tensor")
        if context.shape != (x.shape[0], self.context_dim):
            raise ValueError(
                f"PICNN expects a context of shape ({x.shape[0]}, {self.context_dim}), got {tuple(context.shape)}"
            )
        pieces = list(torch.split(self.context_head(self.context_net(context)), self._head_sizes, dim=-1))
        n_hidden = self.num_layers - 1
        hidden_gain = [None] + [F.softplus(p + _SOFTPLUS_ONE) for p in pieces[:n_hidden]]
        input_gain = [p + 1.0 for p in pieces[n_hidden : n_hidden + self.num_layers]]
        bias = pieces[n_hidden + self.num_layers : n_hidden + 2 * self.num_layers]
        return _Modulation(hidden_gain, input_gain, bias, pieces[-1])
