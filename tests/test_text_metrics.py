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
