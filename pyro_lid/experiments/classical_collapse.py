"""Posterior collapse without neural networks: PPCA and Gaussian mixtures under exact inference.

Every scenario in :data:`pyro_lid.data.classical.MIXTURE_SCENARIOS` and
:data:`~pyro_lid.data.classical.PPCA_SCENARIOS` is simulated, its latent posterior is
computed with NUTS (exact) and with mean-field / full-rank VI, and each posterior is
compared with its prior (:func:`pyro_lid.diagnostics.prior_posterior_table`). Writes
``summary.md``, ``summary.json`` (``{"budget", "settings", "seed", "rows"}``: which budget, smoke or full, its
settings and the seed, beside the table's rows) and three figures to the output folder (:data:`OUTPUT_FILES`);
a folder that holds an earlier run's is refused unless ``overwrite``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data.classical import MIXTURE_SCENARIOS, PPCA_SCENARIOS, simulate_mixture, simulate_ppca
from ..diagnostics import plot_log_likelihood_curve, plot_prior_posterior, prior_posterior_table
from ..infer import nuts_posterior, vi_posterior
from ..models import PPCA, MixtureWeightModel

__all__ = ["run_classical_collapse", "format_table", "check_output_dir", "OUTPUT_FILES"]

#: What a run writes to its output folder.
OUTPUT_FILES = ("summary.json", "summary.md", "mixture_weight.png", "ppca_latents.png", "ppca_likelihood.png")

_COLUMNS = ["scenario", "method", "latent", "post_mean", "post_sd", "prior_sd", "sd_ratio", "kl", "w1", "rhat"]


def _budget(smoke_test: bool) -> dict:
    if smoke_test:
        return {
            "samples": 30,
            "warmup": 30,
            "chains": 2,
            "vi_steps": 60,
            "mixture_n": 400,
            "ppca_fit_n": 500,
            "ppca_points": 3,
            "jit": False,
        }
    return {
        "samples": 1000,
        "warmup": 500,
        "chains": 2,
        "vi_steps": 3000,
        "mixture_n": None,
        "ppca_fit_n": 5000,
        "ppca_points": 50,
        "jit": True,
    }


def _run_methods(model, data, budget, seed, methods):
    idatas = {}
    if "NUTS" in methods:
        idatas["NUTS"] = nuts_posterior(
            model,
            data,
            num_samples=budget["samples"],
            warmup_steps=budget["warmup"],
            num_chains=budget["chains"],
            seed=seed,
            jit_compile=budget["jit"],
        )
    for label, guide in (("mean-field VI", "mean_field"), ("full-rank VI", "full_rank")):
        if label in methods:
            idatas[label] = vi_posterior(model, data, guide=guide, steps=budget["vi_steps"], lr=0.02, seed=seed)
    return idatas


def check_output_dir(output_dir, overwrite: bool = False) -> list[Path]:
    """Refuse an ``output_dir`` that holds an earlier run's :data:`OUTPUT_FILES` unless ``overwrite``; return
    those files (what ``overwrite`` replaces)."""
    earlier = [Path(output_dir) / name for name in OUTPUT_FILES if (Path(output_dir) / name).exists()]
    if earlier and not overwrite:
        raise ValueError(f"{output_dir} already holds a classical run ({', '.join(p.name for p in earlier)}); pass "
                         "--overwrite (overwrite=True) to replace it, or use another --output-dir")  # fmt: skip
    return earlier


def run_classical_collapse(output_dir: str | Path, smoke_test: bool = False, seed: int = 0,
                           overwrite: bool = False) -> list[dict]:  # fmt: skip
    """Run all scenarios; return the table rows (also written to ``output_dir``, with the budget and seed).

    :param overwrite: replace an earlier run's files in ``output_dir`` (deleted first, so that a run that fails
        leaves no mix of two runs); without it such a folder is refused before any work.
    """
    earlier = check_output_dir(output_dir, overwrite)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for path in earlier:
        path.unlink()
    budget = _budget(smoke_test)
    gen = torch.Generator().manual_seed(seed)
    rows = []

    # ---------------------------------------------------------------- mixtures
    fig, axes = plt.subplots(2, len(MIXTURE_SCENARIOS), figsize=(4 * len(MIXTURE_SCENARIOS), 6.5))
    grid = torch.linspace(0.01, 0.99, 197, dtype=torch.float64)
    for col, (name, spec) in enumerate(MIXTURE_SCENARIOS.items()):
        num_data = budget["mixture_n"] or spec["num_data"]
        data = simulate_mixture(num_data, spec["weight"], spec["locs"], spec["scale"], gen)
        mixture = MixtureWeightModel(spec["locs"], spec["scale"])
        # a 1-D latent: full-rank VI is mean-field VI
        idatas = _run_methods(mixture.model, data, budget, seed, ("NUTS", "mean-field VI"))
        for method, idata in idatas.items():
            for row in prior_posterior_table(idata):
                rows.append({"scenario": f"mixture, {name} (true w = {spec['weight']})", "method": method, **row})
        plot_prior_posterior(idatas, "weight", ax=axes[0, col], title=f"mixture weight: {name}")
        curve = mixture.log_likelihood_curve(data.double(), grid)
        plot_log_likelihood_curve(grid, curve, ax=axes[1, col], xlabel="mixture weight w")
        axes[1, col].set_title(f"log p(x | w): range {float(curve.max() - curve.min()):.3g} nats")
    fig.tight_layout()
    fig.savefig(out / "mixture_weight.png", dpi=90)
    plt.close(fig)

    # ---------------------------------------------------------------- PPCA
    fig, axes = plt.subplots(2, len(PPCA_SCENARIOS), figsize=(3.3 * len(PPCA_SCENARIOS), 6))
    curves = {}
    for col, (name, spec) in enumerate(PPCA_SCENARIOS.items()):
        data, _, _ = simulate_ppca(budget["ppca_fit_n"], 5, spec["true_dim"], spec["noise_scale"], gen)
        ppca = PPCA.fit(data, spec["latent_dim"], noise_scale=spec["noise_scale"])
        points = data[: budget["ppca_points"]]  # given W, each z_n depends on x_n alone
        idatas = _run_methods(ppca.model, points, budget, seed, ("NUTS", "mean-field VI", "full-rank VI"))
        column_norms = ppca.weight.norm(dim=0).tolist()
        for method, idata in idatas.items():
            for row in prior_posterior_table(idata):
                m = int(row["latent"].split("[")[1].rstrip("]"))
                scenario = f"PPCA, {name} (sigma = {spec['noise_scale']})"
                rows.append(
                    {
                        "scenario": scenario,
                        "method": method,
                        **row,
                        "latent": f"z[{m}] (|W col| = {column_norms[m]:.2f})",
                    }
                )
        for m in range(spec["latent_dim"]):  # data point 0, coordinate m
            plot_prior_posterior(idatas, "z", coord=m, ax=axes[m, col], title=f"{name}: z[{m}]")
        if spec["true_dim"] < spec["latent_dim"]:
            z_grid = torch.linspace(-3, 3, 121)
            curves[name] = [(z_grid, ppca.log_likelihood_curve(points, m, z_grid)) for m in range(spec["latent_dim"])]
    fig.tight_layout()
    fig.savefig(out / "ppca_latents.png", dpi=80)
    plt.close(fig)

    fig, axes = plt.subplots(1, max(1, len(curves)), figsize=(5 * max(1, len(curves)), 3.5), squeeze=False)
    for ax, (name, per_dim) in zip(axes[0], curves.items()):
        for m, (z_grid, curve) in enumerate(per_dim):
            plot_log_likelihood_curve(z_grid, curve, ax=ax, label=f"z[{m}]", xlabel="value of z[m] (all data points)")
        ax.set_title(f"PPCA {name}: log p(x | z)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "ppca_likelihood.png", dpi=90)
    plt.close(fig)

    name = "smoke test" if smoke_test else "full"
    summary = {"budget": name, "settings": budget, "seed": seed, "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    settings = ", ".join(f"{key} {value}" for key, value in budget.items())
    (out / "summary.md").write_text(f"budget: {name} ({settings}); seed {seed}\n\n{format_table(rows)}\n")
    return rows


def format_table(rows: list[dict]) -> str:
    """A Markdown table of the rows (numbers to 3 decimals)."""

    def cell(value):
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(cell(row[c]) for c in _COLUMNS) + " |" for row in rows]
    return "\n".join(lines)
