"""The training loop on Lightning Fabric: epochs, mini-batches, data sharding, and the order of the hooks.

The loop does not know any recipe or feature: what a step is belongs to the strategy
(:mod:`~pyro_lid.infer.engine.strategies`), everything around the steps to the callbacks
(:mod:`~pyro_lid.infer.engine.callbacks`). One epoch::

    strategy.on_epoch_start
    for every mini-batch of the epoch's permutation (this process's shard of it):
        callbacks.on_train_step_start        # e.g. the KL weight
        strategy.training_step               # -> loss of the global mini-batch, gradient evaluations
        callbacks.on_train_step_end(x)       # e.g. the mini-batch's KL (after the divergence check)
    callbacks.on_train_epoch_end(record)     # KL weight, validation, best loss / early stopping
    strategy.on_epoch_end(record)            # the strategy's fields and rules (Lagging's MI rule)
    history.append(record)
    callbacks.on_epoch_recorded(record)      # progress line, loggers, checkpoint

A stop signal (``SIGINT``, ``SIGTERM``: :mod:`~pyro_lid.infer.engine.stop_signals`) is looked at after every
step, before the step's hooks (which then write the checkpoint there), and after every epoch; the loop then
raises :class:`~pyro_lid.infer.engine.stop_signals.TrainingInterrupted`.

A checkpoint may also be written between two steps (``fit(checkpoint_every_n_steps=...)`` or
``checkpoint_every_seconds``): it holds the steps done in the epoch (``step``) and the epoch's running
totals (``epoch_partial``), and a run resumed from it continues with the next mini-batch of the same
permutation *without* calling ``strategy.on_epoch_start`` again (from a checkpoint written after the
epoch's last step, straight to ``on_train_epoch_end``: the validation). So whatever a strategy or
callback sets at the start of an epoch or accumulates over its steps belongs in its ``state_dict``.
"""

from __future__ import annotations

import math
import time

import pyro
import torch
from pyro.optim import PyroOptim

from ..._progress import progress_bar
from ...data.text import bucket_order
from ..aggressive import ParamSubsetOptim
from ..checkpoints import CheckpointError
from ..param_scope import set_aside_param_store
from .callbacks.base import Callback
from .history import History, TrainingDiverged
from .learning_rates import PerParameterArgs, resolve_lr_multipliers
from .rng import rng_state, set_rng_state
from .stop_signals import DEFAULT_STOP_SIGNALS, StopSignals, TrainingInterrupted
from .svi import FabricSVI, NonFiniteGradients

__all__ = ["TrainingLoop"]


