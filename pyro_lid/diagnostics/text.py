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

from ..data.text import PAD, sentence_lengths
from .collapse import collapse_report
from .fixed_posteriors import with_fixed_posteriors
from .resumable import EvaluationCheckpoint

__all__ = ["head_information", "perplexity", "subspace_evidence", "text_report"]


def perplexity(log_likelihoods: torch.Tensor, tokens: torch.Tensor) -> float:
    r""":math:`\exp(-\sum_i \log p(x_i) / \sum_i n_i)` for per-sentence log-likelihoods and their padded rows."""
    counts = sentence_lengths(tokens)
    if log_likelihoods.shape != counts.shape:
        raise ValueError(f"one log-likelihood per sentence: got {tuple(log_likelihoods.shape)} for {len(counts)} rows")
    return math.exp(-float(log_likelihoods.double().sum()) / int(counts.sum()))


@torch.no_grad()
def text_report(
    model, tokens: torch.Tensor, num_samples: int = 100, progress: bool | None = None, checkpoint=None
) -> dict:
    """:func:`~pyro_lid.diagnostics.collapse_report` (AU, KL, MI, LL per sentence) plus ``nll`` (= -LL),
    ``ppl`` and ``reconstruction`` (:math:`\\mathbb{E}_q \\log p(x\\mid z)` per sentence, one draw), ``tokens``
    (predicted tokens in all); every stage reads one :math:`q(z\\mid x)` per sentence, computed once
    (:func:`~pyro_lid.diagnostics.fixed_posteriors.with_fixed_posteriors`). ``checkpoint``: an
    :class:`~pyro_lid.diagnostics.resumable.EvaluationCheckpoint` that keeps every finished stage, so that a
    stopped evaluation resumes where it stopped, bit for bit."""
    checkpoint = checkpoint if checkpoint is not None else EvaluationCheckpoint()
    was_training = model.training
    fixed, tokens = with_fixed_posteriors(model, tokens, checkpoint=checkpoint, progress=progress)  # one q for all
    report = collapse_report(fixed, tokens, num_samples, progress=progress, keep_per_point=True, checkpoint=checkpoint)
    ll = report.pop("ll_per_point")
    model.eval()
    try:
        recon = checkpoint.piece(
            "reconstruction",
            lambda: torch.cat([model.decoder(fixed.posterior(x).sample()).log_prob(x) for x in tokens.split(500)]),
        )
    finally:
        model.train(was_training)
    report.update(nll=-float(ll.mean()), ppl=perplexity(ll, tokens), reconstruction=float(recon.mean()),
                  tokens=int(sentence_lengths(tokens).sum()))  # fmt: skip
    return report


