"""ArviZ conventions: ``log_likelihood`` and ``observed_data`` groups, so ``az.loo`` and
``az.compare`` work on NUTS and VI posteriors (issue 12); one layout for the prior and the
posterior of ``latent_inference_data``, so ArviZ's prior-vs-posterior plots work (issue 13)."""

import warnings
from contextlib import contextmanager

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy.stats import norm

from pyro_lid._arviz import arviz as az
from pyro_lid.data.classical import simulate_mixture, simulate_ppca
from pyro_lid.diagnostics import latent_inference_data, plot_latent_posteriors, prior_posterior_table
from pyro_lid.infer import nuts_posterior, vi_posterior
from pyro_lid.models import PPCA, MixtureWeightModel

SEPARATED, ONE_CLUSTER = (-5.0, 5.0), (0.0, 0.0)
NUTS_BUDGET = {"num_samples": 60, "warmup_steps": 60, "num_chains": 2, "num_prior_samples": 50}


@contextmanager
def float64():
    """Double precision, so that 1e-6 comparisons measure the code and not float32 rounding."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def mixture_log_density(x, weight, locs, scale=1.0):
    """log(w N(x; mu_1, s) + (1 - w) N(x; mu_2, s)), by hand; ``weight`` broadcasts against ``x``."""
    first = np.log(weight) + norm.logpdf(x, locs[0], scale)
    return np.logaddexp(first, np.log1p(-weight) + norm.logpdf(x, locs[1], scale))


def traced_log_likelihood(model, draw, *args):
    """log p(x_i | draw) from a trace of ``model`` conditioned on one draw of its latents."""
    trace = pyro.poutine.trace(pyro.poutine.condition(model, data=draw)).get_trace(*args)
    site = trace.nodes["x"]
    return site["fn"].log_prob(site["value"]).numpy()


def quiet_loo(idata, reff=None):
    """``az.loo`` without its large-Pareto-k warning (per-point latents and constant log-likelihoods
    set it off; the tests check ``pareto_k`` where it matters)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Pareto distribution.*", category=UserWarning)
        return az.loo(idata, pointwise=True, reff=reff)


@pytest.fixture(scope="module")
def mixtures():
    """NUTS on data from well-separated components, under the identifiable model (the true
    components) and the non-identifiable one (both components at 0: w drops out of p(x | w))."""
    with float64():
        x = simulate_mixture(150, 0.15, SEPARATED, 1.0, generator()).double()
        idatas = {
            name: nuts_posterior(MixtureWeightModel(locs, 1.0).model, x, **NUTS_BUDGET)
            for name, locs in (("identifiable", SEPARATED), ("non-identifiable", ONE_CLUSTER))
        }
    return x.numpy(), idatas


@pytest.fixture(scope="module")
def ppcas():
    """NUTS on 8 points with 2 true dimensions, under PPCA with M = 2 and M = 1 (W at the MLE)."""
    with float64():
        x, _, _ = simulate_ppca(400, 4, 2, 0.5, generator(1))
        x = x.double()
        models = {m: PPCA.fit(x, m, noise_scale=0.5) for m in (2, 1)}
        points = x[:8]
        idatas = {m: nuts_posterior(ppca.model, points, **NUTS_BUDGET) for m, ppca in models.items()}
    return points, models, idatas


