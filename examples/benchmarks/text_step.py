"""Seconds per training step of LIDSVAE against the LSTM-VAE at PTB sizes, measured in one run, with their ratio.

One step is what ``fit`` does per mini-batch: the ELBO (``Trace_ELBO``) forward, its backward and an Adam
update through ``pyro.infer.SVI``. Sizes default to the usual PTB setting (vocabulary 10k, embedding and
LSTM 256, z of 32, batch 32) on random sentences of realistic lengths (words ~ 1 + Poisson(20), capped at
50: PTB's training sentences average about 21 words). Both models see the same batches; steps alternate
(LSTM-VAE, LIDSVAE, LSTM-VAE, ...) after a warm-up, so that drifts of the machine hit both alike; the median
step time of each and the ratio LIDSVAE / LSTM-VAE are printed (the issue's target: at most 1.5).

Usage::

    OMP_NUM_THREADS=1 python examples/benchmarks/text_step.py                 # CPU, 20 timed steps each
    python examples/benchmarks/text_step.py --device cuda --steps 100
    python examples/benchmarks/text_step.py --quick                           # small sizes, a smoke run
    OMP_NUM_THREADS=1 python examples/benchmarks/text_step.py --models lstm_vae,lidsvae,bn_vae,sa_vae

``--models`` takes text methods of the registry (their model's step: SA-VAE's includes its refinement
steps, BN-VAE's its batch norm); recipes that change the training loop rather than the step (Lagging's
aggressive encoder steps, KL schedules, free bits) are measured by ``compare`` runs, not here.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_lid.experiments.methods import resolve_text_method
from pyro_lid.models.sequence import BOS, EOS, PAD, UNK


def random_batches(count, batch_size, vocab_size, mean_words, max_words, seed=0):
    """``count`` padded batches ``<s> w1 .. wn </s> <pad>..`` with n ~ 1 + Poisson(mean_words - 1), n <= max_words."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        n = (1 + torch.poisson(torch.full((batch_size,), mean_words - 1.0), generator=g)).long().clamp(max=max_words)
        x = torch.full((batch_size, int(n.max()) + 2), PAD, dtype=torch.long)
        for i, k in enumerate(n.tolist()):
            x[i, 0], x[i, k + 1] = BOS, EOS
            x[i, 1 : k + 1] = torch.randint(UNK + 1, vocab_size, (k,), generator=g)
        batches.append(x)
    return batches


def add_ptb_size_arguments(parser, mean_words: float = 21.0) -> None:
    """The sizes most PTB papers use (vocabulary 10k, embedding and LSTM 256, z of 32, batch 32) as options."""
    parser.add_argument("--vocab-size", type=int, default=10000)
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mean-words", type=float, default=mean_words, help="mean words per sentence")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_ptb_size_arguments(parser)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in seconds")
    parser.add_argument("--models", default="lstm_vae,lidsvae",
                        help="text methods to time, comma-separated; ratios are to the first")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.vocab_size, args.embed_dim, args.hidden_dim, args.latent_dim, args.steps = 200, 16, 16, 4, 3
    device = torch.device(args.device)
    batches = [b.to(device) for b in random_batches(args.warmup + args.steps, args.batch_size, args.vocab_size,
                                                    args.mean_words, 50)]  # fmt: skip
    sizes = (args.vocab_size, args.latent_dim, args.embed_dim, args.hidden_dim)
    width = max(b.shape[1] for b in batches)  # the batches as a training split, for lidsvae:metric=unigram etc.
    padded = torch.cat([torch.nn.functional.pad(b.cpu(), (0, width - b.shape[1]), value=PAD) for b in batches])
    runs = {}
    for spec in args.models.split(","):
        method = resolve_text_method(spec)
        if set(method.fit_kwargs) - {"kl_schedule"} or method.pretrain_fraction:
            parser.error(f"{spec} changes the training loop, not the step: measure it with `compare`")
        torch.manual_seed(0)
        model = method.build_text(*sizes, train_tokens=padded).to(device)
        runs[spec] = (model, SVI(model.model, model.guide, Adam({"lr": 1e-3}), Trace_ELBO()), [])
    pyro.clear_param_store()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i, x in enumerate(batches):  # alternate the models step by step
        for _model, svi, times in runs.values():
            sync()
            started = time.perf_counter()
            svi.step(x, num_data=1000 * args.batch_size)
            sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - started)
    medians = {name: statistics.median(times) for name, (_, _, times) in runs.items()}
    first = next(iter(medians))
    ratios = {name: seconds / medians[first] for name, seconds in medians.items()}
    tokens = statistics.mean(int((x[:, 1:] != PAD).sum()) for x in batches)
    print(f"device {device}, torch threads {torch.get_num_threads()}; vocab {args.vocab_size}, embed "
          f"{args.embed_dim}, LSTM {args.hidden_dim}, z {args.latent_dim}, batch {args.batch_size}, "
          f"{tokens:.0f} predicted tokens per batch; median of {args.steps} steps each")  # fmt: skip
    for name, seconds in medians.items():
        print(f"  {name:10s} {seconds * 1000:8.1f} ms/step  {tokens / seconds:8.0f} tokens/s  "
              f"{ratios[name]:5.2f} x {first}")  # fmt: skip
    if "lidsvae" in ratios and first == "lstm_vae":
        print(f"  ratio LIDSVAE / LSTM-VAE: {ratios['lidsvae']:.2f} (target <= 1.5)")
    return {"seconds": medians, "ratios": ratios}


if __name__ == "__main__":
    main()
