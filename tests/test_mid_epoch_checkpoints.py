"""Checkpoints written between two steps of an epoch (``fit(checkpoint_every_n_steps=...)``,
``checkpoint_every_seconds``): a run interrupted in the middle of an epoch and resumed from its newest
checkpoint ends bit for bit where an uninterrupted run ends, with the same history, for every strategy.
"""

import pyro
import pytest
import torch

from pyro_lid.diagnostics import EvaluationCheckpoint
from pyro_lid.diagnostics.fixed_posteriors import piece_key
from pyro_lid.infer import TrainingDiverged, fit
from pyro_lid.infer.engine.callbacks import Callback
from pyro_lid.infer.engine.callbacks.checkpoint import validation_file
from pyro_lid.models import VAE

from .helpers import exploding

SMALL = {"hidden_dims": (16,)}
TIMING = {"seconds", "tokens_per_second"}  # wall-clock fields differ between any two runs


class Interrupt(Callback):
    """Stop the run (as Ctrl-C would) once step ``step`` of epoch ``epoch`` (both from 0) has trained."""

    def __init__(self, epoch: int, step: int):
        self.at = (epoch, step)

    def on_train_step_end(self, loop, epoch: int, step: int, x) -> None:
        if (epoch, step) == self.at:
            raise KeyboardInterrupt


