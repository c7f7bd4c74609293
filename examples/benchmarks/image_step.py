"""Training-step cost of the image models, measured in one run, printed as ratios to the VAE's step.

One SVI step (``Trace_ELBO``, Adam) on a batch of binary 784-pixel images, for each registry spec, with the
library's image sizes (64 latents, hidden width 512, ICNN width 512 unless a spec's ``--icnn-hidden`` says
otherwise). The models are timed in turns, round after round, so that a machine's drift hits all of them
alike; the median over rounds is reported.

Usage::

    python examples/benchmarks/image_step.py                   # vae, lidvae, lidvae:inner=brenier (ICNN 512 and 64)
    python examples/benchmarks/image_step.py --quick           # small sizes, for a smoke run
    python examples/benchmarks/image_step.py --models vae,lidvae_brenier --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_lid.experiments.methods import resolve_method

DEFAULT_SETTINGS = ("vae", "lidvae", "lidvae:inner=brenier", "lidvae:inner=brenier@64")


def _synchronize():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def step_times(settings, data_dim, latent_dim, hidden, icnn_hidden, batch, rounds, steps, device):
    """Median seconds per SVI step of each setting (``spec`` or ``spec@icnn_width``), timed in turns."""
    x = torch.bernoulli(torch.full((batch, data_dim), 0.3, device=device))
    runners = {}
    for setting in settings:
        spec, _, width = setting.partition("@")
        pyro.clear_param_store()
        torch.manual_seed(0)
        model = resolve_method(spec).build(data_dim, latent_dim, hidden, int(width or icnn_hidden)).to(device)
        svi = SVI(model.model, model.guide, Adam({"lr": 1e-3}), Trace_ELBO())
        svi.step(x)  # warm-up: the optimizer's state exists before timing
        runners[setting] = svi
    times = {setting: [] for setting in settings}
    for _ in range(rounds):
        for setting, svi in runners.items():
            _synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                svi.step(x)
            _synchronize()
            times[setting].append((time.perf_counter() - start) / steps)
    return {setting: statistics.median(values) for setting, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_SETTINGS),
                        help="comma-separated registry specs; spec@W sets that model's ICNN width to W")  # fmt: skip
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="steps per timing")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds: a smoke run")
    args = parser.parse_args(argv)
    sizes = dict(data_dim=784, latent_dim=64, hidden=512, icnn_hidden=512)
    if args.quick:
        sizes = dict(data_dim=40, latent_dim=4, hidden=16, icnn_hidden=16)
        args.rounds, args.steps = 2, 2
    settings = [s for s in args.models.split(",") if s]
    if "vae" not in settings:
        settings.insert(0, "vae")
    times = step_times(settings, **sizes, batch=args.batch, rounds=args.rounds, steps=args.steps, device=args.device)
    print(f"one SVI step, batch {args.batch}, {sizes}, {args.device}, median of {args.rounds} rounds:")
    print("| model | ms per step | x VAE |")
    print("|---|---|---|")
    for setting, seconds in times.items():
        print(f"| {setting} | {1000 * seconds:.1f} | {seconds / times['vae']:.2f} |")
    return times


if __name__ == "__main__":
    main()