# ------------------------------------------------------------------ issue 12: log_likelihood, observed_data
def test_nuts_mixture_log_likelihood_is_the_mixture_density_at_each_draw(mixtures):
    x, idatas = mixtures
    idata = idatas["identifiable"]
    assert {"log_likelihood", "observed_data"} <= set(idata.groups())
    log_lik = idata.log_likelihood["x"]
    assert log_lik.dims == ("chain", "draw", "x_dim_0") and log_lik.shape == (2, 60, 150)
    np.testing.assert_array_equal(idata.observed_data["x"].values, x)
    weight = idata.posterior["weight"].values  # (chain, draw)
    expected = mixture_log_density(x, weight[..., None], SEPARATED)
    assert np.abs(log_lik.values - expected).max() < 1e-6
    # the values move with the draw, so a draw/chain mix-up could not pass the comparison above
    assert log_lik.values.std(axis=(0, 1)).max() > 1e-2
    model = MixtureWeightModel(SEPARATED, 1.0).model
    for chain, draw in ((0, 0), (1, 59), (1, 17)):
        traced = traced_log_likelihood(model, {"weight": torch.tensor(weight[chain, draw])}, torch.as_tensor(x))
        assert np.abs(log_lik.values[chain, draw] - traced).max() < 1e-6


def test_nuts_ppca_log_likelihood_is_the_density_of_each_point_given_its_latent(ppcas):
    points, models, idatas = ppcas
    ppca, idata = models[2], idatas[2]
    log_lik = idata.log_likelihood["x"]
    assert log_lik.dims == ("chain", "draw", "x_dim_0") and log_lik.shape == (2, 60, 8)  # one per point
    np.testing.assert_array_equal(idata.observed_data["x"].values, points.numpy())
    z = idata.posterior["z"].values  # (chain, draw, point, latent)
    mean = z @ ppca.weight.numpy().T + ppca.mean.numpy()
    expected = norm.logpdf(points.numpy(), mean, ppca.noise_scale).sum(-1)  # sum over the 4 data dimensions
    assert np.abs(log_lik.values - expected).max() < 1e-6
    assert log_lik.values.std(axis=(0, 1)).min() > 1e-2
    for chain, draw in ((0, 3), (1, 42)):
        traced = traced_log_likelihood(ppca.model, {"z": torch.as_tensor(z[chain, draw])}, points)
        assert np.abs(log_lik.values[chain, draw] - traced).max() < 1e-6


def test_loo_and_compare_prefer_the_identifiable_mixture_and_see_no_parameter_in_the_other(mixtures):
    x, idatas = mixtures
    loo = {name: quiet_loo(idata) for name, idata in idatas.items()}
    # w cannot change p(x | w) when both components sit at 0: every draw gives the same pointwise
    # log-likelihood, LOO is exact, and the effective number of parameters is zero
    assert abs(loo["non-identifiable"]["p_loo"]) < 1e-8
    assert abs(loo["non-identifiable"]["elpd_loo"] - norm.logpdf(x, 0.0, 1.0).sum()) < 1e-6
    assert 0.3 < loo["identifiable"]["p_loo"] < 2.0  # one parameter, well identified
    assert loo["identifiable"]["loo_i"].shape == (150,)
    waic = az.waic(idatas["identifiable"])
    assert abs(waic["elpd_waic"] - loo["identifiable"]["elpd_loo"]) < 0.5
    table = az.compare(idatas)
    assert list(table.index) == ["identifiable", "non-identifiable"]
    assert table.loc["non-identifiable", "elpd_diff"] > 10 * table.loc["non-identifiable", "dse"]


def test_a_non_identifiable_mixture_in_single_precision_gets_exactly_zero_p_loo():
    x = simulate_mixture(150, 0.15, SEPARATED, 1.0, generator())  # float32, the default
    idata = nuts_posterior(MixtureWeightModel(ONE_CLUSTER, 1.0).model, x, **NUTS_BUDGET)
    log_lik = idata.log_likelihood["x"].values
    # w drops out of p(x_i | w): the draws differ by float32 rounding only, and are stored as one value
    assert log_lik.dtype == np.float64 and np.ptp(log_lik, axis=(0, 1)).max() == 0.0
    assert np.abs(log_lik[0, 0] - norm.logpdf(x.double().numpy(), 0.0, 1.0)).max() < 1e-5
    for reff in (None, 0.5):  # a relative efficiency below 1 made PSIS return NaN on tied values
        loo = quiet_loo(idata, reff=reff)
        assert abs(loo["p_loo"]) < 1e-9 and abs(loo["elpd_loo"] - log_lik[0, 0].sum()) < 1e-9


