"""An evaluation stopped part way (a session that ends during a long importance-weighted bound) resumes from
its kept pieces and ends bit for bit where an uninterrupted evaluation ends; a file kept for another model is
refused by name."""

import pyro
import pytest
import torch

from pyro_lid.diagnostics import (
    EvaluationCheckpoint,
    evaluation_fingerprint,
    importance_weighted_log_likelihood,
    text_report,
)
from pyro_lid.infer.checkpoints import CheckpointError
from pyro_lid.models import LSTMVAE, SALSTMVAE

from .helpers import perturb_


def _model(kind):
    pyro.set_rng_seed(0)
    model = kind(16, 2, 8, 8, **({"refine_steps": 2} if kind is SALSTMVAE else {}))
    return perturb_(model, 0.3).eval()


def _same(a, b, where=""):
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _short(key):
    """A piece's name without its batching: ``"ll/1 (4 samples, ...)"`` -> ``"ll/1"``, ``"posteriors/3 (batches of
    100)"`` -> ``"posteriors/3"``."""
    return key.split(" (")[0] if key.startswith(("ll/", "posteriors/")) else key


def _names(values):
    return {_short(key) for key in values}


Q = {f"posteriors/{i}" for i in range(11)}  # every row's q(z|x), the first pieces: 1,099 sentences in batches of 100


class Stop(Exception):
    """Stands for the end of a session (a KeyboardInterrupt would stop pytest itself)."""


class StoppingCheckpoint(EvaluationCheckpoint):
    """Stops the evaluation part way through computing the piece ``stop`` (after some random draws)."""

    def __init__(self, path, fingerprint, stop: str):
        super().__init__(path, fingerprint)
        self.stop = stop

    def piece(self, key, compute):
        if _short(key) == self.stop:  # stopped inside the computation, as a killed process is

            def compute():
                torch.rand(7)
                raise Stop

        return super().piece(key, compute)


@pytest.mark.parametrize("kind", [LSTMVAE, SALSTMVAE], ids=["lstm_vae", "sa_vae-refines-with-random-draws"])
@pytest.mark.parametrize(
    "stop, kept_before",
    [
        ("posteriors/0", set()),  # nothing kept but where the streams stood when the evaluation began
        ("posteriors/3", {"posteriors/0", "posteriors/1", "posteriors/2"}),
        ("active units", Q),
        ("ll/1", Q | {"active units", "KL", "ll/0"}),
        ("mutual information", Q | {"active units", "KL", "ll/0", "ll/1", "ll/2"}),
        ("reconstruction", Q | {"active units", "KL", "ll/0", "ll/1", "ll/2", "mutual information",
                            "mutual information (mini-batch)"}),
    ],
    ids=["in-the-first-piece", "in-the-posteriors-fourth-batch", "in-the-active-units", "in-the-bound's-second-batch",
         "in-the-mutual-information", "in-the-reconstruction"],
)  # fmt: skip
def test_an_evaluation_stopped_part_way_resumes_to_the_uninterrupted_report_bit_for_bit(
    tmp_path, sentences, kind, stop, kept_before
):
    model = _model(kind)
    torch.manual_seed(5)
    straight = text_report(model, sentences, num_samples=4, progress=False)

    path = tmp_path / "evaluation.pt"
    fingerprint = evaluation_fingerprint(model, sentences, num_samples=4)
    torch.manual_seed(5)
    with pytest.raises(Stop):
        text_report(model, sentences, num_samples=4, progress=False,
                    checkpoint=StoppingCheckpoint(path, fingerprint, stop))  # fmt: skip
    kept = EvaluationCheckpoint(path, fingerprint)
    assert _names(kept.values) == kept_before

    torch.manual_seed(123)  # other work between the two processes: the kept streams must win
    torch.rand(1000)
    resumed = text_report(model, sentences, num_samples=4, progress=False, checkpoint=kept)
    _same(straight, resumed)
    every = Q | {"active units", "KL", "ll/0", "ll/1", "ll/2", "mutual information", "mutual information (mini-batch)",
             "reconstruction"}  # fmt: skip
    assert _names(kept.values) == every


