"""Per-parameter learning rates: ``fit(..., lr=1e-3, lr_multipliers={"decoder.*": 0.3})``.

A multiplier :math:`m` gives every parameter whose name in ``model.named_parameters()`` matches its
:mod:`fnmatch` pattern the learning rate :math:`m \\cdot \\mathrm{lr}`; the other parameters keep ``lr``.
Pyro builds one ``torch.optim`` optimizer per parameter (:class:`pyro.optim.PyroOptim`) and asks a callable
``optim_args`` for each one's arguments by its param-store name, ``"<model name>.<parameter name>"``:
:class:`PerParameterArgs` is that callable.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from ..._checks import is_positive_number

__all__ = ["PerParameterArgs", "resolve_lr_multipliers"]


def resolve_lr_multipliers(model, lr_multipliers) -> dict[str, float]:
    """``{parameter name: multiplier}`` for every parameter of ``model`` a pattern of ``lr_multipliers`` matches.

    Refuses (``ValueError``) what would train silently wrong: not a mapping, a multiplier that is not a finite
    number > 0, a pattern that matches no parameter (a misspelt name), and a parameter matched by two patterns.
    """
    if lr_multipliers is None:
        return {}
    if not isinstance(lr_multipliers, Mapping):
        raise ValueError(f"lr_multipliers must be a mapping {{pattern: multiplier}}, got {lr_multipliers!r}")
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    factors, source = {}, {}
    for pattern, factor in lr_multipliers.items():
        if not is_positive_number(factor):
            raise ValueError(f"lr_multipliers[{pattern!r}] must be a finite number > 0, got {factor!r}")
        matched = fnmatch.filter(names, pattern)
        if not matched:
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise ValueError(f"lr_multipliers: the pattern {pattern!r} matches no parameter of the model ({shown})")
        for name in matched:
            if name in source:
                raise ValueError(f"lr_multipliers: the parameter {name} is matched by both {source[name]!r} and "
                                 f"{pattern!r}; make the patterns disjoint")  # fmt: skip
            factors[name], source[name] = float(factor), pattern
    return factors


class PerParameterArgs:
    """Pyro's per-parameter ``optim_args``: ``optim_args`` with ``lr`` times the parameter's multiplier.

    :param model: the model whose parameters are trained (its ``param_store_name`` prefixes their store names).
    :param factors: ``{parameter name: multiplier}`` from :func:`resolve_lr_multipliers`.
    """

    def __init__(self, model, optim_args: dict, factors: dict[str, float]):
        self.model, self.optim_args, self.factors = model, dict(optim_args), dict(factors)

    def __call__(self, param_name: str) -> dict:
        prefix = f"{self.model.param_store_name}."
        key = param_name[len(prefix) :] if param_name.startswith(prefix) else None
        return {**self.optim_args, "lr": self.optim_args["lr"] * self.factors.get(key, 1.0)}