@torch.no_grad()
def head_information(model, tokens: torch.Tensor, batch_size: int = 128) -> dict:
    r"""The Fisher information about :math:`z` that an injective output layer alone carries, per sentence.

    For :class:`~pyro_lid.models.LIDSVAE` the logits are :math:`\ell_t = Q\,h(z) + (I - QL)\,m_t + c`
    (:class:`~pyro_lid.models.sequence.IdentifiableOutputLayer`). Holding the decoder states fixed,
    :math:`\partial\ell_t/\partial z = Q J_h(z)`, and a Categorical with logits :math:`\ell` has Fisher
    information :math:`\mathrm{diag}(p) - pp^\top` in :math:`\ell`, so a sentence's :math:`n` predicted
    tokens carry, at its posterior mean :math:`z = \mathbb E_q[z\mid x]`,

    .. math::

        F(x) = J_h^\top Q^\top \Big[\sum_{t=1}^{n} \mathrm{diag}(p_t) - p_t p_t^\top\Big] Q\, J_h .

    The margin bounds the Jacobian, not this: with :math:`h = s\odot z`, orthonormal :math:`Q` and a uniform
    :math:`p_t` over :math:`V` words, :math:`F = (n/V)\,\mathrm{diag}(s)^2`. A unit whose information
    :math:`F_{kk}` is far below 1 changes the likelihood too little for its posterior to leave the prior (a
    linear-Gaussian channel with a standard normal prior gives posterior means of variance about
    :math:`F_{kk}/(1 + F_{kk})^2`, to be set against the active-unit threshold).

    **The price of the channel.** To second order, :math:`\log p(x\mid z) \approx \text{const} + g^\top z -
    \tfrac12 z^\top F z` with the score :math:`g`; under a standard normal prior, integrating :math:`z` out
    adds :math:`\tfrac12 g^\top (I + F)^{-1} g - \tfrac12\log\det(I + F)` to :math:`\log p(x)`. If the
    head's directions line up with nothing the sentences share beyond what the decoder already predicts
    (:math:`\mathbb E\,gg^\top = F`, as for a fixed random :math:`Q`), its expectation is minus

    .. math::

        \text{price}(x) = \tfrac12\log\det(I + F) - \tfrac12\,\mathrm{tr}\big(F (I + F)^{-1}\big) \;\ge\; 0,

    about :math:`\sum_k F_{kk}^2/4` for small :math:`F`: the nats a channel that must carry information, but
    finds none worth carrying, costs. Only sentences whose scores vary more than :math:`F` repay it.

    :returns: ``information_per_dim`` (``(K,)``, the mean over sentences of :math:`F_{kk}`), ``information``
        (the mean of :math:`\mathrm{tr}\,F`), ``per_sentence`` (``(N,)``, each sentence's :math:`\mathrm{tr}\,F`),
        ``min_eigenvalue`` (of the mean :math:`F`) and ``price`` (the mean over sentences of :math:`\text{price}(x)`).
    """
    head = getattr(getattr(model, "decoder", None), "head", None)
    injective = getattr(head, "injective_map", None)
    if injective is None:
        raise ValueError(f"{type(model).__name__} has no injective output layer (decoder.head.injective_map)")
    tokens = model.check_data(tokens).to(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        q = injective.subspace
        totals, traces, prices = 0.0, [], []
        for x in tokens.split(batch_size):
            z = model.posterior(x).mean
            _, inner = _projected_score_and_fisher(model.decoder.logits(x[:, :-1], z), x, q)
            jac = injective.inner_jacobian(z)  # (N, K, K)
            fisher = jac.transpose(1, 2) @ inner @ jac
            totals = totals + fisher.sum(0)
            traces.append(fisher.diagonal(dim1=1, dim2=2).sum(-1))
            _, log_det, shrunk = _laplace_terms(None, fisher)
            prices.append(log_det - shrunk)
    finally:
        model.train(was_training)
    mean = totals / tokens.shape[0]
    return {"information_per_dim": mean.diagonal().clone(), "information": float(mean.diagonal().sum()),
            "per_sentence": torch.cat(traces), "min_eigenvalue": float(torch.linalg.eigvalsh(mean)[0]),
            "price": float(torch.cat(prices).mean())}  # fmt: skip


def _projected_score_and_fisher(logits: torch.Tensor, x: torch.Tensor, q: torch.Tensor):
    r"""For a logit bias in :math:`\mathrm{span}(Q)`: each sentence's score :math:`Q^\top\sum_t (e_{x_t} - p_t)`,
    ``(N, K)``, and Fisher information :math:`Q^\top[\sum_t \mathrm{diag}(p_t) - p_tp_t^\top]Q`, ``(N, K, K)``,
    from teacher-forced ``logits`` ``(N, T - 1, V)`` of ``x`` ``(N, T)``; padding contributes nothing."""
    targets = x[:, 1:]
    mask = (targets != PAD).to(q.dtype)
    probs = logits.to(q.dtype).softmax(-1) * mask.unsqueeze(-1)  # (N, T, V), 0 on padding
    projected = probs @ q  # Q^T p_t, (N, T, K)
    fisher = torch.einsum("nv,vk,vj->nkj", probs.sum(1), q, q) - projected.transpose(1, 2) @ projected
    observed = (q[targets] * mask.unsqueeze(-1)).sum(1)  # Q^T sum_t e_{x_t}
    return observed - projected.sum(1), fisher


def _laplace_terms(score: torch.Tensor | None, fisher: torch.Tensor):
    r""":math:`\tfrac12 g^\top(I + F)^{-1}g` (``None`` without ``score``), :math:`\tfrac12\log\det(I + F)` and
    :math:`\tfrac12\mathrm{tr}\,(I + F)^{-1}F`, each ``(N,)``: the terms of integrating :math:`z\sim\mathcal N(0, I)`
    out of :math:`\exp(g^\top z - \tfrac12 z^\top F z)`."""
    plus_one = fisher + torch.eye(fisher.shape[-1], dtype=fisher.dtype, device=fisher.device)
    log_det = 0.5 * torch.linalg.slogdet(plus_one)[1]
    shrunk = 0.5 * torch.linalg.solve(plus_one, fisher).diagonal(dim1=1, dim2=2).sum(-1)
    gain = (
        None if score is None else 0.5 * (score * torch.linalg.solve(plus_one, score.unsqueeze(-1)).squeeze(-1)).sum(-1)
    )
    return gain, log_det, shrunk


@torch.no_grad()
def subspace_evidence(
    language_model, tokens: torch.Tensor, subspace: torch.Tensor, scales=(1.0, 5.0, 10.0, 20.0), batch_size: int = 128
) -> list[dict]:
    r"""What a logit bias :math:`b = s\,Q z`, :math:`z\sim\mathcal N(0, I)`, shared by a sentence's steps, would add to
    a trained language model's :math:`\log p(x)`, to second order: the evidence of a subspace, before any VAE trains.

    This is LIDSVAE's output layer with ``latent_in_lstm=False`` and :math:`h(z) = s\,z`, around the language model
    that its free part starts from. With the language model's :math:`p_t`, each sentence's score
    :math:`g = s\,Q^\top\sum_t(e_{x_t} - p_t)` and Fisher information :math:`F = s^2 Q^\top[\sum_t\mathrm{diag}(p_t) -
    p_tp_t^\top]Q` give (Laplace's method, exact for the quadratic expansion)

    .. math::

        \log \mathbb E_z\, p(x\mid b) - \log p(x) \approx \underbrace{\tfrac12 g^\top(I + F)^{-1}g}_{\text{gain}}
        - \tfrac12\log\det(I + F) ,

    the **evidence**: positive where the subspace's directions predict how sentences differ from the language model's
    expectations (held-out ``tokens`` tell), negative (minus the **price** of
    :func:`head_information`, on average) where they are noise. The best :math:`k`-dimensional span is the top
    generalized eigenvectors of :math:`(\mathbb E\,rr^\top, \mathbb E F)`, which
    :func:`~pyro_lid.data.topic_directions` approximates from word counts alone.

    :param language_model: a model whose ``decoder.logits(inputs, None)`` gives teacher-forced logits with no latent
        (:class:`~pyro_lid.models.LSTMLanguageModel`).
    :param tokens: ``(N, T)`` sentences (held out from the ones that chose ``subspace``).
    :param subspace: ``(V, K)``; its columns are orthonormalized first (only the span counts).
    :param scales: the :math:`s` to evaluate.
    :returns: one dict per scale: ``scale``, ``evidence``, ``gain``, ``price`` (the mean over sentences of
        :math:`\tfrac12\log\det(I+F) - \tfrac12\mathrm{tr}(I+F)^{-1}F`, what a random channel of the same
        information would cost) and ``information`` (the mean of :math:`\mathrm{tr}\,F`).
    """
    decoder = getattr(language_model, "decoder", None)
    if getattr(decoder, "latent_dim", None) != 0:
        raise ValueError(
            "subspace_evidence needs a language model (a decoder with latent_dim 0), "
            f"got {type(language_model).__name__}"
        )
    if not (isinstance(subspace, torch.Tensor) and subspace.dim() == 2 and subspace.shape[0] == decoder.vocab_size):
        raise ValueError(
            f"subspace must be a ({decoder.vocab_size}, K) tensor, got {tuple(getattr(subspace, 'shape', ()))}"
        )
    if not all(isinstance(s, (int, float)) and s > 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, got {scales!r}")
    tokens = language_model.check_data(tokens).to(next(language_model.parameters()).device)
    q = torch.linalg.qr(subspace.to(torch.float64).to(tokens.device))[0]
    was_training = language_model.training
    language_model.eval()
    try:
        parts = [_projected_score_and_fisher(decoder.logits(x[:, :-1], None), x, q) for x in tokens.split(batch_size)]
    finally:
        language_model.train(was_training)
    score, fisher = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    rows = []
    for s in scales:
        gain, log_det, shrunk = _laplace_terms(s * score, s**2 * fisher)
        rows.append({"scale": float(s), "evidence": float((gain - log_det).mean()), "gain": float(gain.mean()),
                     "price": float((log_det - shrunk).mean()),
                     "information": float(s**2 * fisher.diagonal(dim1=1, dim2=2).sum(-1).mean())})  # fmt: skip
    return rows
