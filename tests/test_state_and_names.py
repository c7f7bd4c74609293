"""Models and transforms that change state: parameter updates, copies, and several models in one param store.

The Brenier maps remember their last (input, output) pair; these tests check that what they
remember never outlives a parameter change, never hands back a spent autograd graph, and
never stops a model from being copied. The VAE models register themselves with Pyro under a
name; these tests check that two models in one parameter store both train.
"""

import copy
import importlib

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_lid.distributions import IdentifiableLikelihood
from pyro_lid.distributions.transforms import Brenier
from pyro_lid.models import BNVAE, GMVAE, ILLIDVAE, LIDGMVAE, LIDVAE, SAVAE, VAE, semi_amortized

from .helpers import perturb_

TINY = dict(hidden_dims=(8,))
TINY_LID = dict(hidden_dims=(8,), icnn_hidden_dims=(8,))


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def two_blobs(n=64, dim=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centre = torch.where(torch.rand(n, 1, generator=gen) < 0.5, -2.0, 2.0)
    return centre + 0.5 * torch.randn(n, dim, generator=gen)


def binary_data(n=32, dim=6, seed=0):
    """Two prototypes with a few flipped bits: something a 2-D latent can learn."""
    gen = torch.Generator().manual_seed(seed)
    proto = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])[:, :dim]
    x = proto[torch.randint(0, 2, (n,), generator=gen)]
    flip = torch.rand(n, dim, generator=gen) < 0.05
    return torch.where(flip, 1.0 - x, x)


def flow_distribution(transform, dim=2):
    dtype = next(transform.parameters()).dtype
    base = dist.Normal(torch.zeros(dim, dtype=dtype), torch.ones(dim, dtype=dtype)).to_event(1)
    return dist.TransformedDistribution(base, [transform])


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(module, before):
    """Names of the parameters of ``module`` that differ from ``before``."""
    return {k for k, v in module.named_parameters() if not torch.equal(v.detach(), before[k])}


def logits(likelihood, z):
    return likelihood(z).base_dist.logits


def decoded(likelihood, z):
    """The logits of ``z`` decoded without gradients (as a latent grid is, every epoch) and with them."""
    with torch.no_grad():
        quiet = logits(likelihood, z)
    loud = logits(likelihood, z)
    torch.testing.assert_close(quiet, loud.detach(), rtol=0, atol=0)
    return quiet


