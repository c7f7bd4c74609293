"""An evaluation computes every point's q(z|x) once and all its stages read that one: SA-VAE refines once per
evaluation (not once per stage), the stages' numbers are those of the kept posteriors, and rows are found by
where they lie in the data, never by their values."""

import pyro
import pytest
import torch

from pyro_lid.data import synthetic_text
from pyro_lid.diagnostics import (
    EvaluationCheckpoint,
    active_units,
    collapse_report,
    evaluation_fingerprint,
    kl_divergence,
    text_report,
)
from pyro_lid.diagnostics.fixed_posteriors import FixedPosteriors, piece_key, with_fixed_posteriors
from pyro_lid.diagnostics.resumable import PIECES_LAYOUT
from pyro_lid.infer.checkpoints import CheckpointError
from pyro_lid.infer.engine.callbacks.validation import evaluate
from pyro_lid.models import LSTMVAE, PPCA, SALSTMVAE, SAVAE, VAE

from .helpers import perturb_


def _text_model(kind, **options):
    pyro.set_rng_seed(0)
    return perturb_(kind(16, 2, 8, 8, **options), 0.3).eval()


def _count_refinements(model):
    calls = []
    refine = model.refine

    def counted(x, *args, **kwargs):
        calls.append(x.shape[0])
        return refine(x, *args, **kwargs)

    model.refine = counted
    return calls


def test_sa_vae_text_report_refines_every_sentence_once(sentences):
    model = _text_model(SALSTMVAE, refine_steps=2)
    calls = _count_refinements(model)
    report = text_report(model, sentences, num_samples=4, progress=False)
    # for all of AU, KL, the bound, both MI estimators and the reconstruction
    assert calls == [100] * 10 + [len(sentences) - 1000]  # once per batch of 100
    assert report["tokens"] > 0


def test_sa_vae_collapse_report_refines_once_and_every_stage_reads_the_kept_posteriors():
    pyro.set_rng_seed(1)
    model = perturb_(SAVAE(12, 3, hidden_dims=(16,), refine_steps=3), 0.3).eval()
    data = torch.rand(700, 12).bernoulli()
    calls = _count_refinements(model)
    path_values = {}

    class Keeping(EvaluationCheckpoint):
        def piece(self, key, compute):
            value = super().piece(key, compute)
            path_values[key] = value
            return value

    report = collapse_report(model, data, num_samples=3, progress=False, checkpoint=Keeping())
    assert calls == [100] * 7
    parts = [path_values[piece_key(i, 100)] for i in range(7)]  # one piece per mini-batch of 100
    loc, scale = torch.cat([part[0] for part in parts]), torch.cat([part[1] for part in parts])
    assert loc.shape == scale.shape == (700, 3)
    # the stages' numbers are those of the kept posteriors, computed by hand
    torch.testing.assert_close(report["au_variance"], loc.var(0, unbiased=False))
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(loc, scale), torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(report["kl_per_dim"], kl.mean(0))


def test_a_deterministic_encoder_gives_the_numbers_each_stage_gets_from_the_model_itself():
    pyro.set_rng_seed(2)
    model = perturb_(VAE(12, 3, hidden_dims=(16,)), 0.3).eval()
    data = torch.rand(640, 12).bernoulli()
    report = collapse_report(model, data, num_samples=3, progress=False)
    torch.testing.assert_close(report["au_variance"], active_units(model, data)["variance"])
    torch.testing.assert_close(report["kl"], kl_divergence(model, data)["total"])


def test_a_posterior_that_is_not_a_diagonal_gaussian_is_asked_of_the_model_itself():
    torch.manual_seed(0)
    model = PPCA(torch.randn(4, 2), torch.zeros(4), 0.5)
    data = torch.randn(30, 4)
    fixed, rows = with_fixed_posteriors(model, data)
    assert fixed is model and torch.equal(rows, data)
    assert collapse_report(model, data, num_samples=3, progress=False)["num_data"] == 30


def test_rows_are_found_where_they_lie_in_the_data_and_anything_else_is_refused():
    data = torch.randn(10, 3)
    loc, scale = torch.arange(20.0).reshape(10, 2), torch.ones(10, 2)
    fixed = FixedPosteriors(object(), data, loc, scale)
    assert fixed.rows(data) == slice(0, 10)
    assert fixed.rows(data[3:7]) == slice(3, 7)
    assert [fixed.rows(x) for x in data.split(4)] == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert fixed.rows(data[9:]) == slice(9, 10)
    torch.testing.assert_close(fixed.posterior(data[2:4]).mean, loc[2:4])
    assert fixed.posterior(data[2:4]).event_shape == (2,)
    for other in (data[3:7].clone(), data[::2], data[:, :2], data.T, torch.randn(4, 3), data[2:4].double()):
        with pytest.raises(ValueError, match="not a block of consecutive rows"):
            fixed.posterior(other)
    with pytest.raises(ValueError, match="contiguous"):
        FixedPosteriors(object(), data.T, loc, scale)
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        FixedPosteriors(object(), data, loc[:9], scale[:9])


def test_the_model_s_other_attributes_are_the_model_s_own():
    model = VAE(12, 3, hidden_dims=(16,))
    data = torch.rand(20, 12).bernoulli()
    fixed, rows = with_fixed_posteriors(model, data)
    assert isinstance(fixed, FixedPosteriors)
    assert fixed.log_joint == model.log_joint and fixed.prior == model.prior and fixed.latent_dim == 3
    assert with_fixed_posteriors(fixed, rows)[0] is fixed  # already fixed for these data: as it is
    with pytest.raises(AttributeError):
        getattr(fixed, "no_such_attribute")  # noqa: B009