def test_kept_pieces_are_used_and_not_computed_again(tmp_path, sentences):
    model = _model(LSTMVAE)
    path = tmp_path / "evaluation.pt"
    fingerprint = evaluation_fingerprint(model, sentences, num_samples=4)
    first = text_report(
        model, sentences, num_samples=4, progress=False, checkpoint=EvaluationCheckpoint(path, fingerprint)
    )
    kept = EvaluationCheckpoint(path, fingerprint)
    for part in ("log_joint", "posterior", "decoder"):  # any piece computed again would fail
        setattr(model, part, None)
    again = text_report(model, sentences, num_samples=4, progress=False, checkpoint=kept)
    _same(first, again)
    kept.remove()
    assert not path.exists()


@pytest.mark.parametrize("change", ["parameters", "data", "num_samples", "device"])
def test_a_kept_evaluation_of_another_model_data_or_options_is_refused_naming_the_file(tmp_path, sentences, change):
    model = _model(LSTMVAE)
    path = tmp_path / "evaluation.pt"
    fingerprint = evaluation_fingerprint(model, sentences, num_samples=4)
    EvaluationCheckpoint(path, fingerprint).piece("KL", lambda: 1.0)
    data, samples = sentences, 4
    if change == "parameters":
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] += 1e-6
    elif change == "data":
        data = sentences.flip(0)
    elif change == "num_samples":
        samples = 5
    now = evaluation_fingerprint(model, data, num_samples=samples)
    if change == "device":  # as a file kept on a GPU and opened on the CPU
        now["device"] = "cuda"
    key = {"parameters": "model"}.get(change, change)
    with pytest.raises(CheckpointError, match=rf"{path}.*\b{key}: .*delete it to evaluate from the start"):
        EvaluationCheckpoint(path, now)
    with pytest.warns(UserWarning, match=rf"{path}.*\b{key}: .*evaluated from the start"):
        assert EvaluationCheckpoint(path, now, restart_on_mismatch=True).values == {}


def test_the_bound_keeps_its_batches_under_its_sample_count_and_batching(tmp_path, sentences):
    model = _model(LSTMVAE)
    path = tmp_path / "evaluation.pt"
    fingerprint = evaluation_fingerprint(model, sentences)
    four = importance_weighted_log_likelihood(model, sentences, 4, checkpoint=EvaluationCheckpoint(path, fingerprint))
    kept = EvaluationCheckpoint(path, fingerprint)
    torch.manual_seed(0)
    halves = importance_weighted_log_likelihood(model, sentences, 4, batch_size=250, checkpoint=kept)
    eight = importance_weighted_log_likelihood(model, sentences, 8, checkpoint=kept)
    assert halves.shape == eight.shape == four.shape == (sentences.shape[0],)
    assert not torch.equal(halves, four) and not torch.equal(eight, four)


def test_an_unreadable_kept_evaluation_is_refused_or_with_restart_set_aside(tmp_path, sentences):
    path = tmp_path / "evaluation.pt"
    path.write_bytes(b"half a file")
    fingerprint = evaluation_fingerprint(_model(LSTMVAE), sentences)
    with pytest.raises(CheckpointError, match=str(path)):
        EvaluationCheckpoint(path, fingerprint)
    with pytest.warns(UserWarning, match=rf"{path}.*evaluated from the start"):
        assert EvaluationCheckpoint(path, fingerprint, restart_on_mismatch=True).values == {}


def test_a_reading_process_takes_the_kept_pieces_and_writes_nothing(tmp_path):
    path = tmp_path / "evaluation.pt"
    EvaluationCheckpoint(path, {"k": 1}).piece("KL", lambda: 1.0)
    before = path.read_bytes()
    reader = EvaluationCheckpoint(path, {"k": 1}, write=False)
    assert reader.piece("KL", lambda: 2.0) == 1.0 and reader.piece("AU", lambda: 3.0) == 3.0
    reader.remove()
    assert path.read_bytes() == before


def test_a_kept_evaluation_needs_its_fingerprint(tmp_path):
    with pytest.raises(ValueError, match="needs its fingerprint"):
        EvaluationCheckpoint(tmp_path / "evaluation.pt")


TIMING = {"seconds_per_epoch", "tokens_per_second", "eval_seconds", "train_seconds", "relative_cost", "seconds"}


