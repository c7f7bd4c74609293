"""Neural building blocks: strongly convex potentials and the solver that inverts their gradients."""

from .icnn import ICNN, PICNN
from .legendre import batched_conjugate_gradient, invert_gradient_map

__all__ = ["ICNN", "PICNN", "batched_conjugate_gradient", "invert_gradient_map"]
