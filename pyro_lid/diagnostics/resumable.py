r"""An evaluation that survives its process: its finished pieces kept in a file, resumed bit for bit.

An evaluation (:func:`~pyro_lid.diagnostics.collapse_report`, :func:`~pyro_lid.diagnostics.text_report`)
is a fixed sequence of pieces: stages such as the KL or the mutual information, and the mini-batches of
the importance-weighted bound (``"ll/0 (20 samples, batches of 500, chunks of 50)"``, ...), and the stages of
``fit``'s validation (:class:`~pyro_lid.infer.engine.callbacks.ValidationMetrics`). Each piece may draw
from the global random streams. :class:`EvaluationCheckpoint` writes, after every piece, the values so far
and the streams' state (whole or not at all). A resumed evaluation takes the kept values in the same order and restores
the streams where the first piece not kept begins, so it computes exactly what an uninterrupted
evaluation computes. A 20-sample bound on 3,800 sentences takes minutes, and SA-VAE's refinement of every
posterior (the pieces ``"posteriors/0 (batches of 100)"``, ...) far longer: a process stopped during it loses at
most one piece.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch

from ..infer.checkpoints import CheckpointError, atomic_save, data_fingerprint, load_checkpoint
from ..infer.engine.rng import rng_state, set_rng_state

__all__ = ["EvaluationCheckpoint", "PIECES_LAYOUT", "evaluation_fingerprint"]


PIECES_LAYOUT = 3
"""The version of the pieces evaluations are made of, part of every fingerprint: a file kept by an evaluation made
of other pieces (before 2: every stage asked for its own posteriors; 2: the posteriors one piece, not one per
mini-batch) is not mixed into this one's."""


def evaluation_fingerprint(model, data: torch.Tensor, **options) -> dict:
    """What an evaluation's pieces depend on: the model's parameter *values* (a hash), the data, the device
    type they are on (a kept piece is handed back where it was computed), the layout of the pieces
    (:data:`PIECES_LAYOUT`) and ``options``."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    if "pieces" in options:
        raise ValueError("'pieces' is the fingerprint's own entry (PIECES_LAYOUT), not an option")
    return {"model": digest.hexdigest()[:16], "data": data_fingerprint(data), "device": data.device.type,
            "pieces": PIECES_LAYOUT, **options}  # fmt: skip


class EvaluationCheckpoint:
    """The finished pieces of one evaluation, kept in ``path`` (``None``: nothing kept, every piece computed).

    :param fingerprint: :func:`evaluation_fingerprint` of this evaluation (required with a ``path``). A file
        written for another one (other parameters, data, device or options) is refused with a
        :class:`~pyro_lid.infer.checkpoints.CheckpointError` that names it and the differences, or, with
        ``restart_on_mismatch``, set aside with a warning that says so: the evaluation starts afresh.
        With ``restart_on_mismatch`` an unreadable file (a cache, after all) is set aside the same way.
    :param write: ``False``: read the file's pieces but never write it (the other processes of a distributed
        run, which evaluate beside the first one and record nothing).
    :param device: where the kept tensors are handed back (the evaluation's device: with several GPUs, each
        process's own); ``None``: where they were computed.
    """

    def __init__(self, path=None, fingerprint: dict | None = None, restart_on_mismatch: bool = False,
                 write: bool = True, device=None):  # fmt: skip
        if path is not None and not isinstance(fingerprint, dict):
            raise ValueError(f"an evaluation kept in {path} needs its fingerprint (evaluation_fingerprint), got "
                             f"{fingerprint!r}")  # fmt: skip
        self.path = Path(path) if path is not None else None
        self.fingerprint, self.write = fingerprint, write
        self.values, self.rng, self.restored = {}, None, False
        if self.path is not None and self.path.exists():
            try:
                state = load_checkpoint(self.path, map_location=device, required=("fingerprint", "values", "rng"))
            except CheckpointError as error:
                if not restart_on_mismatch:
                    raise
                warnings.warn(f"{error}; it is evaluated from the start and the file replaced", stacklevel=2)
                return
            saved = state["fingerprint"] if isinstance(state["fingerprint"], dict) else {}
            differences = [
                f"{key}: {saved.get(key, '(absent)')!r} in the file, {fingerprint.get(key, '(absent)')!r} in this one"
                for key in dict.fromkeys([*saved, *fingerprint])
                if saved.get(key, _ABSENT) != fingerprint.get(key, _ABSENT)
            ]
            if saved.get("pieces", _ABSENT) != fingerprint.get("pieces", _ABSENT):
                differences.insert(0, "it is made of other pieces (kept by an older version of pyro-lid)")
            if not differences:
                self.values, self.rng = state["values"], state["rng"]
            elif restart_on_mismatch:
                warnings.warn(
                    f"the evaluation kept in {self.path} was computed for another model, data, device or options "
                    f"({'; '.join(differences)}); it is evaluated from the start and the file replaced",
                    stacklevel=2,
                )
            else:
                raise CheckpointError(
                    f"cannot resume the evaluation kept in {self.path}: it was computed for another model, data, "
                    f"device or options ({'; '.join(differences)}); delete it to evaluate from the start"
                )

    def piece(self, key: str, compute):
        """``compute()``, or its kept value (on the device where it was computed); after computing, the value
        and the random streams' state are written. ``key`` must name everything the value depends on that the
        fingerprint does not (:func:`~pyro_lid.diagnostics.importance_weighted_log_likelihood`'s keys name the
        sample count and the batching)."""
        if key in self.values:
            return self.values[key]
        if not self.restored and self.rng is not None:  # the first piece not kept: where the streams stood
            set_rng_state(self.rng)
        elif not self.restored and self.path is not None:  # a new evaluation: where the streams stand as it begins,
            self._save()  # kept before its first piece runs, so that a stop inside that one resumes too
        self.restored = True
        value = compute()
        if self.path is not None:
            self.values[key] = value
            self._save()
        return value

    def _save(self) -> None:
        """Keep the values so far and the random streams' state now (in memory; in the file if this one writes)."""
        self.rng = rng_state()
        if self.write:
            atomic_save({"fingerprint": self.fingerprint, "values": self.values, "rng": self.rng}, self.path)

    @staticmethod
    def saved_fingerprint(path) -> dict | None:
        """The fingerprint kept in ``path``, or ``None`` if there is no readable one."""
        try:
            state = load_checkpoint(path, map_location="cpu", required=("fingerprint",))
        except (OSError, CheckpointError):
            return None
        return state["fingerprint"] if isinstance(state["fingerprint"], dict) else None

    def remove(self) -> None:
        """Delete the file (its evaluation is finished and recorded elsewhere)."""
        if self.path is not None and self.write:
            self.path.unlink(missing_ok=True)


_ABSENT = object()
