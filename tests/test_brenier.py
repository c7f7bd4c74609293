import pytest
import torch
from torch.distributions import constraints

from pyro_lid.distributions.transforms import Brenier, ConditionalBrenier, brenier, conditional_brenier
from pyro_lid.nn import invert_gradient_map

from .helpers import central_difference, perturb_


def curved_brenier(n, hidden=(32, 32), scale=0.5, **kwargs):
    return perturb_(Brenier(n, list(hidden), **kwargs).double(), scale)


def autograd_logdet(t, x):
    flat = x.reshape(-1, x.shape[-1])
    dets = [torch.linalg.slogdet(torch.autograd.functional.jacobian(t, xi.clone()))[1] for xi in flat]
    return torch.stack(dets).reshape(x.shape[:-1])


def test_transform_conventions():
    t = brenier(3)
    assert isinstance(t, Brenier) and t.bijective and t.sign == +1
    assert t.domain is constraints.real_vector and t.codomain is constraints.real_vector
    assert t.event_dim == 1
    # hashable by identity like Pyro's TransformModules: usable in sets and as dict keys while it trains
    other = Brenier(3)
    registry = {t: "t", other: "other"}
    assert len({t, t, other}) == 2 and registry[t] == "t" and registry[other] == "other"
    assert t == t and t != other  # equal only to itself, not to another map of the same shape
    with torch.no_grad():
        for p in t.parameters():
            p.add_(1.0)  # a training step changes the parameters, not the identity
    assert t in registry and registry[t] == "t"
    assert any(p.requires_grad for p in t.parameters())


@pytest.mark.parametrize("n", [2, 5, 64])
def test_inverse_round_trip_float64(n):
    t = curved_brenier(n)
    x = 2 * torch.randn(40, n, dtype=torch.float64)
    y = t(x).detach().clone()  # a fresh tensor: no cache hit
    assert (t.inv(y) - x).abs().max() < 1e-6
    # and in the other direction, for arbitrary y (not produced by the map)
    y = 3 * torch.randn(40, n, dtype=torch.float64)
    assert (t(t.inv(y).clone()) - y).abs().max() < 1e-6


@pytest.mark.parametrize("solver", ["newton", "newton_cg"])
def test_both_newton_solvers_invert(solver):
    t = curved_brenier(64, solver=solver)
    x = 2 * torch.randn(30, 64, dtype=torch.float64)
    assert (t.inv(t(x).detach().clone()) - x).abs().max() < 1e-6


def test_large_dimension_uses_newton_cg_and_inverts():
    t = curved_brenier(300, hidden=(64,), scale=0.2)
    x = torch.randn(8, 300, dtype=torch.float64)
    assert (t.inv(t(x).detach().clone()) - x).abs().max() < 1e-6


def test_cache_returns_the_exact_input():
    t = Brenier(2)
    x = torch.randn(5, 2)
    assert t.inv(t(x)) is x


def test_cache_filled_under_no_grad_does_not_answer_a_call_with_gradients():
    t = Brenier(2)
    x = torch.randn(5, 2)
    with torch.no_grad():
        t(x)
        t.inv(x)
    assert t(x).requires_grad
    assert t.inv(x).requires_grad


@pytest.mark.parametrize("batch_shape", [(3,), (3, 4), (3, 4, 5)])
def test_batch_shapes(batch_shape):
    t = curved_brenier(2, hidden=(8,))
    x = torch.randn(*batch_shape, 2, dtype=torch.float64)
    y = t(x)
    assert y.shape == x.shape
    ldj = t.log_abs_det_jacobian(x, y)
    assert ldj.shape == batch_shape
    assert torch.allclose(ldj, autograd_logdet(t, x), atol=1e-6)
    assert (t.inv(y.detach().clone()) - x).abs().max() < 1e-6
    # each row is mapped independently of the batch layout
    assert torch.allclose(y.reshape(-1, 2), t(x.reshape(-1, 2).clone()))


