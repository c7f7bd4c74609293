r"""The amortization gap: how much ELBO an amortized encoder leaves on the table for a fixed decoder.

For each data point, the ELBO of the encoder's :math:`q_\phi(z\mid x)` against that of a diagonal Gaussian
optimized for that point alone (the refinement of SA-VAE, run longer, with the decoder held fixed):

.. math::

    \mathrm{gap}(x) = \max_\lambda \mathrm{ELBO}(q_\lambda; x) - \mathrm{ELBO}(q_{\phi}(\cdot\mid x); x) \ \ge 0
    \quad (\text{up to Monte Carlo error and an unfinished optimization}),

and both ELBOs split into reconstruction :math:`\mathbb{E}_q\log p(x\mid z)` and rate
:math:`\mathbb{E}_q[\log q(z) - \log p(z)]`. A large gap says the encoder, not the decoder, limits the model:
a better encoder, or semi-amortized refinement, could add up to that much to the same decoder's bound.

Reference: C. Cremer, X. Li, D. Duvenaud, "Inference Suboptimality in Variational Autoencoders", ICML 2018.
"""

from __future__ import annotations

import torch

from ..distributions.diagonal import diagonal_normal
from ..models.savae import refine_gaussian

__all__ = ["amortization_gap"]

_STAGES = 4


def _elbo_terms(model, x, loc, log_scale, num_samples):
    q = torch.distributions.Independent(torch.distributions.Normal(loc, log_scale.exp()), 1)
    z = q.sample((num_samples,))
    log_prior = model.prior().log_prob(z)
    reconstruction = (model.log_joint(x, z) - log_prior).mean(0)
    rate = (q.log_prob(z) - log_prior).mean(0)
    return reconstruction - rate, reconstruction, rate


@torch.no_grad()
def amortization_gap(model, x: torch.Tensor, steps: int = 100, lr: float = 0.1, refine_samples: int = 4,
                     max_norm: float = 5.0, num_samples: int = 64, seed: int = 0) -> dict:  # fmt: skip
    """Per-data-point ELBO of the model's posterior against a Gaussian optimized per point, decoder fixed.

    :param model: any model with ``posterior(x)`` (a diagonal Gaussian: ``Normal``, possibly under ``Independent``),
        ``log_joint(x, z)`` and ``prior()``: the VAEs of :mod:`pyro_lid.models` (text ones included), not a GMVAE
        with enumerated clusters (a mixture posterior) nor :class:`~pyro_lid.models.PPCA` (its exact posterior has
        a full covariance, outside the diagonal family the gap is measured against; its gap is 0 by definition).
    :param x: a batch of data, as the model takes it.
    :param int steps: gradient-ascent steps of the per-point optimization, from the encoder's values.
    :param float lr: its initial step size, halved after each quarter of the steps (each point's step is clipped to
        norm ``max_norm``), so that the Monte Carlo noise of the last steps does not bias the optimum low.
    :param int refine_samples: Monte Carlo samples per step.
    :param int num_samples: Monte Carlo samples of each reported ELBO.
    :param int seed: seed of the sampling (the model's parameters are not touched).
    :returns: ``{"amortized": {...}, "optimized": {...}, "gap": tensor}``: each ELBO as a dict of per-point
        tensors ``elbo``, ``reconstruction``, ``rate`` (shape ``(batch,)``), and the per-point gap.
    :raises ValueError: on ``steps`` below 4 (one per step-size stage), or a non-positive ``lr``, ``max_norm``,
        ``refine_samples`` or ``num_samples``; on a posterior that is not a diagonal Gaussian (its mean and standard
        deviations alone would drop its correlations or modes, and misstate the encoder's ELBO).
    """
    if steps < _STAGES or not lr > 0 or refine_samples < 1 or num_samples < 1 or not max_norm > 0:
        raise ValueError(
            f"amortization_gap needs steps >= {_STAGES}, refine_samples, num_samples >= 1 and lr, max_norm > 0; "
            f"got steps={steps}, lr={lr}, refine_samples={refine_samples}, num_samples={num_samples}, "
            f"max_norm={max_norm}"
        )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        q = model.posterior(x)
        if diagonal_normal(q) is None:
            raise ValueError(
                f"amortization_gap needs a diagonal Gaussian posterior q(z|x) (Normal, possibly under Independent), "
                f"got {type(q).__name__}: the per-point optimum is searched among diagonal Gaussians, and replacing "
                "q by its mean and standard deviations would drop its correlations (or modes) and misstate its ELBO"
            )
        loc, log_scale = q.mean, q.stddev.log()
        parameters = getattr(model, "parameters", None)  # a module's, or the model's behind a FixedPosteriors
        frozen = list(parameters()) if callable(parameters) else []  # a list: every stage freezes them
        opt_loc, opt_log_scale = loc, log_scale
        for stage in range(_STAGES):  # the step size halves each stage: the last iterate settles near the optimum
            stage_steps = steps // _STAGES + (stage < steps % _STAGES)
            opt_loc, opt_log_scale = refine_gaussian(
                model.log_joint,
                x,
                opt_loc,
                opt_log_scale,
                stage_steps,
                lr / 2**stage,
                refine_samples,
                max_norm,
                frozen=frozen,
            )
        result = {}
        for label, (m, s) in (("amortized", (loc, log_scale)), ("optimized", (opt_loc, opt_log_scale))):
            elbo, reconstruction, rate = _elbo_terms(model, x, m, s, num_samples)
            result[label] = {"elbo": elbo, "reconstruction": reconstruction, "rate": rate}
    finally:
        torch.random.set_rng_state(generator_state)
    result["gap"] = result["optimized"]["elbo"] - result["amortized"]["elbo"]
    return result
