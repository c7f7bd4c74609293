"""The synthetic-text generator's likelihood: p(x | z) normalized and equal to what it samples; p(x) by importance
sampling against quadrature; the generator rebuilt from the seed; bad sentences named."""

import itertools
import math

import pytest
import torch

from pyro_lid.data import SyntheticTextModel, synthetic_text, synthetic_text_model
from pyro_lid.data.text import BOS, EOS, PAD, UNK


def _every_sentence(vocab_size: int, max_length: int) -> torch.Tensor:
    """All rows the generator can write: 1 .. max_length words of w0 .. w{V-1}, padded."""
    rows = []
    for n in range(1, max_length + 1):
        for words in itertools.product(range(vocab_size), repeat=n):
            rows.append([BOS, *(4 + w for w in words), EOS] + [PAD] * (max_length - n))
    return torch.tensor(rows)


def test_the_conditional_likelihood_sums_to_one_over_every_sentence():
    model = synthetic_text_model(vocab_size=2, latent_dim=2, max_length=3, seed=3).double()
    sentences = _every_sentence(2, 3)  # 2 + 4 + 8 = 14 sentences
    z = torch.randn(4, 1, 2, dtype=torch.float64).expand(4, len(sentences), 2)
    total = model.log_prob(sentences, z).exp().sum(-1)
    assert total.shape == (4,) and (total - 1).abs().max() < 1e-12


def test_the_conditional_likelihood_is_the_frequency_of_what_the_generator_samples():
    model = synthetic_text_model(vocab_size=2, latent_dim=2, max_length=3, seed=3)
    sentences, z, n = _every_sentence(2, 3), torch.tensor([[0.3, -0.7]]), 100_000
    drawn = model.sample(z.expand(n, 2).contiguous(), torch.Generator().manual_seed(0))
    frequency = torch.stack([(drawn == row).all(1).double().mean() for row in sentences])
    p = model.double().log_prob(sentences, z.double().expand(len(sentences), 2)).exp()
    assert frequency.sum() == 1  # every draw is one of the 14
    assert ((frequency - p).abs() < 5 * (p * (1 - p) / n).sqrt() + 1e-4).all(), (frequency, p)


def _quadrature(model, tokens, nodes: int, limit: float = 6.0) -> torch.Tensor:
    """log p(x) by a Riemann sum of p(x, z) on a grid over [-limit, limit]^K (K = 1 or 2)."""
    grid = torch.linspace(-limit, limit, nodes, dtype=torch.float64)
    points = torch.cartesian_prod(*[grid] * model.latent_dim).reshape(-1, 1, model.latent_dim)
    points = points.expand(-1, tokens.shape[0], model.latent_dim)
    prior = torch.distributions.Normal(0.0, 1.0)
    joint = torch.cat([model.log_prob(tokens, part) + prior.log_prob(part).sum(-1) for part in points.split(5000)])
    return joint.logsumexp(0) + model.latent_dim * math.log(grid[1] - grid[0])


def _within_error(estimate, exact, ess, num_samples) -> bool:
    """Each log-estimate within 5 standard errors of the exact value: the relative error of an importance-sampling
    mean has variance about 1/ESS - 1/S."""
    error = (1 / ess - 1 / num_samples).clamp(min=0).sqrt()
    assert (error < 0.02).all()  # the tolerance below stays tight
    return bool(((estimate - exact).abs() < 5 * error + 1e-3).all())


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_the_marginal_likelihood_matches_quadrature_and_sums_to_one(latent_dim):
    model = synthetic_text_model(vocab_size=2, latent_dim=latent_dim, max_length=3, seed=3).double()
    sentences = _every_sentence(2, 3)
    exact = _quadrature(model, sentences, 401 if latent_dim == 1 else 151)
    assert abs(float(exact.exp().sum()) - 1) < 1e-6  # the grid covers the prior
    estimate, ess = model.marginal_log_prob(sentences, num_samples=4000, return_ess=True)
    assert ess.min() > 1000 and _within_error(estimate, exact, ess, 4000)


