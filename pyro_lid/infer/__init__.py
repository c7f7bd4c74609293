"""Inference: the training loop over SVI, KL schedules, free bits, and posterior samples for ArviZ."""

from .aggressive import LaggingState, ParamSubsetOptim
from .free_bits import FreeBitsELBO
from .posterior_samples import latent_sites, nuts_posterior, pointwise_log_likelihood, prior_draws, vi_posterior
from .schedules import KLSchedule, make_schedule
from .training import History, TrainingDiverged, fit

__all__ = [
    "FreeBitsELBO",
    "History",
    "KLSchedule",
    "LaggingState",
    "ParamSubsetOptim",
    "TrainingDiverged",
    "fit",
    "latent_sites",
    "make_schedule",
    "nuts_posterior",
    "pointwise_log_likelihood",
    "prior_draws",
    "vi_posterior",
]