# ------------------------------------------------------------------ Brenier caches and parameter changes
def test_full_batch_brenier_flow_trains_with_svi_and_with_a_torch_optimizer():
    x = two_blobs()  # the same tensor at every step: the inverse of one data tensor, over and over

    transform = Brenier(2, [16, 16])
    flow = flow_distribution(transform)

    def model(data):
        pyro.module("flow", transform)
        with pyro.plate("data", data.shape[0]):
            pyro.sample("x", flow, obs=data)

    svi = SVI(model, lambda data: None, Adam({"lr": 2e-2}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(50)]
    assert sum(losses[-5:]) < sum(losses[:5]) - 0.05 * abs(sum(losses[:5]))

    transform = Brenier(2, [16, 16])
    flow = flow_distribution(transform)
    optim = torch.optim.Adam(transform.parameters(), lr=2e-2)
    losses = []
    for _ in range(20):
        optim.zero_grad()
        loss = -flow.log_prob(x).mean()
        loss.backward()
        # a second objective on the same tensor, backpropagated before the step
        (1e-3 * transform.inv(x).square().mean()).backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_inverse_and_forward_of_the_same_tensor_follow_an_optimizer_step(float64):
    transform = perturb_(Brenier(2, [16, 16]), 0.5)
    flow = flow_distribution(transform)
    y = 2 * torch.randn(20, 2)
    with torch.no_grad():
        x_before = transform.inv(y)  # remembered without a graph
    optim = torch.optim.Adam(transform.parameters(), lr=0.1)
    for _ in range(2):  # the second step scores the same y again: a stale graph would fail here
        optim.zero_grad()
        (-flow.log_prob(y).mean()).backward()
        optim.step()
    for grad_mode in (False, True):
        with torch.set_grad_enabled(grad_mode):
            x_after = transform.inv(y)
        with torch.no_grad():
            residual = (transform(x_after.detach().clone()) - y).abs().max()
        assert residual < 1e-6, (grad_mode, float(residual))
        assert (x_after - x_before).abs().max() > 1e-3
    # the forward map of one tensor follows the step too
    x = torch.randn(20, 2)
    y_before = transform(x).detach()
    optim.zero_grad()
    (-flow.log_prob(y).mean()).backward()
    optim.step()
    torch.testing.assert_close(transform(x), transform(x.clone()), rtol=0, atol=0)
    assert (transform(x) - y_before).abs().max() > 1e-3


def test_sample_then_log_prob_of_the_same_tensor_does_not_solve_for_the_inverse_again(monkeypatch):
    brenier_module = importlib.import_module("pyro_lid.distributions.transforms.brenier")
    transform = perturb_(Brenier(2, [8]).double(), 0.5)
    flow = flow_distribution(transform)
    iterations = []
    real_solver = brenier_module.invert_gradient_map

    def counting_solver(*args, **kwargs):
        # the Newton iterations from the start point: none when it already solves the system
        start = kwargs.get("x0")
        if start is None:
            iterations.append("solve")
        else:
            potential, y = args[0], args[1]
            with torch.no_grad():
                residual = (potential.gradient(start.reshape(y.shape), kwargs.get("context")) - y).abs().max()
            iterations.append("solve" if residual > 1e-9 else "warm")
        return real_solver(*args, **kwargs)

    monkeypatch.setattr(brenier_module, "invert_gradient_map", counting_solver)
    z = flow.rsample((5,))
    lp = flow.log_prob(z)
    lp.sum().backward()  # gradients through the remembered pair
    assert iterations == []
    z = flow.sample((5,))
    with torch.no_grad():
        flow.log_prob(z)
    assert iterations == []
    # with gradients the inverse needs a graph: one differentiable step from the remembered point,
    # with the gradients of a fresh solve
    lp = flow.log_prob(z)
    assert iterations == ["warm"] and lp.requires_grad
    params = list(transform.parameters())
    warm = torch.autograd.grad(lp.sum(), params)
    fresh = torch.autograd.grad(flow.log_prob(z.clone()).sum(), params)
    assert iterations == ["warm", "solve"]
    for a, b in zip(warm, fresh):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_the_same_latent_decoded_after_a_weight_change_gives_fresh_logits(float64):
    likelihood = IdentifiableLikelihood(2, 5, "bernoulli", [8], [8])
    perturb_(likelihood, 0.3)
    z = torch.randn(7, 2)  # a fixed latent grid, decoded again and again
    torch.testing.assert_close(decoded(likelihood, z), decoded(likelihood, z.clone()), rtol=0, atol=0)
    first = decoded(likelihood, z)  # z is the last tensor decoded before each change

    other = perturb_(IdentifiableLikelihood(2, 5, "bernoulli", [8], [8]), 0.3, seed=2)
    likelihood.load_state_dict(other.state_dict())
    second = decoded(likelihood, z)
    assert (second - first).abs().max() > 1e-3
    torch.testing.assert_close(second, decoded(other, z.clone()), rtol=0, atol=0)
    decoded(likelihood, z)

    optim = torch.optim.SGD(likelihood.parameters(), lr=0.5)
    x = torch.bernoulli(torch.full((7, 5), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # the same z scored twice: a stale graph would fail on the second backward
        optim.zero_grad()
        (-likelihood(z).log_prob(x).sum()).backward()
        optim.step()
    third = decoded(likelihood, z)
    assert (third - second).abs().max() > 1e-3
    torch.testing.assert_close(third, decoded(likelihood, z.clone()), rtol=0, atol=0)


@pytest.mark.parametrize("construction", ["brenier", "projection"])  # brenier: the cached inverse
def test_a_trained_lidvae_can_be_deep_copied_and_the_copy_trains_on_its_own(construction):
    x = binary_data()
    model = LIDVAE(6, 2, construction=construction, **TINY_LID)
    svi = SVI(model.model, model.guide, Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(3):
        svi.step(x)
    z = torch.randn(4, 2)
    model.decoder(z)  # the last thing it did: decode a tensor the caller still holds
    best = copy.deepcopy(model)
    torch.testing.assert_close(logits(best.decoder, z), logits(model.decoder, z), rtol=0, atol=0)
    model_before, best_before = snapshot(model), snapshot(best)
    best_svi = SVI(best.model, best.guide, Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(3):
        best_svi.step(x)
    assert changed(best, best_before) == set(best_before)
    assert changed(model, model_before) == set()
    for _ in range(2):
        svi.step(x)
    assert changed(model, model_before) == set(model_before)
    assert not torch.equal(logits(best.decoder, z), logits(model.decoder, z))


# ------------------------------------------------------------------ several models in one parameter store
@pytest.mark.parametrize(
    "first, second", [(VAE, LIDVAE), (VAE, VAE), (LIDVAE, LIDVAE)], ids=["vae+lidvae", "vae+vae", "lidvae+lidvae"]
)
def test_two_models_train_side_by_side_in_one_param_store(first, second):
    x = binary_data()
    models = [cls(6, 2, **(TINY_LID if cls is LIDVAE else TINY)) for cls in (first, second)]
    before = [snapshot(m) for m in models]
    svis = [SVI(m.model, m.guide, Adam({"lr": 2e-2}), Trace_ELBO()) for m in models]
    losses = [[], []]
    for _ in range(40):  # interleaved, as a user comparing two models in one script would
        for svi, record in zip(svis, losses):
            record.append(svi.step(x))
    for model, start, record in zip(models, before, losses):
        assert changed(model, start) == set(start), type(model).__name__
        assert sum(record[-8:]) < sum(record[:8]), type(model).__name__
    prefixes = {name.split("$$$")[0] for name in pyro.get_param_store().keys()}
    assert prefixes == {"vae", "vae_1"}
    assert {m.param_store_name for m in models} == {"vae", "vae_1"}


def test_model_names_are_used_as_given_and_leave_state_dicts_alone():
    x = binary_data(8)
    named = VAE(6, 2, name="left", **TINY)
    other = VAE(6, 2, name="right", **TINY)
    assert list(named.state_dict()) == list(VAE(6, 2, **TINY).state_dict())
    for m in (named, other):
        Trace_ELBO().loss(m.model, m.guide, x)
    store = pyro.get_param_store()
    assert {k.split("$$$")[0] for k in store.keys()} == {"left", "right"}
    for key, p in named.named_parameters():
        assert store[f"left$$${key}"] is p
    # an explicit name taken by another module is an error, not a silently untrained model
    clash = LIDVAE(6, 2, name="left", **TINY_LID)
    with pytest.raises(ValueError, match="'left'.*another module"):
        Trace_ELBO().loss(clash.model, clash.guide, x)
    with pytest.raises(ValueError, match="name"):
        VAE(6, 2, name="a$$$b")
    # a lone model with the default name registers as "vae", as before names existed (checkpoints keep
    # their optimizer state), also once the store is cleared after sharing it
    pyro.clear_param_store()
    lone = VAE(6, 2, **TINY)
    Trace_ELBO().loss(lone.model, lone.guide, x)
    assert lone.param_store_name == "vae" and all(k.startswith("vae$$$") for k in store.keys())
    second = VAE(6, 2, **TINY)
    Trace_ELBO().loss(second.model, second.guide, x)
    assert second.param_store_name == "vae_1"
    Trace_ELBO().loss(lone.model, lone.guide, x)  # the name it has, it keeps
    assert lone.param_store_name == "vae"
    pyro.clear_param_store()
    Trace_ELBO().loss(second.model, second.guide, x)
    assert second.param_store_name == "vae"


@pytest.mark.parametrize(
    "make",
    [
        lambda name: BNVAE(6, 2, name=name, **TINY),
        lambda name: LIDVAE(6, 2, name=name, **TINY_LID),
        lambda name: ILLIDVAE(6, 2, name=name, **TINY_LID),
        lambda name: GMVAE(6, 2, num_components=2, name=name, **TINY),
        lambda name: GMVAE(6, 2, num_components=2, enumerate_clusters=True, name=name, **TINY),
        lambda name: LIDGMVAE(6, 2, num_components=2, name=name, **TINY_LID),
        lambda name: SAVAE(6, 2, refine_steps=1, name=name, **TINY),
        lambda name: semi_amortized(LIDGMVAE)(6, 2, num_components=2, refine_steps=1, name=name, **TINY_LID),
    ],
    ids=["bnvae", "lidvae", "illidvae", "gmvae", "gmvae_enum", "lidgmvae", "savae", "sa_lidgmvae"],
)
def test_every_model_class_registers_under_its_name(make):
    model = make("mine")
    x = binary_data(8)
    model.default_loss().loss(model.model, model.guide, x)
    store = pyro.get_param_store()
    expected = {f"mine$$${k}" for k, p in model.named_parameters() if p.requires_grad}
    assert set(store.keys()) == expected


@pytest.mark.parametrize("ends", ["returns", "raises"])
def test_fit_leaves_other_models_and_the_users_params_in_the_store(ends):
    from pyro_lid.infer import TrainingDiverged, fit

    x = binary_data(n=40)
    user = pyro.param("my_scale", torch.tensor([0.5, 2.0]), constraint=dist.constraints.positive)
    other = VAE(6, 2, hidden_dims=(8,))
    other_svi = SVI(other.model, other.guide, Adam({"lr": 1e-2}), Trace_ELBO())
    other_svi.step(x)  # the other model holds "vae" in the store
    before = set(pyro.get_param_store().keys())

    class Diverging(VAE):
        def model(self, data, num_data=None):
            if ends == "raises":
                pyro.factor("boom", torch.tensor(float("inf")))
            return super().model(data, num_data)

    trained = Diverging(6, 2, hidden_dims=(8,))
    if ends == "raises":
        with pytest.raises(TrainingDiverged):
            fit(trained, x, epochs=2, batch_size=20, progress=False)
    else:
        fit(trained, x, epochs=2, batch_size=20, progress=False)
    store = pyro.get_param_store()
    assert torch.equal(pyro.param("my_scale"), user.detach()) and "my_scale" in store
    assert before - set(store.keys()) <= {k for k in before if k.startswith("vae$$$")}  # only the shared name moved
    mine = snapshot(other)
    for _ in range(3):  # the other model still trains with its own SVI, beside the fitted one
        other_svi.step(x)
    assert changed(other, mine) == set(dict(other.named_parameters()))
    if ends == "returns":  # and the fitted model trains on by SVI too, each under its own name
        fitted = snapshot(trained)
        SVI(trained.model, trained.guide, Adam({"lr": 1e-2}), Trace_ELBO()).step(x)
        assert changed(trained, fitted) == set(dict(trained.named_parameters()))
        assert trained.param_store_name != other.param_store_name


def test_two_language_models_in_one_store_both_train():
    """The language model registers as the VAEs do: a second one beside the first takes "lm_1" and trains, where a
    fixed name handed it the first one's parameters (its loss never moved)."""
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam

    from pyro_lid.models import LSTMLanguageModel

    pyro.clear_param_store()
    x = torch.tensor([[1, 4, 5, 2], [1, 6, 2, 0]])
    first, second = LSTMLanguageModel(8, 4, 4), LSTMLanguageModel(8, 4, 4)
    SVI(first.model, first.guide, Adam({"lr": 0.1}), Trace_ELBO()).step(x)
    before = {k: v.clone() for k, v in second.state_dict().items()}
    svi = SVI(second.model, second.guide, Adam({"lr": 0.1}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(3)]
    assert (first.param_store_name, second.param_store_name) == ("lm", "lm_1")
    assert losses[-1] < losses[0] and any(not torch.equal(v, second.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="the name 'lm' is held"):
        LSTMLanguageModel(8, 4, 4, name="lm").model(x)
    pyro.clear_param_store()
