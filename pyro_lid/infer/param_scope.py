"""Train one model in Pyro's global parameter store without touching anyone else's entries."""

from __future__ import annotations

from collections.abc import Callable

import pyro

__all__ = ["set_aside_param_store"]


def set_aside_param_store(model) -> Callable[[], None]:
    """Take every entry of Pyro's parameter store that is not one of ``model``'s parameters out of the
    store, and return a function that puts them back.

    While they are out, the model registers in a store that holds only its own parameters, so it
    trains under its usual name (``"vae"`` for the library's models: checkpoints and optimizer state
    keep their keys) and nothing it does can reach another model's or the user's parameters. Putting
    them back restores every entry under its own name, except a name the model's own parameters hold
    now: those are the model's, and a module that held the name before registers afresh under a
    free name the next time it runs (see :class:`~pyro_lid.models.VAE`'s ``name``). Entries that
    are not module parameters (a plain ``pyro.param``) keep their values either way, unless their
    name is one of the model's.
    """
    store = pyro.get_param_store()
    ours = {id(p) for p in model.parameters()}
    state = store.get_state()
    others = {name: value for name, value in state["params"].items() if id(value) not in ours}
    constraints = {name: c for name, c in state["constraints"].items() if name in others}
    store.clear()

    def restore() -> None:
        taken = set(store.keys())
        kept = {name: value for name, value in others.items() if name not in taken}
        store.set_state({"params": kept, "constraints": {name: constraints[name] for name in kept}})

    return restore
