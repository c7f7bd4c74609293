"""Brenier-map speed, measured in one run, printed as ratios.

1. Training step (forward + backward to the parameters) of the map y = grad psi(x):
   the closed-form gradient of pyro_lid's ICNN against the autograd implementation of
   the same network (``torch.autograd.grad(psi(x).sum(), x, create_graph=True)`` and
   a second backward pass through it).
2. Inverse (Newton, no_grad; and with the final differentiable Newton step) against forward.
3. Exact log|det J| (Hessian + Cholesky) against forward.

Usage::

    python examples/benchmarks/brenier_speed.py            # batch 100, width 512, n = 64 and 784
    python examples/benchmarks/brenier_speed.py --quick    # small sizes, for a smoke run
    python examples/benchmarks/brenier_speed.py --device cuda --batch 1000   # on a GPU (timings synchronized)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pyro_lid.distributions.transforms import Brenier


def _synchronize():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timeit(fn, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds (GPU work finished before each clock reading)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _synchronize()
        start = time.perf_counter()
        fn()
        _synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def autograd_map(potential, x):
    """The same Brenier map by double backpropagation: the oracle implementation."""
    x = x.detach().requires_grad_(True)
    return torch.autograd.grad(potential(x).sum(), x, create_graph=True)[0]


def measure(n: int, width: int, batch: int, repeats: int, device: str = "cpu") -> dict:
    torch.manual_seed(0)
    transform = Brenier(n, [width, width]).to(device)
    potential = transform.potential
    x = torch.randn(batch, n, device=device)
    target = torch.randn(batch, n, device=device)

    def train_step(map_fn):
        def step():
            potential.zero_grad(set_to_none=True)
            ((map_fn(x) - target) ** 2).mean().backward()

        return step

    closed = timeit(train_step(potential.gradient), repeats)
    double_backprop = timeit(train_step(lambda v: autograd_map(potential, v)), repeats)
    with torch.no_grad():
        y = potential.gradient(x)
        forward = timeit(lambda: potential.gradient(x), repeats)
        inverse = timeit(lambda: transform._inverse(y), repeats)
        logdet = timeit(lambda: transform.log_abs_det_jacobian(x, None), max(3, repeats // 3), warmup=1)
    inverse_grad = timeit(lambda: transform._inverse(y), repeats)
    with torch.no_grad():
        error = (potential.gradient(transform._inverse(y)) - y).abs().max().item()
    return {
        "n": n,
        "closed": closed,
        "double_backprop": double_backprop,
        "forward": forward,
        "inverse": inverse,
        "inverse_grad": inverse_grad,
        "logdet": logdet,
        "inverse_residual": error,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 784])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device on this machine")
    if args.quick:
        args.batch, args.width, args.dims, args.repeats = 20, 32, [8, 40], 3
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    print(
        f"torch {torch.__version__}, {where}, float32, batch {args.batch}, "
        f"ICNN width {args.width} x 2 layers; median of {args.repeats} runs"
    )
    header = (
        f"{'n':>5} | {'train step closed':>17} | {'autograd (2x bp)':>16} | {'speed-up':>8} | {'forward':>9} | "
        f"{'inverse':>9} | {'inv/fwd':>7} | {'inv+grad/fwd':>12} | {'log det':>9} | {'logdet/fwd':>10} | residual"
    )
    print(header)
    print("-" * len(header))
    for n in args.dims:
        r = measure(n, args.width, args.batch, args.repeats, args.device)
        print(
            f"{n:>5} | {1e3 * r['closed']:>14.2f} ms | {1e3 * r['double_backprop']:>13.2f} ms | "
            f"{r['double_backprop'] / r['closed']:>7.2f}x | {1e3 * r['forward']:>6.2f} ms | "
            f"{1e3 * r['inverse']:>6.2f} ms | {r['inverse'] / r['forward']:>6.1f}x | "
            f"{r['inverse_grad'] / r['forward']:>11.1f}x | {1e3 * r['logdet']:>6.1f} ms | "
            f"{r['logdet'] / r['forward']:>9.1f}x | {r['inverse_residual']:.1e}"
        )


if __name__ == "__main__":
    main()
