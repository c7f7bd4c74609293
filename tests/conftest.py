import pyro
import pytest


@pytest.fixture(autouse=True)
def _seed_and_clean_param_store():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="module")
def sentences():
    """1,099 synthetic training sentences (16 words with the special ones): three mini-batches of the
    importance-weighted bound (500 each), eleven of the evaluations' posteriors (100 each, the last 99)."""
    from pyro_lid.data import synthetic_text

    return synthetic_text(1375, vocab_size=12, latent_dim=2, max_length=6, seed=2)[0].train
