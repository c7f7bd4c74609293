r"""Text metrics: negative log-likelihood per sentence, perplexity, and the collapse diagnostics of a sequence VAE.

For sentences :math:`x_1, \dots, x_N` with :math:`n_i` predicted tokens each (the words and ``</s>``;
``<s>`` is given, padding is not text: :func:`pyro_lid.data.sentence_lengths`),

.. math::

    \mathrm{NLL} = -\frac1N \sum_i \log \hat p(x_i), \qquad
    \mathrm{PPL} = \exp\Big(-\frac{\sum_i \log \hat p(x_i)}{\sum_i n_i}\Big),

with :math:`\log\hat p(x_i)` the importance-weighted bound of
:func:`~pyro_lid.diagnostics.importance_weighted_log_likelihood` (S samples from
:math:`q(z\mid x_i)`, per sentence, then averaged) for a latent-variable model, or the exact
:math:`\log p(x_i)` of a language model. The importance-weighted bound is below the true
:math:`\log p(x)`, so the perplexity it gives is an upper bound.
"""

from __future__ import annotations

import math

import torch

from ..data.text import sentence_lengths
from .collapse import collapse_report

__all__ = ["perplexity", "text_report"]


def perplexity(log_likelihoods: torch.Tensor, tokens: torch.Tensor) -> float:
    r""":math:`\exp(-\sum_i \log p(x_i) / \sum_i n_i)` for per-sentence log-likelihoods and their padded rows."""
    counts = sentence_lengths(tokens)
    if log_likelihoods.shape != counts.shape:
        raise ValueError(f"one log-likelihood per sentence: got {tuple(log_likelihoods.shape)} for {len(counts)} rows")
    return math.exp(-float(log_likelihoods.double().sum()) / int(counts.sum()))


@torch.no_grad()
def text_report(model, tokens: torch.Tensor, num_samples: int = 100, progress: bool | None = None) -> dict:
    """:func:`~pyro_lid.diagnostics.collapse_report` (AU, KL, MI, LL per sentence) plus ``nll`` (= -LL),
    ``ppl`` and ``reconstruction`` (:math:`\\mathbb{E}_q \\log p(x\\mid z)` per sentence, one draw), ``tokens``
    (predicted tokens in all)."""
    report = collapse_report(model, tokens, num_samples, progress=progress, keep_per_point=True)
    ll = report.pop("ll_per_point")
    was_training = model.training
    model.eval()
    try:
        recon = torch.cat([model.decoder(model.posterior(x).sample()).log_prob(x) for x in tokens.split(500)])
    finally:
        model.train(was_training)
    report.update(nll=-float(ll.mean()), ppl=perplexity(ll, tokens), reconstruction=float(recon.mean()),
                  tokens=int(sentence_lengths(tokens).sum()))  # fmt: skip
    return report
