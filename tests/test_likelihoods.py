import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_lid.distributions import CategoricalFamily, IdentifiableLikelihood, NormalFamily, make_family


@pytest.mark.parametrize("batch_shape", [(5,), (3, 5)])
@pytest.mark.parametrize(
    "family, kwargs",
    [("bernoulli", {}), ("normal", {"scale": 0.3}), ("normal", {}), ("categorical", {"num_classes": 4})],
)
def test_identifiable_likelihood_shapes(family, kwargs, batch_shape):
    lik = IdentifiableLikelihood(3, 6, family, [16], [16], **kwargs)
    d = lik(torch.randn(*batch_shape, 3))
    assert d.batch_shape == batch_shape and d.event_shape == (6,)
    x = d.sample()
    assert d.log_prob(x).shape == batch_shape


def test_categorical_logits_are_pinned_so_the_map_is_injective():
    family = CategoricalFamily(2, 3)
    params = torch.randn(4, family.param_dim)
    probs = family(params).base_dist.probs  # (4, 2, 3)
    # the free logits are recovered from the probabilities: eta = log p_k - log p_last
    recovered = (probs[..., :-1].log() - probs[..., -1:].log()).reshape(4, -1)
    assert torch.allclose(recovered, params, atol=1e-5)
    # a common shift of all V logits would be invisible to softmax; here it cannot happen
    assert not torch.allclose(family(params + 1.0).base_dist.probs, probs)


def test_likelihoods_validate_observations():
    lik = IdentifiableLikelihood(2, 4, "bernoulli", [8], [8])
    with pytest.raises(ValueError, match=r"^Bernoulli likelihood needs binary data; got values in \[0\.5, 0\.5\]"):
        lik(torch.randn(3, 2)).log_prob(torch.full((3, 4), 0.5))
    cat = IdentifiableLikelihood(2, 4, "categorical", [8], [8], num_classes=3)
    with pytest.raises(ValueError, match=r"support \(IntegerInterval\(lower_bound=0, upper_bound=2\)\)"):
        cat(torch.randn(3, 2)).log_prob(torch.full((3, 4), 5))
    with pytest.raises(ValueError, match="at least as many parameters"):
        IdentifiableLikelihood(5, 3, "bernoulli")
    with pytest.raises(ValueError, match="likelihood must be one of"):
        make_family("poisson", 3)
    with pytest.raises(ValueError, match="scale"):
        NormalFamily(3, scale=0.0)


def test_identifiable_likelihood_is_injective_with_the_guaranteed_margin():
    lik = IdentifiableLikelihood(3, 10, "normal", [16], [16], alpha_floor=0.5, scale=1.0)
    z = 2 * torch.randn(50, 3)
    sigma = lik.injective_map.smallest_singular_value(z)
    assert (sigma >= lik.injective_map.injectivity_bound() * (1 - 1e-5)).all()


def test_drops_into_a_user_pyro_model_and_trains():
    lik = IdentifiableLikelihood(2, 8, "bernoulli", [16], [16])
    encoder = torch.nn.Linear(8, 4)
    x = torch.bernoulli(torch.rand(64, 8))

    def model(x):
        pyro.module("lik", lik)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", lik(z), obs=x)

    def guide(x):
        pyro.module("enc", encoder)
        with pyro.plate("data", x.shape[0]):
            h = encoder(x)
            pyro.sample("z", dist.Normal(h[:, :2], torch.nn.functional.softplus(h[:, 2:]) + 1e-3).to_event(1))

    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(60)]
    assert sum(losses[-10:]) < sum(losses[:10])


def test_a_learned_subspace_moves_under_training_and_keeps_the_margin():
    torch.manual_seed(0)
    lik = IdentifiableLikelihood(3, 12, "bernoulli", None, [16], construction="projection", margin=2.0,
                                 learn_subspace=True).double()  # fmt: skip
    before = lik.injective_map.subspace.detach().clone()
    x = torch.bernoulli(torch.rand(32, 12, dtype=torch.float64))
    optimizer = torch.optim.Adam(lik.parameters(), lr=0.05)
    for _ in range(20):
        optimizer.zero_grad()
        (-lik(torch.randn(32, 3, dtype=torch.float64)).log_prob(x).mean()).backward()
        optimizer.step()
    q = lik.injective_map.subspace
    assert (q - before).abs().max() > 1e-2  # Q is learned ...
    assert torch.allclose(q.T @ q, torch.eye(3, dtype=torch.float64), atol=1e-10)  # ... and stays orthonormal
    z = 3 * torch.randn(40, 3, dtype=torch.float64)
    assert (torch.linalg.svdvals(lik.injective_map.jacobian(z)) >= 2.0 * (1 - 1e-9)).all()
    with pytest.raises(ValueError, match="learn_subspace applies to construction='projection'"):
        IdentifiableLikelihood(3, 12, "bernoulli", construction="brenier", learn_subspace=True)
