"""Mixture priors placed on the data's clusters after a warm-up (``ClusterInitialization``)."""

import pyro
import pytest
import torch

from pyro_lid.infer import fit
from pyro_lid.infer.engine import Callback
from pyro_lid.models import GMVAE, GaussianMixturePrior

from .helpers import assert_resume_is_exact

F64 = torch.float64


def clustered_binary_data(n=300, dim=24, clusters=3, flip=0.05, seed=0):
    """Noisy copies of ``clusters`` random binary prototypes: the answer (the prototype) is known."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.bernoulli(torch.full((clusters, dim), 0.5), generator=gen)
    labels = torch.arange(n) % clusters
    flips = torch.bernoulli(torch.full((n, dim), flip), generator=gen)
    return (prototypes[labels] + flips) % 2, labels


def test_components_match_the_aggregate_posteriors_moments_per_cluster():
    prior = GaussianMixturePrior(2, 2).double()
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 40 + [1] * 60)
    means = torch.tensor([[-8.0, 0.0], [8.0, 0.0]], dtype=F64)[labels] + torch.randn(100, 2, generator=gen, dtype=F64)
    variances = torch.rand(100, 2, generator=gen, dtype=F64) + 0.5
    assignment = prior.initialize_from(means, torch.Generator().manual_seed(1), point_variances=variances)
    for c in range(2):
        members = assignment == c
        expected = means[members].var(0) + variances[members].mean(0)  # Var[m] + E[v] per dimension
        assert torch.allclose(prior.scales[c].square(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="point_variances must be non-negative"):
        prior.initialize_from(means, point_variances=-variances)


def test_fit_initializes_once_at_the_end_of_the_warm_up_epoch_without_touching_trainings_random_streams():
    x, _ = clustered_binary_data()

    def make(init):
        pyro.set_rng_seed(0)
        return GMVAE(24, 2, hidden_dims=(16,), num_components=3, cluster_init_epochs=init)

    calls = []
    original = GaussianMixturePrior.initialize_from

    def spy(self, *args, **kwargs):
        calls.append(self.locs.detach().clone())
        return original(self, *args, **kwargs)

    class RandomState(Callback):  # runs after the built-in callbacks, hence after the initialization
        def __init__(self):
            self.states = []

        def on_train_epoch_end(self, loop, epoch, record):
            self.states.append(torch.get_rng_state())

    plain, late, plain_state, late_state = make(None), make(3), RandomState(), RandomState()
    x = 0.1 + 0.8 * x  # intensities, binarized afresh each step: the initialization binarizes its points too
    options = dict(epochs=3, batch_size=50, progress=False, val_metrics=False, dynamic_binarization=True)
    fit(plain, x, callbacks=[plain_state], **options)
    GaussianMixturePrior.initialize_from = spy
    try:
        history = fit(late, x, callbacks=[late_state], **options)
    finally:
        GaussianMixturePrior.initialize_from = original
    assert len(calls) == 1 and [r.get("clusters_initialized") for r in history.records] == [None, None, 3]
    # it ran after the last step: the prior it found is the plain run's, and nothing else moved
    assert torch.equal(calls[0], plain.prior.locs)
    for (key, value), other in zip(plain.state_dict().items(), late.state_dict().values()):
        assert torch.equal(value, other) or key.startswith("prior."), key
    assert not torch.equal(plain.prior.locs, late.prior.locs)
    assert torch.equal(plain_state.states[-1], late_state.states[-1])  # its draws came from its own generator


def test_a_run_resumed_after_the_warm_up_keeps_the_prior_it_found(tmp_path):
    x, _ = clustered_binary_data()

    def make():
        pyro.set_rng_seed(0)
        return GMVAE(24, 2, hidden_dims=(16,), num_components=3, cluster_init_epochs=1)

    _, interrupted, resumed = assert_resume_is_exact(
        make, x, None, tmp_path / "ck.pt", 3, {"epochs": 2}, batch_size=50, val_metrics=False
    )
    assert [r.get("clusters_initialized") for r in resumed.records] == [1, None, None]


def test_cluster_init_epochs_is_checked():
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="cluster_init_epochs must be .auto., None or an integer >= 1"):
            GMVAE(4, 2, cluster_init_epochs=bad)
