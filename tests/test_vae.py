"""VAE family, the training loop, and the data loaders."""

import math
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.optim import Adam
from pyro.poutine.messenger import Messenger

from pyro_lid.data import binarize, load_images, read_idx, synthetic_latent_data
from pyro_lid.diagnostics import active_units
from pyro_lid.infer import FreeBitsELBO, KLSchedule, TrainingDiverged, fit
from pyro_lid.models import GMVAE, LIDGMVAE, LIDVAE, VAE, cluster_accuracy

from .helpers import assert_resume_is_exact, exploding, write_idx

SMALL = {"hidden_dims": (32,)}
LID_SMALL = {"hidden_dims": (32,), "icnn_hidden_dims": (16,)}


def weak_signal_data(n=2000):
    x, _ = synthetic_latent_data(n, 4, 20, "bernoulli", signal=0.5, generator=torch.Generator().manual_seed(7))
    return x


def test_vae_collapses_where_lidvae_keeps_every_true_dimension():
    """4 true latents with a weak signal: the VAE's posterior collapses, the injective decoder's cannot."""
    x = weak_signal_data()
    train, val = x[:1700], x[1700:]
    results = {}
    for cls, kwargs in (
        (VAE, {"hidden_dims": (128, 128)}),
        (LIDVAE, {"hidden_dims": (128, 128), "icnn_hidden_dims": (64,)}),
    ):
        pyro.set_rng_seed(0)
        model = cls(20, 4, **kwargs)
        fit(model, train, epochs=10, batch_size=100, progress=False)
        results[cls.__name__] = active_units(model, val)["count"]
    assert results["VAE"] < 4  # measured: 0 of 4 active
    assert results["LIDVAE"] == 4


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (LIDVAE, LID_SMALL),
        (LIDVAE, {**LID_SMALL, "construction": "brenier"}),
        (LIDGMVAE, {**LID_SMALL, "num_components": 3}),
        (LIDGMVAE, {**LID_SMALL, "num_components": 3, "construction": "brenier"}),
    ],
)
def test_lid_models_train_with_plain_svi_written_by_a_user(cls, kwargs):
    x = weak_signal_data(256)
    model = cls(20, 4, **kwargs)
    svi = SVI(model.model, model.guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(40)]
    assert sum(losses[-5:]) < sum(losses[:5])


def test_enumerated_gmvae_trains_with_trace_enum_elbo_and_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.bernoulli(torch.full((3, 20), 0.5), generator=gen)
    labels = torch.arange(600) % 3
    flips = torch.bernoulli(torch.full((600, 20), 0.05), generator=gen)
    x = (centres[labels] + flips) % 2  # three well separated binary clusters
    model = GMVAE(20, 2, num_components=3, enumerate_clusters=True, **SMALL)
    assert isinstance(model.default_loss(), TraceEnum_ELBO)
    fit(model, x, epochs=25, batch_size=60, lr=1e-2, progress=False)
    clusters = model.cluster(x)
    # chance is 1/3; a GMVAE may merge two of the clusters (a local optimum: 2/3 here), never all three
    assert cluster_accuracy(clusters, labels) > 0.6
    posterior = model.posterior(x[:5])
    assert posterior.batch_shape == (5,) and posterior.event_shape == (2,)


def test_cluster_accuracy_uses_the_majority_label_of_each_cluster():
    clusters = torch.tensor([0, 0, 0, 1, 1, 2])
    labels = torch.tensor([5, 5, 4, 3, 3, 3])
    assert cluster_accuracy(clusters, labels) == pytest.approx(5 / 6)


class RecordLatent(Messenger):
    """Keeps the value of every sample site named ``name`` that passes through it."""

    def __init__(self, name):
        super().__init__()
        self.name, self.values = name, []

    def _postprocess_message(self, msg):
        if msg["type"] == "sample" and msg["name"] == self.name:
            self.values.append(msg["value"])


def standard_normal_log_density(z):
    return (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)


