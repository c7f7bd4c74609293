"""``fit``: the one-call entry point to the training engine (:mod:`pyro_lid.infer.engine`, on Lightning Fabric).

``fit`` only translates its keyword arguments into the engine's pieces: a strategy (the recipe),
callbacks (KL schedule, free bits, validation, early stopping, progress, logging, checkpoints) and a
Fabric (devices, processes, precision, loggers). Every model in :mod:`pyro_lid.models` also trains
with a plain ``SVI(model.model, model.guide, optim, Trace_ELBO())`` written by hand.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import torch

from .._checks import is_positive_number
from .checkpoints import strategy_settings, training_config
from .engine.callbacks import (
    Checkpointing,
    ClusterInitialization,
    EarlyStopping,
    FreeBits,
    KLScheduleCallback,
    LogMetrics,
    MaxBatchKL,
    ProgressLine,
    ValidationMetrics,
    make_loggers,
)
from .engine.callbacks.validation import evaluate as _validate
from .engine.checks import (
    check_bucket_lengths,
    check_checkpoint_interval,
    check_fit_arguments,
    check_sharding,
    optimizer_class,
)
from .engine.first_process import FirstProcessFailed
from .engine.history import History, TrainingDiverged
from .engine.launch import make_fabric, quiet_lightning, train_in_process
from .engine.learning_rates import resolve_lr_multipliers
from .engine.stop_signals import DEFAULT_STOP_SIGNALS, TrainingInterrupted, resolve_stop_signals
from .engine.strategies import make_strategy
from .free_bits import FreeBitsELBO
from .schedules import make_schedule

__all__ = ["fit", "FirstProcessFailed", "History", "TrainingDiverged", "TrainingInterrupted"]


def fit(
    model,
    train_data: torch.Tensor,
    val_data: torch.Tensor | None = None,
    *,
    epochs: int = 10,
    batch_size: int = 100,
    optimizer="adam",
    lr: float = 1e-3,
    lr_multipliers: Mapping[str, float] | None = None,
    clip_norm: float | None = None,
    loss=None,
    kl_schedule=None,
    free_bits: float | None = None,
    free_bits_per_point: bool = False,
    dynamic_binarization: bool = False,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    checkpoint_every_n_steps: int | None = None,
    checkpoint_every_seconds: float | None = None,
    early_stopping_patience: int | None = None,
    val_metrics: bool = True,
    strategy="standard",
    pretrain_epochs: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    accelerator: str | None = None,
    devices=1,
    num_nodes: int = 1,
    distributed=None,
    precision: str | None = None,
    logger=None,
    log_dir: str | Path | None = None,
    callbacks=(),
    track_batch_kl: bool = False,
    stop_signals=DEFAULT_STOP_SIGNALS,
    bucket_lengths=None,
) -> History:
    """Train ``model`` (with ``model.model`` / ``model.guide``) by SVI and return its :class:`History`.

    While it trains, the model has Pyro's global parameter store to itself: every other entry
    (other models, the user's ``pyro.param`` values) is set aside and put back when ``fit`` returns
    or raises (:func:`~pyro_lid.infer.param_scope.set_aside_param_store`). The model's parameters
    live in the module itself, so a previous run cannot leak into this one.

    :param train_data: ``(N, D)`` training data (for ``dynamic_binarization``: intensities in [0, 1]).
    :param val_data: ``(M, D)`` validation data, already in the likelihood's form; per-epoch
        ``val_loss`` (and with ``val_metrics`` KL, AU and MI) are recorded.
    :param batch_size: the *global* mini-batch: with several processes each trains on its share of it.
    :param optimizer: ``"adam"``, ``"rmsprop"``, ``"clipped_adam"`` or a ``torch.optim.Optimizer`` class.
    :param lr: the learning rate (a finite number > 0).
    :param lr_multipliers: ``{pattern: m}``: every parameter whose name in ``model.named_parameters()`` matches
        the :mod:`fnmatch` pattern trains with ``m * lr`` (e.g. ``{"decoder.*.potential.*": 0.3}``); a pattern
        that matches nothing, two patterns that match one parameter, or ``m`` not > 0 are refused
        (:mod:`~pyro_lid.infer.engine.learning_rates`).
    :param clip_norm: clip each parameter's gradient norm to this value.
    :param loss: an ELBO (default ``model.default_loss()``, i.e. ``Trace_ELBO``).
    :param kl_schedule: ``None``/``"constant"``, ``"linear"``, ``"cyclical"`` or a :class:`KLSchedule`.
    :param free_bits: KL floor :math:`\\lambda` nats per dimension (:class:`FreeBitsELBO`; mixture priors: one group).
    :param free_bits_per_point: floor each data point's KL (Li et al. 2019's code) instead of the mini-batch mean.
    :param dynamic_binarization: draw ``x ~ Bernoulli(intensity)`` afresh for every mini-batch.
    :param checkpoint: file to write after every epoch (model, optimizer, RNG, history, and the training
        configuration with a fingerprint of the data). Each write is atomic: the previous checkpoint stays
        until the new one is complete (:mod:`pyro_lid.infer.checkpoints`). Resuming from a checkpoint
        written with other options, another model or other data is refused with a
        :class:`~pyro_lid.infer.checkpoints.CheckpointError` naming each difference, and so is an empty,
        truncated or corrupt one; ``epochs`` and ``early_stopping_patience`` may change (train longer).
        The validation in progress keeps its finished stages beside it, in ``<checkpoint>.validation``
        (deleted once the epoch's checkpoint is written, and by a fresh run).
    :param resume: continue from ``checkpoint`` if it exists, also from one written between two steps;
        on one process the result equals an uninterrupted run, bit for bit.
    :param checkpoint_every_n_steps: also write ``checkpoint`` after every this many steps of an epoch
        (an integer >= 1), so that an interrupted long epoch resumes where it was.
    :param checkpoint_every_seconds: also write ``checkpoint`` between two steps once this many seconds
        (a number > 0) have passed since the last write; either option may change when resuming.
    :param early_stopping_patience: stop after this many epochs without a better ``val_loss``
        (an integer >= 0; needs ``val_data``).
    :param progress: ``None`` draws a bar on a terminal and otherwise writes one line per epoch;
        ``True`` always draws bars, ``False`` is silent (see :mod:`pyro_lid._progress`).
    :param strategy: the training recipe: ``"standard"``, ``"lagging"`` for aggressive encoder training
        (He et al. 2019, :mod:`pyro_lid.infer.aggressive`; needs ``val_data`` for its MI rule), or a
        :class:`~pyro_lid.infer.engine.TrainingStrategy` instance (a new recipe is a new class).
    :param pretrain_epochs: the first this many of the ``epochs`` train an autoencoder (KL weight 0);
        then the decoder is reset to its initialization (Li et al. 2019, :mod:`pyro_lid.infer.pretraining`)
        and the KL schedule starts.
    :param device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; default: where the model's parameters are.
    :param accelerator, devices, num_nodes, precision: as in Lightning's ``Fabric`` (``precision``:
        ``"32-true"`` by default, ``"64-true"``, ``"bf16-mixed"``, ``"bf16-true"``; not ``"16-mixed"``).
    :param distributed: Lightning's ``strategy`` (renamed: ``strategy`` is the recipe here): ``"ddp"``
        (under ``torchrun`` or SLURM), ``"ddp_spawn"``/``"ddp_fork"`` (processes started by ``fit``), or
        a Lightning strategy object. Under data parallelism the global mini-batch is split between the
        processes, each scales its ELBO by the *global* ``N`` (``num_data``), and the gradients are
        averaged weighted by each process's share, so the step equals one process's step on the whole
        global batch, an unbiased estimate of the full ELBO's gradient
        (:mod:`pyro_lid.infer.engine.svi` derives it).
    :param logger: Lightning logger(s) for the per-epoch records: ``"csv"``, ``"tensorboard"``, a
        ``lightning.fabric.loggers`` object or a list; ``None``: CSV in ``log_dir`` if given, else none.
    :param callbacks: extra :class:`~pyro_lid.infer.engine.Callback` objects, run after the built-in ones
        that fill the record and before the progress line, loggers and checkpoint.
    :param track_batch_kl: record ``max_batch_kl``, each epoch's largest mini-batch mean of
        KL(q(z|x) || p(z)) after the steps (:class:`~pyro_lid.infer.engine.callbacks.MaxBatchKL`: one encoder
        pass per step, closed form, training unchanged; standard-normal prior only).
    :param stop_signals: signals (names or numbers; ``()``: none) that stop training after a finished step
        instead of killing the process: the checkpoint is written there and :class:`TrainingInterrupted` is
        raised (:mod:`~pyro_lid.infer.engine.stop_signals`); a second signal stops at once. Default
        ``("SIGINT", "SIGTERM")``: Ctrl-C, and a scheduler's preemption or time limit (add ``"SIGUSR1"`` for
        SLURM's ``--signal=USR1@120``).
    :param bucket_lengths: a length per training row (text: :func:`pyro_lid.data.sentence_lengths` of
        ``train_data``): each epoch's mini-batches then gather rows of similar length
        (:func:`pyro_lid.data.bucket_order`: shuffled, sorted by length within chunks of 50 batches, the full
        batches shuffled), so that a batch of sentences carries less padding, which the text models trim off;
        still every row once per epoch, and a fresh order each epoch. ``None``: a plain random permutation.
        Recorded in the checkpoint's configuration (a resume must bucket alike).
    :raises TrainingDiverged: when the loss becomes NaN or infinite (the last good checkpoint is kept).
    :raises TrainingInterrupted: when one of ``stop_signals`` arrived (a ``KeyboardInterrupt``).
    :raises FirstProcessFailed: on the other processes of a data-parallel run, when the first process failed in
        the work it does for all (validation, a checkpoint write); the first process raises its own error.
    """
    recipe = make_strategy(strategy, pretrain_epochs)
    train_data = check_fit_arguments(
        model, train_data, val_data, epochs=epochs, batch_size=batch_size, optimizer=optimizer, free_bits=free_bits,
        free_bits_per_point=free_bits_per_point, loss=loss, strategy=recipe, strategy_name=strategy,
        val_metrics=val_metrics, pretrain_epochs=pretrain_epochs, checkpoint=checkpoint, resume=resume,
        early_stopping_patience=early_stopping_patience, dynamic_binarization=dynamic_binarization,
    )  # fmt: skip
    if not is_positive_number(lr):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    resolve_lr_multipliers(model, lr_multipliers)  # refused here, before any training
    check_checkpoint_interval(checkpoint, checkpoint_every_n_steps, checkpoint_every_seconds)
    bucket_lengths = check_bucket_lengths(bucket_lengths, train_data.shape[0])
    stop_signals = resolve_stop_signals(stop_signals)
    config = None
    if checkpoint is not None:  # what a resumed run must share with this one (the data's fingerprints too)
        config = training_config(
            model, train_data, val_data, batch_size=batch_size,
            optimizer=optimizer if isinstance(optimizer, str) else optimizer.__name__, lr=lr, clip_norm=clip_norm,
            loss=FreeBitsELBO(free_bits, per_point=free_bits_per_point) if free_bits is not None
            else (loss or model.default_loss()),
            kl_schedule=make_schedule(kl_schedule), free_bits=free_bits, dynamic_binarization=dynamic_binarization,
            seed=seed, strategy=strategy if isinstance(strategy, str) else type(strategy).__name__,
            pretrain_epochs=pretrain_epochs, lr_multipliers=lr_multipliers,
            strategy_settings=strategy_settings(strategy), precision=precision, bucket_lengths=bucket_lengths,
        )  # fmt: skip
    loggers = make_loggers(logger, log_dir)
    with quiet_lightning(devices == 1 and num_nodes == 1):
        fabric = make_fabric(model, device=device, accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                             distributed=distributed, precision=precision, loggers=loggers)  # fmt: skip
    check_sharding(train_data.shape[0], batch_size, fabric.world_size)
    if precision is not None:  # "64-true", "bf16-true": parameters and data in that type
        model = fabric.strategy.precision.convert_module(model)
        train_data = fabric.strategy.precision.convert_input(train_data)
        val_data = fabric.strategy.precision.convert_input(val_data) if val_data is not None else None
    pieces = [KLScheduleCallback(kl_schedule)]
    if track_batch_kl:
        pieces.append(MaxBatchKL())
    if getattr(model, "cluster_init_epochs", None) is not None:  # mixture priors: before validation sees them
        pieces.append(ClusterInitialization(model.cluster_init_epochs, seed=seed))
    if free_bits is not None:
        pieces.append(FreeBits(free_bits, per_point=free_bits_per_point))
    if val_data is not None:
        pieces.append(ValidationMetrics(val_data, batch_size, val_metrics, evaluate=_validate))
    pieces += [EarlyStopping(early_stopping_patience), *callbacks, ProgressLine(progress)]
    pieces += [LogMetrics()] if loggers else []
    if checkpoint is not None:
        pieces.append(Checkpointing(checkpoint, config, checkpoint_every_n_steps, checkpoint_every_seconds))
    loop_options = dict(
        strategy=recipe, callbacks=pieces, epochs=epochs, batch_size=batch_size, seed=seed,
        elbo=loss or model.default_loss(), optimizer=optimizer_class(optimizer), optim_args={"lr": lr},
        lr_multipliers=lr_multipliers,
        clip_args={"clip_norm": clip_norm} if clip_norm is not None else None,
        dynamic_binarization=dynamic_binarization, progress=progress, autocast=str(precision).endswith("-mixed"),
        stop_signals=stop_signals, bucket_lengths=bucket_lengths,
    )  # fmt: skip
    with quiet_lightning(fabric.world_size == 1):
        history, state = fabric.launch(train_in_process, model, train_data, loop_options, checkpoint, resume, config)
    if state is not None:  # several processes trained (perhaps spawned ones): take the first one's parameters
        model.load_state_dict(torch.load(io.BytesIO(state), map_location="cpu", weights_only=False))
        model.eval()
    return history
