r"""Sequence VAEs for text: :class:`LSTMVAE`, the latent-identifiable :class:`LIDSVAE`, and an LSTM language model.

A sentence is a row of token ids ``<s> w1 ... wn </s> <pad> ...`` (a batch is a
``(B, T)`` ``LongTensor``, padded on the right). The generative model is the usual one
for text (Bowman et al. 2016; He et al. 2019),

.. math::

    z \sim \mathcal N(0, I), \qquad p(x\mid z) = \prod_{t=1}^{n+1} p(x_t\mid x_{<t}, z),
    \qquad p(x_t\mid x_{<t}, z) = \mathrm{Categorical}(\mathrm{softmax}(\ell_t)),

with an LSTM decoder that starts from a state computed from :math:`z` and reads
:math:`z` again at every step (concatenated to the word embedding). The logits
:math:`\ell_t` come from an output layer on the decoder state :math:`h_t`:

* :class:`LSTMVAE`: :math:`\ell_t = m_t = W h_t + b`, the ordinary output layer. Nothing
  stops the decoder from ignoring :math:`z` (a strong LSTM models text well on its own),
  which is the posterior collapse of text VAEs.
* :class:`LIDSVAE`: :math:`\ell_t = Q\,h(z) + (I - QQ^\top)\,m_t + c`
  (:class:`IdentifiableOutputLayer`, built on
  :class:`~pyro_lid.distributions.transforms.ProjectedInjective`), injective in :math:`z`
  at every step, whatever the prefix: the decoder cannot ignore :math:`z`.

Both are :class:`~pyro_lid.models.VAE` subclasses whose decoder returns a
:class:`SequenceCategorical`, a distribution over whole padded sentences, so the
:class:`~pyro_lid.models.VAE` machinery (``model``/``guide``, ``posterior``,
``log_joint``, the parameter-store ``name``) and the diagnostics of
:mod:`pyro_lid.diagnostics` (active units, KL, MI, importance-weighted log-likelihood)
work unchanged; train with plain Pyro::

    model = LIDSVAE(vocab_size=10000)
    svi = SVI(model.model, model.guide, Adam({"lr": 1e-3}), Trace_ELBO())
    svi.step(tokens)  # (B, T) LongTensor

or with :func:`pyro_lid.infer.fit` (``dynamic_binarization=False``). The perplexity
baseline is :class:`LSTMLanguageModel`, the same decoder without a latent.

Decoding (:meth:`LSTMVAE.greedy`, :meth:`~LSTMVAE.sample_text`,
:meth:`~LSTMVAE.beam_search`, :meth:`~LSTMVAE.reconstruct`, :meth:`~LSTMVAE.interpolate`)
returns ``LongTensor`` rows in the same layout: ``<s>`` first, words, ``</s>``, then
``<pad>``, with trailing all-``<pad>`` columns removed. A sentence that has not ended
after ``max_length - 1`` tokens is closed with ``</s>`` at position ``max_length - 1``
(its probability included in the score); ``<pad>`` and ``<s>`` are never generated.

References: S. R. Bowman et al., "Generating Sentences from a Continuous Space", CoNLL
2016; J. He et al., "Lagging Inference Networks and Posterior Collapse in Variational
Autoencoders", ICLR 2019; Y. Wang, D. M. Blei, J. P. Cunningham, "Posterior Collapse and
Latent Variable Non-identifiability", NeurIPS 2021.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pyro
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from pyro.infer import Trace_ELBO
from torch.distributions import constraints

from .._checks import is_positive_number
from ..data.text import BOS, EOS, PAD, UNK
from ..distributions.transforms.projection import ProjectedInjective
from .networks import GaussianEncoder
from .param_store import ParamStoreName
from .savae import SemiAmortized, register_semi_amortized
from .vae import VAE, BatchNormalized

__all__ = [
    "PAD",
    "BOS",
    "EOS",
    "UNK",
    "BNLSTMVAE",
    "IdentifiableOutputLayer",
    "LIDSVAE",
    "LSTMDecoder",
    "LSTMEncoder",
    "LSTMLanguageModel",
    "LSTMVAE",
    "OutputLayer",
    "SALIDSVAE",
    "SALSTMVAE",
    "SequenceCategorical",
    "check_tokens",
]

#: Logit entries computed at once when scoring (rows are scored in chunks of at most this many
#: ``T * V`` entries), so that evaluation with many importance samples stays within memory.
LOGITS_PER_CHUNK = 2**24


# ---------------------------------------------------------------------------------------------- the data


def check_tokens(x, vocab_size: int, who: str = "model") -> torch.Tensor:
    """``x`` as a ``long`` tensor of sentences without trailing all-``<pad>`` columns, or a ``ValueError``.

    ``x`` has shape ``(..., T)``, ``T >= 2``: integer token ids in ``[0, vocab_size)``, every row
    ``<s> w1 ... wn </s>`` followed only by ``<pad>`` (id ``PAD``).
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ValueError(f"{who} expects a LongTensor of token ids, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{who} expects integer token ids (a LongTensor), got dtype {x.dtype}; use .long()")
    if x.shape[-1] < 2 or x.numel() == 0:
        raise ValueError(f"{who} expects sentences of at least 2 tokens (<s> ... </s>), got shape {tuple(x.shape)}")
    if ((x < 0) | (x >= vocab_size)).any():
        raise ValueError(
            f"{who}: token ids must lie in [0, {vocab_size}) (vocab_size={vocab_size}), "
            f"got values in [{int(x.min())}, {int(x.max())}]"
        )
    rows = x.reshape(-1, x.shape[-1])
    bad = (rows[:, 0] != BOS).nonzero().flatten()
    if len(bad):
        raise ValueError(f"{who}: every row must start with <s> (id {BOS}); rows {bad[:5].tolist()} do not")
    bad = (rows[:, 1:] == BOS).any(-1).nonzero().flatten()
    if len(bad):
        raise ValueError(f"{who}: <s> (id {BOS}) may only open a row; rows {bad[:5].tolist()} have it inside")
    words = rows != PAD
    bad = (words[:, 1:] & ~words[:, :-1]).any(-1).nonzero().flatten()
    if len(bad):
        raise ValueError(f"{who}: padding must come after </s> only; rows {bad[:5].tolist()} have <pad> inside")
    lengths = words.sum(-1)
    bad = (rows.gather(1, (lengths - 1).unsqueeze(-1)).squeeze(-1) != EOS).nonzero().flatten()
    if len(bad):
        raise ValueError(f"{who}: every row must end with </s> (id {EOS}) before its padding; rows "
                         f"{bad[:5].tolist()} do not")  # fmt: skip
    bad = ((rows == EOS).sum(-1) > 1).nonzero().flatten()
    if len(bad):
        raise ValueError(f"{who}: </s> (id {EOS}) may only close a row; rows {bad[:5].tolist()} have it inside")
    return x[..., : int(lengths.max())].long()


