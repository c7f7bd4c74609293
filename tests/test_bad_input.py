"""Bad input gets a clear error that names the problem, before any work is done; nothing is silently accepted."""

import re

import pytest
import torch

from pyro_lid.data import images as image_data
from pyro_lid.data import load_images

from .helpers import write_idx


# ------------------------------------------------------------------ loaders
def _mnist_files(folder, num_images=7, num_labels=7):
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", torch.randint(0, 256, (num_images, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", torch.arange(num_labels) % 10)
    return folder


def test_a_root_that_does_not_exist_is_refused_not_replaced_by_the_system_copy(tmp_path, monkeypatch):
    system = _mnist_files(tmp_path / "system")
    monkeypatch.setitem(image_data.DATASETS["mnist"], "system", [str(system)])
    assert load_images("mnist", "test")[0].shape == (7, 784)  # the system copy is there...
    with pytest.raises(FileNotFoundError, match=f"root {tmp_path / 'typo'} does not exist"):
        load_images("mnist", "test", root=tmp_path / "typo")  # ...but a mistyped root is not silently replaced
    with pytest.warns(UserWarning, match=f"no mnist files in {tmp_path / 'empty'}; using the copy in {system}"):
        (tmp_path / "empty").mkdir()
        load_images("mnist", "test", root=tmp_path / "empty")


def test_labels_that_do_not_match_the_images_are_refused_with_path_and_counts(tmp_path):
    _mnist_files(tmp_path / "short", num_images=10, num_labels=5)
    with pytest.raises(ValueError, match=r"labels-idx1-ubyte.gz holds 5 labels but .*images-idx3-ubyte.gz holds 10"):
        load_images("mnist", "test", root=tmp_path / "short")
    swapped = _mnist_files(tmp_path / "swapped")
    write_idx(swapped / "t10k-labels-idx1-ubyte.gz", torch.randint(0, 256, (7, 28, 28)))  # the image file as labels
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz is not a label file: .* shape \(7, 28, 28\)"):
        load_images("mnist", "test", root=swapped)
    write_idx(swapped / "t10k-images-idx3-ubyte.gz", torch.arange(7))  # and the labels as images
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz is not an image file"):
        load_images("mnist", "test", root=swapped)


def test_damaged_idx_files_are_value_errors_that_name_the_file_and_what_is_wrong(tmp_path):
    """A damaged file is a ``ValueError`` naming it (the command line's one-line error), never numpy's "offset must
    be non-negative", gzip's ``BadGzipFile`` or an ``EOFError`` without a path."""
    import gzip

    from pyro_lid.data.images import read_idx

    good = tmp_path / "good.gz"
    write_idx(good, torch.arange(48).reshape(3, 4, 4))
    packed, raw = good.read_bytes(), gzip.decompress(good.read_bytes())
    bad_crc = bytearray(packed)
    bad_crc[-8] ^= 0xFF  # the trailer's CRC-32
    cases = {
        "short-header.gz": (gzip.compress(raw[:10]), r"truncated header: 3 dimensions need 16 header bytes, the "
                            r"file has 10"),
        "short-header": (raw[:10], "truncated header"),  # not compressed
        "plain.gz": (raw, r"is not a valid gzip file \(Not a gzipped file .*\): damaged, or not compressed despite"),
        "cut.gz": (packed[:-12], "is truncated: its gzip stream ends early"),
        "crc.gz": (bytes(bad_crc), r"is not a valid gzip file \(CRC check failed"),
        "deflate.gz": (gzip.compress(raw)[:10] + b"\xff" * 20,  # a deflate block of the invalid type 3
                       r"has damaged compressed data \(Error -3 .*invalid block type"),
    }  # fmt: skip
    assert torch.equal(read_idx(good), torch.arange(48).reshape(3, 4, 4))
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=f"^{re.escape(str(tmp_path / name))}:? .*{message}"):
            read_idx(tmp_path / name)
    (tmp_path / "folder.gz").mkdir()
    with pytest.raises(ValueError, match=f"cannot read {re.escape(str(tmp_path / 'folder.gz'))}: Is a directory"):
        read_idx(tmp_path / "folder.gz")
    with pytest.raises(FileNotFoundError):  # a missing file stays what it is
        read_idx(tmp_path / "missing.gz")