class InterruptValidation(Callback):
    """Stop the run after epoch ``epoch``'s (from 0) validation, before that epoch's own checkpoint is written:
    as a session that ends during a long validation would (this callback runs after the validation's)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, loop, epoch: int, record: dict) -> None:
        if epoch == self.epoch:
            assert "val_loss" in record  # the validation has run
            raise KeyboardInterrupt


class InterruptValidationStage(Callback):
    """Stop the run (as Ctrl-C would) in epoch ``epoch``'s (from 0) validation as it reaches the stage ``stage``,
    its earlier stages kept; and record, per epoch, the validation stages computed (not taken from the file)."""

    def __init__(self, epoch: int | None = None, stage: str | None = None):
        self.at, self.computed = (epoch, stage), []

    def on_fit_start(self, loop) -> None:
        self.real = real = EvaluationCheckpoint.piece

        def piece(checkpoint, key, compute):
            if (loop.epoch, key) == self.at:
                raise KeyboardInterrupt
            if key not in checkpoint.values:
                self.computed.append((loop.epoch, key))
            return real(checkpoint, key, compute)

        EvaluationCheckpoint.piece = piece

    def teardown(self, loop) -> None:
        EvaluationCheckpoint.piece = self.real


POSTERIORS = piece_key(0, 100)  # the 30 validation points' posteriors: one mini-batch


def _data():
    gen = torch.Generator().manual_seed(3)
    train = 0.1 + 0.8 * torch.rand(100, 12, generator=gen)
    val = torch.bernoulli(0.1 + 0.8 * torch.rand(30, 12, generator=gen), generator=gen)
    return train, val


def _without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def _straight_and_resumed(tmp_path, interrupt_at, epochs=3, resume_callbacks=(), **options):
    """Train one initialization straight, and again interrupted at ``interrupt_at`` (a callback, or the
    ``(epoch, step)`` after which to stop) and resumed."""
    train, val = _data()
    options = dict(batch_size=20, dynamic_binarization=True, seed=4, progress=False, track_batch_kl=True, **options)
    pyro.set_rng_seed(0)
    initial = {k: v.clone() for k, v in VAE(12, 2, **SMALL).state_dict().items()}
    straight = VAE(12, 2, **SMALL)
    straight.load_state_dict(initial)
    # the straight run writes its own checkpoints too: writing one does not change training
    straight_history = fit(straight, train, val, epochs=epochs, checkpoint=tmp_path / "straight.pt", **options)

    resumed = VAE(12, 2, **SMALL)
    resumed.load_state_dict(initial)
    checkpoint = tmp_path / "run.pt"
    interrupt = interrupt_at if isinstance(interrupt_at, Callback) else Interrupt(*interrupt_at)
    with pytest.raises(KeyboardInterrupt):
        fit(resumed, train, val, epochs=epochs, checkpoint=checkpoint, callbacks=[interrupt], **options)
    saved = torch.load(checkpoint, weights_only=False)
    torch.manual_seed(999)  # other work between the interruption and the resumption
    torch.rand(100)
    resumed_history = fit(resumed, train, val, epochs=epochs, checkpoint=checkpoint, resume=True,
                          callbacks=list(resume_callbacks), **options)  # fmt: skip
    return straight, straight_history, resumed, resumed_history, saved


#: Every recipe whose epoch start or running state a resume must not repeat or lose.
RECIPES = [("standard", {"kl_schedule": "linear"}), ("lagging", {}), ("standard", {"pretrain_epochs": 1}),
           ("standard", {"bucket_lengths": torch.arange(100) % 7})]  # fmt: skip
RECIPE_IDS = ["standard-with-kl-warmup", "lagging", "pretraining", "length-buckets"]


def _assert_same(straight, straight_history, resumed, resumed_history):
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert _without_timing(resumed_history.records) == _without_timing(straight_history.records)


@pytest.mark.parametrize("strategy, options", RECIPES, ids=RECIPE_IDS)
def test_a_run_resumed_in_the_middle_of_an_epoch_equals_an_uninterrupted_run(tmp_path, strategy, options):
    # 5 steps an epoch; checkpoints after steps 2 and 4; interrupted after step index 3 of epoch index 1
    # (the second epoch, after the pretraining's decoder reset): the newest checkpoint is epoch 1, step 2
    runs = _straight_and_resumed(tmp_path, (1, 3), strategy=strategy, checkpoint_every_n_steps=2, **options)
    saved = runs[-1]
    assert (saved["epoch"], saved["step"]) == (1, 2)
    assert saved["epoch_partial"]["grad_evals"] >= 2
    assert saved["max_batch_kl_partial"] is not None
    _assert_same(*runs[:4])


def test_a_time_interval_writes_between_steps_and_the_newest_write_is_the_last_step_trained(tmp_path):
    # a tiny interval: due after every step; the interrupting callback runs before the checkpoint's own hook,
    # so the newest checkpoint is the step before the interrupted one
    runs = _straight_and_resumed(tmp_path, (2, 2), checkpoint_every_seconds=1e-9)
    saved = runs[-1]
    assert (saved["epoch"], saved["step"]) == (2, 2)
    _assert_same(*runs[:4])


@pytest.mark.parametrize("strategy, options", RECIPES, ids=RECIPE_IDS)
def test_a_run_interrupted_during_validation_keeps_every_training_step_and_resumes_into_validation(
    tmp_path, strategy, options
):
    # an interval that is never due by the clock: only the epoch's last step writes before validation,
    # which can take long (SA-VAE refines every validation posterior); the resumed run trains no step of
    # that epoch again, goes straight to its validation, and ends bit for bit where a straight run ends
    runs = _straight_and_resumed(
        tmp_path, InterruptValidation(1), strategy=strategy, checkpoint_every_seconds=3600.0, **options
    )
    saved = runs[-1]
    assert (saved["epoch"], saved["step"]) == (1, 5)
    assert len(saved["history"]) == 1
    _assert_same(*runs[:4])


class InterruptBeforeStep(Callback):
    """Stop the run (as Ctrl-C would) as step ``step`` of epoch ``epoch`` (both from 0) is about to train."""

    def __init__(self, epoch: int, step: int):
        self.at = (epoch, step)

    def on_train_step_start(self, loop, epoch: int, step: int) -> None:
        if (epoch, step) == self.at:
            raise KeyboardInterrupt


def _optimizer_entries(state: dict) -> dict:
    return {key: sorted(value) for key, value in state.items() if key.startswith("optim")}


@pytest.mark.parametrize("strategy, options", RECIPES, ids=RECIPE_IDS)
def test_a_checkpoint_written_before_a_resumed_run_steps_keeps_the_optimizer_state_it_resumed(
    tmp_path, strategy, options
):
    """A resumed run hands its optimizer state to Pyro, which applies it at each parameter's next step: a checkpoint
    written before that step (the epoch's own, after a resume into its validation) must still hold it, or the
    next resume restarts Adam from nothing."""
    train, val = _data()
    options = dict(batch_size=20, dynamic_binarization=True, seed=4, progress=False, strategy=strategy,
                   checkpoint_every_seconds=3600.0, epochs=3, **options)  # fmt: skip
    pyro.set_rng_seed(0)
    initial = {k: v.clone() for k, v in VAE(12, 2, **SMALL).state_dict().items()}
    straight, resumed = VAE(12, 2, **SMALL), VAE(12, 2, **SMALL)
    straight.load_state_dict(initial)
    resumed.load_state_dict(initial)
    straight_history = fit(straight, train, val, checkpoint=tmp_path / "straight.pt", **options)
    checkpoint = tmp_path / "run.pt"
    # stopped in epoch 1's validation (its last step's checkpoint has the optimizers' state)...
    with pytest.raises(KeyboardInterrupt):
        fit(resumed, train, val, checkpoint=checkpoint, callbacks=[InterruptValidation(1)], **options)
    before = _optimizer_entries(torch.load(checkpoint, weights_only=False))
    assert any(before.values()), before
    # ...resumed into it, which writes epoch 1's own checkpoint before any step; stopped before epoch 2
    with pytest.raises(KeyboardInterrupt):
        fit(resumed, train, val, checkpoint=checkpoint, resume=True, callbacks=[InterruptBeforeStep(2, 0)], **options)
    saved = torch.load(checkpoint, weights_only=False)
    assert (saved["epoch"], saved["step"]) == (2, 0)  # epoch 1 done, epoch 2 not begun
    assert _optimizer_entries(saved) == before
    resumed_history = fit(resumed, train, val, checkpoint=checkpoint, resume=True, **options)
    _assert_same(straight, straight_history, resumed, resumed_history)


@pytest.mark.parametrize("interval", [{"checkpoint_every_seconds": 3600.0}, {}], ids=["last-step-checkpoint", "epochs"])
def test_a_run_stopped_in_the_middle_of_a_validation_resumes_it_from_its_kept_stages(tmp_path, interval):
    # stopped in epoch index 1's validation at its AU, after its loss, posteriors and KL were kept; the resumed run
    # takes those three from the file (with an interval, straight from the last step's checkpoint; without one, after
    # training the epoch again bit for bit), computes the rest, and ends where a straight run ends
    watch = InterruptValidationStage()
    runs = _straight_and_resumed(tmp_path, InterruptValidationStage(1, "au"), resume_callbacks=[watch], **interval)
    saved = runs[-1]
    assert (saved["epoch"], saved["step"]) == ((1, 5) if interval else (1, 0))
    assert [key for epoch, key in watch.computed if epoch == 1] == ["au", "mi"]
    assert [key for epoch, key in watch.computed if epoch == 2] == ["val_loss", POSTERIORS, "kl", "au", "mi"]
    _assert_same(*runs[:4])
    assert not validation_file(tmp_path / "run.pt").exists()  # each epoch's checkpoint holds its validation


def test_a_fresh_run_and_a_resumed_one_set_aside_kept_validation_stages_that_are_not_theirs(tmp_path, recwarn):
    train, val = _data()
    options = dict(batch_size=20, seed=4, progress=False, dynamic_binarization=True, checkpoint=tmp_path / "run.pt")
    kept = validation_file(tmp_path / "run.pt")
    with pytest.raises(KeyboardInterrupt):  # stopped in the first epoch's validation: its loss and KL kept
        fit(VAE(12, 2, **SMALL), train, val, epochs=2, callbacks=[InterruptValidationStage(0, "au")], **options)
    assert kept.exists()
    watch = InterruptValidationStage()
    fit(VAE(12, 2, **SMALL), train, val, epochs=1, callbacks=[watch], **options)  # a fresh run: not its stages
    assert [key for epoch, key in watch.computed if epoch == 0] == ["val_loss", POSTERIORS, "kl", "au", "mi"]
    assert not kept.exists()
    # a run killed after its epoch's checkpoint, before that epoch's stages were deleted: stale on resume
    EvaluationCheckpoint(kept, {"epoch": 1}).piece("val_loss", lambda: 123.0)
    watch = InterruptValidationStage()
    fit(VAE(12, 2, **SMALL), train, val, epochs=2, resume=True, callbacks=[watch], **options)
    assert [key for epoch, key in watch.computed if epoch == 1] == ["val_loss", POSTERIORS, "kl", "au", "mi"]
    assert not kept.exists()
    assert not [w for w in recwarn if "evaluated from the start" in str(w.message)]


def test_a_validation_function_without_the_checkpoint_argument_still_works():
    from pyro_lid.infer.engine.callbacks.validation import _takes_checkpoint, evaluate

    assert _takes_checkpoint(evaluate) and _takes_checkpoint(lambda *args, **kwargs: None)
    assert not _takes_checkpoint(lambda model, svi, data, batch_size, metrics: None)


def test_without_an_interval_checkpoints_are_written_only_between_epochs(tmp_path):
    runs = _straight_and_resumed(tmp_path, (1, 3))
    saved = runs[-1]
    assert (saved["epoch"], saved["step"]) == (1, 0)
    assert "epoch_partial" not in saved
    _assert_same(*runs[:4])


def test_a_checkpoint_from_before_mid_epoch_checkpoints_still_resumes(tmp_path):
    train, val = _data()
    options = dict(batch_size=20, seed=4, progress=False, dynamic_binarization=True)
    pyro.set_rng_seed(0)
    straight = VAE(12, 2, **SMALL)
    initial = {k: v.clone() for k, v in straight.state_dict().items()}
    fit(straight, train, val, epochs=2, **options)
    resumed = VAE(12, 2, **SMALL)
    resumed.load_state_dict(initial)
    checkpoint = tmp_path / "run.pt"
    fit(resumed, train, val, epochs=1, checkpoint=checkpoint, **options)
    state = torch.load(checkpoint, weights_only=False)
    del state["step"]  # the layout of earlier versions
    torch.save(state, checkpoint)
    fit(resumed, train, val, epochs=2, checkpoint=checkpoint, resume=True, **options)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_divergence_after_a_mid_epoch_checkpoint_names_that_step(tmp_path):
    Exploding = exploding(VAE, after_steps=8)  # the 9th step: epoch 2, step 4 (5 steps an epoch)

    train, _ = _data()
    checkpoint = tmp_path / "run.pt"
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 4.*\(epoch 2, step 2 of 5\)"):
        fit(Exploding(12, 2, **SMALL), train, epochs=3, batch_size=20, checkpoint=checkpoint,
            checkpoint_every_n_steps=2, dynamic_binarization=True, progress=False)  # fmt: skip
    saved = torch.load(checkpoint, weights_only=False)
    assert (saved["epoch"], saved["step"]) == (1, 2)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"checkpoint_every_n_steps": 10}, "need a checkpoint file"),
        ({"checkpoint": "c.pt", "checkpoint_every_n_steps": 0}, "integer >= 1"),
        ({"checkpoint": "c.pt", "checkpoint_every_n_steps": 2.5}, "integer >= 1"),
        ({"checkpoint": "c.pt", "checkpoint_every_seconds": -1.0}, "number > 0"),
        ({"checkpoint": "c.pt", "checkpoint_every_seconds": float("nan")}, "number > 0"),
    ],
)
def test_mid_epoch_checkpoint_options_are_refused_before_training(tmp_path, options, match):
    train, _ = _data()
    if "checkpoint" in options:
        options = {**options, "checkpoint": tmp_path / options["checkpoint"]}
    with pytest.raises(ValueError, match=match):
        fit(VAE(12, 2, **SMALL), train, epochs=1, batch_size=20, dynamic_binarization=True, progress=False, **options)
    assert not (tmp_path / "c.pt").exists()


@pytest.mark.parametrize(
    "flag, seconds",
    [([], 600.0), (["--checkpoint-minutes", "0.5"], 30.0), (["--checkpoint-minutes", "0"], None)],
    ids=["default", "half-minute", "off"],
)
@pytest.mark.parametrize(
    "module, argv",
    [
        ("image_comparison", ["--dataset", "synthetic", "--models", "vae"]),
        ("text_comparison", ["--dataset", "synthetic-text", "--models", "lstm_vae", "--no-language-model"]),
    ],
    ids=["images", "text"],
)
def test_compare_checkpoints_within_epochs_every_checkpoint_minutes(tmp_path, monkeypatch, module, argv, flag, seconds):
    import importlib

    from pyro_lid.cli import main

    harness = importlib.import_module(f"pyro_lid.experiments.{module}")
    calls, real_fit = [], harness.fit

    def watching_fit(*args, **kwargs):
        calls.append(kwargs)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(harness, "fit", watching_fit)
    assert main(["compare", *argv, "--smoke-test", "--output-dir", str(tmp_path), *flag]) == 0
    assert [c["checkpoint_every_seconds"] for c in calls] == [seconds]
    assert calls[0]["checkpoint"] is not None and calls[0]["checkpoint"].exists()


@pytest.mark.parametrize("minutes", ["-1", "nan", "inf"])
def test_compare_refuses_a_checkpoint_interval_that_is_not_a_number_of_minutes(minutes, tmp_path, capsys):
    from pyro_lid.cli import main

    argv = ["compare", "--dataset", "synthetic", "--smoke-test", "--output-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--checkpoint-minutes", minutes])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "checkpoint_minutes must be a finite number >= 0" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