def _check_batch(x, vocab_size: int, who: str) -> torch.Tensor:
    """:func:`check_tokens` for a ``(B, T)`` batch, the models' ``check_data``."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] == 0:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who} expects a non-empty (batch, length) LongTensor of token ids, got {got}")
    return check_tokens(x, vocab_size, who)


# ---------------------------------------------------------------------------------------------- networks


class _LastState(nn.Module):
    r"""Embedding, LSTM and the hidden state at each row's last token (``</s>``), shape ``(B, H)``; with
    ``bag_of_words``, plus :math:`\sum_t u_{x_t}`, a learned vector per word summed over the sentence (``<pad>``
    excluded; zero at the start)."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, bag_of_words: bool = False):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.word_counts = None
        if bag_of_words:
            self.word_counts = nn.EmbeddingBag(vocab_size, hidden_dim, mode="sum", padding_idx=PAD)
            nn.init.zeros_(self.word_counts.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(x))
        last = (x != PAD).sum(-1) - 1  # the LSTM reads left to right: padding after it does not reach it
        state = out.gather(1, last.view(-1, 1, 1).expand(-1, 1, out.shape[-1])).squeeze(1)
        return state if self.word_counts is None else state + self.word_counts(x)


class LSTMEncoder(GaussianEncoder):
    r""":math:`q(z\mid x) = \mathcal N(\mu(x), \mathrm{diag}\,\sigma^2(x))` from an LSTM's last valid state.

    The :class:`~pyro_lid.models.networks.GaussianEncoder` with its MLP body replaced by
    embedding, LSTM and the state at ``</s>`` (gathered at each row's length, so padding
    never enters); its ``loc``/``scale`` heads and ``distribution`` are used as they are.

    ``bag_of_words=True`` adds to that state a sum of learned word vectors, :math:`\sum_t u_{x_t} = U^\top n_x`
    (:math:`n_x` the sentence's word counts; zero at the start, so the encoder starts as the plain one), so that
    :math:`\mu(x)` can be linear in the counts from the first step. Why: when :math:`z` moves the logits by
    :math:`s\,Qz` (LIDSVAE, above all with ``latent_in_lstm=False``), the score of a sentence at :math:`z = 0` is
    :math:`s\,Q^\top(n_x - \sum_t p_t)`, linear in the counts, and so is the Laplace posterior mean
    :math:`(I + F)^{-1}` times it; an LSTM's last state has to learn to accumulate them.
    """

    def __init__(self, vocab_size: int, latent_dim: int, embed_dim: int = 256, hidden_dim: int = 256,
                 bag_of_words: bool = False):  # fmt: skip
        super().__init__(hidden_dim, latent_dim, hidden_dims=())
        self.body = _LastState(vocab_size, embed_dim, hidden_dim, bag_of_words)


