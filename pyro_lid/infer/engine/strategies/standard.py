"""The standard recipe: one SVI step of every parameter per mini-batch."""

from __future__ import annotations

from .base import TrainingStrategy, optimizer_state

__all__ = ["Standard"]


class Standard(TrainingStrategy):
    """One optimizer over all parameters, one ``svi.step`` per mini-batch (checkpoint entry ``optim``)."""

    def setup(self, loop) -> None:
        self.optim = loop.make_optim()
        self.svi = loop.make_svi(self.optim)

    def optimizers(self) -> list:
        return [self.optim]

    def training_step(self, loop, x) -> tuple[float, int]:
        return self.svi.step(x, loop.num_data), loop.gradient_evaluations()

    def state_dict(self) -> dict:
        return {"optim": optimizer_state(self.optim)}

    def load_state_dict(self, state: dict) -> None:
        self.optim.set_state(state["optim"])