def test_the_marginal_likelihood_of_the_studys_corpus_matches_quadrature():
    """At the comparison's settings (20 words, up to 12 of them, a 2-d code of signal 3) the posterior is narrow:
    the importance sampler's proposal must find it."""
    corpus, _ = synthetic_text(2000, seed=0)
    model = synthetic_text_model(seed=0).double()
    x = corpus.test[:4]
    exact = _quadrature(model, x, 151)
    estimate, ess = model.marginal_log_prob(x, num_samples=20000, return_ess=True)
    assert ess.min() > 4000 and _within_error(estimate, exact, ess, 20000)
    assert (model.log_prob(x, torch.zeros(4, 2, dtype=torch.float64)) < exact - 1).all()  # the code matters


def test_the_generator_rebuilt_from_the_seed_is_the_corpus_generator_and_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    state = torch.get_rng_state()
    corpus, codes = synthetic_text(300, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    rebuilt = synthetic_text_model(seed=4)
    assert isinstance(corpus.generator, SyntheticTextModel)
    for (name, a), (_, b) in zip(corpus.generator.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), name
    corpus.generator.marginal_log_prob(corpus.test[:3], num_samples=50, steps=5)
    assert torch.equal(torch.get_rng_state(), state)
    other = synthetic_text_model(seed=5)
    assert not torch.equal(other.code, rebuilt.code)
    # the corpus's sentences are likelier under their own code than under another sentence's
    own = rebuilt.log_prob(corpus.train, codes["train"])
    shuffled = rebuilt.log_prob(corpus.train, codes["train"].roll(1, 0))
    assert own.mean() > shuffled.mean() + 3


def test_sentences_the_generator_cannot_write_are_named():
    model = synthetic_text_model(vocab_size=3, latent_dim=2, max_length=3, seed=0)
    good = torch.tensor([[BOS, 4, 5, EOS, PAD], [BOS, 6, EOS, PAD, PAD]])
    z = torch.zeros(2, 2)
    assert torch.isfinite(model.log_prob(good, z)).all()
    cases = {
        "sentence 1 has no word": [[BOS, 4, EOS, PAD, PAD], [BOS, EOS, PAD, PAD, PAD]],
        "sentence 0 has more than max_length = 3 words": [[BOS, 4, 4, 4, 4, EOS], [BOS, 4, EOS, PAD, PAD, PAD]],
        "sentence 1 has a word outside w0 .. w2": [[BOS, 4, EOS, PAD, PAD], [BOS, 4, UNK, EOS, PAD]],
        "sentence 0 has a word outside w0 .. w2 ": [[BOS, 7, EOS, PAD, PAD], [BOS, 4, EOS, PAD, PAD]],
        "sentence 0 does not start with <s>": [[4, 4, EOS, PAD, PAD], [BOS, 4, EOS, PAD, PAD]],
        "sentence 1 does not end with </s>": [[BOS, 4, EOS, PAD, PAD], [BOS, 4, 5, 6, 4]],
    }
    for message, rows in cases.items():
        with pytest.raises(ValueError, match=message.strip()):
            model.log_prob(torch.tensor(rows), z)
    with pytest.raises(ValueError, match=r"expected tokens \(N, T\) and z \(..., N, 2\)"):
        model.log_prob(good, torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"expected tokens of shape \(N, T\), got \(5,\)"):
        model.marginal_log_prob(good[0])
    with pytest.raises(ValueError, match="num_samples must be an integer >= 10"):
        model.marginal_log_prob(good, num_samples=5)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(valid_fraction=-0.1), r"valid_fraction and test_fraction must be in \[0, 1\), got -0.1, "),
        (dict(test_fraction=1.5), r"must be in \[0, 1\), got .*, 1.5"),
        (dict(valid_fraction=0.5, test_fraction=0.5), "leave no training sentence of 10"),
        (dict(num_sentences=2), "need num_sentences >= 3"),
    ],
)
def test_bad_sizes_and_fractions_are_refused_naming_them(options, message):
    with pytest.raises(ValueError, match=message):
        synthetic_text(**{"num_sentences": 10, **options})