def test_loo_and_compare_on_ppca_prefer_the_model_with_both_true_dimensions(ppcas):
    points, models, idatas = ppcas
    loo = {m: quiet_loo(idata) for m, idata in idatas.items()}
    for m in (1, 2):
        assert loo[m]["loo_i"].shape == (8,) and np.isfinite(loo[m]["elpd_loo"])
    # PSIS-LOO on log p(x_n | z_n) leaves x_n out but keeps z_n fitted to it: ArviZ says so
    assert loo[2]["warning"] and (loo[2]["pareto_k"].values > 0.7).any()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Pareto distribution.*", category=UserWarning)
        table = az.compare({"M = 2": idatas[2], "M = 1": idatas[1]})
    # M = 1 leaves a true direction to the noise; the pointwise differences are chi-square-like
    # (large for points far along that direction), so with 8 points the margin is about 2 SE
    assert list(table.index) == ["M = 2", "M = 1"]
    assert table.loc["M = 1", "elpd_diff"] > table.loc["M = 1", "dse"] > 0


def test_vi_posterior_gives_the_log_likelihood_of_its_own_draws():
    with float64():
        x = simulate_mixture(150, 0.15, SEPARATED, 1.0, generator(2)).double()
        idata = vi_posterior(MixtureWeightModel(SEPARATED, 1.0).model, x, steps=150, lr=0.05, num_samples=100)
    assert {"log_likelihood", "observed_data"} <= set(idata.groups())
    log_lik = idata.log_likelihood["x"]
    assert log_lik.dims == ("chain", "draw", "x_dim_0") and log_lik.shape == (1, 100, 150)
    np.testing.assert_array_equal(idata.observed_data["x"].values, x.numpy())
    expected = mixture_log_density(x.numpy(), idata.posterior["weight"].values[..., None], SEPARATED)
    assert np.abs(log_lik.values - expected).max() < 1e-6
    assert 0.3 < az.loo(idata)["p_loo"] < 2.0


def test_the_log_likelihood_leaves_the_random_stream_as_it_found_it():
    """Tracing the model draws random numbers; the prior draws that follow must not change."""
    from pyro_lid.infer.posterior_samples import _likelihood_groups

    model, x = MixtureWeightModel(SEPARATED, 1.0).model, torch.randn(20)
    draws = {"weight": torch.rand(5)}
    pyro.set_rng_seed(5)
    expected = torch.rand(3)
    pyro.set_rng_seed(5)
    groups = _likelihood_groups(model, draws, 1, (x,), {})
    assert groups["log_likelihood"]["x"].shape == (1, 5, 20)
    assert torch.equal(torch.rand(3), expected)


