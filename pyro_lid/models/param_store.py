"""A model's name in Pyro's parameter store, chosen so that two models in one store never share parameters.

``pyro.module(name, model)`` puts the model's parameters in the store as ``"<name>$$$<parameter>"``. Two models
under one name would share those entries: ``pyro.module`` hands the second model the first model's parameters,
and an ``SVI`` of the second model steps tensors its own module never reads, so it silently does not train.
:class:`ParamStoreName` registers a model under its explicit ``name`` (refused while another module's parameters
hold it) or, without one, under ``default_store_name`` or the first free ``"<default>_1"``, ``"<default>_2"``, ....
"""

from __future__ import annotations

from itertools import count

import pyro
import torch
from pyro.params.param_store import param_with_module_name

__all__ = ["DIVIDER", "ParamStoreName"]

DIVIDER = "$$$"  # pyro.params.param_store's module/parameter divider


class ParamStoreName:
    """Mixin for an ``nn.Module`` with a ``name`` attribute (``None``: choose one) that runs ``_register()`` at the
    start of its model and guide. ``default_store_name``: the name taken when none is given and it is free."""

    default_store_name = "model"

    def _init_store_name(self, name: str | None) -> None:
        if name is not None and (not isinstance(name, str) or not name or DIVIDER in name):
            raise ValueError(f"name must be a non-empty string without {DIVIDER!r}, got {name!r}")
        self.name = name
        self._param_store_name = None

    @property
    def param_store_name(self) -> str | None:
        """The name this model last registered its parameters under (``None`` before it first ran)."""
        return self._param_store_name

    def _register(self) -> None:
        """``pyro.module`` this model under its name (see the module docstring)."""
        params = [(key, p) for key, p in self.named_parameters() if p.requires_grad]
        store = pyro.get_param_store()
        current = self._param_store_name
        if current is not None and all(_holds(store, param_with_module_name(current, k), p) for k, p in params):
            name = current  # the common case: registered already, every parameter in the store as itself
        else:
            name = self._choose_name(store, params)
        pyro.module(name, self)
        self._param_store_name = name

    def _choose_name(self, store, params) -> str:
        """The explicit name (if no other module holds it) or the first free default."""
        ours = {id(p) for _, p in params}
        taken, held = set(), set()  # names holding another module's parameters; names holding ours
        for key, value in store.named_parameters():
            prefix = key.split(DIVIDER, 1)[0] if DIVIDER in key else None
            if prefix is not None:
                (held if id(value) in ours else taken).add(prefix)
        if self.name is not None:
            if self.name in taken:
                raise ValueError(
                    f"{type(self).__name__}(name={self.name!r}): the name {self.name!r} is held in Pyro's parameter "
                    f"store by another module's parameters; sharing it, this model would not train. Pass another "
                    f"name, or call pyro.clear_param_store() if that module is done"
                )
            return self.name
        current = self._param_store_name
        if current is not None and current in held and current not in taken:
            return current
        default = self.default_store_name
        return next(c for c in (default if i == 0 else f"{default}_{i}" for i in count()) if c not in taken)


def _holds(store, key: str, param: torch.Tensor) -> bool:
    """Whether Pyro's parameter store holds ``param`` itself under ``key``."""
    return key in store and store[key].unconstrained() is param
