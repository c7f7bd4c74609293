r"""Collapse diagnostics for amortized models, one definition each.

A model supplies ``posterior(x)`` (:math:`q(z\mid x)`, batch ``(B,)``, event ``(K,)``),
``log_joint(x, z)`` (:math:`\log p(x\mid z) + \log p(z)`, mixture clusters summed) and
``prior()``; every VAE in :mod:`pyro_lid.models` does.

* **Active units** (Burda et al. 2016): dimension :math:`d` is active when
  :math:`\mathrm{Var}_x(\mathbb{E}_q[z_d\mid x]) > 0.01` over the evaluation set.
* **KL**: :math:`\frac1N\sum_n \mathrm{KL}(q(z\mid x_n)\,\|\,p(z))`, analytic and per
  dimension for a Gaussian guide and a standard-normal prior, Monte Carlo otherwise.
* **Mutual information** :math:`I_q(x; z) = \mathbb{E}_x[\mathrm{KL}(q(z\mid x)\,\|\,q(z))]`
  with the aggregate posterior :math:`q(z) = \frac1N\sum_m q(z\mid x_m)`: the
  ``"aggregate"`` estimator uses the whole evaluation set (saturates at
  :math:`\log N`); the ``"minibatch"`` estimator of He et al. (2019) uses each
  mini-batch as its own aggregate and averages over batches (saturates at
  :math:`\log B`). Each estimate is clamped to that range once, at the end: clamping every
  mini-batch's estimate before averaging would bias the average upward near 0
  (:math:`\mathbb{E}\max(0, X) \ge \max(0, \mathbb{E}X)`), where collapse is measured.
* **Log-likelihood**: per data point, :math:`\log\frac1S\sum_s p(x, z_s)/q(z_s\mid x)`,
  :math:`z_s \sim q(z\mid x)`, in chunks of samples (not Pyro's ``RenyiELBO``, which
  treats a mini-batch as one latent).
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from .._progress import progress_bar, progress_line
from ..distributions.diagonal import diagonal_normal
from .fixed_posteriors import with_fixed_posteriors
from .resumable import EvaluationCheckpoint

__all__ = [
    "posterior_means",
    "active_units",
    "kl_divergence",
    "mutual_information",
    "mutual_information_per_dim",
    "importance_weighted_log_likelihood",
    "collapse_report",
]


def _check_data(data) -> int:
    """The number of rows of a non-empty ``(N, D)`` tensor; a ``ValueError`` naming the problem otherwise."""
    if not isinstance(data, torch.Tensor) or data.dim() != 2 or data.shape[0] == 0:
        got = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise ValueError(f"diagnostics expect a non-empty (N, D) data tensor, got {got}")
    return data.shape[0]


def _batches(data: torch.Tensor, batch_size: int):
    _check_data(data)
    for start in range(0, data.shape[0], batch_size):
        yield data[start : start + batch_size]


@torch.no_grad()
def posterior_means(model, data: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """:math:`\\mathbb{E}_q[z \\mid x_n]` for every row, shape ``(N, K)``."""
    return torch.cat([model.posterior(x).mean for x in _batches(data, batch_size)])


@torch.no_grad()
def active_units(model, data: torch.Tensor, threshold: float = 0.01, batch_size: int = 1000) -> dict:
    """Number and fraction of active latent dimensions, and each dimension's variance of the posterior mean."""
    means = posterior_means(model, data, batch_size)
    variance = means.var(0, unbiased=False)
    count = int((variance > threshold).sum())
    return {"count": count, "fraction": count / means.shape[1], "variance": variance}


