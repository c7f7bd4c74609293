"""What a training run returns (:class:`History`) and how it fails (:class:`TrainingDiverged`)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["History", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class History:
    """Per-epoch records: ``epoch``, ``train_loss`` (negative ELBO per data point), ``kl_weight``,
    ``seconds``, ``grad_evals`` and, with validation data, ``val_loss``, ``kl``, ``au``, ``mi``."""

    records: list = field(default_factory=list)
    stopped_early: bool = False

    def __getitem__(self, key: str) -> list:
        return [r.get(key) for r in self.records]

    def __len__(self):
        return len(self.records)
