"""torch Transform API of the library's transforms: sign, with_cache, forward_shape / inverse_shape."""

import pytest
import torch
from pyro.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import ComposeTransform

from pyro_lid.distributions.transforms import (
    ContractiveResidual,
    InjectiveBrenier,
    LearnedLift,
    ProjectedInjective,
    ZeroPadLift,
)

F64 = torch.float64
K, D = 3, 7


def residual(dim=K, seed=0, contraction=0.9):
    """A float64 residual map with large random weights, so J_f is far from zero and the normalization is active."""
    torch.manual_seed(seed)
    h = ContractiveResidual(dim, (10, 8), margin=0.5, contraction=contraction).double()
    with torch.no_grad():
        for layer in h.layers:
            layer.weight.normal_(0.0, 3.0)
            layer.bias.normal_()
        h.scale_raw.normal_()
    return h


def autograd_jacobian(transform, z):
    return torch.stack([torch.autograd.functional.jacobian(transform, row) for row in z])


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
def test_contractive_residual_sign_is_that_of_the_jacobian_determinant(dim):
    first, second = residual(dim, seed=1), residual(dim, seed=2)
    compose = ComposeTransform([first, second])
    z = 3.0 * torch.randn(50, dim, dtype=F64)
    det = torch.linalg.det(autograd_jacobian(compose, z))
    assert first.sign == 1 and compose.sign == 1
    assert (det.sign() == compose.sign).all()
    # not the trivial case J_h = diag(a): the residual branch moves the Jacobian
    assert (autograd_jacobian(first, z) - torch.diag(first.scale.detach())).abs().amax() > 0.1


def test_contractive_residual_with_cache_shares_parameters_and_outputs():
    r = residual()
    z = torch.randn(20, K, dtype=F64)
    assert r.with_cache(0) is r
    cached = r.with_cache(1)
    compose = ComposeTransform([r], cache_size=1)
    assert cached is not r and cached._cache_size == 1 and r._cache_size == 0
    assert cached.with_cache(1) is cached and cached.with_cache(0)._cache_size == 0
    assert list(cached.parameters()) == list(r.parameters())  # the same Parameter objects
    assert all(a is b for a, b in zip(cached.parameters(), r.parameters()))
    assert compose.parts[0]._cache_size == 1 and compose.parts[0].scale_raw is r.scale_raw
    for t in (cached, compose, cached.with_cache(0)):
        y = t(z)
        torch.testing.assert_close(y, r(z), rtol=0, atol=0)
        assert t.inv(y) is z if t._cache_size == 1 else torch.allclose(t.inv(y), z)
    torch.testing.assert_close(cached.inv(r(z)), r.inv(r(z)), rtol=0, atol=0)
    # a parameter change made through the original shows in the copy, and the other way round
    z2 = torch.randn(20, K, dtype=F64)
    before = r(z2)
    with torch.no_grad():
        r.scale_raw.add_(0.5)
    after = cached(z2.clone())
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, r(z2), rtol=0, atol=0)
    with torch.no_grad():
        cached.layers[0].bias.add_(1.0)
    torch.testing.assert_close(cached(z2.clone()), r(z2), rtol=0, atol=0)
    # gradients reach the shared parameters through the copy
    r.zero_grad()
    cached(z2.clone()).sum().backward()
    assert r.scale_raw.grad is not None and r.scale_raw.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        r.with_cache(2)


def injective_maps():
    return [
        ZeroPadLift(K, D),
        LearnedLift(K, D),
        InjectiveBrenier(K, D, latent_hidden_dims=(8,), output_hidden_dims=(8,)),
        InjectiveBrenier(K, D, latent_hidden_dims=(8,), output_hidden_dims=(8,), lift="learned"),
        ProjectedInjective(K, D, hidden_dims=(8,)),
        ProjectedInjective(K, D, hidden_dims=(8,), inner="residual"),
    ]


@pytest.mark.parametrize("index", range(6))
def test_injective_maps_report_the_output_event_shape(index):
    g = injective_maps()[index]
    g = g.double() if isinstance(g, torch.nn.Module) else g
    base = Normal(torch.zeros((), dtype=F64), torch.ones((), dtype=F64)).expand([K]).to_event(1)
    dist = TransformedDistribution(base, [g])
    assert dist.event_shape == (D,) and dist.batch_shape == ()
    with torch.no_grad():
        assert dist.sample((3,)).shape == (3, D)
    assert g.forward_shape((4, K)) == (4, D) and g.inverse_shape((4, D)) == (4, K)
    assert g.forward_shape(torch.Size([2, 4, K])) == torch.Size([2, 4, D])
    with torch.no_grad():
        assert g(torch.randn(4, K, dtype=F64)).shape == g.forward_shape((4, K))
    batched = TransformedDistribution(base.expand([4]), [g])
    assert batched.batch_shape == (4,) and batched.event_shape == (D,)
    with torch.no_grad():
        assert batched.sample((3,)).shape == (3, 4, D)
    for bad in [(4, D), (K + 1,), ()]:
        with pytest.raises(ValueError, match="expects a shape"):
            g.forward_shape(bad)
    with pytest.raises(ValueError, match="expects a shape"):
        g.inverse_shape((4, K))


@pytest.mark.parametrize("index", range(6))
def test_injective_maps_take_an_uncached_copy_that_shares_their_parameters(index):
    """ComposeTransform(..., cache_size=1) and IndependentTransform ask for with_cache: it raised for every map
    whose constructor takes more than cache_size."""
    g = injective_maps()[index]
    g = g.double() if isinstance(g, torch.nn.Module) else g
    other = g.with_cache(1 - g._cache_size)  # the cache size it does not have
    assert g.with_cache(g._cache_size) is g and other._cache_size == 1 - g._cache_size
    if isinstance(g, torch.nn.Module):
        assert [id(p) for p in other.parameters()] == [id(p) for p in g.parameters()]
    u = torch.randn(5, K, dtype=F64)
    with torch.no_grad():
        assert torch.equal(other(u), g(u))
        assert torch.equal(ComposeTransform([g], cache_size=1)(u), g(u))  # asks for with_cache(1)
