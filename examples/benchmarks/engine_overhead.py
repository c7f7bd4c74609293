"""Seconds per epoch of ``pyro_lid.infer.fit`` (the Fabric engine) against the loop it replaced, in one run.

Both train the same model from the same initial parameters, on the same data, with the same options,
on one CPU process; the old loop is a frozen copy (``_legacy_fit.py``, used only here). Runs alternate
(old, new, old, new, ...) so that drifts of the machine hit both alike; the median epoch time of each
is reported, with their ratio (new / old: the engine's overhead) and a check that both trained to the
same parameters (they run the same algorithm, so they must agree bit for bit).

Usage::

    OMP_NUM_THREADS=1 python examples/benchmarks/engine_overhead.py            # VAE, 2000 x 784, batch 100
    OMP_NUM_THREADS=1 python examples/benchmarks/engine_overhead.py --quick    # small sizes, a smoke run
    python examples/benchmarks/engine_overhead.py --model lidvae --val          # with validation metrics
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _legacy_fit import fit as legacy_fit  # noqa: E402

from pyro_lid.infer import fit  # noqa: E402
from pyro_lid.models import LIDVAE, VAE  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["vae", "lidvae"], default="vae")
    parser.add_argument("--num-data", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=784)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each loop (alternating)")
    parser.add_argument("--val", action="store_true", help="also validate (val_loss, KL, AU, MI) every epoch")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_data, args.dim, args.epochs, args.repeats = 300, 50, 1, 2
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(args.num_data, args.dim))
    val = torch.bernoulli(torch.rand(200, args.dim)) if args.val else None

    def make():
        torch.manual_seed(1)
        if args.model == "vae":
            return VAE(args.dim, 8, hidden_dims=(256,))
        return LIDVAE(args.dim, 8, hidden_dims=(256,), icnn_hidden_dims=(64,))

    options = dict(epochs=args.epochs, batch_size=args.batch_size, progress=False, seed=0)
    seconds, wall, finals = {"old": [], "new": []}, {"old": [], "new": []}, {}
    for repeat in range(args.repeats + 1):  # the first round warms up (imports, allocator) and is not counted
        for name, train in (("old", legacy_fit), ("new", fit)):
            model = make()
            started = time.perf_counter()
            history = train(model, x, val, **options)
            if repeat:
                wall[name].append((time.perf_counter() - started) / args.epochs)
                seconds[name] += history["seconds"]
            finals[name] = model.state_dict()
    same = all(torch.equal(v, finals["new"][k]) for k, v in finals["old"].items())
    old, new = statistics.median(seconds["old"]), statistics.median(seconds["new"])
    print(f"model {args.model}, {args.num_data} x {args.dim}, batch {args.batch_size}, "
          f"{args.epochs} epochs x {args.repeats} runs each, validation {'on' if args.val else 'off'}, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"old loop   : {old:.3f} s/epoch (median of {len(seconds['old'])})")
    print(f"new engine : {new:.3f} s/epoch (median of {len(seconds['new'])})")
    print(f"ratio new/old: {new / old:.3f}  (overhead {100 * (new / old - 1):+.1f}%)")
    old_wall, new_wall = statistics.median(wall["old"]), statistics.median(wall["new"])
    print(f"whole fit call per epoch (setup included): old {old_wall:.3f} s, new {new_wall:.3f} s, "
          f"ratio {new_wall / old_wall:.3f}")  # fmt: skip
    print(f"same parameters after training: {same}")
    return {"old": old, "new": new, "ratio": new / old, "wall_ratio": new_wall / old_wall, "same": same}


if __name__ == "__main__":
    main()
