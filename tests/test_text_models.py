"""Text methods by name, the text comparison, its command line, and collapse on synthetic text."""

import pyro
import pytest
import torch

from pyro_lid.data import synthetic_text
from pyro_lid.experiments.methods import METHODS, TEXT_METHODS, resolve_method, resolve_text_method
from pyro_lid.infer import fit
from pyro_lid.models import LIDGMVAE, LIDMVAE, LIDSVAE, LSTMVAE


@pytest.fixture(scope="module")
def tiny():
    return synthetic_text(60, vocab_size=10, latent_dim=2, max_length=6, seed=1)[0]


# ------------------------------------------------------------------ 1. text methods by name
@pytest.mark.parametrize("name", TEXT_METHODS)
def test_every_text_method_builds_its_text_model_and_trains_with_its_recipe(name, tiny):
    method = METHODS[name]
    pyro.set_rng_seed(0)
    model = method.build_text(len(tiny.vocab), 3, 8, 8)
    lid = method.model_class is LIDSVAE or "lid" in name
    assert type(model) is (LIDSVAE if lid else LSTMVAE)
    history = fit(model, tiny.train[:40], tiny.valid, epochs=2, batch_size=20, progress=False, **method.fit_options(2))
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(history["train_loss"])))


def test_text_versions_carry_the_recipes_levers_over():
    assert resolve_method("beta_vae").build_text(20, 2, 4, 4).beta == 0.2
    assert resolve_method("lidvae_projection:margin=3").build_text(20, 2, 4, 4).margin == 3.0
    il = resolve_method("il_lidvae").build_text(20, 2, 4, 4)
    assert (il.inner, il.margin) == ("brenier", 0.5)
    assert resolve_method("lidsvae:margin=2").build_text(20, 2, 4, 4).injectivity_bound() >= 2.0
    assert METHODS["anneal"].fit_options(10) == METHODS["anneal"].fit_kwargs  # the recipe's fit options stay
    assert LIDMVAE is LIDGMVAE


@pytest.mark.parametrize("name", ["sa_vae", "bn_vae", "gmvae", "lidgmvae"])
def test_methods_without_a_text_version_are_refused_by_name(name):
    with pytest.raises(ValueError, match=f"^{name} .*no text version") as error:
        resolve_text_method(name)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="text model"):
        METHODS["lstm_vae"].build(10, 2)
    with pytest.raises(ValueError, match="does not take"):
        resolve_method("lidsvae:margn=2")
