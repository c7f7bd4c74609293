"""Brenier-map transforms, following the layout of :mod:`pyro.distributions.transforms`."""

from .brenier import Brenier, ConditionalBrenier, ConditionedBrenier, brenier, conditional_brenier
from .injective import InjectiveBrenier, InjectiveMap, injective_brenier
from .lift import LearnedLift, ZeroPadLift
from .projection import ProjectedInjective, projected_injective
from .residual import ContractiveResidual

__all__ = [
    "Brenier",
    "ConditionalBrenier",
    "ConditionedBrenier",
    "ContractiveResidual",
    "InjectiveBrenier",
    "InjectiveMap",
    "LearnedLift",
    "ProjectedInjective",
    "ZeroPadLift",
    "brenier",
    "conditional_brenier",
    "injective_brenier",
    "projected_injective",
]
