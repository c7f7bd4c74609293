"""Validation after every epoch: ``val_loss`` and (with ``metrics``) KL, active units and mutual information."""

from __future__ import annotations

import inspect
import math

import torch

from ..first_process import on_first_process
from .base import Callback
from .checkpoint import validation_file

__all__ = ["ValidationMetrics", "evaluate"]


@torch.no_grad()
def evaluate(model, svi, data, batch_size, metrics, checkpoint=None):
    """``val_loss`` (negative ELBO per data point) and, with ``metrics``, ``kl``, ``au``, ``mi`` on ``data`` (from one
    :math:`q(z\\mid x)` per point, computed once); each a piece of ``checkpoint`` (an
    :class:`~pyro_lid.diagnostics.EvaluationCheckpoint`), if given. The model is in eval mode meanwhile and in train
    mode after, also when a stage fails."""
    from ....diagnostics.collapse import active_units, kl_divergence, mutual_information
    from ....diagnostics.fixed_posteriors import with_fixed_posteriors
    from ....diagnostics.resumable import EvaluationCheckpoint

    checkpoint = checkpoint if checkpoint is not None else EvaluationCheckpoint()
    devices = [data.device] if data.device.type == "cuda" else []
    n = data.shape[0]

    def loss():
        return sum(svi.evaluate_loss(data[i : i + batch_size], n) for i in range(0, n, batch_size))

    with torch.random.fork_rng(devices=devices):  # validation must not change the training random stream
        model.eval()
        try:
            out = {"val_loss": checkpoint.piece("val_loss", loss) / math.ceil(n / batch_size) / n}
            if metrics:  # one q(z|x) per point for the three (SA-VAE refines once, not three times)
                fixed, rows = with_fixed_posteriors(model, data, checkpoint=checkpoint)
                out["kl"] = checkpoint.piece("kl", lambda: kl_divergence(fixed, rows)["total"])
                out["au"] = checkpoint.piece("au", lambda: active_units(fixed, rows)["count"])
                out["mi"] = checkpoint.piece("mi", lambda: mutual_information(fixed, rows))
        finally:
            model.train()
    return out


class ValidationMetrics(Callback):
    """Evaluate on ``data`` at every epoch's end (on the first process; the others receive its numbers, so that
    every process takes the same decisions from them).

    With a checkpoint (``fit(checkpoint=path)``) each finished stage of the validation (loss, posteriors, KL, AU, MI)
    is kept in :func:`~.checkpoint.validation_file` until the epoch's checkpoint is written: a run stopped during a
    long validation (SA-VAE refines every posterior, for the loss and once more for the metrics) resumes it from its
    kept stages, bit for bit."""

    def __init__(self, data, batch_size: int, metrics: bool = True, evaluate=evaluate):
        self.data, self.batch_size, self.metrics, self.evaluate = data, batch_size, metrics, evaluate

    def on_fit_start(self, loop) -> None:
        self.data = self.data.to(loop.device)  # once, not every epoch

    def on_train_epoch_end(self, loop, epoch: int, record: dict) -> None:
        def validate():
            kept = {}
            if loop.checkpoint_path is not None:
                from ....diagnostics.resumable import EvaluationCheckpoint, evaluation_fingerprint

                fingerprint = evaluation_fingerprint(loop.model, self.data, epoch=epoch + 1, metrics=self.metrics)
                path = validation_file(loop.checkpoint_path)
                keep = EvaluationCheckpoint(path, fingerprint, restart_on_mismatch=True, device=self.data.device)
                kept = {"checkpoint": keep} if _takes_checkpoint(self.evaluate) else {}
            return self.evaluate(loop.model, loop.strategy.svi, self.data, self.batch_size, self.metrics, **kept)

        record.update(on_first_process(loop.fabric, validate, f"the validation of epoch {epoch + 1}"))


def _takes_checkpoint(evaluate) -> bool:
    """Whether a (user's) ``evaluate`` accepts ``checkpoint=``: one written before the option still works."""
    try:
        inspect.signature(evaluate).bind_partial(checkpoint=None)
    except (TypeError, ValueError):
        return False
    return True
