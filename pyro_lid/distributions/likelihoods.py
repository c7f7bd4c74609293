r"""Exponential-family likelihoods :math:`p(x \mid z) = \mathrm{ExpFam}(x;\ \eta = g(z))`.

A *family* turns natural parameters :math:`\eta` into a Pyro distribution over one data
point (event dimension 1). :class:`IdentifiableLikelihood` feeds it an injective map
:math:`g` (:class:`~pyro_lid.distributions.transforms.InjectiveBrenier`), so that
:math:`z \mapsto p(x \mid z)` is injective and :math:`z` is identifiable:

* Bernoulli: :math:`\eta` are the logits of :math:`D` binary variables (injective:
  the sigmoid is a bijection);
* Normal: :math:`\eta` is the mean (the scale is fixed, or learned but independent
  of :math:`z`);
* Categorical: :math:`D` variables with :math:`V` classes. The softmax ignores a
  common shift of the logits, so only :math:`V - 1` logits per variable come from
  :math:`g` and the last is fixed at 0; softmax restricted to that slice is a
  bijection onto the open simplex, and the whole map stays injective.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
import torch.nn as nn

from .transforms.injective import InjectiveBrenier
from .transforms.projection import ProjectedInjective

__all__ = [
    "LikelihoodFamily",
    "BernoulliFamily",
    "NormalFamily",
    "CategoricalFamily",
    "make_family",
    "IdentifiableLikelihood",
]


class LikelihoodFamily(nn.Module):
    """Maps natural parameters ``(..., param_dim)`` to a distribution with event shape ``(data_dim,)``."""

    def __init__(self, data_dim: int):
        super().__init__()
        if not isinstance(data_dim, int) or data_dim < 1:
            raise ValueError(f"data_dim must be a positive integer, got {data_dim!r}")
        self.data_dim = data_dim

    @property
    def param_dim(self) -> int:
        return self.data_dim

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def prepare(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``x`` as this family scores it (floating point ``dtype`` here), or a ``ValueError`` that names
        what is wrong with its values. Integer, boolean and other floating dtypes are converted."""
        return x.to(dtype)


def check_binary(x: torch.Tensor) -> None:
    """A ``ValueError`` that says what to do unless every value of ``x`` is 0 or 1."""
    if x.dtype != torch.bool and ((x != 0) & (x != 1)).any():
        low, high = float(x.min()), float(x.max())
        hint = " (0-255 intensities? divide by 255 first)" if high > 1 and not x.is_floating_point() else ""
        raise ValueError(
            f"Bernoulli likelihood needs binary data; got values in [{low:g}, {high:g}]{hint}; binarize "
            "(see `dynamic_binarization` in pyro_lid.infer.fit, or pyro_lid.data.binarize) or use "
            "likelihood='normal'"
        )


class _Bernoulli(dist.Bernoulli):
    """Pyro's Bernoulli, whose support check says what to do instead of dumping the tensor."""

    def _validate_sample(self, value):
        check_binary(value)
        super()._validate_sample(value)


class BernoulliFamily(LikelihoodFamily):
    """Independent Bernoulli pixels with logits :math:`\\eta`; data must be 0 or 1."""

    def prepare(self, x, dtype):
        check_binary(x)
        return x.to(dtype)

    def forward(self, params):
        return _Bernoulli(logits=params, validate_args=True).to_event(1)


class NormalFamily(LikelihoodFamily):
    """Independent Normal coordinates with mean :math:`\\eta`; the scale is fixed (``scale``) or learned."""

    def __init__(self, data_dim: int, scale: float | None = None):
        super().__init__(data_dim)
        if scale is None:
            self.log_scale = nn.Parameter(torch.zeros(data_dim))
        else:
            if not scale > 0:
                raise ValueError(f"scale must be > 0, got {scale!r}")
            self.register_buffer("log_scale", torch.full((data_dim,), float(scale)).log())

    def forward(self, params):
        return dist.Normal(params, self.log_scale.exp(), validate_args=True).to_event(1)


