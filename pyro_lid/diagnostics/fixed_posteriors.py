r"""One :math:`q(z\mid x)` per data point for a whole evaluation: computed once, then read by every stage.

An evaluation (:func:`~pyro_lid.diagnostics.collapse_report`, :func:`~pyro_lid.diagnostics.text_report`, ``fit``'s
validation) asks for the posterior of every data point in each of its stages: active units, KL, the log-likelihood,
both mutual-information estimators, the reconstruction. For an encoder that is a few matrix products each time. For
SA-VAE (:class:`~pyro_lid.models.SemiAmortized`) it is :math:`K` gradient steps of the decoder per point, and a
random result: each stage measured *another* posterior, and the refinements were most of the evaluation's time.

:func:`with_fixed_posteriors` computes the diagonal Gaussian :math:`q(z\mid x_n) = \mathcal N(\mu_n,
\mathrm{diag}\,\sigma_n^2)` of every row once (a piece of the evaluation's checkpoint per mini-batch, so a resumed
evaluation reads the same ones) and hands the stages a :class:`FixedPosteriors`: the model, whose ``posterior(x)``
for a block of consecutive rows of those data (every stage takes its mini-batches as slices) reads
:math:`(\mu, \sigma)` of those rows. All stages then measure one and the same :math:`q`.
"""

from __future__ import annotations

import time

import pyro.distributions as dist
import torch

from .._progress import progress_bar, progress_line
from ..distributions.diagonal import diagonal_normal

__all__ = ["FixedPosteriors", "piece_key", "with_fixed_posteriors"]

PIECE = "posteriors"


def piece_key(index: int, batch_size: int) -> str:
    """The evaluation checkpoint's piece of mini-batch ``index`` of the posteriors: ``"posteriors/0 (batches of
    100)"``, ... (the batching named, as the bound's pieces name theirs)."""
    return f"{PIECE}/{index} (batches of {batch_size})"


