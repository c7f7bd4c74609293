"""ContractiveResidual: h(z) = a (z + f(z)) with Lip(f) <= c < 1, so every singular value of J_h >= margin."""

import pytest
import torch

from pyro_lid.distributions.transforms import ContractiveResidual

F64 = torch.float64


def make(margin=1.5, contraction=0.9, weight_scale=3.0, seed=0, floor=True):
    """A float64 map whose raw weights are large (so the spectral normalization is active)."""
    torch.manual_seed(seed)
    h = ContractiveResidual(4, (12, 9), margin=margin, contraction=contraction).double()
    with torch.no_grad():
        for layer in h.layers:
            layer.weight.normal_(0.0, weight_scale)
            layer.bias.normal_()
        if floor:
            h.scale_raw.fill_(-30.0)  # a_i at their floor margin / (1 - c), up to softplus(-30) = 1e-13
    return h


def tight(margin=1.5, contraction=0.7):
    """A map whose residual branch is f(z) = -c z near the origin (weights 5 [I; 0], large biases keep the ELUs
    linear): the worst case, where sigma_min(J_h) = a (1 - c) is exactly the margin at the floor of a."""
    h = make(margin=margin, contraction=contraction)
    with torch.no_grad():
        for layer in h.layers:
            layer.weight.zero_()
            layer.weight[:4, :4] = 5.0 * torch.eye(4, dtype=F64)
            layer.bias.fill_(50.0)
        h.layers[-1].weight.neg_()
    return h


def test_the_residual_branch_is_a_contraction_with_constant_c_whatever_the_weights():
    z1, z2 = torch.randn(2000, 4, dtype=F64), torch.randn(2000, 4, dtype=F64)
    for h, tight_case in [(make(contraction=0.7), False), (tight(contraction=0.7), True)]:
        assert max(torch.linalg.matrix_norm(layer.weight, ord=2) for layer in h.layers) >= 5  # raw: not 1-Lipschitz
        ratio = (h.residual(z1) - h.residual(z2)).norm(dim=-1) / (z1 - z2).norm(dim=-1)
        assert ratio.max() <= 0.7 * (1 + 1e-12)
        if tight_case:  # and the bound is attained
            assert ratio.min() >= 0.7 * (1 - 1e-12)


@pytest.mark.parametrize("contraction", [0.3, 0.9])
def test_jacobian_matches_autograd_and_every_singular_value_is_at_least_the_margin(contraction):
    h = make(margin=1.5, contraction=contraction)
    z = 2.0 * torch.randn(300, 4, dtype=F64)
    jac = h.jacobian(z)
    reference = torch.stack([torch.autograd.functional.jacobian(h._call, zi) for zi in z[:20]])
    assert (jac[:20] - reference).abs().max() < 1e-12
    smallest = torch.linalg.svdvals(jac).min(-1).values
    assert smallest.min() >= 1.5 * (1 - 1e-10)
    assert abs(h.injectivity_bound().item() - 1.5) < 1e-10
    assert torch.allclose(h.log_abs_det_jacobian(z, h(z)), torch.linalg.slogdet(jac).logabsdet, atol=1e-12)


def test_the_margin_is_attained_in_the_worst_case():
    h = tight(margin=1.5, contraction=0.7)
    z = torch.randn(50, 4, dtype=F64)
    singular_values = torch.linalg.svdvals(h.jacobian(z))
    assert torch.allclose(singular_values, torch.full_like(singular_values, 1.5), rtol=1e-10, atol=0)


def test_inverse_recovers_the_latents_and_refuses_to_return_an_unconverged_answer():
    h = make(contraction=0.9, floor=False)
    z = 3.0 * torch.randn(50, 4, dtype=F64)
    assert (h._inverse(h(z)) - z).abs().max() < 1e-10
    h.inverse_max_iter = 2
    with pytest.raises(RuntimeError, match="fixed-point iteration"):
        h._inverse(h(z))


def test_inverse_stops_on_each_rows_own_tolerance_so_a_small_row_is_as_accurate_batched_as_alone():
    # near 0, f(z) = -c z + const converges at the slow rate c = 0.9; at z = -300 the ELUs saturate, f is constant
    # and the row converges in one step. A batch-wide tolerance tol (1 + 300) would stop the small row early.
    h = tight(contraction=0.9)
    small = 1e-3 * torch.randn(1, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    large = torch.full((1, 4), -300.0, dtype=F64)
    alone = h._inverse(h(small))
    batched = h._inverse(h(torch.cat([small, large])))
    assert ((batched[:1] - alone).abs().max() / small.abs().max()).item() < 1e-10
    assert (batched[1:] - large).abs().max() < 1e-10
    # a last step below tol (1 + max|u / a|) leaves an error below c / (1 - c) sqrt(K) times that
    tol = 100 * torch.finfo(F64).eps
    bound = 0.9 / 0.1 * 2.0 * tol * (1.0 + (h(small) / h.scale).abs().max())
    assert (batched[:1] - small).abs().max() < bound


def test_it_starts_as_the_diagonal_map_and_refuses_bad_options():
    h = ContractiveResidual(3, margin=2.0, contraction=0.5)
    z = torch.randn(5, 3)
    assert torch.allclose(h(z), h.scale * z) and h.scale.min() > h.scale_floor == 4.0
    for kwargs, match in [({"margin": 0.0}, "margin"), ({"contraction": 1.0}, "contraction"),
                          ({"contraction": 0.0}, "contraction"), ({"hidden_dims": ()}, "hidden_dims")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            ContractiveResidual(3, **kwargs)
