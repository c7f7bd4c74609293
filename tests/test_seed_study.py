"""A study over seeds: mean ± sd computed from each seed's own results, resumable, figures, refusals."""

import inspect
import json
import statistics

import pytest

import pyro_lid.experiments.image_comparison as harness
from pyro_lid.experiments.seed_study import (
    format_seed_table,
    plot_information_per_dimension,
    plot_pareto,
    run_seed_study,
    summarize_seeds,
)
from pyro_lid.experiments.text_comparison import text_protocol

TINY = dict(dataset="synthetic", num_train=200, num_test=100, epochs=2, latent_dim=2, hidden=16, icnn_hidden=8,
            num_samples=3, progress=False)  # fmt: skip


def test_a_study_summarizes_each_seeds_own_results_and_resumes_without_retraining(tmp_path, monkeypatch):
    summary = run_seed_study(tmp_path, seeds=(0, 1), models=("vae", "lidvae_projection"), **TINY)
    assert [s["model"] for s in summary] == ["vae", "lidvae_projection"]
    rows = {seed: {r["model"]: r for r in json.loads((tmp_path / f"seed{seed}" / "results.json").read_text())["rows"]}
            for seed in (0, 1)}  # fmt: skip
    for s in summary:
        lls = [rows[seed][s["model"]]["ll"] for seed in (0, 1)]
        assert s["seeds"] == [0, 1] and s["ll"]["n"] == 2
        assert s["ll"]["mean"] == pytest.approx(statistics.fmean(lls)) and s["ll"]["sd"] == pytest.approx(
            statistics.stdev(lls)
        )
        assert lls[0] != lls[1]  # the seeds really differ
        per_dim = [rows[seed][s["model"]]["mi_per_dim"] for seed in (0, 1)]
        informative = [sum(v > 0.01 for v in dims) / 2 for dims in per_dim]
        assert s["informative"]["mean"] == pytest.approx(statistics.fmean(informative))
        assert s["min_mi_dim"]["mean"] == pytest.approx(statistics.fmean(min(d) for d in per_dim))
        seconds = [(rows[seed][s["model"]], rows[seed]["vae"]) for seed in (0, 1)]
        costs = [row["seconds_per_epoch"] / vae["seconds_per_epoch"] for row, vae in seconds]
        assert s["cost"]["mean"] == pytest.approx(statistics.fmean(costs))
    table = format_seed_table(summary)
    vae = summary[0]
    assert f"| vae | 2 | {vae['au']['mean']:.2f} ± {vae['au']['sd']:.2f} |" in table
    assert f"{vae['ll']['mean']:.1f} ± {vae['ll']['sd']:.1f} |" in table and "(n=" not in table
    # a metric that one seed did not record says on how many seeds it rests
    partial = [{**s, "informative": {**s["informative"], "n": 1, "sd": None}} for s in summary]
    assert f"| {vae['informative']['mean']:.2f} (n=1) |" in format_seed_table(partial)  # one seed: no "± sd"
    single = [{**s, "seeds": s["seeds"][:1], **{k: {**s[k], "n": 1, "sd": None} for k in ("au", "ll")}}
              for s in summary]  # fmt: skip
    assert f"| vae | 1 | {vae['au']['mean']:.2f} |" in format_seed_table(single)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished seed was trained again")

    monkeypatch.setattr(harness, "fit", no_training)
    assert run_seed_study(tmp_path, seeds=(0, 1), models=("vae", "lidvae_projection"), **TINY) == summary
    plot_pareto(tmp_path, tmp_path / "pareto.png")
    plot_information_per_dimension(tmp_path, tmp_path / "info.png")
    assert (tmp_path / "pareto.png").stat().st_size > 0 and (tmp_path / "info.png").stat().st_size > 0


