"""Training never loses work: checkpoints and results files are replaced whole or not at all, resume refuses
a checkpoint of another configuration or other data, and ``compare`` does not write over an earlier run.

Each test here was seen to fail with the mechanism it names switched off (see ``docs/reliability.rst``).
"""

import inspect
import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import pyro_lid.experiments.image_comparison as harness
from pyro_lid.cli import main
from pyro_lid.infer import History, fit
from pyro_lid.models import VAE

REPO = Path(__file__).resolve().parents[1]
SMALL = {"hidden_dims": (8,)}


def binary(n=64, d=12, seed=0):
    return torch.bernoulli(torch.full((n, d), 0.3), generator=torch.Generator().manual_seed(seed))


def half_then(error_or_stall):
    """A ``torch.save`` that writes the first half of the real bytes to its target, then raises ``error_or_stall``
    (or, given a callable, calls it: a writer that stalls half way and is killed there)."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        target = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f  # noqa: SIM115 - left open: a crash
        target.write(data[: len(data) // 2])
        target.flush()
        if callable(error_or_stall):
            error_or_stall()
        raise error_or_stall

    return save


def _run_cli(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as exited:
        status = exited.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ------------------------------------------------------------------ 1. a checkpoint cannot be lost
_KILLED_CHILD = r"""
import io, os, sys, time, torch, pyro
from pyro_lid.infer import fit
from pyro_lid.models import VAE

SMALL = {SMALL}
{binary}
{half_then}
pyro.set_rng_seed(0)
model = VAE(12, 2, **SMALL)
fit(model, binary(), epochs=1, batch_size=32, checkpoint=sys.argv[1], progress=False)

def stall():
    print("half written", flush=True)
    time.sleep(120)  # killed here, in the middle of writing the second checkpoint

torch.save = half_then(stall)
fit(model, binary(), epochs=2, batch_size=32, checkpoint=sys.argv[1], resume=True, progress=False)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_checkpoint_survives_a_process_killed_while_writing_the_next(tmp_path):
    path = tmp_path / "run.pt"
    sources = {"SMALL": SMALL, "binary": inspect.getsource(binary), "half_then": inspect.getsource(half_then)}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD.format(**sources), str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    watchdog = threading.Timer(60, child.kill)
    watchdog.start()
    try:
        line = child.stdout.readline()
        assert line == "half written\n", child.communicate()[1]
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        watchdog.cancel()
        child.kill()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    # the checkpoint's path still holds epoch 1, whole; the half-written bytes are elsewhere
    state = torch.load(path, weights_only=False)
    assert state["epoch"] == 1
    partial = [p for p in tmp_path.iterdir() if p != path]
    assert partial and all(p.stat().st_size > 0 for p in partial), "the kill did not land during a write"
    # and training goes on from it; the next complete write clears the killed write's leftover
    model = VAE(12, 2, **SMALL)
    history = fit(model, binary(), epochs=2, batch_size=32, checkpoint=path, resume=True, progress=False)
    assert len(history) == 2 and history.records[0] == state["history"][0]
    assert list(tmp_path.iterdir()) == [path]


def test_a_write_that_fails_half_way_keeps_the_previous_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    fit(VAE(12, 2, **SMALL), binary(), epochs=1, batch_size=32, checkpoint=path, progress=False)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", half_then(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        fit(VAE(12, 2, **SMALL), binary(), epochs=2, batch_size=32, checkpoint=path, resume=True, progress=False)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]
    assert torch.load(path, weights_only=False)["epoch"] == 1


def _fake_training(monkeypatch):
    """The harness without training or evaluation: every method 'trains' one epoch in no time."""

    def fake_fit(model, train, val, **kwargs):
        history = History()
        history.records = [{"epoch": 1, "train_loss": 1.0, "seconds": 1.0, "grad_evals": 2, "val_loss": 1.5}]
        return history

    def fake_report(*args, **kwargs):
        return {
            "au_fraction": 0.5,
            "kl": 1.0,
            "mi": 0.5,
            "mi_minibatch": 0.4,
            "ll": -10.0,
            "mi_per_dim": None,
            "kl_per_dim": None,
        }

    monkeypatch.setattr(harness, "fit", fake_fit)
    monkeypatch.setattr(harness, "collapse_report", fake_report)
    monkeypatch.setattr(harness, "write_figures", lambda *args: None)