@torch.no_grad()
def kl_divergence(model, data: torch.Tensor, num_samples: int = 100, batch_size: int = 1000) -> dict:
    """Mean KL(q(z|x) || p(z)): ``{"total": float, "per_dim": (K,) tensor or None}``."""
    prior = model.prior()
    prior_normal = diagonal_normal(prior)
    totals, per_dim, n = 0.0, None, 0
    for x in _batches(data, batch_size):
        q = model.posterior(x)
        gaussian = diagonal_normal(q)
        if gaussian is not None and prior_normal is not None:
            kl = torch.distributions.kl_divergence(gaussian, prior_normal)  # (B, K)
            per_dim = kl.sum(0) if per_dim is None else per_dim + kl.sum(0)
            totals += float(kl.sum())
        else:
            z = q.sample((num_samples,))
            totals += float((q.log_prob(z) - prior.log_prob(z)).mean(0).sum())
        n += x.shape[0]
    return {"total": totals / n, "per_dim": None if per_dim is None else per_dim / n}


@torch.no_grad()
def mutual_information(
    model, data: torch.Tensor, estimator: str = "aggregate", batch_size: int = 500, chunk_size: int = 1000
) -> float:
    """:math:`I_q(x; z)` in nats, one posterior sample per data point (see module docstring).

    The estimate lies in :math:`[0, \\log N]` (:math:`[0, \\log B]` for ``"minibatch"``), like the quantity
    it estimates: for ``"minibatch"``, the size-weighted mean of the unclamped per-batch estimates, clamped
    once. A :class:`UserWarning` says when it sits near that ceiling, where it says more about the number of
    evaluation points than about the model.
    """
    return _checked_mutual_information(model, data, estimator, batch_size, chunk_size, per_dim=False)[0]


@torch.no_grad()
def mutual_information_per_dim(model, data: torch.Tensor, chunk_size: int = 500) -> torch.Tensor:
    r"""Per-dimension :math:`I_q(x; z_d)` in nats, shape ``(K,)``, for a diagonal Gaussian :math:`q(z\mid x)`.

    The aggregate estimator applied to each coordinate's marginal :math:`q(z_d\mid x)`; each
    value lies in :math:`[0, \log N]`. A dimension whose value is near 0 carries no
    information about :math:`x`, whatever the variance of its posterior mean.

    :raises ValueError: when the posterior is not a diagonal Gaussian (its marginals are not at hand).
    """
    return _checked_mutual_information(model, data, "aggregate", chunk_size, chunk_size, per_dim=True)[1]


def _checked_mutual_information(model, data, estimator, batch_size, chunk_size, per_dim, progress=False):
    if estimator not in ("aggregate", "minibatch"):
        raise ValueError(f"estimator must be 'aggregate' or 'minibatch', got {estimator!r}")
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size}, {chunk_size}")
    n = _check_data(data)
    if estimator == "minibatch":
        batches = list(_batches(data, batch_size))
        # the mean of the unbiased per-batch estimates, clamped once (clamping each would bias it upward near 0)
        total = sum(_mutual_information(model, x, chunk_size, False)[0] * x.shape[0] for x in batches) / n
        ceiling, bound = math.log(min(batch_size, n)), "B"
        result = (min(max(total, 0.0), ceiling), None)
    else:
        total, total_dim = _mutual_information(model, data, chunk_size, per_dim, progress)
        ceiling, bound = math.log(n), "N"
        result = (min(max(total, 0.0), ceiling), None if total_dim is None else total_dim.clamp(0.0, ceiling))
    if result[0] >= 0.9 * ceiling:
        warnings.warn(
            f"mutual information estimate {result[0]:.3f} nats is at or near its ceiling log {bound} = {ceiling:.3f} "
            f"(N = {n} evaluation points): it cannot exceed that, so it says more about N than about the model; "
            "evaluate on more data",
            stacklevel=3,
        )
    return result


