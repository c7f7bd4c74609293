"""Simulators for the classical collapse scenarios (PPCA, two-component mixtures)."""

from __future__ import annotations

import torch

__all__ = ["simulate_ppca", "simulate_mixture", "MIXTURE_SCENARIOS", "PPCA_SCENARIOS"]

#: Mixture scenarios: the component means, scale, true weight and data size of each.
MIXTURE_SCENARIOS = {
    "one cluster": {"locs": (0.0, 0.0), "scale": 1.0, "weight": 0.15, "num_data": 5000},
    "overlapping": {"locs": (0.0, 0.05), "scale": 1.0, "weight": 0.15, "num_data": 5000},
    "well separated": {"locs": (-5.0, 5.0), "scale": 1.0, "weight": 0.15, "num_data": 5000},
}

#: PPCA scenarios: true latent dimension, fitted latent dimension, noise scale.
PPCA_SCENARIOS = {
    "true dim 1, M = 2": {"true_dim": 1, "latent_dim": 2, "noise_scale": 0.5},
    "true dim 2, M = 2": {"true_dim": 2, "latent_dim": 2, "noise_scale": 0.5},
    **{f"noise {s}": {"true_dim": 2, "latent_dim": 2, "noise_scale": s} for s in (0.1, 0.5, 1.0, 2.0)},
}


def simulate_ppca(
    num_data: int, data_dim: int, true_dim: int, noise_scale: float, generator: torch.Generator | None = None
):
    """Draw ``x = z W^T + noise`` with ``z ~ N(0, I_true_dim)`` and orthogonal unit-norm columns of W.

    :returns: ``(x, weight, z)`` with shapes ``(N, D)``, ``(D, true_dim)``, ``(N, true_dim)``.
    """
    if not 1 <= true_dim <= data_dim or num_data < 2 or not noise_scale > 0:
        raise ValueError(
            f"need 1 <= true_dim <= data_dim, num_data >= 2 and noise_scale > 0; got true_dim={true_dim}, "
            f"data_dim={data_dim}, num_data={num_data}, noise_scale={noise_scale}"
        )
    q, _ = torch.linalg.qr(torch.randn(data_dim, true_dim, generator=generator))
    weight = q * 2.0  # signal scale 2 on each true direction
    z = torch.randn(num_data, true_dim, generator=generator)
    x = z @ weight.T + noise_scale * torch.randn(num_data, data_dim, generator=generator)
    return x, weight, z


def simulate_mixture(
    num_data: int, weight: float, locs=(0.0, 0.0), scale: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw ``num_data`` points from ``weight N(locs[0], scale^2) + (1 - weight) N(locs[1], scale^2)``."""
    if not 0 <= weight <= 1 or num_data < 1 or not scale > 0:
        raise ValueError(f"need 0 <= weight <= 1, num_data >= 1, scale > 0; got {weight}, {num_data}, {scale}")
    first = torch.rand(num_data, generator=generator) < weight
    means = torch.where(first, torch.tensor(float(locs[0])), torch.tensor(float(locs[1])))
    return means + scale * torch.randn(num_data, generator=generator)