SIZES = dict(num_train=50, num_test=20, epochs=1, latent_dim=2, hidden=8, icnn_hidden=8, num_samples=2, progress=False)


@pytest.mark.parametrize("failing", ["results.json", "history_beta_vae.json"])
def test_results_files_are_replaced_whole_or_not_at_all(failing, tmp_path, monkeypatch):
    _fake_training(monkeypatch)
    harness.run_image_comparison("synthetic", models=("vae",), output_dir=tmp_path, **SIZES)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"results.json", ".results.json.lock", "history_vae.json"}  # the lock: see runs.py
    real_replace = os.replace

    def dies_before_commit(src, dst, *args, **kwargs):  # the process is gone before the new file is in place
        if Path(dst).name == failing:
            raise OSError(5, "Input/output error")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", dies_before_commit)
    with pytest.raises(OSError, match="Input/output error"):
        harness.run_image_comparison("synthetic", models=("vae", "beta_vae"), output_dir=tmp_path, resume=True, **SIZES)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # no half file, no temporary file; the row of beta_vae is not committed (its history, if written, is whole)
    assert set(after) - {"history_beta_vae.json"} == set(before)
    assert {k: after[k] for k in before} == before
    assert [r["model"] for r in json.loads(after["results.json"])["rows"]] == ["vae"]
    if "history_beta_vae.json" in after:
        assert json.loads(after["history_beta_vae.json"])[0]["epoch"] == 1


# ------------------------------------------------------------------ 2. resume checks what it resumes
def test_resume_refuses_another_configuration_or_other_data_and_names_both_values(tmp_path):
    train, val = binary(100), binary(32, seed=1)  # 100 rows: the fingerprint hashes 64 of them, and a checksum
    path = tmp_path / "run.pt"
    options = dict(epochs=1, batch_size=32, lr=1e-3, seed=0, checkpoint=path, progress=False)
    fit(VAE(12, 2, **SMALL), train, val, val_metrics=False, **options)
    saved = path.read_bytes()
    changed_row = train.clone()
    changed_row[37, 5] = 1 - changed_row[37, 5]  # one value, in a row that is not among the 64 sampled
    cases = [
        ({"lr": 1e-2}, {}, r"lr: 0\.001 in the checkpoint, 0\.01 in this run"),
        ({"batch_size": 16}, {}, "batch_size: 32 in the checkpoint, 16 in this run"),
        ({"seed": 1}, {}, "seed: 0 in the checkpoint, 1 in this run"),
        ({"kl_schedule": "linear"}, {}, "kl_schedule.kind: 'constant' in the checkpoint, 'linear' in this run"),
        ({"free_bits": 0.5}, {}, r"free_bits: None in the checkpoint, 0\.5 in this run"),
        ({"optimizer": "rmsprop", "clip_norm": 1.0}, {}, "optimizer: 'adam' .* 'rmsprop' .*clip_norm: None"),
        ({}, {"beta": 0.5}, r"model.beta: 1\.0 in the checkpoint, 0\.5 in this run"),
        ({}, {"hidden_dims": (9,)}, "model.parameters: "),
        ({"train": train[:48]}, {}, r"train_data.shape: \(100, 12\) in the checkpoint, \(48, 12\) in this run"),
        ({"train": changed_row}, {}, "train_data.sha256: '[0-9a-f]+' in the checkpoint, '[0-9a-f]+' in this run"),
        ({"val": val.flip(0)}, {}, "val_data.sha256: "),
        ({"val": None}, {}, r"val_data: \{.*\} in the checkpoint, None in this run"),
    ]
    for changes, model_changes, message in cases:
        changes = dict(changes)
        data = changes.pop("train", train), changes.pop("val", val)
        model = VAE(12, 2, **{**SMALL, **model_changes})
        with pytest.raises(ValueError, match=message) as refused:
            fit(model, *data, resume=True, val_metrics=False, **{**options, **changes, "epochs": 2})
        text = str(refused.value)
        assert str(path) in text and "delete it to start afresh, or pass another checkpoint path" in text, text
        assert path.read_bytes() == saved, changes
    # the same options and data, trained longer (epochs and early stopping are not part of the configuration)
    history = fit(VAE(12, 2, **SMALL), train, val, resume=True, val_metrics=False, **{**options, "epochs": 2})
    assert len(history) == 2


