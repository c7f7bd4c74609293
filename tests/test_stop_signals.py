"""Ctrl-C or SIGTERM stop a run after the step in progress, with its checkpoint written there, and a run resumed
from it ends bit for bit where an uninterrupted run ends (:mod:`pyro_lid.infer.engine.stop_signals`).

Every test runs under a guard that takes SIGINT and SIGTERM itself and raises :class:`Unhandled`: had ``fit`` not
installed its handlers, a test fails with that error instead of killing pytest.
"""

import os
import signal
import subprocess
import sys
import threading

import pyro
import pytest
import torch

from pyro_lid.diagnostics import EvaluationCheckpoint
from pyro_lid.infer import TrainingInterrupted, fit
from pyro_lid.infer.engine.callbacks import Callback
from pyro_lid.infer.engine.stop_signals import StopSignals, resolve_stop_signals
from pyro_lid.models import VAE

from .test_mid_epoch_checkpoints import RECIPE_IDS, RECIPES, SMALL, _assert_same, _data

pytestmark = pytest.mark.skipif(not hasattr(signal, "raise_signal"), reason="needs signal.raise_signal")


class Unhandled(Exception):
    """A signal reached the handler that was in place before ``fit``."""


@pytest.fixture(autouse=True)
def guard():
    received = []

    def handler(signum, frame):
        received.append(signum)
        raise Unhandled(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield handler, received
    for sig, handler_before in previous.items():
        signal.signal(sig, handler_before)


class SendSignal(Callback):
    """Send ``sig`` to this process ``times`` times once step ``step`` of epoch ``epoch`` (both from 0) has trained
    (``step=None``: in that epoch's end, after its validation)."""

    def __init__(self, epoch: int, step: int | None, sig=signal.SIGTERM, times: int = 1):
        self.at, self.sig, self.times = (epoch, step), sig, times

    def _send(self):
        for _ in range(self.times):
            signal.raise_signal(self.sig)

    def on_train_step_end(self, loop, epoch: int, step: int, x) -> None:
        if (epoch, step) == self.at:
            self._send()

    def on_train_epoch_end(self, loop, epoch: int, record: dict) -> None:
        if self.at == (epoch, None):
            self._send()


def _no_other_interrupt(function, *args, **kwargs):
    """``function(*args, **kwargs)``, where a ``KeyboardInterrupt`` other than ``TrainingInterrupted`` fails the test
    (instead of ending the pytest session, as an uncaught one would)."""
    try:
        return function(*args, **kwargs)
    except KeyboardInterrupt as stop:
        if isinstance(stop, TrainingInterrupted):
            raise
        pytest.fail(f"KeyboardInterrupt: {stop}")


OPTIONS = dict(batch_size=20, dynamic_binarization=True, seed=4, progress=False, track_batch_kl=True)


def _models():
    pyro.set_rng_seed(0)
    initial = VAE(12, 2, **SMALL).state_dict()
    models = [VAE(12, 2, **SMALL), VAE(12, 2, **SMALL)]
    for model in models:
        model.load_state_dict(initial)
    return models


def _stopped_and_resumed(tmp_path, send, epochs=3, **options):
    """One initialization trained straight, and again stopped by ``send`` and resumed; ``(straight, its history,
    resumed, its history, the checkpoint as the stop left it, the TrainingInterrupted)``."""
    train, val = _data()
    options = {**OPTIONS, "epochs": epochs, **options}
    straight, resumed = _models()
    straight_history = fit(straight, train, val, **options)
    checkpoint = tmp_path / "run.pt"
    with pytest.raises(TrainingInterrupted) as stopped:
        fit(resumed, train, val, checkpoint=checkpoint, callbacks=[send], **options)
    saved = torch.load(checkpoint, weights_only=False)
    resumed_history = fit(resumed, train, val, checkpoint=checkpoint, resume=True, **options)
    return straight, straight_history, resumed, resumed_history, saved, stopped.value


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("strategy, options", RECIPES, ids=RECIPE_IDS)
def test_a_stop_signal_ends_the_run_after_a_step_with_its_checkpoint_and_the_resumed_run_equals_a_straight_one(
    tmp_path, guard, sig, strategy, options
):
    # 5 steps an epoch and no checkpoint between epochs asked for: the signal, sent after step index 1 of epoch
    # index 1, is seen after the next step (the hooks of the step it came in have already looked), so the stop's
    # own checkpoint is at epoch 1, step 3
    runs = _stopped_and_resumed(tmp_path, SendSignal(1, 1, sig), strategy=strategy, **options)
    saved, stop = runs[4], runs[5]
    assert (saved["epoch"], saved["step"]) == (1, 3)
    assert (stop.signal_name, stop.signal_number, stop.position) == (sig.name, int(sig), "epoch 2, step 3 of 5")
    assert stop.checkpoint == tmp_path / "run.pt"
    assert f"stopped by {sig.name} at epoch 2, step 3 of 5" in str(stop) and "resume=True" in str(stop)
    _assert_same(*runs[:4])
    assert guard[1] == []  # the handler in place before fit never saw the signal


class SignalInValidation(Callback):
    """Send SIGTERM as epoch ``epoch``'s (from 0) validation reaches its stage ``stage``; record the stages that
    epoch's validation computed."""

    def __init__(self, epoch: int, stage: str):
        self.at, self.computed = (epoch, stage), []

    def on_fit_start(self, loop) -> None:
        self.real = real = EvaluationCheckpoint.piece

        def piece(checkpoint, key, compute):
            if loop.epoch == self.at[0]:
                self.computed.append(key)
                if key == self.at[1]:
                    signal.raise_signal(signal.SIGTERM)
            return real(checkpoint, key, compute)

        EvaluationCheckpoint.piece = piece

    def teardown(self, loop) -> None:
        EvaluationCheckpoint.piece = self.real


def test_a_signal_during_validation_lets_it_finish_and_stops_after_the_epochs_checkpoint(tmp_path):
    send = SignalInValidation(0, "kl")
    straight, straight_history, resumed, resumed_history, saved, stop = _stopped_and_resumed(tmp_path, send)
    assert send.computed[0] == "val_loss" and "kl" in send.computed[:-1]  # went on after "kl"
    assert (saved["epoch"], saved["step"], len(saved["history"])) == (1, 0, 1)
    assert "val_loss" in saved["history"][0] and "mi" in saved["history"][0]
    assert stop.position == "end of epoch 1"
    _assert_same(straight, straight_history, resumed, resumed_history)


def test_a_signal_after_the_last_step_of_an_epoch_resumes_straight_into_its_validation(tmp_path):
    # sent after step index 3 of epoch index 1, seen after step index 4, the epoch's last: the checkpoint is at
    # epoch 1, step 5 of 5, and the resumed run trains no step of that epoch again
    runs = _stopped_and_resumed(tmp_path, SendSignal(1, 3))
    saved, stop = runs[4], runs[5]
    assert (saved["epoch"], saved["step"], len(saved["history"])) == (1, 5, 1)
    assert stop.position == "epoch 2, step 5 of 5"
    _assert_same(*runs[:4])


def test_without_a_checkpoint_the_stop_says_so_and_the_model_keeps_the_steps_trained(tmp_path):
    train, val = _data()
    straight, stopped = _models()
    fit(straight, train, val, epochs=1, **OPTIONS)
    with pytest.raises(TrainingInterrupted, match="no checkpoint was asked for") as caught:
        fit(stopped, train, val, epochs=2, callbacks=[SendSignal(0, 3)], **OPTIONS)
    assert caught.value.checkpoint is None and caught.value.position == "epoch 1, step 5 of 5"
    for key, value in straight.state_dict().items():  # the first epoch's five steps, nothing more
        assert torch.equal(value, stopped.state_dict()[key]), key


def test_a_second_signal_stops_at_once_without_writing_the_checkpoint(tmp_path):
    train, val = _data()
    _, model = _models()
    checkpoint = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt, match="a second SIGTERM") as caught:
        fit(model, train, val, epochs=2, checkpoint=checkpoint, callbacks=[SendSignal(0, 1, times=2)], **OPTIONS)
    assert not isinstance(caught.value, TrainingInterrupted)
    assert not checkpoint.exists()