@pytest.mark.parametrize("beta, kl_weight", [(1.0, 1.0), (0.2, 1.0), (0.5, 0.4)])
def test_beta_scales_the_kl_term(beta, kl_weight):
    """The loss is -(E_q log p(x|z) - beta * kl_weight * KL) at the very draws Trace_ELBO makes."""
    x = weak_signal_data(64).double()
    model = VAE(20, 4, beta=beta, **SMALL).double()
    model.kl_weight = kl_weight
    recorder = RecordLatent("z")
    elbo = Trace_ELBO(num_particles=50, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.loss(model.model, recorder(model.guide), x)
    (z,) = recorder.values
    assert z.shape == (50, 64, 4)
    with torch.no_grad():
        logits = model.decoder.net(z)
        reconstruction = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)  # Bernoulli, by hand
        loc, scale = model.encoder(x)
        log_q = (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        kl = log_q - standard_normal_log_density(z)  # Monte Carlo KL at each draw, (particles, batch)
    expected = -(reconstruction.sum(-1) - beta * kl_weight * kl.sum(-1)).mean()
    assert loss == pytest.approx(float(expected), rel=1e-10)
    assert float(kl.sum(-1).mean()) > 1.0  # the KL term is large enough for the scaling to show


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    x = weak_signal_data(400)
    pyro.set_rng_seed(0)
    *_, history = assert_resume_is_exact(
        lambda: GMVAE(20, 3, num_components=2, **SMALL), x[:300], x[300:], tmp_path / "run.pt", epochs=3,
        interrupt={"epochs": 2}, batch_size=50, dynamic_binarization=True, seed=3,
    )  # fmt: skip
    assert len(history) == 3


def test_bad_data_is_rejected_with_a_clear_error():
    model = VAE(20, 4, **SMALL)
    x = weak_signal_data(50)
    with pytest.raises(ValueError, match=r"shape \(batch, 20\)"):
        model.model(x[:, :10])
    bad = x.clone()
    bad[3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit(model, bad, epochs=1, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        model.guide(bad)
    with pytest.raises(ValueError, match="optimizer"):
        fit(model, x, optimizer="sgd", progress=False)
    with pytest.raises(ValueError, match="resume"):
        fit(model, x, resume=True, progress=False)


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    Exploding = exploding(VAE, after_steps=12)  # the 13th step: epoch 2, step 3 (10 steps an epoch)

    x = weak_signal_data(500)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 3.*end of epoch 1"):
        fit(Exploding(20, 4, **SMALL), x, epochs=3, batch_size=50, checkpoint=ckpt, progress=False)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1


@pytest.mark.parametrize("strategy", ["standard", "lagging"])
def test_a_finite_loss_with_non_finite_gradients_stops_before_the_step_and_no_checkpoint_holds_nan(tmp_path, strategy):
    """sqrt at 0 has a finite value and an infinite slope: the loss passes a finiteness check, the step would write
    NaN into the parameters, and the next checkpoint would keep them as the last good state."""
    import pyro

    class NaNGradient(VAE):
        steps = 0

        def model(self, x, num_data=None):
            NaNGradient.steps += 1
            if NaNGradient.steps == 13:  # epoch 2, step 3 (10 steps an epoch)
                w = next(self.decoder.parameters()).sum()
                pyro.factor("finite_loss_nan_gradient", torch.sqrt((w - w.detach()) ** 2))
            return super().model(x, num_data)

    x, ckpt = weak_signal_data(500), tmp_path / "ckpt.pt"
    model = NaNGradient(20, 4, **SMALL)
    options = dict(epochs=3, batch_size=50, checkpoint=ckpt, checkpoint_every_n_steps=1, progress=False)
    where = r"at epoch 2, step 3; last good state is in the checkpoint .* \(epoch 2, step 2 of 10\)"
    if strategy == "lagging":  # the 13th ELBO evaluation is an encoder step of the first step's inner loop
        options.update(strategy="lagging", val_data=x[:100])
        where = "at epoch 1, step 1; last good state is in no checkpoint"
    with pytest.raises(
        TrainingDiverged, match=rf"non-finite gradient of vae\$\$\$decoder.* \(the loss was finite\) {where}"
    ):
        fit(model, x, **options)
    if strategy == "standard":
        saved = torch.load(ckpt, weights_only=False)
        assert (saved["epoch"], saved["step"]) == (1, 2)
        assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the model in memory is the last good state too


def test_early_stopping_follows_the_validation_loss(monkeypatch):
    import pyro_lid.infer.training as training

    losses = iter([5.0, 4.0, 4.5, 4.6, 4.7, 4.8])
    monkeypatch.setattr(training, "_validate", lambda *a, **k: {"val_loss": next(losses)})
    x = weak_signal_data(100)
    history = fit(VAE(20, 2, **SMALL), x, x, epochs=6, batch_size=50, early_stopping_patience=2, progress=False)
    assert history.stopped_early and len(history) == 4


def test_kl_schedules():
    linear = KLSchedule("linear", warmup_epochs=4)
    assert [linear(t) for t in (0, 2, 4, 6)] == [0.0, 0.5, 1.0, 1.0]
    cyclical = KLSchedule("cyclical", cycle_epochs=4, ramp_fraction=0.5)
    assert [cyclical(t) for t in (0, 1, 2, 3, 4, 5)] == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="schedule"):
        KLSchedule("exponential")


def test_free_bits_objective_floors_every_dimension():
    """-(E log p(x|z) - beta * B * sum_d max(mean_b KL_bd, lambda)), some dimensions above the floor, some below."""
    x = weak_signal_data(64).double()
    model = VAE(20, 4, beta=0.5, **SMALL).double()
    with torch.no_grad():
        model.encoder.loc.weight[:2] *= 20.0  # dimensions 0 and 1 carry information, 2 and 3 barely any
    elbo = FreeBitsELBO(free_bits=0.5)
    pyro.set_rng_seed(0)
    loss = elbo.differentiable_loss(model.model, model.guide, x)
    pyro.set_rng_seed(0)
    z = poutine.trace(model.guide).get_trace(x).nodes["z"]["value"]  # the draw the objective used
    # the reference, by hand: Bernoulli log-likelihood at z and the analytic KL of N(loc, scale^2) to N(0, 1)
    logits = model.decoder.net(z)
    reconstruction = (x * logits - torch.nn.functional.softplus(logits)).sum()
    loc, scale = model.encoder(x)
    kl_per_dim = (0.5 * (scale**2 + loc**2 - 1) - scale.log()).mean(0)
    below = kl_per_dim < 0.5
    assert below.tolist() == [False, False, True, True]
    floored = torch.where(below, torch.full_like(kl_per_dim, 0.5), kl_per_dim)
    expected = -(reconstruction - 0.5 * 64 * floored.sum())
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    terms = FreeBitsELBO(free_bits=0.5).terms(model.model, model.guide, x)
    assert terms["floor"] == 0.5 and terms["batch_size"] == 64 and terms["latent_scale"] == 0.5
    torch.testing.assert_close(terms["kl_per_group"], kl_per_dim, rtol=1e-12, atol=0)  # one group per dimension
    # a floored dimension exerts no pull on the encoder: the loss's gradient there is the reconstruction's
    weight = model.encoder.loc.weight
    (loss_grad,) = torch.autograd.grad(loss, weight, retain_graph=True)
    (reconstruction_grad,) = torch.autograd.grad(-reconstruction, weight)
    torch.testing.assert_close(loss_grad[below], reconstruction_grad[below], rtol=1e-12, atol=1e-12)
    assert (loss_grad[~below] - reconstruction_grad[~below]).abs().min() > 1e-6
    history = fit(model, x, epochs=2, batch_size=32, free_bits=0.5, progress=False)
    assert len(history) == 2


def test_free_bits_per_point_floors_each_data_points_kl_not_the_batch_mean():
    """Li et al.'s floor: -(E log p(x|z) - beta * sum_b sum_d max(KL_bd, lambda)); in a dimension whose batch mean
    is above the floor, the points below it still exert no pull, which the batch-mean floor would not give."""
    x = weak_signal_data(64).double()
    model = VAE(20, 4, beta=0.5, **SMALL).double()
    with torch.no_grad():
        model.encoder.loc.weight[:2] *= 20.0
    loc, scale = model.encoder(x)
    kl = 0.5 * (scale**2 + loc**2 - 1) - scale.log()  # (B, K)
    below = kl < 0.5
    mixed = below.any(0) & (kl.mean(0) > 0.5)  # some points below the floor, the batch mean above it
    assert mixed.any() and below.any() and (~below).any()
    pyro.set_rng_seed(0)
    loss = FreeBitsELBO(0.5, per_point=True).differentiable_loss(model.model, model.guide, x)
    pyro.set_rng_seed(0)
    batch_mean = FreeBitsELBO(0.5).differentiable_loss(model.model, model.guide, x)
    pyro.set_rng_seed(0)
    z = poutine.trace(model.guide).get_trace(x).nodes["z"]["value"]
    logits = model.decoder.net(z)
    reconstruction = (x * logits - torch.nn.functional.softplus(logits)).sum()
    expected = -(reconstruction - 0.5 * kl.clamp_min(0.5).sum())
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    assert abs(float((loss - batch_mean).detach())) > 1e-3  # not the batch-mean floor
    # the gradient as the hand-made objective's: the KL of a (point, dimension) below the floor is not trained
    params = [model.encoder.loc.weight, model.encoder.loc.bias]
    for got, want in zip(torch.autograd.grad(loss, params), torch.autograd.grad(expected, params)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # a mixture prior: one group per data point, floored at K * lambda
    mixture = GMVAE(20, 3, num_components=4, **SMALL).double()
    pyro.set_rng_seed(0)
    terms = FreeBitsELBO(0.4, per_point=True).terms(mixture.model, mixture.guide, x)
    assert terms["kl"].shape == (64, 1) and terms["floor"] == pytest.approx(1.2)
    pyro.set_rng_seed(0)
    mixture_loss = FreeBitsELBO(0.4, per_point=True).differentiable_loss(mixture.model, mixture.guide, x)
    torch.testing.assert_close(mixture_loss, -(terms["reconstruction"] - terms["kl"].clamp_min(1.2).sum()))
    with pytest.raises(ValueError, match="per_point"):
        FreeBitsELBO(0.5, per_point="yes")


def test_fit_trains_the_per_point_floor_and_li_et_al_uses_it(monkeypatch, tmp_path):
    from pyro_lid.experiments.methods import METHODS
    from pyro_lid.infer import CheckpointError

    x = weak_signal_data(80)
    with pytest.raises(ValueError, match="free_bits_per_point=True needs free_bits"):
        fit(VAE(20, 2, **SMALL), x, epochs=1, free_bits_per_point=True)
    seen = []
    original = FreeBitsELBO.differentiable_loss

    def spy(self, *args, **kwargs):
        seen.append(self.per_point)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FreeBitsELBO, "differentiable_loss", spy)
    checkpoint = tmp_path / "run.pt"
    fit(VAE(20, 2, **SMALL), x, epochs=1, batch_size=40, free_bits=0.1, free_bits_per_point=True,
        checkpoint=checkpoint, progress=False)  # fmt: skip
    assert seen and all(seen)
    # the floor's kind is part of the training configuration: a resume with the other kind is refused
    assert torch.load(checkpoint, weights_only=False)["config"]["loss"]["per_point"] is True
    with pytest.raises(CheckpointError, match="per_point"):
        fit(VAE(20, 2, **SMALL), x, epochs=2, batch_size=40, free_bits=0.1, checkpoint=checkpoint, resume=True,
            progress=False)  # fmt: skip
    # the batch-mean floor records no per_point: its checkpoints from before the option still resume
    fit(VAE(20, 2, **SMALL), x, epochs=1, batch_size=40, free_bits=0.1, checkpoint=tmp_path / "b.pt", progress=False)
    assert "per_point" not in torch.load(tmp_path / "b.pt", weights_only=False)["config"]["loss"]
    assert METHODS["li_et_al"].fit_options(10)["free_bits_per_point"] is True
    assert "free_bits_per_point" not in METHODS["free_bits"].fit_options(10)


def test_free_bits_with_a_mixture_prior_floors_the_whole_latent_vector():
    x = weak_signal_data(64)
    model = GMVAE(20, 3, num_components=4, **SMALL)
    # lambda = 0 is the plain ELBO at the same sample (Monte Carlo KL, the mixture's exact log density)
    pyro.set_rng_seed(0)
    free = FreeBitsELBO(0.0).differentiable_loss(model.model, model.guide, x)
    pyro.set_rng_seed(0)
    plain = pyro.infer.Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    torch.testing.assert_close(free, plain)
    # a high floor: one group, floored at K * lambda
    pyro.set_rng_seed(0)
    terms = FreeBitsELBO(5.0).terms(model.model, model.guide, x)
    assert terms["kl_per_group"].shape == (1,) and terms["floor"] == 15.0
    assert terms["kl_per_group"].item() < 15.0
    pyro.set_rng_seed(0)
    loss = FreeBitsELBO(5.0).differentiable_loss(model.model, model.guide, x)
    torch.testing.assert_close(loss, -(terms["reconstruction"] - 15.0 * 64))
    history = fit(model, x, epochs=2, batch_size=32, free_bits=0.1, progress=False)
    assert len(history) == 2
    enumerated = GMVAE(20, 3, num_components=4, enumerate_clusters=True, **SMALL)
    with pytest.raises(ValueError, match="only latent site"):
        FreeBitsELBO(0.5).loss(enumerated.model, enumerated.guide, x)


def test_fit_uses_the_whole_pipeline_with_schedules_and_validation_metrics():
    x = weak_signal_data(300)
    history = fit(
        LIDVAE(20, 4, **LID_SMALL),
        x[:200],
        x[200:],
        epochs=2,
        batch_size=50,
        kl_schedule="linear",
        optimizer="rmsprop",
        clip_norm=5.0,
        progress=False,
    )
    record = history.records[-1]
    assert {"val_loss", "kl", "au", "mi", "seconds", "grad_evals"} <= set(record)
    assert history["kl_weight"] == [0.1, 0.2]


# ------------------------------------------------------------------ data
def test_image_loader_reads_idx_files_from_a_root(tmp_path):
    images = torch.randint(0, 256, (7, 28, 28))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", torch.arange(7))
    assert torch.equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), images.to(torch.uint8))
    x, y = load_images("mnist", "test", root=tmp_path)
    assert x.shape == (7, 784) and torch.allclose(x * 255, images.reshape(7, -1).float())
    assert torch.equal(y, torch.arange(7))
    b = binarize(x, seed=1)
    assert torch.equal(b, binarize(x, seed=1)) and set(b.unique().tolist()) <= {0.0, 1.0}


