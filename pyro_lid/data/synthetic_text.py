r"""Synthetic text with a known code, and the likelihood of the model that wrote it.

The generator is a random LSTM language model driven by a code :math:`z \sim \mathcal N(0, I_K)`:
:math:`h_0 = \tanh(B z)`, :math:`c_0 = 0`; step :math:`t` reads the previous word's embedding, emits
:math:`o_t`, draws a word from :math:`\mathrm{softmax}(W o_t + b + A z)` and stops with probability
:math:`\sigma_t = \sigma(s^\top o_t + s_0)` (never at the first step; ``</s>`` is forced after ``max_length``
words). So a sentence of :math:`n` words has

.. math::
    p(x \mid z) = \prod_{t=0}^{n-1} \mathrm{softmax}_t(w_{t+1}) \prod_{t=1}^{n-1} (1 - \sigma_t)
    \cdot \begin{cases} \sigma_n & n < \text{max\_length} \\ 1 & n = \text{max\_length}, \end{cases}

and :math:`p(x) = \mathbb E_{p(z)}\, p(x \mid z)` is the best any model of the corpus can do: the *oracle*
row of a text comparison (:meth:`SyntheticTextModel.marginal_log_prob`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .text import BOS, EOS, PAD, SPECIALS, TextCorpus, Vocabulary, sentence_lengths

__all__ = ["SyntheticTextModel", "synthetic_text", "synthetic_text_model"]


class SyntheticTextModel(nn.Module):
    """The random LSTM language model with a code that :func:`synthetic_text` samples from (module docstring).

    Its weights are drawn from the generator ``g`` (the global random state is left alone): ``lstm``, the word
    ``embed``-dings, ``init`` (:math:`B`), ``out`` (:math:`W`), ``bias`` (:math:`b`), ``code`` (:math:`A`, entries of
    sd ``signal``), ``stop`` (:math:`s`) and ``stop_bias`` (:math:`s_0`, a mean length of about ``max_length / 2``).
    """

    def __init__(self, vocab_size: int, latent_dim: int, max_length: int, hidden: int, signal: float, g):
        super().__init__()
        self.vocab_size, self.latent_dim, self.max_length = vocab_size, latent_dim, max_length
        with torch.random.fork_rng(devices=[]):  # nn.LSTM initializes from the global RNG before the copy below
            self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        with torch.no_grad():
            for p in self.lstm.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 2.0 / hidden**0.5)
        self.lstm.requires_grad_(False)
        stop = min(0.5, 2.0 / max_length)  # base stop probability per step: mean length about max_length / 2
        self.register_buffer("embed", torch.randn(vocab_size + len(SPECIALS), hidden, generator=g))
        self.register_buffer("init", torch.randn(hidden, latent_dim, generator=g))
        self.register_buffer("out", 2.0 * torch.randn(vocab_size, hidden, generator=g))
        self.register_buffer("bias", torch.randn(vocab_size, generator=g))
        self.register_buffer("code", signal * torch.randn(vocab_size, latent_dim, generator=g))
        self.register_buffer("stop", 0.5 * torch.randn(hidden, generator=g))
        self.register_buffer("stop_bias", torch.tensor(stop / (1 - stop)).log())

    def _steps(self, z, previous, state):
        """One LSTM step reading the embeddings of the ``previous`` token ids: the word logits, the stop logit and
        the new state."""
        out, state = self.lstm(self.embed[previous].unsqueeze(1), state)
        out = out[:, 0]
        return out @ self.out.T + self.bias + z @ self.code.T, out @ self.stop + self.stop_bias, state

    def _initial_state(self, z):
        h = torch.tanh(z @ self.init.T).unsqueeze(0)
        return h, torch.zeros_like(h)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, g) -> torch.Tensor:
        """Padded rows ``<s> w_1 ... w_n </s> <pad> ...`` of width ``max_length + 2``, drawn ancestrally given
        codes ``z`` of shape ``(N, K)`` from the generator ``g``."""
        n = z.shape[0]
        state = self._initial_state(z)
        tokens = torch.full((n, self.max_length + 2), PAD, dtype=torch.long)
        tokens[:, 0] = BOS
        previous, alive = tokens[:, 0].clone(), torch.ones(n, dtype=torch.bool)
        for t in range(self.max_length):
            logits, stop_logit, state = self._steps(z, previous, state)
            word = torch.multinomial(torch.softmax(logits, -1), 1, generator=g)[:, 0] + len(SPECIALS)
            stop = torch.rand(n, generator=g) < torch.sigmoid(stop_logit)
            if t > 0:  # at least one word
                tokens[:, t + 1] = torch.where(alive & stop, EOS, PAD)
                alive &= ~stop
            tokens[:, t + 1] = torch.where(alive, word, tokens[:, t + 1])
            previous = word
        tokens[alive, self.max_length + 1] = EOS
        return tokens

    def _check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The number of words per row; a ``ValueError`` naming the first row this model cannot write."""
        if tokens.dim() != 2:
            raise ValueError(f"expected tokens of shape (N, T), got {tuple(tokens.shape)}")
        words = sentence_lengths(tokens) - 1
        first = self.vocab_size + len(SPECIALS)
        body = torch.arange(tokens.shape[-1], device=tokens.device) <= words.unsqueeze(-1)  # <s> and the words
        body[..., 0] = False
        special_word = ((tokens < len(SPECIALS)) | (tokens >= first)) & body
        checks = (
            (tokens[..., 0] != BOS, "does not start with <s>"),
            (words < 1, "has no word (the generator writes at least one)"),
            (words > self.max_length, f"has more than max_length = {self.max_length} words"),
            (special_word.any(-1), f"has a word outside w0 .. w{self.vocab_size - 1}"),
            (tokens.gather(-1, (words + 1).clamp(max=tokens.shape[-1] - 1).unsqueeze(-1))[..., 0] != EOS,
             "does not end with </s> after its words"),
        )  # fmt: skip
        for bad, what in checks:
            if bad.any():
                row = int(bad.nonzero()[0, -1] if bad.dim() else 0)
                raise ValueError(f"sentence {row} {what}: the synthetic generator cannot have written it")
        return words

    def log_prob(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x \mid z)` (module docstring) of padded rows ``tokens`` ``(N, T)`` given codes ``z`` of shape
        ``(..., N, K)``; returns ``(..., N)``. Differentiable in ``z``. A ``ValueError`` names a row outside the
        model's support (no word, too long, a special token among the words)."""
        if tokens.dim() != 2 or z.shape[-1] != self.latent_dim or z.shape[-2] != tokens.shape[0]:
            raise ValueError(
                f"expected tokens (N, T) and z (..., N, {self.latent_dim}), got {tuple(tokens.shape)} and "
                f"{tuple(z.shape)}"
            )
        return self._log_likelihood(tokens, self._check_tokens(tokens), z)

    def _log_likelihood(self, tokens, words, z):
        """:meth:`log_prob` of rows already checked (``words``: their word counts)."""
        batch = z.shape[:-2]
        z = z.reshape(-1, self.latent_dim)
        copies = z.shape[0] // tokens.shape[0]
        tokens, words = tokens.repeat(copies, 1), words.repeat(copies)
        state, total = self._initial_state(z), z.new_zeros(z.shape[0])
        for t in range(int(words.max()) + 1):
            target = tokens[:, t + 1]
            previous = tokens[:, t]
            logits, stop_logit, state = self._steps(z, previous, state)
            is_word, is_stop = t < words, (t == words) & (words < self.max_length)
            word_term = logits.log_softmax(-1).gather(-1, (target - len(SPECIALS)).clamp(min=0).unsqueeze(-1))[:, 0]
            if t > 0:
                word_term = word_term + nn.functional.logsigmoid(-stop_logit)
            total = total + torch.where(is_word, word_term, 0.0)
            total = total + torch.where(is_stop, nn.functional.logsigmoid(stop_logit), 0.0)
        return total.reshape(*batch, -1)

    def _log_joint(self, tokens, words, z):
        prior = -0.5 * (z**2).sum(-1) - 0.5 * self.latent_dim * math.log(2 * math.pi)
        return self._log_likelihood(tokens, words, z) + prior

    def _laplace(self, tokens, words, steps: int):
        r"""Per sentence, the mode of :math:`p(z \mid x)` (the best of 64 prior draws and 0, then Adam) and the
        Laplace covariance there: the inverse of the negative Hessian of :math:`\log p(x, z)`, its eigenvalues
        floored at 1/4 (a proposal, not a claim)."""
        n, k = tokens.shape[0], self.latent_dim
        starts = torch.cat([torch.zeros(1, n, k), torch.randn(64, n, k)]).to(self.code)
        with torch.no_grad():
            best = self._log_joint(tokens, words, starts).argmax(0)
        z = starts[best, torch.arange(n)].clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=0.05)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        for _ in range(steps):
            optimizer.zero_grad()
            (-self._log_joint(tokens, words, z).sum()).backward()
            optimizer.step()
            schedule.step()
        (grad,) = torch.autograd.grad(self._log_joint(tokens, words, z).sum(), z, create_graph=True)
        rows = [torch.autograd.grad(grad[:, i].sum(), z, retain_graph=i < k - 1)[0] for i in range(k)]
        precision = -torch.stack(rows, 1)
        values, vectors = torch.linalg.eigh(0.5 * (precision + precision.transpose(-1, -2)))
        covariance = vectors @ torch.diag_embed(1 / values.clamp(min=0.25)) @ vectors.transpose(-1, -2)
        return z.detach(), covariance.detach()

    def marginal_log_prob(
        self, tokens: torch.Tensor, num_samples: int = 1000, seed: int = 0, steps: int = 200, return_ess: bool = False
    ):
        r""":math:`\log p(x) = \log \mathbb E_{p(z)}\, p(x \mid z)` per row of ``tokens``, by importance sampling.

        The proposal is a defensive mixture: 90% of the ``num_samples`` draws from a Student-t (5 degrees of freedom)
        at the mode of :math:`p(z \mid x)` with 1.5 times its Laplace covariance, 10% from the prior; each weight
        :math:`p(x, z) / q(z)` uses the mixture's density (so the estimate of :math:`p(x)` is unbiased and its log a
        bound that tightens as ``num_samples`` grows). ``seed`` fixes the draws (the global RNG is left alone).
        With ``return_ess``, also the effective sample size :math:`(\sum w)^2 / \sum w^2` per row.
        """
        import pyro.distributions as dist

        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 10:
            raise ValueError(f"num_samples must be an integer >= 10, got {num_samples!r}")
        words = self._check_tokens(tokens)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mode, covariance = self._laplace(tokens, words, steps)
            scale_tril = torch.linalg.cholesky(1.5**2 * covariance)
            local = dist.MultivariateStudentT(torch.tensor(5.0).to(mode), mode, scale_tril)
            prior = dist.Normal(torch.zeros_like(mode), 1.0).to_event(1)
            from_prior = max(1, num_samples // 10)
            z = torch.cat([local.sample((num_samples - from_prior,)), prior.sample((from_prior,))])
        with torch.no_grad():
            mixture = torch.logaddexp(local.log_prob(z) + math.log(1 - from_prior / num_samples),
                                      prior.log_prob(z) + math.log(from_prior / num_samples))  # fmt: skip
            log_w = torch.cat([self._log_joint(tokens, words, part) for part in z.split(200)]) - mixture
        ll = log_w.logsumexp(0) - math.log(num_samples)
        if not return_ess:
            return ll
        return ll, (2 * log_w.logsumexp(0) - (2 * log_w).logsumexp(0)).exp()


def synthetic_text_model(
    vocab_size: int = 20,
    latent_dim: int = 2,
    max_length: int = 12,
    seed: int = 0,
    hidden: int = 16,
    signal: float = 3.0,
) -> SyntheticTextModel:
    """The generator behind :func:`synthetic_text` with the same arguments (its weights are the seed's first draws)."""
    return SyntheticTextModel(vocab_size, latent_dim, max_length, hidden, signal, torch.Generator().manual_seed(seed))


def synthetic_text(
    num_sentences: int,
    vocab_size: int = 20,
    latent_dim: int = 2,
    max_length: int = 12,
    seed: int = 0,
    hidden: int = 16,
    signal: float = 3.0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
):
    r"""Sentences from a random LSTM language model driven by a known code :math:`z \sim \mathcal N(0, I_K)`.

    :math:`h_0 = \tanh(B z)`, :math:`c_0 = 0`; at step :math:`t` the LSTM reads the previous token's embedding
    and emits :math:`o_t`; the next word is drawn from :math:`\mathrm{softmax}(W o_t + b + A z)` with
    :math:`A_{ij} \sim \mathcal N(0, \text{signal}^2)` (the code strongly shapes every step), unless ``</s>``
    is drawn, with probability :math:`\sigma(s^\top o_t + s_0)` (never first; ``</s>`` is forced after
    ``max_length`` words; :math:`s_0` makes the mean length about ``max_length / 2``). All weights are drawn from
    ``seed``, so the data are deterministic given it. Words are ``w0 .. w{vocab_size-1}`` (ids 4 ...).
    :func:`synthetic_text_model` with the same arguments rebuilds the generator, whose
    :meth:`~SyntheticTextModel.marginal_log_prob` is the corpus's true likelihood.

    :returns: ``(corpus, codes)``: a :class:`TextCorpus` of ``num_sentences`` rows split train / valid / test
        by the fractions (its ``codes`` and ``generator`` set too) and ``codes[split]`` of shape
        ``(N_split, latent_dim)``.
    """
    if num_sentences < 3 or vocab_size < 1 or latent_dim < 1 or max_length < 1 or hidden < 1:
        raise ValueError(
            "need num_sentences >= 3 and vocab_size, latent_dim, max_length, hidden >= 1; got "
            f"{num_sentences}, {vocab_size}, {latent_dim}, {max_length}, {hidden}"
        )
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1):
        raise ValueError(f"valid_fraction and test_fraction must be in [0, 1), got {valid_fraction}, {test_fraction}")
    num_test, num_valid = round(num_sentences * test_fraction), round(num_sentences * valid_fraction)
    if num_test + num_valid >= num_sentences:
        raise ValueError(f"fractions {valid_fraction}, {test_fraction} leave no training sentence of {num_sentences}")
    g = torch.Generator().manual_seed(seed)
    model = SyntheticTextModel(vocab_size, latent_dim, max_length, hidden, signal, g)
    z = torch.randn(num_sentences, latent_dim, generator=g)
    tokens = model.sample(z, g)
    sizes = {"train": num_sentences - num_valid - num_test, "valid": num_valid, "test": num_test}
    bounds = torch.tensor([0, *sizes.values()]).cumsum(0).tolist()
    codes, splits = {}, {}
    for (name, _), lo, hi in zip(sizes.items(), bounds[:-1], bounds[1:]):
        codes[name] = z[lo:hi]
        rows = tokens[lo:hi]
        splits[name] = rows[:, : 1 + int(sentence_lengths(rows).max())] if hi > lo else rows[:, :2]  # T = 2 + words
    vocab = Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(vocab_size)])
    description = (
        f"synthetic text: random LSTM LM (seed {seed}, hidden {hidden}) over {vocab_size} words driven by a "
        f"{latent_dim}-d code (signal {signal}), at most {max_length} words; train/valid/test = "
        f"{'/'.join(str(v) for v in sizes.values())}"
    )
    corpus = TextCorpus(
        **splits,
        vocab=vocab,
        oov=dict.fromkeys(sizes, 0),
        name="synthetic-text",
        description=description,
        codes=codes,
        generator=model,
    )
    return corpus, codes
