r"""The pinwheel density (Johnson et al. 2016): curved, multimodal 2-D clusters."""

from __future__ import annotations

import math

import torch

__all__ = ["pinwheel"]


def pinwheel(
    num_samples: int,
    num_classes: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.05,
    rate: float = 0.25,
    generator: torch.Generator | None = None,
):
    r"""Sample the pinwheel distribution.

    Point :math:`i` of arm :math:`k` starts at :math:`(1 + \sigma_r\epsilon_1, \sigma_t\epsilon_2)`
    and is rotated by :math:`2\pi k/K + \text{rate}\cdot e^{1 + \sigma_r\epsilon_1}`, which
    bends the arm into a spiral.

    :param int num_samples: number of points (arms get equal shares, the first arms one more).
    :param int num_classes: number of arms :math:`K`.
    :returns: ``(points, labels)``: a ``(num_samples, 2)`` float tensor and the arm of each point.

    Reference: M. J. Johnson et al., "Composing graphical models with neural networks
    for structured representations and fast inference", NeurIPS 2016.
    """
    if num_samples < 1 or num_classes < 1:
        raise ValueError(f"num_samples and num_classes must be positive, got {num_samples}, {num_classes}")
    labels = torch.arange(num_samples) % num_classes
    labels = labels[torch.randperm(num_samples, generator=generator)]
    eps = torch.randn(num_samples, 2, generator=generator)
    radial = 1.0 + radial_std * eps[:, 0]
    tangential = tangential_std * eps[:, 1]
    angle = 2 * math.pi * labels / num_classes + rate * torch.exp(radial)
    cos, sin = torch.cos(angle), torch.sin(angle)
    points = torch.stack([radial * cos - tangential * sin, radial * sin + tangential * cos], dim=-1)
    return points, labels
