import pytest
import torch

from pyro_lid.distributions.transforms import InjectiveBrenier, LearnedLift, ZeroPadLift, injective_brenier

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


LIFTS = ["zero_pad", "learned"]


def test_learned_lift_is_orthonormal_columns_times_scales_and_starts_at_the_zero_padding():
    lift = LearnedLift(3, 7, floor=0.5, scale_init=0.8).double()
    assert torch.allclose(lift.matrix, 0.8 * torch.eye(7, 3, dtype=torch.float64), atol=1e-12)
    perturb_(lift, 0.5)
    q, s = lift.basis, lift.scale
    assert (q.T @ q - torch.eye(3, dtype=torch.float64)).abs().max() < 1e-12 and (s > 0.5).all()
    singular = torch.linalg.svdvals(lift.matrix)
    assert torch.allclose(singular.sort().values, s.sort().values, rtol=1e-12)
    assert torch.equal(lift.injectivity_bound(), s.min())
    u = torch.randn(4, 2, 3, dtype=torch.float64)
    assert torch.allclose(lift(u), u @ lift.matrix.T, atol=1e-14)
    assert (lift.left_inverse(lift(u)) - u).abs().max() < 1e-12
    expected = 0.5 * torch.logdet(lift.matrix.T @ lift.matrix)
    assert torch.allclose(lift.log_abs_det_jacobian(u, lift(u)), expected.expand(4, 2))
    lift(u).square().sum().backward()
    assert lift.basis_raw.grad.abs().sum() > 0 and lift.scale_raw.grad.abs().sum() > 0
    for kwargs, message in [({"floor": 0.0}, "floor must be a finite number > 0"),
                            ({"scale_init": 1.0}, "scale_init must be a number > floor=1")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            LearnedLift(3, 7, **kwargs)
    with pytest.raises(ValueError, match="latent_dim <= output_dim"):
        LearnedLift(3, 2)
    with pytest.raises(ValueError, match="lift must be 'zero_pad' or 'learned'"):
        InjectiveBrenier(3, 7, lift="random")


@pytest.mark.parametrize("lift", LIFTS)
@pytest.mark.parametrize("batch_shape", [(6,), (3, 4), (3, 4, 5)])
def test_left_inverse_recovers_latents(batch_shape, lift):
    g = curved(lift=lift)
    z = 2 * torch.randn(*batch_shape, 3, dtype=torch.float64)
    y = g(z)
    assert y.shape == batch_shape + (8,)
    assert (g.left_inverse(y.detach().clone()) - z).abs().max() < 1e-6


@pytest.mark.parametrize("lift", LIFTS)
def test_jacobian_matches_autograd(lift):
    g = curved(lift=lift)
    z = torch.randn(5, 3, dtype=torch.float64)
    expected = torch.stack([torch.autograd.functional.jacobian(lambda v: g(v.clone()), zi) for zi in z])
    assert torch.allclose(g.jacobian(z), expected, atol=1e-10)


@pytest.mark.parametrize("lift", LIFTS)
def test_smallest_singular_value_respects_the_convexity_bound(lift):
    g = curved(alpha_floor=0.2, lift=lift)
    with torch.no_grad():  # push both alphas (and the lift's scales) onto the floor: the bound becomes tight-ish
        g.latent_map.potential.alpha_raw.fill_(-30.0)
        g.output_map.potential.alpha_raw.fill_(-30.0)
        if lift == "learned":  # s = 1 + softplus(raw) >= 2: the lift's own margin multiplies the bound
            g.lift.scale_raw.copy_(torch.linspace(0.0, 1.0, 3).exp().expm1().log())
    z = 3 * torch.randn(300, 3, dtype=torch.float64)
    sigma = g.smallest_singular_value(z)
    bound = g.injectivity_bound()
    expected = 0.04 * (2.0 if lift == "learned" else 1.0)
    assert torch.allclose(bound, torch.tensor(expected, dtype=torch.float64), rtol=1e-9)
    assert (sigma >= bound * (1 - 1e-9)).all()
    # and a larger floor gives a larger guaranteed margin
    assert curved(alpha_floor=1.0).injectivity_bound() > 1.0


@pytest.mark.parametrize("lift", LIFTS)
def test_log_volume_element_matches_autograd(lift):
    g = curved(lift=lift)
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


def test_the_papers_lidvae_takes_a_learned_lift_by_name_and_trains_it():
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam

    from pyro_lid.experiments.methods import resolve_method

    model = resolve_method("lidvae_brenier:lift=learned").build(12, 3, hidden=8, icnn_hidden=8).double()
    lift = model.decoder.injective_map.lift
    assert isinstance(lift, LearnedLift)
    before = lift.basis.detach().clone()
    x = torch.bernoulli(torch.full((32, 12), 0.3, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    svi = SVI(model.model, model.guide, Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(5):
        svi.step(x)
    assert (lift.basis - before).abs().max() > 1e-4  # the subspace moved under training
    assert (lift.basis.T @ lift.basis - torch.eye(3, dtype=torch.float64)).abs().max() < 1e-12
    with pytest.raises(ValueError, match="lift applies to construction='brenier'"):
        resolve_method("lidvae:lift=learned")
