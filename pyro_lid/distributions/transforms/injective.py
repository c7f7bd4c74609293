r"""The injective decoder map of latent-identifiable VAEs: :math:`g = \nabla\psi_2\circ L\circ\nabla\psi_1`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions.torch_transform import TransformModule
from torch.distributions import constraints

from .brenier import Brenier, check_event
from .caching import CopyWithCache
from .lift import EventDimensionChange, LearnedLift, ZeroPadLift

__all__ = ["InjectiveMap", "InjectiveBrenier", "injective_brenier"]


class InjectiveMap(EventDimensionChange, CopyWithCache, TransformModule):
    r"""What every injective decoder map :math:`g:\mathbb{R}^K\to\mathbb{R}^D`, :math:`K \le D`, shares.

    A subclass gives :meth:`left_inverse`, :meth:`jacobian` (shape ``(..., D, K)``) and
    :meth:`injectivity_bound` (a guaranteed lower bound on every singular value of the Jacobian);
    :meth:`smallest_singular_value` and :meth:`log_volume_element` follow from the Jacobian. The map
    changes dimension, so it has no Jacobian determinant; ``_inverse`` is the left inverse.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = False

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.left_inverse(y)

    def left_inverse(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def injectivity_bound(self) -> torch.Tensor:
        raise NotImplementedError

    def log_abs_det_jacobian(self, x, y):
        raise NotImplementedError(
            f"{type(self).__name__} maps R^K into R^D and has no Jacobian determinant; "
            "use log_volume_element(z) = 0.5 * log det(J^T J) for an injective change of volume"
        )

    def smallest_singular_value(self, z: torch.Tensor) -> torch.Tensor:
        """Smallest singular value of the Jacobian at ``z`` (batch shape of ``z``): how far from
        non-injective the map is, numerically; near zero, the likelihood barely moves along some
        latent direction there."""
        return torch.linalg.svdvals(self.jacobian(z))[..., -1]

    def log_volume_element(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\tfrac12\log\det(J^\top J)` at ``z``: the change of volume of the injective map."""
        jac = self.jacobian(z)
        return 0.5 * torch.linalg.slogdet(jac.transpose(-1, -2) @ jac)[1]


class InjectiveBrenier(InjectiveMap):
    r"""An injective map :math:`g:\mathbb{R}^K\to\mathbb{R}^D`, :math:`K \le D`:

    .. math::

        g(z) = \nabla\psi_D\big(L\,\nabla\psi_K(z)\big),

    with Brenier maps :math:`\nabla\psi_K` on :math:`\mathbb{R}^K` and
    :math:`\nabla\psi_D` on :math:`\mathbb{R}^D` and the fixed zero-padding lift
    :math:`L` (:class:`ZeroPadLift`), or with ``lift="learned"`` a learned one,
    :math:`L = Q\,\mathrm{diag}(s)` with orthonormal columns and :math:`s \ge 1` (:class:`LearnedLift`).
    Two bijections around an injective linear map give an injective map, so a likelihood
    :math:`p(x\mid z)` whose parameters are :math:`g(z)` changes whenever :math:`z` does:
    :math:`z` is identifiable and the posterior cannot collapse.

    Its Jacobian :math:`J(z) = \nabla^2\psi_D(Lu)\,L\,\nabla^2\psi_K(z)` has smallest
    singular value at least :math:`\alpha_D\,\sigma_{\min}(L)\,\alpha_K` (the strong-convexity constants;
    :math:`\sigma_{\min}(L)` is 1 for the zero padding, :math:`\min_i s_i \ge 1` for the learned lift):
    see :meth:`injectivity_bound` and :meth:`smallest_singular_value`.

    The map is not bijective: :meth:`left_inverse` (also used as ``_inverse``) recovers
    :math:`z` from :math:`y = g(z)`; for :math:`y` off the image it returns
    :math:`\nabla\psi_K^{-1}(L^\top\nabla\psi_D^{-1}(y))`. There is no
    ``log_abs_det_jacobian`` (the map changes dimension); :meth:`log_volume_element`
    gives :math:`\tfrac12\log\det J^\top J`.

    :param int latent_dim: :math:`K`.
    :param int output_dim: :math:`D \ge K`.
    :param latent_hidden_dims: ICNN widths of :math:`\psi_K`.
    :param output_hidden_dims: ICNN widths of :math:`\psi_D`.
    :param float alpha_floor: strong-convexity floor of both potentials.
    :param str lift: ``"zero_pad"`` (the paper's, default) or ``"learned"``.
    :param kwargs: further :class:`Brenier` options applied to both maps (``alpha_init``,
        ``learn_alpha``, ``output_gain``, ``sharpness``, ``inverse_tol``, ``inverse_max_iter``, ``solver``).
    """

    def __init__(
        self,
        latent_dim: int,
        output_dim: int,
        latent_hidden_dims: Sequence[int] | None = None,
        output_hidden_dims: Sequence[int] | None = None,
        alpha_floor: float = 1e-2,
        lift: str = "zero_pad",
        **kwargs,
    ):
        super().__init__(cache_size=0)  # the inner Brenier maps cache their own results
        if lift not in ("zero_pad", "learned"):
            raise ValueError(f"InjectiveBrenier: lift must be 'zero_pad' or 'learned', got {lift!r}")
        self.lift = ZeroPadLift(latent_dim, output_dim) if lift == "zero_pad" else LearnedLift(latent_dim, output_dim)
        self.latent_map = Brenier(latent_dim, latent_hidden_dims, alpha_floor=alpha_floor, **kwargs)
        self.output_map = Brenier(output_dim, output_hidden_dims, alpha_floor=alpha_floor, **kwargs)
        self.latent_dim = latent_dim
        self.output_dim = output_dim

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        check_event(type(self).__name__, z, self.latent_dim, "latent input")
        return self.output_map(self.lift(self.latent_map(z)))

    def left_inverse(self, y: torch.Tensor) -> torch.Tensor:
        r""":math:`z = \nabla\psi_K^{-1}(L^\top\nabla\psi_D^{-1}(y))`; exact for :math:`y` in the image of :math:`g`."""
        check_event(type(self).__name__, y, self.output_dim, "value to invert")
        return self.latent_map.inv(self.lift.left_inverse(self.output_map.inv(y)))

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        r"""The Jacobian :math:`\partial g/\partial z`, shape ``(..., D, K)``."""
        check_event(type(self).__name__, z, self.latent_dim, "latent input")
        u = self.latent_map(z)
        outer = self.lift.right_multiply(self.output_map.jacobian(self.lift(u)))  # H_D(Lu) L
        return outer @ self.latent_map.jacobian(z)

    def injectivity_bound(self) -> torch.Tensor:
        r"""The guaranteed lower bound :math:`\alpha_D\,\sigma_{\min}(L)\,\alpha_K` on every Jacobian singular value."""
        return self.output_map.injectivity_bound() * self.lift.injectivity_bound() * self.latent_map.injectivity_bound()


def injective_brenier(latent_dim: int, output_dim: int, **kwargs) -> InjectiveBrenier:
    """A helper function to create an :class:`InjectiveBrenier` object.

    :param int latent_dim: dimension of the latent input.
    :param int output_dim: dimension of the output (at least ``latent_dim``).
    :param kwargs: passed on to :class:`InjectiveBrenier`.
    """
    return InjectiveBrenier(latent_dim, output_dim, **kwargs)
