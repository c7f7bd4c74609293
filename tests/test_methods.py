"""Baseline mechanisms (BN-VAE, IL-LIDVAE) and the method registry."""

import re

import pyro
import pytest
import torch

from pyro_lid.data import synthetic_text
from pyro_lid.experiments.methods import METHODS, resolve_method
from pyro_lid.infer import fit
from pyro_lid.models import BNLSTMVAE, BNVAE, ILLIDVAE, LIDVAE, LSTMVAE, SALSTMVAE, SAVAE

from .helpers import assert_resume_is_exact

X = torch.bernoulli(torch.rand(128, 20, generator=torch.Generator().manual_seed(5)))


def _image_and_text(kind):
    """A tiny data set and model factory: binary images for the VAE family, synthetic sentences for the LSTM one."""
    if kind == "image":
        return X, lambda cls, latent_dim, **kw: cls(20, latent_dim, hidden_dims=(32,), **kw)
    corpus = synthetic_text(128, vocab_size=12, latent_dim=2, max_length=8, seed=2)[0]
    return corpus.train, lambda cls, latent_dim, **kw: cls(len(corpus.vocab), latent_dim, 16, 16, **kw)


@pytest.mark.parametrize("kind, model_class", [("image", BNVAE), ("text", BNLSTMVAE)])
@pytest.mark.parametrize("gamma", [0.3, 0.7])
def test_bn_vae_floors_the_expected_kl(gamma, kind, model_class):
    data, make = _image_and_text(kind)
    model = make(model_class, 8, gamma=gamma)
    with torch.no_grad():
        model.encoder.shift.normal_()  # any learned shift only adds to the floor
    q = model.posterior(data).base_dist  # training mode: batch statistics
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1).mean()
    assert kl >= 8 * gamma**2 / 2 * (1 - 1e-3)  # (1e-3: BatchNorm's epsilon)
    plain = make(model_class, 8, gamma=gamma)
    plain.encoder.norm = torch.nn.Identity()  # without batch norm nothing holds the KL up
    q0 = plain.posterior(data).base_dist
    assert torch.distributions.kl_divergence(q0, torch.distributions.Normal(0.0, 1.0)).sum(-1).mean() < kl


def test_batch_normalized_keeps_the_base_encoders_modules_and_state_layout():
    text = BNLSTMVAE(12, 3, 8, 8)
    assert isinstance(text.encoder.body, type(LSTMVAE(12, 3, 8, 8).encoder.body))  # the LSTM reads the sentence
    assert sorted(BNVAE(20, 4, hidden_dims=(32,)).encoder.state_dict()) == [  # checkpoints of earlier BN-VAEs load
        "body.0.bias", "body.0.weight", "loc.bias", "loc.weight", "norm.num_batches_tracked", "norm.running_mean",
        "norm.running_var", "scale.bias", "scale.weight", "shift"]  # fmt: skip
    for bad in (0.0, -1.0, True, "0.5"):
        with pytest.raises(ValueError, match="gamma"):
            BNLSTMVAE(12, 3, 8, 8, gamma=bad)


def test_fit_refuses_a_batch_norm_model_whose_epoch_would_end_on_a_mini_batch_of_one_before_training():
    data = X[:97]  # 97 = 3 * 32 + 1
    with pytest.raises(ValueError, match=r"BNVAE has batch norm.*97 data points with batch_size=32 leave one in the"):
        fit(BNVAE(20, 3, hidden_dims=(16,)), data, epochs=1, batch_size=32, progress=False)
    with pytest.raises(ValueError, match="leave one in every mini-batch"):
        fit(BNVAE(20, 3, hidden_dims=(16,)), data, epochs=1, batch_size=1, progress=False)
    assert len(fit(BNVAE(20, 3, hidden_dims=(16,)), X[:96], epochs=1, batch_size=32, progress=False)) == 1


def test_bn_vae_uses_running_statistics_in_eval_mode():
    model = BNVAE(20, 4, hidden_dims=(32,))
    fit(model, X, epochs=2, batch_size=32, progress=False)  # fit leaves the model in eval mode
    assert not model.training
    single = model.posterior(X[:1]).mean  # a batch of one: only running statistics make sense
    assert torch.allclose(single, model.posterior(X[:5]).mean[:1], atol=1e-6)


def test_il_lidvae_margin_grows_with_the_strong_convexity_constant():
    z = 2 * torch.randn(200, 3)
    margins = []
    for constant in (0.2, 0.5, 1.0):
        model = ILLIDVAE(20, 3, hidden_dims=(32,), icnn_hidden_dims=(16,), strong_convexity=constant)
        with torch.no_grad():  # put both alphas on their floor: the bound is then exactly L^2
            model.decoder.injective_map.latent_map.potential.alpha_raw.fill_(-30.0)
            model.decoder.injective_map.output_map.potential.alpha_raw.fill_(-30.0)
        with torch.no_grad():
            sigma = model.decoder.injective_map.smallest_singular_value(z)
        assert (sigma >= constant**2 * (1 - 1e-5)).all()
        margins.append(float(sigma.min()))
    assert margins[0] < margins[1] < margins[2]
    with pytest.raises(ValueError, match="strong_convexity"):
        ILLIDVAE(20, 3, alpha_floor=0.1)


@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items() if not m.is_text))  # text: test_text_models
def test_every_registered_method_builds_and_trains_two_epochs(name):
    method = METHODS[name]
    pyro.set_rng_seed(0)
    model = method.build(20, 3, hidden=16, icnn_hidden=8, num_components=2)
    assert isinstance(model, method.model_class)
    history = fit(model, X[:96], X[96:], epochs=2, batch_size=48, progress=False, **method.fit_options(2))
    assert len(history) == 2 and history.records[0]["grad_evals"] >= 2
    assert method.reference


def test_registry_recipes_are_the_documented_ones():
    assert METHODS["beta_vae"].model_kwargs == {"beta": 0.2}
    assert METHODS["free_bits"].fit_kwargs == {"free_bits": 0.1}
    assert METHODS["anneal"].fit_kwargs["kl_schedule"](2.5) == pytest.approx(0.5)
    assert issubclass(METHODS["il_lidvae"].model_class, LIDVAE)


