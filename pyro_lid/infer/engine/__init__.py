"""The training engine behind :func:`pyro_lid.infer.fit`, on Lightning Fabric.

- :mod:`.loop`: :class:`TrainingLoop`, epochs, mini-batches, per-process sharding, the hooks' order;
- :mod:`.svi`: :class:`FabricSVI`, Pyro's SVI step with gradients averaged across processes;
- :mod:`.strategies`: the training recipes (:class:`Standard`, :class:`Lagging`,
  :class:`AutoencoderPretraining`), objects with one interface (:class:`TrainingStrategy`);
- :mod:`.callbacks`: KL schedule, free bits, validation metrics, early stopping, checkpointing,
  progress line, Lightning loggers;
- :mod:`.launch`: the Fabric ``fit`` builds, and what each process runs.
"""

from .callbacks import (
    Callback,
    Checkpointing,
    EarlyStopping,
    FreeBits,
    KLScheduleCallback,
    LogMetrics,
    ProgressLine,
    ValidationMetrics,
    load_checkpoint,
    save_checkpoint,
)
from .history import History, TrainingDiverged
from .loop import TrainingLoop
from .strategies import AutoencoderPretraining, Lagging, Standard, TrainingStrategy, make_strategy
from .svi import FabricSVI

__all__ = [
    "AutoencoderPretraining",
    "Callback",
    "Checkpointing",
    "EarlyStopping",
    "FabricSVI",
    "FreeBits",
    "History",
    "KLScheduleCallback",
    "Lagging",
    "LogMetrics",
    "ProgressLine",
    "Standard",
    "TrainingDiverged",
    "TrainingLoop",
    "TrainingStrategy",
    "ValidationMetrics",
    "load_checkpoint",
    "make_strategy",
    "save_checkpoint",
]