class TrainingLoop:
    """Train ``model`` on ``train_data`` with ``strategy`` and ``callbacks`` on a launched ``fabric``.

    :param optimizer: a ``torch.optim.Optimizer`` class, wrapped per parameter by Pyro (``optim_args``, ``clip_args``).
    :param lr_multipliers: ``{pattern: m}``: the parameters whose names match take ``m`` times ``optim_args["lr"]``.
    :param elbo: the objective (a callback such as :class:`~.callbacks.FreeBits` may replace it in ``setup``).
    :param autocast: evaluate the ELBO under ``fabric.autocast()`` (mixed precision).
    :param stop_signals: the signals that stop training after a finished step (:class:`StopSignals`).
    :param bucket_lengths: a length per training row: each epoch's order is :func:`~pyro_lid.data.bucket_order`'s
        (batches of rows of similar length) instead of a plain permutation.
    """

    def __init__(
        self,
        fabric,
        model,
        train_data: torch.Tensor,
        *,
        strategy,
        callbacks=(),
        epochs: int,
        batch_size: int,
        elbo,
        optimizer=torch.optim.Adam,
        optim_args=None,
        lr_multipliers=None,
        clip_args=None,
        seed: int = 0,
        dynamic_binarization: bool = False,
        progress: bool | None = None,
        autocast: bool = False,
        stop_signals=DEFAULT_STOP_SIGNALS,
        bucket_lengths: torch.Tensor | None = None,
    ):
        self.fabric, self.model, self.train_data = fabric, model, train_data
        self.bucket_lengths = bucket_lengths
        self.strategy, self.callbacks = strategy, list(callbacks)
        self.epochs, self.batch_size, self.elbo, self.seed = epochs, batch_size, elbo, seed
        self.optimizer, self.optim_args, self.clip_args = optimizer, optim_args or {"lr": 1e-3}, clip_args or None
        self.lr_factors = resolve_lr_multipliers(model, lr_multipliers)
        self.dynamic_binarization, self.progress, self.autocast = dynamic_binarization, progress, autocast
        self.world_size, self.global_rank = fabric.world_size, fabric.global_rank
        self.is_global_zero = self.global_rank == 0
        self.device = fabric.device
        self.num_data = train_data.shape[0]  # the GLOBAL data size, on every process: the ELBO's scaling
        self.steps_per_epoch = math.ceil(self.num_data / batch_size)
        self.history, self.epoch, self.should_stop, self.checkpoint_path = History(), 0, False, None
        self.step = 0  # steps done in the current epoch (0 between epochs)
        self.epoch_partial = {"total": 0.0, "grad_evals": 0, "seconds": 0.0}  # its running totals
        self.last_checkpoint = None  # where the newest checkpoint stands, in words (for TrainingDiverged)
        self.stop = StopSignals(stop_signals)
        self.stopping = False  # a stop was asked for: the step's hooks write the checkpoint, then the loop stops
        self.progress_fields: dict[str, str] = {}  # what step hooks show beside the loss in the progress bar
        model.to(self.device)
        for callback in self.callbacks:
            callback.setup(self)
        strategy.setup(self)
        # only callbacks that use a per-step hook are called per step
        self._step_hooks = [c.on_train_step_start for c in self.callbacks if _overrides(c, "on_train_step_start")]
        self._step_end_hooks = [c.on_train_step_end for c in self.callbacks if _overrides(c, "on_train_step_end")]

    # ------------------------------------------------------------------ what strategies build with
    def make_optim(self, params=None) -> PyroOptim:
        """A Pyro optimizer over all parameters, or (``params``) stepping only those; each parameter's
        learning rate is ``lr`` times its multiplier (:mod:`~pyro_lid.infer.engine.learning_rates`)."""
        args = dict(self.optim_args)
        if self.lr_factors:
            args = PerParameterArgs(self.model, args, self.lr_factors)
        if params is None:
            return PyroOptim(self.optimizer, args, self.clip_args)
        return ParamSubsetOptim(self.optimizer, args, params, self.clip_args)

    def make_svi(self, optim) -> FabricSVI:
        """SVI on the model and guide with ``optim`` and the loop's ELBO; gradients averaged across processes."""
        fabric = self.fabric if (self.world_size > 1 or self.autocast) else None
        return FabricSVI(self.model.model, self.model.guide, optim, self.elbo, fabric=fabric, autocast=self.autocast)

    def gradient_evaluations(self) -> int:
        """Gradient evaluations of one ELBO step (models with inner optimization, e.g. SA-VAE, add theirs)."""
        return 1 + getattr(self.model, "extra_gradient_evaluations", 0)

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This process's contiguous part of the global mini-batch ``idx`` (all of it on one process)."""
        return idx if self.world_size == 1 else torch.tensor_split(idx, self.world_size)[self.global_rank]

    # ------------------------------------------------------------------ state
    def seed_streams(self) -> None:
        """Seed the global random streams: ``seed`` on the first process, a different stream on each other one."""
        pyro.set_rng_seed(self.seed + 1_000_003 * self.global_rank)

    def state_dict(self) -> dict:
        state = {"model": self.model.state_dict(), **self.strategy.state_dict()}
        state.update(history=self.history.records, epoch=self.epoch, step=self.step)
        if self.step:
            state["epoch_partial"] = dict(self.epoch_partial)
        for callback in self.callbacks:
            state.update(callback.state_dict())
        state["rng"] = rng_state()
        return state

    def load_state_dict(self, state: dict, source=None) -> None:
        """Resume from ``state`` (a checkpoint's contents; ``source``: its path, for messages). A checkpoint past
        ``epochs`` (a finished longer run, or one stopped inside a later epoch) is refused: no epoch could run."""
        begun = state["epoch"] + (1 if state.get("step") else 0)  # the epochs the checkpoint has trained in
        if begun > self.epochs:
            self.epoch, self.step = state["epoch"], state.get("step", 0)
            where = self.position() if self.step else f"the {self.position()}"
            raise CheckpointError(
                f"cannot resume from the checkpoint {source}: it is at {where}, past epochs={self.epochs}: pass "
                f"epochs >= {begun} to go on from it, or another checkpoint path"
            )
        self.model.load_state_dict(state["model"])
        self.strategy.load_state_dict(state)
        self.history.records, self.epoch = state["history"], state["epoch"]
        self.step = state.get("step", 0)  # checkpoints written before mid-epoch ones had no "step"
        if self.step:
            self.epoch_partial = dict(state["epoch_partial"])
        for callback in self.callbacks:
            callback.load_state_dict(state)
        set_rng_state(state["rng"])
        if self.global_rank:  # the checkpoint holds the first process's streams; the others need their own
            pyro.set_rng_seed(self.seed + 1_000_003 * self.global_rank + self.epoch + 7919 * self.step)
        self.last_checkpoint = self.position()

    def position(self) -> str:
        """Where training stands, in words: ``"end of epoch 3"`` or ``"epoch 4, step 120 of 400"``."""
        if self.step:
            return f"epoch {self.epoch + 1}, step {self.step} of {self.steps_per_epoch}"
        return f"end of epoch {self.epoch}"

    def stop_requested(self) -> bool:
        """Whether a stop signal has arrived; with several processes, on any of them (all agree: one all-reduce)."""
        local = self.stop.received is not None
        if self.world_size == 1:  # with several, always: a process whose options differ must not skip a collective
            return local
        flag = torch.tensor([1.0 if local else 0.0], device=self.device)
        return bool(self.fabric.all_reduce(flag, reduce_op="sum").item() > 0)

    def _interrupted(self) -> TrainingInterrupted:
        self.stop.acted_on()
        received = self.stop.received
        name = received.name if received is not None else "a stop signal on another process"
        at, path = self.position(), self.checkpoint_path
        if path is not None and self.last_checkpoint == at:
            kept = f"the checkpoint {path} holds it: resume=True goes on from there"
        else:
            path = None
            kept = "no checkpoint was asked for (fit(checkpoint=...)): the model holds the parameters trained so far"
        return TrainingInterrupted(
            f"training stopped by {name} at {at}; {kept}", name, received and int(received), at, path
        )

    # ------------------------------------------------------------------ the loop
    def run(self) -> History:
        restore_param_store = set_aside_param_store(self.model)
        with self.stop:  # a stop signal ends the run after a step, with its checkpoint
            try:  # however training ends (finished, diverged, interrupted): teardown hooks, the store given back
                for callback in self.callbacks:
                    callback.on_fit_start(self)
                for epoch in range(self.epoch, self.epochs):
                    if not self.should_stop:  # set before the first epoch by a resumed run that had stopped early
                        self._run_epoch(epoch)
                        if self.stop_requested():  # the epoch's checkpoint is written
                            raise self._interrupted()
                    if self.should_stop:
                        self.history.stopped_early = True
                        break
                for callback in self.callbacks:
                    callback.on_fit_end(self)
            finally:
                for callback in self.callbacks:
                    callback.teardown(self)
                restore_param_store()
        self.model.eval()
        return self.history

    def _batch(self, order: torch.Tensor, step: int) -> torch.Tensor:
        idx = self.shard(order[step * self.batch_size : (step + 1) * self.batch_size])
        x = self.train_data[idx].to(self.device)
        return torch.bernoulli(x) if self.dynamic_binarization else x

    def _order(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """The epoch's permutation of the ``n`` training rows, drawn from ``generator`` (seeded by the epoch)."""
        if self.bucket_lengths is None:
            return torch.randperm(n, generator=generator)
        return bucket_order(self.bucket_lengths, self.batch_size, generator)

    def _run_epoch(self, epoch: int) -> None:
        started = time.perf_counter()
        model, strategy, n, steps = self.model, self.strategy, self.num_data, self.steps_per_epoch
        model.train()
        first = self.step  # > 0: resumed between two steps of this epoch, whose start already ran
        if not first:
            self.epoch_partial = {"total": 0.0, "grad_evals": 0, "seconds": 0.0}
            strategy.on_epoch_start(self, epoch)
        partial = self.epoch_partial
        earlier_seconds = partial["seconds"]
        # the same permutation on every process: each takes its shard of the same global batches
        order = self._order(n, torch.Generator().manual_seed(self.seed * 100003 + epoch))
        bar = progress_bar(
            range(first, steps), self.progress if self.is_global_zero else False,
            desc=f"epoch {epoch + 1}/{self.epochs}", total=steps, initial=first,
        )  # fmt: skip
        for step in bar:
            x = self._batch(order, step)
            for hook in self._step_hooks:
                hook(self, epoch, step)
            try:
                value, evaluations = strategy.training_step(self, x)
                problem = None if math.isfinite(value) else f"loss {value}"
            except NonFiniteGradients as error:  # the step was not taken
                problem = f"{error} (the loss was finite)"
            if problem is not None:
                path, at = self.checkpoint_path, self.last_checkpoint
                where = f"the checkpoint {path} ({at})" if path is not None and at is not None else "no checkpoint"
                raise TrainingDiverged(
                    f"training diverged: {problem} at epoch {epoch + 1}, step {step + 1}; last good state is in "
                    f"{where}. Lower the learning rate or clip gradients (clip_norm)."
                )
            partial["total"] += value
            partial["grad_evals"] += evaluations
            partial["seconds"] = earlier_seconds + time.perf_counter() - started
            self.step = step + 1
            self.stopping = self.stop_requested()
            for hook in self._step_end_hooks:  # the last one may write a mid-epoch checkpoint (always if stopping)
                hook(self, epoch, step, x)
            if self.stopping:
                raise self._interrupted()
            bar.set_postfix(loss=f"{value / n:.2f}", **self.progress_fields)
        record = {
            "epoch": epoch + 1,
            "train_loss": partial["total"] / steps / n,
            "seconds": earlier_seconds + time.perf_counter() - started,
            "grad_evals": partial["grad_evals"],
        }
        self.step = 0
        for callback in self.callbacks:
            callback.on_train_epoch_end(self, epoch, record)
        self.epoch = epoch + 1
        strategy.on_epoch_end(self, record)
        self.history.records.append(record)
        for callback in self.callbacks:
            callback.on_epoch_recorded(self, record)


def _overrides(callback, hook: str) -> bool:
    return getattr(type(callback), hook) is not getattr(Callback, hook)