def test_a_study_refuses_mixed_protocols_bad_seeds_and_empty_folders(tmp_path):
    run_seed_study(tmp_path, seeds=(0,), models=("vae",), **TINY)
    with pytest.raises(ValueError, match=r"seed0 was run under another protocol \(saved, asked\): \{'epochs': \(2, 3"):
        run_seed_study(tmp_path, seeds=(1,), models=("vae",), **{**TINY, "epochs": 3})
    assert not (tmp_path / "seed1").exists()  # refused before any training
    harness.run_image_comparison(seed=1, output_dir=tmp_path / "seed1", models=("vae",), **{**TINY, "epochs": 3})
    with pytest.raises(ValueError, match="seed1 was run under another protocol"):
        summarize_seeds(tmp_path)
    with pytest.raises(ValueError, match="distinct integers"):
        run_seed_study(tmp_path, seeds=(0, 0), **TINY)
    with pytest.raises(ValueError, match="'seed' is set by the study"):
        run_seed_study(tmp_path, seeds=(0,), seed=3, **TINY)
    with pytest.raises(FileNotFoundError, match="no seed<s>/results.json under"):
        summarize_seeds(tmp_path / "nothing")


def test_the_study_command_runs_and_reports(tmp_path, capsys):
    from pyro_lid.cli import main

    argv = ["study", "--dataset", "synthetic", "--models", "vae,lidvae_projection", "--seeds", "2",
            "--num-train", "200", "--num-test", "100", "--epochs", "2", "--num-samples", "3", "--latent-dim", "2",
            "--hidden", "16", "--icnn-hidden", "8", "--output-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| lidvae_projection | 2 |" in out and (tmp_path / "pareto.png").exists()
    assert (tmp_path / "information_per_dim.png").exists()
    assert main(["study", "--output-dir", str(tmp_path), "--report-only"]) == 0
    assert "| vae | 2 |" in capsys.readouterr().out


TEXT_TINY = dict(dataset="synthetic-text", epochs=2, latent_dim=2, embed_dim=8, hidden_dim=8, num_samples=3,
                 num_sentences=120, batch_size=24, progress=False)  # fmt: skip


def test_a_text_study_summarizes_nll_perplexity_and_cost_against_the_lstm_vae(tmp_path):
    summary = run_seed_study(tmp_path, seeds=(0, 1), models=("lstm_vae", "lidsvae"), **TEXT_TINY)
    assert [s["model"] for s in summary] == ["lstm_vae", "lidsvae", "lm", "oracle"]
    rows = {seed: {r["model"]: r for r in json.loads((tmp_path / f"seed{seed}" / "results.json").read_text())["rows"]}
            for seed in (0, 1)}  # fmt: skip
    assert rows[0]["lidsvae"]["ppl"] != rows[1]["lidsvae"]["ppl"]  # the seeds really differ
    for s in summary:
        for key in ("nll", "ppl"):
            assert s[key]["mean"] == pytest.approx(statistics.fmean(rows[seed][s["model"]][key] for seed in (0, 1)))
        if s["model"] == "oracle":  # the generator's likelihood: nothing trained, no cost
            assert s["cost"] is None
            continue
        costs = [rows[seed][s["model"]]["seconds_per_epoch"] / rows[seed]["lstm_vae"]["seconds_per_epoch"]
                 for seed in (0, 1)]  # fmt: skip
        assert s["cost"]["mean"] == pytest.approx(statistics.fmean(costs))
    _, lid, lm, oracle = summary
    assert lm["au"] is None and lm["max_batch_kl"] is None and lid["max_batch_kl"]["n"] == 2
    assert lid["code_r2"]["mean"] == pytest.approx(statistics.fmean(rows[s]["lidsvae"]["code_r2"] for s in (0, 1)))
    table = format_seed_table(summary)
    assert "| MI | code R² | NLL | PPL | max batch KL | cost (x LSTM-VAE) |" in table  # synthetic text: known codes
    assert f"| lm | 2 |  |  |  |  |  |  | {lm['nll']['mean']:.2f} ± {lm['nll']['sd']:.2f} |" in table
    mi, nll = oracle["mi"], oracle["nll"]  # the generator's own I(x; z) in the MI column
    line = f"| oracle | 2 |  |  |  |  | {mi['mean']:.2f} ± {mi['sd']:.2f} |  | {nll['mean']:.2f} ± {nll['sd']:.2f} |"
    assert line in table
    assert "code R²" not in format_seed_table([{**s, "code_r2": None} for s in summary])  # a real corpus
    # paired with the language model: each seed's NLL minus the LM's of the same seed (its corpus), then averaged
    paired = {s["model"]: s for s in summarize_seeds(tmp_path, paired="lm")}
    gaps = [rows[seed]["lidsvae"]["nll"] - rows[seed]["lm"]["nll"] for seed in (0, 1)]
    assert paired["lidsvae"]["gap"]["mean"] == pytest.approx(statistics.fmean(gaps))
    assert paired["lidsvae"]["gap"]["sd"] == pytest.approx(statistics.stdev(gaps))
    assert paired["lm"]["gap"] == {"mean": 0.0, "sd": 0.0, "n": 2, "nan": 0} and "gap" not in summary[0]
    assert "| NLL | NLL − lm (paired) | PPL |" in format_seed_table(list(paired.values()), paired="lm")
    with pytest.raises(ValueError, match="paired with vae, but .*seed0 has no row vae"):
        summarize_seeds(tmp_path, paired="vae")
    assert "(n=" not in table
    fig = plot_pareto(tmp_path)
    assert fig.axes[0].get_xlabel().startswith("test log-likelihood (nats per sentence")
    assert run_seed_study(tmp_path, seeds=(0, 1), models=("lstm_vae", "lidsvae"), **TEXT_TINY) == summary
    with pytest.raises(ValueError, match=r"another protocol \(saved, asked\): \{'epochs': \(2, 3"):
        run_seed_study(tmp_path, seeds=(2,), models=("lstm_vae",), **{**TEXT_TINY, "epochs": 3})


def test_a_text_study_cut_to_its_first_sentences_resumes_takes_more_seeds_and_names_a_changed_cut(tmp_path):
    """The cuts join the protocol only when given (compare records them so): the study's own check must build
    the same protocol, or a cut study could never be resumed or extended."""
    cut = dict(TEXT_TINY, num_train=40, num_valid=10, num_test=12, language_model=False)
    run_seed_study(tmp_path, seeds=(0,), models=("lstm_vae",), **cut)
    summary = run_seed_study(tmp_path, seeds=(0, 1), models=("lstm_vae",), **cut)
    assert summary[0]["seeds"] == [0, 1]
    saved = json.loads((tmp_path / "seed1" / "results.json").read_text())["protocol"]
    assert {k: saved[k] for k in ("num_train", "num_valid", "num_test")} == {"num_train": 40, "num_valid": 10,
                                                                              "num_test": 12}  # fmt: skip
    with pytest.raises(ValueError, match=r"another protocol \(saved, asked\): \{'num_train': \(40, 30\)\}"):
        run_seed_study(tmp_path, seeds=(2,), models=("lstm_vae",), **{**cut, "num_train": 30})
    with pytest.raises(ValueError, match=r"another protocol \(saved, asked\): \{'num_test': \(12, None\)\}"):
        run_seed_study(tmp_path, seeds=(2,), models=("lstm_vae",), **{**cut, "num_test": None})
    assert not (tmp_path / "seed2").exists()  # refused before any training
    # a user corpus given as a Path is recorded as its string, so the check compares like with like
    assert text_protocol({**cut, **{k: 0 for k in ("lr", "max_length", "max_vocab", "seed", "word_dropout")},
                          "dataset": tmp_path / "corpus.txt"})["dataset"] == str(tmp_path / "corpus.txt")  # fmt: skip


def test_the_study_command_passes_text_sizes_and_refuses_image_flags_for_text(tmp_path, monkeypatch, capsys):
    import pyro_lid.experiments.seed_study as study
    from pyro_lid.cli import TEXT_COMPARE_SIZES, main

    calls = []
    monkeypatch.setattr(study, "run_seed_study", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.setattr(study, "summarize_seeds", lambda *args: [])
    monkeypatch.setattr(study, "plot_pareto", lambda *args: None)
    monkeypatch.setattr(study, "plot_information_per_dimension", lambda *args: None)
    assert (
        main(["study", "--dataset", "ptb", "--epochs", "2", "--num-samples", "20", "--output-dir", str(tmp_path)]) == 0
    )
    (out, seeds, models), options = calls[0]
    assert list(seeds) == [0, 1, 2] and options["dataset"] == "ptb"
    assert models == ["lstm_vae", "lidsvae:margin=5:warmup=5:bag_of_words=true"]
    assert {k: options[k] for k in TEXT_COMPARE_SIZES} == {**TEXT_COMPARE_SIZES, "epochs": 2, "num_samples": 20}
    # a study at a cut budget (as compare's): the first training, validation and test sentences
    cut = ["--num-train", "3200", "--num-valid", "500", "--num-test", "400"]
    assert main(["study", "--dataset", "ptb", *cut, "--seeds", "2", "--output-dir", str(tmp_path)]) == 0
    (out, seeds, models), options = calls[1]
    assert list(seeds) == [0, 1]
    assert {k: options[k] for k in TEXT_COMPARE_SIZES} == {**TEXT_COMPARE_SIZES, "num_train": 3200,
                                                           "num_valid": 500, "num_test": 400}  # fmt: skip
    for flag, value in (("--budget", "full"), ("--hidden", "8"), ("--icnn-hidden", "8")):
        with pytest.raises(SystemExit):
            main(["study", "--dataset", "ptb", flag, value, "--output-dir", str(tmp_path)])
        assert f"{flag} applies to images, not to --dataset ptb" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["study", "--dataset", "synthetic", "--embed-dim", "8", "--output-dir", str(tmp_path)])
    assert "--embed-dim applies to text" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["study", "--dataset", "synthetic", "--num-valid", "10", "--output-dir", str(tmp_path)])
    assert "--num-valid applies to text" in capsys.readouterr().err
    assert len(calls) == 2


