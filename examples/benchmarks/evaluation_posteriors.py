"""Seconds of a text model's evaluation with its posteriors computed once, against asking the model in every stage.

``text_report`` computes every sentence's :math:`q(z\\mid x)` once and all stages (active units, KL, the
importance-weighted bound, both mutual-information estimators, the reconstruction) read it
(:mod:`pyro_lid.diagnostics.fixed_posteriors`). Before, each stage asked the model again: for SA-VAE that is
its refinement (``refine_steps`` decoder gradients per sentence) in every stage. This script times, in one run,
the same stages called one by one on the model (as evaluations ran before) and ``text_report``, and prints their
ratio, for each model of ``--models`` (text methods of the registry; ``sa_vae`` refines with its settings); each way
``--repeats`` times, alternating which goes first, medians printed.

Usage::

    OMP_NUM_THREADS=1 python examples/benchmarks/evaluation_posteriors.py            # SA-VAE, published settings
    OMP_NUM_THREADS=1 python examples/benchmarks/evaluation_posteriors.py --models lstm_vae,sa_vae
    python examples/benchmarks/evaluation_posteriors.py --quick                      # small sizes, a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch

from pyro_lid.diagnostics import (
    active_units,
    importance_weighted_log_likelihood,
    kl_divergence,
    mutual_information,
    text_report,
)
from pyro_lid.diagnostics.collapse import _checked_mutual_information
from pyro_lid.distributions.diagonal import diagonal_normal
from pyro_lid.experiments.methods import resolve_text_method
from pyro_lid.models.sequence import PAD

KIM = "sa_vae:refine_steps=20:refine_lr=0.03125:refine_max_norm=28:refine_momentum=0.5:decoder_through_steps=true"


@torch.no_grad()
def stage_by_stage(model, tokens: torch.Tensor, num_samples: int) -> None:
    """The stages of ``text_report`` as it ran before, each asking ``model.posterior`` itself, with the same
    batching (the aggregate mutual information in chunks of 500 with its per-dimension values, after the look at
    one posterior that decided whether to compute those)."""
    active_units(model, tokens)
    kl_divergence(model, tokens)
    importance_weighted_log_likelihood(model, tokens, num_samples)
    per_dim = diagonal_normal(model.posterior(tokens[:1])) is not None
    _checked_mutual_information(model, tokens, "aggregate", 500, 500, per_dim)
    mutual_information(model, tokens, "minibatch")
    torch.cat([model.decoder(model.posterior(x).sample()).log_prob(x) for x in tokens.split(500)])


def main(argv=None) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from text_step import random_batches  # this folder's script

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=KIM, help="text methods, comma-separated")
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--embed-dim", type=int, default=64)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--mean-words", type=float, default=21.0)
    parser.add_argument("--num-samples", type=int, default=20, help="importance samples of the bound")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each way, alternating; medians shown")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.vocab_size, args.embed_dim, args.hidden_dim, args.latent_dim, args.sentences = 100, 8, 8, 2, 40
    batches = random_batches(1, args.sentences, args.vocab_size, args.mean_words, 50)
    tokens = batches[0]
    print(f"torch threads {torch.get_num_threads()}; vocab {args.vocab_size}, embed {args.embed_dim}, LSTM "
          f"{args.hidden_dim}, z {args.latent_dim}; {args.sentences} sentences, "
          f"{int((tokens[:, 1:] != PAD).sum())} predicted tokens; bound of {args.num_samples} samples")  # fmt: skip
    seconds = {}
    for spec in args.models.split(","):
        torch.manual_seed(0)
        model = resolve_text_method(spec).build_text(args.vocab_size, args.latent_dim, args.embed_dim,
                                                     args.hidden_dim, train_tokens=tokens).eval()  # fmt: skip
        pyro.clear_param_store()
        stage_by_stage(model, tokens[:8], 2)  # warm-up, untimed
        text_report(model, tokens[:8], 2, progress=False)
        times = {"stages": [], "once": []}
        for i in range(args.repeats):  # alternating, the first way first on odd repeats, the second on even
            ways = [("stages", stage_by_stage), ("once", lambda m, t, s: text_report(m, t, s, progress=False))]
            for way, run in ways if i % 2 == 0 else ways[::-1]:
                started = time.perf_counter()
                run(model, tokens, args.num_samples)
                times[way].append(time.perf_counter() - started)
        before, once = statistics.median(times["stages"]), statistics.median(times["once"])
        seconds[spec] = (before, once)
        print(f"  {spec}\n    every stage asks the model {before:8.2f} s   posteriors once {once:8.2f} s   "
              f"{before / once:5.2f} x faster (medians of {args.repeats})")  # fmt: skip
    return seconds


if __name__ == "__main__":
    main()