def test_a_damaged_image_file_is_one_line_from_the_command_line(tmp_path, monkeypatch, capsys):
    import pyro_lid.experiments.image_comparison as harness

    def no_training(*args, **kwargs):
        raise AssertionError("trained on a damaged file")

    monkeypatch.setattr(harness, "fit", no_training)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", torch.zeros(5, 28, 28))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", torch.zeros(5))
    damaged = tmp_path / "train-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:-12])
    status, _, err = _run_cli(["compare", "--dataset", "mnist", "--root", str(tmp_path), "--smoke-test"], capsys)
    assert status == 2 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith(f"pyro-lid compare: error: {damaged} is truncated"), err


def test_test_images_of_another_size_than_the_training_images_are_refused_before_training(tmp_path, monkeypatch):
    import pyro_lid.experiments.image_comparison as harness

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the image sizes were compared")

    monkeypatch.setattr(harness, "fit", no_training)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", torch.randint(0, 256, (1010, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", torch.zeros(1010))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", torch.randint(0, 256, (4, 5, 5)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", torch.zeros(4))
    message = (f"mnist: the test images in {tmp_path / 't10k-images-idx3-ubyte.gz'} are 5x5, the training images in "
               f"{tmp_path / 'train-images-idx3-ubyte.gz'} 28x28: a comparison needs one image size")  # fmt: skip
    with pytest.raises(ValueError, match=re.escape(message)):
        harness.run_image_comparison("mnist", tmp_path, models=("vae",), num_train=5, num_test=2, epochs=1,
                                     latent_dim=2, hidden=8, icnn_hidden=8, num_samples=2, progress=False)  # fmt: skip


# ------------------------------------------------------------------ command line
def _run_cli(argv, capsys):
    """``(exit status, stdout, stderr)`` of ``pyro_lid.cli.main(argv)``."""
    from pyro_lid.cli import main

    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def no_work(monkeypatch):
    """Make training, evaluation and the demo fail loudly: a check that passes lets them run and the test fails."""
    import pyro_lid.experiments as experiments
    import pyro_lid.experiments.classical_collapse as classical
    import pyro_lid.experiments.image_comparison as harness

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    for module, name in ((harness, "fit"), (harness, "_data"), (classical, "run_classical_collapse")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(experiments, "run_brenier_demo", refuse)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--epochs", "-1"], "--epochs: expected a positive integer, got -1"),
        (["compare", "--smoke-test", "--epochs", "-1"], "--epochs: expected a positive integer, got -1"),
        (["compare", "--num-test", "0"], "--num-test: expected a positive integer, got 0"),
        (["compare", "--lr", "0"], "--lr: expected a positive number, got 0.0"),
        (["compare", "--dataset", "synthetic", "--device", "gpu0"], "unknown device 'gpu0'"),
        (["compare", "--dataset", "synthetic", "--models", "vae,nope"], "unknown model 'nope'"),
    ],
)
def test_bad_options_exit_with_status_2_and_one_line_before_any_work(argv, message, capsys, no_work):
    status, _, err = _run_cli(argv, capsys)
    assert status == 2
    last = err.strip().splitlines()[-1]  # argparse's usage may stand above; the error is one line, no dump
    assert last.startswith("pyro-lid compare: error:") and message in last and "Traceback" not in err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_line(capsys, no_work):
    status, _, err = _run_cli(["compare", "--dataset", "synthetic", "--device", "cuda"], capsys)
    expected = "pyro-lid compare: error: device 'cuda' asked for, but CUDA is not available on this machine"
    assert status == 2 and err.strip() == expected