def test_study_folders_of_one_protocol_read_as_one_study_and_a_method_in_two_is_refused(tmp_path, capsys):
    """Methods trained side by side into two study folders: each seed's rows are read together (costs relative
    to the VAE of the same seed, whichever folder holds it), seeds found in one folder only count too."""
    from pyro_lid.cli import main

    a, b = tmp_path / "a", tmp_path / "b"
    run_seed_study(a, seeds=(0, 1), models=("vae",), **TINY)
    run_seed_study(b, seeds=(0, 1, 2), models=("lidvae_projection",), **TINY)
    summary = {s["model"]: s for s in summarize_seeds([a, b])}
    assert summary["vae"]["seeds"] == [0, 1] and summary["lidvae_projection"]["seeds"] == [0, 1, 2]
    assert summary["vae"] == summarize_seeds(a)[0]
    alone = summarize_seeds(b)[0]
    for key in ("ll", "au", "kl", "mi", "informative"):
        assert summary["lidvae_projection"][key] == alone[key]
    assert alone["cost"] is None  # no VAE in b: no cost alone, one per seed with a's VAE beside it
    rows = {(folder, seed): json.loads((folder / f"seed{seed}" / "results.json").read_text())["rows"][0]
            for folder in (a, b) for seed in (0, 1)}  # fmt: skip
    costs = [rows[b, s]["seconds_per_epoch"] / rows[a, s]["seconds_per_epoch"] for s in (0, 1)]
    cost = summary["lidvae_projection"]["cost"]
    assert cost["n"] == 2 and cost["mean"] == pytest.approx(statistics.fmean(costs))

    assert main(["study", "--output-dir", str(a), "--also", str(b), "--report-only"]) == 0
    out = capsys.readouterr().out
    assert "| vae | 2 |" in out and "| lidvae_projection | 3 |" in out
    assert (a / "pareto.png").stat().st_size > 0 and (a / "information_per_dim.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        main(["study", "--output-dir", str(a), "--also", str(tmp_path / "missing"), "--report-only"])
    assert f"--also {tmp_path / 'missing'}: no such folder" in capsys.readouterr().err

    twice = tmp_path / "twice"  # a row copied into another folder (to resume from it) reads once
    (twice / "seed0").mkdir(parents=True)
    copied = json.loads((a / "seed0" / "results.json").read_text())
    copied["rows"][0]["seconds_per_epoch"] *= 2  # a deterministic re-run differs in its timing only
    (twice / "seed0" / "results.json").write_text(json.dumps(copied))
    assert summarize_seeds([a, twice]) == summarize_seeds(a)  # the first folder's row, timing included
    copied["rows"][0]["ll"] -= 1.0  # the same model with other results: which one is meant?
    (twice / "seed0" / "results.json").write_text(json.dumps(copied))
    with pytest.raises(ValueError, match=r"vae has different results in .*a/seed0 and .*twice/seed0"):
        summarize_seeds([a, twice])
    changed = json.loads((b / "seed0" / "results.json").read_text())
    changed["protocol"]["epochs"] = 3
    (twice / "seed0" / "results.json").write_text(json.dumps(changed))
    with pytest.raises(ValueError, match="another protocol"):
        summarize_seeds([a, twice])


def test_an_image_data_sets_name_stays_images_where_a_folder_of_that_name_exists(tmp_path, monkeypatch):
    """``--root mnist`` is the natural folder of MNIST's files: its name must not turn a study into a text one."""
    from pyro_lid.experiments.seed_study import _comparison_for
    from pyro_lid.experiments.text_comparison import run_text_comparison

    monkeypatch.chdir(tmp_path)
    for name in ("mnist", "fashion-mnist", "synthetic"):
        (tmp_path / name).mkdir()
        assert _comparison_for(name)[0] is harness.run_image_comparison
    (tmp_path / "corpus.txt").write_text("a b\n")
    for corpus in ("corpus.txt", tmp_path / "corpus.txt", "ptb", "synthetic-text"):
        assert _comparison_for(corpus)[0] is run_text_comparison


def test_every_seed_of_a_study_splits_a_one_file_corpus_the_same_way(tmp_path):
    """A study's seeds differ in training only: a one-file corpus is split once (load_text would split it by the
    seed it is given), so seed 1 trains and tests on seed 0's sentences."""
    import torch

    from pyro_lid.data import load_text
    from pyro_lid.experiments.text_comparison import load_text_data

    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"w{i % 7} w{i % 5} w{i % 3}\n" for i in range(50)))
    seeds = [load_text_data(str(path), seed=seed) for seed in (0, 1, 2)]
    for other in seeds[1:]:
        assert all(torch.equal(seeds[0].split(s), other.split(s)) for s in ("train", "valid", "test"))
    assert not torch.equal(load_text(str(path), seed=1).test, seeds[0].test)  # the split does depend on a seed