class OutputLayer(nn.Module):
    """The ordinary output layer, :math:`\\ell_t = W h_t + b` (``z`` is not used, hence not injective in it)."""

    def __init__(self, hidden_dim: int, vocab_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_dim, vocab_size)

    def forward(self, hidden: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        return self.linear(hidden)


def _frequencies(word_frequencies, vocab_size: int) -> torch.Tensor:
    """``word_frequencies`` checked (``(V,)``, finite, positive) and normalized to sum to 1, in float64."""
    weights = torch.as_tensor(word_frequencies, dtype=torch.float64)
    if weights.shape != (vocab_size,) or not torch.isfinite(weights).all() or not (weights > 0).all():
        raise ValueError(
            f"word_frequencies must be {vocab_size} finite positive numbers, one per word of the vocabulary "
            f"(smooth zero counts, e.g. pyro_lid.data.unigram_frequencies), got shape {tuple(weights.shape)}"
            + (f" with minimum {weights.min().item():g}" if weights.numel() else "")
        )
    return weights / weights.sum()


class IdentifiableOutputLayer(nn.Module):
    r"""Logits injective in :math:`z` at every step: :math:`\ell_t = Q\,h(z) + (I - QQ^\top)\,m_t + c`.

    :math:`m_t = W h_t` is the ordinary output layer on the decoder state :math:`h_t`
    (which may depend on :math:`z` and the prefix), its bias being :math:`c`; :math:`Q`
    (``V x K``, orthonormal columns, fixed, seeded, **orthogonal to the all-ones vector**),
    the injective inner map :math:`h` (``"diagonal"``: :math:`s\odot z`, :math:`s \ge` margin;
    ``"brenier"``: :math:`\nabla\psi` with strong convexity :math:`\ge` margin) and :math:`c`
    are those of a :class:`~pyro_lid.distributions.transforms.ProjectedInjective`
    (``injective_map``, without its own MLP), whose
    :meth:`~pyro_lid.distributions.transforms.ProjectedInjective.combine_linear` computes
    :math:`\ell_t`.

    Since :math:`Q^\top Q = I`, :math:`Q^\top(I - QQ^\top) = 0` and :math:`Q^\top\mathbf 1 = 0`,

    .. math::

        Q^\top \ell_t = h(z) + Q^\top c, \qquad Q^\top \log p(\cdot\mid x_{<t}, z) = h(z) + Q^\top c

    (the log-probabilities are :math:`\ell_t` minus a multiple of :math:`\mathbf 1`) for every
    prefix and every :math:`m_t`: ``injective_map.left_inverse`` recovers :math:`z` from the
    logits or the log-probabilities of any single step, and every singular value of the
    Jacobian of :math:`z\mapsto\log p(\cdot\mid x_{<t}, z)` is at least
    :meth:`injectivity_bound` :math:`\ge` margin (:math:`\lVert Jv\rVert \ge \lVert Q^\top Jv\rVert
    = \lVert J_h v\rVert`), also when :math:`h_t` depends on :math:`z`.

    Cost: computed as one linear layer, :math:`\ell_t = [(I - QQ^\top)W,\ Q]\,[h_t;\ h(z)] + c`,
    with :math:`K` more inputs than the ordinary output layer: :math:`V(H + K)` multiply-adds
    per token instead of :math:`VH` (12.5% more at :math:`H = 256`, :math:`K = 32`), plus
    :math:`VHK` once per batch to project :math:`W`. No Brenier map over the vocabulary.

    :param int hidden_dim: :math:`H`.
    :param int vocab_size: :math:`V`.
    :param int latent_dim: :math:`K \le V - 1`.
    :param str inner: ``"diagonal"`` or ``"brenier"``.
    :param float margin: the singular-value floor.
    :param int subspace_seed: seed of :math:`Q`.
    :param inner_hidden_dims: ICNN widths of the Brenier inner map.
    :param word_frequencies: ``None`` (default) or the corpus's word frequencies :math:`\bar p`
        (``(V,)``, positive): the metric of the map, :math:`Q = \mathrm{diag}(\bar p)^{-1/2}R` with
        :math:`R` orthonormal and orthogonal to :math:`\sqrt{\bar p}`, and :math:`Q^\top` above replaced
        by :math:`L = R^\top\mathrm{diag}(\bar p)^{1/2}` (see :class:`~pyro_lid.distributions.transforms.
        ProjectedInjective`, "A metric"). The margin is then in Fisher units: at a step that predicts
        :math:`\bar p`, a unit step of :math:`z_k` carries :math:`s_k^2` nats of Fisher information,
        whatever :math:`V` is (with :math:`Q` orthonormal, about :math:`s_k^2/V`).
    :param bool learn_subspace: learn :math:`R` (default: fixed).
    :param float scale_init: the diagonal inner map's initial scale (default :math:`\max(1, 2\,\text{margin})`).
    :param subspace: ``None`` (default: :math:`Q` drawn with ``subspace_seed``) or a ``(V, K)`` matrix whose span,
        off :math:`\mathbf 1`, is :math:`Q`'s (e.g. :func:`pyro_lid.data.topic_directions`; not with
        ``word_frequencies``).
    :param brenier_kwargs: further options of the Brenier inner map.
    """

    def __init__(
        self,
        hidden_dim: int,
        vocab_size: int,
        latent_dim: int,
        inner: str = "diagonal",
        margin: float = 1.0,
        subspace_seed: int = 0,
        inner_hidden_dims: Sequence[int] | None = None,
        word_frequencies: torch.Tensor | None = None,
        learn_subspace: bool = False,
        scale_init: float | None = None,
        subspace: torch.Tensor | None = None,
        **brenier_kwargs,
    ):
        super().__init__()
        self.linear = nn.Linear(hidden_dim, vocab_size, bias=False)  # W; the bias is the map's offset c
        self.injective_map = ProjectedInjective(
            latent_dim,
            vocab_size,
            inner=inner,
            margin=margin,
            subspace_seed=subspace_seed,
            inner_hidden_dims=inner_hidden_dims,
            orthogonal_to=torch.ones(vocab_size),
            free_network=False,
            metric=None if word_frequencies is None else _frequencies(word_frequencies, vocab_size),
            learn_subspace=learn_subspace,
            scale_init=scale_init,
            subspace_init=subspace,
            **brenier_kwargs,
        )

    def forward(self, hidden: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # z (..., K) against hidden (..., [T,] H): one latent for all steps of its row
        z = z.reshape(z.shape[:-1] + (1,) * (hidden.dim() - z.dim()) + z.shape[-1:])
        return self.injective_map.combine_linear(z, hidden, self.linear.weight)

    def injectivity_bound(self) -> torch.Tensor:
        """The guaranteed floor on every singular value of the Jacobian of the logits (and log-probabilities)."""
        return self.injective_map.injectivity_bound()


# ---------------------------------------------------------------------------------------------- the decoder


def _greedy_choice(log_probs: torch.Tensor) -> torch.Tensor:
    return log_probs.argmax(-1)


def _sampled_choice(temperature: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def choose(log_probs):
        return torch.multinomial(torch.softmax(log_probs / temperature, -1), 1).squeeze(-1)

    return choose


class LSTMDecoder(nn.Module):
    r"""The LSTM decoder :math:`p(x\mid z)` (or :math:`p(x)` with ``latent_dim=0``); called on ``z``, a distribution.

    The initial state is :math:`c_0 = A z + a`, :math:`h_0 = \tanh c_0`, and every step reads
    the word embedding concatenated with :math:`z` (He et al. 2019). With ``latent_dim=0``
    the state starts at zero and nothing is concatenated: a language model.

    :param int vocab_size: :math:`V`.
    :param int latent_dim: :math:`K` (0: no latent).
    :param int embed_dim: word embedding width.
    :param int hidden_dim: LSTM width :math:`H`.
    :param float word_dropout: in training mode (``module.train()``) each input word is
        replaced by ``<unk>`` with this probability (Bowman et al. 2016); ``<s>`` and
        ``<pad>`` never are, and targets are never changed.
    :param head: the output layer, called as ``head(hidden, z)`` on states ``(..., H)``
        (default :class:`OutputLayer`).
    :param int max_length: the sentence length (``<s>`` and ``</s>`` included) that
        :meth:`SequenceCategorical.sample` pads to, and the decoding default.
    :param bool latent_in_lstm: the LSTM starts from and reads :math:`z` (default); ``False``: its states
        depend on the prefix only and :math:`z` reaches the logits through ``head`` alone.
    """

    def __init__(
        self,
        vocab_size: int,
        latent_dim: int,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        word_dropout: float = 0.0,
        head: nn.Module | None = None,
        max_length: int = 100,
        latent_in_lstm: bool = True,
    ):
        super().__init__()
        for label, value, low in [("vocab_size", vocab_size, UNK + 1), ("latent_dim", latent_dim, 0),
                                  ("embed_dim", embed_dim, 1), ("hidden_dim", hidden_dim, 1),
                                  ("max_length", max_length, 2)]:  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
        if not 0.0 <= word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {word_dropout!r}")
        self.vocab_size, self.latent_dim, self.hidden_dim = vocab_size, latent_dim, hidden_dim
        self.word_dropout, self.max_length = float(word_dropout), max_length
        self.latent_in_lstm = bool(latent_in_lstm)
        lstm_latent = latent_dim if self.latent_in_lstm else 0
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.latent_to_state = nn.Linear(latent_dim, hidden_dim) if lstm_latent else None
        self.lstm = nn.LSTM(embed_dim + lstm_latent, hidden_dim, batch_first=True)
        self.head = head if head is not None else OutputLayer(hidden_dim, vocab_size)

    def forward(self, z: torch.Tensor | None = None) -> SequenceCategorical:
        """:math:`p(x\\mid z)` for ``z`` of shape ``(..., K)`` (``None`` for a language model)."""
        return SequenceCategorical(self, z)

    # --------------------------------------------------------------------------------- pieces
    def _check_latent(self, z: torch.Tensor | None) -> None:
        if (z is None) != (self.latent_dim == 0) or (z is not None and z.shape[-1] != self.latent_dim):
            want = "no latent (None)" if self.latent_dim == 0 else f"z of shape (..., {self.latent_dim})"
            got = "None" if z is None else f"shape {tuple(z.shape)}"
            raise ValueError(f"{type(self).__name__} needs {want}, got {got}")

    def initial_state(self, z: torch.Tensor | None):
        """The LSTM's initial ``(h_0, c_0)``, each ``(1, N, H)``, for ``(N, K)`` rows of ``z`` (``None``: zeros;
        also zeros without ``latent_in_lstm``)."""
        if z is None or not self.latent_in_lstm:
            return None
        c = self.latent_to_state(z).unsqueeze(0)
        return torch.tanh(c), c

    def decoder_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The tokens the decoder reads, ``x[..., :-1]``, with word dropout in training mode."""
        inputs = x[..., :-1]
        if self.training and self.word_dropout > 0:
            drop = torch.rand(inputs.shape, device=x.device) < self.word_dropout
            inputs = inputs.masked_fill(drop & (inputs != BOS) & (inputs != PAD), UNK)
        return inputs

    def _run(self, tokens: torch.Tensor, z: torch.Tensor | None, state):
        """Decoder states ``(N, T, H)`` after reading ``(N, T)`` tokens from ``state``, and the new state."""
        inputs = self.embedding(tokens)
        if z is not None and self.latent_in_lstm:
            inputs = torch.cat([inputs, z.unsqueeze(-2).expand(z.shape[:-1] + tokens.shape[-1:] + z.shape[-1:])], -1)
        return self.lstm(inputs, state)

    def logits(self, tokens: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Teacher-forced logits ``(N, T, V)`` of the next token after each of ``(N, T)`` input tokens."""
        hidden, _ = self._run(tokens, z, self.initial_state(z))
        return self.head(hidden, z)

    def sequence_log_prob(self, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """:math:`\\log p(x\\mid z)` of ``(N, T)`` sentences given ``(N, K)`` rows of ``z``, shape ``(N,)``.

        Teacher forcing: the sum over predicted tokens (``x[:, 1:] != PAD``) of the Categorical
        log-probabilities; ``<pad>`` targets contribute exactly 0. Rows are scored in chunks of
        at most :data:`LOGITS_PER_CHUNK` logits.
        """
        inputs, targets = self.decoder_inputs(x), x[:, 1:]
        rows = max(1, LOGITS_PER_CHUNK // (targets.shape[1] * self.vocab_size))
        parts = []
        for start in range(0, x.shape[0], rows):
            part = slice(start, start + rows)
            logits = self.logits(inputs[part], None if z is None else z[part])
            nll = F.cross_entropy(
                logits.reshape(-1, self.vocab_size), targets[part].reshape(-1), ignore_index=PAD, reduction="none"
            )
            parts.append(-nll.view(targets[part].shape).sum(-1))
        return torch.cat(parts)

    def step(self, tokens: torch.Tensor, z: torch.Tensor | None, state):
        """One step: log-probabilities ``(N, V)`` of the token after ``(N,)`` ``tokens``, and the new state."""
        hidden, state = self._run(tokens.unsqueeze(-1), z, state)
        return self.head(hidden.squeeze(-2), z).log_softmax(-1), state

    @staticmethod
    def _choosable(log_probs: torch.Tensor, last: bool) -> torch.Tensor:
        """``log_probs`` with ``<pad>`` and ``<s>`` ruled out (everything but ``</s>`` at the last position)."""
        banned = torch.ones(log_probs.shape[-1], dtype=torch.bool, device=log_probs.device)
        if last:
            banned[EOS] = False
        else:
            banned[:] = False
            banned[[PAD, BOS]] = True
        return log_probs.masked_fill(banned, -math.inf)

    # --------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, z: torch.Tensor | None, num_rows: int, max_length: int, choose):
        """``(num_rows, L)`` sentences, ``L <= max_length``, one token at a time by ``choose(log_probs)``,
        and their log-probabilities ``(num_rows,)``."""
        device = self.embedding.weight.device
        tokens = torch.full((num_rows, max_length), PAD, dtype=torch.long, device=device)
        tokens[:, 0] = BOS
        scores = torch.zeros(num_rows, dtype=self.embedding.weight.dtype, device=device)
        done = torch.zeros(num_rows, dtype=torch.bool, device=device)
        state, current = self.initial_state(z), tokens[:, 0]
        for t in range(1, max_length):
            log_probs, state = self.step(current, z, state)
            current = choose(self._choosable(log_probs, t == max_length - 1)).masked_fill(done, PAD)
            scores += log_probs.gather(-1, current.unsqueeze(-1)).squeeze(-1).masked_fill(done, 0.0)
            tokens[:, t] = current
            done |= current == EOS
            if done.all():
                break
        return _trim(tokens), scores

    @torch.no_grad()
    def beam_search(self, z: torch.Tensor | None, num_rows: int, beam_size: int, max_length: int):
        """The best of ``beam_size`` hypotheses by plain log-probability (no length normalization).

        Finished hypotheses stay in the beam and compete with unfinished ones (log-probabilities
        only fall as a hypothesis grows); the search stops when every hypothesis in the beam has
        ended. With ``beam_size=1`` this is greedy decoding; with a beam as large as the number of
        hypotheses it is exact. A beam can lose the greedy sentence (its prefix may fall out of the
        beam while the sentences that pushed it out end worse), so the greedy sentence is a
        candidate too, at the cost of one greedy decoding: the result is never less probable than
        greedy's. Returns ``(tokens (num_rows, L), log_prob (num_rows,))``.
        """
        n, k, vocab = num_rows, beam_size, self.vocab_size
        device = self.embedding.weight.device
        zk = None if z is None else z.repeat_interleave(k, 0)
        tokens = torch.full((n, k, max_length), PAD, dtype=torch.long, device=device)
        tokens[..., 0] = BOS
        scores = torch.full((n, k), -math.inf, dtype=self.embedding.weight.dtype, device=device)
        scores[:, 0] = 0.0  # one live hypothesis, <s>; the others are placeholders
        finished = torch.zeros((n, k), dtype=torch.bool, device=device)
        state, current = self.initial_state(zk), tokens[..., 0].reshape(-1)
        for t in range(1, max_length):
            log_probs, state = self.step(current, zk, state)
            log_probs = self._choosable(log_probs, t == max_length - 1).view(n, k, vocab)
            # a finished hypothesis has one continuation, <pad>, which keeps its score
            carry = torch.full_like(log_probs, -math.inf)
            carry[..., PAD] = 0.0
            log_probs = torch.where(finished.unsqueeze(-1), carry, log_probs)
            scores, index = (scores.unsqueeze(-1) + log_probs).view(n, k * vocab).topk(k, dim=-1)
            parent, current = index // vocab, index % vocab
            tokens = tokens.gather(1, parent.unsqueeze(-1).expand(-1, -1, max_length))
            tokens[..., t] = current
            finished = finished.gather(1, parent) | (current == EOS) | (scores == -math.inf)
            rows = (parent + k * torch.arange(n, device=device).unsqueeze(-1)).reshape(-1)
            state = tuple(s[:, rows] for s in state) if state is not None else None
            current = current.reshape(-1)
            if finished.all():
                break
        picked, best = torch.arange(n, device=device), scores.argmax(-1)
        tokens, scores = _trim(tokens[picked, best]), scores[picked, best]
        if k == 1:
            return tokens, scores
        greedy, greedy_scores = self.generate(z, n, max_length, _greedy_choice)
        width = max(tokens.shape[-1], greedy.shape[-1])
        tokens, greedy = (F.pad(t, (0, width - t.shape[-1]), value=PAD) for t in (tokens, greedy))
        better = greedy_scores > scores
        return _trim(torch.where(better.unsqueeze(-1), greedy, tokens)), torch.where(better, greedy_scores, scores)


def _trim(tokens: torch.Tensor) -> torch.Tensor:
    """``tokens`` without trailing columns that are ``<pad>`` in every row."""
    return tokens[..., : int((tokens != PAD).sum(-1).max())]


# ---------------------------------------------------------------------------------------------- the distribution


class SequenceCategorical(TorchDistribution):
    r"""The decoder's :math:`p(x\mid z)` over whole padded sentences, batch shape ``z.shape[:-1]``.

    ``log_prob(x)`` teacher-forces the LSTM on ``x`` of shape ``(..., T)`` (any ``T``; trailing
    ``<pad>`` contributes exactly 0) and sums the per-token Categorical log-probabilities of the
    predicted tokens; ``z`` and ``x`` broadcast, so ``z`` of shape ``(S, B, K)`` scores ``(B, T)``
    sentences under ``S`` latents each (as the importance-weighted log-likelihood needs).
    ``sample()`` generates ancestrally (ids, no gradient), padded to ``max_length`` columns: the
    nominal event shape is ``(max_length,)``, but sentences of any length are scored.

    :param LSTMDecoder decoder: the network.
    :param z: latents ``(..., K)``, ``None`` for a language model.
    :param batch_shape: the batch shape when ``z`` is ``None``.
    """

    arg_constraints = {}
    has_enumerate_support = False

    def __init__(self, decoder: LSTMDecoder, z: torch.Tensor | None = None, batch_shape=(), validate_args=None):
        decoder._check_latent(z)
        self.decoder, self.z = decoder, z
        batch_shape = z.shape[:-1] if z is not None else torch.Size(batch_shape)
        super().__init__(batch_shape, torch.Size([decoder.max_length]), validate_args=False)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.independent(constraints.integer_interval(0, self.decoder.vocab_size - 1), 1)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        z = None if self.z is None else self.z.expand(batch_shape + self.z.shape[-1:])
        return SequenceCategorical(self.decoder, z, batch_shape)

    def _rows(self, shape: torch.Size) -> torch.Tensor | None:
        return None if self.z is None else self.z.expand(shape + self.z.shape[-1:]).reshape(-1, self.z.shape[-1])

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        x = check_tokens(value, self.decoder.vocab_size, "SequenceCategorical.log_prob")
        shape = torch.broadcast_shapes(self.batch_shape, x.shape[:-1])
        rows = x.expand(shape + x.shape[-1:]).reshape(-1, x.shape[-1])
        return self.decoder.sequence_log_prob(rows, self._rows(shape)).reshape(shape)

    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        length = self.event_shape[0]
        tokens, _ = self.decoder.generate(self._rows(shape), math.prod(shape), length, _sampled_choice(1.0))
        return F.pad(tokens, (0, length - tokens.shape[-1]), value=PAD).reshape(shape + (length,))


# ---------------------------------------------------------------------------------------------- the models


class LSTMVAE(VAE):
    r"""The LSTM VAE for text (Bowman et al. 2016; He et al. 2019) as a Pyro model/guide pair.

    Encoder: embedding, LSTM, the state at ``</s>``, a Gaussian head (:class:`LSTMEncoder`).
    Decoder: an LSTM that starts from :math:`z` and reads it at every step, with an output
    layer ``head`` (:class:`LSTMDecoder`); ``self.decoder(z)`` is a :class:`SequenceCategorical`.
    Everything else is :class:`~pyro_lid.models.VAE`'s: ``model``, ``guide``, ``posterior``,
    ``log_joint`` (``z`` of shape ``(..., B, K)``), ``beta``, ``kl_weight``, ``name``.

    Data are ``(B, T)`` ``LongTensor`` s of sentences ``<s> w1 ... wn </s> <pad> ...``
    (:meth:`check_data`). The base class's ``data_dim`` is set to ``vocab_size``: the data have
    no fixed width (``T`` varies between batches), and ``vocab_size`` is the number of values a
    coordinate takes, the quantity the base class's records (checkpoint descriptions) should
    show; nothing in the base class compares it with ``x.shape[1]``, since :meth:`check_data`
    is this class's own.

    :param int vocab_size: :math:`V` (ids ``PAD, BOS, EOS, UNK = 0, 1, 2, 3`` included).
    :param int latent_dim: :math:`K`.
    :param int embed_dim: embedding width (encoder and decoder).
    :param int hidden_dim: LSTM width (encoder and decoder).
    :param float word_dropout: the decoder's word dropout in training mode (see :class:`LSTMDecoder`).
    :param float beta: KL weight.
    :param prior: a prior module (default standard normal).
    :param head: the decoder's output layer, ``head(hidden, z) -> logits`` (default :class:`OutputLayer`).
    :param int max_length: default decoding length (``<s>`` and ``</s>`` included).
    :param bool latent_in_lstm: the decoder LSTM starts from and reads :math:`z` (default); ``False`` needs a
        ``head`` that reads :math:`z` (else the model would ignore it).
    :param bool bag_of_words: the encoder also reads the sentence's word counts directly (see
        :class:`LSTMEncoder`; default ``False``).
    :param str name: the parameter-store name (see :class:`~pyro_lid.models.VAE`).
    """

    def __init__(
        self,
        vocab_size: int,
        latent_dim: int = 32,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        word_dropout: float = 0.0,
        beta: float = 1.0,
        prior: nn.Module | None = None,
        head: nn.Module | None = None,
        max_length: int = 100,
        *,
        latent_in_lstm: bool = True,
        bag_of_words: bool = False,
        name: str | None = None,
    ):
        if not latent_in_lstm and (head is None or isinstance(head, OutputLayer)):
            raise ValueError(
                "latent_in_lstm=False leaves z nowhere to go: the ordinary output layer ignores z "
                "(use LIDSVAE, whose output layer reads z, or keep latent_in_lstm=True)"
            )
        decoder = LSTMDecoder(
            vocab_size, latent_dim, embed_dim, hidden_dim, word_dropout, head, max_length, latent_in_lstm
        )
        self.vocab_size, self.embed_dim, self.hidden_dim = vocab_size, embed_dim, hidden_dim
        self.max_length, self.bag_of_words = max_length, bool(bag_of_words)
        super().__init__(vocab_size, latent_dim, (), beta=beta, prior=prior, decoder=decoder, name=name)

    def _build_encoder(self, hidden_dims):
        return LSTMEncoder(self.vocab_size, self.latent_dim, self.embed_dim, self.hidden_dim, self.bag_of_words)

    @property
    def word_dropout(self) -> float:
        return self.decoder.word_dropout

    # ------------------------------------------------------------------ data
    def check_data(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as a ``(B, T)`` ``long`` tensor without trailing all-``<pad>`` columns, or a ``ValueError``
        naming the problem: integer dtype, ids in ``[0, vocab_size)``, ``<s>`` first, ``</s>`` last
        before the padding."""
        return _check_batch(x, self.vocab_size, type(self).__name__)

    def _encoder_input(self, x):
        return x  # token ids, embedded by the encoder

    # ------------------------------------------------------------------ decoding
    def _decode(self, z: torch.Tensor, run) -> torch.Tensor:
        """``run(rows (N, K), N)`` on ``z`` flattened to rows; its ``(N, L)`` result as ``z.shape[:-1] + (L,)``."""
        if not isinstance(z, torch.Tensor) or z.dim() < 1 or z.shape[-1] != self.latent_dim:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"{type(self).__name__} decodes z of shape (..., {self.latent_dim}), got {got}")
        if not torch.isfinite(z).all():
            bad = (~torch.isfinite(z)).sum().item()
            name = type(self).__name__
            raise ValueError(f"{name} decodes finite z; got {bad} NaN or infinite entries of {z.numel()}")
        rows = z.reshape(-1, self.latent_dim).to(next(self.parameters()).dtype)
        tokens = run(rows, rows.shape[0])
        return tokens.reshape(z.shape[:-1] + tokens.shape[-1:])

    def _length(self, max_length):
        max_length = self.max_length if max_length is None else max_length
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2 (<s> and </s>), got {max_length!r}")
        return max_length

    def greedy(self, z: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
        """The most probable token at each step, for ``z`` of shape ``(..., K)``: ``(..., L)`` ids."""
        length = self._length(max_length)
        return self._decode(z, lambda rows, n: self.decoder.generate(rows, n, length, _greedy_choice)[0])

    def sample_text(self, z: torch.Tensor, max_length: int | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Ancestral samples from :math:`p(x\\mid z)` with logits divided by ``temperature`` (> 0)."""
        try:  # a Python, NumPy or one-element torch number; not a bool or a string
            value = None if isinstance(temperature, (bool, str)) else float(temperature)
        except (TypeError, ValueError, RuntimeError):
            value = None
        if not is_positive_number(value):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        length, choose = self._length(max_length), _sampled_choice(value)
        return self._decode(z, lambda rows, n: self.decoder.generate(rows, n, length, choose)[0])

    def beam_search(self, z: torch.Tensor, beam_size: int = 5, max_length: int | None = None) -> torch.Tensor:
        """The most probable sentence a beam of ``beam_size`` finds (plain log-probability, no length
        normalization; never less probable than :meth:`greedy`'s; see :meth:`LSTMDecoder.beam_search`);
        ``beam_size=1`` is :meth:`greedy`."""
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"beam_size must be an integer >= 1, got {beam_size!r}")
        length = self._length(max_length)
        return self._decode(z, lambda rows, n: self.decoder.beam_search(rows, n, beam_size, length)[0])

    def _decode_with(self, z, decoder: str, beam_size: int, max_length):
        if decoder == "greedy":
            return self.greedy(z, max_length)
        if decoder == "beam":
            return self.beam_search(z, beam_size, max_length)
        raise ValueError(f"decoder must be 'greedy' or 'beam', got {decoder!r}")

    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor, mode: str = "mean", decoder: str = "greedy", beam_size: int = 5, max_length=None
    ) -> torch.Tensor:
        """Decode :math:`z` from :math:`q(z\\mid x)`: its mean (``mode="mean"``) or a draw (``"sample"``)."""
        if mode not in ("mean", "sample"):
            raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}")
        q = self.posterior(x)
        return self._decode_with(q.mean if mode == "mean" else q.sample(), decoder, beam_size, max_length)

    @torch.no_grad()
    def interpolate(
        self,
        x_a: torch.Tensor,
        x_b: torch.Tensor,
        steps: int = 5,
        decoder: str = "greedy",
        beam_size: int = 5,
        max_length: int | None = None,
    ) -> torch.Tensor:
        """Bowman et al.'s homotopy: decode :math:`(1-\\tau)\\mu(x_a) + \\tau\\mu(x_b)` for ``steps``
        values of :math:`\\tau` from 0 to 1 (endpoints included), :math:`\\mu` the posterior mean.

        ``x_a`` and ``x_b``: one sentence each (shape ``(T,)``; result ``(steps, L)``) or batches
        of as many sentences (``(B, T)``; result ``(steps, B, L)``).
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
        single = isinstance(x_a, torch.Tensor) and x_a.dim() == 1
        means = [self.posterior(x.unsqueeze(0) if single else x).mean for x in (x_a, x_b)]
        if means[0].shape != means[1].shape:
            raise ValueError(f"x_a and x_b must hold as many sentences, got {len(means[0])} and {len(means[1])}")
        tau = torch.linspace(0, 1, steps, dtype=means[0].dtype, device=means[0].device).view(-1, 1, 1)
        tokens = self._decode_with((1 - tau) * means[0] + tau * means[1], decoder, beam_size, max_length)
        return tokens.squeeze(1) if single else tokens


class LIDSVAE(LSTMVAE):
    r"""Latent-identifiable sequence VAE: :class:`LSTMVAE` with the injective :class:`IdentifiableOutputLayer`.

    At every step the logits are :math:`\ell_t = Q\,h(z) + (I - QQ^\top)\,m_t + c`, with
    :math:`m_t = W h_t` the LSTM's ordinary output layer, :math:`Q` a fixed ``V x K``
    matrix with orthonormal columns orthogonal to :math:`\mathbf 1` and :math:`h` injective
    with margin. For every prefix, :math:`z\mapsto p(x_t\mid x_{<t}, z)` is injective:
    :math:`Q^\top\log p(\cdot\mid x_{<t}, z) = h(z) + Q^\top c` (see
    :class:`IdentifiableOutputLayer`), with every Jacobian singular value at least
    :meth:`injectivity_bound` :math:`\ge` ``margin``.

    **Why the whole** :math:`z\mapsto p(x\mid z)` **is injective**, although the decoder state
    :math:`h_t` depends on :math:`z` and on the prefix: the distribution of sentences
    determines its first-step marginal :math:`p(x_1\mid\texttt{<s>}, z) = \sum_{x_{2:}} p(x\mid z)`,
    whose prefix ``<s>`` is the same for every :math:`z`, and that single Categorical already
    determines :math:`z = h^{-1}(Q^\top(\log p(\cdot\mid\texttt{<s>}, z) - c))`. So
    :math:`p(\cdot\mid z) = p(\cdot\mid z')` forces :math:`z = z'`: a change in :math:`z` always
    changes the likelihood, :math:`z` is identifiable, and the posterior cannot collapse to the
    prior. Every later step carries the same guarantee for its own prefix.

    :param float margin: the singular-value floor of :math:`h` (default 1, a standard normal
        prior's scale: a unit step in :math:`z` moves the logits by at least one unit). Enough on a
        vocabulary of tens of words; on thousands it carries almost nothing (the Penn Treebank: KL 0.04),
        and margin 5 with ``bag_of_words`` and a KL warm-up is the recipe to start from
        (:data:`~pyro_lid.experiments.text_comparison.RECOMMENDED_LIDSVAE`, ``docs/text.rst``).
    :param str inner: ``"diagonal"`` (:math:`h(z) = s\odot z`, :math:`s\ge` margin) or
        ``"brenier"`` (:math:`h = \nabla\psi`, strong convexity :math:`\ge` margin, ICNN widths
        ``inner_hidden_dims``, further options in ``brenier_kwargs``).
    :param int subspace_seed: seed of the fixed :math:`Q`.
    :param word_frequencies: the training corpus's word frequencies (``(V,)``, positive; see
        :func:`pyro_lid.data.unigram_frequencies`) to put the margin in Fisher units (see
        :class:`IdentifiableOutputLayer`); default ``None``: :math:`Q` orthonormal, the margin on the logits.
        Measured on the Penn Treebank, it did worse than a larger Euclidean margin: the directions sit
        on rare words, which few sentences contain (``docs/text.rst``).
    :param bool learn_subspace: learn the subspace (default: fixed). With ``word_frequencies`` a learned
        subspace cannot hide the injective directions on rare words, where they would cost nothing.
    :param float scale_init: the diagonal inner map's initial scale (default :math:`\max(1, 2\,\text{margin})`).
    :param bool latent_in_lstm: the decoder LSTM also starts from and reads :math:`z` (default). ``False``:
        :math:`z` acts through the output layer alone, :math:`\log p(x_t\mid x_{<t}, z) = \log\mathrm{softmax}
        (Q h(z) + (I - QQ^\top) W h_t(x_{<t}) + c)`, a bias on the logits shared by all steps (as in TopicRNN,
        Dieng et al. 2017). Then no decoder state can offset the head's effect on the likelihood, and
        :func:`~pyro_lid.diagnostics.head_information` is the whole Fisher information about :math:`z`.
    :param subspace: ``None`` (default: a random :math:`Q`, seeded) or a ``(V, K)`` matrix whose span is
        :math:`Q`'s: :func:`pyro_lid.data.topic_directions` of the training corpus points the injective directions
        where sentences' word counts vary, so that the information the margin forces on :math:`z` is worth its
        price (``docs/text.rst``).

    Other parameters as :class:`LSTMVAE`. Cost: :math:`VK` multiply-adds per token on top of
    the output layer's :math:`VH`, and :math:`VHK` per batch (see :class:`IdentifiableOutputLayer`);
    :math:`Q` (``V x K``) is a buffer, not a parameter.
    """

    def __init__(
        self,
        vocab_size: int,
        latent_dim: int = 32,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        word_dropout: float = 0.0,
        beta: float = 1.0,
        prior: nn.Module | None = None,
        margin: float = 1.0,
        inner: str = "diagonal",
        subspace_seed: int = 0,
        inner_hidden_dims: Sequence[int] | None = None,
        max_length: int = 100,
        *,
        word_frequencies: torch.Tensor | None = None,
        learn_subspace: bool = False,
        scale_init: float | None = None,
        latent_in_lstm: bool = True,
        subspace: torch.Tensor | None = None,
        bag_of_words: bool = False,
        name: str | None = None,
        **brenier_kwargs,
    ):
        head = IdentifiableOutputLayer(
            hidden_dim, vocab_size, latent_dim, inner, margin, subspace_seed, inner_hidden_dims,
            word_frequencies, learn_subspace, scale_init, subspace, **brenier_kwargs,
        )  # fmt: skip
        self.margin, self.inner = head.injective_map.margin, inner
        super().__init__(vocab_size, latent_dim, embed_dim, hidden_dim, word_dropout, beta, prior, head, max_length,
                         latent_in_lstm=latent_in_lstm, bag_of_words=bag_of_words, name=name)  # fmt: skip

    def injectivity_bound(self) -> torch.Tensor:
        """The guaranteed floor on every singular value of :math:`\\partial\\log p(x_t\\mid x_{<t}, z)/\\partial z`."""
        return self.decoder.head.injectivity_bound()

    def latent_from_log_probs(self, log_probs: torch.Tensor) -> torch.Tensor:
        """:math:`z` from the logits or log-probabilities ``(..., V)`` of any one step (any prefix)."""
        return self.decoder.head.injective_map.left_inverse(log_probs)


class SALSTMVAE(SemiAmortized, LSTMVAE):
    """SA-VAE for text (Kim et al. 2018, whose benchmarks were text): :class:`~pyro_lid.models.SemiAmortized`
    over :class:`LSTMVAE`. Each sentence's posterior is refined by ``refine_steps`` gradient steps on its
    own ELBO through the LSTM decoder, which is held fixed; also ``semi_amortized(LSTMVAE)``."""


class SALIDSVAE(SemiAmortized, LIDSVAE):
    """SA-VAE's refinement over LIDSVAE: :class:`~pyro_lid.models.SemiAmortized` over :class:`LIDSVAE`, also
    ``semi_amortized(LIDSVAE)``. Each sentence's posterior is refined by ``refine_steps`` gradient steps on its own
    ELBO through the identifiable decoder, held fixed; the decoder, hence its injectivity in :math:`z` (the same
    :meth:`~LIDSVAE.injectivity_bound`), is LIDSVAE's. By name: ``lidsvae:recipe=sa_vae``."""


class BNLSTMVAE(BatchNormalized, LSTMVAE):
    """BN-VAE for text (Zhu et al. 2020, whose benchmarks were text): :class:`~pyro_lid.models.vae.BatchNormalized`
    over :class:`LSTMVAE`: batch-normalized posterior means at the LSTM encoder's head, fixed scale ``gamma``."""


register_semi_amortized(LSTMVAE, SALSTMVAE)
register_semi_amortized(LIDSVAE, SALIDSVAE)


class LSTMLanguageModel(ParamStoreName, nn.Module):
    r"""The perplexity baseline: the :class:`LSTMDecoder` without a latent, :math:`p(x) = \prod_t p(x_t\mid x_{<t})`.

    ``log_prob(x)`` gives each sentence's log-probability (perplexity: ``exp(-sum log_prob /
    sum sentence_lengths(x))``, :func:`pyro_lid.data.sentence_lengths`); ``model``/``guide`` are a
    Pyro pair with no latent (the guide is empty), so ``SVI(lm.model, lm.guide, Adam(...), Trace_ELBO())``
    fits it by maximum likelihood,
    and so does :func:`~pyro_lid.infer.fit` with ``val_metrics=False`` (there is no posterior to
    measure). It shares :class:`LSTMDecoder`, and thus its code, with the VAEs.

    :param str name: the parameter-store name; ``None`` (the default): ``"lm"``, or the first free ``"lm_1"``,
        ... while another module's parameters hold it (:class:`~pyro_lid.models.param_store.ParamStoreName`).

    Other parameters as :class:`LSTMDecoder`.
    """

    default_store_name = "lm"

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        word_dropout: float = 0.0,
        max_length: int = 100,
        *,
        name: str | None = None,
    ):
        super().__init__()
        self.decoder = LSTMDecoder(vocab_size, 0, embed_dim, hidden_dim, word_dropout, max_length=max_length)
        self.vocab_size = vocab_size
        self._init_store_name(name)

    def check_data(self, x: torch.Tensor) -> torch.Tensor:
        """As :meth:`LSTMVAE.check_data`."""
        return _check_batch(x, self.vocab_size, type(self).__name__)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x)` of each sentence, shape ``(B,)``."""
        x = self.check_data(x)
        return self.decoder().expand(x.shape[:1]).log_prob(x)

    def model(self, x: torch.Tensor, num_data: int | None = None) -> None:
        self._register()
        x = self.check_data(x)
        with pyro.plate("data", size=num_data or x.shape[0], subsample=torch.arange(x.shape[0], device=x.device)):
            pyro.sample("x", self.decoder(), obs=x)

    def guide(self, x: torch.Tensor, num_data: int | None = None) -> None:
        """No latent variables: nothing to sample."""

    def default_loss(self):
        """``Trace_ELBO``, here the negative log-likelihood (no latent, so no KL term)."""
        return Trace_ELBO()