@pytest.mark.parametrize("name", ["lagging", "sa_vae"])
def test_lagging_and_sa_vae_train_with_their_papers_kl_warm_up_from_0_1_fitted_to_the_budget(name):
    """He et al. (Lagging) and Kim et al. (SA-VAE) both anneal the KL weight from 0.1 to 1 over 10 epochs."""
    schedule = METHODS[name].fit_options(30)["kl_schedule"]  # a budget that holds the whole warm-up
    assert [schedule(t) for t in (0, 5, 10, 20)] == pytest.approx([0.1, 0.55, 1.0, 1.0])
    short = METHODS[name].fit_options(2)["kl_schedule"]  # fitted: the full weight after the first epoch
    assert [short(t) for t in (0, 0.5, 1)] == pytest.approx([0.1, 0.55, 1.0])
    assert METHODS["sa_vae"].model_kwargs["end_to_end"] is True  # Kim et al.'s default: through the steps


# ------------------------------------------------------------------ Lagging VAE (aggressive training)
def test_encoder_only_steps_leave_the_decoder_untouched():
    from pyro.infer import SVI, Trace_ELBO

    from pyro_lid.infer.aggressive import ParamSubsetOptim, encoder_parameters
    from pyro_lid.models import VAE

    model = VAE(20, 3, hidden_dims=(16,))
    optim = ParamSubsetOptim(torch.optim.Adam, {"lr": 1e-2}, encoder_parameters(model))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    svi = SVI(model.model, model.guide, optim, Trace_ELBO())
    for _ in range(3):
        svi.step(X)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("encoder.") for k in changed)


def test_lagging_is_aggressive_then_stops_by_the_mutual_information_rule(monkeypatch):
    import pyro_lid.infer.training as training
    from pyro_lid.models import VAE

    real_validate = training._validate
    fake_mi = iter([1.0, 1.5, 1.2, 1.6, 1.7])  # rises, rises, falls: aggressive for 3 epochs, then not

    def validate(*args, **kwargs):
        out = real_validate(*args, **kwargs)
        out["mi"] = next(fake_mi)
        return out

    monkeypatch.setattr(training, "_validate", validate)
    history = fit(
        VAE(20, 3, hidden_dims=(16,)), X[:96], X[96:], epochs=5, batch_size=32, strategy="lagging", progress=False
    )
    assert history["aggressive"] == [True, True, True, False, False]
    ratios = history["encoder_steps_per_decoder_step"]
    assert all(r >= 15 for r in ratios[:3]) and ratios[3:] == [0.0, 0.0]  # at least one check period
    assert all(r <= 100 for r in ratios)
    # cost accounting: inner encoder steps count as gradient evaluations
    assert history["grad_evals"][0] == 3 + round(3 * ratios[0]) and history["grad_evals"][4] == 3
    with pytest.raises(ValueError, match="val_data"):
        fit(VAE(20, 3, hidden_dims=(16,)), X, epochs=1, strategy="lagging", progress=False)


def test_lagging_goes_on_with_the_aggressive_phases_optimizers_after_it_so_adam_is_not_restarted(monkeypatch):
    """He et al.'s code keeps stepping the encoder's and the decoder's optimizers once the aggressive phase ends: a
    fresh Adam at the switch would take its first, largest steps from zero moments in the middle of training."""
    import pyro_lid.infer.training as training
    from pyro_lid.infer.engine.strategies import Lagging
    from pyro_lid.models import VAE

    real_validate = training._validate
    fake_mi = iter([1.0, 0.5, 0.4, 0.3])  # rises, falls: aggressive in the first two epochs

    def validate(*args, **kwargs):
        return {**real_validate(*args, **kwargs), "mi": next(fake_mi)}

    monkeypatch.setattr(training, "_validate", validate)
    model, lagging = VAE(20, 3, hidden_dims=(16,)), Lagging()
    history = fit(model, X[:96], X[96:], epochs=4, batch_size=32, strategy=lagging, progress=False)
    assert history["aggressive"] == [True, True, False, False]
    inner = round(3 * sum(history["encoder_steps_per_decoder_step"]))

    def adam_steps(optim, parameter):
        return int(optim.optim_objs[parameter].state[parameter]["step"])

    encoder, decoder = next(model.encoder.parameters()), next(model.decoder.parameters())
    assert adam_steps(lagging.encoder_optim, encoder) == inner + 6  # the burn-in's steps, then 2 epochs of 3
    assert adam_steps(lagging.decoder_optim, decoder) == 6 + 6
    assert not lagging.optim.optim_objs  # no third optimizer started from nothing


def test_lagging_resume_equals_an_uninterrupted_run(tmp_path):
    from pyro_lid.models import VAE

    pyro.set_rng_seed(0)
    assert_resume_is_exact(
        lambda: VAE(20, 3, hidden_dims=(16,)), X[:96], X[96:], tmp_path / "lag.pt", epochs=2,
        interrupt={"epochs": 1}, batch_size=32, strategy="lagging",
    )  # fmt: skip


def test_the_comparison_harness_applies_each_methods_training_recipe(monkeypatch):
    import pyro_lid.experiments.image_comparison as harness

    seen = {}
    real_fit = harness.fit

    def recording_fit(model, *args, **kwargs):
        seen[type(model).__name__, kwargs.get("strategy"), str(kwargs.get("kl_schedule"))] = kwargs
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(harness, "fit", recording_fit)
    harness.run_image_comparison(
        "synthetic",
        models=("anneal", "lagging"),
        num_train=200,
        num_test=100,
        epochs=1,
        latent_dim=2,
        hidden=16,
        icnn_hidden=8,
        num_samples=3,
        progress=False,
    )
    recipes = list(seen.values())
    schedule = recipes[0]["kl_schedule"]  # the recipe's warm-up, fitted to the 1-epoch budget
    assert (schedule.kind, schedule.warmup_epochs) == ("linear", 0.5)
    assert recipes[1]["strategy"] == "lagging"


