"""Models: classical demonstrations of collapse as non-identifiability."""

from .mixture_weight import MixtureWeightModel
from .ppca import PPCA

__all__ = ["MixtureWeightModel", "PPCA"]