ROOT_MESSAGE = "--root applies to mnist, fashion-mnist, yahoo (the folder of their files); --dataset {} reads no folder"
MINUTES = "--checkpoint-minutes needs --output-dir: checkpoints are written there, and without one nothing is written"
OVERWRITE = "--overwrite needs --output-dir: without one there is nothing to overwrite"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--dataset", "synthetic", "--checkpoint-minutes", "5"], MINUTES),
        (["compare", "--dataset", "synthetic", "--checkpoint-minutes", "0"], MINUTES),
        (["compare", "--dataset", "synthetic-text", "--checkpoint-minutes", "5"], MINUTES),
        (["compare", "--dataset", "synthetic", "--overwrite"], OVERWRITE),
        (["compare", "--dataset", "synthetic-text", "--overwrite"], OVERWRITE),
        (["compare", "--dataset", "synthetic", "--root", "data"], ROOT_MESSAGE.format("synthetic")),
        (["compare", "--dataset", "synthetic-text", "--root", "data"], ROOT_MESSAGE.format("synthetic-text")),
        (["compare", "--corpus", "mine.txt", "--root", "data"],
         "--root applies to mnist, fashion-mnist, yahoo; --corpus names its own files"),
        (["study", "--dataset", "synthetic", "--root", "data", "--output-dir", "out"],
         ROOT_MESSAGE.format("synthetic")),
    ],
)  # fmt: skip
def test_options_that_would_be_silently_ignored_are_refused_naming_the_flag(argv, message, tmp_path, monkeypatch,
                                                                            capsys, no_work):  # fmt: skip
    import pyro_lid.experiments.seed_study as study
    import pyro_lid.experiments.text_comparison as text_harness

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    for module, name in ((text_harness, "fit"), (text_harness, "load_text_data"), (study, "run_seed_study")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.chdir(tmp_path)
    status, _, err = _run_cli(argv, capsys)
    assert status == 2 and err == f"pyro-lid {argv[0]}: error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_the_library_refuses_overwrite_without_an_output_dir_and_a_root_for_synthetic_data(tmp_path, monkeypatch):
    import pyro_lid.experiments.image_comparison as harness
    from pyro_lid.experiments.runs import check_run_options

    for minutes in (None, 0, 10.0):  # the comparisons' defaults, with or without an output_dir
        check_run_options(None, False, False, minutes)
    with pytest.raises(ValueError, match=r"overwrite=True \(--overwrite\) needs an output_dir \(--output-dir\)"):
        check_run_options(None, False, True)
    with pytest.raises(ValueError, match="root .* is the folder of an image data set's files; synthetic draws"):
        harness.run_image_comparison("synthetic", root=tmp_path, models=("vae",))
    seen = {}
    monkeypatch.setattr(harness, "run_image_comparison", lambda *args, **options: seen.update(options) or [])
    from pyro_lid.cli import main

    assert main(["compare", "--dataset", "synthetic", "--smoke-test"]) == 0
    assert seen["checkpoint_minutes"] == 10.0 and seen["output_dir"] is None and not seen["overwrite"]


def test_unwritable_output_paths_are_refused_before_training(tmp_path, capsys, no_work):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for argv in (
        ["compare", "--dataset", "synthetic", "--smoke-test", "--output-dir", str(blocker / "out")],
        ["classical", "--smoke-test", "--output-dir", str(blocker / "out")],
        ["report", str(tmp_path), "--figures", str(blocker / "figs")],
        ["demo", "--plot", str(blocker / "demo.png")],
    ):
        status, _, err = _run_cli(argv, capsys)
        assert status == 2, argv
        assert "cannot write to the" in err and str(blocker) in err, err
    status, _, err = _run_cli(["demo", "--plot", str(tmp_path / "demo.xyz")], capsys)
    assert status == 2 and "must end in one of" in err and ".png" in err


def test_smoke_test_sizes_yield_to_explicit_flags_and_models_accept_commas(monkeypatch, capsys):
    import pyro_lid.experiments.image_comparison as harness

    seen = {}

    def capture(dataset, root, models, **options):
        seen.update(options, models=models)
        return []

    monkeypatch.setattr(harness, "run_image_comparison", capture)
    argv = ["compare", "--dataset", "synthetic", "--smoke-test", "--epochs", "1", "--models", "vae,lidvae", "gmvae"]
    status, _, _ = _run_cli(argv, capsys)
    assert status == 0
    assert seen["models"] == ["vae", "lidvae", "gmvae"]
    assert seen["epochs"] == 1 and seen["num_train"] == 300  # explicit flag wins; other smoke sizes stay
    _run_cli(["compare", "--dataset", "synthetic", "--epochs", "3"], capsys)
    assert seen["epochs"] == 3 and seen["num_train"] == 20000 and seen["num_test"] is None


def test_help_shows_the_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # no line breaks inside words such as --smoke-test
    status, out, _ = _run_cli(["compare", "--help"], capsys)
    assert status == 0
    flat = " ".join(out.split())
    for shown in (
        "(default: 0.001)",
        "(default: 20000; 300 with --smoke-test; text: the whole training split, with or without --smoke-test)",
        "(default: fashion-mnist)",
    ):
        assert shown in flat, shown


def test_help_names_each_default_once():
    import argparse

    from pyro_lid.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command, sub in commands.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.help and action.help != argparse.SUPPRESS:
                shown = formatter._expand_help(action)
                assert len(re.findall(r"\bdefault\b", shown)) <= 1, f"{command} {action.option_strings}: {shown}"


def test_the_demo_ends_with_a_verdict(monkeypatch, capsys):
    import pyro_lid.experiments as experiments

    result = dict(ll_before=-3.6, ll_after=-3.25, ll_gaussian=-3.6, inverse_max_residual=1e-5, logdet_max_error=1e-7,
                  min_hessian_eigenvalue=0.4, alpha_floor=0.01)  # fmt: skip
    monkeypatch.setattr(experiments, "run_brenier_demo", lambda **kwargs: result)
    status, out, _ = _run_cli(["demo"], capsys)
    assert status == 0
    assert (
        out.strip()
        .splitlines()[-1]
        .startswith("verdict: the Brenier flow fits the pinwheel better than the best Gaussian by 0.350 nats per point")
    )
    monkeypatch.setattr(experiments, "run_brenier_demo", lambda **kwargs: {**result, "ll_after": -3.7})
    status, _, err = _run_cli(["demo"], capsys)
    assert status == 1 and "verdict: demo FAILED: the flow is -0.100 nats per point against the best Gaussian" in err


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("inverse_max_residual", float("nan"), "its inverse round-trip residual is nan (tolerance 1e-03)"),
        ("inverse_max_residual", 0.01, "its inverse round-trip residual is 1.00e-02 (tolerance 1e-03)"),
        ("logdet_max_error", float("nan"), "its log-determinant is nan nats off autograd's (tolerance 1e-03)"),
        ("logdet_max_error", 0.5, "its log-determinant is 5.00e-01 nats off autograd's (tolerance 1e-03)"),
    ],
)
def test_the_demo_fails_where_its_inverse_or_log_determinant_is_not_exact(key, value, message, monkeypatch, capsys):
    """Being exact is checked, not asserted: a round trip or log-determinant off by more than its tolerance, or NaN,
    fails the demo with a non-zero status and a verdict that names it; the measured values are printed."""
    import pyro_lid.experiments as experiments

    result = dict(ll_before=-3.6, ll_after=-3.25, ll_gaussian=-3.6, inverse_max_residual=3e-5, logdet_max_error=5e-7,
                  min_hessian_eigenvalue=0.4, alpha_floor=0.01)  # fmt: skip
    monkeypatch.setattr(experiments, "run_brenier_demo", lambda **kwargs: {**result, key: value})
    status, out, err = _run_cli(["demo"], capsys)
    assert status == 1 and err.strip() == f"verdict: demo FAILED: {message}"
    assert "verdict" not in out and (f"{value:.2e} (tolerance 1e-03)") in out
    monkeypatch.setattr(experiments, "run_brenier_demo", lambda **kwargs: result)
    status, out, _ = _run_cli(["demo"], capsys)
    assert status == 0 and "inverse and log-determinant are exact to 3.0e-05 and 5.0e-07 (within tolerance)" in out


