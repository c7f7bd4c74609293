r"""Posterior samples as ArviZ ``InferenceData``: exact (NUTS) and variational (mean-field, full-rank).

Both functions return an :class:`arviz.InferenceData` with a ``posterior`` group, a
``prior`` group (draws from the model's prior for the same latent sites), the
``observed_data`` and ``log_likelihood`` groups that :func:`arviz.from_pyro` makes and,
for NUTS, ``sample_stats.diverging``. Analyse them with ArviZ (``az.summary``,
``az.plot_dist``, ``az.loo``, ``az.compare``) or with
:func:`pyro_lid.diagnostics.prior_posterior_table`.

``log_likelihood`` holds, for every observed site and every posterior draw
:math:`\theta^{(s)}` (all latent sites of the draw), the pointwise log-density
:math:`\log p(x_i \mid \theta^{(s)})` of each observation, with dimensions
``(chain, draw, <site's batch dims>)``: one value per data point of a ``pyro.plate``,
its event dimensions summed (:func:`pointwise_log_likelihood`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from pyro.optim import Adam
from pyro.poutine.util import site_is_subsample
from pyro.util import get_rng_state, set_rng_state
from tqdm.auto import tqdm

from .._arviz import arviz as az

__all__ = ["latent_sites", "nuts_posterior", "vi_posterior", "prior_draws", "pointwise_log_likelihood"]

_GUIDES = {"mean_field": AutoNormal, "full_rank": AutoMultivariateNormal}


def latent_sites(model, *args, **kwargs) -> list[str]:
    """Names of the unobserved sample sites of ``model(*args, **kwargs)``, in program order."""
    trace = pyro.poutine.trace(model).get_trace(*args, **kwargs)
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]


def _predict_tensors(model, args, kwargs, num_samples: int, names, guide=None) -> dict:
    """``{name: (num_samples, *site_shape)}`` tensor draws from the prior, or from ``guide``."""
    trace = pyro.poutine.trace(model).get_trace(*args, **kwargs)
    with torch.no_grad():
        predictive = Predictive(model, guide=guide, num_samples=num_samples, return_sites=names, parallel=True)
        samples = predictive(*args, **kwargs)
    # vectorized prediction can add singleton axes to global sites: restore each site's own shape
    return {name: samples[name].reshape((num_samples,) + trace.nodes[name]["value"].shape) for name in names}


def _predict(model, args, kwargs, num_samples: int, names, guide=None) -> dict:
    """``{name: (1, num_samples, *site_shape)}`` numpy draws from the prior, or from ``guide``."""
    samples = _predict_tensors(model, args, kwargs, num_samples, names, guide=guide)
    return {name: value.cpu().numpy()[None] for name, value in samples.items()}


def _observed_sites(model, args, kwargs) -> dict:
    """``{name: site}`` of the observed sample sites of one trace of ``model``, in program order."""
    trace = pyro.poutine.trace(model).get_trace(*args, **kwargs)
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and site["is_observed"] and not site_is_subsample(site)
    }


def _site_log_prob(site) -> torch.Tensor:
    """Unscaled, unmasked pointwise log-density of a site: its event dimensions summed."""
    return site["fn"].log_prob(site["value"])


def _log_likelihood_one_draw(model, draw: dict, args, kwargs, names) -> dict:
    conditioned = pyro.poutine.condition(model, data=draw)
    trace = pyro.poutine.trace(conditioned).get_trace(*args, **kwargs)
    return {name: _site_log_prob(trace.nodes[name]) for name in names}


def _log_likelihood_vectorized(model, samples: dict, num_draws: int, args, kwargs, shapes: dict) -> dict:
    trace = Predictive(model, posterior_samples=samples, num_samples=num_draws).get_vectorized_trace(*args, **kwargs)
    out = {}
    for name, shape in shapes.items():
        value = _site_log_prob(trace.nodes[name])
        if value.numel() == math.prod(shape):  # the site does not depend on the latents
            value = value.reshape(shape).expand((num_draws,) + shape)
        out[name] = value.reshape((num_draws,) + shape)
    return out


@torch.no_grad()
def pointwise_log_likelihood(model, samples: dict, *args, **kwargs) -> dict:
    r"""Pointwise log-likelihood of every observed site of ``model`` at each posterior draw.

    For draw :math:`s` (values :math:`\theta^{(s)}` of all the latent sites in ``samples``)
    and observed site :math:`x`, the value at index :math:`i` is

    .. math::

        \ell_{s,i} = \log p(x_i \mid \theta^{(s)}),

    the log-density of the site's distribution at its observed value, with the event
    dimensions summed and no ``poutine.scale`` or ``poutine.mask`` applied: one value per
    element of the site's batch shape (per data point of a ``pyro.plate``), as in
    :func:`arviz.from_pyro`. For a model with per-observation latents (PPCA's
    :math:`z_n`) this is the likelihood *given* :math:`z_n`, :math:`\log p(x_n \mid z_n)`.

    The draws are evaluated in one vectorized trace (the model's plates must declare its
    batch dimensions); the result is checked against a separate trace of the model
    conditioned on the first and on the last draw, and where the vectorized trace fails
    or disagrees, every draw is traced on its own.

    :param model: a Pyro model.
    :param dict samples: ``{site: tensor of shape (num_draws, *site_shape)}``, one entry
        per latent site of the model.
    :param args: the model's arguments (the data); ``kwargs`` likewise.
    :returns: ``{observed site: tensor of shape (num_draws, *batch_shape)}``.
    """
    observed = _observed_sites(model, args, kwargs)
    if not observed or not samples:
        return {}
    names = list(observed)
    shapes = {name: tuple(_site_log_prob(site).shape) for name, site in observed.items()}
    num_draws = next(iter(samples.values())).shape[0]

    def one_draw(s):
        return _log_likelihood_one_draw(model, {k: v[s] for k, v in samples.items()}, args, kwargs, names)

    try:
        result = _log_likelihood_vectorized(model, samples, num_draws, args, kwargs, shapes)
        for s in {0, num_draws - 1}:
            check = one_draw(s)
            for name in names:
                expected = check[name].reshape(shapes[name])
                tol = 1e-5 * (1.0 + float(expected.abs().max()))
                if not torch.allclose(result[name][s], expected, rtol=1e-5, atol=tol):
                    raise ValueError(f"vectorized log-likelihood of {name!r} disagrees at draw {s}")
        return result
    except Exception:  # not vectorizable: trace each draw (exact, slower)
        draws = [one_draw(s) for s in range(num_draws)]
        return {name: torch.stack([d[name].reshape(shapes[name]) for d in draws]) for name in names}


def _without_rounding_noise(value: torch.Tensor, ulps: int = 32) -> torch.Tensor:
    r"""Make exactly constant each observation's log-likelihood that varies over the draws by rounding only.

    Where :math:`p(x_i \mid \theta)` does not depend on the latents (a non-identifiable
    latent), the draws still give values a few ulps apart. ArviZ's PSIS fits its Pareto
    tail to those few tied values and can return NaN (with a relative efficiency below 1),
    and ``p_loo`` picks up the noise. A column whose range over the draws is at most
    ``ulps`` units in the last place of its largest magnitude is replaced by its mean,
    which moves no value by more than that range.

    :param torch.Tensor value: ``(num_draws, *batch_shape)``.
    """
    if value.shape[0] < 2 or not value.is_floating_point():
        return value
    spread = value.amax(0) - value.amin(0)
    flat = spread <= ulps * torch.finfo(value.dtype).eps * value.abs().amax(0).clamp_min(1.0)
    return torch.where(flat, value.mean(0), value)


def _likelihood_groups(model, samples: dict, num_chains: int, args, kwargs) -> dict:
    """``log_likelihood`` (``(chain, draw, ...)``) and ``observed_data`` dicts for ``az.from_dict``.

    Leaves the random number generators as it found them (tracing the model draws from
    them), so the draws that follow are those of a call without these groups.
    """
    rng_state = get_rng_state()
    try:
        observed = _observed_sites(model, args, kwargs)
        log_lik = pointwise_log_likelihood(model, samples, *args, **kwargs) if observed else {}
    finally:
        set_rng_state(rng_state)
    if not observed:
        return {}
    # stored in float64: ArviZ computes in the array's precision, and its sums over draws and points need it
    return {
        "log_likelihood": {
            name: _without_rounding_noise(value).cpu().double().reshape((num_chains, -1) + value.shape[1:]).numpy()
            for name, value in log_lik.items()
        },
        "observed_data": {name: site["value"].detach().cpu().numpy() for name, site in observed.items()},
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
    :returns: ``InferenceData`` with ``posterior`` (``num_chains`` x ``num_samples``), ``prior``,
        ``sample_stats`` (``diverging``), ``observed_data`` and ``log_likelihood`` groups;
        ``log_likelihood`` has dims ``(chain, draw, <observation dims>)``
        (:func:`pointwise_log_likelihood`), ready for ``az.loo``, ``az.waic`` and ``az.compare``.
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
    draws = {name: torch.cat([c[name] for c in chains]) for name in names}  # (chains * samples, ...)
    likelihood = _likelihood_groups(model, draws, num_chains, args, kwargs)
    pyro.set_rng_seed(seed)
    prior = prior_draws(model, *args, num_samples=num_prior_samples, names=names, **kwargs)
    return az.from_dict(
        posterior=posterior,
        prior=prior,
        sample_stats={"diverging": np.stack(diverging)},
        attrs={"inference": "NUTS"},
        **likelihood,
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
    r"""Variational posterior with ``AutoNormal`` (``"mean_field"``) or ``AutoMultivariateNormal`` (``"full_rank"``).

    Trains with ``Trace_ELBO`` in a parameter-store scope of its own, so calls do not
    interfere with each other or with the caller's parameters. The final ELBO estimate
    (mean over the last 10% of steps) is stored in ``attrs["elbo"]``.

    Like :func:`nuts_posterior` it returns ``observed_data`` and ``log_likelihood``
    (``(chain=1, draw, <observation dims>)``, evaluated at the same guide draws as the
    ``posterior`` group), so ``az.loo`` and ``az.compare`` apply. They treat the guide
    draws as posterior draws, so they score the variational posterior, not the exact one.

    :returns: ``InferenceData`` with ``posterior`` (one chain of ``num_samples`` guide
        draws), ``prior``, ``observed_data`` and ``log_likelihood`` groups.
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
        draws = _predict_tensors(model, args, kwargs, num_samples, names, guide=auto)
        posterior = {name: value.cpu().numpy()[None] for name, value in draws.items()}
        likelihood = _likelihood_groups(model, draws, 1, args, kwargs)  # in the scope: the model's params
    prior = prior_draws(model, *args, num_samples=num_samples, names=names, **kwargs)
    tail = losses[-max(1, steps // 10) :]
    return az.from_dict(
        posterior=posterior,
        prior=prior,
        attrs={"inference": f"{guide} VI", "elbo": float(-np.mean(tail))},
        **likelihood,
    )