def test_an_early_stopped_run_resumed_with_its_patience_trains_no_further_epoch_and_a_larger_one_goes_on(tmp_path):
    train, val = binary(100), binary(32, seed=1)
    path = tmp_path / "run.pt"
    options = dict(epochs=4, batch_size=32, seed=0, checkpoint=path, progress=False, val_metrics=False)
    model = VAE(12, 2, **SMALL)
    first = fit(model, train, val, early_stopping_patience=0, **options)  # stops after its first validation
    assert first.stopped_early and len(first) == 1
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    again = fit(model, train, val, early_stopping_patience=0, resume=True, **options)
    assert again.stopped_early and len(again) == 1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in trained.items())  # no step taken
    longer = fit(model, train, val, early_stopping_patience=None, resume=True, **options)  # patience may change
    assert not longer.stopped_early and len(longer) == 4


def test_a_checkpoint_past_the_epochs_asked_for_is_refused_naming_its_place(tmp_path):
    from .test_mid_epoch_checkpoints import Interrupt

    train = binary(100)
    path = tmp_path / "run.pt"
    options = dict(batch_size=20, seed=0, checkpoint=path, progress=False)
    fit(VAE(12, 2, **SMALL), train, epochs=3, **options)
    with pytest.raises(ValueError, match=r"is at the end of epoch 3, past epochs=2: pass epochs >= 3 to go on"):
        fit(VAE(12, 2, **SMALL), train, epochs=2, resume=True, **options)
    assert len(fit(VAE(12, 2, **SMALL), train, epochs=3, resume=True, **options)) == 3  # finished: nothing to do
    with pytest.raises(KeyboardInterrupt):  # stopped in epoch 2 (5 steps an epoch), its newest checkpoint at step 2
        fit(VAE(12, 2, **SMALL), train, epochs=3, checkpoint_every_n_steps=1, callbacks=[Interrupt(1, 2)],
            **{**options, "checkpoint": tmp_path / "mid.pt"})  # fmt: skip
    with pytest.raises(ValueError, match=r"is at epoch 2, step 2 of 5, past epochs=1: pass epochs >= 2"):
        fit(VAE(12, 2, **SMALL), train, epochs=1, resume=True, **{**options, "checkpoint": tmp_path / "mid.pt"})


def test_resume_refuses_another_precision_or_strategy_setting_that_a_name_alone_would_hide(tmp_path):
    from pyro_lid.infer.engine.strategies import Lagging

    train, val = binary(100), binary(32, seed=1)
    options = dict(epochs=1, batch_size=32, progress=False, val_metrics=False)
    fit(VAE(12, 2, **SMALL), train, val, checkpoint=tmp_path / "p.pt", **options)
    with pytest.raises(ValueError, match=r"precision: \(absent\) in the checkpoint, '64-true' in this run"):
        fit(VAE(12, 2, **SMALL), train, val, checkpoint=tmp_path / "p.pt", resume=True, precision="64-true",
            **{**options, "epochs": 2})  # fmt: skip
    assert len(fit(VAE(12, 2, **SMALL), train, val, checkpoint=tmp_path / "p.pt", resume=True, precision="32-true",
                   **{**options, "epochs": 2})) == 2  # fmt: skip  # the default, named
    path, options = tmp_path / "lagging.pt", {**options, "val_metrics": True}  # Lagging reads the validation MI
    fit(VAE(12, 2, **SMALL), train, val, checkpoint=path, strategy=Lagging(max_inner_steps=3), **options)
    for other in (Lagging(), "lagging"):
        with pytest.raises(ValueError, match=r"strategy_settings: \{'max_inner_steps': 3\} in the checkpoint, "):
            fit(VAE(12, 2, **SMALL), train, val, checkpoint=path, resume=True, strategy=other,
                **{**options, "epochs": 2})  # fmt: skip
    history = fit(VAE(12, 2, **SMALL), train, val, checkpoint=path, resume=True, strategy=Lagging(max_inner_steps=3),
                  **{**options, "epochs": 2})  # fmt: skip
    assert len(history) == 2