@pytest.mark.parametrize("n", [1, 3, 6])
def test_log_abs_det_jacobian_matches_autograd(n):
    t = curved_brenier(n, scale=0.8)
    x = 2 * torch.randn(7, n, dtype=torch.float64)
    assert torch.allclose(t.log_abs_det_jacobian(x, t(x)), autograd_logdet(t, x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("solver", ["newton", "newton_cg"])
def test_parameter_gradients_through_inverse_match_finite_differences(solver):
    t = curved_brenier(3, hidden=(6, 5), inverse_tol=1e-14, solver=solver)
    y = 2 * torch.randn(4, 3, dtype=torch.float64)
    weights = torch.randn(4, 3, dtype=torch.float64)

    def loss():  # inverse value and log-det at the inverse: what log_prob differentiates
        x = t.inv(y.clone())
        return (weights * x).sum() + t.log_abs_det_jacobian(x, None).sum()

    params = dict(t.named_parameters())
    grads = torch.autograd.grad(loss(), list(params.values()))
    checked = 0
    for (name, p), g in zip(params.items(), grads):
        for index in [tuple(0 for _ in p.shape), tuple(s - 1 for s in p.shape)]:
            fd = central_difference(loss, p, index)
            assert abs(g[index].item() - fd) < 1e-6 * (1 + abs(fd)), name
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("solver", ["newton", "newton_cg"])
def test_input_gradient_of_inverse_is_inverse_jacobian(solver):
    t = curved_brenier(3, solver=solver)
    y = torch.randn(3, dtype=torch.float64)
    jac_inv = torch.autograd.functional.jacobian(lambda v: t.inv(v.clone()), y)
    jac = t.jacobian(t.inv(y.clone()).detach())
    assert torch.allclose(jac_inv @ jac, torch.eye(3, dtype=torch.float64), atol=1e-8)


def test_everything_works_under_no_grad():
    t = curved_brenier(3)
    x = torch.randn(6, 3, dtype=torch.float64)
    with torch.no_grad():
        y = t(x)
        x_back = t.inv(y.clone())
        ldj = t.log_abs_det_jacobian(x, y)
    assert not (y.requires_grad or x_back.requires_grad or ldj.requires_grad)
    assert (x_back - x).abs().max() < 1e-6


@pytest.mark.parametrize("bad", [torch.randn(4, 3), torch.randn(3), torch.tensor(1.0)])
def test_wrong_event_size_is_rejected(bad):
    t = Brenier(2)
    with pytest.raises(ValueError, match="event size 2"):
        t(bad)
    with pytest.raises(ValueError, match="event size 2"):
        t.inv(bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_input_is_rejected(value):
    t = Brenier(2)
    x = torch.randn(4, 2)
    x[1, 0] = value
    with pytest.raises(ValueError, match="NaN or infinite"):
        t(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        t.inv(x)


def test_non_convergent_inverse_raises():
    t = curved_brenier(4, scale=1.0, inverse_max_iter=1)
    y = 50 * torch.randn(10, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="did not converge"):
        t.inv(y)
    with pytest.raises(ValueError, match="solver"):
        invert_gradient_map(t.potential, y, solver="bisection")


@pytest.mark.parametrize("n", [4, 20])  # the exact Newton solver and Newton-CG
def test_an_inverse_with_non_finite_parameters_or_input_raises_instead_of_returning_its_start(n):
    """NaN compares False with any tolerance: a NaN residual must not read as converged (the inverse would hand
    back its warm start, y itself, as the answer)."""
    t = curved_brenier(n)
    y = torch.randn(5, n, dtype=torch.float64)
    with torch.no_grad():
        next(p for p in t.parameters() if p.dim() == 1)[0] = float("nan")  # e.g. after a diverged step
    for grad in (False, True):
        with torch.set_grad_enabled(grad), pytest.raises(RuntimeError, match="grad psi is NaN or infinite"):
            t._inverse(y)
    y[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"y has NaN or infinite entries in 1 of 5 rows \(first: row 2\)"):
        invert_gradient_map(curved_brenier(n).potential, y)


def test_bad_alpha_floor_is_rejected_by_the_transform():
    with pytest.raises(ValueError, match="alpha_floor"):
        Brenier(2, alpha_floor=0.0)


def test_conditional_brenier_inverts_and_broadcasts_context():
    ct = perturb_(conditional_brenier(3, 2, [16, 16]).double(), 0.5)
    context = torch.randn(4, 1, 2, dtype=torch.float64)  # broadcasts against a (4, 5) batch
    t = ct.condition(context)
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    y = t(x)
    assert y.shape == (4, 5, 3)
    assert (t.inv(y.detach().clone()) - x).abs().max() < 1e-6
    ldj = t.log_abs_det_jacobian(x, y)
    assert ldj.shape == (4, 5)
    for i in range(2):
        single = ct.condition(context[i, 0])
        assert torch.allclose(ldj[i], autograd_logdet(single, x[i]), atol=1e-6)
    assert not torch.allclose(ct.condition(context[0, 0])(x[0]), ct.condition(context[1, 0])(x[0]))


def test_conditional_brenier_rejects_bad_context():
    ct = ConditionalBrenier(3, 2)
    with pytest.raises(ValueError, match="event size 2"):
        ct.condition(torch.randn(5, 4))
    with pytest.raises(ValueError, match="NaN"):
        ct.condition(torch.tensor([float("nan"), 0.0]))


def test_the_memory_forgets_a_pair_after_a_step_that_writes_through_data_as_clipped_adam_does():
    """Pyro's ClippedAdam (and torch's fused Adam) update ``p.data``, which bumps no version counter."""
    t = curved_brenier(3)
    y = torch.randn(6, 3, dtype=torch.float64)
    with torch.no_grad():
        before = t.inv(y)
        for p in t.parameters():
            p.data.add_(0.05 * torch.randn_like(p))  # as ClippedAdam's p.data.addcdiv_
        after = t.inv(y)
        fresh = t.with_cache(0).inv(y)
    assert not torch.allclose(before, fresh)
    assert torch.equal(after, fresh)  # not the remembered pre-step inverse


def test_a_brenier_flow_samples_and_scores_under_inference_mode():
    import pyro.distributions as dist

    t = curved_brenier(2)
    flow = dist.TransformedDistribution(dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1), [t])
    with torch.inference_mode():
        x = flow.sample((4,))
        scored = flow.log_prob(x)
    plain = torch.tensor(x.tolist(), dtype=torch.float64)  # the same values as an ordinary tensor
    with torch.no_grad():
        assert torch.allclose(scored, flow.log_prob(plain), atol=1e-10)


def test_with_cache_shares_the_potential_and_composes_with_torch_transforms():
    from torch.distributions.transforms import IndependentTransform

    t = curved_brenier(2)
    uncached = t.with_cache(0)
    assert t.with_cache(1) is t and uncached._cache_size == 0
    assert next(uncached.potential.parameters()) is next(t.potential.parameters())  # the same map
    x = torch.randn(5, 2, dtype=torch.float64)
    assert torch.equal(uncached(x), t(x))
    independent = IndependentTransform(t, 1)  # calls with_cache(0) on the way
    assert independent(x.unsqueeze(0)).shape == (1, 5, 2)
    with pytest.raises(ValueError, match="cache_size must be 0 or 1"):
        t.with_cache(2)