def test_seconds_per_epoch_leave_the_warm_up_epoch_out():
    from pyro_lid.experiments.image_comparison import typical_epoch_seconds

    assert typical_epoch_seconds([50.0, 1.0, 3.0, 2.0]) == 2.0  # the first (warm-up) epoch does not count
    assert typical_epoch_seconds([50.0, 1.0]) == 1.0
    assert typical_epoch_seconds([4.0]) == 4.0
    with pytest.raises(ValueError, match="no epochs"):
        typical_epoch_seconds([])


def test_the_cost_ratio_does_not_depend_on_which_method_ran_first(monkeypatch):
    import pyro_lid.experiments.image_comparison as harness
    from pyro_lid.infer import fit as real_fit

    def fit_with_warm_up(model, *args, **kwargs):  # the first method pays a 10 s warm-up in its first epoch
        history = real_fit(model, *args, **kwargs)
        for i, record in enumerate(history.records):
            record["seconds"] = (10.0 if fit_with_warm_up.first and i == 0 else 0.0) + (
                1.0 if type(model).__name__ == "VAE" else 2.0
            )
        fit_with_warm_up.first = False
        return history

    monkeypatch.setattr(harness, "fit", fit_with_warm_up)
    options = dict(num_train=100, num_test=50, epochs=3, latent_dim=2, hidden=8, icnn_hidden=8, num_samples=2,
                   progress=False)  # fmt: skip
    ratios = []
    for order in (("vae", "lidvae"), ("lidvae", "vae")):
        fit_with_warm_up.first = True
        rows = {r["model"]: r for r in harness.run_image_comparison("synthetic", models=order, **options)}
        ratios.append(rows["lidvae"]["seconds_per_epoch"] / rows["vae"]["seconds_per_epoch"])
    assert ratios == [2.0, 2.0]


