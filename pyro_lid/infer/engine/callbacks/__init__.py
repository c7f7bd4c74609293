"""Callbacks: KL schedule, largest batch KL, mixture init, free bits, validation, early stopping, checkpoints, logs."""

from .base import Callback
from .batch_kl import MaxBatchKL
from .checkpoint import Checkpointing, load_checkpoint, save_checkpoint
from .cluster_init import ClusterInitialization
from .early_stopping import EarlyStopping
from .free_bits import FreeBits
from .kl_schedule import KLScheduleCallback
from .loggers import LogMetrics, make_loggers
from .progress import ProgressLine
from .validation import ValidationMetrics, evaluate

__all__ = [
    "Callback",
    "Checkpointing",
    "ClusterInitialization",
    "EarlyStopping",
    "FreeBits",
    "KLScheduleCallback",
    "LogMetrics",
    "MaxBatchKL",
    "ProgressLine",
    "ValidationMetrics",
    "evaluate",
    "load_checkpoint",
    "make_loggers",
    "save_checkpoint",
]
