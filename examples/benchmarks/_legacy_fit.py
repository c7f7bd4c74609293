"""A frozen copy of ``pyro_lid.infer.fit``'s loop before the Fabric engine, for ``engine_overhead.py`` only (the
untimed pieces, history, checks, random state and validation, are the engine's own).

One training loop over ``pyro.infer.SVI``: schedules, free bits, checkpoints, resume, early stopping.

The loop is a convenience: every model in :mod:`pyro_lid.models` also trains with a
plain ``SVI(model.model, model.guide, optim, Trace_ELBO())`` written by hand.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI
from pyro.optim import PyroOptim
from pyro.optim.clipped_adam import ClippedAdam

from pyro_lid._checks import resolve_device
from pyro_lid._progress import progress_bar, progress_line
from pyro_lid.infer.aggressive import (
    LaggingState,
    ParamSubsetOptim,
    encoder_burn_in,
    encoder_parameters,
    random_batches,
)
from pyro_lid.infer.engine.callbacks.validation import evaluate as _validate
from pyro_lid.infer.engine.checks import _with_name
from pyro_lid.infer.engine.checks import check_data as _check_data
from pyro_lid.infer.engine.history import History, TrainingDiverged
from pyro_lid.infer.engine.rng import rng_state as _rng_state
from pyro_lid.infer.engine.rng import set_rng_state as _set_rng_state
from pyro_lid.infer.free_bits import FreeBitsELBO
from pyro_lid.infer.param_scope import set_aside_param_store
from pyro_lid.infer.pretraining import initial_state, reset_decoder
from pyro_lid.infer.schedules import make_schedule

__all__ = ["fit", "History", "TrainingDiverged"]

_OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "clipped_adam": ClippedAdam}
_STRATEGIES = ("standard", "lagging")


def fit(
    model,
    train_data: torch.Tensor,
    val_data: torch.Tensor | None = None,
    *,
    epochs: int = 10,
    batch_size: int = 100,
    optimizer: str = "adam",
    lr: float = 1e-3,
    clip_norm: float | None = None,
    loss=None,
    kl_schedule=None,
    free_bits: float | None = None,
    dynamic_binarization: bool = False,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    early_stopping_patience: int | None = None,
    val_metrics: bool = True,
    strategy: str = "standard",
    pretrain_epochs: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> History:
    """Train ``model`` (with ``model.model`` / ``model.guide``) by SVI and return its :class:`History`.

    While it trains, the model has Pyro's global parameter store to itself: every other entry
    (other models, the user's ``pyro.param`` values) is set aside and put back when ``fit`` returns
    or raises (:func:`~pyro_lid.infer.param_scope.set_aside_param_store`). The model's parameters
    live in the module itself, so a previous run cannot leak into this one.

    :param train_data: ``(N, D)`` training data (for ``dynamic_binarization``: intensities in [0, 1]).
    :param val_data: ``(M, D)`` validation data, already in the likelihood's form; per-epoch
        ``val_loss`` (and with ``val_metrics`` KL, AU and MI) are recorded.
    :param optimizer: ``"adam"``, ``"rmsprop"`` or ``"clipped_adam"``.
    :param clip_norm: clip each parameter's gradient norm to this value.
    :param loss: an ELBO (default ``model.default_loss()``, i.e. ``Trace_ELBO``).
    :param kl_schedule: ``None``/``"constant"``, ``"linear"``, ``"cyclical"`` or a :class:`KLSchedule`.
    :param free_bits: KL floor :math:`\\lambda` nats per dimension (:class:`FreeBitsELBO`; mixture priors: one group).
    :param dynamic_binarization: draw ``x ~ Bernoulli(intensity)`` afresh for every mini-batch.
    :param checkpoint: file to write after every epoch (model, optimizer, RNG, history).
    :param resume: continue from ``checkpoint`` if it exists; the result equals an uninterrupted run.
    :param early_stopping_patience: stop after this many epochs without a better ``val_loss``
        (an integer >= 0; needs ``val_data``).
    :param progress: ``None`` draws a bar on a terminal and otherwise writes one line per epoch;
        ``True`` always draws bars, ``False`` is silent (see :mod:`pyro_lid._progress`).
    :param strategy: ``"standard"``, or ``"lagging"`` for aggressive encoder training
        (He et al. 2019, :mod:`pyro_lid.infer.aggressive`; needs ``val_data`` for its MI rule).
    :param pretrain_epochs: the first this many of the ``epochs`` train an autoencoder (KL weight 0);
        then the decoder is reset to its initialization (Li et al. 2019, :mod:`pyro_lid.infer.pretraining`)
        and the KL schedule starts.
    :raises TrainingDiverged: when the loss becomes NaN or infinite (the last good checkpoint is kept).
    """
    _check_data("train_data", train_data)
    if val_data is not None:
        _check_data("val_data", val_data)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZERS)}, got {optimizer!r}")
    if free_bits is not None and loss is not None:
        raise ValueError("pass either free_bits or loss, not both")
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
    if strategy == "lagging" and (val_data is None or not val_metrics):
        raise ValueError("strategy='lagging' needs val_data and val_metrics=True: its phase ends on validation MI")
    if not 0 <= pretrain_epochs < epochs:
        raise ValueError(f"pretrain_epochs must be in [0, epochs), got {pretrain_epochs} with epochs={epochs}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if early_stopping_patience is not None:
        if isinstance(early_stopping_patience, bool) or not isinstance(early_stopping_patience, int):
            raise ValueError(f"early_stopping_patience must be an integer >= 0, got {early_stopping_patience!r}")
        if early_stopping_patience < 0:
            raise ValueError(f"early_stopping_patience must be >= 0, got {early_stopping_patience}")
        if val_data is None:
            raise ValueError("early_stopping_patience needs val_data: it counts epochs without a better val_loss")
    if dynamic_binarization:
        if ((train_data < 0) | (train_data > 1)).any():
            low, high = float(train_data.min()), float(train_data.max())
            raise ValueError(
                f"dynamic_binarization needs training intensities in [0, 1]; got values in [{low:g}, {high:g}]"
            )
        if not train_data.is_floating_point():
            train_data = train_data.to(next(model.parameters()).dtype)
    # the data must be what the likelihood scores: checked here, not after an epoch of training
    check = getattr(model, "check_data", None)
    if check is not None:
        if val_data is not None:
            _with_name("val_data", check, val_data)
        if not dynamic_binarization:
            _with_name("train_data", check, train_data)
    device = resolve_device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    schedule = make_schedule(kl_schedule)
    elbo = FreeBitsELBO(free_bits) if free_bits is not None else (loss or model.default_loss())
    optim_args = {"lr": lr}
    clip_args = {"clip_norm": clip_norm} if clip_norm is not None else {}
    optim = PyroOptim(_OPTIMIZERS[optimizer], optim_args, clip_args or None)
    lagging = LaggingState() if strategy == "lagging" else None
    if lagging is not None:
        encoder = encoder_parameters(model)
        encoder_ids = {id(p) for p in encoder}
        decoder = [p for p in model.parameters() if id(p) not in encoder_ids]
        encoder_optim = ParamSubsetOptim(_OPTIMIZERS[optimizer], optim_args, encoder, clip_args or None)
        decoder_optim = ParamSubsetOptim(_OPTIMIZERS[optimizer], optim_args, decoder, clip_args or None)
        batch_rng = torch.Generator().manual_seed(seed + 7919)

    decoder_at_init = initial_state(model.decoder) if pretrain_epochs else None
    history, start_epoch, best, since_best = History(), 0, math.inf, 0
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if resume and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optim.set_state(state["optim"])
        history.records = state["history"]
        start_epoch, best, since_best = state["epoch"], state["best"], state["since_best"]
        decoder_at_init = state.get("decoder_at_init")
        _set_rng_state(state["rng"])
        if lagging is not None:
            lagging.load_state_dict(state["lagging"])
            encoder_optim.set_state(state["optim_encoder"])
            decoder_optim.set_state(state["optim_decoder"])
            batch_rng.set_state(state["batch_rng"].cpu())
    else:
        pyro.set_rng_seed(seed)
    svi = SVI(model.model, model.guide, optim, elbo)
    if lagging is not None:
        encoder_svi = SVI(model.model, model.guide, encoder_optim, elbo)
        decoder_svi = SVI(model.model, model.guide, decoder_optim, elbo)
        fresh_batch = random_batches(train_data, batch_size, batch_rng, dynamic_binarization, device)
    n = train_data.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    if val_data is not None:
        val_data = val_data.to(device)  # once, not every epoch

    restore_param_store = set_aside_param_store(model)
    try:  # however training ends (finished, diverged, interrupted): full KL weight, the store given back
        for epoch in range(start_epoch, epochs):
            started = time.perf_counter()
            model.train()
            pretraining = epoch < pretrain_epochs
            if pretrain_epochs and epoch == pretrain_epochs:
                reset_decoder(model, decoder_at_init, optim, *((encoder_optim, decoder_optim) if lagging else ()))
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
            total, grad_evals, encoder_steps = 0.0, 0, 0
            aggressive = lagging is not None and lagging.aggressive
            bar = progress_bar(range(steps_per_epoch), progress, desc=f"epoch {epoch + 1}/{epochs}")
            for step in bar:
                idx = order[step * batch_size : (step + 1) * batch_size]
                x = train_data[idx].to(device)
                if dynamic_binarization:
                    x = torch.bernoulli(x)
                model.kl_weight = 0.0 if pretraining else schedule(epoch - pretrain_epochs + step / steps_per_epoch)
                if aggressive:  # encoder first, until its loss stops improving; then one decoder step
                    inner = encoder_burn_in(encoder_svi, fresh_batch, n)
                    encoder_steps += inner
                    grad_evals += inner
                    value = decoder_svi.step(x, n)
                else:
                    value = svi.step(x, n)
                grad_evals += 1 + getattr(model, "extra_gradient_evaluations", 0)
                if not math.isfinite(value):
                    where = f"the checkpoint {checkpoint} (end of epoch {epoch})" if checkpoint else "no checkpoint"
                    raise TrainingDiverged(
                        f"training diverged: loss {value} at epoch {epoch + 1}, step {step + 1}; last good state is in "
                        f"{where}. Lower the learning rate or clip gradients (clip_norm)."
                    )
                total += value
                bar.set_postfix(loss=f"{value / n:.2f}")
            model.kl_weight = 1.0
            record = {
                "epoch": epoch + 1,
                "train_loss": total / steps_per_epoch / n,
                "kl_weight": 0.0 if pretraining else schedule(epoch + 1 - pretrain_epochs),
                "seconds": time.perf_counter() - started,
                "grad_evals": grad_evals,
            }
            if pretrain_epochs:
                record["phase"] = "autoencoder" if pretraining else "vae"
            if lagging is not None:
                record["aggressive"] = aggressive
                record["encoder_steps_per_decoder_step"] = encoder_steps / steps_per_epoch
            if val_data is not None:
                record.update(_validate(model, svi, val_data, batch_size, val_metrics))
                if lagging is not None:
                    lagging.end_of_epoch(record["mi"])
                if record["val_loss"] < best:
                    best, since_best = record["val_loss"], 0
                else:
                    since_best += 1
            history.records.append(record)
            progress_line(_describe(record), progress)  # a line per epoch, also when no bar is drawn
            if checkpoint is not None:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                state = {
                    "model": model.state_dict(),
                    "optim": optim.get_state(),
                    "history": history.records,
                    "epoch": epoch + 1,
                    "best": best,
                    "since_best": since_best,
                    "rng": _rng_state(),
                }
                if decoder_at_init is not None:
                    state["decoder_at_init"] = decoder_at_init
                if lagging is not None:
                    state.update(
                        lagging=lagging.state_dict(),
                        optim_encoder=encoder_optim.get_state(),
                        optim_decoder=decoder_optim.get_state(),
                        batch_rng=batch_rng.get_state(),
                    )
                torch.save(state, checkpoint)
            if early_stopping_patience is not None and since_best >= early_stopping_patience:
                history.stopped_early = True
                break
    finally:
        model.kl_weight = 1.0
        restore_param_store()
    model.eval()
    return history


def _describe(record):
    parts = [f"epoch {record['epoch']}: loss {record['train_loss']:.3f}"]
    for key in ("val_loss", "kl", "au", "mi"):
        if key in record:
            parts.append(f"{key} {record[key]:.3f}")
    return ", ".join(parts)
