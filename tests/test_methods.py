"""Baseline mechanisms (BN-VAE, IL-LIDVAE) and the method registry."""

import pyro
import pytest
import torch

from pyro_lid.experiments.methods import METHODS
from pyro_lid.infer import fit
from pyro_lid.models import BNVAE, ILLIDVAE, LIDVAE

X = torch.bernoulli(torch.rand(128, 20, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("gamma", [0.3, 0.7])
def test_bn_vae_floors_the_expected_kl(gamma):
    model = BNVAE(20, 8, hidden_dims=(32,), gamma=gamma)
    with torch.no_grad():
        model.encoder.shift.normal_()  # any learned shift only adds to the floor
    q = model.posterior(X).base_dist  # training mode: batch statistics
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1).mean()
    assert kl >= 8 * gamma**2 / 2 * (1 - 1e-3)  # (1e-3: BatchNorm's epsilon)
    plain = BNVAE(20, 8, hidden_dims=(32,), gamma=gamma)
    plain.encoder.norm = torch.nn.Identity()  # without batch norm nothing holds the KL up
    q0 = plain.posterior(X).base_dist
    assert torch.distributions.kl_divergence(q0, torch.distributions.Normal(0.0, 1.0)).sum(-1).mean() < kl


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


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_builds_and_trains_one_epoch(name):
    method = METHODS[name]
    pyro.set_rng_seed(0)
    model = method.build(20, 3, hidden=16, icnn_hidden=8, num_components=2)
    assert isinstance(model, method.model_class)
    history = fit(model, X, epochs=1, batch_size=64, progress=False, **method.fit_kwargs)
    assert len(history) == 1 and history.records[0]["grad_evals"] == 2
    assert method.reference


def test_registry_recipes_are_the_documented_ones():
    assert METHODS["beta_vae"].model_kwargs == {"beta": 0.2}
    assert METHODS["free_bits"].fit_kwargs == {"free_bits": 0.1}
    assert METHODS["anneal"].fit_kwargs["kl_schedule"](2.5) == pytest.approx(0.5)
    assert issubclass(METHODS["il_lidvae"].model_class, LIDVAE)
