"""Inference: posterior samples as ArviZ InferenceData (NUTS, mean-field and full-rank VI)."""

from .posterior_samples import latent_sites, nuts_posterior, prior_draws, vi_posterior

__all__ = ["latent_sites", "nuts_posterior", "prior_draws", "vi_posterior"]