def test_resume_refuses_a_checkpoint_without_a_configuration(tmp_path):
    path = tmp_path / "old.pt"
    fit(VAE(12, 2, **SMALL), binary(), epochs=1, batch_size=32, checkpoint=path, progress=False)
    state = torch.load(path, weights_only=False)
    state.pop("config", None)  # as written before checkpoints carried their configuration
    torch.save(state, path)
    with pytest.raises(ValueError, match="without its training configuration") as refused:
        fit(VAE(12, 2, **SMALL), binary(), epochs=2, batch_size=32, checkpoint=path, resume=True, progress=False)
    assert str(path) in str(refused.value) and "delete it to start afresh" in str(refused.value)


def _corrupt(kind, path):
    whole = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(whole[: len(whole) // 2])
    elif kind == "not a checkpoint":
        path.write_text("results, not a checkpoint\n")
    elif kind == "not a dict":
        torch.save(torch.zeros(3), path)
    elif kind == "missing keys":
        torch.save({"model": {}, "epoch": 1}, path)


@pytest.mark.parametrize("kind", ["empty", "truncated", "not a checkpoint", "not a dict", "missing keys"])
def test_a_corrupt_truncated_or_empty_checkpoint_gives_one_clear_error(kind, tmp_path):
    path = tmp_path / "run.pt"
    fit(VAE(12, 2, **SMALL), binary(), epochs=1, batch_size=32, checkpoint=path, progress=False)
    _corrupt(kind, path)
    with pytest.raises(ValueError) as refused:
        fit(VAE(12, 2, **SMALL), binary(), epochs=2, batch_size=32, checkpoint=path, resume=True, progress=False)
    text = str(refused.value)
    assert f"the checkpoint {path}: " in text, text
    assert "delete it to start afresh, or pass another checkpoint path" in text and "\n" not in text, text


def test_data_fingerprint_sees_any_change_and_is_cheap_for_a_large_data_set():
    import time

    from pyro_lid.infer.checkpoints import data_fingerprint

    x = torch.rand(60000, 784, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    fingerprint = data_fingerprint(x)
    assert time.perf_counter() - started < 1.0
    assert fingerprint == data_fingerprint(x.clone())
    assert fingerprint["shape"] == (60000, 784) and fingerprint["dtype"] == "float32"
    y = x.clone()
    y[12345, 678] += 1e-3  # one value in a row between the sampled ones
    assert data_fingerprint(y)["sha256"] != fingerprint["sha256"]
    assert data_fingerprint(x[:, :-1])["shape"] == (60000, 783)
    assert data_fingerprint(x.double())["dtype"] == "float64"
    assert (
        data_fingerprint(x[torch.cat([torch.tensor([1, 0]), torch.arange(2, 60000)])])["sha256"]
        != fingerprint["sha256"]
    )
    ones = torch.ones(3, 5)
    assert data_fingerprint(ones.bool())["sha256"] != data_fingerprint(ones)["sha256"]


# ------------------------------------------------------------------ 3. compare does not mix or overwrite runs
def test_compare_resume_with_another_lr_or_data_is_refused_by_a_half_trained_checkpoint(tmp_path, monkeypatch, capsys):
    import pyro_lid.infer.training as training

    class Killed(Exception):
        pass

    calls = []
    real_validate = training._validate

    def killed_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Killed  # the run dies in its second epoch: one checkpoint, no results.json
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(training, "_validate", killed_in_epoch_two)
    argv = ["compare", "--dataset", "synthetic", "--smoke-test", "--models", "vae", "--output-dir", str(tmp_path)]
    with pytest.raises(Killed):
        main(argv)
    monkeypatch.undo()
    checkpoint = tmp_path / "checkpoint_vae.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_vae.pt"]
    saved = checkpoint.read_bytes()
    for extra, message in [
        (["--lr", "0.01"], r"lr: 0.001 in the checkpoint, 0.01 in this run"),
        (["--num-train", "100"], r"train_data.shape: (300, 64) in the checkpoint, (100, 64) in this run"),
        (["--hidden", "16"], "model.parameters: "),
    ]:
        status, _, err = _run_cli([*argv, "--resume", *extra], capsys)
        last = err.splitlines()[-1]  # after the progress lines of the data and model set-up, if any
        assert status == 2 and err.endswith(last + "\n"), extra
        assert last.startswith(f"pyro-lid compare: error: cannot resume from the checkpoint {checkpoint}"), err
        assert message in last, err
        assert checkpoint.read_bytes() == saved
    # with the options it was trained with, it goes on from epoch 1 and finishes
    status, out, _ = _run_cli([*argv, "--resume"], capsys)
    assert status == 0, out
    assert len(json.loads((tmp_path / "history_vae.json").read_text())) == 2


def test_a_finished_row_is_not_resumed_on_other_data_under_the_same_options(tmp_path, monkeypatch):
    """The options do not pin the files down (``--root``, ``PYRO_LID_YAHOO``, a corpus path): ``results.json``
    records each split's fingerprint, and a resumed comparison or a report that rebuilds the corpus on other
    files is refused, naming the split; a file from before the fingerprints is resumed with a warning."""
    import warnings

    import pyro_lid.experiments.text_comparison as text

    from .helpers import write_idx

    # images: a root of MNIST files, then the same options on a root whose test images differ
    root, g = tmp_path / "mnist", torch.Generator().manual_seed(0)
    root.mkdir()
    for split, n in (("train", 1100), ("t10k", 20)):
        write_idx(root / f"{split}-images-idx3-ubyte.gz", torch.randint(0, 256, (n, 28, 28), generator=g))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", torch.arange(n) % 10)
    options = dict(dataset="mnist", root=str(root), models=("vae",), num_train=100, num_test=20, epochs=1,
                   latent_dim=2, hidden=16, icnn_hidden=8, num_samples=2, progress=False)  # fmt: skip
    harness.run_image_comparison(output_dir=tmp_path / "images", **options)
    saved = json.loads((tmp_path / "images" / "results.json").read_text())
    assert set(saved["data"]) == {"train", "valid", "test"} and saved["data"]["test"]["shape"] == [20, 784]
    write_idx(root / "t10k-images-idx3-ubyte.gz", torch.randint(0, 256, (20, 28, 28), generator=g))
    with pytest.raises(ValueError, match=r"its rows were measured on other test data than this run's"):
        harness.run_image_comparison(output_dir=tmp_path / "images", resume=True, **options)

    # text: a corpus folder whose test sentences change (same words, same count)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [" ".join(["a", "b", "c", "d"][i % 4 :] + ["e"] * (i % 3)) for i in range(40)]
    for name, part in (("train", lines[:24]), ("valid", lines[24:32]), ("test", lines[32:])):
        (corpus / f"{name}.txt").write_text("\n".join(part) + "\n")
    sizes = dict(models=("lstm_vae",), language_model=False, epochs=1, latent_dim=2, embed_dim=8, hidden_dim=8,
                 num_samples=2, batch_size=8, progress=False)  # fmt: skip
    out = tmp_path / "text"
    text.run_text_comparison(str(corpus), output_dir=out, **sizes)
    results = json.loads((out / "results.json").read_text())
    (corpus / "test.txt").write_text("\n".join(reversed(lines[32:])) + "\n")
    with pytest.raises(ValueError, match=r"its rows were measured on other test data"):
        text.run_text_comparison(str(corpus), output_dir=out, resume=True, **sizes)
    with pytest.raises(ValueError, match=r"differs from the one its table was measured on \(test split\)"):
        text.head_information_rows(out)
    roots = []  # report passes its --root on to what rebuilds the corpus
    monkeypatch.setattr(text, "head_information_rows", lambda directory, root=None: roots.append(root) or [])
    assert main(["report", str(out), "--head-information", "--root", str(corpus)]) == 0 and roots == [str(corpus)]
    monkeypatch.undo()

    # a results.json from before the fingerprints: its rows are reused, with a warning that says so
    del results["data"]
    (out / "results.json").write_text(json.dumps(results))
    monkeypatch.setattr(text, "fit", lambda *a, **k: pytest.fail("a finished row was trained again"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = text.run_text_comparison(str(corpus), output_dir=out, resume=True, **sizes)
    assert [r["model"] for r in rows] == ["lstm_vae"]
    assert any("predates data fingerprints: its finished rows (lstm_vae) are reused" in str(w.message) for w in caught)


def test_compare_resume_from_a_corrupt_checkpoint_is_one_line_naming_the_file(tmp_path, capsys):
    (tmp_path / "checkpoint_vae.pt").write_bytes(b"")  # e.g. a run killed while an older version saved
    argv = ["compare", "--dataset", "synthetic", "--smoke-test", "--models", "vae", "--output-dir", str(tmp_path)]
    status, _, err = _run_cli([*argv, "--resume"], capsys)
    assert status == 2 and err.count("\n") == 1, err
    assert f"{tmp_path / 'checkpoint_vae.pt'}: it is empty" in err and "delete it to start afresh" in err


def test_compare_refuses_a_non_empty_output_directory_without_resume_or_overwrite(tmp_path, monkeypatch, capsys):
    class DataLoaded(Exception):
        pass

    def no_data(*args, **kwargs):
        raise DataLoaded

    monkeypatch.setattr(harness, "_data", no_data)
    earlier = {
        "results.json": '{"protocol": {}, "rows": []}',
        "history_vae.json": "[]",
        "checkpoint_vae.pt": "weights",
        "checkpoint_lidvae.pt": "weights",
        "checkpoint_lidvae.pt.validation": "kept validation stages",
        "evaluation_vae.pt": "kept evaluation pieces",
        "notes.txt": "mine",
    }
    for name, text in earlier.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "figures").mkdir()
    argv = ["compare", "--dataset", "synthetic", "--smoke-test", "--models", "vae", "--output-dir", str(tmp_path)]
    status, _, err = _run_cli(argv, capsys)  # refused before any data are loaded
    assert status == 2 and err.count("\n") == 1, err
    assert str(tmp_path) in err and "not empty" in err and "--resume" in err and "--overwrite" in err, err
    assert {name: (tmp_path / name).read_text() for name in earlier} == earlier
    status, _, err = _run_cli([*argv, "--resume", "--overwrite"], capsys)
    assert status == 2 and "not both" in err, err
    # --overwrite deletes the earlier run's results, histories and checkpoints, and nothing else
    with pytest.raises(DataLoaded):
        main([*argv, "--overwrite"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "notes.txt"]
    # an empty directory, or one that does not exist yet, needs neither flag
    with pytest.raises(DataLoaded):
        main([*argv[:-1], str(tmp_path / "figures")])
    with pytest.raises(DataLoaded):
        main([*argv[:-1], str(tmp_path / "new")])


def test_under_torchrun_only_the_first_process_claims_the_output_dir_and_writes(tmp_path, monkeypatch):
    _fake_training(monkeypatch)
    (tmp_path / "notes.txt").write_text("an earlier run's notes")
    monkeypatch.setenv("RANK", "1")  # a second process of a torchrun launch: trains its share, writes nothing
    rows = harness.run_image_comparison("synthetic", models=("vae",), output_dir=tmp_path, **SIZES)
    assert [r["model"] for r in rows] == ["vae"] and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    monkeypatch.setenv("RANK", "0")  # the first process claims the directory (and refuses a non-empty one)
    with pytest.raises(ValueError, match="not empty"):
        harness.run_image_comparison("synthetic", models=("vae",), output_dir=tmp_path, **SIZES)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the resume of a GPU checkpoint on a machine without CUDA")
def test_a_checkpoint_written_on_a_gpu_resumes_without_cuda_with_a_warning_that_its_gpu_draws_are_not_repeated():
    from pyro_lid.infer.engine.rng import rng_state, set_rng_state

    state = {**rng_state(), "cuda": [torch.zeros(16, dtype=torch.uint8)]}  # as a GPU run writes it
    expected = torch.rand(3)  # the draw that follows the saved CPU stream
    torch.rand(100)
    with pytest.warns(UserWarning, match="its CUDA random streams cannot be restored on this machine without CUDA"):
        set_rng_state(state)
    assert torch.equal(torch.rand(3), expected)  # the CPU streams are restored


# ------------------------------------------------------------------ several runs recording into one folder
def test_runs_side_by_side_in_one_folder_keep_each_others_rows_and_refuse_other_options(tmp_path):
    """Two runs begun in one empty folder (``compare --models a & compare --models b``): each records its rows into
    ``results.json`` as it is then, so the second does not drop the first's; a third run under other options is
    refused when it records, naming the conflict, and leaves the file as it was."""
    from pyro_lid.experiments.runs import ComparisonRun, read_results

    protocol = {"dataset": "synthetic", "epochs": 2}
    first = ComparisonRun(tmp_path, protocol, resume=True)
    second = ComparisonRun(tmp_path, protocol, resume=True)
    other = ComparisonRun(tmp_path, {**protocol, "epochs": 3}, resume=True)
    first.record({"model": "vae", "ll": -1.0}, [{"by": "first"}])
    second.record({"model": "lagging", "ll": -2.0}, [])
    second.record({"model": "vae", "ll": -5.0}, [{"by": "second"}])  # the same method again: its newest row
    first.record({"model": "anneal", "ll": -3.0}, [])  # ... is not put back to the first run's
    saved = read_results(tmp_path)
    assert {r["model"]: r["ll"] for r in saved["rows"]} == {"vae": -5.0, "lagging": -2.0, "anneal": -3.0}
    assert json.loads((tmp_path / "history_vae.json").read_text()) == [{"by": "second"}]  # as its row
    with pytest.raises(ValueError, match=r"cannot record vae in .*results.json: another run has written it .*epochs"):
        other.record({"model": "vae", "ll": -4.0}, [{"by": "other"}])
    assert read_results(tmp_path) == saved  # the refused run changed nothing: not the row, not its history
    assert json.loads((tmp_path / "history_vae.json").read_text()) == [{"by": "second"}]
    # the lock stays (deleting it under a holder would let a second one in); a folder with only it is empty
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".results.json.lock").touch()
    ComparisonRun(tmp_path / "empty", protocol).record({"model": "vae", "ll": -1.0}, [])


def _record_rows(out, index, begun):
    from pyro_lid.experiments.runs import ComparisonRun

    run = ComparisonRun(out, {"dataset": "synthetic"}, resume=True)
    begun.wait(timeout=60)  # every run has begun (and read the folder) before any records
    for k in range(6):
        run.record({"model": f"m{index}_{k}", "ll": float(k)}, [])


def test_processes_recording_into_one_folder_at_once_lose_no_row(tmp_path):
    import multiprocessing

    from pyro_lid.experiments.runs import read_results

    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    begun = context.Barrier(4)
    processes = [context.Process(target=_record_rows, args=(tmp_path, i, begun)) for i in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
        if p.is_alive():
            p.kill()
    assert all(p.exitcode == 0 for p in processes)
    assert len(read_results(tmp_path)["rows"]) == 24


def test_the_figures_are_drawn_under_the_folders_lock(tmp_path, monkeypatch):
    """Two runs in one folder draw ``comparison.png`` from ``results.json`` one at a time, not into each other."""
    from filelock import FileLock, Timeout

    _fake_training(monkeypatch)
    held = []

    def drawing(rows, histories, out, unit="image"):
        try:
            FileLock(Path(out) / ".results.json.lock", timeout=0).acquire()
            held.append(False)
        except Timeout:
            held.append(True)

    monkeypatch.setattr(harness, "write_figures", drawing)
    harness.run_image_comparison("synthetic", models=("vae",), output_dir=tmp_path, **SIZES)
    assert held == [True]
