"""Distributions and transforms of pyro-lid."""

from . import transforms
from .likelihoods import (
    BernoulliFamily,
    CategoricalFamily,
    IdentifiableLikelihood,
    LikelihoodFamily,
    NormalFamily,
    make_family,
)
from .transforms import Brenier, ConditionalBrenier, InjectiveBrenier

__all__ = [
    "BernoulliFamily",
    "Brenier",
    "CategoricalFamily",
    "ConditionalBrenier",
    "IdentifiableLikelihood",
    "InjectiveBrenier",
    "LikelihoodFamily",
    "NormalFamily",
    "make_family",
    "transforms",
]