class CategoricalFamily(LikelihoodFamily):
    """``data_dim`` categorical variables with ``num_classes`` classes; the last logit of each is pinned at 0."""

    def __init__(self, data_dim: int, num_classes: int):
        super().__init__(data_dim)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.num_classes = num_classes

    @property
    def param_dim(self) -> int:
        return self.data_dim * (self.num_classes - 1)

    def prepare(self, x, dtype):
        """Class indices: integers in ``[0, num_classes)`` (any dtype holding them), returned as ``long``."""
        bad = (x < 0) | (x >= self.num_classes)
        if x.is_floating_point():
            bad |= x != x.round()
        if bad.any():
            raise ValueError(
                f"Categorical likelihood needs class indices, integers in [0, {self.num_classes}); "
                f"got values in [{float(x.min()):g}, {float(x.max()):g}]"
            )
        return x.long()

    def forward(self, params):
        free = params.reshape(params.shape[:-1] + (self.data_dim, self.num_classes - 1))
        logits = torch.cat([free, torch.zeros_like(free[..., :1])], dim=-1)
        return dist.Categorical(logits=logits, validate_args=True).to_event(1)


def make_family(name: str | LikelihoodFamily, data_dim: int, **kwargs) -> LikelihoodFamily:
    """``"bernoulli"``, ``"normal"`` (``scale=``) or ``"categorical"`` (``num_classes=``), or a family instance."""
    if isinstance(name, LikelihoodFamily):
        return name
    families = {"bernoulli": BernoulliFamily, "normal": NormalFamily, "categorical": CategoricalFamily}
    if name not in families:
        raise ValueError(f"likelihood must be one of {sorted(families)}, got {name!r}")
    return families[name](data_dim, **kwargs)


