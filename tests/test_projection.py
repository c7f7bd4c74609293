"""ProjectedInjective: g(z) = Q h(z) + (I - Q Q^T) m(z) + c is injective with margin, whatever the MLP m does."""

import doctest

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_lid.distributions.transforms import ProjectedInjective, projected_injective

from .helpers import central_difference, perturb_

F64 = torch.float64
K, D = 3, 8
CONFIGS = [  # (inner, learn_subspace, activation): every code path of the map
    ("diagonal", False, "relu"),
    ("diagonal", True, "softplus"),
    ("brenier", False, "softplus"),
    ("brenier", True, "relu"),
    ("residual", False, "relu"),
    ("residual", True, "softplus"),
]
CONFIG_IDS = [f"{i}-{'learnedQ' if q else 'fixedQ'}-{a}" for i, q, a in CONFIGS]


def make(inner="diagonal", learn_subspace=False, activation="relu", scale=0.5, seed=1, **kwargs):
    """A float64 map with every parameter moved away from its initialization (a curved map)."""
    if inner != "diagonal":
        kwargs = {"inner_hidden_dims": [6, 5], **kwargs}
    g = projected_injective(
        K, D, hidden_dims=(16, 16), inner=inner, learn_subspace=learn_subspace, activation=activation, **kwargs
    )
    return perturb_(g.double(), scale, seed)


def inner_reference(g, z):
    """h(z), computed from the public pieces without going through g."""
    if g.inner == "diagonal":
        return g.scale * z
    if g.inner == "residual":
        return g.inner_map.scale * (z + g.inner_map.residual(z))
    return g.inner_map.potential.gradient(z.reshape(-1, K)).reshape(z.shape)


def autograd_jacobian(g, z):
    flat = z.reshape(-1, K)
    jac = torch.stack([torch.autograd.functional.jacobian(g, zi.clone()) for zi in flat])
    return jac.reshape(z.shape[:-1] + (D, K))