def _not_vectorizable(x):
    loc = pyro.sample("loc", dist.Normal(0.0, 3.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(float(loc), 1.0), obs=x)  # float() fails on a batch of draws


def _silently_first_draw(x):
    loc = pyro.sample("loc", dist.Normal(0.0, 3.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(loc.reshape(-1)[0], 1.0), obs=x)  # vectorized: every draw is draw 0


@pytest.mark.parametrize("model", [_not_vectorizable, _silently_first_draw])
def test_pointwise_log_likelihood_of_a_model_that_does_not_vectorize(model):
    from pyro_lid.infer.posterior_samples import pointwise_log_likelihood

    with float64():
        loc = torch.tensor([-1.0, 0.0, 0.5, 2.0])
        x = torch.tensor([0.3, -1.2, 2.0])
        log_lik = pointwise_log_likelihood(model, {"loc": loc}, x)["x"]
    assert log_lik.shape == (4, 3)
    expected = norm.logpdf(x.numpy(), loc.numpy()[:, None], 1.0)
    assert np.abs(log_lik.numpy() - expected).max() < 1e-6


# ------------------------------------------------------------------ issue 13: one layout for prior and posterior
PRIOR_LOC, PRIOR_SCALE = (0.0, 3.0), (1.0, 0.5)


class _Encoder:
    """p(z) = N((0, 3), diag(1, 0.5^2)); q(z | x) = N((x_0, 3), diag(0.2^2, 0.5^2)): z[0] follows the
    data, z[1] is collapsed (its posterior is its prior). Unequal prior marginals tell the latents apart."""

    def posterior(self, x):
        loc = torch.stack([x[:, 0], torch.full_like(x[:, 0], PRIOR_LOC[1])], -1)
        return dist.Normal(loc, torch.tensor([0.2, PRIOR_SCALE[1]])).to_event(1)

    def prior(self):
        return dist.Normal(torch.tensor(PRIOR_LOC), torch.tensor(PRIOR_SCALE)).to_event(1)


def _curve_mean(line):
    """Mean of the density drawn by a KDE line."""
    x, y = line.get_xdata(), line.get_ydata()
    return np.trapezoid(x * y, x) / np.trapezoid(y, x)


def test_latent_inference_data_prior_and_posterior_share_a_layout_that_arviz_plots():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = torch.randn(10, 3, generator=generator(3))
    x[:, 0] = torch.linspace(-2.0, 2.0, 10)  # the chosen points' posteriors of z[0] sit far apart
    idata = latent_inference_data(_Encoder(), x, indices=[0, 4, 7], num_samples=400)
    cells = [(p, d) for p in (0, 4, 7) for d in (0, 1)]  # (point, latent) in ArviZ's order
    try:
        axes = az.plot_dist_comparison(idata, var_names=["z"])  # an IndexError with mismatched layouts
        assert axes.shape == (len(cells), 3)  # one row per (point, latent): prior, posterior, both
        assert all(ax.has_data() for ax in axes.flat)
        assert [ax.get_xlabel() for ax in axes[:, 2]] == [f"z\n{p}, {d}" for p, d in cells]
        for row, (p, d) in enumerate(cells):  # each row pairs the prior of z[d] with point p's posterior
            (prior_line,), (post_line,) = axes[row, 0].get_lines(), axes[row, 1].get_lines()
            assert abs(_curve_mean(post_line) - (float(x[p, 0]) if d == 0 else PRIOR_LOC[1])) < 0.1
            assert abs(_curve_mean(prior_line) - PRIOR_LOC[d]) < 0.2
        fig = plot_latent_posteriors(idata)  # pyro-lid's own figure reads the same layout
        for d, ax in enumerate(fig.axes[:2]):
            prior_line = ax.get_lines()[0]  # dashed: the prior draws of z[d], pooled over the points
            assert prior_line.get_linestyle() == "--" and len(ax.get_lines()) == 1 + 3
            assert abs(_curve_mean(prior_line) - PRIOR_LOC[d]) < 0.15
    finally:
        plt.close("all")
    post, prior = idata.posterior["z"], idata.prior["z"]
    assert prior.dims == post.dims == ("chain", "draw", "point", "latent")
    assert prior.shape == post.shape == (1, 400, 3, 2)
    for dim in ("point", "latent"):
        np.testing.assert_array_equal(prior.coords[dim].values, post.coords[dim].values)
    # independent prior draws per point, each with the prior's marginals, uncorrelated across points
    draws = prior.values[0]
    assert np.abs(draws.mean(0) - PRIOR_LOC).max() < 0.2 and np.abs(draws.std(0) / PRIOR_SCALE - 1).max() < 0.15
    assert abs(np.corrcoef(draws[:, 0, 0], draws[:, 1, 0])[0, 1]) < 0.2
    rows = {row["latent"]: row for row in prior_posterior_table(idata)}
    assert rows["z[1]"]["sd_ratio"] > 0.85 and rows["z[0]"]["sd_ratio"] < 0.3  # collapsed / informative
