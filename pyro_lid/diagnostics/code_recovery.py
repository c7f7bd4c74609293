r"""How much of a known generating code the latents recover: a held-out linear :math:`R^2`.

On synthetic data the code :math:`c_i \in \mathbb R^J` behind each data point is known. With latents
:math:`m_i \in \mathbb R^K` for each point, fit :math:`c \approx W m + b` by least squares on one set of
points, then on *held-out* points

.. math::

    R^2_j = 1 - \frac{\sum_i (c_{ij} - \hat c_{ij})^2}{\sum_i (c_{ij} - \bar c_j)^2}, \qquad
    R^2 = \frac1J \sum_j R^2_j .

1: the code is an affine function of the latents; about 0 (or below): they say nothing linear about the
code, whatever :math:`K`, because the fit never sees the points it is scored on. A nonlinear recovery scores
below 1: this is a lower bound on what the latents carry about the code.

Pass **draws** :math:`z_i \sim q(z \mid x_i)`, what the decoder sees, not the posterior means: :math:`R^2` is
scale-free, so the means of a collapsed posterior, which vary by far less than the posterior's spread, can
still line up with the code (an LSTM-VAE with no active unit scored 0.41-0.53 on its means on the synthetic
corpus, and -0.01 on its draws). :func:`posterior_code_recovery` does that.
"""

from __future__ import annotations

import torch

__all__ = ["code_recovery", "posterior_code_recovery"]


def _matrix(name: str, value) -> torch.Tensor:
    value = torch.as_tensor(value).detach().to("cpu", torch.float64)
    if value.ndim == 1:
        value = value[:, None]
    if value.ndim != 2:
        raise ValueError(f"{name} must have shape (points, dims), got {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} has {int((~torch.isfinite(value)).sum())} non-finite entries (NaN or inf)")
    return value


def code_recovery(fit_latents, fit_codes, test_latents, test_codes) -> dict:
    r"""Held-out linear :math:`R^2` of the true codes given latents (see the module's description).

    :param fit_latents: ``(N, K)`` latents where the map is fitted; ``fit_codes``: ``(N, J)`` their codes.
    :param test_latents: ``(M, K)`` latents where it is scored; ``test_codes``: ``(M, J)``.
    :returns: ``{"r2": float, "r2_per_code": (J,) tensor}`` (float64).
    :raises ValueError: on mismatched shapes, non-finite values, fewer fitting points than ``K + 1``, or held-out
        codes without spread.
    """
    fit_latents, fit_codes = _matrix("fit_latents", fit_latents), _matrix("fit_codes", fit_codes)
    test_latents, test_codes = _matrix("test_latents", test_latents), _matrix("test_codes", test_codes)
    if fit_latents.shape[0] != fit_codes.shape[0] or test_latents.shape[0] != test_codes.shape[0]:
        raise ValueError(
            f"latents and codes must have one row per point: fit {fit_latents.shape[0]} vs {fit_codes.shape[0]}, "
            f"test {test_latents.shape[0]} vs {test_codes.shape[0]}"
        )
    if fit_latents.shape[1] != test_latents.shape[1] or fit_codes.shape[1] != test_codes.shape[1]:
        raise ValueError(
            "fit and test sets must have the same dimensions: latents "
            f"{fit_latents.shape[1]} vs {test_latents.shape[1]}, codes {fit_codes.shape[1]} vs {test_codes.shape[1]}"
        )
    if fit_latents.shape[0] < fit_latents.shape[1] + 1:
        raise ValueError(f"need at least K + 1 = {fit_latents.shape[1] + 1} fitting points, got {fit_latents.shape[0]}")
    spread = ((test_codes - test_codes.mean(0)) ** 2).sum(0)
    if not (spread > 0).all():
        raise ValueError("the held-out codes have a dimension without spread: R^2 is undefined")
    design = torch.cat([fit_latents, torch.ones_like(fit_latents[:, :1])], 1)
    coef = torch.linalg.lstsq(design, fit_codes, driver="gelsd").solution
    predicted = torch.cat([test_latents, torch.ones_like(test_latents[:, :1])], 1) @ coef
    r2 = 1 - ((test_codes - predicted) ** 2).sum(0) / spread
    return {"r2": float(r2.mean()), "r2_per_code": r2}


@torch.no_grad()
def posterior_code_recovery(model, fit_data, fit_codes, test_data, test_codes, draws: int = 5,
                            batch_size: int = 500, test_model=None) -> dict:  # fmt: skip
    r""":func:`code_recovery` of ``draws`` samples :math:`z \sim q(z \mid x)` per point (``model.posterior``),
    each draw a row beside its point's code: the map fitted on ``fit_data``, scored on ``test_data``.

    ``test_model``: where the posteriors of ``test_data`` are read instead (default ``model``), e.g. an
    evaluation's :class:`~pyro_lid.diagnostics.fixed_posteriors.FixedPosteriors` over ``test_data``, so that the
    code is scored on the very :math:`q` the evaluation's other numbers measured (a semi-amortized model's
    refinement is random)."""
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")

    def sample(data, model):
        rows = []
        for x in data.split(batch_size):
            z = model.posterior(x).sample((draws,))  # (draws, B, K)
            rows.append(z.transpose(0, 1).reshape(-1, z.shape[-1]))  # point by point, its draws together
        return torch.cat(rows)

    repeat = lambda codes: torch.as_tensor(codes).repeat_interleave(draws, 0)  # noqa: E731
    test_model = model if test_model is None else test_model
    return code_recovery(sample(fit_data, model), repeat(fit_codes), sample(test_data, test_model), repeat(test_codes))