def perturb_mlp_(g, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in g.layers.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def push_inner_to_its_floor_(g):
    """Make the inner map's guaranteed margin equal to ``margin`` (up to softplus(-30) = 1e-13)."""
    with torch.no_grad():
        raw = {"diagonal": lambda: g.scale_raw, "brenier": lambda: g.inner_map.potential.alpha_raw,
               "residual": lambda: g.inner_map.scale_raw}[g.inner]()  # fmt: skip
        raw.fill_(-30.0)


def gram_error(q):
    return (q.transpose(-1, -2) @ q - torch.eye(q.shape[-1], dtype=q.dtype)).abs().max().item()


# ---------------------------------------------------------------------------------------------- (1) the subspace


def test_fixed_subspace_is_an_orthonormal_buffer_determined_by_the_seed():
    torch.manual_seed(0)
    g = ProjectedInjective(K, D, hidden_dims=(16,), subspace_seed=5)
    torch.manual_seed(1)  # the global RNG plays no part in Q
    same = ProjectedInjective(K, D, hidden_dims=(16,), subspace_seed=5)
    other = ProjectedInjective(K, D, hidden_dims=(16,), subspace_seed=6)
    q = g.subspace
    assert q.shape == (D, K) and q.dtype == torch.get_default_dtype()
    assert torch.equal(q, same.subspace)
    assert (q - other.subspace).abs().max() > 0.1
    # a buffer: in the state_dict, not a parameter, not trained
    assert "subspace_basis" in g.state_dict()
    assert not any(p is g.subspace_basis for p in g.parameters())
    assert all(not name.startswith("subspace") for name, _ in g.named_parameters())
    assert not g.subspace_basis.requires_grad
    # a checkpoint carries it: loading into a map built with another seed restores this one's Q
    other.load_state_dict(g.state_dict())
    assert torch.equal(other.subspace, q)
    # the documented draw: A = Q R for a standard normal A from the seeded generator, diag(R) > 0
    a = torch.randn(D, K, generator=torch.Generator().manual_seed(5), dtype=F64)
    r = q.double().T @ a
    assert (q.double() @ r - a).abs().max() < 1e-5  # float32 Q
    assert (r.tril(-1).abs().max() < 1e-5) and (r.diagonal() > 0).all()
    assert gram_error(q) < 1e-6  # orthonormal to float32 precision as built
    # orthonormal in float64 to 1e-12 when the map is cast (re-orthonormalized, moved by float32 rounding only)
    q64 = g.double().subspace
    assert gram_error(q64) < 1e-12 and (q64 - q.double()).abs().max() < 1e-6
    assert gram_error(ProjectedInjective(K, D, hidden_dims=(16,), subspace_seed=5).double().subspace) < 1e-12
    assert gram_error(ProjectedInjective(2, 500, hidden_dims=(4,)).double().subspace) < 1e-12
    assert gram_error(ProjectedInjective(40, 40, hidden_dims=(4,)).double().subspace) < 1e-12  # K = D: a rotation


def test_learned_subspace_is_a_smooth_orthonormal_function_of_a_parameter():
    fixed = ProjectedInjective(K, D, hidden_dims=(16,), subspace_seed=3).double()
    g = ProjectedInjective(K, D, hidden_dims=(16,), subspace_seed=3, learn_subspace=True).double()
    assert "subspace_raw" in dict(g.named_parameters())
    assert "subspace_basis" not in g.state_dict()
    # Q is the QR factor of the parameter with diag(R) > 0: unique, hence a smooth function of it
    for seed in range(4):
        perturbed = perturb_(ProjectedInjective(K, D, hidden_dims=(4,), learn_subspace=True).double(), 1.0, seed)
        r = perturbed.subspace.T @ perturbed.subspace_raw
        assert (perturbed.subspace @ r - perturbed.subspace_raw).abs().max() < 1e-12
        assert r.tril(-1).abs().max() < 1e-12 and (r.diagonal() > 0).all()
    # starts at the fixed draw: the sign-fixed QR factor of an orthonormal matrix is that matrix
    assert (g.subspace - fixed.subspace).abs().max() < 1e-12
    perturb_(g, 0.5)
    assert gram_error(g.subspace) < 1e-12
    # continuous in the parameter (signs fixed by diag(R) > 0, not by LAPACK)
    with torch.no_grad():
        before = g.subspace.clone()
        g.subspace_raw.add_(1e-7 * torch.randn(D, K, dtype=F64))
        assert (g.subspace - before).abs().max() < 1e-5
    # trained: Q moves, stays orthonormal, and no stale copy is used by the map
    opt = torch.optim.Adam(g.parameters(), lr=0.1)
    z = torch.randn(32, K, dtype=F64)
    target = torch.randn(32, D, dtype=F64)
    for _ in range(5):
        opt.zero_grad()
        loss = (g(z) - target).pow(2).sum()
        loss.backward()
        assert g.subspace_raw.grad.abs().max() > 0
        opt.step()
    q = g.subspace
    assert gram_error(q) < 1e-12
    assert (q - before).abs().max() > 1e-3
    assert ((g(z) - g.offset) @ q - g.scale * z).abs().max() < 1e-10  # the current Q is the one used


# ---------------------------------------------------------------------------------------------- (2) the split


@pytest.mark.parametrize("inner, learn_subspace, activation", CONFIGS, ids=CONFIG_IDS)
def test_subspace_coordinates_are_the_inner_map_whatever_the_mlp(inner, learn_subspace, activation):
    g = make(inner, learn_subspace, activation)
    z = 2 * torch.randn(20, K, dtype=F64)
    outputs = []
    for seed in range(3):
        perturb_mlp_(g, 3.0, seed)  # large, arbitrary MLP weights
        y = g(z)
        outputs.append(y)
        coords = (y - g.offset) @ g.subspace
        assert (coords - inner_reference(g, z)).abs().max() < 1e-10
    assert (outputs[1] - outputs[0]).abs().max() > 1.0  # the MLP does change g: the identity above is not vacuous
    with torch.no_grad():
        g.offset.add_(torch.randn(D, dtype=F64))
    assert ((g(z) - g.offset) @ g.subspace - inner_reference(g, z)).abs().max() < 1e-10


# ---------------------------------------------------------------------------------------------- (3) Jacobian, margin


@pytest.mark.parametrize("inner, learn_subspace, activation", CONFIGS, ids=CONFIG_IDS)
def test_jacobian_matches_autograd_and_respects_the_margin(inner, learn_subspace, activation):
    margin = 0.5
    g = make(inner, learn_subspace, activation, scale=1.0, margin=margin)
    push_inner_to_its_floor_(g)
    z = 2 * torch.randn(2, 3, K, dtype=F64)
    jac = g.jacobian(z)
    assert jac.shape == (2, 3, D, K)
    assert (jac - autograd_jacobian(g, z)).abs().max() < 1e-8
    assert (jac[0, 0] - jac[1, 2]).abs().max() > 1e-2  # a curved map: the Jacobian depends on z

    z = 3 * torch.randn(200, K, dtype=F64)
    sigma = torch.linalg.svdvals(g.jacobian(z))[..., -1]
    assert torch.allclose(g.smallest_singular_value(z), sigma, rtol=1e-12, atol=0)
    bound = g.injectivity_bound()
    assert abs(bound.item() - margin) < 1e-9  # pushed onto the floor: the bound is the margin
    assert (sigma >= bound * (1 - 1e-9)).all()
    # the log volume element is that of the autograd Jacobian
    jac_auto = autograd_jacobian(g, z[:5])
    expected = 0.5 * torch.linalg.slogdet(jac_auto.transpose(-1, -2) @ jac_auto)[1]
    assert torch.allclose(g.log_volume_element(z[:5]), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("inner", ["diagonal", "brenier", "residual"])
def test_injectivity_bound_is_at_least_the_margin_whatever_the_parameters(inner):
    for margin in (0.3, 1.0, 2.5):
        g = make(inner, margin=margin, scale=2.0)
        push_inner_to_its_floor_(g)
        assert g.injectivity_bound().item() >= margin * (1 - 1e-12)
        if inner == "residual":  # the bound is min(a) (1 - c), a = margin / (1 - c) + softplus(raw)
            with torch.no_grad():
                g.inner_map.scale_raw.fill_(3.0)
            assert g.injectivity_bound().item() >= margin + 3.0 * (1 - g.inner_map.contraction)
            continue
        with torch.no_grad():
            (g.scale_raw if inner == "diagonal" else g.inner_map.potential.alpha_raw).fill_(3.0)
        assert g.injectivity_bound().item() >= margin + 3.0  # margin + softplus(3)


def test_diagonal_bound_is_exact_when_the_mlp_is_constant():
    g = make("diagonal", margin=0.7)
    with torch.no_grad():
        g.scale_raw.copy_(torch.tensor([-2.0, 0.5, 1.5], dtype=F64))
        for layer in g.layers:
            layer.weight.zero_()  # m(z) = its last bias, a constant
    z = torch.randn(6, K, dtype=F64)
    s = g.scale.detach()
    singular_values = torch.linalg.svdvals(g.jacobian(z))  # of Q diag(s): exactly s
    assert torch.allclose(singular_values, s.sort(descending=True).values.expand(6, K), rtol=1e-12, atol=0)
    assert torch.allclose(g.smallest_singular_value(z), g.injectivity_bound().expand(6), rtol=1e-12, atol=0)
    assert abs(g.injectivity_bound().item() - s.min().item()) < 1e-15 and s.min() > 0.7
    assert torch.allclose(g.log_volume_element(z), s.log().sum().expand(6), rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------------- (4) left inverse


@pytest.mark.parametrize("inner, learn_subspace, activation", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("batch_shape", [(), (7,), (2, 3)])
def test_left_inverse_recovers_latents(inner, learn_subspace, activation, batch_shape):
    g = make(inner, learn_subspace, activation, scale=1.0)
    z = 2 * torch.randn(*batch_shape, K, dtype=F64)
    y = g(z)
    error = (g.left_inverse(y.detach().clone()) - z).abs().max()
    assert error < (1e-10 if inner == "diagonal" else 1e-6)
    assert torch.equal(g.inv(y.detach().clone()), g.left_inverse(y.detach().clone()))  # _inverse is left_inverse
    # off the image it is the projection onto span(Q): directions orthogonal to Q are ignored
    w = torch.randn(*batch_shape, D, dtype=F64)
    w = w - (w @ g.subspace) @ g.subspace.T
    assert (g.left_inverse(y + w) - z).abs().max() < (1e-10 if inner == "diagonal" else 1e-6)


# ---------------------------------------------------------------------------------------------- (5) gradients


@pytest.mark.parametrize("inner, learn_subspace, activation", CONFIGS, ids=CONFIG_IDS)
def test_parameter_gradients_match_finite_differences(inner, learn_subspace, activation):
    kwargs = {"inverse_tol": 1e-14} if inner == "brenier" else {}
    g = make(inner, learn_subspace, activation, scale=0.5, **kwargs)
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(4, K, dtype=F64, generator=gen)
    y = 2 * torch.randn(4, D, dtype=F64, generator=gen)
    w_forward = torch.randn(4, D, dtype=F64, generator=gen)
    w_inverse = torch.randn(4, K, dtype=F64, generator=gen)

    def loss():  # forward, left inverse (through the Newton solve for brenier) and the volume element
        return (w_forward * g(z)).sum() + (w_inverse * g.left_inverse(y)).sum() + g.log_volume_element(z).sum()

    params = dict(g.named_parameters())
    grads = torch.autograd.grad(loss(), list(params.values()))
    checked = 0
    for (name, p), grad in zip(params.items(), grads):
        picks = {tuple(0 for _ in p.shape), tuple(s - 1 for s in p.shape)}
        picks.add(tuple(int(torch.randint(s, (1,), generator=gen)) for s in p.shape))
        for index in picks:
            fd = central_difference(loss, p, index)
            assert abs(grad[index].item() - fd) <= 1e-4 * abs(fd) + 1e-8, (name, index, grad[index].item(), fd)
            checked += abs(fd) > 1e-6
    assert checked >= 2 * len(params)  # most checked entries have a gradient that is not ~0


# ---------------------------------------------------------------------------------------------- (6) no_grad, shapes


@pytest.mark.parametrize("inner", ["diagonal", "brenier", "residual"])
@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
def test_works_under_no_grad_and_for_any_batch_shape(inner, batch_shape):
    g = make(inner, scale=0.5)
    z = torch.randn(*batch_shape, K, dtype=F64)
    y_grad = g(z)
    with torch.no_grad():
        y = g(z)
        assert y.shape == batch_shape + (D,) and y.dtype == F64 and not y.requires_grad
        assert g.jacobian(z).shape == batch_shape + (D, K)
        assert g.smallest_singular_value(z).shape == batch_shape
        assert g.log_volume_element(z).shape == batch_shape
        z_back = g.left_inverse(y)
        assert z_back.shape == batch_shape + (K,)
        assert (z_back - z).abs().max() < 1e-6
        assert torch.allclose(y, y_grad, rtol=0, atol=1e-13)
    # rows of a batch are mapped independently
    flat = z.reshape(-1, K)
    assert torch.allclose(y.reshape(-1, D), torch.stack([g(row) for row in flat]), rtol=0, atol=1e-13)


@pytest.mark.parametrize("inner", ["diagonal", "brenier", "residual"])
def test_nothing_goes_stale_after_a_parameter_update(inner):
    g = make(inner, learn_subspace=True, scale=0.5)
    z = torch.randn(5, K, dtype=F64)
    y = g(z)
    with torch.no_grad():
        jac = g.jacobian(z)
        z_back = g.left_inverse(y)
    with torch.no_grad():
        for p in g.parameters():
            p.mul_(1.1)  # a "training step", calling again with the very same tensors
    assert (g(z) - y).abs().max() > 1e-3
    assert torch.equal(g(z), g(z.clone()))  # the same tensor object gets no cached (stale) answer
    assert ((g(z) - g.offset) @ g.subspace - inner_reference(g, z)).abs().max() < 1e-10
    assert (g.jacobian(z) - jac).abs().max() > 1e-3
    assert (g.left_inverse(y) - z_back).abs().max() > 1e-3
    assert torch.allclose(g.jacobian(z), autograd_jacobian(g, z), rtol=0, atol=1e-8)


# ---------------------------------------------------------------------------------------------- (7) bad input


def test_bad_input_raises_naming_the_problem():
    g = ProjectedInjective(K, D, hidden_dims=(8,))
    with pytest.raises(ValueError, match=f"event size {K}"):
        g(torch.randn(4, D))
    with pytest.raises(ValueError, match=f"event size {K}"):
        g.jacobian(torch.randn(4, K + 1))
    with pytest.raises(ValueError, match=f"event size {D}"):
        g.left_inverse(torch.randn(4, K))
    with pytest.raises(ValueError, match="NaN or infinite"):
        g(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        g.left_inverse(torch.full((2, D), float("inf")))
    with pytest.raises(ValueError, match="latent_dim <= output_dim"):
        ProjectedInjective(5, 4)
    with pytest.raises(ValueError, match="latent_dim <= output_dim"):
        ProjectedInjective(0, 4)
    for margin in (0.0, -1.0, float("nan"), float("inf"), "big"):
        with pytest.raises(ValueError, match="margin must be a finite number > 0"):
            ProjectedInjective(K, D, margin=margin)
    with pytest.raises(ValueError, match="inner must be one of 'diagonal', 'brenier'"):
        ProjectedInjective(K, D, inner="triangular")
    with pytest.raises(ValueError, match="inner_hidden_dims, solver only apply to a nonlinear inner map"):
        ProjectedInjective(K, D, inner_hidden_dims=[4], solver="newton")
    with pytest.raises(ValueError, match="activation must be one of"):
        ProjectedInjective(K, D, activation="tanh")
    with pytest.raises(ValueError, match="hidden_dims must be positive integer widths"):
        ProjectedInjective(K, D, hidden_dims=(8, 0))
    with pytest.raises(ValueError, match="alpha_init"):  # Brenier's own checks apply to the inner map
        ProjectedInjective(K, D, inner="brenier", margin=2.0, alpha_init=1.0)
    with pytest.raises(NotImplementedError, match="log_volume_element"):
        g.log_abs_det_jacobian(torch.randn(2, K), torch.randn(2, D))


def test_transform_conventions():
    g = ProjectedInjective(K, D, hidden_dims=(8,), inner="brenier")
    assert isinstance(g, ProjectedInjective) and not g.bijective and g.event_dim == 1
    assert g.domain.event_dim == 1 and g.codomain.event_dim == 1
    registry = {g: "g"}  # hashable by identity, like Pyro's TransformModules
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.1)
    assert registry[g] == "g"
    assert not hasattr(g, "scale") and hasattr(ProjectedInjective(K, D, hidden_dims=(8,)), "scale")
    # the docstring's example holds
    finder = doctest.DocTestFinder(recurse=False)
    (test,) = finder.find(ProjectedInjective, globs={"torch": torch, "ProjectedInjective": ProjectedInjective})
    assert doctest.DocTestRunner().run(test).failed == 0 and len(test.examples) == 5


# ---------------------------------------------------------------------------------------------- (8) in a Pyro model


def test_trains_as_a_bernoulli_decoder_in_a_user_written_pyro_model():
    gen = torch.Generator().manual_seed(0)
    z_true = torch.randn(200, 2, generator=gen)
    x = torch.bernoulli(torch.sigmoid(3 * z_true @ torch.randn(2, 12, generator=gen)), generator=gen)
    decoder = ProjectedInjective(2, 12, hidden_dims=(32,))
    encoder = torch.nn.Linear(12, 4)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, raw_scale = encoder(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, F.softplus(raw_scale) + 1e-3).to_event(1))

    svi = SVI(model, guide, Adam({"lr": 0.03}), Trace_ELBO(num_particles=4, vectorize_particles=True))
    decoder_before = {name: p.detach().clone() for name, p in decoder.named_parameters()}
    before = sum(svi.evaluate_loss(x) for _ in range(10)) / 10
    for _ in range(150):
        svi.step(x)
    after = sum(svi.evaluate_loss(x) for _ in range(10)) / 10
    assert after < before - 0.1 * abs(before), (before, after)
    for name, p in decoder.named_parameters():  # every part of the decoder is trained by SVI
        assert (p - decoder_before[name]).abs().max() > 1e-3, name
    with torch.no_grad():
        assert decoder.smallest_singular_value(torch.randn(50, 2)).min() >= decoder.injectivity_bound() * (1 - 1e-5)


# ------------------------------------------------------------------ wired into the LID models
@pytest.mark.parametrize("name", ["lidvae_projection", "lidgmvae_projection"])
def test_lid_models_with_the_projected_decoder_keep_their_margin_and_train(name):
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam

    from pyro_lid.experiments.methods import METHODS

    model = METHODS[name].build(20, 3, hidden=16, icnn_hidden=8, num_components=2).double()
    decoder = model.decoder.injective_map
    assert isinstance(decoder, ProjectedInjective) and model.decoder.construction == "projection"
    assert [layer.out_features for layer in decoder.modules() if isinstance(layer, torch.nn.Linear)][:2] == [16, 16]
    x = torch.bernoulli(torch.full((64, 20), 0.3, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    svi = SVI(model.model, model.guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(60)]
    assert sum(losses[-10:]) < sum(losses[:10])
    z = torch.randn(25, 3, dtype=torch.float64)
    jac = torch.stack([torch.autograd.functional.jacobian(decoder, zi) for zi in z])  # (25, 20, 3), by autograd
    assert torch.linalg.svdvals(jac).min() >= decoder.injectivity_bound() - 1e-9 >= 1.0 - 1e-9
    with pytest.raises(ValueError, match="construction must be 'brenier' or 'projection'"):
        METHODS["lidvae"].model_class(20, 3, construction="planar")


# ---------------------------------------------------------------------------------------------- (8) for softmax logits


@pytest.mark.parametrize("learn_subspace", [False, True], ids=["fixedQ", "learnedQ"])
def test_subspace_orthogonal_to_the_ones_vector_keeps_z_recoverable_from_log_probabilities(learn_subspace):
    g = perturb_(
        ProjectedInjective(K, D, hidden_dims=(16,), learn_subspace=learn_subspace, orthogonal_to=torch.ones(D)), 0.5
    ).double()  # built in float32, cast: Q re-orthogonalized to 1 in float64
    q = g.subspace
    assert gram_error(q) < 1e-12
    assert (torch.ones(D, dtype=F64) @ q).abs().max() < 1e-12
    z = torch.randn(5, K, dtype=F64)
    log_probs = g(z).log_softmax(-1)  # logits shifted by a different constant per row
    assert (g.left_inverse(log_probs) - z).abs().max() < 1e-10
    # without the constraint the same seed gives the same Q as before, which does not see past the shift
    plain = ProjectedInjective(K, D, hidden_dims=(16,)).double()
    assert torch.equal(plain.subspace, ProjectedInjective(K, D, hidden_dims=(16,)).double().subspace)
    assert (plain.left_inverse(plain(z).log_softmax(-1)) - z).abs().max() > 1e-3
    with pytest.raises(ValueError, match="orthogonal_to"):
        ProjectedInjective(K, D, orthogonal_to=torch.ones(D + 1))
    with pytest.raises(ValueError, match="output_dim >= 4"):
        ProjectedInjective(K, K, orthogonal_to=torch.ones(K))


@pytest.mark.parametrize("learn_subspace", [False, True])
def test_subspace_init_gives_q_the_span_of_a_given_matrix_off_the_constraint(learn_subspace):
    given = torch.randn(D, K, dtype=F64, generator=torch.Generator().manual_seed(3))
    g = ProjectedInjective(K, D, hidden_dims=(16,), orthogonal_to=torch.ones(D), subspace_init=given,
                           learn_subspace=learn_subspace).double()  # fmt: skip
    q = g.subspace
    assert gram_error(q) < 1e-12 and (torch.ones(D, dtype=F64) @ q).abs().max() < 1e-12
    off = given - given.mean(0)  # the given span, projected off the all-ones vector
    expected = off @ torch.linalg.pinv(off)
    assert (q @ q.T - expected).abs().max() < 1e-6  # float32 construction, re-orthonormalized on the cast
    seeded = ProjectedInjective(K, D, orthogonal_to=torch.ones(D)).double().subspace
    assert (q @ q.T - seeded @ seeded.T).abs().max() > 0.1  # not the seeded draw
    z = torch.randn(5, K, dtype=F64)
    assert (g.left_inverse(g(z).log_softmax(-1)) - z).abs().max() < 1e-10
    with pytest.raises(ValueError, match=r"subspace_init must be a finite \(8, 3\) matrix, got shape \(8, 2\)"):
        ProjectedInjective(K, D, subspace_init=given[:, :2])
    with pytest.raises(ValueError, match="with non-finite entries"):
        ProjectedInjective(K, D, subspace_init=given * float("nan"))
    with pytest.raises(ValueError, match="rank < 3 once projected off orthogonal_to"):
        ProjectedInjective(K, D, orthogonal_to=torch.ones(D), subspace_init=torch.cat([given[:, :2], torch.ones(D, 1,
                           dtype=F64)], 1))  # fmt: skip
    with pytest.raises(ValueError, match="subspace_init and metric do not combine"):
        ProjectedInjective(K, D, subspace_init=given, metric=torch.ones(D))


def test_combine_adds_a_free_part_computed_elsewhere_without_losing_z():
    g = make()
    z = torch.randn(4, 1, K, dtype=F64)
    assert torch.allclose(g.combine(z[:, 0], g.mlp(z[:, 0])), g(z[:, 0]), atol=1e-12)
    free = torch.randn(4, 7, D, dtype=F64) * 10  # z broadcast over 7 free parts
    y = g.combine(z, free)
    assert y.shape == (4, 7, D)
    assert (g.left_inverse(y) - z).abs().max() < 1e-10
    bare = ProjectedInjective(K, D, free_network=False).double()
    assert len(bare.layers) == 0 and torch.allclose(bare(z[:, 0]), (bare.scale * z[:, 0]) @ bare.subspace.T)
    assert torch.allclose(bare.jacobian(z[:, 0]), bare.subspace @ torch.diag(bare.scale))
    with pytest.raises(ValueError, match="free part"):
        g.combine(z, torch.randn(4, 7, D + 1, dtype=F64))


def test_combine_linear_is_combine_of_a_linear_free_part_in_one_product():
    g = ProjectedInjective(K, D, free_network=False, orthogonal_to=torch.ones(D)).double()
    perturb_(g, 0.5)
    weight = torch.randn(D, 5, dtype=F64)
    z, x = torch.randn(4, 1, K, dtype=F64), torch.randn(4, 7, 5, dtype=F64)  # z broadcast over 7 rows of x
    y = g.combine_linear(z, x, weight)
    assert y.shape == (4, 7, D)
    assert (y - g.combine(z, x @ weight.T)).abs().max() < 1e-12
    assert (g.left_inverse(y.log_softmax(-1)) - z).abs().max() < 1e-10
    with pytest.raises(ValueError, match="weight of shape"):
        g.combine_linear(z, x, weight.T)
    with pytest.raises(ValueError, match="inputs of shape"):
        g.combine_linear(z, x[..., :4], weight)


# ---------------------------------------------------------------------------------------------- (7) a metric


def frequencies(size=D, seed=3):
    """Positive weights summing to 1 that span three orders of magnitude (frequent and rare outputs)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.logspace(0, -3, size, dtype=F64)[torch.randperm(size, generator=gen)]
    return w / w.sum()


@pytest.mark.parametrize("inner, learn_subspace, activation", CONFIGS, ids=CONFIG_IDS)
def test_with_a_metric_the_left_factor_recovers_the_inner_map_whatever_the_mlp(inner, learn_subspace, activation):
    w = frequencies()
    g = make(inner, learn_subspace, activation, metric=w, orthogonal_to=torch.ones(D))
    q, left = g.subspace, g.left_factor
    assert torch.allclose(g.metric_sqrt**2, w, rtol=1e-6)  # the weights, as stored in float32 and cast
    w = g.metric_sqrt**2
    assert (left @ q - torch.eye(K, dtype=F64)).abs().max() < 1e-12  # L Q = I
    assert (q.T @ torch.diag(w) @ q - torch.eye(K, dtype=F64)).abs().max() < 1e-12  # unit columns in the metric
    assert (left @ torch.ones(D, dtype=F64)).abs().max() < 1e-12  # L 1 = 0: blind to a softmax shift
    assert gram_error(q) > 1e-2  # not orthonormal in Euclidean terms: the metric is in force
    z = 2 * torch.randn(20, K, dtype=F64)
    for seed in range(2):
        perturb_mlp_(g, 3.0, seed)
        y = g(z)
        assert ((y - g.offset) @ left.T - inner_reference(g, z)).abs().max() < 1e-10
        assert (g.left_inverse(y.log_softmax(-1)) - z).abs().max() < 1e-8
    free = 10 * torch.randn(20, D, dtype=F64)
    assert (g.left_inverse(g.combine(z, free)) - z).abs().max() < 1e-8
    weight, x = torch.randn(D, 5, dtype=F64), torch.randn(20, 5, dtype=F64)
    assert (g.combine_linear(z, x, weight) - g.combine(z, x @ weight.T)).abs().max() < 1e-10


@pytest.mark.parametrize("inner", ["diagonal", "brenier"])
def test_with_a_metric_the_jacobian_matches_autograd_and_the_bound_holds(inner):
    w = frequencies()
    g = make(inner, scale=1.0, margin=0.5, metric=w)
    push_inner_to_its_floor_(g)
    z = 2 * torch.randn(50, K, dtype=F64)
    jac = g.jacobian(z)
    assert (jac[:4] - autograd_jacobian(g, z[:4])).abs().max() < 1e-8
    sigma = torch.linalg.svdvals(jac)[..., -1]
    bound, w = g.injectivity_bound(), g.metric_sqrt**2
    assert abs(bound.item() - 0.5 / w.sqrt().max().item()) < 1e-9  # the margin over max sqrt(w) > the margin
    assert (sigma >= bound * (1 - 1e-9)).all()
    # in the metric's own norm the margin itself bounds every singular value
    assert (torch.linalg.svdvals(w.sqrt().unsqueeze(-1) * jac)[..., -1] >= 0.5 * (1 - 1e-9)).all()


def test_with_frequencies_as_metric_each_unit_of_z_carries_the_margin_squared_in_fisher_information():
    """At logits log w (a Categorical that predicts the frequencies w), the Fisher information of z is
    J^T (diag(p) - p p^T) J = diag(s)^2 exactly; with Q orthonormal it is about s^2 / D (a margin on
    the logits is not one on the likelihood)."""
    size, w = 400, frequencies(400)
    fisher = {}
    for metric in (w, None):
        torch.set_default_dtype(F64)  # built in float64: the stored weights are w itself
        try:
            g = ProjectedInjective(K, size, free_network=False, metric=metric, orthogonal_to=torch.ones(size))
        finally:
            torch.set_default_dtype(torch.float32)
        with torch.no_grad():
            g.offset.copy_(w.log())
            g.scale_raw.copy_(torch.tensor([0.0, 1.0, 2.0]))
        z = torch.zeros(K, dtype=F64)
        p = g(z).softmax(-1)
        assert (p - w).abs().max() < 1e-12
        jac = g.jacobian(z)
        fisher[metric is None] = jac.T @ (torch.diag(p) - torch.outer(p, p)) @ jac
        scale = g.scale
    assert (fisher[False] - torch.diag(scale**2)).abs().max() < 1e-10
    assert fisher[True].diagonal().max() < 0.1 * scale.min() ** 2  # Euclidean Q: a small fraction of it


def test_a_bad_metric_raises_naming_the_problem():
    for bad in (torch.ones(D + 1), -torch.ones(D), torch.zeros(D), torch.full((D,), float("nan"))):
        with pytest.raises(ValueError, match="metric must be 8 finite positive weights"):
            ProjectedInjective(K, D, metric=bad)


def test_a_metric_survives_a_cast_and_a_state_dict_round_trip():
    w = frequencies().float()
    g = ProjectedInjective(K, D, hidden_dims=(4,), metric=w, orthogonal_to=torch.ones(D)).double()
    assert (g.left_factor @ torch.ones(D, dtype=F64)).abs().max() < 1e-12  # rebuilt in float64, not cast
    other = ProjectedInjective(K, D, hidden_dims=(4,), metric=torch.ones(D), orthogonal_to=torch.ones(D)).double()
    other.load_state_dict(g.state_dict())
    z = torch.randn(3, K, dtype=F64)
    assert torch.equal(other(z), g(z))
    plain = ProjectedInjective(K, D, hidden_dims=(4,))
    assert "metric_sqrt" not in plain.state_dict() and "orthogonal_directions" not in plain.state_dict()


def test_scale_init_sets_the_diagonal_scale_and_must_exceed_the_margin():
    g = ProjectedInjective(K, D, margin=0.1, scale_init=0.25)
    assert torch.allclose(g.scale, torch.full((K,), 0.25))
    assert torch.allclose(ProjectedInjective(K, D, margin=0.1).scale, torch.ones(K))  # default max(1, 2 margin)
    with pytest.raises(ValueError, match="scale_init must be a number > margin=0.1"):
        ProjectedInjective(K, D, margin=0.1, scale_init=0.1)
    with pytest.raises(ValueError, match="scale_init applies to inner='diagonal'"):
        ProjectedInjective(K, D, inner="brenier", scale_init=2.0)


# ---------------------------------------------------------------------------------------------- (10) a fixed scale


def test_a_fixed_scale_is_the_margin_exactly_and_never_trains():
    """learn_scale=False: s = margin, a buffer; Q^T(g(z) - c) = margin * z whatever the MLP, the Jacobian's
    singular values (by autograd) are at least the margin, and an optimizer step leaves s alone."""
    g = perturb_(ProjectedInjective(K, D, hidden_dims=(16,), margin=1.5, learn_scale=False).double(), 0.5, 2)
    assert torch.equal(g.scale, torch.full((K,), 1.5, dtype=F64))
    assert not any("scale" in name for name, _ in g.named_parameters())
    z = torch.randn(20, K, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert ((g(z) - g.offset) @ g.subspace - 1.5 * z).abs().max() < 1e-12
    assert torch.linalg.svdvals(autograd_jacobian(g, z)).min() >= 1.5 - 1e-9
    assert torch.equal(g.injectivity_bound(), torch.tensor(1.5, dtype=F64))
    optimizer = torch.optim.SGD(g.parameters(), lr=0.1)
    g(z).square().sum().backward()
    optimizer.step()
    assert torch.equal(g.scale, torch.full((K,), 1.5, dtype=F64))
    reloaded = ProjectedInjective(K, D, hidden_dims=(16,), margin=1.5, learn_scale=False).double()
    reloaded.load_state_dict(g.state_dict())
    assert torch.equal(reloaded(z), g(z))
    with pytest.raises(ValueError, match="learn_scale=False applies to inner='diagonal'"):
        ProjectedInjective(K, D, inner="brenier", learn_scale=False)
    with pytest.raises(ValueError, match="takes no scale_init"):
        ProjectedInjective(K, D, learn_scale=False, scale_init=3.0)


# ------------------------------------------------------------------------------------- (11) Fisher units for pixels


def test_pixel_fisher_weights_are_the_bernoulli_variance_at_the_clamped_mean():
    from pyro_lid.data import pixel_fisher_weights

    images = torch.tensor([[1.0, 0.0, 0.2, 1.0], [0.0, 0.0, 0.4, 1.0]], dtype=F64)  # means 0.5, 0, 0.3, 1
    expected = torch.tensor([0.25, 0.01 * 0.99, 0.3 * 0.7, 0.01 * 0.99], dtype=F64)
    assert torch.allclose(pixel_fisher_weights(images), expected, rtol=0, atol=1e-15)
    assert torch.allclose(pixel_fisher_weights(images, floor=0.1)[1], torch.tensor(0.09, dtype=F64))
    for bad, message in [(torch.full((3, 4), 2.0), "finite values in \\[0, 1\\]"), (torch.ones(4), "\\(N, D\\)"),
                         (torch.ones(0, 4), "non-empty")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            pixel_fisher_weights(bad)
    with pytest.raises(ValueError, match="floor must be a number in \\(0, 0.5\\)"):
        pixel_fisher_weights(images, floor=0.5)


def test_lidvae_with_the_bernoulli_metric_gives_every_direction_the_margin_squared_in_fisher_units():
    """lidvae:metric=bernoulli: the decoder's metric is the pixels' Fisher weights W of the training split, and
    J^T W J >= diag(s)^2 (the Fisher information of z at the mean image, whatever the MLP), while with the
    Euclidean Q the same margin gives each direction only about mean(w) s^2."""
    from pyro_lid.data import pixel_fisher_weights
    from pyro_lid.experiments.methods import resolve_method

    gen = torch.Generator().manual_seed(0)
    train = torch.bernoulli(torch.rand(1, 30, generator=gen).pow(3).expand(200, 30), generator=gen)
    weights = pixel_fisher_weights(train)
    information = {}
    for spec in ("lidvae:metric=bernoulli", "lidvae"):
        model = resolve_method(spec).build(30, 3, hidden=16, icnn_hidden=8, train_data=train).double()
        g = perturb_(model.decoder.injective_map, 0.5, 3)
        if spec != "lidvae":
            assert torch.allclose(g.metric_sqrt.square(), weights, rtol=1e-6)  # stored in float32, then cast
        z = torch.randn(10, 3, dtype=F64, generator=gen)
        jac = autograd_jacobian_of(g, z)
        fisher = jac.transpose(-1, -2) @ (weights.unsqueeze(-1) * jac)
        information[spec] = torch.linalg.eigvalsh(fisher).min() / g.scale.min() ** 2
    assert information["lidvae:metric=bernoulli"] >= 1 - 1e-6
    assert information["lidvae"] < 0.5  # a Euclidean margin is a fraction of it in Fisher units
    with pytest.raises(ValueError, match="metric='bernoulli' needs the training split's train_data"):
        resolve_method("lidvae:metric=bernoulli").build(30, 3, hidden=16, icnn_hidden=8)
    with pytest.raises(ValueError, match="does not take these options"):
        resolve_method("lidvae:metric=fisher")
    with pytest.raises(ValueError, match="metric applies to construction='projection'"):
        resolve_method("lidvae_brenier:metric=bernoulli")


def autograd_jacobian_of(g, z):
    return torch.stack([torch.autograd.functional.jacobian(g, zi.clone()) for zi in z])
