"""Shared test helpers."""

import torch


def perturb_(module: torch.nn.Module, scale: float = 0.5, seed: int = 1) -> torch.nn.Module:
    """Move every parameter away from its near-identity initialization, so tests see a curved map."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module
