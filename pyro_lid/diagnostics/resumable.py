r"""An evaluation that survives its process: its finished pieces kept in a file, resumed bit for bit.

An evaluation (:func:`~pyro_lid.diagnostics.collapse_report`, :func:`~pyro_lid.diagnostics.text_report`)
is a fixed sequence of pieces: stages such as the KL or the mutual information, and the mini-batches of
the importance-weighted bound (``"ll/0"``, ``"ll/1"``, ...). Each piece may draw from the global random
streams. :class:`EvaluationCheckpoint` writes, after every piece, the values so far and the streams'
state (whole or not at all). A resumed evaluation takes the kept values in the same order and restores
the streams where the first piece not kept begins, so it computes exactly what an uninterrupted
evaluation computes. A 20-sample bound on 3,800 sentences takes minutes, SA-VAE's (which refines every
posterior) far longer: a process stopped during it loses at most one piece.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..infer.checkpoints import CheckpointError, atomic_save, data_fingerprint, load_checkpoint
from ..infer.engine.rng import rng_state, set_rng_state

__all__ = ["EvaluationCheckpoint", "evaluation_fingerprint"]


def evaluation_fingerprint(model, data: torch.Tensor, **options) -> dict:
    """What an evaluation's pieces depend on: the model's parameter *values* (a hash), the data and ``options``."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"model": digest.hexdigest()[:16], "data": data_fingerprint(data), **options}


class EvaluationCheckpoint:
    """The finished pieces of one evaluation, kept in ``path`` (``None``: nothing kept, every piece computed).

    :param fingerprint: :func:`evaluation_fingerprint` of this evaluation; a file written for another one
        (other parameters, data or options) is refused with a :class:`~pyro_lid.infer.checkpoints.CheckpointError`
        that names it and the differences.
    """

    def __init__(self, path=None, fingerprint: dict | None = None):
        self.path = Path(path) if path is not None else None
        self.fingerprint = fingerprint
        self.values, self.rng, self.restored = {}, None, False
        if self.path is not None and self.path.exists():
            state = load_checkpoint(self.path, map_location="cpu", required=("fingerprint", "values", "rng"))
            differences = [
                f"{key}: {state['fingerprint'].get(key)!r} in the file, {value!r} in this evaluation"
                for key, value in fingerprint.items()
                if state["fingerprint"].get(key) != value
            ]
            if differences:
                raise CheckpointError(
                    f"cannot resume the evaluation kept in {self.path}: it was computed for another model, data "
                    f"or options ({'; '.join(differences)}); delete it to evaluate from the start"
                )
            self.values, self.rng = state["values"], state["rng"]

    @property
    def kept(self) -> int:
        """How many pieces the file held when it was opened (or have been computed since)."""
        return len(self.values)

    def piece(self, key: str, compute):
        """``compute()``, or its kept value; after computing, the value and the random streams are written."""
        if key in self.values:
            return self.values[key]
        if not self.restored and self.rng is not None:  # the first piece not kept: where the streams stood
            set_rng_state(self.rng)
        self.restored = True
        value = compute()
        if self.path is not None:
            self.values[key] = _to_cpu(value)
            self.rng = rng_state()
            atomic_save({"fingerprint": self.fingerprint, "values": self.values, "rng": self.rng}, self.path)
        return value

    def remove(self) -> None:
        """Delete the file (its evaluation is finished and recorded elsewhere)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_to_cpu(v) for v in value)
    return value
