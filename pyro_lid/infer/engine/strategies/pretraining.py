"""Autoencoder pretraining with a decoder reset (Li et al. 2019), wrapped around any other recipe
(see :mod:`pyro_lid.infer.pretraining` for the method)."""

from __future__ import annotations

from ...pretraining import initial_state, reset_decoder
from .base import TrainingStrategy

__all__ = ["AutoencoderPretraining"]


class AutoencoderPretraining(TrainingStrategy):
    """The first ``epochs`` epochs of ``inner`` train an autoencoder (KL off); then the decoder is put back to
    its initialization, its optimizer state is forgotten, and ``inner`` goes on with the KL schedule from 0.

    Records get ``phase`` (``"autoencoder"`` or ``"vae"``); the checkpoint gets ``decoder_at_init``.
    """

    def __init__(self, inner: TrainingStrategy, epochs: int):
        self.inner, self.epochs = inner, epochs
        self.needs_validation_mi = inner.needs_validation_mi

    @property
    def svi(self):
        return self.inner.svi

    def setup(self, loop) -> None:
        self.inner.setup(loop)
        self.decoder_at_init = initial_state(loop.model.decoder)

    def optimizers(self) -> list:
        return self.inner.optimizers()

    def kl_time(self, epoch: int, fraction: float) -> float | None:
        return None if epoch < self.epochs else self.inner.kl_time(epoch - self.epochs, fraction)

    def on_epoch_start(self, loop, epoch: int) -> None:
        if epoch == self.epochs:
            reset_decoder(loop.model, self.decoder_at_init, *self.optimizers())
        self.pretraining = epoch < self.epochs
        self.inner.on_epoch_start(loop, epoch)

    def training_step(self, loop, x) -> tuple[float, int]:
        return self.inner.training_step(loop, x)

    def on_epoch_end(self, loop, record: dict) -> None:
        record["phase"] = "autoencoder" if self.pretraining else "vae"
        self.inner.on_epoch_end(loop, record)

    def state_dict(self) -> dict:
        return {**self.inner.state_dict(), "decoder_at_init": self.decoder_at_init}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)
        self.decoder_at_init = state.get("decoder_at_init")
        self.pretraining = state["epoch"] < self.epochs  # what on_epoch_start sets (a run resumed mid-epoch)