def _mutual_information(model, data, chunk_size, per_dim, progress=False):
    r"""``(I, I_per_dim or None)``: the mean over points of
    :math:`\log q(z_n\mid x_n) - \log\frac1N\sum_m q(z_n\mid x_m)`, :math:`z_n\sim q(z\mid x_n)`.

    Both terms are evaluated at the same draw :math:`z_n`, so each summand is at most
    :math:`\log N` (the own term is one of the :math:`N` in the sum) and the mean is an unbiased
    estimate of :math:`I_q(x; z)` for :math:`x` uniform on the data. It is returned unclamped (it can fall
    below 0); the caller clamps it to :math:`[0, \log N]`, the range of the estimand, after any averaging.
    """
    n = data.shape[0]
    # one posterior per chunk, used for both the samples and the aggregate: a stochastic posterior
    # (SA-VAE's refinement) asked twice would give two different q and break I <= log N
    posteriors = [model.posterior(x) for x in _batches(data, chunk_size)]
    gaussians = [diagonal_normal(q) for q in posteriors]
    if per_dim and any(g is None for g in gaussians):
        raise ValueError("per-dimension mutual information needs a diagonal Gaussian posterior q(z|x)")
    zs = [q.sample() for q in posteriors]
    z_all = torch.cat(zs)
    log_q_own = torch.cat([q.log_prob(z) for q, z in zip(posteriors, zs)])
    # log sum_m q(z_n | x_m), accumulated block by block (per dimension too when asked)
    log_sum = torch.full((n,), -math.inf, dtype=z_all.dtype, device=z_all.device)
    log_sum_dim = torch.full_like(z_all, -math.inf) if per_dim else None
    blocks = progress_bar(zip(posteriors, gaussians), progress, total=len(posteriors), desc="mutual information")
    for q, gaussian in blocks:  # batch (chunk,)
        for z_start in range(0, n, chunk_size):
            z_block = z_all[z_start : z_start + chunk_size].unsqueeze(1)  # (z_chunk, 1, K)
            stop = z_start + z_block.shape[0]
            if per_dim:
                block = gaussian.log_prob(z_block)  # (z_chunk, chunk, K)
                log_sum_dim[z_start:stop] = torch.logaddexp(log_sum_dim[z_start:stop], block.logsumexp(1))
                block = block.sum(-1)
            else:
                block = q.log_prob(z_block)  # (z_chunk, chunk)
            log_sum[z_start:stop] = torch.logaddexp(log_sum[z_start:stop], block.logsumexp(-1))
    ceiling = math.log(n)
    total = float((log_q_own - log_sum).mean() + ceiling)
    if not per_dim:
        return total, None
    log_own_dim = torch.cat([g.log_prob(z) for g, z in zip(gaussians, zs)])
    return total, (log_own_dim - log_sum_dim).mean(0) + ceiling


@torch.no_grad()
def importance_weighted_log_likelihood(
    model,
    data: torch.Tensor,
    num_samples: int = 100,
    chunk_size: int = 50,
    batch_size: int = 500,
    progress: bool | None = False,
    checkpoint=None,
) -> torch.Tensor:
    """Per-data-point :math:`\\log p(x_n)` estimates, shape ``(N,)``, from ``num_samples`` importance samples.

    ``progress``: a bar over the mini-batches (see :mod:`pyro_lid._progress`; off by default).
    ``checkpoint``: an :class:`~pyro_lid.diagnostics.resumable.EvaluationCheckpoint` that keeps every finished
    mini-batch (pieces ``"ll/0 (100 samples, batches of 500, chunks of 50)"``, ...), so that a stopped
    evaluation resumes bit for bit.
    """
    if num_samples < 1 or chunk_size < 1 or batch_size < 1:
        raise ValueError(
            f"num_samples, chunk_size and batch_size must be >= 1, got {num_samples}, {chunk_size}, {batch_size}"
        )
    out = []
    batches = _batches(data, batch_size)
    total = math.ceil(_check_data(data) / batch_size)
    checkpoint = checkpoint if checkpoint is not None else EvaluationCheckpoint()

    def bound(x):
        q = model.posterior(x)
        log_weights = []
        for start in range(0, num_samples, chunk_size):
            z = q.sample((min(chunk_size, num_samples - start),))
            log_weights.append(model.log_joint(x, z) - q.log_prob(z))
        return torch.cat(log_weights).logsumexp(0) - math.log(num_samples)

    bar = progress_bar(batches, progress, total=total, desc=f"log-likelihood ({num_samples} samples)")
    for i, x in enumerate(bar):
        key = f"ll/{i} ({num_samples} samples, batches of {batch_size}, chunks of {chunk_size})"
        out.append(checkpoint.piece(key, lambda x=x: bound(x)))
    return torch.cat(out)


