r"""How far a posterior moved from its prior, one latent coordinate at a time.

For a latent coordinate with posterior draws :math:`p` and prior draws :math:`q`:

* ``sd_ratio`` :math:`= \mathrm{sd}(p) / \mathrm{sd}(q)`: 1 for a collapsed latent, near 0
  for a well-identified one;
* ``kl`` :math:`= \mathrm{KL}(\mathcal{N}(m_p, s_p^2)\,\|\,\mathcal{N}(m_q, s_q^2))`, between
  moment-matched Gaussians, in nats: 0 when the posterior is the prior;
* ``w1`` :math:`= W_1(p, q) / s_q`: the 1-Wasserstein distance between the two samples
  (by quantile matching), in units of the prior sd;
* ``rhat`` (largest split R-hat over the coordinates; NaN with one chain) and
  ``ess_bulk`` (smallest bulk ESS), from ArviZ.

A latent with a leading data axis (one value per data point, like PPCA's :math:`z_n`)
is summarized per trailing coordinate, averaging the measures over data points.
"""

from __future__ import annotations

import numpy as np

from .._arviz import arviz as az

__all__ = ["gaussian_kl", "wasserstein1", "prior_posterior_table"]

_QUANTILES = np.linspace(0.005, 0.995, 199)


def gaussian_kl(mean_p, sd_p, mean_q, sd_q):
    """KL(N(mean_p, sd_p^2) || N(mean_q, sd_q^2)), elementwise, in nats."""
    return np.log(sd_q / sd_p) + (sd_p**2 + (mean_p - mean_q) ** 2) / (2 * sd_q**2) - 0.5


def wasserstein1(p: np.ndarray, q: np.ndarray, axis: int = 0) -> np.ndarray:
    """1-Wasserstein distance between two 1-D samples along ``axis`` (quantile matching)."""
    return np.abs(np.quantile(p, _QUANTILES, axis=axis) - np.quantile(q, _QUANTILES, axis=axis)).mean(0)


def prior_posterior_table(idata, var_names=None, per_datapoint=None) -> list[dict]:
    """One row per latent coordinate: posterior and prior moments and the collapse measures above.

    :param idata: ``InferenceData`` with ``posterior`` and ``prior`` groups (as made by
        :func:`pyro_lid.infer.nuts_posterior` or :func:`pyro_lid.infer.vi_posterior`).
    :param var_names: latents to summarize (default: all in the posterior).
    :param per_datapoint: names of latents whose first axis indexes data points
        (default: every latent with two or more axes).
    """
    if "posterior" not in idata.groups() or "prior" not in idata.groups():
        raise ValueError("prior_posterior_table needs InferenceData with both posterior and prior groups")
    var_names = list(idata.posterior.data_vars) if var_names is None else list(var_names)
    rhat = az.rhat(idata, var_names=var_names) if idata.posterior.sizes["chain"] > 1 else None
    ess = az.ess(idata, var_names=var_names, method="bulk")
    rows = []
    for name in var_names:
        post = idata.posterior[name].values
        prior = idata.prior[name].values
        post = post.reshape((-1,) + post.shape[2:])  # (draws, ...)
        prior = prior.reshape((-1,) + prior.shape[2:])
        datapoint_axis = post.ndim >= 3 if per_datapoint is None else name in per_datapoint
        if post.ndim == 1:
            post, prior = post[:, None], prior[:, None]
        elif post.ndim > 2 and not datapoint_axis:
            post, prior = post.reshape(post.shape[0], -1), prior.reshape(prior.shape[0], -1)
        if not datapoint_axis:  # (draws, coords) -> (draws, 1, coords): one "data point"
            post, prior = post[:, None], prior[:, None]
        else:
            post, prior = post.reshape(post.shape[:2] + (-1,)), prior.reshape(prior.shape[:2] + (-1,))
        mp, sp = post.mean(0), post.std(0)
        mq, sq = prior.mean(0), prior.std(0)
        kl = gaussian_kl(mp, sp, mq, sq)
        w1 = wasserstein1(post, prior) / sq
        rhat_values = None if rhat is None else np.asarray(rhat[name].values).reshape(post.shape[1:])
        ess_values = np.asarray(ess[name].values).reshape(post.shape[1:])
        for coord in range(post.shape[-1]):
            label = name if post.shape[-1] == 1 else f"{name}[{coord}]"
            rows.append(
                {
                    "latent": label,
                    "post_mean": float(mp[:, coord].mean()),
                    "post_sd": float(sp[:, coord].mean()),
                    "prior_mean": float(mq[:, coord].mean()),
                    "prior_sd": float(sq[:, coord].mean()),
                    "sd_ratio": float((sp[:, coord] / sq[:, coord]).mean()),
                    "kl": float(kl[:, coord].mean()),
                    "w1": float(w1[:, coord].mean()),
                    "rhat": float("nan") if rhat_values is None else float(rhat_values[:, coord].max()),
                    "ess_bulk": float(ess_values[:, coord].min()),
                }
            )
    return rows