def test_the_amortization_gap_of_fixed_posteriors_is_the_model_s_with_its_parameters_frozen(monkeypatch):
    import pyro_lid.diagnostics.amortization as amortization

    model = perturb_(VAE(12, 3, hidden_dims=(16,)), 0.3).eval()
    data = torch.rand(20, 12).bernoulli()
    fixed, rows = with_fixed_posteriors(model, data)
    frozen, real_refine = [], amortization.refine_gaussian
    monkeypatch.setattr(amortization, "refine_gaussian", lambda *a, frozen=(), **k: frozen_and(frozen, a, k))

    def frozen_and(parameters, args, kwargs):
        frozen.append(list(parameters))
        return real_refine(*args, frozen=frozen[-1], **kwargs)

    direct = amortization.amortization_gap(model, rows[:6], steps=8)
    through = amortization.amortization_gap(fixed, rows[:6], steps=8)
    torch.testing.assert_close(through["gap"], direct["gap"])
    assert all(len(f) == len(list(model.parameters())) > 0 for f in frozen)  # the model's parameters, each stage


def test_the_validation_s_metrics_refine_each_point_once():
    pyro.clear_param_store()
    model = _text_model(SALSTMVAE, refine_steps=2)
    data = synthetic_text(300, vocab_size=12, latent_dim=2, max_length=6, seed=3)[0].train
    calls = _count_refinements(model)
    svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-3}), pyro.infer.Trace_ELBO())
    out = evaluate(model, svi, data, batch_size=len(data), metrics=True)
    assert set(out) == {"val_loss", "kl", "au", "mi"}
    # the loss's guide (one batch), then the metrics' posteriors (batches of 100): each point refined once for each
    assert calls == [len(data), *[100] * (len(data) // 100), *([len(data) % 100] if len(data) % 100 else [])]


def test_a_kept_evaluation_made_of_other_pieces_is_set_aside(tmp_path, sentences):
    model = _text_model(LSTMVAE)
    fingerprint = evaluation_fingerprint(model, sentences, num_samples=4)
    assert fingerprint["pieces"] == PIECES_LAYOUT
    older = {key: value for key, value in fingerprint.items() if key != "pieces"}  # kept before the layout changed
    path = tmp_path / "evaluation.pt"
    EvaluationCheckpoint(path, older).piece("active units", lambda: 1.0)
    with pytest.warns(UserWarning, match="pieces"):
        kept = EvaluationCheckpoint(path, fingerprint, restart_on_mismatch=True)
    assert kept.values == {}


def test_a_semi_amortized_mixture_model_s_clusters_read_the_kept_posteriors():
    from pyro_lid.models import GMVAE, semi_amortized

    pyro.set_rng_seed(4)
    model = perturb_(semi_amortized(GMVAE)(12, 3, hidden_dims=(16,), num_components=3, refine_steps=2), 0.3).eval()
    data = torch.rand(300, 12).bernoulli()
    calls = _count_refinements(model)
    report = collapse_report(model, data, num_samples=2, labels=torch.randint(0, 3, (300,)), progress=False)
    assert calls == [100] * 3  # the clusters too: no second refinement
    assert 0.0 <= report["cluster_accuracy"] <= 1.0 and report["clusters_used"] >= 1


def test_a_model_in_training_mode_gets_its_evaluation_mode_posteriors_and_its_mode_back(sentences):
    from pyro_lid.diagnostics import posterior_means
    from pyro_lid.models import BNLSTMVAE

    model = _text_model(BNLSTMVAE).train()  # batch norm: training mode would normalize by each batch
    with torch.no_grad():
        model.encoder.norm.running_mean.normal_()
    report = text_report(model, sentences, num_samples=2, progress=False)
    assert model.training
    expected = posterior_means(model.eval(), sentences)
    torch.testing.assert_close(report["au_variance"], expected.var(0, unbiased=False))


def test_a_view_of_the_same_memory_outside_the_data_s_rows_is_refused():
    big = torch.randn(12, 3)
    data = big[:10]
    fixed = FixedPosteriors(object(), data, torch.zeros(10, 2), torch.ones(10, 2))
    assert fixed.rows(big[4:10]) == slice(4, 10)
    for outside in (big[10:12], big[8:12]):
        with pytest.raises(ValueError, match="not a block of consecutive rows"):
            fixed.posterior(outside)


def test_pieces_is_the_fingerprint_s_own_and_an_older_layout_is_refused_by_name(tmp_path, sentences):
    model = _text_model(LSTMVAE)
    with pytest.raises(ValueError, match="'pieces' is the fingerprint's own"):
        evaluation_fingerprint(model, sentences, pieces=3)
    fingerprint = evaluation_fingerprint(model, sentences, num_samples=4)
    path = tmp_path / "evaluation.pt"
    EvaluationCheckpoint(path, {k: v for k, v in fingerprint.items() if k != "pieces"}).piece("KL", lambda: 1.0)
    with pytest.raises(CheckpointError, match="made of other pieces"):
        EvaluationCheckpoint(path, fingerprint)


def test_the_posteriors_report_their_time_with_progress_and_nothing_without(capsys):
    model = VAE(12, 3, hidden_dims=(16,))
    data = torch.rand(250, 12).bernoulli()
    with_fixed_posteriors(model, data, progress=False)
    assert capsys.readouterr().err == ""
    with_fixed_posteriors(model, data, progress=True)
    assert "evaluation: posteriors on 250 points in" in capsys.readouterr().err