# ------------------------------------------------------------------ SA-VAE
@pytest.mark.parametrize("kind, model_class", [("image", SAVAE), ("text", SALSTMVAE)])
def test_sa_vae_refinement_increases_each_points_elbo_and_leaves_the_decoder_alone(kind, model_class):
    data, make = _image_and_text(kind)
    model = make(model_class, 4, refine_steps=10, refine_lr=0.1)
    fit(model, data[:96], epochs=2, batch_size=32, progress=False)
    decoder_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    loc0, scale0 = model.encoder(data)
    loc, scale = model.refine(data, loc0, scale0)
    pyro.set_rng_seed(1)
    initial = model.local_elbo(data, loc0.detach(), scale0.detach().log(), num_samples=400)
    pyro.set_rng_seed(1)  # common random numbers: the same noise for both
    refined = model.local_elbo(data, loc, scale.log(), num_samples=400)
    assert refined.mean() > initial.mean()
    assert (refined > initial).float().mean() > 0.6
    assert all(torch.equal(v, model.decoder.state_dict()[k]) for k, v in decoder_before.items())
    assert all(p.requires_grad for p in model.parameters())


def test_sa_vae_trains_the_encoder_towards_the_refined_posterior_and_counts_its_cost():
    from pyro_lid.models import SAVAE

    model = SAVAE(20, 4, hidden_dims=(32,), refine_steps=5)
    encoder_before = [p.clone() for p in model.encoder.parameters()]
    history = fit(model, X[:96], X[96:], epochs=1, batch_size=32, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, model.encoder.parameters()))
    assert history["grad_evals"] == [3 * (1 + 5)]
    # evaluation uses the refined posterior (stated in the docstring): it differs from the encoder's
    assert not torch.allclose(model.posterior(X[:8]).mean, model.encoder(X[:8])[0])


def test_sa_vae_end_to_end_gives_the_encoder_the_derivative_through_the_refinement_steps():
    """With the noise fixed, the encoder's gradient is d loss / d phi through all K steps (finite differences)."""
    from pyro.infer import Trace_ELBO

    from pyro_lid.models import SAVAE

    torch.set_default_dtype(torch.float64)
    try:
        pyro.set_rng_seed(0)
        model = SAVAE(6, 2, hidden_dims=(8,), refine_steps=3, refine_lr=0.05, end_to_end=True)
        x = torch.bernoulli(torch.rand(5, 6, generator=torch.Generator().manual_seed(1)))
        weight = model.encoder.loc.weight

        def loss():
            pyro.set_rng_seed(3)  # the same noise in the refinement and in the ELBO for every evaluation
            return Trace_ELBO().differentiable_loss(model.model, model.guide, x)

        model.zero_grad()
        loss().backward()
        analytic = weight.grad[0, :3].clone()
        numeric = []
        for j in range(3):
            with torch.no_grad():
                weight[0, j] += 1e-6
            up = loss().item()
            with torch.no_grad():
                weight[0, j] -= 2e-6
            down = loss().item()
            with torch.no_grad():
                weight[0, j] += 1e-6
            numeric.append((up - down) / 2e-6)
        assert analytic.abs().max() > 1e-3
        torch.testing.assert_close(analytic, torch.tensor(numeric), rtol=1e-5, atol=1e-7)
        # the default trains towards the refined posterior instead: a different encoder gradient
        model.end_to_end = False
        model.zero_grad()
        loss().backward()
        assert not torch.allclose(weight.grad[0, :3], analytic, rtol=1e-3)
        assert model.extra_gradient_evaluations == 3
    finally:
        torch.set_default_dtype(torch.float32)


# ------------------------------------------------------------------ Li et al. 2019
def test_reset_decoder_restores_the_initial_decoder_and_forgets_its_optimizer_state():
    from pyro.optim import Adam

    from pyro_lid.infer.pretraining import initial_state, reset_decoder
    from pyro_lid.models import VAE

    pyro.clear_param_store()
    model = VAE(20, 3, hidden_dims=(16,))
    at_init = initial_state(model.decoder)
    encoder_init = [p.clone() for p in model.encoder.parameters()]
    optim = Adam({"lr": 1e-2})
    svi = pyro.infer.SVI(model.model, model.guide, optim, pyro.infer.Trace_ELBO())
    for _ in range(3):
        svi.step(X)
    trained_encoder = [p.clone() for p in model.encoder.parameters()]
    reset_decoder(model, at_init, optim)
    for key, value in model.decoder.state_dict().items():
        assert torch.equal(value, at_init[key]), key
    assert all(not torch.equal(a, b) for a, b in zip(encoder_init, trained_encoder))
    assert all(torch.equal(a, b) for a, b in zip(trained_encoder, model.encoder.parameters()))
    decoder_ids = {id(p) for p in model.decoder.parameters()}
    assert not any(id(p) in decoder_ids for p in optim.optim_objs)
    assert any(id(p) not in decoder_ids for p in optim.optim_objs)  # the encoder's Adam state is kept


def test_li_et_al_pretrains_an_autoencoder_then_trains_with_free_bits_and_resumes_exactly(tmp_path):
    from pyro_lid.models import VAE

    options = METHODS["li_et_al"].fit_options(3)
    schedule = options.pop("kl_schedule")  # Li et al.'s warm-up from 0 after the reset, fitted to the 2 epochs left
    assert options == {"free_bits": 0.1, "free_bits_per_point": True, "pretrain_epochs": 1}  # each point floored
    assert (schedule.kind, schedule.start, schedule.warmup_epochs) == ("linear", 0.0, 1.0)
    pyro.set_rng_seed(0)
    # interrupted after the autoencoder epoch (patience 0 stops there), resumed across the decoder reset
    history, first, _ = assert_resume_is_exact(
        lambda: VAE(20, 3, hidden_dims=(16,)), X[:96], X[96:], tmp_path / "li.pt", epochs=3,
        interrupt={"early_stopping_patience": 0}, batch_size=32, kl_schedule=schedule, **options,
    )  # fmt: skip
    assert history["phase"] == ["autoencoder", "vae", "vae"]
    assert history["kl_weight"] == [0.0, 1.0, 1.0]  # the weight at each epoch's end: warmed up within the first
    # the autoencoder phase pays no KL, so its code carries more than the VAE phase lets it keep
    assert history["kl"][0] > history["kl"][2]
    assert first["phase"] == ["autoencoder"]
    with pytest.raises(ValueError, match="pretrain_epochs"):
        fit(VAE(20, 3, hidden_dims=(16,)), X, epochs=2, pretrain_epochs=2, progress=False)
    with pytest.raises(ValueError, match="at least 2 epochs"):
        METHODS["li_et_al"].fit_options(1)


