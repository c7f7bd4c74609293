"""The training engine behind :func:`pyro_lid.infer.fit`, on Lightning Fabric.

- :mod:`.loop`: :class:`TrainingLoop`, epochs, mini-batches, per-process sharding, the hooks' order;
- :mod:`.svi`: :class:`FabricSVI`, Pyro's SVI step with gradients averaged across processes;
- :mod:`.strategies`: the training recipes (:class:`Standard`, :class:`Lagging`,
  :class:`AutoencoderPretraining`), objects with one interface (:class:`TrainingStrategy`);
- :mod:`.callbacks`: KL schedule, free bits, validation metrics, early stopping, checkpointing,
  progress line, Lightning loggers;
- :mod:`.launch`: the Fabric ``fit`` builds, and what each process runs;
- :mod:`.first_process`: work done on the first process only, whose failure stops every process;
- :mod:`.stop_signals`: Ctrl-C or ``SIGTERM`` stop training after a step, with its checkpoint.
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
from .first_process import FirstProcessFailed, on_first_process
from .history import History, TrainingDiverged
from .loop import TrainingLoop
from .stop_signals import StopSignals, TrainingInterrupted
from .strategies import AutoencoderPretraining, Lagging, Standard, TrainingStrategy, make_strategy
from .svi import FabricSVI

__all__ = [
    "AutoencoderPretraining",
    "Callback",
    "Checkpointing",
    "EarlyStopping",
    "FabricSVI",
    "FirstProcessFailed",
    "FreeBits",
    "History",
    "KLScheduleCallback",
    "Lagging",
    "LogMetrics",
    "ProgressLine",
    "Standard",
    "StopSignals",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TrainingLoop",
    "TrainingStrategy",
    "ValidationMetrics",
    "load_checkpoint",
    "make_strategy",
    "on_first_process",
    "save_checkpoint",
]
