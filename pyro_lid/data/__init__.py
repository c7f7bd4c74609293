"""Data sets: synthetic generators (built in), classical scenarios, MNIST / Fashion-MNIST from local files, text."""

from .images import binarize, load_images, pixel_fisher_weights, read_idx
from .pinwheel import pinwheel
from .synthetic import synthetic_latent_data
from .synthetic_text import SyntheticTextModel, synthetic_text, synthetic_text_model
from .text import (
    BOS,
    EOS,
    PAD,
    UNK,
    TextCorpus,
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
    topic_directions,
    unigram_frequencies,
)

__all__ = [
    "binarize",
    "load_images",
    "pixel_fisher_weights",
    "pinwheel",
    "read_idx",
    "synthetic_latent_data",
    "PAD",
    "BOS",
    "EOS",
    "UNK",
    "TextCorpus",
    "Vocabulary",
    "bucket_order",
    "encode_corpus",
    "load_corpus",
    "load_ptb",
    "load_text",
    "load_yahoo",
    "pad_sentences",
    "read_corpus",
    "sentence_lengths",
    "unigram_frequencies",
    "topic_directions",
    "synthetic_text",
    "synthetic_text_model",
    "SyntheticTextModel",
]
