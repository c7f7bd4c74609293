"""Command line: ``python -m pyro_lid <command>`` (also installed as ``pyro-lid``)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _demo(args) -> int:
    from .experiments import run_brenier_demo

    r = run_brenier_demo(steps=args.steps, seed=args.seed, plot=args.plot, progress=False if args.no_progress else None)
    print("Brenier flow on the pinwheel density (held-out mean log-likelihood, nats):")
    print(f"  before training      {r['ll_before']:8.3f}")
    print(f"  after {args.steps:5d} SVI steps {r['ll_after']:8.3f}")
    print(f"  best Gaussian        {r['ll_gaussian']:8.3f}")
    print(f"inverse round trip, max |grad psi(grad psi^-1(y)) - y|: {r['inverse_max_residual']:.2e}")
    print(f"log det Jacobian, max error against autograd:          {r['logdet_max_error']:.2e}")
    print(f"smallest Hessian eigenvalue {r['min_hessian_eigenvalue']:.3f} >= alpha floor {r['alpha_floor']}")
    if args.plot:
        print(f"figure written to {args.plot}")
    ok = r["ll_after"] > r["ll_gaussian"] and r["min_hessian_eigenvalue"] >= r["alpha_floor"]
    if not ok:
        print("demo FAILED: the flow did not beat the Gaussian or lost strong convexity", file=sys.stderr)
    return 0 if ok else 1


def _classical(args) -> int:
    import time

    from .experiments.classical_collapse import format_table, run_classical_collapse

    start = time.perf_counter()
    rows = run_classical_collapse(args.output_dir, smoke_test=args.smoke_test, seed=args.seed)
    print(format_table(rows))
    print(f"\nwrote summary.md, summary.json and figures to {args.output_dir} in {time.perf_counter() - start:.0f} s")
    return 0


def _compare(args) -> int:
    import time

    from .experiments.image_comparison import format_results, run_image_comparison

    sizes = {}
    if args.smoke_test:
        sizes = dict(num_train=300, num_test=200, epochs=2, latent_dim=4, hidden=32, icnn_hidden=32, num_samples=5)
    options = dict(
        num_train=args.num_train,
        num_test=args.num_test,
        epochs=args.epochs,
        latent_dim=args.latent_dim,
        hidden=args.hidden,
        icnn_hidden=args.icnn_hidden,
        num_samples=args.num_samples,
    )
    options.update(sizes)
    start = time.perf_counter()
    rows = run_image_comparison(
        args.dataset,
        args.root,
        "all" if args.models == ["all"] else args.models,
        seed=args.seed,
        output_dir=args.output_dir,
        lr=args.lr,
        progress=None,
        resume=args.resume,
        device=args.device,
        **options,
    )
    print(format_results(rows))
    print(f"\n{args.dataset}: {options}; total {time.perf_counter() - start:.0f} s")
    return 0


def _report(args) -> int:
    from pathlib import Path

    from .experiments.image_comparison import format_results, load_results, write_figures

    protocol, rows, histories = load_results(args.dirs)
    print(format_results(rows))
    print(f"\nprotocol: {protocol}")
    if args.figures:
        Path(args.figures).mkdir(parents=True, exist_ok=True)
        write_figures(rows, histories, args.figures)
        print(f"figures in {args.figures}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-lid", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit a 2-D Brenier flow to the pinwheel density with SVI")
    demo.add_argument("--steps", type=int, default=400, help="SVI steps (default 400)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--plot", default=None, help="write a PNG of data, density and samples here")
    demo.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar (it is shown only on a terminal anyway)"
    )
    demo.set_defaults(func=_demo)
    classical = sub.add_parser(
        "classical", help="PPCA and Gaussian mixtures under NUTS and VI: collapse as non-identifiability"
    )
    classical.add_argument("--output-dir", default="runs/classical", help="where tables and figures go")
    classical.add_argument("--smoke-test", action="store_true", help="tiny budgets: runs in well under a minute")
    classical.add_argument("--seed", type=int, default=0)
    classical.set_defaults(func=_classical)
    compare = sub.add_parser("compare", help="VAEs and LID models side by side on images (any named methods)")
    compare.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist", "synthetic"])
    compare.add_argument("--root", default=None, help="folder with the IDX files (default: system-wide copies)")
    compare.add_argument(
        "--models",
        nargs="+",
        default=["vae", "beta_vae", "gmvae", "lidgmvae", "lidvae"],
        help="names from pyro_lid.experiments.methods.METHODS, or 'all'",
    )
    compare.add_argument("--num-train", type=int, default=20000)
    compare.add_argument("--num-test", type=int, default=None, help="default: the whole test split")
    compare.add_argument("--epochs", type=int, default=10)
    compare.add_argument("--latent-dim", type=int, default=64)
    compare.add_argument("--hidden", type=int, default=512)
    compare.add_argument("--icnn-hidden", type=int, default=512)
    compare.add_argument("--num-samples", type=int, default=100, help="importance samples for the LL")
    compare.add_argument("--lr", type=float, default=1e-3)
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--output-dir", default=None, help="write results.json and per-model histories here")
    compare.add_argument("--device", default=None, help="train and evaluate here, e.g. cuda (default: cpu)")
    compare.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in --output-dir (same options)"
    )
    compare.add_argument("--smoke-test", action="store_true", help="tiny sizes: seconds")
    compare.set_defaults(func=_compare)

    report = sub.add_parser("report", help="one table and figures from comparison output directories")
    report.add_argument("dirs", nargs="+", help="output directories of `compare` (one protocol)")
    report.add_argument("--figures", default=None, help="write comparison.png and training_curves.png here")
    report.set_defaults(func=_report)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:  # bad options or missing data: say which, no traceback
        parser.exit(2, f"pyro-lid {args.command}: error: {error}\n")