def _untimed(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


COMPARISONS = {
    "text": ("text_comparison", "run_text_comparison", "synthetic-text", "sa_vae",
             dict(epochs=1, latent_dim=2, embed_dim=8, hidden_dim=8, num_samples=3, num_sentences=120, batch_size=24,
                  language_model=False)),
    "images": ("image_comparison", "run_image_comparison", "synthetic", "lidvae",
               dict(epochs=1, num_train=200, num_test=120, latent_dim=2, hidden=16, icnn_hidden=8, batch_size=50,
                    num_samples=3)),
}  # fmt: skip


@pytest.mark.parametrize("kind", COMPARISONS)
def test_a_comparison_stopped_during_an_evaluation_resumes_it_and_records_the_uninterrupted_row(
    tmp_path, monkeypatch, kind
):
    import importlib

    module, function, dataset, name, options = COMPARISONS[kind]
    harness = importlib.import_module(f"pyro_lid.experiments.{module}")
    compare = getattr(harness, function)
    models = (name,)
    straight = compare(dataset, models=models, output_dir=tmp_path / "straight", progress=False, **options)

    out = tmp_path / "stopped"
    real_piece = EvaluationCheckpoint.piece

    def stopping_piece(self, key, compute):
        if key == "mutual information":
            raise Stop
        return real_piece(self, key, compute)

    monkeypatch.setattr(EvaluationCheckpoint, "piece", stopping_piece)
    with pytest.raises(Stop):
        compare(dataset, models=models, output_dir=out, progress=False, **options)
    monkeypatch.undo()
    kept = out / f"evaluation_{name}.pt"
    assert not (out / "results.json").exists()
    assert {"active units", "KL", "ll/0"} <= _names(torch.load(kept, weights_only=False)["values"])

    trained, computed = [], []
    real_fit = harness.fit
    monkeypatch.setattr(harness, "fit", lambda model, *a, **k: trained.append(k["resume"]) or real_fit(model, *a, **k))

    def watching_piece(self, key, compute):
        if key not in self.values:
            computed.append(_short(key))
        return real_piece(self, key, compute)

    monkeypatch.setattr(EvaluationCheckpoint, "piece", watching_piece)
    resumed = compare(dataset, models=models, output_dir=out, resume=True, progress=False, **options)
    assert trained == [True]
    assert computed[0] == "mutual information" and not {"active units", "KL", "ll/0"} & set(computed)
    assert _untimed(resumed) == _untimed(straight)
    assert not kept.exists()  # the row is recorded: the kept pieces are gone


def test_a_comparison_replaces_a_kept_evaluation_of_another_training_and_removes_a_stale_one(tmp_path):
    import pyro_lid.experiments.text_comparison as harness

    module, function, dataset, name, options = COMPARISONS["text"]
    options = {**options, "models": ("lstm_vae",), "output_dir": tmp_path, "progress": False}
    straight = harness.run_text_comparison(dataset, **options)
    kept = tmp_path / "evaluation_lstm_vae.pt"
    (tmp_path / "results.json").unlink()  # the row not recorded yet, a kept evaluation of other parameters
    EvaluationCheckpoint(kept, {"model": "0123456789abcdef"}).piece("KL", lambda: {"total": 99.0})
    with pytest.warns(UserWarning, match=rf"{kept}.*evaluated from the start"):
        again = harness.run_text_comparison(dataset, resume=True, **options)
    assert _untimed(again) == _untimed(straight) and not kept.exists()

    EvaluationCheckpoint(kept, {"model": "0123456789abcdef"}).piece("KL", lambda: 1.0)  # left by a killed run
    harness.run_text_comparison(dataset, resume=True, **options)  # the row is recorded: nothing evaluated
    assert not kept.exists()


def test_a_kept_evaluation_creates_its_folder(tmp_path):
    # fit's validation keeps its stages before the first checkpoint has created the checkpoint's folder
    path = tmp_path / "runs" / "run.pt.validation"
    EvaluationCheckpoint(path, {"k": 1}).piece("KL", lambda: 1.0)
    assert EvaluationCheckpoint(path, {"k": 1}).values == {"KL": 1.0}