class FixedPosteriors:
    r"""``model`` with :math:`q(z\mid x)` fixed to ``loc``, ``scale`` (``(N, K)``) for the rows of ``data`` (``(N,
    ...)``, contiguous); every other attribute is the model's.

    ``posterior(x)`` takes ``x`` a block of consecutive rows of ``data`` itself (a slice such as ``data[i:j]`` or a
    piece of ``data.split(b)``: a view of its memory) and refuses anything else with a ``ValueError``: rows that
    merely hold the same values are not recognised, so no posterior is ever read for the wrong point.
    """

    def __init__(self, model, data: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor):
        if not data.is_contiguous():
            raise ValueError("FixedPosteriors needs contiguous data (its rows are found from their memory offsets)")
        if loc.shape != scale.shape or loc.dim() != 2 or loc.shape[0] != data.shape[0]:
            raise ValueError(
                f"loc and scale must both be (N, K) with N = {data.shape[0]} rows of data, got "
                f"{tuple(loc.shape)} and {tuple(scale.shape)}"
            )
        self.model, self.data, self.loc, self.scale = model, data, loc, scale

    def __getattr__(self, name):  # only for what this object lacks: the model's own attributes
        if name in ("model", "data", "loc", "scale"):  # not yet set (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def rows(self, x: torch.Tensor) -> slice:
        """The rows of ``data`` that ``x`` is (a view of), as a slice; a ``ValueError`` if it is not such a block."""
        data = self.data
        row = data.stride(0) if data.dim() > 0 else 0
        is_block = (
            isinstance(x, torch.Tensor)
            and x.dim() == data.dim()
            and x.shape[1:] == data.shape[1:]
            and x.dtype == data.dtype
            and x.device == data.device
            and x.untyped_storage().data_ptr() == data.untyped_storage().data_ptr()
            and (x.shape[0] <= 1 or x.stride() == data.stride())
            and x.stride()[1:] == data.stride()[1:]
            and row > 0
            and (x.storage_offset() - data.storage_offset()) % row == 0
        )
        start = (x.storage_offset() - data.storage_offset()) // row if is_block else -1
        if not is_block or start < 0 or start + x.shape[0] > data.shape[0]:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"the posteriors were computed once for the {data.shape[0]} rows of one data set; {got} is not a "
                "block of consecutive rows of that tensor (a slice or a piece of .split() of it)"
            )
        return slice(start, start + x.shape[0])

    def cluster(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable mixture component of each row, :math:`\\arg\\max_c p(c\\mid \\mathbb E_q z)`, as the
        model's ``cluster`` gives it (mixture-prior models), from the kept posterior means."""
        cluster_log_posterior = getattr(getattr(self.model, "prior", None), "cluster_log_posterior", None)
        if cluster_log_posterior is None:
            return self.model.cluster(x)  # the model's own error: it has no mixture prior
        return cluster_log_posterior(self.posterior(x).mean).argmax(-1)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`\mathcal N(\mu_n, \mathrm{diag}\,\sigma_n^2)` for the rows ``n`` that ``x`` is, batch ``(B,)``,
        event ``(K,)``."""
        rows = self.rows(x)
        return dist.Normal(self.loc[rows], self.scale[rows]).to_event(1)


@torch.no_grad()
def with_fixed_posteriors(model, data: torch.Tensor, batch_size: int = 100, checkpoint=None, progress=False):
    r"""``(model, data)`` for an evaluation's stages: :class:`FixedPosteriors` over ``data`` made contiguous, with
    every row's :math:`q(z\mid x)` computed once in mini-batches of ``batch_size``, each a piece of ``checkpoint``
    (an :class:`~pyro_lid.diagnostics.resumable.EvaluationCheckpoint`; :func:`piece_key`), so that a stopped
    evaluation loses at most one mini-batch of them.

    A posterior that is not a diagonal Gaussian (PPCA's exact one, an enumerated mixture's) has no
    :math:`(\mu, \sigma)` to keep: ``model`` itself is returned, and every stage asks it again. Those two are
    deterministic functions of :math:`x`, so the stages still measure one :math:`q`; a model of its own whose
    posterior is neither (random, and not a diagonal Gaussian) would give each stage its own. A
    :class:`FixedPosteriors` over these very ``data`` is returned as it is. ``progress``: a line with the time it
    took, and a bar over the mini-batches while it runs (see :mod:`pyro_lid._progress`). Mini-batches of 100 by
    default: SA-VAE's refinement differentiates the decoder over a whole mini-batch, its vocabulary-wide logits
    included, so a small one bounds its memory and lets the bar move; an encoder is cheap at any size.
    """
    from .resumable import EvaluationCheckpoint

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(model, FixedPosteriors) and model.data is data:
        return model, data
    data = data.contiguous()
    checkpoint = checkpoint if checkpoint is not None else EvaluationCheckpoint()

    def diagonal(x):  # (loc, scale) of the batch, or None for a posterior that is not a diagonal Gaussian
        q = model.posterior(x)
        gaussian = diagonal_normal(q)
        if gaussian is None or q.batch_shape != x.shape[:1] or len(q.event_shape) != 1 or gaussian.loc.dim() != 2:
            return None
        return gaussian.loc, gaussian.scale

    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    started, parts, computed = time.perf_counter(), [], 0
    try:
        batches = data.split(batch_size)
        for i, x in enumerate(progress_bar(batches, progress, total=len(batches), desc="posteriors")):
            key = piece_key(i, batch_size)
            computed += key not in checkpoint.values
            part = checkpoint.piece(key, lambda x=x: diagonal(x))
            if part is None:  # the first batch tells: the model itself is asked, by every stage
                return model, data
            parts.append(part)
    finally:
        if was_training:
            model.train()
    kept = torch.cat([loc for loc, _ in parts]), torch.cat([scale for _, scale in parts])
    done = f"in {time.perf_counter() - started:.1f} s"
    if computed < len(parts):
        done += f", {len(parts) - computed} of {len(parts)} mini-batches kept from {checkpoint.path}"
    progress_line(f"evaluation: {PIECE} on {data.shape[0]} points {done}", progress)
    return FixedPosteriors(model, data, *kept), data
