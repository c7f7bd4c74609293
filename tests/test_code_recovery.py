"""The held-out linear R² of a known code (pyro_lid.diagnostics.code_recovery) on cases with known answers."""

import pyro.distributions as dist
import pytest
import torch

from pyro_lid.diagnostics import code_recovery, posterior_code_recovery


def _gaussian(n, k, seed):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_codes_affine_in_the_means_are_recovered_exactly():
    weights, offset = _gaussian(5, 2, 0), _gaussian(1, 2, 1)
    fit_means, test_means = _gaussian(50, 5, 2), _gaussian(30, 5, 3)
    out = code_recovery(fit_means, fit_means @ weights + offset, test_means, test_means @ weights + offset)
    assert out["r2"] == pytest.approx(1.0, abs=1e-10) and out["r2_per_code"].shape == (2,)


def test_means_independent_of_the_codes_recover_nothing_however_many_dimensions():
    # 16 regressors on 200 points fit noise in-sample (R² about 16 / 200); held out they cannot
    out = code_recovery(_gaussian(200, 16, 0), _gaussian(200, 2, 1), _gaussian(5000, 16, 2), _gaussian(5000, 2, 3))
    assert -0.15 < out["r2"] < 0.02


def test_a_noisy_copy_recovers_the_signal_share_of_the_variance():
    # means = code + noise of variance s²: the best linear predictor keeps 1 / (1 + s²) of the code's variance
    n, noise = 20000, 0.5
    codes = _gaussian(2 * n, 1, 0)
    means = codes + noise * _gaussian(2 * n, 1, 1)
    out = code_recovery(means[:n], codes[:n], means[n:], codes[n:])
    assert out["r2"] == pytest.approx(1 / (1 + noise**2), abs=0.01)
    # a collapsed posterior (every mean the same) recovers nothing: the held-out codes' own spread
    constant = torch.zeros(n, 3, dtype=torch.float64)
    assert code_recovery(constant, codes[:n], constant, codes[n:])["r2"] == pytest.approx(0.0, abs=1e-3)


def test_bad_input_is_named():
    good = _gaussian(10, 2, 0)
    with pytest.raises(ValueError, match="one row per point"):
        code_recovery(good, good[:9], good, good)
    with pytest.raises(ValueError, match="same dimensions"):
        code_recovery(good, good, _gaussian(10, 3, 1), good)
    with pytest.raises(ValueError, match="non-finite"):
        code_recovery(good, good, good, torch.full((10, 2), float("nan")))
    with pytest.raises(ValueError, match="K \\+ 1"):
        code_recovery(good[:2], good[:2], good, good)
    with pytest.raises(ValueError, match="without spread"):
        code_recovery(good, good, good, torch.ones(10, 2))
    with pytest.raises(ValueError, match="shape"):
        code_recovery(torch.zeros(2, 2, 2), good, good, good)


class _NoisyCopy:
    """q(z | x) = N(x, 0.5² I): a posterior whose draws are the code plus noise of known variance."""

    def posterior(self, x):
        return dist.Normal(x, 0.5).to_event(1)


def test_posterior_draws_stay_beside_their_points_codes():
    codes = _gaussian(4000, 2, 0)
    out = posterior_code_recovery(_NoisyCopy(), codes[:2000], codes[:2000], codes[2000:], codes[2000:], draws=3,
                                  batch_size=300)  # fmt: skip
    assert out["r2"] == pytest.approx(1 / (1 + 0.5**2), abs=0.02)
    with pytest.raises(ValueError, match="draws must be a positive integer"):
        posterior_code_recovery(_NoisyCopy(), codes, codes, codes, codes, draws=0)
    # test_model: the test points' posteriors are read there (here: pure noise), the map is still fitted on model's
    asked = []
    noise = type("Noise", (), {"posterior": lambda self, x: asked.append(x) or dist.Normal(0 * x, 1.0).to_event(1)})()
    out = posterior_code_recovery(_NoisyCopy(), codes[:2000], codes[:2000], codes[2000:], codes[2000:], draws=3,
                                  test_model=noise)  # fmt: skip
    assert out["r2"] < 0.05 and torch.equal(torch.cat(asked), codes[2000:])  # asked for the test points only