# ------------------------------------------------------------------ fit
def _tiny():
    from pyro_lid.models import VAE

    gen = torch.Generator().manual_seed(12345)  # not the global seed: bernoulli(u) with the same uniforms u is all 0
    x = torch.bernoulli(torch.rand(60, 6, generator=gen), generator=gen)
    assert 0.2 < x.mean() < 0.8
    return VAE(6, 2, hidden_dims=(8,)), x[:40], x[40:]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"early_stopping_patience": -1}, "early_stopping_patience must be >= 0, got -1"),
        ({"early_stopping_patience": 1.5}, "early_stopping_patience must be an integer >= 0, got 1.5"),
        ({"early_stopping_patience": 2, "val_data": None}, "early_stopping_patience needs val_data"),
        ({"device": "gpu0"}, "unknown device 'gpu0'"),
    ],
)
def test_fit_refuses_bad_options_before_training(options, message):
    from pyro_lid.infer import fit

    model, train, val = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs = {"val_data": val, "epochs": 3, "progress": False, **options}
    with pytest.raises(ValueError, match=message):
        fit(model, train, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing trained


def test_fit_writes_a_line_per_epoch_when_not_on_a_terminal(capsys):
    from pyro_lid.infer import fit

    model, train, val = _tiny()
    fit(model, train, val, epochs=2)  # progress=None and stderr is not a terminal under pytest
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 2"]
    assert all("val_loss" in line and "mi" in line for line in lines)
    fit(model, train, val, epochs=2, progress=False)
    assert capsys.readouterr().err == ""


def test_collapse_report_shows_bars_and_says_what_it_is_doing_when_not_on_a_terminal(capsys):
    from pyro_lid.diagnostics import collapse_report

    model, _, val = _tiny()
    collapse_report(model, val, num_samples=3)
    err = capsys.readouterr().err
    for stage in ("active units", "KL", "log-likelihood (3 samples)", "mutual information"):
        assert f"evaluation: {stage} on 20 points in" in err, stage
    collapse_report(model, val, num_samples=3, progress=False)
    assert "evaluation:" not in capsys.readouterr().err
    collapse_report(model, val, num_samples=3, progress=True)  # live bars during the two slow stages
    err = capsys.readouterr().err
    assert re.search(r"\rlog-likelihood \(3 samples\): +\d+%", err) and re.search(r"\rmutual information: +\d+%", err)


# ------------------------------------------------------------------ data the likelihood cannot score
def test_bernoulli_data_outside_zero_one_gets_one_clear_first_line():
    import pyro
    from pyro.infer import Trace_ELBO

    from pyro_lid.models import LIDVAE, VAE

    for model in (VAE(6, 2, hidden_dims=(8,)), LIDVAE(6, 2, hidden_dims=(8,), icnn_hidden_dims=(8,))):
        with pytest.raises(ValueError) as caught:
            Trace_ELBO().loss(model.model, model.guide, torch.full((3, 6), 0.25))
        first = str(caught.value).splitlines()[0]
        assert first == (
            "Bernoulli likelihood needs binary data; got values in [0.25, 0.25]; binarize (see `dynamic_binarization` "
            "in pyro_lid.infer.fit, or pyro_lid.data.binarize) or use likelihood='normal'"
        )
        with pytest.raises(ValueError, match=r"got values in \[0, 255\] \(0-255 intensities\? divide by 255 first\)"):
            model.posterior(torch.tensor([[0, 255, 0, 0, 0, 0]], dtype=torch.uint8))
    pyro.clear_param_store()


def test_fit_checks_validation_and_training_data_before_the_first_epoch():
    from pyro_lid.infer import fit

    model, train, val = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"^val_data: Bernoulli likelihood needs binary data; got values in \[0\.5"):
        fit(model, train, torch.full((5, 6), 0.5), epochs=2, progress=False)
    with pytest.raises(ValueError, match=r"^train_data: Bernoulli likelihood needs binary data"):
        fit(model, train * 0.5 + 0.25, val, epochs=2, progress=False)
    message = r"dynamic_binarization needs training intensities in \[0, 1\]; got values in \[0, 255\]"
    with pytest.raises(ValueError, match=message):
        fit(model, (train * 255).to(torch.uint8), val, epochs=2, dynamic_binarization=True, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # refused before any step


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.int64, torch.float64])
def test_integer_boolean_and_float64_data_are_converted_where_that_is_safe(dtype):
    import pyro
    from pyro.infer import Trace_ELBO

    from pyro_lid.diagnostics import importance_weighted_log_likelihood
    from pyro_lid.infer import fit

    model, train, val = _tiny()
    pyro.set_rng_seed(0)
    expected = Trace_ELBO().loss(model.model, model.guide, val)
    pyro.set_rng_seed(0)
    assert Trace_ELBO().loss(model.model, model.guide, val.to(dtype)) == pytest.approx(expected, rel=1e-6)
    torch.manual_seed(0)
    ll = importance_weighted_log_likelihood(model, val, num_samples=4)
    torch.manual_seed(0)
    assert torch.allclose(importance_weighted_log_likelihood(model, val.to(dtype), num_samples=4), ll)
    history = fit(model, train.to(dtype), val.to(dtype), epochs=1, progress=False)
    assert len(history) == 1 and history.records[0]["val_loss"] > 0
    if dtype != torch.float64:  # integers and booleans are fine for dynamic binarization too
        fit(model, train.to(dtype), val, epochs=1, dynamic_binarization=True, progress=False)


