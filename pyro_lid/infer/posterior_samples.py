"""Posterior samples as ArviZ ``InferenceData``: exact (NUTS) and variational (mean-field, full-rank).

Both functions return an :class:`arviz.InferenceData` with a ``posterior`` group, a
``prior`` group (draws from the model's prior for the same latent sites) and, for NUTS,
``sample_stats.diverging``. Analyse them with ArviZ (``az.summary``, ``az.plot_dist``)
or with :func:`pyro_lid.diagnostics.prior_posterior_table`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from pyro.optim import Adam
from pyro.poutine.util import site_is_subsample
from tqdm.auto import tqdm

from .._arviz import arviz as az

__all__ = ["latent_sites", "nuts_posterior", "vi_posterior", "prior_draws"]

_GUIDES = {"mean_field": AutoNormal, "full_rank": AutoMultivariateNormal}


def latent_sites(model, *args, **kwargs) -> list[str]:
    """Names of the unobserved sample sites of ``model(*args, **kwargs)``, in program order."""
    trace = pyro.poutine.trace(model).get_trace(*args, **kwargs)
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]


def _predict(model, args, kwargs, num_samples: int, names, guide=None) -> dict:
    """``{name: (1, num_samples, *site_shape)}`` numpy draws from the prior, or from ``guide``."""
    trace = pyro.poutine.trace(model).get_trace(*args, **kwargs)
    with torch.no_grad():
        predictive = Predictive(model, guide=guide, num_samples=num_samples, return_sites=names, parallel=True)
        samples = predictive(*args, **kwargs)
    # vectorized prediction can add singleton axes to global sites: restore each site's own shape
    return {
        name: samples[name].reshape((num_samples,) + trace.nodes[name]["value"].shape).cpu().numpy()[None]
        for name in names
    }


def prior_draws(model, *args, num_samples: int = 1000, names=None, **kwargs) -> dict:
    """Draws of the latent sites from the model's prior, ``{name: (1, num_samples, *site_shape)}``."""
    names = latent_sites(model, *args, **kwargs) if names is None else names
    return _predict(model, args, kwargs, num_samples, names)


def nuts_posterior(
    model,
    *args,
    num_samples: int = 500,
    warmup_steps: int = 500,
    num_chains: int = 2,
    seed: int = 0,
    jit_compile: bool = False,
    target_accept_prob: float = 0.8,
    num_prior_samples: int = 1000,
    progress: bool = False,
    **kwargs,
) -> az.InferenceData:
    """Exact posterior inference with NUTS; chains run one after another (seeds ``seed, seed+1, ...``).

    :param model: a Pyro model with continuous latents.
    :param args: its arguments (the data).
    :returns: ``InferenceData`` with ``posterior`` (``num_chains`` x ``num_samples``), ``prior``
        and ``sample_stats`` (``diverging``) groups.
    """
    if num_chains < 1 or num_samples < 1 or warmup_steps < 0:
        raise ValueError(
            f"need num_chains >= 1, num_samples >= 1, warmup_steps >= 0; got {num_chains}, "
            f"{num_samples}, {warmup_steps}"
        )
    names = latent_sites(model, *args, **kwargs)
    chains, diverging = [], []
    for chain in range(num_chains):
        pyro.set_rng_seed(seed + chain)
        kernel = NUTS(model, jit_compile=jit_compile, ignore_jit_warnings=True, target_accept_prob=target_accept_prob)
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=not progress)
        with warnings.catch_warnings():  # torch 2.14 deprecates torch.jit.trace, which jit_compile uses
            warnings.filterwarnings("ignore", message=".*torch.jit.trace.*is deprecated", category=FutureWarning)
            mcmc.run(*args, **kwargs)
        chains.append(mcmc.get_samples())
        flags = np.zeros(num_samples, dtype=bool)
        steps = [t for t in mcmc.diagnostics()["divergences"]["chain 0"] if 0 <= t < num_samples]
        flags[steps] = True
        diverging.append(flags)
    posterior = {name: np.stack([c[name].detach().cpu().numpy() for c in chains]) for name in names}
    pyro.set_rng_seed(seed)
    prior = prior_draws(model, *args, num_samples=num_prior_samples, names=names, **kwargs)
    return az.from_dict(
        posterior=posterior,
        prior=prior,
        sample_stats={"diverging": np.stack(diverging)},
        attrs={"inference": "NUTS"},
    )


def vi_posterior(
    model,
    *args,
    guide: str = "mean_field",
    steps: int = 2000,
    lr: float = 0.01,
    num_particles: int = 1,
    num_samples: int = 1000,
    seed: int = 0,
    progress: bool | None = False,
    **kwargs,
) -> az.InferenceData:
    """Variational posterior with ``AutoNormal`` (``"mean_field"``) or ``AutoMultivariateNormal`` (``"full_rank"``).

    Trains with ``Trace_ELBO`` in a parameter-store scope of its own, so calls do not
    interfere with each other or with the caller's parameters. The final ELBO estimate
    (mean over the last 10% of steps) is stored in ``attrs["elbo"]``.
    """
    if guide not in _GUIDES:
        raise ValueError(f"guide must be one of {sorted(_GUIDES)}, got {guide!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    names = latent_sites(model, *args, **kwargs)
    with pyro.get_param_store().scope():
        pyro.set_rng_seed(seed)
        auto = _GUIDES[guide](model)
        svi = SVI(model, auto, Adam({"lr": lr}), Trace_ELBO(num_particles=num_particles))
        losses = []
        for _ in tqdm(range(steps), desc=f"{guide} VI", disable=None if progress is None else not progress):
            losses.append(svi.step(*args, **kwargs))
        if not np.isfinite(losses[-1]):
            raise RuntimeError(f"{guide} VI diverged: the loss is {losses[-1]} after {steps} steps; lower lr")
        posterior = _predict(model, args, kwargs, num_samples, names, guide=auto)
    prior = prior_draws(model, *args, num_samples=num_samples, names=names, **kwargs)
    tail = losses[-max(1, steps // 10) :]
    return az.from_dict(
        posterior=posterior,
        prior=prior,
        attrs={"inference": f"{guide} VI", "elbo": float(-np.mean(tail))},
    )
