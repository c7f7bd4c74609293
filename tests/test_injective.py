import pytest
import torch

from pyro_lid.distributions.transforms import InjectiveBrenier, ZeroPadLift, injective_brenier

from .helpers import perturb_


def curved(k=3, d=8, scale=0.5, **kwargs):
    return perturb_(
        injective_brenier(k, d, latent_hidden_dims=[16, 16], output_hidden_dims=[16], **kwargs).double(), scale
    )


def test_lift_is_the_zero_padding_matrix():
    lift = ZeroPadLift(2, 4)
    u = torch.randn(5, 2)
    assert torch.equal(lift(u), u @ lift.matrix.T)
    assert torch.equal(lift.matrix, torch.eye(4, 2))
    assert torch.equal(lift.left_inverse(lift(u)), u)
    with pytest.raises(ValueError, match="latent_dim <= output_dim"):
        ZeroPadLift(3, 2)


@pytest.mark.parametrize("batch_shape", [(6,), (3, 4), (3, 4, 5)])
def test_left_inverse_recovers_latents(batch_shape):
    g = curved()
    z = 2 * torch.randn(*batch_shape, 3, dtype=torch.float64)
    y = g(z)
    assert y.shape == batch_shape + (8,)
    assert (g.left_inverse(y.detach().clone()) - z).abs().max() < 1e-6


def test_jacobian_matches_autograd():
    g = curved()
    z = torch.randn(5, 3, dtype=torch.float64)
    expected = torch.stack([torch.autograd.functional.jacobian(lambda v: g(v.clone()), zi) for zi in z])
    assert torch.allclose(g.jacobian(z), expected, atol=1e-10)


def test_smallest_singular_value_respects_the_convexity_bound():
    g = curved(alpha_floor=0.2)
    with torch.no_grad():  # push both alphas onto the floor: the bound becomes tight-ish
        g.latent_map.potential.alpha_raw.fill_(-30.0)
        g.output_map.potential.alpha_raw.fill_(-30.0)
    z = 3 * torch.randn(300, 3, dtype=torch.float64)
    sigma = g.smallest_singular_value(z)
    bound = g.injectivity_bound()
    assert torch.allclose(bound, torch.tensor(0.04, dtype=torch.float64), rtol=1e-9)
    assert (sigma >= bound * (1 - 1e-9)).all()
    # and a larger floor gives a larger guaranteed margin
    assert curved(alpha_floor=1.0).injectivity_bound() > 1.0


def test_log_volume_element_matches_autograd():
    g = curved()
    z = torch.randn(4, 3, dtype=torch.float64)
    jac = g.jacobian(z)
    expected = 0.5 * torch.logdet(jac.transpose(-1, -2) @ jac)
    assert torch.allclose(g.log_volume_element(z), expected)


def test_injective_map_is_not_bijective_and_has_no_determinant():
    g = InjectiveBrenier(2, 5)
    assert not g.bijective
    z = torch.randn(3, 2)
    with pytest.raises(NotImplementedError, match="log_volume_element"):
        g.log_abs_det_jacobian(z, g(z))
    with pytest.raises(ValueError, match="latent_dim <= output_dim"):
        InjectiveBrenier(5, 2)
    with pytest.raises(ValueError, match="event size 2"):
        g(torch.randn(3, 5))
    with pytest.raises(ValueError, match="event size 5"):
        g.left_inverse(torch.randn(3, 2))


def test_injective_map_works_under_no_grad_and_trains():
    g = InjectiveBrenier(2, 5)
    z = torch.randn(7, 2)
    with torch.no_grad():
        y = g(z)
        z_back = g.left_inverse(y.clone())
    assert (z_back - z).abs().max() < 1e-4
    g(z).pow(2).sum().backward()
    assert all(p.grad is not None for p in g.parameters() if p.requires_grad)
