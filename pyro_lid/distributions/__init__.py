"""Distributions and transforms of pyro-lid."""

from . import transforms
from .transforms import Brenier, ConditionalBrenier, InjectiveBrenier

__all__ = ["transforms", "Brenier", "ConditionalBrenier", "InjectiveBrenier"]
