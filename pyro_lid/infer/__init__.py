"""Inference: the training loop over SVI, KL schedules, free bits, and posterior samples for ArviZ."""

from .aggressive import LaggingState, ParamSubsetOptim
from .checkpoints import CheckpointError, atomic_save, data_fingerprint, load_checkpoint
from .free_bits import FreeBitsELBO
from .posterior_samples import latent_sites, nuts_posterior, pointwise_log_likelihood, prior_draws, vi_posterior
from .schedules import KLSchedule, make_schedule
from .training import FirstProcessFailed, History, TrainingDiverged, TrainingInterrupted, fit

__all__ = [
    "CheckpointError",
    "FirstProcessFailed",
    "FreeBitsELBO",
    "History",
    "KLSchedule",
    "LaggingState",
    "ParamSubsetOptim",
    "TrainingDiverged",
    "TrainingInterrupted",
    "atomic_save",
    "data_fingerprint",
    "fit",
    "latent_sites",
    "load_checkpoint",
    "make_schedule",
    "nuts_posterior",
    "pointwise_log_likelihood",
    "prior_draws",
    "vi_posterior",
]