class Counting:
    """A handler that counts the signals it gets and lets the run go on."""

    def __init__(self):
        self.calls = 0

    def __call__(self, signum, frame):
        self.calls += 1


@pytest.fixture
def usr1():
    """``usr1(handler)`` makes ``handler`` SIGUSR1's handler for the test; the one before is put back after it."""
    if not hasattr(signal, "SIGUSR1"):
        pytest.skip("needs SIGUSR1")
    previous = signal.getsignal(signal.SIGUSR1)
    yield lambda handler: signal.signal(signal.SIGUSR1, handler)
    signal.signal(signal.SIGUSR1, previous)


def _exit_instead_of_dying(sig):
    """Stands in for ``pyro_lid.cli._die_of``, which would end pytest's process by the signal."""
    raise SystemExit(128 + sig)


def test_the_handlers_before_fit_are_restored_and_a_signal_after_the_last_look_is_delivered_to_them(usr1):
    class LateSignal(Callback):  # after the loop's last look at the flag, before the handlers go
        def on_fit_end(self, loop):
            signal.raise_signal(signal.SIGUSR1)

    train, val = _data()
    counting = Counting()
    usr1(counting)
    _, model = _models()
    fit(model, train, val, epochs=1, stop_signals=["SIGUSR1"], callbacks=[LateSignal()], **OPTIONS)
    assert counting.calls == 1  # not swallowed: the handler before fit got it on the way out
    assert signal.getsignal(signal.SIGUSR1) is counting
    with pytest.raises(TrainingInterrupted, match="SIGUSR1"):
        fit(model, train, val, epochs=1, stop_signals=("usr1",), callbacks=[SendSignal(0, 0, signal.SIGUSR1)],
            **OPTIONS)  # fmt: skip
    assert counting.calls == 1  # carried out by fit: not delivered again
    assert signal.getsignal(signal.SIGUSR1) is counting


