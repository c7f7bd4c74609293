r"""Probabilistic PCA: the classical model in which posterior collapse is plain to see.

.. math::

    z_n \sim \mathcal{N}(0, I_M), \qquad x_n \mid z_n \sim \mathcal{N}(W z_n + \mu, \sigma^2 I_D).

With :math:`W` at its maximum-likelihood value (Tipping & Bishop 1999) the posterior
of :math:`z_n` is Gaussian in closed form,
:math:`p(z_n \mid x_n) = \mathcal{N}(C^{-1}W^\top(x_n-\mu),\ \sigma^2 C^{-1})` with
:math:`C = W^\top W + \sigma^2 I`. A column of :math:`W` that is zero makes its latent
coordinate non-identifiable (:math:`p(x \mid z)` does not depend on it), and that
coordinate's posterior equals its prior exactly. This happens when the model has more
latent dimensions than the data: the MLE sets columns whose eigenvalue does not exceed
:math:`\sigma^2` to zero.

The ARD variant (:meth:`PPCA.ard_model`) puts :math:`w_{\cdot m} \sim \mathcal{N}(0, \tau_m^2 I)`,
:math:`\tau_m \sim \mathrm{HalfCauchy}(1)` on the columns and samples everything.

Reference: M. E. Tipping, C. M. Bishop, "Probabilistic principal component analysis",
JRSS B 1999; C. M. Bishop, "Bayesian PCA", NeurIPS 1999.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

__all__ = ["PPCA"]


def _check_data(x: torch.Tensor, data_dim: int | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"PPCA expects data of shape (num_data, data_dim), got {getattr(x, 'shape', type(x))}")
    if data_dim is not None and x.shape[1] != data_dim:
        raise ValueError(f"PPCA was fitted to {data_dim}-dimensional data, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("PPCA got data with NaN or infinite entries")


class PPCA:
    """A PPCA model with fixed parameters :math:`(W, \\mu, \\sigma)`, usually from :meth:`fit`.

    :param torch.Tensor weight: :math:`W`, shape ``(D, M)``.
    :param torch.Tensor mean: :math:`\\mu`, shape ``(D,)``.
    :param float noise_scale: :math:`\\sigma > 0`.
    """

    def __init__(self, weight: torch.Tensor, mean: torch.Tensor, noise_scale: float):
        if weight.dim() != 2 or mean.shape != weight.shape[:1]:
            raise ValueError(f"weight must be (D, M) and mean (D,), got {tuple(weight.shape)}, {tuple(mean.shape)}")
        if not noise_scale > 0:
            raise ValueError(f"noise_scale must be > 0, got {noise_scale!r}")
        self.weight = weight
        self.mean = mean
        self.noise_scale = float(noise_scale)

    @property
    def data_dim(self) -> int:
        return self.weight.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.weight.shape[1]

    @classmethod
    def fit(cls, x: torch.Tensor, latent_dim: int, noise_scale: float | None = None) -> PPCA:
        r"""Maximum-likelihood PPCA (closed form).

        With eigenpairs :math:`(\lambda_m, u_m)` of the sample covariance (descending),
        :math:`\sigma^2_{ML} = \mathrm{mean}(\lambda_{M+1:D})` (or the given ``noise_scale``),
        and :math:`W = U_M\,\mathrm{diag}(\max(\lambda_m - \sigma^2, 0))^{1/2}`.
        Columns whose eigenvalue does not exceed :math:`\sigma^2` come out zero. Eigenvalues are
        clamped at 0 (a covariance has none below; ``eigh`` returns rounding errors of either sign).

        If the data lie in an :math:`M`-dimensional subspace (rank :math:`\le M`), every
        :math:`\lambda_{M+1:D}` is 0 up to rounding (:math:`\le D\,\epsilon\,\lambda_1`, :math:`\epsilon` the
        dtype's machine epsilon), so :math:`\sigma^2_{ML} = 0`: the likelihood is unbounded and the ML density
        is degenerate. ``fit`` then raises a ``ValueError`` instead of inventing a noise level; pass
        ``noise_scale`` or a smaller ``latent_dim``.

        :param x: data ``(N, D)``.
        :param int latent_dim: :math:`M \le D` (and :math:`M < D` unless ``noise_scale`` is given).
        :param noise_scale: known :math:`\sigma`; estimated when ``None``.
        :raises ValueError: ``noise_scale`` is ``None`` and :math:`\sigma^2_{ML} = 0` (data of rank :math:`\le M`).
        """
        _check_data(x)
        n, d = x.shape
        if not 1 <= latent_dim <= d or (noise_scale is None and latent_dim == d):
            raise ValueError(
                f"latent_dim must be in 1..{d - 1} (or up to {d} with a known noise_scale), got {latent_dim}"
            )
        mean = x.mean(0)
        centred = x - mean
        cov = centred.T @ centred / n
        eigvals, eigvecs = torch.linalg.eigh(cov)
        eigvals, eigvecs = eigvals.flip(0).clamp_min(0), eigvecs.flip(1)
        if noise_scale is None:
            noise_var = eigvals[latent_dim:].mean().item()
            rounding = d * torch.finfo(eigvals.dtype).eps * eigvals[0].item()  # eigh's absolute error scale
            if noise_var <= rounding:
                rank = int((eigvals > rounding).sum())
                raise ValueError(
                    f"PPCA.fit: the data lie in a {rank}-dimensional subspace (rank {rank} <= latent_dim="
                    f"{latent_dim}), so the trailing {d - latent_dim} covariance eigenvalues are 0 up to rounding "
                    f"and the maximum-likelihood noise variance is sigma^2 = 0, a degenerate density; pass a "
                    f"known noise_scale" + (f" or a latent_dim below {rank}" if rank > 1 else "")
                )
        else:
            noise_var = float(noise_scale) ** 2
        scales = (eigvals[:latent_dim] - noise_var).clamp_min(0).sqrt()
        return cls(eigvecs[:, :latent_dim] * scales, mean, math.sqrt(noise_var))

    # ----------------------------------------------------------------- Pyro models
    def model(self, x: torch.Tensor) -> None:
        """Latents ``z`` (one per data point) under fixed :math:`(W, \\mu, \\sigma)`."""
        _check_data(x, self.data_dim)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.weight.T + self.mean, self.noise_scale).to_event(1), obs=x)

    def ard_model(self, x: torch.Tensor) -> None:
        """Bayesian PCA with an ARD prior on the columns of :math:`W` (all sampled); mean and noise fixed."""
        _check_data(x, self.data_dim)
        with pyro.plate("components", self.latent_dim):
            tau = pyro.sample("tau", dist.HalfCauchy(x.new_ones(())))
            weight = pyro.sample("weight", dist.Normal(x.new_zeros(self.data_dim), tau.unsqueeze(-1)).to_event(1))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ weight + self.mean, self.noise_scale).to_event(1), obs=x)

    # ----------------------------------------------------------------- diagnostics interface
    def prior(self) -> dist.TorchDistribution:
        r""":math:`p(z) = \mathcal{N}(0, I_M)` (the interface of :mod:`pyro_lid.diagnostics.collapse`)."""
        return dist.Normal(self.weight.new_zeros(self.latent_dim), 1.0).to_event(1)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        r"""The exact posterior :math:`p(z_n \mid x_n)` as a batch of multivariate normals."""
        mean, cov = self.exact_posterior(x)
        return dist.MultivariateNormal(mean, covariance_matrix=cov)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x \mid z) + \log p(z)` for ``z`` of shape ``(..., N, M)``."""
        likelihood = dist.Normal(z @ self.weight.T + self.mean, self.noise_scale).to_event(1)
        return likelihood.log_prob(x) + self.prior().log_prob(z)

    # ----------------------------------------------------------------- closed forms
    def exact_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(N, M)`` and covariance ``(M, M)`` of :math:`p(z_n \\mid x_n)`."""
        _check_data(x, self.data_dim)
        c = self.weight.T @ self.weight + self.noise_scale**2 * torch.eye(self.latent_dim, dtype=x.dtype)
        mean = torch.linalg.solve(c, self.weight.T @ (x - self.mean).T).T
        return mean, self.noise_scale**2 * torch.linalg.inv(c)

    def log_marginal_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        r"""Exact :math:`\log p(x_n) = \log\mathcal{N}(x_n; \mu, WW^\top + \sigma^2 I)`, shape ``(N,)``."""
        _check_data(x, self.data_dim)
        cov = self.weight @ self.weight.T + self.noise_scale**2 * torch.eye(self.data_dim, dtype=x.dtype)
        return dist.MultivariateNormal(self.mean, covariance_matrix=cov).log_prob(x)

    def log_likelihood_curve(self, x: torch.Tensor, dim: int, grid: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_n \log p(x_n \mid z_n)` as coordinate ``dim`` of every :math:`z_n` sweeps ``grid``.

        The other coordinates sit at their posterior means. The curve is flat exactly
        when column ``dim`` of :math:`W` is zero (a non-identifiable latent).
        """
        mean, _ = self.exact_posterior(x)
        z = mean.unsqueeze(0).repeat(len(grid), 1, 1)
        z[..., dim] = grid.unsqueeze(-1)
        likelihood = dist.Normal(z @ self.weight.T + self.mean, self.noise_scale).to_event(1)
        return likelihood.log_prob(x).sum(-1)
