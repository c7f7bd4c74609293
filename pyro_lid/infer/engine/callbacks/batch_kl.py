r"""The largest mini-batch KL of each epoch: an early warning of a KL blow-up.

After every training step, :class:`MaxBatchKL` computes the mean over the step's mini-batch of
:math:`\mathrm{KL}(q(z\mid x)\,\|\,p(z))` in closed form, under ``torch.no_grad()``, at the
parameters the step left, and records the epoch's maximum as ``max_batch_kl``. The maximum over
training is ``max(history["max_batch_kl"])``. A run whose loss becomes NaN or infinite still stops
with :class:`~pyro_lid.infer.TrainingDiverged` (the last good checkpoint kept); this record shows a
blow-up that has not (yet) made the loss non-finite.

Cost: one encoder pass per step. Training is unchanged: no gradient, no random number, and the
encoder runs in evaluation mode (BN-VAE's batch statistics are not updated; its KL here uses the
running statistics), its modes restored afterwards. ``q`` is the amortized posterior (SA-VAE's
refinement is not run); under data parallelism each process measures its shard of the batch.
"""

from __future__ import annotations

import torch

from ....models.priors import StandardNormalPrior
from .base import Callback

__all__ = ["MaxBatchKL", "batch_kl"]


@torch.no_grad()
def batch_kl(model, x: torch.Tensor) -> torch.Tensor:
    r"""Mean over ``x`` of :math:`\mathrm{KL}(q(z\mid x)\,\|\,\mathcal N(0, I))`, closed form, encoder in eval mode."""
    modes = [(m, m.training) for m in model.encoder.modules()]
    model.encoder.eval()
    try:
        q = model.encoder.distribution(model._encoder_input(model.check_data(x)))
    finally:
        for module, mode in modes:
            module.training = mode
    loc, scale = q.base_dist.loc, q.base_dist.scale
    return (0.5 * (loc.square() + scale.square() - 1) - scale.log()).sum(-1).mean()


class MaxBatchKL(Callback):
    """Record ``max_batch_kl``: each epoch's largest mini-batch mean of KL(q(z|x) || p(z)) (:func:`batch_kl`)."""

    def setup(self, loop) -> None:
        model = loop.model
        if not isinstance(getattr(model, "prior", None), StandardNormalPrior) or not hasattr(model, "encoder"):
            prior = type(getattr(model, "prior", None)).__name__
            raise ValueError(
                f"track_batch_kl needs a model with an encoder and the standard-normal prior (closed-form KL); "
                f"{type(model).__name__} has prior {prior}"
            )
        self.largest = None

    def on_train_step_end(self, loop, epoch: int, step: int, x) -> None:
        value = batch_kl(loop.model, x)  # a tensor: no device synchronization per step
        self.largest = value if self.largest is None else torch.maximum(self.largest, value)

    def on_train_epoch_end(self, loop, epoch: int, record: dict) -> None:
        if self.largest is not None:
            record["max_batch_kl"] = float(self.largest)
        self.largest = None

    def state_dict(self) -> dict:
        """The epoch's running maximum, for a checkpoint written between two steps."""
        return {"max_batch_kl_partial": self.largest}

    def load_state_dict(self, state: dict) -> None:
        self.largest = state.get("max_batch_kl_partial")