def test_a_signal_after_the_stop_was_carried_out_changes_nothing(tmp_path):
    class SignalInTeardown(Callback):  # as a second Ctrl-C during a logger's flush would
        def teardown(self, loop):
            signal.raise_signal(signal.SIGTERM)

    train, val = _data()
    _, model = _models()
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM at epoch 1, step 2"):
        callbacks = [SendSignal(0, 0), SignalInTeardown()]
        _no_other_interrupt(fit, model, train, val, epochs=2, checkpoint=tmp_path / "run.pt", callbacks=callbacks,
                            **OPTIONS)  # fmt: skip
    assert torch.load(tmp_path / "run.pt", weights_only=False)["step"] == 2


def test_a_signal_pending_as_the_run_fails_is_delivered_after_a_note_naming_the_failure(usr1, capfd):
    class LateSignalThenFailure(Callback):
        def on_fit_end(self, loop):
            signal.raise_signal(signal.SIGUSR1)
            raise RuntimeError("a logger failed here")

    train, val = _data()
    _, model = _models()
    counting = Counting()
    usr1(counting)
    with pytest.raises(RuntimeError, match="a logger failed here"):
        fit(model, train, val, epochs=1, stop_signals=["SIGUSR1"], callbacks=[LateSignalThenFailure()], **OPTIONS)
    assert counting.calls == 1
    assert "SIGUSR1 arrived as the run ended with RuntimeError: a logger failed here" in capfd.readouterr().err


