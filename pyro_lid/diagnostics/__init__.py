"""Diagnostics: collapse metrics (AU, KL, MI, log-likelihood), prior-posterior comparisons, figures."""

from .amortization import amortization_gap
from .code_recovery import code_recovery, posterior_code_recovery
from .collapse import (
    active_units,
    collapse_report,
    importance_weighted_log_likelihood,
    kl_divergence,
    mutual_information,
    mutual_information_per_dim,
    posterior_means,
)
from .latent_posterior import latent_inference_data, plot_kl_per_dimension, plot_latent_posteriors
from .plots import plot_log_likelihood_curve, plot_prior_posterior
from .prior_posterior import gaussian_kl, prior_posterior_table, wasserstein1
from .resumable import EvaluationCheckpoint, evaluation_fingerprint
from .text import head_information, perplexity, subspace_evidence, text_report

__all__ = [
    "amortization_gap",
    "code_recovery",
    "posterior_code_recovery",
    "text_report",
    "head_information",
    "subspace_evidence",
    "active_units",
    "collapse_report",
    "latent_inference_data",
    "plot_kl_per_dimension",
    "plot_latent_posteriors",
    "gaussian_kl",
    "importance_weighted_log_likelihood",
    "kl_divergence",
    "mutual_information",
    "mutual_information_per_dim",
    "plot_log_likelihood_curve",
    "plot_prior_posterior",
    "perplexity",
    "posterior_means",
    "prior_posterior_table",
    "wasserstein1",
    "EvaluationCheckpoint",
    "evaluation_fingerprint",
]
