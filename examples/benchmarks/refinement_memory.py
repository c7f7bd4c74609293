"""Peak memory and seconds of SA-VAE's end-to-end training step on text, with the refinement's steps kept or
recomputed in the backward pass (``refine_checkpoint``), measured in one run, with their ratios.

End to end, SA-VAE differentiates through its ``refine_steps`` gradient steps, so the graph of every step (each an
LSTM decoder over the batch's sentences and its vocabulary-wide logits) is kept until the backward pass: on Yahoo's
long documents that took a training process to 21 GB. With ``refine_checkpoint=True`` no step's graph is kept; each
is computed again, with the same random draws, when the loss is differentiated (``torch.utils.checkpoint``). The
losses must agree (printed); the gradients do too (``tests/test_methods.py``).

Each setting runs in a process of its own (a CPU process's peak resident memory, ``ru_maxrss``, only grows), on
the same random sentences (words ~ 1 + Poisson(mean - 1), capped at 200) and seeds; the peak is printed beside the
memory the process held before its first step.

Usage::

    OMP_NUM_THREADS=1 python examples/benchmarks/refinement_memory.py                      # vocab 10k, 60 words
    OMP_NUM_THREADS=1 python examples/benchmarks/refinement_memory.py --mean-words 120     # Yahoo-like lengths
    python examples/benchmarks/refinement_memory.py --quick                                 # small sizes, a smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def child(args) -> None:
    """One setting: ``args.steps`` training steps; prints a JSON line with the peak memory, seconds and losses."""
    import pyro
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from text_step import random_batches  # this folder's script

    from pyro_lid.models import SALSTMVAE

    torch.manual_seed(0)
    model = SALSTMVAE(args.vocab_size, args.latent_dim, args.embed_dim, args.hidden_dim, refine_steps=args.refine_steps,
                      refine_lr=0.1, end_to_end=True, refine_checkpoint=args.child == "recomputed")  # fmt: skip
    svi = SVI(model.model, model.guide, Adam({"lr": 1e-3}), Trace_ELBO())
    batches = random_batches(args.steps, args.batch_size, args.vocab_size, args.mean_words, 200, seed=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    losses, started = [], time.perf_counter()
    for x in batches:
        pyro.set_rng_seed(1)
        losses.append(svi.step(x, num_data=1000 * args.batch_size))
    seconds = (time.perf_counter() - started) / len(batches)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"before_gb": before / 2**20, "peak_gb": peak / 2**20, "seconds": seconds, "losses": losses}))


def main(argv=None) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from text_step import add_ptb_size_arguments  # this folder's script

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_ptb_size_arguments(parser, mean_words=60.0)
    parser.add_argument("--refine-steps", type=int, default=10, help="the registry's sa_vae: 10")
    parser.add_argument("--steps", type=int, default=3, help="training steps per setting")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in seconds")
    parser.add_argument("--child", choices=["kept", "recomputed"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.vocab_size, args.embed_dim, args.hidden_dim, args.latent_dim, args.mean_words = 200, 16, 16, 4, 10.0
        args.refine_steps, args.steps = 3, 2
    if args.child:
        return child(args)
    passed = list(argv if argv is not None else sys.argv[1:])
    found = {}
    for setting in ("kept", "recomputed"):
        out = subprocess.run([sys.executable, __file__, *passed, "--child", setting], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
        found[setting] = json.loads(out.strip().splitlines()[-1])
    kept, recomputed = found["kept"], found["recomputed"]
    print(f"SA-VAE end to end: vocab {args.vocab_size}, embed {args.embed_dim}, LSTM {args.hidden_dim}, z "
          f"{args.latent_dim}, batch {args.batch_size}, {args.refine_steps} refinement steps, about "
          f"{args.mean_words:g} words per sentence; {args.steps} steps each")  # fmt: skip
    for name, row in found.items():
        print(f"  steps {name:10s} peak {row['peak_gb']:6.2f} GB (before the first step {row['before_gb']:5.2f} GB)  "
              f"{row['seconds']:7.2f} s/step  losses {', '.join(f'{v:.6g}' for v in row['losses'])}")  # fmt: skip
    grown = (kept["peak_gb"] - kept["before_gb"]) / max(recomputed["peak_gb"] - recomputed["before_gb"], 1e-9)
    print(f"  recomputed / kept: peak {recomputed['peak_gb'] / kept['peak_gb']:.2f}x (growth during the steps "
          f"{1 / grown:.2f}x), time {recomputed['seconds'] / kept['seconds']:.2f}x; losses equal: "
          f"{kept['losses'] == recomputed['losses']}")  # fmt: skip
    return found


if __name__ == "__main__":
    main()
