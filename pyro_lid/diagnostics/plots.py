"""Figures: prior against posterior densities, and the log-likelihood as a function of a latent."""

from __future__ import annotations

import numpy as np

from .._arviz import arviz as az

__all__ = ["plot_prior_posterior", "plot_log_likelihood_curve"]


def _marginal(group, name: str, coord: int | None) -> np.ndarray:
    values = group[name].values
    values = values.reshape(values.shape[:2] + (-1,)) if values.ndim > 2 else values[..., None]
    return values[..., 0 if coord is None else coord].reshape(-1)


def plot_prior_posterior(idatas: dict, name: str, coord: int | None = None, ax=None, title: str | None = None):
    """Overlay the prior and each posterior of latent ``name`` (flattened coordinate ``coord``).

    :param idatas: ``{label: InferenceData}``, e.g. ``{"NUTS": ..., "mean-field VI": ...}``; the
        prior is taken from the first.
    :returns: the matplotlib axes.
    """
    import matplotlib.pyplot as plt

    if not idatas:
        raise ValueError("plot_prior_posterior needs at least one InferenceData")
    ax = plt.gca() if ax is None else ax
    first = next(iter(idatas.values()))
    az.plot_dist(_marginal(first.prior, name, coord), ax=ax, label="prior", color="0.4", plot_kwargs={"ls": "--"})
    for i, (label, idata) in enumerate(idatas.items()):
        az.plot_dist(_marginal(idata.posterior, name, coord), ax=ax, label=label, color=f"C{i}")
    ax.set_title(title or (name if coord is None else f"{name}[{coord}]"))
    ax.legend(fontsize="small")
    return ax


def plot_log_likelihood_curve(grid, log_likelihood, ax=None, label: str | None = None, xlabel: str = "latent"):
    """Plot ``log_likelihood - max(log_likelihood)`` against ``grid`` (flat: non-identifiable)."""
    import matplotlib.pyplot as plt

    ax = plt.gca() if ax is None else ax
    values = np.asarray(log_likelihood, dtype=float)
    ax.plot(np.asarray(grid), values - values.max(), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("log-likelihood - max")
    return ax