def test_categorical_data_must_be_class_indices():
    from pyro.infer import Trace_ELBO

    from pyro_lid.models import VAE

    model = VAE(4, 2, hidden_dims=(8,), likelihood="categorical", num_classes=3)
    x = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 0]])
    value = Trace_ELBO().loss(model.model, model.guide, x)
    assert value == pytest.approx(Trace_ELBO().loss(model.model, model.guide, x.double()), rel=0.5)  # floats ok
    for bad in (torch.tensor([[0, 1, 3, 1]]), torch.tensor([[0.0, 1.5, 2.0, 1.0]]), torch.tensor([[-1, 0, 0, 0]])):
        with pytest.raises(ValueError, match=r"Categorical likelihood needs class indices, integers in \[0, 3\)"):
            model.posterior(bad)


def test_log_joint_refuses_latents_that_do_not_match_the_data_naming_both():
    from pyro_lid.models import LIDSVAE, LIDVAE, VAE

    image = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0, 0.0]] * 2)
    text = torch.tensor([[1, 4, 5, 2], [1, 6, 2, 0]])
    for model, x in ((VAE(6, 3, hidden_dims=(8,)), image), (LIDVAE(6, 3, hidden_dims=(8,)), image),
                     (LIDSVAE(9, latent_dim=3, embed_dim=4, hidden_dim=4), text)):  # fmt: skip
        assert model.log_joint(x, torch.zeros(5, 2, 3)).shape == (5, 2)  # (..., batch, K) is fine
        name = type(model).__name__
        for z, got in ((torch.zeros(3, 3), r"\(3, 3\)"), (torch.zeros(2, 4), r"\(2, 4\)"), (torch.zeros(3), r"\(3,\)")):
            with pytest.raises(ValueError, match=rf"{name}.log_joint takes z of shape \(\.\.\., 2, 3\) .*, got {got}"):
                model.log_joint(x, z)
