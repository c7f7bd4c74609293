r"""Synthetic data with known latents: :math:`x = f(z) + \text{noise}` for an injective :math:`f`."""

from __future__ import annotations

import torch

__all__ = ["synthetic_latent_data"]


def synthetic_latent_data(
    num_data: int,
    latent_dim: int = 2,
    data_dim: int = 20,
    likelihood: str = "bernoulli",
    signal: float = 2.0,
    noise_scale: float = 0.1,
    generator: torch.Generator | None = None,
):
    r"""Data from known latents :math:`z \sim \mathcal{N}(0, I_K)` through an injective nonlinear map.

    :math:`\eta = \text{signal}\cdot A\,(z + \tfrac12\tanh z) + b` with :math:`A` a random
    :math:`D\times K` matrix with orthonormal columns: the elementwise map is strictly
    increasing and :math:`A` is injective, so every latent dimension is identifiable.
    ``"bernoulli"`` draws :math:`x \sim \mathrm{Bernoulli}(\sigma(\eta))`, ``"normal"``
    draws :math:`x = \eta + \text{noise\_scale}\cdot\epsilon`. A small ``signal`` makes the
    latents weakly identifiable, the regime in which a VAE collapses them.

    :returns: ``(x, z)`` of shapes ``(N, D)`` and ``(N, K)``.
    """
    if not 1 <= latent_dim <= data_dim or num_data < 1 or not signal > 0:
        raise ValueError(
            f"need 1 <= latent_dim <= data_dim, num_data >= 1 and signal > 0; got {latent_dim}, "
            f"{data_dim}, {num_data}, {signal}"
        )
    a, _ = torch.linalg.qr(torch.randn(data_dim, latent_dim, generator=generator))
    b = torch.randn(data_dim, generator=generator)
    z = torch.randn(num_data, latent_dim, generator=generator)
    eta = signal * (z + 0.5 * torch.tanh(z)) @ a.T + b
    if likelihood == "bernoulli":
        return torch.bernoulli(torch.sigmoid(eta), generator=generator), z
    if likelihood == "normal":
        return eta + noise_scale * torch.randn(eta.shape, generator=generator), z
    raise ValueError(f"likelihood must be 'bernoulli' or 'normal', got {likelihood!r}")
