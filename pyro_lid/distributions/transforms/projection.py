r"""An injective decoder map that keeps an MLP's flexibility: :math:`g(z) = Q\,h(z) + (I - QQ^\top)\,m(z) + c`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .brenier import Brenier, check_event
from .injective import InjectiveMap
from .lift import _orthonormal_columns
from .residual import ContractiveResidual

__all__ = ["ProjectedInjective", "projected_injective"]

_INNER_MAPS = ("diagonal", "brenier", "residual")
_ACTIVATIONS = ("relu", "softplus")


def _project_out(matrix: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    r""":math:`(I - UU^\top)` ``matrix`` for a ``basis`` :math:`U` with orthonormal columns (``None``: ``matrix``)."""
    if basis is None:
        return matrix
    basis = basis.to(matrix.dtype)
    return matrix - basis @ (basis.transpose(-1, -2) @ matrix)


def _given_orthonormal(
    matrix, output_dim: int, latent_dim: int, orthogonal_to: torch.Tensor | None, metric_sqrt, name: str
) -> torch.Tensor:
    """``matrix`` ``(output_dim, latent_dim)`` projected off ``orthogonal_to`` and orthonormalized (float64), or a
    ``ValueError`` naming what is wrong (shape, non-finite entries, rank lost to the projection, a metric)."""
    if metric_sqrt is not None:
        raise ValueError(f"{name}: subspace_init and metric do not combine (with a metric Q is not orthonormal)")
    given = torch.as_tensor(matrix, dtype=torch.float64)
    if given.shape != (output_dim, latent_dim) or not torch.isfinite(given).all():
        raise ValueError(
            f"{name}: subspace_init must be a finite ({output_dim}, {latent_dim}) matrix, "
            f"got shape {tuple(given.shape)}"
            + ("" if given.shape != (output_dim, latent_dim) else " with non-finite entries")
        )
    projected = _project_out(given, orthogonal_to)
    if torch.linalg.matrix_rank(projected) < latent_dim:
        raise ValueError(
            f"{name}: subspace_init has rank < {latent_dim}"
            + (" once projected off orthogonal_to" if orthogonal_to is not None else "")
        )
    return _orthonormal_columns(projected)


def _seeded_orthonormal(
    output_dim: int, latent_dim: int, seed: int, orthogonal_to: torch.Tensor | None = None
) -> torch.Tensor:
    """A random ``(output_dim, latent_dim)`` matrix with orthonormal columns, a function of ``seed`` only (float64).

    With ``orthogonal_to`` (an orthonormal ``(output_dim, r)`` basis), the Gaussian draw is projected
    off its span before orthonormalization, so the columns are orthogonal to it; without, the
    matrix is the one this seed always gave.
    """
    gen = torch.Generator().manual_seed(seed)
    draw = torch.randn(output_dim, latent_dim, generator=gen, dtype=torch.float64)
    return _orthonormal_columns(_project_out(draw, orthogonal_to))


class ProjectedInjective(InjectiveMap):
    r"""An injective map :math:`g:\mathbb{R}^K\to\mathbb{R}^D`, :math:`K \le D`, that is an MLP off a subspace:

    .. math::

        g(z) = Q\,h(z) + (I - QQ^\top)\,m(z) + c,

    where :math:`Q\in\mathbb{R}^{D\times K}` has orthonormal columns, :math:`h:\mathbb{R}^K
    \to\mathbb{R}^K` is injective, :math:`m:\mathbb{R}^K\to\mathbb{R}^D` is a free MLP and
    :math:`c\in\mathbb{R}^D` an offset. Since :math:`Q^\top Q = I` and
    :math:`Q^\top(I - QQ^\top) = 0`,

    .. math::

        Q^\top\big(g(z) - c\big) = h(z)

    whatever :math:`m` is: the coordinates of :math:`g(z)` along :math:`\mathrm{span}(Q)`
    determine :math:`z`, so :math:`g` is injective whenever :math:`h` is, and a likelihood
    :math:`p(x\mid z)` with parameters :math:`g(z)` changes whenever :math:`z` does (:math:`z`
    is identifiable and the posterior cannot collapse). :math:`m` acts only in the
    :math:`D-K` directions orthogonal to :math:`Q`, where it is as flexible as an ordinary
    VAE decoder; the cost is one MLP, as for a VAE.

    The margin carries over: for every direction :math:`v`, with :math:`J_g = Q J_h +
    (I - QQ^\top) J_m`,

    .. math::

        \lVert J_g v\rVert \ge \lVert Q^\top J_g v\rVert = \lVert J_h v\rVert \ge \sigma_{\min}(J_h)\,\lVert v\rVert,

    (:math:`Q^\top` has operator norm 1), so every singular value of :math:`J_g` is at
    least the smallest one of :math:`J_h`, and that is at least ``margin`` by construction:

    * ``inner="diagonal"``: :math:`h(z) = s\odot z`, :math:`s = \text{margin} +
      \mathrm{softplus}(\tilde s)` learned; :math:`J_h = \mathrm{diag}(s)`, singular values
      :math:`s_i \ge` margin. The cheapest choice: :math:`h^{-1}` is a division. With
      ``learn_scale=False``, :math:`s = \text{margin}` is fixed: the injective part is then
      :math:`\text{margin}\cdot z`, and the margin is exact rather than a floor.
    * ``inner="brenier"``: :math:`h = \nabla\psi` a :class:`Brenier` map on
      :math:`\mathbb{R}^K` with ``alpha_floor=margin``; :math:`J_h = \nabla^2\psi`
      is symmetric with eigenvalues :math:`\ge \alpha \ge` margin. Nonlinear within the
      subspace; :math:`h^{-1}` is a Newton solve.
    * ``inner="residual"``: :math:`h(z) = a\odot(z + f(z))` a :class:`ContractiveResidual` map
      (:math:`f` an MLP with :math:`\mathrm{Lip}(f) \le c < 1`, :math:`a \ge \text{margin}/(1-c)`);
      :math:`\sigma_{\min}(J_h) \ge \min_i a_i (1 - c) \ge` margin. Nonlinear, not a gradient
      map; :math:`h^{-1}` is a fixed-point iteration.

    :meth:`injectivity_bound` reports :math:`\min_i s_i`, :math:`\alpha` or :math:`\min_i a_i(1-c)` (never below
    ``margin``); :meth:`smallest_singular_value` the actual value at given :math:`z`.

    **The subspace.** By default :math:`Q` is *fixed*: the sign-fixed QR factor of a
    Gaussian matrix drawn from a generator seeded with ``subspace_seed``, stored as a
    buffer (in the ``state_dict``, not among the parameters), so that two constructions
    with the same seed, and a checkpoint and its reload, agree. With
    ``learn_subspace=True``, :math:`Q` is the QR factor (signs fixed by
    :math:`\mathrm{diag}(R) > 0`, so a smooth function) of a free :math:`D\times K`
    parameter initialized at the fixed draw. Measured on VAEs, a fixed random :math:`Q`
    with margin 1 and a learned :math:`c` kept every latent unit active at about the
    VAE's likelihood, while a learned :math:`Q` let units go dark (the MLP can move
    :math:`\mathrm{span}(Q)` to where the data barely varies); hence the default.

    The default ``margin=1.0`` matches a standard normal prior's scale: a unit step in
    :math:`z` moves the decoder's output by at least one unit (in natural parameters,
    e.g. logits). The default ``hidden_dims=(512,)`` is the VAE decoder's in this library.

    **Orthogonal to given directions.** With ``orthogonal_to`` (a ``(D,)`` vector or ``(D, r)``
    matrix), :math:`Q` is drawn (or, if learned, kept) orthogonal to its span. The use is
    softmax logits: the softmax ignores a common shift :math:`a\mathbf 1`, and with
    ``orthogonal_to=torch.ones(D)`` also :math:`Q^\top(y + a\mathbf 1) = Q^\top y`, so
    :meth:`left_inverse` recovers :math:`z` from logits and from log-probabilities alike, and
    :math:`z\mapsto\mathrm{softmax}(g(z))` keeps the margin: the log-softmax Jacobian
    :math:`(I - \mathbf 1 p^\top)J_g` satisfies :math:`Q^\top(I - \mathbf 1 p^\top)J_g = J_h`.

    **A free part from elsewhere.** :meth:`combine` computes :math:`Q\,h(z) + (I - QQ^\top)\,f + c`
    for any tensor :math:`f` of shape ``(..., D)`` (``g(z)`` is ``combine(z, m(z))``). The bound
    :math:`Q^\top(\mathrm{combine}(z, f) - c) = h(z)` holds whatever :math:`f` is, even a function
    of :math:`z`, so a decoder that computes its own free part (say an LSTM's output layer, as
    :class:`~pyro_lid.models.LIDSVAE` does, through :meth:`combine_linear`, which fuses a linear
    free part into one matrix product) keeps the margin. ``free_network=False`` then
    drops the MLP :math:`m` (:math:`g(z) = Q\,h(z) + c`, and ``hidden_dims`` is ignored).

    **A metric: the margin in Fisher units.** A margin on the parameters (logits) is not a margin
    on what the likelihood sees: a Categorical with probabilities :math:`p` has Fisher information
    :math:`\mathrm{diag}(p) - pp^\top` in its logits, so a unit direction :math:`u` spread evenly
    over :math:`D` words tells it about :math:`1/D` nats per unit step (a Bernoulli pixel
    likewise :math:`p(1-p)`, about nothing when saturated). With ``metric`` :math:`w\in
    \mathbb{R}^D_{>0}` (say the unigram frequencies, :math:`W = \mathrm{diag}(w)`), :math:`Q =
    W^{-1/2} R` for :math:`R` with orthonormal columns, the left inverse is :math:`L = R^\top
    W^{1/2}` (:math:`LQ = I`) and the free part is projected by :math:`I - QL` (:math:`L(I - QL) = 0`):

    .. math::

        g(z) = Q\,h(z) + (I - QL)\,m(z) + c, \qquad L\big(g(z) - c\big) = h(z).

    Every column of :math:`Q` then has unit length in the metric, :math:`Q^\top W Q = I`: at
    logits :math:`\log w` (a Categorical that predicts the frequencies :math:`w`, ``orthogonal_to``
    the all-ones vector so that :math:`R \perp \sqrt w`) the Fisher information of
    :math:`z\mapsto h(z)` is exactly :math:`J_h^\top J_h \succeq \text{margin}^2 I`, whatever
    :math:`D` is. A learned :math:`R` cannot hide the injective directions on rare outputs either:
    their weight :math:`w_i` is small, so their entries in :math:`Q` are large. Directions in
    ``orthogonal_to`` are kept in the null space of :math:`L` (:math:`R\perp W^{1/2}d`). In
    Euclidean norm the margin becomes :math:`\sigma_{\min}(J_g) \ge \sigma_{\min}(J_h)/
    \max_i\sqrt{w_i}` (:math:`\lVert L\rVert = \max_i \sqrt{w_i}`), which
    :meth:`injectivity_bound` reports; without ``metric``, :math:`W = I` and :math:`L = Q^\top`.

    The map is not bijective: :meth:`left_inverse` (also used as ``_inverse``) returns
    :math:`h^{-1}(Q^\top(y - c))`, exact on the image of :math:`g` and a projection off
    it. There is no ``log_abs_det_jacobian`` (the map changes dimension);
    :meth:`log_volume_element` gives :math:`\tfrac12\log\det J^\top J`. Nothing is cached,
    so every call sees the current parameters; everything works under
    :func:`torch.no_grad` and in float64 (after ``.double()`` a fixed :math:`Q` is
    re-orthonormalized in the new precision, not merely cast).

    Example usage:

    >>> g = ProjectedInjective(2, 10, hidden_dims=(32,))
    >>> z = torch.randn(5, 2)
    >>> logits = g(z)
    >>> logits.shape, g.jacobian(z).shape
    (torch.Size([5, 10]), torch.Size([5, 10, 2]))
    >>> bool((g.left_inverse(logits) - z).abs().max() < 1e-4)
    True

    :param int latent_dim: :math:`K`.
    :param int output_dim: :math:`D \ge K`.
    :param hidden_dims: hidden widths of the MLP :math:`m` (``()`` makes it affine).
    :param str inner: ``"diagonal"``, ``"brenier"`` or ``"residual"``, the injective map :math:`h`.
    :param float margin: the floor (> 0) on every singular value of the Jacobian.
    :param bool learn_subspace: learn :math:`Q` (default: fixed).
    :param int subspace_seed: seed of the fixed draw of :math:`Q` (the initial value if learned).
    :param subspace_init: a ``(D, K)`` matrix of full column rank whose span is :math:`Q`'s instead of a random draw
        (projected off ``orthogonal_to``, then orthonormalized; the initial value if learned), e.g. a corpus's
        :func:`~pyro_lid.data.topic_directions`; not with ``metric``. Default ``None``: the seeded draw.
    :param inner_hidden_dims: hidden widths of the nonlinear inner map: the ICNN of ``inner="brenier"``
        or :math:`f` of ``inner="residual"`` (default: the class's own).
    :param str activation: ``"relu"`` or ``"softplus"``, the MLP's hidden activation.
    :param orthogonal_to: a ``(D,)`` vector or ``(D, r)`` matrix (:math:`K \le D - r`); :math:`Q` is
        orthogonal to its span (default ``None``: no constraint).
    :param metric: positive weights :math:`w` of shape ``(D,)`` (default ``None``: :math:`W = I`); see
        "A metric" above.
    :param float scale_init: the diagonal inner map's initial :math:`s` (> margin; default
        :math:`\max(1, 2\,\text{margin})`).
    :param bool learn_scale: learn the diagonal inner map's :math:`s` (default); ``False`` fixes
        :math:`s = \text{margin}` (``inner="diagonal"`` only, without ``scale_init``).
    :param bool free_network: build the MLP :math:`m` (default); ``False`` for a map used only
        through :meth:`combine` with a free part computed elsewhere.
    :param inner_kwargs: further options of the inner map: :class:`Brenier`'s for ``inner="brenier"``
        (``alpha_init``, ``learn_alpha``, ``output_gain``, ``sharpness``, ``inverse_tol``, ``inverse_max_iter``,
        ``solver``),
        :class:`ContractiveResidual`'s for ``inner="residual"`` (``contraction``, ``inverse_tol``,
        ``inverse_max_iter``).

    References: Y. Wang, D. M. Blei, J. P. Cunningham, "Posterior Collapse and Latent
    Variable Non-identifiability", NeurIPS 2021.
    """

    def __init__(
        self,
        latent_dim: int,
        output_dim: int,
        hidden_dims: Sequence[int] = (512,),
        inner: str = "diagonal",
        margin: float = 1.0,
        learn_subspace: bool = False,
        subspace_seed: int = 0,
        inner_hidden_dims: Sequence[int] | None = None,
        activation: str = "relu",
        orthogonal_to: torch.Tensor | None = None,
        free_network: bool = True,
        metric: torch.Tensor | None = None,
        scale_init: float | None = None,
        subspace_init: torch.Tensor | None = None,
        learn_scale: bool = True,
        **inner_kwargs,
    ):
        super().__init__(cache_size=0)
        name = type(self).__name__
        if not (isinstance(latent_dim, int) and isinstance(output_dim, int) and 1 <= latent_dim <= output_dim):
            raise ValueError(
                f"{name} needs integers 1 <= latent_dim <= output_dim, got latent_dim={latent_dim!r}, "
                f"output_dim={output_dim!r} (an injective map cannot lower the dimension)"
            )
        try:
            margin_value = float(margin)
        except (TypeError, ValueError):
            margin_value = math.nan
        if isinstance(margin, bool) or not math.isfinite(margin_value) or margin_value <= 0:
            raise ValueError(
                f"{name}: margin must be a finite number > 0 (the floor on every singular value of the "
                f"Jacobian, which makes the map injective), got {margin!r}"
            )
        if inner not in _INNER_MAPS:
            raise ValueError(f"{name}: inner must be one of {', '.join(map(repr, _INNER_MAPS))}, got {inner!r}")
        if inner != "diagonal" and scale_init is not None:
            raise ValueError(f"{name}: scale_init applies to inner='diagonal', not inner={inner!r}")
        if not learn_scale and inner != "diagonal":
            raise ValueError(f"{name}: learn_scale=False applies to inner='diagonal' (s fixed at the margin)")
        if not learn_scale and scale_init is not None:
            raise ValueError(f"{name}: learn_scale=False fixes s at the margin; it takes no scale_init")
        if scale_init is not None and not (isinstance(scale_init, (int, float)) and scale_init > margin_value):
            raise ValueError(f"{name}: scale_init must be a number > margin={margin_value:g}, got {scale_init!r}")
        if inner == "diagonal" and (inner_hidden_dims is not None or inner_kwargs):
            given = (["inner_hidden_dims"] if inner_hidden_dims is not None else []) + sorted(inner_kwargs)
            raise ValueError(f"{name}: {', '.join(given)} only apply to a nonlinear inner map, not inner='diagonal'")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"{name}: activation must be one of {', '.join(map(repr, _ACTIVATIONS))}, got {activation!r}"
            )
        hidden_dims = list(hidden_dims)
        if not all(isinstance(h, int) and h >= 1 for h in hidden_dims):
            raise ValueError(f"{name}: hidden_dims must be positive integer widths, got {hidden_dims!r}")
        if isinstance(subspace_seed, bool) or not isinstance(subspace_seed, int):
            raise ValueError(f"{name}: subspace_seed must be an integer, got {subspace_seed!r}")

        metric_sqrt = None
        if metric is not None:
            weights = torch.as_tensor(metric, dtype=torch.float64)
            if weights.shape != (output_dim,) or not torch.isfinite(weights).all() or not (weights > 0).all():
                raise ValueError(
                    f"{name}: metric must be {output_dim} finite positive weights (shape ({output_dim},)), "
                    f"got shape {tuple(weights.shape)} with minimum {weights.min().item() if weights.numel() else None}"
                )
            metric_sqrt = weights.sqrt()
        orthogonal_basis = None
        if orthogonal_to is not None:
            directions = torch.as_tensor(orthogonal_to, dtype=torch.float64)
            directions = directions.unsqueeze(-1) if directions.dim() == 1 else directions
            if directions.dim() != 2 or directions.shape[0] != output_dim:
                raise ValueError(
                    f"{name}: orthogonal_to must have shape ({output_dim},) or ({output_dim}, r), "
                    f"got {tuple(torch.as_tensor(orthogonal_to).shape)}"
                )
            if torch.linalg.matrix_rank(directions) < directions.shape[1] or not torch.isfinite(directions).all():
                raise ValueError(f"{name}: orthogonal_to must have finite, linearly independent columns")
            if latent_dim > output_dim - directions.shape[1]:
                raise ValueError(
                    f"{name}: latent_dim={latent_dim} columns orthogonal to {directions.shape[1]} direction(s) "
                    f"need output_dim >= {latent_dim + directions.shape[1]}, got {output_dim}"
                )
            raw_directions = directions
            if metric_sqrt is not None:  # L d = R^T W^{1/2} d = 0
                directions = metric_sqrt.unsqueeze(-1) * directions
            orthogonal_basis = _orthonormal_columns(directions)

        self.latent_dim = latent_dim
        self.output_dim = output_dim
        self.inner = inner
        self.margin = margin_value
        self.learn_subspace = bool(learn_subspace)
        self.activation = activation

        self.free_network = bool(free_network)
        dtype = torch.get_default_dtype()
        self.register_buffer("metric_sqrt", None if metric_sqrt is None else metric_sqrt.to(dtype))
        # with a metric, the directions themselves: the basis of W^{1/2} d is rebuilt from them on a cast
        keep = metric_sqrt is not None and orthogonal_basis is not None
        self.register_buffer("orthogonal_directions", raw_directions.to(dtype) if keep else None)
        self.register_buffer("orthogonal_basis", None if orthogonal_basis is None else orthogonal_basis.to(dtype))
        if subspace_init is None:
            basis = _seeded_orthonormal(output_dim, latent_dim, subspace_seed, orthogonal_basis)
        else:
            basis = _given_orthonormal(subspace_init, output_dim, latent_dim, orthogonal_basis, metric_sqrt, name)
        basis = basis.to(dtype)
        if self.learn_subspace:
            self.subspace_raw = nn.Parameter(basis)
        else:
            self.register_buffer("subspace_basis", basis)

        self.learn_scale = bool(learn_scale)
        if inner == "diagonal" and not self.learn_scale:
            self.register_buffer("fixed_scale", torch.full((latent_dim,), self.margin, dtype=dtype))
        elif inner == "diagonal":
            # s = margin + softplus(raw) starts at max(1, 2 * margin), as a Brenier map's alpha does
            start = (max(1.0, 2.0 * self.margin) if scale_init is None else float(scale_init)) - self.margin
            self.scale_raw = nn.Parameter(torch.full((latent_dim,), math.log(math.expm1(start))))
        elif inner == "brenier":
            self.inner_map = Brenier(latent_dim, inner_hidden_dims, alpha_floor=self.margin, **inner_kwargs)
        else:
            self.inner_map = ContractiveResidual(latent_dim, inner_hidden_dims, margin=self.margin, **inner_kwargs)

        sizes = [latent_dim, *hidden_dims, output_dim] if self.free_network else []
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.offset = nn.Parameter(torch.zeros(output_dim))

    # ----------------------------------------------------------------------------------------- pieces

    @property
    def orthonormal_factor(self) -> torch.Tensor:
        r""":math:`R`, the :math:`D\times K` matrix with orthonormal columns (from its parameter if learned)."""
        if self.learn_subspace:
            return _orthonormal_columns(_project_out(self.subspace_raw, self.orthogonal_basis))
        return self.subspace_basis

    @property
    def subspace(self) -> torch.Tensor:
        r""":math:`Q = W^{-1/2}R`, shape ``(D, K)`` (:math:`R`, orthonormal columns, without ``metric``)."""
        return self._factors()[0]

    @property
    def left_factor(self) -> torch.Tensor:
        r""":math:`L = R^\top W^{1/2}`, shape ``(K, D)``, with :math:`LQ = I` (:math:`Q^\top` without ``metric``)."""
        return self._factors()[1]

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`(Q, L)` from one evaluation of :math:`R` (one QR when learned)."""
        r = self.orthonormal_factor
        if self.metric_sqrt is None:
            return r, r.transpose(-1, -2)
        return r / self.metric_sqrt.unsqueeze(-1), (r * self.metric_sqrt.unsqueeze(-1)).transpose(-1, -2)

    @property
    def scale(self) -> torch.Tensor:
        r"""The diagonal inner map's :math:`s = \text{margin} + \mathrm{softplus}(\tilde s)`, shape ``(K,)``
        (the margin itself with ``learn_scale=False``).

        Only for ``inner="diagonal"`` (the Brenier inner map is ``inner_map``).
        """
        if not self.learn_scale:
            return self.fixed_scale
        return self.margin + F.softplus(self.scale_raw)

    def _activate(self, a: torch.Tensor) -> torch.Tensor:
        return F.relu(a) if self.activation == "relu" else F.softplus(a)

    def _activation_derivative(self, a: torch.Tensor) -> torch.Tensor:
        if self.activation == "relu":
            return (a > 0).to(a.dtype)
        # F.softplus is linear above its threshold (20): its derivative is exactly 1 there
        return torch.where(a > 20.0, torch.ones_like(a), torch.sigmoid(a))

    def mlp(self, z: torch.Tensor) -> torch.Tensor:
        """The free network :math:`m(z)`, shape ``(..., D)`` (before projection); zeros without ``free_network``."""
        if not self.layers:
            return z.new_zeros(z.shape[:-1] + (self.output_dim,))
        for layer in self.layers[:-1]:
            z = self._activate(layer(z))
        return self.layers[-1](z)

    def _mlp_jacobian(self, flat: torch.Tensor) -> torch.Tensor:
        """:math:`\\partial m/\\partial z` for ``(N, K)`` rows, shape ``(N, D, K)``, by explicit products."""
        if not self.layers:
            return flat.new_zeros(flat.shape[0], self.output_dim, self.latent_dim)
        first = self.layers[0]
        a = first(flat)
        jac = first.weight.expand(flat.shape[0], *first.weight.shape)
        for layer in self.layers[1:]:
            jac = self._activation_derivative(a).unsqueeze(-1) * jac
            a = layer(self._activate(a))
            jac = layer.weight @ jac
        return jac

    def inner_forward(self, z: torch.Tensor) -> torch.Tensor:
        """The injective inner map :math:`h(z)`, shape ``(..., K)``."""
        if self.inner == "diagonal":
            return self.scale * z
        return self.inner_map._call(z)  # not through __call__: Pyro's one-slot cache would go stale on training

    def inner_inverse(self, u: torch.Tensor) -> torch.Tensor:
        """:math:`h^{-1}(u)`, shape ``(..., K)``: a division, the Brenier map's Newton solve or the residual
        map's fixed-point iteration."""
        if self.inner == "diagonal":
            return u / self.scale
        return self.inner_map._inverse(u)

    def inner_jacobian(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\partial h/\partial z`, shape ``(..., K, K)``: :math:`\mathrm{diag}(s)`, :math:`\nabla^2\psi`
        or :math:`\mathrm{diag}(a)(I + J_f)`."""
        if self.inner == "diagonal":
            return torch.diag_embed(self.scale.expand(z.shape))
        return self.inner_map.jacobian(z)

    # ----------------------------------------------------------------------------------------- transform

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        check_event(type(self).__name__, z, self.latent_dim, "latent input")
        return self.combine(z, self.mlp(z))

    def combine(self, z: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        r""":math:`Q\,h(z) + (I - QQ^\top)\,f + c` (:math:`I - QL` with ``metric``) for a free part :math:`f`
        computed elsewhere.

        ``z`` of shape ``(..., K)`` and ``free`` of shape ``(..., D)`` broadcast against each other
        (e.g. ``z`` of shape ``(N, 1, K)`` with ``free`` of shape ``(N, T, D)``: one latent, T free
        parts). :math:`L(\mathrm{combine}(z, f) - c) = h(z)` whatever :math:`f` is, so every
        result has :meth:`left_inverse` :math:`z` and the margin of :meth:`injectivity_bound`.
        Cost: two products with :math:`Q`, :math:`2DK` multiply-adds per row of ``free``.
        """
        if not isinstance(free, torch.Tensor) or free.dim() < 1 or free.shape[-1] != self.output_dim:
            got = tuple(free.shape) if isinstance(free, torch.Tensor) else type(free).__name__
            raise ValueError(
                f"{type(self).__name__}.combine expects a free part of shape (..., {self.output_dim}), got {got}"
            )
        q, left = self._factors()
        # Q h + (I - Q L) f = Q (h - L f) + f, at O(DK) cost
        return (self.inner_forward(z) - free @ left.transpose(-1, -2)) @ q.transpose(-1, -2) + free + self.offset

    def combine_linear(self, z: torch.Tensor, inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        r""":meth:`combine` for a free part linear in ``inputs``, :math:`f = Wx`, as one matrix product.

        .. math::

            Q\,h(z) + (I - QQ^\top)\,Wx + c = \big[(I - QQ^\top)W,\ Q\big]
            \begin{bmatrix} x \\ h(z) \end{bmatrix} + c,

        a linear layer with :math:`K` more inputs: :math:`(n + K)D` multiply-adds per row of
        ``inputs`` (against :math:`nD` for :math:`Wx` alone, and :math:`(n + 2K)D` plus two
        passes over the output for :meth:`combine`), and :math:`nDK` once per call to project
        :math:`W`. ``z`` of shape ``(..., K)`` and ``inputs`` of shape ``(..., n)`` broadcast
        against each other; ``weight`` has shape ``(D, n)``, as an ``nn.Linear``'s (whose bias
        :math:`c` replaces: :math:`(I - QQ^\top)b` is covered by :math:`c`, :math:`QQ^\top b` projected out).
        With ``metric``, :math:`QL` replaces :math:`QQ^\top`.
        """
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[0] != self.output_dim:
            got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise ValueError(
                f"{type(self).__name__}.combine_linear expects a weight of shape ({self.output_dim}, n), got {got}"
            )
        if not isinstance(inputs, torch.Tensor) or inputs.dim() < 1 or inputs.shape[-1] != weight.shape[1]:
            got = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ValueError(
                f"{type(self).__name__}.combine_linear expects inputs of shape (..., {weight.shape[1]}), got {got}"
            )
        q, left = self._factors()
        h = self.inner_forward(z)
        shape = torch.broadcast_shapes(h.shape[:-1], inputs.shape[:-1])
        joint = torch.cat([inputs.expand(shape + inputs.shape[-1:]), h.expand(shape + h.shape[-1:])], -1)
        projected = weight - q @ (left @ weight)
        return F.linear(joint, torch.cat([projected, q], -1), self.offset)

    def left_inverse(self, y: torch.Tensor) -> torch.Tensor:
        r""":math:`z = h^{-1}(L(y - c))` (:math:`L = Q^\top` without ``metric``); exact on the image of :math:`g`."""
        check_event(type(self).__name__, y, self.output_dim, "value to invert")
        return self.inner_inverse((y - self.offset) @ self.left_factor.transpose(-1, -2))

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        r"""The Jacobian :math:`Q J_h + (I - QL) J_m`, shape ``(..., D, K)``, by explicit tensor operations."""
        check_event(type(self).__name__, z, self.latent_dim, "latent input")
        batch_shape = z.shape[:-1]
        flat = z.reshape(-1, self.latent_dim)
        q, left = self._factors()
        jac_m = self._mlp_jacobian(flat)
        jac = q @ (self.inner_jacobian(flat) - left @ jac_m) + jac_m
        return jac.reshape(batch_shape + (self.output_dim, self.latent_dim))

    def injectivity_bound(self) -> torch.Tensor:
        r"""The guaranteed lower bound on every Jacobian singular value, at every :math:`z`: at least ``margin``.

        :math:`\lVert J_g v\rVert \ge \lVert Q^\top J_g v\rVert = \lVert J_h v\rVert`, so
        :math:`\sigma_{\min}(J_g) \ge \sigma_{\min}(J_h)`, which is :math:`\ge \min_i s_i`
        (diagonal inner; equality when :math:`m` is constant) or :math:`\ge \alpha` (Brenier
        inner, the Hessian's strong-convexity constant). Both are ``margin`` plus a softplus.
        With ``metric``, :math:`\lVert J_g v\rVert \ge \lVert L J_g v\rVert / \lVert L\rVert` and the
        bound is divided by :math:`\lVert L\rVert = \max_i\sqrt{w_i}` (in the metric's own norm it is
        the inner bound itself).
        """
        bound = self.scale.min() if self.inner == "diagonal" else self.inner_map.injectivity_bound()
        return bound if self.metric_sqrt is None else bound / self.metric_sqrt.max()

    # ----------------------------------------------------------------------------------------- dtype

    def _apply(self, fn, *args, **kwargs):
        """Move/cast as usual; a fixed :math:`Q` cast to another dtype is re-orthonormalized in that dtype.

        Casting a float32 :math:`Q` up to float64 would keep its float32 rounding (columns
        orthonormal to 1e-7 only); one QR step restores orthonormality to the new precision
        (and the basis of ``orthogonal_to`` likewise, with :math:`Q` projected off it first).
        """
        fixed = [self.orthogonal_basis] + ([] if self.learn_subspace else [self.subspace_basis])
        before = [None if t is None else t.dtype for t in fixed]
        super()._apply(fn, *args, **kwargs)
        if before[0] is not None and self.orthogonal_basis.dtype != before[0]:
            directions = self.orthogonal_basis
            if self.orthogonal_directions is not None:
                directions = self.metric_sqrt.unsqueeze(-1) * self.orthogonal_directions
            self.orthogonal_basis = _orthonormal_columns(directions)
        if not self.learn_subspace and self.subspace_basis.dtype != before[1]:
            # projected off the directions too: Q orthogonal to them in the new precision
            self.subspace_basis = _orthonormal_columns(_project_out(self.subspace_basis, self.orthogonal_basis))
        return self


def projected_injective(latent_dim: int, output_dim: int, **kwargs) -> ProjectedInjective:
    """A helper function to create a :class:`ProjectedInjective` object.

    :param int latent_dim: dimension of the latent input.
    :param int output_dim: dimension of the output (at least ``latent_dim``).
    :param kwargs: passed on to :class:`ProjectedInjective`.
    """
    return ProjectedInjective(latent_dim, output_dim, **kwargs)
