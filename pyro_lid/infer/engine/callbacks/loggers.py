"""Per-epoch records to Lightning's loggers (``fabric.log_dict``): CSV, TensorBoard, or any Fabric logger."""

from __future__ import annotations

from numbers import Number

from ..first_process import on_first_process
from .base import Callback

__all__ = ["LogMetrics", "make_loggers"]


def make_loggers(logger, log_dir) -> list:
    """Fabric loggers from ``fit``'s ``logger`` and ``log_dir``.

    ``None``: a CSV logger in ``log_dir`` when it is given, else none (no files by default);
    ``"csv"`` / ``"tensorboard"`` (needs ``log_dir``); a Lightning logger object, or a list of these.
    """
    from lightning.fabric.loggers import CSVLogger, TensorBoardLogger

    if logger is None:
        return [CSVLogger(log_dir, name="pyro_lid")] if log_dir is not None else []
    if isinstance(logger, (list, tuple)):
        return [one for item in logger for one in make_loggers(item, log_dir)]
    if isinstance(logger, str):
        if log_dir is None:
            raise ValueError(f"logger={logger!r} needs log_dir: the folder its files go to")
        if logger == "csv":
            return [CSVLogger(log_dir, name="pyro_lid")]
        if logger == "tensorboard":
            return [TensorBoardLogger(log_dir, name="pyro_lid")]
        raise ValueError(f"logger must be 'csv', 'tensorboard' or a Lightning logger, got {logger!r}")
    return [logger]


class LogMetrics(Callback):
    """Log the numbers of every epoch's record, at step ``epoch``; finalize the loggers at the end. The loggers
    write on the first process only: a failure there (a full disk) stops every process."""

    def on_epoch_recorded(self, loop, record: dict) -> None:
        metrics = {k: float(v) for k, v in record.items() if isinstance(v, Number) and k != "epoch"}

        def log():
            loop.fabric.log_dict(metrics, step=record["epoch"])

        on_first_process(loop.fabric, log, f"logging epoch {record['epoch']}")

    def teardown(self, loop) -> None:
        for logger in loop.fabric.loggers:
            logger.finalize("success")
