"""Mutual-information estimators stay inside the range of what they estimate, at any N, and match closed forms."""

import math
import warnings

import pyro.distributions as dist
import pytest
import torch

from pyro_lid.diagnostics import collapse_report, mutual_information, mutual_information_per_dim

from .helpers import GaussianEncoderStub


@pytest.mark.parametrize("n", [1, 2, 10])
@pytest.mark.parametrize("estimator", ["aggregate", "minibatch"])
def test_mutual_information_is_zero_for_a_collapsed_posterior_and_log_n_for_separated_ones(n, estimator):
    # Closed forms for x uniform on the N evaluation points: identical posteriors give I = 0 exactly;
    # posteriors N(100 n, 1), far apart, give I = log N (up to e^{-5000}).
    f64 = dict(dtype=torch.float64)
    x = torch.arange(n, **f64).unsqueeze(-1)
    collapsed = GaussianEncoderStub(torch.zeros(3, 1, **f64), torch.ones(3, **f64))
    separated = GaussianEncoderStub(torch.full((3, 1), 100.0, **f64), torch.ones(3, **f64))
    batch = n if estimator == "aggregate" else max(n // 2, 1)
    ceiling = math.log(n if estimator == "aggregate" else batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # at the ceiling on purpose
        for seed in range(5):
            torch.manual_seed(seed)
            assert mutual_information(collapsed, x, estimator, batch_size=batch) == pytest.approx(0.0, abs=1e-12)
            torch.manual_seed(seed)
            assert mutual_information(separated, x, estimator, batch_size=batch) == pytest.approx(ceiling, abs=1e-9)


@pytest.mark.parametrize("n", [1, 2, 10])
def test_mutual_information_never_leaves_zero_to_log_n_for_overlapping_posteriors(n):
    # q(z|x) = N(x, 0.5^2) with x on a grid: overlapping posteriors, the estimator is noisy; every draw in [0, log N]
    x = torch.linspace(-1, 1, n).unsqueeze(-1)
    model = GaussianEncoderStub(torch.ones(2, 1), torch.full((2,), 0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(50):
            torch.manual_seed(seed)
            value = mutual_information(model, x)
            assert 0.0 <= value <= math.log(n) + 1e-12
            torch.manual_seed(seed)
            assert 0.0 <= mutual_information(model, x, "minibatch", batch_size=max(n // 2, 1)) <= math.log(n) + 1e-12


def test_minibatch_mutual_information_is_not_biased_upward_near_zero():
    # q(z|x) = N(eps x, 1): I(x; z) <= 1/2 log(1 + eps^2 Var x) (the Gaussian channel's capacity), about 2e-4.
    # Each batch's estimate is that plus noise of either sign; clamping each at 0 before averaging gave
    # E max(0, X) ~ 2e-3, ten times the truth. Clamped once after averaging, the mean stays at the truth.
    eps = 0.02
    x = torch.randn(2000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = GaussianEncoderStub(torch.full((1, 1), eps, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    estimates = []
    for seed in range(20):
        torch.manual_seed(seed)
        estimates.append(mutual_information(model, x, "minibatch", batch_size=10))
    capacity = 0.5 * math.log1p(eps**2 * x.var().item())
    assert sum(estimates) / len(estimates) < 2 * capacity


def test_a_saturated_estimate_warns_that_n_is_too_small():
    x = torch.arange(10.0).unsqueeze(-1)
    separated = GaussianEncoderStub(torch.full((2, 1), 100.0), torch.ones(2))
    with pytest.warns(UserWarning, match=r"ceiling log N = 2\.303 \(N = 10"):
        mutual_information(separated, x)
    x = torch.randn(2000, 1, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # far below log 2000: no warning
        mutual_information(GaussianEncoderStub(torch.ones(2, 1), torch.ones(2)), x)


def test_per_dimension_mutual_information_matches_the_linear_gaussian_closed_form():
    # x ~ N(0, 1), q(z_d | x) = N(a_d x, s_d^2): I(x; z_d) = 0.5 log(1 + a_d^2 / s_d^2)
    a = torch.tensor([[2.0], [0.5], [0.0]], dtype=torch.float64)
    s = torch.tensor([1.0, 1.0, 0.3], dtype=torch.float64)
    x = torch.randn(3000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    per_dim = mutual_information_per_dim(GaussianEncoderStub(a, s), x)
    expected = 0.5 * torch.log1p(a.squeeze(-1) ** 2 / s**2)
    assert per_dim.shape == (3,)
    assert torch.allclose(per_dim, expected, atol=0.04), (per_dim, expected)
    assert float(per_dim[2]) < 0.01  # the dimension that ignores x carries nothing


def test_per_dimension_mutual_information_refuses_a_posterior_without_marginals():
    class FullCovariance(GaussianEncoderStub):
        def posterior(self, x):
            return dist.MultivariateNormal(x @ self.weight.T, torch.eye(2).expand(x.shape[0], 2, 2))

    with pytest.raises(ValueError, match="diagonal Gaussian"):
        mutual_information_per_dim(FullCovariance(torch.ones(2, 1), torch.ones(2)), torch.randn(5, 1))
    full = FullCovariance(torch.ones(2, 1), torch.ones(2))
    assert 0.0 <= mutual_information(full, torch.randn(50, 1)) <= math.log(50)


def test_collapse_report_carries_the_per_dimension_information():
    class WithJoint(GaussianEncoderStub):
        def log_joint(self, x, z):
            return self.prior().log_prob(z) + dist.Normal(z[..., :1], 1.0).to_event(1).log_prob(x)

    model = WithJoint(torch.tensor([[1.0], [0.0]]), torch.ones(2))
    report = collapse_report(model, torch.randn(400, 1), num_samples=5, progress=False)
    assert report["mi_per_dim"].shape == (2,)
    assert float(report["mi_per_dim"][0]) > 0.2 and float(report["mi_per_dim"][1]) < 0.02
    assert 0.0 <= report["mi"] <= math.log(400)
