"""Free bits: the objective trained is :class:`~pyro_lid.infer.FreeBitsELBO` with the given floor."""

from __future__ import annotations

from ...free_bits import FreeBitsELBO
from .base import Callback

__all__ = ["FreeBits"]


class FreeBits(Callback):
    """Train the free-bits ELBO with floor ``free_bits`` nats per latent dimension (set before the strategy's SVI),
    on the mini-batch mean of the KL or (``per_point``) on each data point's."""

    def __init__(self, free_bits: float, per_point: bool = False):
        self.elbo = FreeBitsELBO(free_bits, per_point=per_point)

    def setup(self, loop) -> None:
        loop.elbo = self.elbo