def test_semi_amortized_applies_to_mixture_prior_and_identifiable_models():
    from pyro_lid.models import GMVAE, LIDGMVAE, VAE, semi_amortized
    from pyro_lid.models.savae import register_semi_amortized

    assert semi_amortized(VAE) is SAVAE and semi_amortized(LIDGMVAE) is semi_amortized(LIDGMVAE)
    assert semi_amortized(LSTMVAE) is SALSTMVAE  # the text model's named version
    with pytest.raises(ValueError, match="not SemiAmortized over"):
        register_semi_amortized(LSTMVAE, SAVAE)
    pyro.set_rng_seed(0)
    model = semi_amortized(LIDGMVAE)(20, 3, hidden_dims=(16,), icnn_hidden_dims=(8,), num_components=3)
    assert isinstance(model, LIDGMVAE) and model.refine_steps == 10
    fit(model, X[:96], epochs=1, batch_size=32, progress=False)
    loc0, scale0 = model.encoder(X)
    loc, scale = model.refine(X, loc0, scale0)
    pyro.set_rng_seed(1)
    initial = model.local_elbo(X, loc0.detach(), scale0.detach().log(), num_samples=200)
    pyro.set_rng_seed(1)
    refined = model.local_elbo(X, loc, scale.log(), num_samples=200)
    assert refined.mean() > initial.mean()
    with pytest.raises(ValueError, match="enumerate_clusters"):
        semi_amortized(GMVAE)(20, 3, enumerate_clusters=True)
    with pytest.raises(ValueError, match="model class"):
        semi_amortized(torch.nn.Linear)
    for bad in ({"refine_steps": -1}, {"refine_lr": 0.0}, {"refine_samples": 0}, {"refine_max_norm": 0.0}):
        with pytest.raises(ValueError, match="refine_max_norm > 0"):
            SAVAE(20, 3, **bad)