def test_a_signal_the_process_ignores_stays_ignored(usr1):
    train, val = _data()
    _, model = _models()
    usr1(signal.SIG_IGN)  # as a background job's SIGINT is
    callbacks = [SendSignal(0, 0, signal.SIGUSR1)]
    try:
        history = fit(model, train, val, epochs=1, stop_signals=["SIGUSR1"], callbacks=callbacks, **OPTIONS)
    except KeyboardInterrupt as stop:  # fails the test instead of ending the pytest session
        pytest.fail(f"an ignored signal stopped the run: {stop}")
    assert len(history) == 1  # trained to the end
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN


def test_fit_outside_the_main_thread_trains_with_the_process_handling_unchanged(guard):
    handler, _ = guard
    train, val = _data()
    _, model = _models()
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(len(fit(model, train, val, epochs=1, **OPTIONS))))
    thread.start()
    thread.join(timeout=120)
    assert outcome == [1]
    assert signal.getsignal(signal.SIGTERM) is handler


def test_fit_restores_the_handlers_it_found_however_it_ends(guard):
    handler, _ = guard
    train, val = _data()
    _, model = _models()
    fit(model, train, val, epochs=1, **OPTIONS)
    assert signal.getsignal(signal.SIGTERM) is handler and signal.getsignal(signal.SIGINT) is handler
    with pytest.raises(TrainingInterrupted):
        fit(model, train, val, epochs=1, callbacks=[SendSignal(0, 0, signal.SIGINT)], **OPTIONS)
    assert signal.getsignal(signal.SIGTERM) is handler and signal.getsignal(signal.SIGINT) is handler


def test_no_stop_signals_leaves_the_process_its_own_handling(guard):
    train, val = _data()
    _, model = _models()
    with pytest.raises(Unhandled, match="SIGTERM"):
        fit(model, train, val, epochs=1, stop_signals=(), callbacks=[SendSignal(0, 0)], **OPTIONS)
    assert guard[1] == [signal.SIGTERM]


@pytest.mark.parametrize("bad", ["SIGKILL", "SIGNOPE", 3.5, True, -1, "SIGSEGV", "SIGCHLD", "SIGTSTP", "SIGPIPE"])
def test_signals_that_cannot_stop_a_run_are_refused_before_training(bad):
    train, val = _data()
    _, model = _models()
    with pytest.raises(ValueError, match="stop_signals"):
        fit(model, train, val, epochs=1, stop_signals=[bad], **OPTIONS)


def test_signal_names_numbers_and_no_signals_resolve():
    assert resolve_stop_signals(["term", "SIGINT", int(signal.SIGTERM)]) == (signal.SIGTERM, signal.SIGINT)
    assert resolve_stop_signals(None) == () == resolve_stop_signals(())
    assert not StopSignals(()).installed