def _write_study(folder, rows_by_seed):
    """A study folder written by hand: ``seed<s>/results.json`` with these rows under one protocol."""
    for seed, rows in rows_by_seed.items():
        (folder / f"seed{seed}").mkdir(parents=True)
        results = {"protocol": {"dataset": "synthetic", "epochs": 2, "seed": seed}, "rows": rows}
        (folder / f"seed{seed}" / "results.json").write_text(json.dumps(results))  # NaN written as NaN, as json does
    return folder


def _row(model, ll, per_dim=(0.5, 0.2)):
    return {"model": model, "au": 1.0, "kl": 3.0, "mi": 1.0, "ll": ll,
            "mi_per_dim": None if per_dim is None else list(per_dim), "seconds_per_epoch": 1.0}  # fmt: skip


def test_a_diverged_seed_reads_nan_not_unrecorded_and_one_seed_has_no_spread(tmp_path):
    """A NaN in a seed's row is a diverged run: it must not vanish into a mean over the other seeds (which would
    read like a seed that never recorded the metric); ``None`` (not recorded) is still left out. One seed measures
    no spread: its sd is ``None``, not 0."""
    import math

    study = _write_study(tmp_path / "study", {
        0: [_row("vae", -240.0), _row("lidvae", -250.0)],
        1: [_row("vae", -242.0, per_dim=None), _row("lidvae", math.nan, per_dim=(math.nan, 0.2))],
    })  # fmt: skip
    summary = {s["model"]: s for s in summarize_seeds(study)}
    ll = summary["lidvae"]["ll"]
    assert ll["n"] == 2 and ll["nan"] == 1 and math.isnan(ll["mean"]) and math.isnan(ll["sd"])
    informative = summary["lidvae"]["informative"]  # a NaN unit makes the seed's count NaN, not "uninformative"
    assert informative["nan"] == 1 and math.isnan(informative["mean"])
    assert summary["vae"]["ll"] == {"mean": -241.0, "sd": pytest.approx(math.sqrt(2)), "n": 2, "nan": 0}
    assert summary["vae"]["informative"] == {"mean": 1.0, "sd": None, "n": 1, "nan": 0}  # None: left out
    assert summary["vae"]["cluster_accuracy"] is None  # recorded by no seed
    table = format_seed_table(list(summary.values()))
    assert "| lidvae | 2 |" in table and table.count("nan (1 of 2 seeds NaN)") == 3  # LL, informative, min I
    assert "| -241.0 ± 1.4 |" in table and "| 1.00 (n=1) |" in table
    single = summarize_seeds(_write_study(tmp_path / "single", {0: [_row("vae", -240.0)]}))[0]
    assert single["ll"] == {"mean": -240.0, "sd": None, "n": 1, "nan": 0}
    assert "| vae | 1 | 1.00 | 1.00 | 0.200 | 3.0 | 1.00 | -240.0 |" in format_seed_table([single])
    # the figures say which seed they could not draw
    legend = plot_pareto(study).axes[0].get_legend()
    assert legend.get_title().get_text() == "not drawn, NaN: lidvae seed1"
    labels = [t.get_text() for t in plot_information_per_dimension(study).axes[0].get_legend().get_texts()]
    assert labels == ["vae (1 seeds)", "lidvae (1 seeds, 1 NaN not drawn)"]