def test_missing_dataset_says_what_to_install(tmp_path, monkeypatch):
    """Whatever the machine has installed: the system-wide folders are made empty for this test."""
    import pyro_lid.data.images as images

    system, root = tmp_path / "system", tmp_path / "root"
    system.mkdir()
    root.mkdir()  # an existing, empty root
    for spec in images.DATASETS.values():
        monkeypatch.setitem(spec, "system", [str(system)])
    with pytest.raises(FileNotFoundError) as missing:
        load_images("fashion-mnist", "train", root=root)
    message = str(missing.value)
    assert "train-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message  # the files looked for
    assert str(root) in message and str(system) in message  # where
    assert "apt-get install dataset-fashion-mnist" in message  # what to install
    with pytest.raises(FileNotFoundError) as missing:
        load_images("mnist", "test", root=root)
    message = str(missing.value)
    assert "t10k-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "root=" in message and "apt-get" not in message  # MNIST has no package: pass a root
    with pytest.raises(ValueError, match="unknown data set"):
        load_images("cifar", "train")


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_from_the_debian_package():
    x, y = load_images("fashion-mnist", "test")
    assert x.shape == (10000, 784) and 0 <= x.min() and x.max() <= 1 and set(y.unique().tolist()) == set(range(10))


def test_comparison_example_smoke_test_runs():
    script = Path(__file__).resolve().parent.parent / "examples" / "lidvae_fashion_mnist.py"
    result = subprocess.run(
        [sys.executable, str(script), "--smoke-test", "--dataset", "synthetic"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("vae", "beta_vae", "gmvae", "lidgmvae", "lidvae"):
        assert f"| {name} |" in result.stdout


@pytest.mark.parametrize("cls, margin", [(LIDVAE, 2.0), (LIDGMVAE, 3.0)], ids=["LIDVAE", "LIDGMVAE"])
def test_default_decoders_are_projections_with_their_documented_margin(cls, margin):
    torch.manual_seed(0)
    model = cls(20, 4, hidden_dims=(16,)).double()
    g = model.decoder.injective_map
    assert type(g).__name__ == "ProjectedInjective" and g.margin == margin
    z = 3 * torch.randn(25, 4, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: g(v).sum(0), z).transpose(0, 1)  # (25, 20, 4)
    assert (torch.linalg.svdvals(jacobian) >= margin * (1 - 1e-9)).all()


@pytest.mark.parametrize("cls", [LIDVAE, LIDGMVAE], ids=["LIDVAE", "LIDGMVAE"])
def test_empty_hidden_dims_make_the_free_part_affine_as_in_the_vae(cls):
    # hidden_dims=() is an affine decoder for VAE; the free MLP m of the injective decoder must match
    def linear_shapes(module):
        return [tuple(layer.weight.shape) for layer in module.modules() if isinstance(layer, torch.nn.Linear)]

    assert linear_shapes(VAE(10, 2, hidden_dims=()).decoder) == [(10, 2)]
    assert linear_shapes(cls(10, 2, hidden_dims=()).decoder.injective_map.layers) == [(10, 2)]


def test_an_encoder_without_hidden_layers_is_affine_in_the_data_not_clipped_at_zero():
    from pyro_lid.models.networks import GaussianEncoder

    encoder = GaussianEncoder(4, 2, hidden_dims=()).double()
    x = -torch.rand(2, 4, dtype=torch.float64) - 0.1  # all negative: a ReLU on the data would zero both
    loc, _ = encoder(x)
    assert not torch.allclose(loc[0], loc[1])
    midpoint, _ = encoder(x.mean(0, keepdim=True))
    assert torch.allclose(midpoint[0], loc.mean(0))  # affine
