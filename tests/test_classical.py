"""Collapse as non-identifiability in classical models, under exact inference (issue: classical demos)."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_lid.data.classical import simulate_mixture, simulate_ppca
from pyro_lid.diagnostics import gaussian_kl, prior_posterior_table, wasserstein1
from pyro_lid.infer import latent_sites, nuts_posterior, vi_posterior
from pyro_lid.models import PPCA, MixtureWeightModel

BETA55_MEAN, BETA55_SD = 0.5, math.sqrt(25 / (100 * 11))


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ mixture weight
def test_one_cluster_likelihood_is_flat_in_the_weight():
    x = simulate_mixture(2000, 0.15, (0.0, 0.0), 1.0, generator()).double()
    grid = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    curve = MixtureWeightModel((0.0, 0.0), 1.0).log_likelihood_curve(x, grid)
    assert float(curve.max() - curve.min()) < 1e-8 * float(curve.abs().max())
    separated = MixtureWeightModel((-5.0, 5.0), 1.0).log_likelihood_curve(x, grid)
    assert float(separated.max() - separated.min()) > 100  # not flat: the test can fail


def test_nuts_posterior_of_non_identifiable_weight_is_its_prior():
    x = simulate_mixture(1000, 0.15, (0.0, 0.0), 1.0, generator())
    idata = nuts_posterior(MixtureWeightModel().model, x, num_samples=400, warmup_steps=200, num_chains=2)
    weight = idata.posterior["weight"].values
    assert abs(weight.mean() - BETA55_MEAN) < 0.05
    assert abs(weight.std() - BETA55_SD) < 0.05
    (row,) = prior_posterior_table(idata)
    assert row["kl"] < 0.05 and 0.8 < row["sd_ratio"] < 1.2 and row["rhat"] < 1.1


def test_nuts_posterior_of_identifiable_weight_concentrates_on_the_truth():
    x = simulate_mixture(2000, 0.15, (-5.0, 5.0), 1.0, generator())
    idata = nuts_posterior(
        MixtureWeightModel((-5.0, 5.0), 1.0).model, x, num_samples=300, warmup_steps=200, num_chains=2
    )
    weight = idata.posterior["weight"].values
    assert abs(weight.mean() - 0.15) < 0.03
    assert weight.std() < 0.1 * BETA55_SD  # binomial sd ~ 0.008 at n = 2000
    assert idata.sample_stats["diverging"].values.sum() == 0


# ------------------------------------------------------------------ PPCA
def fitted_ppca(true_dim, latent_dim=2, noise=0.5, n=5000, seed=0):
    x, _, _ = simulate_ppca(n, 5, true_dim, noise, generator(seed))
    return PPCA.fit(x, latent_dim, noise_scale=noise), x


def test_ppca_mle_zeroes_the_redundant_column_with_enough_data():
    ppca, _ = fitted_ppca(true_dim=1)
    norms = ppca.weight.norm(dim=0)
    assert norms[0] > 1.5 and norms[1] < 0.25  # true signal scale 2; the redundant column is nearly zero
    ppca2, _ = fitted_ppca(true_dim=2)
    assert (ppca2.weight.norm(dim=0) > 1.5).all()


def test_ppca_closed_forms_agree_exactly():
    """log p(x) = log p(x|z) + log p(z) - log p(z|x) for any z, when p(z|x) is the exact posterior."""
    ppca, x = fitted_ppca(true_dim=2, noise=0.7, n=500)
    x = x[:20].double()
    ppca = PPCA(ppca.weight.double(), ppca.mean.double(), ppca.noise_scale)
    mean, cov = ppca.exact_posterior(x)
    z = dist.MultivariateNormal(mean, cov).sample()
    log_joint = dist.Normal(z @ ppca.weight.T + ppca.mean, ppca.noise_scale).to_event(1).log_prob(x) + dist.Normal(
        torch.zeros(2, dtype=torch.float64), 1.0
    ).to_event(1).log_prob(z)
    identity = log_joint - dist.MultivariateNormal(mean, cov).log_prob(z)
    assert torch.allclose(identity, ppca.log_marginal_likelihood(x), atol=1e-9)
    # and the model's own trace scores x with the same likelihood
    trace = pyro.poutine.trace(pyro.poutine.condition(ppca.model, {"z": z})).get_trace(x)
    assert torch.allclose(trace.log_prob_sum(), log_joint.sum(), atol=1e-9)


def test_ppca_mle_maximizes_the_likelihood():
    ppca, x = fitted_ppca(true_dim=2, noise=0.5, n=2000)
    best = ppca.log_marginal_likelihood(x).sum()
    for scale in (0.9, 1.1):
        assert PPCA(ppca.weight * scale, ppca.mean, ppca.noise_scale).log_marginal_likelihood(x).sum() < best
    assert PPCA(ppca.weight, ppca.mean + 0.05, ppca.noise_scale).log_marginal_likelihood(x).sum() < best


def test_ppca_likelihood_curve_is_flat_exactly_for_a_zero_column():
    weight = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    ppca = PPCA(weight, torch.zeros(3), 0.5)
    x = torch.randn(10, 3)
    grid = torch.linspace(-3, 3, 31)
    assert torch.equal(ppca.log_likelihood_curve(x, 1, grid), ppca.log_likelihood_curve(x, 1, grid)[:1].expand(31))
    curve0 = ppca.log_likelihood_curve(x, 0, grid)
    assert float(curve0.max() - curve0.min()) > 10


def test_nuts_matches_the_exact_ppca_posterior_and_shows_collapse():
    ppca, x = fitted_ppca(true_dim=1)
    points = x[:8]
    idata = nuts_posterior(ppca.model, points, num_samples=400, warmup_steps=300, num_chains=2)
    z = idata.posterior["z"].values.reshape(-1, 8, 2)
    mean, cov = ppca.exact_posterior(points)
    sd = cov.diagonal().sqrt().numpy()
    assert np.abs(z.mean(0) - mean.numpy()).max() < 0.25 * sd.max()
    assert np.allclose(z.std(0).mean(0), sd, rtol=0.15)
    rows = {r["latent"]: r for r in prior_posterior_table(idata)}
    assert rows["z[1]"]["sd_ratio"] > 0.9  # the redundant latent stays at its prior
    assert rows["z[0]"]["sd_ratio"] < 0.5  # the identifiable one concentrates


def test_larger_noise_moves_the_posterior_towards_the_prior():
    ratios = []
    for noise in (0.1, 1.0, 2.0):
        ppca, _ = fitted_ppca(true_dim=2, noise=noise, n=2000)
        _, cov = ppca.exact_posterior(torch.zeros(1, 5))
        ratios.append(float(cov.diagonal().sqrt().mean()))  # posterior sd / prior sd (prior sd = 1)
    assert ratios[0] < ratios[1] < ratios[2] < 1


# ------------------------------------------------------------------ VI and ArviZ
def test_vi_returns_inference_data_with_prior_and_posterior():
    x = simulate_mixture(1000, 0.15, (-5.0, 5.0), 1.0, generator())
    idata = vi_posterior(MixtureWeightModel((-5.0, 5.0), 1.0).model, x, steps=400, lr=0.05, num_samples=500)
    assert {"posterior", "prior"} <= set(idata.groups())
    assert idata.posterior["weight"].shape == (1, 500) and idata.prior["weight"].shape == (1, 500)
    assert abs(float(idata.posterior["weight"].mean()) - 0.15) < 0.03
    assert np.isfinite(idata.attrs["elbo"])
    ppca, x = fitted_ppca(true_dim=1, n=1000)
    full = vi_posterior(ppca.model, x[:4], guide="full_rank", steps=300, num_samples=200)
    assert full.posterior["z"].shape == (1, 200, 4, 2)


def test_latent_sites_skip_observed_and_plate_sites():
    ppca, x = fitted_ppca(true_dim=1, n=100)
    assert latent_sites(ppca.model, x) == ["z"]
    assert latent_sites(ppca.ard_model, x) == ["tau", "weight", "z"]


def test_collapse_measures_against_closed_forms():
    assert np.isclose(gaussian_kl(1.0, 2.0, 0.0, 1.0), math.log(0.5) + (4 + 1) / 2 - 0.5)
    assert gaussian_kl(0.3, 0.7, 0.3, 0.7) == 0.0
    rng = np.random.default_rng(0)
    p = rng.normal(size=20000)
    assert abs(wasserstein1(p + 0.5, p) - 0.5) < 1e-9  # a pure shift: W1 is the shift


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="latent_dim"):
        PPCA.fit(torch.randn(50, 3), 3)
    with pytest.raises(ValueError, match="NaN"):
        PPCA.fit(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), 1)
    ppca = PPCA.fit(torch.randn(50, 3), 1)
    with pytest.raises(ValueError, match="3-dimensional"):
        ppca.model(torch.randn(5, 4))
    with pytest.raises(ValueError, match="1-D data"):
        MixtureWeightModel().model(torch.randn(5, 2))
    with pytest.raises(ValueError, match="guide"):
        vi_posterior(MixtureWeightModel().model, torch.randn(5), guide="laplace")
    with pytest.raises(ValueError, match="noise_scale"):
        simulate_ppca(10, 3, 1, 0.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ppca_fit_on_data_of_rank_at_most_latent_dim_says_the_ml_noise_is_zero(dtype):
    # rank-2 data in D=5 with M=3: lambda_3..5 = 0, so sigma^2_ML = 0 (eigh returns them as +-1e-16)
    g = generator(3)
    x = (torch.randn(200, 2, generator=g, dtype=torch.float64) @ torch.randn(2, 5, generator=g, dtype=torch.float64)
         + 10.0).to(dtype)  # fmt: skip
    with pytest.raises(ValueError, match=r"2-dimensional subspace .*noise variance is sigma\^2 = 0, a degenerate"):
        PPCA.fit(x, 3)
    with pytest.raises(ValueError, match=r"0-dimensional subspace"):
        PPCA.fit(torch.ones(10, 5, dtype=dtype), 2)
    # M=1 leaves a nonzero eigenvalue among the trailing ones: sigma^2 = lambda_2 / 4
    eigvals = torch.linalg.eigvalsh(torch.cov(x.T, correction=0)).flip(0)
    assert math.isclose(PPCA.fit(x, 1).noise_scale ** 2, eigvals[1].item() / 4, rel_tol=1e-4)
    # a known noise level makes the density proper; W then carries the data's two directions
    ppca = PPCA.fit(x, 3, noise_scale=0.1)
    assert torch.isfinite(ppca.weight).all() and torch.isfinite(ppca.log_marginal_likelihood(x)).all()
    assert (torch.linalg.norm(ppca.weight, dim=0) > 0).tolist() == [True, True, False]


def test_classical_example_smoke_test_writes_table_and_figures(tmp_path):
    script = Path(__file__).resolve().parent.parent / "examples" / "classical_collapse.py"
    result = subprocess.run(
        [sys.executable, str(script), "--output-dir", str(tmp_path), "--smoke-test"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("summary.md", "summary.json", "mixture_weight.png", "ppca_latents.png", "ppca_likelihood.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "mixture, one cluster" in (tmp_path / "summary.md").read_text()


def test_ard_ppca_switches_off_the_redundant_column_under_nuts():
    x, _, _ = simulate_ppca(100, 5, 1, 0.5, generator(0))  # (60 points: a HalfCauchy funnel, divergences)
    ppca = PPCA.fit(x, 2, noise_scale=0.5)
    idata = nuts_posterior(ppca.ard_model, x, num_samples=150, warmup_steps=150, num_chains=1, jit_compile=True)
    column_norms = np.median(np.linalg.norm(idata.posterior["weight"].values.reshape(-1, 2, 5), axis=-1), 0)
    small, large = np.sort(column_norms)  # either column may take the signal
    assert large > 1.2 and small < 0.4 * large


def test_classical_records_budget_and_seed_and_refuses_to_overwrite_an_earlier_run(tmp_path, monkeypatch, capsys):
    """``summary.json`` says which budget (smoke or full) and seed made it; a second run into the same folder is
    refused, naming the files, unless ``--overwrite``; a smoke test has its own default folder."""
    import json

    import pyro_lid.experiments.classical_collapse as classical
    from pyro_lid.cli import main
    from pyro_lid.data.classical import MIXTURE_SCENARIOS, PPCA_SCENARIOS

    two = {"one cluster", "well separated", "true dim 1, M = 2", "true dim 2, M = 2"}  # two of each: seconds
    monkeypatch.setattr(classical, "MIXTURE_SCENARIOS", {k: v for k, v in MIXTURE_SCENARIOS.items() if k in two})
    monkeypatch.setattr(classical, "PPCA_SCENARIOS", {k: v for k, v in PPCA_SCENARIOS.items() if k in two})
    out = tmp_path / "out"
    assert main(["classical", "--smoke-test", "--seed", "3", "--output-dir", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["budget"] == "smoke test" and summary["seed"] == 3 and summary["settings"]["vi_steps"] == 60
    assert summary["rows"] and summary["rows"][0]["scenario"].startswith("mixture, one cluster")
    assert (out / "summary.md").read_text().startswith("budget: smoke test (samples 30, warmup 30, ")
    assert "; seed 3\n\n| scenario |" in (out / "summary.md").read_text()
    capsys.readouterr()
    earlier = {name: (out / name).read_bytes() for name in classical.OUTPUT_FILES}

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(classical, "_run_methods", no_work)
    with pytest.raises(SystemExit) as exited:
        main(["classical", "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1
    assert f"{out} already holds a classical run (summary.json, summary.md, mixture_weight.png" in err
    assert "--overwrite" in err
    with pytest.raises(ValueError, match="already holds a classical run"):
        classical.run_classical_collapse(out)
    assert {name: (out / name).read_bytes() for name in classical.OUTPUT_FILES} == earlier  # nothing replaced
    with pytest.raises(AssertionError, match="work started"):  # --overwrite goes ahead...
        main(["classical", "--output-dir", str(out), "--overwrite"])
    assert not any((out / name).exists() for name in classical.OUTPUT_FILES)  # ...after removing the earlier run
    seen = []
    monkeypatch.setattr(classical, "run_classical_collapse", lambda out, **options: seen.append(out) or [])
    monkeypatch.chdir(tmp_path)
    assert main(["classical", "--smoke-test"]) == 0 and main(["classical"]) == 0
    assert seen == ["runs/classical-smoke", "runs/classical"]