def _quiet_report(monkeypatch):
    """The study command with its summary and figures stubbed out (the refusals come before them)."""
    import pyro_lid.experiments.seed_study as study

    monkeypatch.setattr(study, "summarize_seeds", lambda *args: [])
    monkeypatch.setattr(study, "plot_pareto", lambda *args: None)
    monkeypatch.setattr(study, "plot_information_per_dimension", lambda *args: None)
    return study


def test_study_refuses_a_paired_method_it_does_not_train_before_any_training(tmp_path, monkeypatch, capsys):
    from pyro_lid.cli import main

    study = _quiet_report(monkeypatch)

    def no_training(*args, **kwargs):
        raise AssertionError("the study trained before --paired was checked")

    monkeypatch.setattr(study, "run_seed_study", no_training)
    out = tmp_path / "out"
    for argv, known in (
        (["--dataset", "synthetic", "--models", "vae,lidvae"], "vae, lidvae"),
        (["--dataset", "synthetic", "--models", "vae", "lidvae"], "vae, lidvae"),
        (["--dataset", "synthetic-text", "--models", "lstm_vae"], "lstm_vae, lm, oracle"),  # the LM is trained too
        (["--dataset", "ptb", "--models", "lstm_vae"], "lstm_vae, lm"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(["study", *argv, "--paired", "lstm", "--output-dir", str(out)])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and err.count("\n") == 1
        assert f"error: --paired lstm: not a model of this study ({known})" in err
    assert not out.exists()
    calls = []
    monkeypatch.setattr(study, "run_seed_study", lambda *args, **kwargs: calls.append(args[2]))
    also = _write_study(tmp_path / "also", {0: [_row("lidvae", -250.0)]})  # a method trained side by side
    for argv in (
        ["--dataset", "synthetic-text", "--models", "lstm_vae", "--paired", "lm"],
        ["--dataset", "synthetic", "--models", "vae", "--paired", "vae"],
        ["--dataset", "synthetic", "--models", "vae", "--paired", "lidvae", "--also", str(also)],
        ["--dataset", "synthetic", "--models", "vae", "--resume"],  # what a study does anyway: accepted
    ):
        assert main(["study", *argv, "--output-dir", str(out)]) == 0
    assert calls == [["lstm_vae"], ["vae"], ["vae"], ["vae"]]


def test_report_only_refuses_training_options_and_a_missing_folder_which_it_does_not_create(tmp_path, capsys):
    """``--report-only`` reads the seeds on disk: an option of training would be silently ignored, so it is
    refused, naming it; a folder that does not exist holds no study and is not created."""
    from pyro_lid.cli import main

    study = _write_study(tmp_path / "study", {0: [_row("vae", -240.0)], 1: [_row("vae", -242.0)]})
    for flag in (["--seeds", "5"], ["--models", "vae"], ["--epochs", "3"], ["--lr", "0.01"], ["--budget", "full"],
                 ["--device", "cpu"], ["--root", str(tmp_path)], ["--num-train", "100"],
                 ["--hidden", "8"], ["--embed-dim", "8"], ["--num-samples", "10"], ["--resume"]):  # fmt: skip
        with pytest.raises(SystemExit) as exited:
            main(["study", "--output-dir", str(study), "--report-only", *flag])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and err.count("\n") == 1, flag
        assert f"error: {flag[0]} sets up training; --report-only trains nothing and reads the seeds on disk" in err
    missing = tmp_path / "missing"
    with pytest.raises(SystemExit) as exited:
        main(["study", "--output-dir", str(missing), "--report-only"])
    assert exited.value.code == 2 and not missing.exists()
    assert f"--output-dir {missing}: no such folder (--report-only reads a study there)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --dataset is not ignored either: it must be the study's
        main(["study", "--dataset", "mnist", "--output-dir", str(study), "--report-only"])
    message = f"error: --dataset mnist: the study in {study} was run on synthetic; --report-only reads it as it was run"
    assert message in capsys.readouterr().err
    assert main(["study", "--output-dir", str(study), "--report-only", "--info-floor", "0.3"]) == 0  # a report option
    assert "| vae | 2 | 1.00 ± 0.00 | 0.50 ± 0.00 |" in capsys.readouterr().out
    assert main(["study", "--dataset", "synthetic", "--output-dir", str(study), "--report-only"]) == 0


def test_a_changed_recipe_is_neither_resumed_nor_pooled_across_seeds(tmp_path, monkeypatch):
    """Each row records its method's recipe; after a registry change a finished row is not reused, and seeds
    trained under two recipes are not averaged into one mean."""
    import dataclasses

    from pyro_lid.experiments.methods import METHODS
    from pyro_lid.infer import KLSchedule

    # a text comparison records what it trains: the text version of the model, with its options
    assert METHODS["anneal"].recipe(2, text=True)["model"] == "LSTMVAE"
    assert METHODS["il_lidvae"].recipe(2, text=True)["model_kwargs"] == {"inner": "brenier", "margin": 0.5}
    run_seed_study(tmp_path, seeds=(0, 1), models=("anneal",), **TINY)
    saved = json.loads((tmp_path / "seed0" / "results.json").read_text())
    recorded_recipe = dict(saved["rows"][0]["recipe"])
    assert recorded_recipe.pop("built")["class"] == "VAE"  # the model as built, beside the registry's recipe
    assert recorded_recipe == METHODS["anneal"].recipe(2)
    assert saved["rows"][0]["recipe"]["fit"]["kl_schedule"]["start"] == 0.0
    original = METHODS["anneal"]
    changed = dataclasses.replace(
        original, fit_kwargs={"kl_schedule": KLSchedule("linear", warmup_epochs=5, start=0.5)}
    )
    monkeypatch.setitem(METHODS, "anneal", changed)
    with pytest.raises(ValueError, match=r"anneal's fit\.kl_schedule\.start: 0\.0 in .*results\.json, 0\.5 now"):
        harness.run_image_comparison(seed=0, output_dir=tmp_path / "seed0", resume=True, models=("anneal",), **TINY)
    harness.run_image_comparison(seed=1, output_dir=tmp_path / "seed1", overwrite=True, models=("anneal",), **TINY)
    with pytest.raises(ValueError, match=r"anneal in .*seed1 was trained with another recipe than in seed 0 \(fit"):
        summarize_seeds(tmp_path)
    # a row from before recipes were recorded: reused, with a warning that it is unchecked
    monkeypatch.setitem(METHODS, "anneal", original)
    del saved["rows"][0]["recipe"]
    (tmp_path / "seed0" / "results.json").write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match="predates recorded recipes: its finished rows of anneal are reused"):
        rows = harness.run_image_comparison(seed=0, output_dir=tmp_path / "seed0", resume=True, models=("anneal",),
                                            **TINY)  # fmt: skip
    assert rows[0]["ll"] == saved["rows"][0]["ll"]
    # the same row in a folder from before recipes and in one with its recipe reads once (``study --also``)
    recorded = {**saved, "rows": [{**saved["rows"][0], "recipe": original.recipe(2)}]}
    (tmp_path / "recorded").mkdir()
    (tmp_path / "recorded" / "results.json").write_text(json.dumps(recorded))
    assert len(harness.load_results([tmp_path / "seed0", tmp_path / "recorded"])[1]) == 1
    # the study pools the unchecked seed 0 with seed 1 (trained again under the original recipe), and says so
    harness.run_image_comparison(seed=1, output_dir=tmp_path / "seed1", overwrite=True, models=("anneal",), **TINY)
    with pytest.warns(
        UserWarning, match=r"anneal: seeds \[0\] predate recorded recipes and are pooled with seeds \[1\]"
    ):
        assert summarize_seeds(tmp_path)[0]["seeds"] == [0, 1]


def test_a_changed_default_of_a_model_class_is_neither_resumed_nor_pooled(tmp_path, monkeypatch):
    """The recipe describes the model as built (its settings, the class's defaults included, and its parameters'
    shapes): a default changed in the code since a row was recorded is caught like a registry change. Rows recorded
    before the recipe described the built model are checked on the rest, with a warning."""
    from pyro_lid.models import VAE

    run_seed_study(tmp_path, seeds=(0, 1), models=("anneal",), **TINY)
    seed0 = tmp_path / "seed0" / "results.json"
    saved = json.loads(seed0.read_text())
    assert saved["rows"][0]["recipe"]["built"]["beta"] == 1.0
    defaults = VAE.__init__.__defaults__
    beta_at = list(inspect.signature(VAE.__init__).parameters).index("beta") - 2  # after self and data_dim
    assert defaults[beta_at] == 1.0
    monkeypatch.setattr(VAE.__init__, "__defaults__", (*defaults[:beta_at], 2.0, *defaults[beta_at + 1 :]))
    with pytest.raises(ValueError, match=r"anneal's built\.beta: 1\.0 in .*results\.json, 2\.0 now"):
        harness.run_image_comparison(seed=0, output_dir=tmp_path / "seed0", resume=True, models=("anneal",), **TINY)
    harness.run_image_comparison(seed=1, output_dir=tmp_path / "seed1", overwrite=True, models=("anneal",), **TINY)
    with pytest.raises(ValueError, match=r"anneal in .*seed1 was trained with another recipe than in seed 0 \(built"):
        summarize_seeds(tmp_path)
    # a row recorded before recipes described the built model: checked on the rest, reused, with a warning
    monkeypatch.undo()
    del saved["rows"][0]["recipe"]["built"]
    seed0.write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match="predates recipes that describe the built model: its finished rows of anneal"):
        rows = harness.run_image_comparison(seed=0, output_dir=tmp_path / "seed0", resume=True, models=("anneal",),
                                            **TINY)  # fmt: skip
    assert rows[0]["ll"] == saved["rows"][0]["ll"]
    # and pooled with a seed whose recipe describes it (seed 1, trained again under the class's own default)
    harness.run_image_comparison(seed=1, output_dir=tmp_path / "seed1", overwrite=True, models=("anneal",), **TINY)
    with pytest.warns(UserWarning, match=r"anneal: seeds \[0\] predate recipes that describe the built model"):
        assert summarize_seeds(tmp_path)[0]["seeds"] == [0, 1]
    # a third seed built otherwise is compared with every seed, not only with the first (which cannot tell)
    third = json.loads((tmp_path / "seed1" / "results.json").read_text())
    third["protocol"]["seed"] = 2
    third["rows"][0]["recipe"]["built"]["beta"] = 2.0
    (tmp_path / "seed2").mkdir()
    (tmp_path / "seed2" / "results.json").write_text(json.dumps(third))
    with pytest.raises(ValueError, match=r"anneal in .*seed2 was trained with another recipe than in seed 1 \(built"):
        summarize_seeds(tmp_path)


def test_a_changed_default_inside_the_decoder_is_not_resumed(tmp_path, monkeypatch):
    """The margin of LIDGMVAE's injective map is a default of a submodule's construction (it went from 2 to 3 once):
    the built model's description reaches it."""
    import pyro_lid.models.vae as vae_module

    options = {**TINY, "epochs": 1, "num_train": 100, "num_test": 50}
    harness.run_image_comparison(seed=0, output_dir=tmp_path, models=("lidgmvae",), **options)
    monkeypatch.setattr(vae_module, "MIXTURE_DEFAULT_MARGIN", 2.0)
    with pytest.raises(ValueError, match=r"lidgmvae's built\.modules\.decoder\.injective_map\.margin: 3\.0 in"):
        harness.run_image_comparison(seed=0, output_dir=tmp_path, resume=True, models=("lidgmvae",), **options)