def test_the_comparison_reports_cost_relative_to_the_vae_and_resumes_without_retraining(tmp_path, monkeypatch):
    import json

    import pyro_lid.experiments.image_comparison as harness

    options = dict(num_train=200, num_test=100, epochs=2, latent_dim=2, hidden=16, icnn_hidden=8, num_samples=3)
    rows = harness.run_image_comparison(
        "synthetic", models=("vae", "sa_vae"), output_dir=tmp_path, progress=False, **options
    )
    vae, sa = rows
    assert sa["grad_evals_per_epoch"] == 2 * (1 + 2 * 10) and vae["grad_evals_per_epoch"] == 2  # end to end: 2K extra
    table = harness.format_results(rows)
    assert f"| {sa['seconds_per_epoch'] / vae['seconds_per_epoch']:.1f} |" in table.splitlines()[3]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["protocol"]["epochs"] == 2 and [r["model"] for r in saved["rows"]] == ["vae", "sa_vae"]
    assert (tmp_path / "comparison.png").stat().st_size > 0
    assert (tmp_path / "training_curves.png").stat().st_size > 0
    # methods run in separate directories (in parallel, say) merge into one report
    other = tmp_path / "other"
    harness.run_image_comparison("synthetic", models=("lidvae",), output_dir=other, progress=False, **options)
    protocol, merged, histories = harness.load_results([other, tmp_path])
    assert [r["model"] for r in merged] == ["vae", "sa_vae", "lidvae"]  # the registry's order
    assert list(histories) == ["vae", "sa_vae", "lidvae"] and len(histories["lidvae"]) == 2
    from pyro_lid.cli import main

    assert main(["report", str(tmp_path), str(other), "--figures", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "training_curves.png").exists()
    # what cannot be merged or drawn is refused, naming the problem
    with pytest.raises(FileNotFoundError, match="results.json not found"):
        harness.load_results([tmp_path / "figs"])
    changed = json.loads((other / "results.json").read_text())
    changed["protocol"]["epochs"] = 5
    (tmp_path / "changed").mkdir()
    (tmp_path / "changed" / "results.json").write_text(json.dumps(changed))
    with pytest.raises(ValueError, match="another protocol"):
        harness.load_results([tmp_path, tmp_path / "changed"])
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(rows))  # a bare list: not a results file
    with pytest.raises(ValueError, match="not a comparison's results file"):
        harness.load_results([tmp_path / "old"])
    for damaged in ("results.json", "history_lidvae.json"):  # a file cut short (a copy that failed) is named
        (tmp_path / "cut").mkdir(exist_ok=True)
        for name in ("results.json", "history_lidvae.json"):
            (tmp_path / "cut" / name).write_text((other / name).read_text())
        (tmp_path / "cut" / damaged).write_text((other / damaged).read_text()[:50])
        with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'cut' / damaged} is not valid JSON")):
            harness.load_results([tmp_path / "cut"])
    with pytest.raises(ValueError, match="at least one result row"):
        harness.plot_results([])
    with pytest.raises(ValueError, match="validation records"):
        harness.plot_histories({"vae": [{"epoch": 1, "train_loss": 1.0}]})

    # resuming with a new method in the middle keeps every finished row in the file at every write
    harness.run_image_comparison(
        "synthetic", models=("vae", "lidvae", "sa_vae"), output_dir=tmp_path, progress=False, resume=True, **options
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert sorted(r["model"] for r in saved["rows"]) == ["lidvae", "sa_vae", "vae"]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished method was trained again")

    monkeypatch.setattr(harness, "fit", no_training)
    again = harness.run_image_comparison(
        "synthetic", models=("vae", "sa_vae"), output_dir=tmp_path, progress=False, resume=True, **options
    )
    assert again == rows
    with pytest.raises(ValueError, match="protocol"):
        harness.run_image_comparison(
            "synthetic", models=("vae",), output_dir=tmp_path, resume=True, **{**options, "epochs": 3}
        )


def test_sa_vae_steps_are_clipped_per_data_point_so_large_inputs_do_not_diverge():
    from pyro_lid.models import SAVAE

    x = torch.bernoulli(torch.rand(50, 784, generator=torch.Generator().manual_seed(0)))
    model = SAVAE(784, 8, hidden_dims=(32,), refine_steps=1, refine_lr=1.0, refine_max_norm=2.0)
    loc0, scale0 = model.encoder(x)
    loc, scale = model.refine(x, loc0, scale0)
    moved = ((loc - loc0).square().sum(-1) + (scale.log() - scale0.log()).square().sum(-1)).sqrt()
    assert moved.max() <= 2.0 * (1 + 1e-5) and moved.min() > 1.0  # 784 pixels: every gradient is clipped
    model.refine_steps = 20
    assert torch.isfinite(model.posterior(x).mean).all()


def test_a_variant_overrides_one_option_of_a_named_method_and_refuses_a_misspelt_one():
    from pyro_lid.experiments.methods import file_stem, resolve_method

    variant = resolve_method("lidvae_projection:margin=3:inner=brenier")
    assert variant.model_kwargs == {"construction": "projection", "margin": 3, "inner": "brenier"}
    assert METHODS["lidvae_projection"].model_kwargs["margin"] == 1.0  # the registry is untouched
    model = variant.build(20, 4, hidden=16, icnn_hidden=16)
    assert model.decoder.injective_map.injectivity_bound() >= 3.0
    assert resolve_method("vae") is METHODS["vae"]
    for bad, message in [("lidvae_projection:margn=3", "does not take"), ("nope", "unknown model"),
                         ("vae:margin", "key=value")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            resolve_method(bad)
    assert file_stem("lidvae_projection:margin=3") == "lidvae_projection-margin=3"


def test_potential_lr_is_a_fit_option_that_scales_exactly_the_brenier_potentials():
    from pyro_lid.experiments.methods import resolve_method
    from pyro_lid.infer.engine.learning_rates import resolve_lr_multipliers

    for spec, maps in [("lidvae:inner=brenier:potential_lr=0.3", 1), ("lidvae_brenier:potential_lr=0.3", 2)]:
        variant = resolve_method(spec)
        assert "potential_lr" not in variant.model_kwargs
        multipliers = variant.fit_options(10)["lr_multipliers"]
        model = variant.build(20, 4, hidden=16, icnn_hidden=16)
        factors = resolve_lr_multipliers(model, multipliers)
        potentials = {n for n, _ in model.named_parameters() if ".potential." in n}
        assert set(factors) == potentials and set(factors.values()) == {0.3}
        assert len({n.split(".potential.")[0] for n in potentials}) == maps
    with pytest.raises(ValueError, match="matches no parameter"):  # the diagonal inner map has no potential
        resolve_method("lidvae:potential_lr=0.3")


@pytest.mark.parametrize("base", ["lidvae", "lidsvae:margin=5", "vae"])
def test_warmup_and_free_bits_are_fit_options_that_combine_with_any_model(base):
    from pyro_lid.experiments.methods import resolve_method

    plain = resolve_method(base)
    variant = resolve_method(f"{base}:warmup=4:free_bits=0.2")
    assert variant.model_class is plain.model_class and variant.model_kwargs == plain.model_kwargs
    options = variant.fit_options(10)
    schedule = options.pop("kl_schedule")
    assert options == {**plain.fit_options(10), "free_bits": 0.2}
    assert [schedule(t) for t in (0, 2, 4, 6)] == [0.0, 0.5, 1.0, 1.0]  # linear over 4 epochs
    short = resolve_method(f"{base}:warmup=4").fit_options(2)["kl_schedule"]  # fitted to a 2-epoch budget
    assert [short(t) for t in (0.5, 1, 2)] == [0.5, 1.0, 1.0]
    for bad in ("warmup=0", "warmup=-1", "warmup=soon", "free_bits=0", "free_bits=-0.1", "free_bits=many"):
        with pytest.raises(ValueError, match=f"'{base}:{bad}': {bad.split('=')[0]} must be a number"):
            resolve_method(f"{base}:{bad}")


def test_icnn_depth_sets_the_number_of_hidden_layers_of_every_potential():
    from pyro_lid.experiments.methods import resolve_method

    for depth in (1, 3):
        model = resolve_method(f"lidvae_brenier:icnn_depth={depth}").build(20, 4, hidden=16, icnn_hidden=8)
        potentials = [m for n, m in model.named_modules() if n.endswith(".potential")]
        assert len(potentials) == 2 and all(p.hidden_dims == [8] * depth for p in potentials)
    default = resolve_method("lidvae:inner=brenier").build(20, 4, hidden=16, icnn_hidden=8)
    assert default.decoder.injective_map.inner_map.potential.hidden_dims == [8, 8]
    for bad in ("lidvae:inner=brenier:icnn_depth=0", "vae:icnn_depth=2"):
        with pytest.raises(ValueError, match="icnn_depth"):
            resolve_method(bad)


def test_potential_shape_options_reach_every_icnn_potential():
    from pyro_lid.experiments.methods import resolve_method

    for spec, count in (
        ("lidvae:inner=brenier:sharpness=2:output_gain=3", 1),
        ("lidvae_brenier:sharpness=2:output_gain=3", 2),
    ):
        model = resolve_method(spec).build(20, 4, hidden=16, icnn_hidden=4)
        potentials = [m for n, m in model.named_modules() if n.endswith(".potential")]
        assert len(potentials) == count and all(p.sharpness == 2.0 for p in potentials)
        assert all(p.output_scale == 3.0 * min(1.0, p.input_dim / 4) for p in potentials)
    default = resolve_method("lidvae:inner=brenier").build(20, 4, hidden=16, icnn_hidden=4)
    assert default.decoder.injective_map.inner_map.potential.sharpness == 1.0
    assert abs(default.decoder.injective_map.inner_map.potential.alpha.item() - 4.0) < 1e-6  # 2 * margin 2
    started = resolve_method("lidvae:inner=brenier:alpha_init=2.05").build(20, 4, hidden=16, icnn_hidden=4)
    assert abs(started.decoder.injective_map.inner_map.potential.alpha.item() - 2.05) < 1e-6
    for bad in ("lidvae:sharpness=2", "lidvae:inner=residual:output_gain=2"):
        with pytest.raises(ValueError, match="set the ICNN potentials of construction='brenier' or inner='brenier'"):
            resolve_method(bad)
    with pytest.raises(ValueError, match="sharpness must be a finite number > 0"):
        resolve_method("lidvae:inner=brenier:sharpness=0")


def test_image_step_benchmark_times_every_setting_against_the_vae():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "benchmarks" / "image_step.py"
    result = subprocess.run([sys.executable, str(script), "--quick", "--models", "lidvae,lidvae:inner=brenier@8"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("|") for line in result.stdout.splitlines() if line.startswith("| ") and "ms per" not in line]
    assert [row[1].strip() for row in rows] == ["vae", "lidvae", "lidvae:inner=brenier@8"]  # the VAE is added
    assert float(rows[0][3]) == 1.0 and all(float(row[2]) > 0 for row in rows)


def test_sa_vae_momentum_steps_are_heavy_ball_steps_on_each_points_clipped_gradient():
    """``refine_momentum`` against the update written out by hand: v <- mu v + clip(g), lambda <- lambda + eta v."""
    from pyro_lid.models.savae import gaussian_elbo, refine_gaussian

    torch.set_default_dtype(torch.float64)
    try:
        mixing = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
        x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1)) * 3

        def log_joint(x, z):  # N(z; 0, I) N(x; z A, I), up to constants
            return -0.5 * z.square().sum(-1) - 0.5 * (x - z @ mixing).square().sum(-1)

        loc0, log_scale0 = torch.zeros(4, 3), torch.full((4, 3), -1.0)
        steps, lr, mu, clip = 4, 0.2, 0.5, 2.0
        pyro.set_rng_seed(7)
        loc, log_scale = refine_gaussian(log_joint, x, loc0, log_scale0, steps, lr, max_norm=clip, momentum=mu)
        pyro.set_rng_seed(7)  # the same noise, step for step
        lam, v = [loc0.clone(), log_scale0.clone()], [torch.zeros(4, 3), torch.zeros(4, 3)]
        clipped_some = False
        for _ in range(steps):
            lam = [t.detach().requires_grad_(True) for t in lam]
            grads = torch.autograd.grad(gaussian_elbo(log_joint, x, *lam).sum(), lam)
            norm = torch.cat(grads, -1).norm(dim=-1, keepdim=True)
            clipped_some |= bool((norm > clip).any())
            grads = [g * torch.clamp(clip / norm, max=1.0) for g in grads]
            v = [mu * vi + g for vi, g in zip(v, grads)]
            lam = [t.detach() + lr * vi for t, vi in zip(lam, v)]
        assert clipped_some  # the clip is part of what is checked
        torch.testing.assert_close(loc, lam[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(log_scale, lam[1], rtol=1e-12, atol=1e-12)
        pyro.set_rng_seed(7)
        plain = refine_gaussian(log_joint, x, loc0, log_scale0, steps, lr, max_norm=clip)
        assert not torch.allclose(plain[0], loc)  # momentum changes the path
    finally:
        torch.set_default_dtype(torch.float32)


def test_sa_vae_decoder_through_steps_gives_the_decoder_its_total_derivative():
    """With the noise fixed, the decoder's gradient is d loss / d theta through lambda_K(theta) as well (finite
    differences); without the option it is the partial derivative at fixed lambda_K, a different number."""
    from pyro.infer import Trace_ELBO

    from pyro_lid.models import SAVAE

    torch.set_default_dtype(torch.float64)
    try:
        pyro.set_rng_seed(0)
        model = SAVAE(6, 2, hidden_dims=(8,), refine_steps=3, refine_lr=0.05, end_to_end=True,
                      refine_momentum=0.5, decoder_through_steps=True)  # fmt: skip
        x = torch.bernoulli(torch.rand(5, 6, generator=torch.Generator().manual_seed(1)))
        weight = next(p for p in model.decoder.parameters() if p.dim() == 2)  # the first layer, from z

        def loss():
            pyro.set_rng_seed(3)  # the same noise in the refinement and in the ELBO for every evaluation
            return Trace_ELBO().differentiable_loss(model.model, model.guide, x)

        model.zero_grad()
        loss().backward()
        analytic = weight.grad[:3, 0].clone()
        numeric = []
        for j in range(3):
            with torch.no_grad():
                weight[j, 0] += 1e-6
            up = loss().item()
            with torch.no_grad():
                weight[j, 0] -= 2e-6
            down = loss().item()
            with torch.no_grad():
                weight[j, 0] += 1e-6
            numeric.append((up - down) / 2e-6)
        assert analytic.abs().max() > 1e-3
        torch.testing.assert_close(analytic, torch.tensor(numeric), rtol=1e-5, atol=1e-7)
        model.decoder_through_steps = False  # the decoder a constant of the steps: another gradient
        model.zero_grad()
        loss().backward()
        assert not torch.allclose(weight.grad[:3, 0], analytic, rtol=1e-3)
        assert all(p.requires_grad for p in model.parameters())
    finally:
        torch.set_default_dtype(torch.float32)


def test_sa_vae_kims_refinement_is_a_variant_of_the_registrys_for_images_and_text():
    from pyro_lid.experiments.methods import resolve_method, text_version

    spec = "sa_vae:refine_steps=20:refine_lr=0.03125:refine_max_norm=28:refine_momentum=0.5:decoder_through_steps=1"
    variant = resolve_method(spec)
    model = variant.build(20, 4, hidden=16)
    assert (model.refine_steps, model.refine_momentum, model.decoder_through_steps) == (20, 0.5, True)
    text_class, options = text_version(variant)
    assert text_class is SALSTMVAE and options["refine_momentum"] == 0.5 and options["decoder_through_steps"]
    for bad, message in [({"refine_momentum": 1.0}, "refine_momentum"), ({"refine_momentum": -0.1}, "refine_momentum"),
                         ({"decoder_through_steps": True}, "needs end_to_end")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            SAVAE(20, 4, **bad)


@pytest.mark.parametrize("bad", ["no", 0.5, "yes"])
def test_sa_vae_flags_refuse_what_is_not_true_or_false(bad):
    """``bool("no")`` is True: a misspelt flag in a variant must fail, not switch the option on."""
    from pyro_lid.experiments.methods import resolve_method

    for flag in ("decoder_through_steps", "end_to_end"):
        with pytest.raises(ValueError, match=f"{flag} must be True or False"):
            SAVAE(20, 4, **{"end_to_end": True, flag: bad})
    with pytest.raises(ValueError, match="does not take these options"):
        resolve_method(f"sa_vae:decoder_through_steps={bad}")
    with pytest.raises(ValueError, match="refine_momentum must be a number"):
        SAVAE(20, 4, refine_momentum=bad if isinstance(bad, str) else True)


def test_text_sa_vae_trains_with_kims_refinement():
    data, make = _image_and_text("text")
    model = make(SALSTMVAE, 4, refine_steps=3, refine_lr=0.05, end_to_end=True, refine_momentum=0.5,
                 decoder_through_steps=True)  # fmt: skip
    decoder_before = [p.clone() for p in model.decoder.parameters()]
    history = fit(model, data[:64], epochs=1, batch_size=32, progress=False)
    assert all(torch.isfinite(torch.tensor(history["train_loss"])))
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, model.decoder.parameters()))
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert torch.isfinite(model.posterior(data[:8]).mean).all()


@pytest.mark.parametrize("through", [False, True], ids=["decoder-a-constant-of-the-steps", "decoder-through-the-steps"])
def test_sa_vae_refine_checkpoint_gives_the_same_loss_and_gradients_and_is_no_part_of_the_recipe(through):
    """Gradient checkpointing of the refinement's steps recomputes them in the backward pass with the same draws:
    the loss and every parameter's gradient are those of the kept graph (float64), the model's parameters stay
    constants of the steps unless ``decoder_through_steps``, and the option changes no recipe."""
    from pyro.infer import Trace_ELBO

    from pyro_lid.infer.checkpoints import describe_model

    data, make = _image_and_text("text")
    torch.set_default_dtype(torch.float64)
    try:
        results, models = {}, {}
        for checkpointed in (False, True):
            pyro.set_rng_seed(0)
            model = make(SALSTMVAE, 3, refine_steps=3, refine_lr=0.05, end_to_end=True, refine_momentum=0.5,
                         decoder_through_steps=through, refine_checkpoint=checkpointed)  # fmt: skip
            pyro.set_rng_seed(3)
            loss = Trace_ELBO().differentiable_loss(model.model, model.guide, data[:16])
            loss.backward()
            results[checkpointed] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
            assert all(p.requires_grad for p in model.parameters())
            models[checkpointed] = model
        (loss, grads), (loss_checkpointed, grads_checkpointed) = results[False], results[True]
        assert loss == loss_checkpointed
        assert grads.keys() == grads_checkpointed.keys()
        for name in grads:
            torch.testing.assert_close(grads_checkpointed[name], grads[name], rtol=1e-10, atol=1e-12, msg=name)
        assert (
            grads["encoder.loc.weight"].abs().max() > 1e-6 and grads["decoder.latent_to_state.weight"].abs().max() > 0
        )
        assert describe_model(models[False], modules=True) == describe_model(models[True], modules=True)
        assert models[True].extra_gradient_evaluations == 12 and models[False].extra_gradient_evaluations == 6
    finally:
        torch.set_default_dtype(torch.float32)
    with pytest.raises(ValueError, match="refine_checkpoint must be True or False"):
        SAVAE(20, 4, end_to_end=True, refine_checkpoint="no")
    with pytest.raises(ValueError, match="refine_checkpoint needs end_to_end"):
        SAVAE(20, 4, refine_checkpoint=True)


def test_sa_vae_refine_checkpoint_keeps_no_step_and_computes_each_again_in_the_backward_pass():
    """What the option does, counted: without it the backward pass evaluates no ELBO (every step's graph is kept);
    with it each of the K steps' ELBO is evaluated again there (and once more when the step takes its gradient)."""
    from pyro.infer import Trace_ELBO

    counts = {}
    for checkpointed in (False, True):
        pyro.set_rng_seed(0)
        model = SAVAE(6, 2, hidden_dims=(8,), refine_steps=4, end_to_end=True, refine_checkpoint=checkpointed)
        calls, log_joint = [], model.log_joint
        model.log_joint = lambda x, z, calls=calls, log_joint=log_joint: calls.append(1) or log_joint(x, z)
        loss = Trace_ELBO().differentiable_loss(model.model, model.guide, torch.bernoulli(torch.rand(5, 6)))
        forward = len(calls)
        loss.backward()
        counts[checkpointed] = (forward, len(calls) - forward)
    assert counts[False] == (4, 0)  # the K steps; the ELBO's own term is the model's, not log_joint
    assert counts[True] == (8, 4)


def test_an_sa_vae_comparison_stopped_without_refine_checkpoint_goes_on_with_it_to_the_same_row(tmp_path, monkeypatch):
    """The incident the option is for: a text SA-VAE run stopped (out of memory) goes on with ``refine_checkpoint``
    (``--resume --refine-checkpoint``): the resume is not refused, and it ends where a straight run ends."""
    import pyro_lid.experiments.text_comparison as harness
    from pyro_lid.infer.engine.callbacks import Callback

    class StopInSecondEpoch(Callback):
        def on_train_step_end(self, loop, epoch, step, x):
            if (epoch, step) == (1, 1):
                raise KeyboardInterrupt

    options = dict(models=("sa_vae",), epochs=2, latent_dim=2, embed_dim=8, hidden_dim=8, num_samples=3,
                   num_sentences=120, batch_size=24, language_model=False, progress=False)  # fmt: skip
    straight = harness.run_text_comparison("synthetic-text", output_dir=tmp_path / "straight", **options)
    real_fit, used = harness.fit, []
    monkeypatch.setattr(harness, "fit", lambda model, *a, callbacks=(), **k: real_fit(
        model, *a, callbacks=[*callbacks, StopInSecondEpoch()], **k))  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        harness.run_text_comparison("synthetic-text", output_dir=tmp_path / "stopped", **options)

    class Epochs(Callback):  # the epochs the resumed run trains: the second only (the first is in its checkpoint)
        trained = set()

        def on_train_step_end(self, loop, epoch, step, x):
            self.trained.add(epoch)

    monkeypatch.setattr(harness, "fit", lambda model, *a, callbacks=(), **k: used.append(model.refine_checkpoint)
                        or real_fit(model, *a, callbacks=[*callbacks, Epochs()], **k))  # fmt: skip
    resumed = harness.run_text_comparison("synthetic-text", output_dir=tmp_path / "stopped", resume=True,
                                          refine_checkpoint=True, **options)  # fmt: skip
    assert used == [True] and Epochs.trained == {1}
    differ = {k for k in straight[0] if straight[0][k] != resumed[0][k]}
    timings = {"seconds_per_epoch", "tokens_per_second", "eval_seconds", "train_seconds", "relative_cost", "seconds"}
    assert differ <= timings | {"grad_evals_per_epoch"}, differ  # the recomputed steps are counted as cost
    assert resumed[0]["grad_evals_per_epoch"] > straight[0]["grad_evals_per_epoch"]
    assert resumed[0]["nll"] == straight[0]["nll"] and resumed[0]["kl"] == straight[0]["kl"]
    for method in ("lstm_vae", "sa_vae:end_to_end=false"):  # refused before the (here missing) corpus is read
        with pytest.raises(ValueError, match="--refine-checkpoint applies to models that refine end to end"):
            harness.run_text_comparison(tmp_path / "no-such-corpus.txt", output_dir=tmp_path / "plain",
                                        refine_checkpoint=True, **{**options, "models": (method,)})  # fmt: skip
    assert not (tmp_path / "plain").exists()
    for resolve in (resolve_method, harness.resolve_text_method):  # a variant would rename the row: refused
        with pytest.raises(ValueError, match="refine_checkpoint is not part of a method.*--refine-checkpoint"):
            resolve("sa_vae:refine_checkpoint=true")


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "--dataset", "synthetic-text", "--models", "lstm_vae"],
        ["study", "--dataset", "synthetic", "--models", "vae"],
        ["compare", "--dataset", "synthetic", "--models", "vae,sa_vae:end_to_end=false"],
    ],
)
def test_refine_checkpoint_where_no_model_refines_end_to_end_is_refused_on_the_command_line(argv, tmp_path, capsys):
    from pyro_lid.cli import main

    with pytest.raises(SystemExit) as exited:
        main([*argv, "--output-dir", str(tmp_path / "out"), "--refine-checkpoint"])
    assert exited.value.code == 2
    assert "--refine-checkpoint applies to models that refine end to end" in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize(
    "script, expected",
    [("evaluation_posteriors.py", "x faster"), ("refinement_memory.py", "losses equal: True")],
)
def test_the_sa_vae_benchmarks_run_and_print_their_ratios(script, expected):
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "benchmarks" / script
    options = ["--models", "sa_vae", "--repeats", "1"] if script.startswith("evaluation") else []
    result = subprocess.run([sys.executable, str(path), "--quick", *options], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout


def test_which_methods_refine_end_to_end_is_read_from_their_options_and_their_class_s_default():
    from pyro_lid.experiments.methods import Method, refines_end_to_end

    class EndToEndByDefault(SAVAE):
        def __init__(self, *args, end_to_end=True, **kwargs):
            super().__init__(*args, end_to_end=end_to_end, **kwargs)

    assert refines_end_to_end(resolve_method("sa_vae"))
    assert not refines_end_to_end(resolve_method("sa_vae:end_to_end=false"))
    assert not refines_end_to_end(resolve_method("vae")) and not refines_end_to_end(Method(SAVAE, {}))
    assert refines_end_to_end(Method(EndToEndByDefault, {"refine_steps": 3}))
    assert not refines_end_to_end(Method(EndToEndByDefault, {"end_to_end": False}))
    assert not refines_end_to_end(Method(SAVAE, {"end_to_end": "false"}))  # not True: the model would refuse it


def test_a_semi_amortized_model_s_text_version_is_its_base_s_refined_alike_never_the_unrefined_base():
    from pyro_lid.experiments.methods import Method, text_version
    from pyro_lid.models import LIDSVAE, SALIDSVAE, SemiAmortized, semi_amortized
    from pyro_lid.models.vae import VAE, BatchNormalized

    assert text_version(resolve_method("sa_vae"))[0] is SALSTMVAE
    options = {"refine_steps": 3, "refine_lr": 0.2, "end_to_end": True, "margin": 2.0}
    assert text_version(Method(semi_amortized(LIDVAE), options)) == (SALIDSVAE, options)
    assert semi_amortized(LIDSVAE) is SALIDSVAE

    class OwnRefinement(SAVAE):  # behaviour of its own: no text version is taken for it
        pass

    class OwnMixins(SemiAmortized, BatchNormalized, VAE):  # its base is the VAE, not the mixin before it
        pass

    for cls in (OwnRefinement, OwnMixins):
        with pytest.raises(ValueError, match="^own .* a semi-amortized class of its own, not semi_amortized.VAE."):
            text_version(Method(cls, {}), "own")
