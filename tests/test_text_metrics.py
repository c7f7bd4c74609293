"""Text metrics: predicted-token counts, perplexity against a hand computation."""

import math

import pytest
import torch

from pyro_lid.data import sentence_lengths
from pyro_lid.diagnostics import perplexity


def test_perplexity_is_exp_of_the_mean_negative_log_likelihood_per_predicted_token():
    # <s>=1, </s>=2, <pad>=0: "a b </s>" predicts 3 tokens, "c </s>" 2, "</s>" 1
    tokens = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0], [1, 2, 0, 0, 0]])
    assert sentence_lengths(tokens).tolist() == [3, 2, 1]
    # a unigram model with p = 1/4 for every token: log p(x_i) = n_i log(1/4), so PPL = 4 exactly
    ll = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64) * math.log(0.25)
    assert perplexity(ll, tokens) == pytest.approx(4.0, rel=1e-12)
    # uneven: exp(-(sum of log-likelihoods) / (3 + 2 + 1))
    ll = torch.tensor([-6.0, -1.0, -5.0])
    assert perplexity(ll, tokens) == pytest.approx(math.exp(12.0 / 6.0), rel=1e-12)
    with pytest.raises(ValueError, match="one log-likelihood per sentence"):
        perplexity(ll[:2], tokens)
    with pytest.raises(ValueError, match="token ids"):
        sentence_lengths(tokens.float())


# ------------------------------------------------------------------ the evidence of a logit-bias subspace
V, K = 9, 2


def _language_model_and_sentences():
    from pyro_lid.models import LSTMLanguageModel

    torch.manual_seed(0)
    lm = LSTMLanguageModel(V, embed_dim=5, hidden_dim=6).double()
    for p in lm.parameters():  # away from the initialization: uneven predictions
        p.data.add_(0.5 * torch.randn_like(p))
    x = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 4, 4, 2, 0]])  # padded, uneven lengths
    q = torch.linalg.qr(torch.randn(V, K, dtype=torch.float64))[0]
    return lm, x, q


def _log_p(lm, x, bias):
    """log p(x | logits + bias) per sentence, bias (N, V) shared by a sentence's steps."""
    logits = lm.decoder.logits(x[:, :-1], None) + bias.unsqueeze(1)
    picked = logits.log_softmax(-1).gather(-1, x[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (picked * (x[:, 1:] != 0)).sum(-1)


def test_subspace_evidence_is_laplaces_method_on_the_autograd_score_and_hessian():
    from pyro_lid.diagnostics import subspace_evidence

    lm, x, q = _language_model_and_sentences()
    rows = subspace_evidence(lm, x, q * torch.tensor([2.0, -0.5], dtype=torch.float64), scales=(0.7, 3.0))
    for row in rows:
        s, gains, dets, prices = row["scale"], [], [], []
        for i in range(x.shape[0]):
            f = lambda beta, i=i, s=s: _log_p(lm, x[i : i + 1], (s * q @ beta).unsqueeze(0)).sum()  # noqa: E731
            beta0 = torch.zeros(K, dtype=torch.float64)
            g = torch.autograd.functional.jacobian(f, beta0)
            fisher = -torch.autograd.functional.hessian(f, beta0)
            plus = torch.eye(K, dtype=torch.float64) + fisher
            gains.append(0.5 * g @ torch.linalg.solve(plus, g))
            dets.append(0.5 * torch.logdet(plus))
            prices.append(dets[-1] - 0.5 * torch.trace(torch.linalg.solve(plus, fisher)))
        gain, det = torch.stack(gains).mean(), torch.stack(dets).mean()
        assert row["gain"] == pytest.approx(float(gain), rel=1e-9)
        assert row["evidence"] == pytest.approx(float(gain - det), rel=1e-9)
        assert row["price"] == pytest.approx(float(torch.stack(prices).mean()), rel=1e-9)


def test_subspace_evidence_matches_the_exact_integral_over_z_at_a_small_scale():
    from pyro_lid.diagnostics import subspace_evidence

    lm, x, q = _language_model_and_sentences()
    s = 0.3  # third-order terms ~ s^3: Laplace's method is then close to log E_z p(x | s Q z) / p(x)
    (row,) = subspace_evidence(lm, x, q, scales=(s,))
    z = torch.randn(200_000, K, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = _log_p(lm, x, torch.zeros(x.shape[0], V, dtype=torch.float64))
        exact = torch.stack([
            torch.logsumexp(_log_p(lm, x[i : i + 1].expand(len(z), -1), s * z @ q.T) - base[i], 0) - math.log(len(z))
            for i in range(x.shape[0])
        ]).mean()  # fmt: skip
    assert abs(row["evidence"]) > 5e-3  # not trivially zero ...
    assert row["evidence"] == pytest.approx(float(exact), abs=0.05 * abs(row["evidence"]) + 2e-4)  # ... and right


def test_subspace_evidence_refuses_what_it_cannot_use():
    from pyro_lid.diagnostics import subspace_evidence
    from pyro_lid.models import LSTMVAE

    lm, x, q = _language_model_and_sentences()
    with pytest.raises(ValueError, match="needs a language model"):
        subspace_evidence(LSTMVAE(V, 2, 4, 4), x, q)
    with pytest.raises(ValueError, match=r"subspace must be a \(9, K\) tensor, got \(8, 2\)"):
        subspace_evidence(lm, x, q[:8])
    with pytest.raises(ValueError, match="scales must be positive numbers"):
        subspace_evidence(lm, x, q, scales=(0.0,))
