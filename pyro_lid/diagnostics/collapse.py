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
  :math:`\log B`).
* **Log-likelihood**: per data point, :math:`\log\frac1S\sum_s p(x, z_s)/q(z_s\mid x)`,
  :math:`z_s \sim q(z\mid x)`, in chunks of samples (not Pyro's ``RenyiELBO``, which
  treats a mini-batch as one latent).
"""

from __future__ import annotations

import math

import torch

from ..distributions.diagonal import diagonal_normal

__all__ = [
    "posterior_means",
    "active_units",
    "kl_divergence",
    "mutual_information",
    "importance_weighted_log_likelihood",
    "collapse_report",
]


def _batches(data: torch.Tensor, batch_size: int):
    if data.dim() != 2 or data.shape[0] == 0:
        raise ValueError(f"diagnostics expect a non-empty (N, D) data tensor, got shape {tuple(data.shape)}")
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
    """:math:`I_q(x; z)` in nats, one posterior sample per data point (see module docstring)."""
    if estimator == "minibatch":
        values = [_mutual_information(model, x, chunk_size) * x.shape[0] for x in _batches(data, batch_size)]
        return sum(values) / data.shape[0]
    if estimator != "aggregate":
        raise ValueError(f"estimator must be 'aggregate' or 'minibatch', got {estimator!r}")
    return _mutual_information(model, data, chunk_size)


def _mutual_information(model, data, chunk_size):
    n = data.shape[0]
    # one posterior per chunk, used for both the samples and the aggregate: a stochastic posterior
    # (SA-VAE's refinement) asked twice would give two different q and break I <= log N
    posteriors = [model.posterior(x) for x in _batches(data, chunk_size)]
    log_q_own, zs = [], []
    for q in posteriors:
        z = q.sample()
        zs.append(z)
        gaussian = diagonal_normal(q)
        log_q_own.append(-gaussian.entropy().sum(-1) if gaussian is not None else q.log_prob(z))
    z_all = torch.cat(zs)
    # log q(z_n) = logsumexp_m log q(z_n | x_m) - log N, accumulated block by block
    log_aggregate = torch.full((n,), -math.inf, dtype=z_all.dtype, device=z_all.device)
    for q in posteriors:  # batch (chunk,)
        for z_start in range(0, n, chunk_size):
            block = q.log_prob(z_all[z_start : z_start + chunk_size].unsqueeze(1))  # (z_chunk, chunk)
            part = block.logsumexp(-1)
            stop = z_start + part.shape[0]
            log_aggregate[z_start:stop] = torch.logaddexp(log_aggregate[z_start:stop], part)
    return float(torch.cat(log_q_own).mean() - (log_aggregate - math.log(n)).mean())


@torch.no_grad()
def importance_weighted_log_likelihood(
    model, data: torch.Tensor, num_samples: int = 100, chunk_size: int = 50, batch_size: int = 500
) -> torch.Tensor:
    """Per-data-point :math:`\\log p(x_n)` estimates, shape ``(N,)``, from ``num_samples`` importance samples."""
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"num_samples and chunk_size must be >= 1, got {num_samples}, {chunk_size}")
    out = []
    for x in _batches(data, batch_size):
        q = model.posterior(x)
        log_weights = []
        for start in range(0, num_samples, chunk_size):
            z = q.sample((min(chunk_size, num_samples - start),))
            log_weights.append(model.log_joint(x, z) - q.log_prob(z))
        out.append(torch.cat(log_weights).logsumexp(0) - math.log(num_samples))
    return torch.cat(out)


@torch.no_grad()
def collapse_report(model, data: torch.Tensor, num_samples: int = 100, labels: torch.Tensor | None = None) -> dict:
    """All diagnostics at once: AU, KL (and per dimension), MI (both estimators), LL, ELBO, cluster accuracy.

    ``data`` must already be in the form the likelihood scores (binarized images, for instance).
    """
    from ..models.vae import cluster_accuracy

    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        au = active_units(model, data)
        kl = kl_divergence(model, data)
        ll = importance_weighted_log_likelihood(model, data, num_samples)
        report = {
            "au": au["count"],
            "au_fraction": au["fraction"],
            "au_variance": au["variance"],
            "kl": kl["total"],
            "kl_per_dim": kl["per_dim"],
            "mi": mutual_information(model, data, "aggregate"),
            "mi_minibatch": mutual_information(model, data, "minibatch"),
            "ll": float(ll.mean()),
            "num_samples": num_samples,
            "num_data": data.shape[0],
        }
        if labels is not None and hasattr(model, "cluster") and getattr(model, "num_components", None):
            clusters = torch.cat([model.cluster(x) for x in _batches(data, 1000)])
            report["cluster_accuracy"] = cluster_accuracy(clusters.cpu(), labels.cpu())
        return report
    finally:
        if was_training:
            model.train()