def test_compare_stopped_by_sigterm_names_the_resume_and_the_resumed_run_records_the_row(tmp_path, monkeypatch, capsys):
    import json

    from pyro_lid import cli
    from pyro_lid.cli import main
    from pyro_lid.experiments import image_comparison

    real_fit, calls = image_comparison.fit, []

    def first_fit_stopped(*args, **kwargs):
        if not calls:
            kwargs["callbacks"] = [*kwargs.get("callbacks", ()), SendSignal(0, 0)]
        calls.append(kwargs)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(image_comparison, "fit", first_fit_stopped)
    monkeypatch.setattr(cli, "_die_of", _exit_instead_of_dying)  # the real one: the subprocess tests below
    argv = ["compare", "--dataset", "synthetic", "--models", "vae", "--smoke-test", "--output-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "stopped by SIGTERM at epoch 1, step 2 of" in err and "Run the same command with --resume" in err
    assert not (tmp_path / "results.json").exists()
    assert main([*argv, "--resume"]) == 0
    assert [row["model"] for row in json.loads((tmp_path / "results.json").read_text())["rows"]] == ["vae"]
    assert os.path.exists(calls[0]["checkpoint"])


_STOPPED_COMPARE = r"""
import signal, sys
from pyro_lid.cli import main
from pyro_lid.experiments import image_comparison
from pyro_lid.infer.engine.callbacks import Callback

class SendSignal(Callback):
    def on_train_step_end(self, loop, epoch, step, x):
        if (epoch, step) == (0, 0):
            signal.raise_signal(signal.{sig})

real_fit = image_comparison.fit
image_comparison.fit = lambda *a, **k: real_fit(*a, **{{**k, "callbacks": [SendSignal()]}})
main(["compare", "--dataset", "synthetic", "--models", "vae", "--smoke-test", "--output-dir", *sys.argv[1:]])
"""


def _compare_sent(sig: str, out, *flags):
    """A ``compare`` subprocess whose training sends itself ``sig`` after its first step."""
    from .test_checkpoints import REPO

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", _STOPPED_COMPARE.format(sig=sig), str(out), *flags],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip


def test_compare_stopped_by_ctrl_c_dies_of_sigint_so_that_a_shell_loop_stops_too(tmp_path):
    done = _compare_sent("SIGINT", tmp_path)
    assert done.returncode == -signal.SIGINT, done.stderr  # died of the signal (bash: 130 and the loop stops)
    assert "pyro-lid compare: training stopped by SIGINT at epoch 1, step 2 of" in done.stderr
    assert "Run the same command with --resume to go on." in done.stderr


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_compare_stop_signals_chooses_the_signals_that_stop_training(tmp_path):
    # SLURM's advance warning (--signal=USR1@120): a stop with its checkpoint, then death by that signal
    done = _compare_sent("SIGUSR1", tmp_path / "usr1", "--stop-signals", "SIGINT,SIGTERM,SIGUSR1")
    assert done.returncode == -signal.SIGUSR1, done.stderr
    assert "pyro-lid compare: training stopped by SIGUSR1 at epoch 1, step 2 of" in done.stderr
    assert (tmp_path / "usr1" / "checkpoint_vae.pt").exists()
    # "none": the process's own handling, as before stop signals existed (no stop after a step, no message)
    done = _compare_sent("SIGTERM", tmp_path / "none", "--stop-signals", "none")
    assert done.returncode == -signal.SIGTERM and "training stopped" not in done.stderr


@pytest.mark.parametrize("argv", [["compare", "--dataset", "synthetic"], ["study", "--dataset", "synthetic"]])
def test_stop_signals_that_cannot_stop_a_run_are_refused_on_the_command_line(argv, tmp_path, capsys):
    from pyro_lid.cli import main

    with pytest.raises(SystemExit) as exited:
        main([*argv, "--output-dir", str(tmp_path / "out"), "--stop-signals", "SIGINT,SIGKILL"])
    assert exited.value.code == 2
    assert "--stop-signals: stop_signals: SIGKILL cannot be caught" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_stop_signals_on_the_command_line_parse_names_and_refuse_an_empty_list():
    import argparse

    from pyro_lid.cli import _stop_signals

    assert _stop_signals("SIGINT, term,SIGUSR1") == ("SIGINT", "SIGTERM", "SIGUSR1")
    assert _stop_signals("none") == () == _stop_signals(" NONE ")
    for bad in ["", ",", " , ", "none,SIGUSR1", "SIGTSTP"]:  # an unset shell variable must not turn the stop off
        with pytest.raises(argparse.ArgumentTypeError):
            _stop_signals(bad)


def test_a_stopped_study_says_to_run_it_again_it_has_no_resume_flag(tmp_path, monkeypatch, capsys):
    from pyro_lid import cli

    def stopped_study(args):
        message = "training stopped by SIGTERM at epoch 1, step 2 of 4; the checkpoint c.pt holds it"
        raise TrainingInterrupted(message, "SIGTERM", int(signal.SIGTERM), "epoch 1, step 2 of 4", tmp_path / "c.pt")

    monkeypatch.setattr(cli, "_study", stopped_study)
    monkeypatch.setattr(cli, "_die_of", _exit_instead_of_dying)
    with pytest.raises(SystemExit):
        cli.main(["study", "--dataset", "synthetic", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "Run the same command again to go on." in err and "--resume" not in err
