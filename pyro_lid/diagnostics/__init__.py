"""Diagnostics: how far posteriors moved from priors; figures."""

from .plots import plot_log_likelihood_curve, plot_prior_posterior
from .prior_posterior import gaussian_kl, prior_posterior_table, wasserstein1

__all__ = ["gaussian_kl", "plot_log_likelihood_curve", "plot_prior_posterior", "prior_posterior_table", "wasserstein1"]