class IdentifiableLikelihood(nn.Module):
    r"""The latent-identifiable likelihood :math:`p(x\mid z) = \mathrm{ExpFam}(x;\ g(z))`, :math:`g` injective.

    Calling it on ``z`` of shape ``(..., latent_dim)`` returns a Pyro distribution with
    batch shape ``(...)`` and event shape ``(data_dim,)``, ready for
    ``pyro.sample("x", likelihood(z), obs=x)``.

    Example::

        >>> likelihood = IdentifiableLikelihood(4, 784, "bernoulli")
        >>> likelihood(torch.randn(10, 4)).event_shape
        torch.Size([784])

    :param int latent_dim: :math:`K`.
    :param int data_dim: :math:`D` (number of observed variables).
    :param family: ``"bernoulli"``, ``"normal"``, ``"categorical"`` or a :class:`LikelihoodFamily`.
    :param latent_hidden_dims: ICNN widths of the latent-space Brenier map.
    :param output_hidden_dims: ICNN widths of the parameter-space Brenier map (``construction="brenier"``), or
        widths of the free MLP :math:`m` (``construction="projection"``; ``None``: ``(512,)``, ``()``: affine).
    :param float alpha_floor: strong-convexity floor of both maps: every singular value of
        :math:`\partial g/\partial z` is at least ``alpha_floor ** 2`` (``construction="brenier"``).
    :param str construction: ``"brenier"``, :math:`g = \nabla\psi_D\circ L\circ\nabla\psi_K`
        (:class:`~pyro_lid.distributions.transforms.InjectiveBrenier`, the paper's), or
        ``"projection"``, :math:`g(z) = Q h(z) + (I - QQ^\top) m(z) + c`
        (:class:`~pyro_lid.distributions.transforms.ProjectedInjective`: an injective :math:`h`
        in a fixed :math:`K`-dimensional subspace, a free MLP :math:`m` with widths
        ``output_hidden_dims`` outside it).
    :param float margin: ``construction="projection"``: every singular value of
        :math:`\partial g/\partial z` is at least ``margin``.
    :param str inner: ``construction="projection"``: ``"diagonal"`` (:math:`h(z) = s\odot z`,
        :math:`s \ge` margin), ``"brenier"`` (a Brenier map with strong convexity ``margin``,
        ICNN widths ``latent_hidden_dims``) or ``"residual"`` (a contractive residual map with singular
        values :math:`\ge` margin, widths ``latent_hidden_dims``).
    :param bool learn_subspace: ``construction="projection"``: learn :math:`Q` (kept orthonormal, so the
        margin holds for every value it takes) instead of fixing it at a random draw.
    :param bool learn_scale: ``construction="projection"``, ``inner="diagonal"``: learn :math:`s \ge` margin
        (default) or fix :math:`s` = margin.
    :param str lift: ``construction="brenier"``: ``"zero_pad"`` (the paper's, default) or ``"learned"``
        (:class:`~pyro_lid.distributions.transforms.LearnedLift`, orthonormal columns times scales :math:`\ge 1`).
    :param metric: ``construction="projection"``: positive weights ``(param_dim,)`` that put the margin in
        Fisher units, e.g. :func:`~pyro_lid.data.pixel_fisher_weights` for Bernoulli pixels (see
        :class:`~pyro_lid.distributions.transforms.ProjectedInjective`, "A metric"); default ``None``: Euclidean.
    :param float output_gain: scale of the output weights of every ICNN potential (``construction="brenier"``
        or ``inner="brenier"``; :class:`~pyro_lid.nn.ICNN`, default 1).
    :param float sharpness: :math:`\beta` of the ICNN activations :math:`\mathrm{softplus}(\beta a)/\beta`
        (same maps; default 1).
    :param float alpha_init: the potentials' initial strong-convexity constant, above their floor (same maps;
        default ``max(1, 2 * floor)``, see :class:`~pyro_lid.nn.ICNN`).
    :param family_kwargs: e.g. ``scale=0.1`` (normal) or ``num_classes=10`` (categorical).
    """

    def __init__(
        self,
        latent_dim: int,
        data_dim: int,
        family: str | LikelihoodFamily = "bernoulli",
        latent_hidden_dims: Sequence[int] | None = None,
        output_hidden_dims: Sequence[int] | None = None,
        alpha_floor: float = 1e-2,
        construction: str = "brenier",
        margin: float = 1.0,
        inner: str = "diagonal",
        learn_subspace: bool = False,
        learn_scale: bool = True,
        metric: torch.Tensor | None = None,
        lift: str = "zero_pad",
        output_gain: float | None = None,
        sharpness: float | None = None,
        alpha_init: float | None = None,
        **family_kwargs,
    ):
        super().__init__()
        potential_options = {
            name: value
            for name, value in (("output_gain", output_gain), ("sharpness", sharpness), ("alpha_init", alpha_init))
            if value is not None
        }
        if potential_options and not (construction == "brenier" or inner == "brenier"):
            raise ValueError(
                f"{', '.join(potential_options)} set the ICNN potentials of construction='brenier' or "
                f"inner='brenier'; construction={construction!r} with inner={inner!r} has none"
            )
        if lift != "zero_pad" and construction != "brenier":
            raise ValueError(f"lift applies to construction='brenier', not {construction!r}")
        projection_only = {"learn_subspace": learn_subspace, "learn_scale=False": not learn_scale,
                           "metric": metric is not None}  # fmt: skip
        given = [name for name, used in projection_only.items() if used]
        if given and construction != "projection":
            verb = "applies" if len(given) == 1 else "apply"
            raise ValueError(f"{', '.join(given)} {verb} to construction='projection', not {construction!r}")
        self.family = make_family(family, data_dim, **family_kwargs)
        if self.family.param_dim < latent_dim:
            raise ValueError(
                f"an injective likelihood needs at least as many parameters ({self.family.param_dim}) as latent "
                f"dimensions ({latent_dim})"
            )
        if construction == "brenier":
            self.injective_map = InjectiveBrenier(
                latent_dim,
                self.family.param_dim,
                latent_hidden_dims,
                output_hidden_dims,
                alpha_floor,
                lift,
                **potential_options,
            )
        elif construction == "projection":
            self.injective_map = ProjectedInjective(
                latent_dim,
                self.family.param_dim,
                hidden_dims=(512,) if output_hidden_dims is None else output_hidden_dims,
                inner=inner,
                margin=margin,
                inner_hidden_dims=latent_hidden_dims if inner != "diagonal" else None,
                learn_subspace=learn_subspace,
                learn_scale=learn_scale,
                metric=metric,
                **potential_options,
            )
        else:
            raise ValueError(f"construction must be 'brenier' or 'projection', got {construction!r}")
        self.construction = construction
        self.latent_dim = latent_dim

    def forward(self, z: torch.Tensor) -> dist.TorchDistribution:
        return self.family(self.injective_map(z))