@torch.no_grad()
def collapse_report(
    model,
    data: torch.Tensor,
    num_samples: int = 100,
    labels: torch.Tensor | None = None,
    progress: bool | None = None,
    keep_per_point: bool = False,
    checkpoint=None,
) -> dict:
    """All diagnostics at once: AU, KL (and per dimension), MI (both estimators, and per dimension
    for a diagonal Gaussian posterior), LL, cluster accuracy. Every stage reads one :math:`q(z\\mid x)` per data
    point, computed once (:func:`~pyro_lid.diagnostics.fixed_posteriors.with_fixed_posteriors`): SA-VAE's
    refinement runs once, not once per stage, and all stages measure the same posterior.

    ``data`` must already be in the form the likelihood scores (binarized images, for instance).
    ``progress``: a bar during the log-likelihood and a line per finished stage with its time
    (see :mod:`pyro_lid._progress`). ``keep_per_point``: also ``ll_per_point``, the ``(N,)`` estimates.
    ``checkpoint``: an :class:`~pyro_lid.diagnostics.resumable.EvaluationCheckpoint` that keeps every finished
    stage and log-likelihood mini-batch, so that a stopped evaluation resumes where it stopped, bit for bit.
    """
    from ..models.vae import cluster_accuracy

    n = _check_data(data)
    if labels is not None and (not isinstance(labels, torch.Tensor) or labels.shape != (n,)):
        raise ValueError(f"labels must be a tensor of shape ({n},), got {getattr(labels, 'shape', type(labels))}")
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    report = {"num_samples": num_samples, "num_data": n}
    checkpoint = checkpoint if checkpoint is not None else EvaluationCheckpoint()

    def stage(name, compute, keep=True):
        if name in checkpoint.values:
            progress_line(f"evaluation: {name} on {n} points kept from {checkpoint.path}", progress)
            return checkpoint.values[name]
        started = time.perf_counter()
        value = checkpoint.piece(name, compute) if keep else compute()
        progress_line(f"evaluation: {name} on {n} points in {time.perf_counter() - started:.1f} s", progress)
        return value

    try:
        # every row's q(z|x) once, read by every stage: SA-VAE's refinement is run once, and all stages see one q
        model, data = with_fixed_posteriors(model, data, checkpoint=checkpoint, progress=progress)
        au = stage("active units", lambda: active_units(model, data))
        kl = stage("KL", lambda: kl_divergence(model, data))
        ll = stage(
            f"log-likelihood ({num_samples} samples)",
            lambda: importance_weighted_log_likelihood(model, data, num_samples, progress=progress,
                                                       checkpoint=checkpoint),  # its mini-batches kept one by one
            keep=False,
        )  # fmt: skip
        mi, mi_per_dim = stage(  # every use of the random streams inside a stage: a resumed run draws the same
            "mutual information",
            lambda: _checked_mutual_information(
                model, data, "aggregate", 500, 500, diagonal_normal(model.posterior(data[:1])) is not None, progress
            ),
        )
        report.update(
            au=au["count"],
            au_fraction=au["fraction"],
            au_variance=au["variance"],
            kl=kl["total"],
            kl_per_dim=kl["per_dim"],
            mi=mi,
            mi_per_dim=mi_per_dim,
            mi_minibatch=stage("mutual information (mini-batch)", lambda: mutual_information(model, data, "minibatch")),
            ll=float(ll.mean()),
        )
        if keep_per_point:
            report["ll_per_point"] = ll
        if labels is not None and hasattr(model, "cluster") and getattr(model, "num_components", None):
            clusters = stage("clusters", lambda: torch.cat([model.cluster(x) for x in _batches(data, 1000)]))
            report["cluster_accuracy"] = cluster_accuracy(clusters.cpu(), labels.cpu())
            report["clusters_used"] = int(clusters.unique().numel())  # of num_components
        return report
    finally:
        if was_training:
            model.train()
