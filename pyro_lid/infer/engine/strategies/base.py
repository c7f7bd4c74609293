"""The interface of a training recipe (a *strategy*): what one step does, and what it keeps between epochs.

The loop (:class:`~pyro_lid.infer.engine.loop.TrainingLoop`) owns the data, the epochs and the
devices; a strategy owns its optimizers and SVI objects and decides what a step is. A new recipe
is a subclass, passed to :func:`~pyro_lid.infer.fit` as ``strategy=``; the loop is not edited.
"""

from __future__ import annotations

__all__ = ["TrainingStrategy", "optimizer_state"]


def optimizer_state(optim) -> dict:
    """Everything a Pyro optimizer would resume from, by parameter name: the state of each parameter it has
    stepped (``get_state``) and the state it was handed by ``set_state`` and has not applied yet (Pyro applies
    it at that parameter's next step). ``get_state`` alone drops the latter: a checkpoint written after a
    resume and before the next step would restart Adam from nothing."""
    return {**optim._state_waiting_to_be_consumed, **optim.get_state()}


class TrainingStrategy:
    """Base class of training recipes. Every hook has a do-nothing default except :meth:`training_step`.

    Attributes a strategy sets in :meth:`setup`: ``svi``, the SVI whose ELBO validation evaluates.
    """

    #: the strategy's rule reads the validation mutual information (``fit`` then requires ``val_data``)
    needs_validation_mi = False

    def setup(self, loop) -> None:
        """Build optimizers and SVI objects with ``loop.make_optim(params)`` and ``loop.make_svi(optim)``."""

    def optimizers(self) -> list:
        """Every Pyro optimizer the strategy steps (a decoder reset forgets its state in each)."""
        return []

    def kl_time(self, epoch: int, fraction: float) -> float | None:
        """The KL schedule's time at ``fraction`` of ``epoch``; ``None`` turns the KL term off."""
        return epoch + fraction

    def on_epoch_start(self, loop, epoch: int) -> None:
        """Called before the epoch's first step."""

    def training_step(self, loop, x) -> tuple[float, int]:
        """Train on the mini-batch ``x`` (this process's shard); return ``(loss, gradient evaluations)``.

        ``loss`` is the global mini-batch's negative ELBO (averaged over processes by the SVI step).
        """
        raise NotImplementedError

    def on_epoch_end(self, loop, record: dict) -> None:
        """Add the strategy's fields to the epoch's ``record`` (validation metrics are in it already)."""

    def state_dict(self) -> dict:
        """Top-level checkpoint entries (e.g. ``{"optim": ...}``)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore from a checkpoint written with :meth:`state_dict`."""
