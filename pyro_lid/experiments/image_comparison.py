"""Side-by-side comparison of VAEs and latent-identifiable VAEs on binarized images, under one protocol.

Protocol: train on the first ``num_train`` images of the training split with dynamic
binarization; validate each epoch on the next 1000 (binarized once, with ``seed + 1``); evaluate on
the test split binarized once with the run's ``seed`` (so each seed of a study draws its own test binarization)
with :func:`pyro_lid.diagnostics.collapse_report`
(AU, KL, MI, importance-weighted LL with ``num_samples`` samples, cluster accuracy).
Cost is reported beside quality: training seconds and gradient evaluations per epoch
(from the training history, validation excluded), and seconds per epoch relative to the
plain VAE when it is in the run. Seconds per epoch are the **median over epochs 2 to E**
(:func:`typical_epoch_seconds`): the first epoch pays one-time warm-up (thread pools,
allocator, lazy initialization) that would otherwise land on whichever method runs first.

Every option, the device and the output directory are checked before any data are loaded
or any model is trained.

With ``output_dir`` every method checkpoints each epoch and every finished method is
written to ``results.json`` at once (after its ``history_<method>.json``); every file is
replaced whole or not at all (:mod:`pyro_lid.infer.checkpoints`). ``resume=True`` continues
an interrupted run from there (finished methods are not retrained, a half-trained one goes
on from its last epoch), provided the protocol is the same: ``results.json`` records it, and
each checkpoint records its method's training configuration and data, which
:func:`~pyro_lid.infer.fit` checks. A non-empty ``output_dir`` is refused unless the run
resumes it (``resume=True``) or starts again there (``overwrite=True``, which deletes the
earlier run's ``results.json``, ``history_*.json``, ``checkpoint_*.pt[.validation]`` and ``evaluation_*.pt`` and nothing
else).
"""

from __future__ import annotations

import time
from pathlib import Path

import pyro
import torch

from .._checks import resolve_device
from ..data import binarize, load_images, synthetic_latent_data
from ..data.images import DATASETS as IMAGE_FILES
from ..data.images import image_file, read_idx
from ..diagnostics import collapse_report
from ..infer import fit
from ..infer.engine.stop_signals import DEFAULT_STOP_SIGNALS, resolve_stop_signals
from ..models.savae import checkpoint_refinement
from .methods import METHODS, file_stem, resolve_method
from .runs import (
    ComparisonRun,
    as_list,
    check_refine_checkpoint,
    check_run_options,
    cost_columns,
    read_json,
    read_results,
    typical_epoch_seconds,
)

__all__ = [
    "DEFAULT_MODELS",
    "run_image_comparison",
    "format_results",
    "plot_results",
    "plot_histories",
    "load_results",
    "typical_epoch_seconds",
    "PROTOCOL_KEYS",
    "image_protocol",
    "IMAGE_DATASETS",
]

#: The options that define a comparison's protocol: a resumed run, or a merged report, must share them.
PROTOCOL_KEYS = ("dataset", "num_train", "num_test", "epochs", "latent_dim", "hidden", "icnn_hidden",
                 "num_components", "batch_size", "lr", "num_samples", "seed")  # fmt: skip


#: The image data sets a comparison takes: the two on disk (:data:`pyro_lid.data.images.DATASETS`) and the
#: synthetic one it draws itself.
IMAGE_DATASETS = (*IMAGE_FILES, "synthetic")


def image_protocol(arguments: dict) -> dict:
    """The protocol an image comparison with these ``arguments`` records: its :data:`PROTOCOL_KEYS`."""
    return {key: arguments[key] for key in PROTOCOL_KEYS}


#: The comparison of the LIDVAE-family issue; any name of :data:`~pyro_lid.experiments.methods.METHODS` works.
DEFAULT_MODELS = ("vae", "beta_vae", "gmvae", "lidgmvae", "lidvae")


def _data(dataset, root, num_train, num_test, seed):
    if dataset == "synthetic":
        gen = torch.Generator().manual_seed(seed)
        x, _ = synthetic_latent_data(num_train + 1000 + (num_test or 1000), 4, 64, "bernoulli", 1.0, generator=gen)
        train, rest = x[:num_train], x[num_train:]
        return train, rest[:1000], rest[1000:], None  # no class labels
    images, _ = load_images(dataset, "train", root)
    test, test_labels = load_images(dataset, "test", root)
    if images.shape[1] != test.shape[1]:  # else every method trains, and the first evaluation fails
        files = {split: image_file(dataset, split, root) for split in ("train", "test")}
        size = {split: "x".join(map(str, read_idx(path).shape[1:])) for split, path in files.items()}
        raise ValueError(f"{dataset}: the test images in {files['test']} are {size['test']}, the training images in "
                         f"{files['train']} {size['train']}: a comparison needs one image size")  # fmt: skip
    if num_train + 1000 > images.shape[0]:
        raise ValueError(f"num_train + 1000 validation images exceed the {images.shape[0]} training images")
    val = binarize(images[num_train : num_train + 1000], seed + 1)
    if num_test is not None and num_test > test.shape[0]:
        raise ValueError(f"num_test = {num_test} exceeds the {test.shape[0]} test images")
    test, test_labels = test[:num_test], test_labels[:num_test]
    return images[:num_train], val, binarize(test, seed), test_labels


def _parallel(devices, num_nodes, distributed, precision) -> dict:
    """``fit``'s scale-out options, only those that differ from one process (older ``fit`` wrappers keep working)."""
    options = {"devices": devices, "num_nodes": num_nodes, "distributed": distributed, "precision": precision}
    return {k: v for k, v in options.items() if v not in (None, 1)}


def run_image_comparison(
    dataset: str = "fashion-mnist",
    root: str | None = None,
    models=DEFAULT_MODELS,
    num_train: int = 20000,
    num_test: int | None = None,
    epochs: int = 10,
    latent_dim: int = 64,
    hidden: int = 512,
    icnn_hidden: int = 512,
    num_components: int = 10,
    batch_size: int = 100,
    lr: float = 1e-3,
    num_samples: int = 100,
    seed: int = 0,
    output_dir: str | Path | None = None,
    progress: bool | None = None,
    resume: bool = False,
    device: str | None = None,
    overwrite: bool = False,
    devices: int = 1,
    num_nodes: int = 1,
    distributed: str | None = None,
    precision: str | None = None,
    checkpoint_minutes: float | None = 10.0,
    stop_signals=DEFAULT_STOP_SIGNALS,
    refine_checkpoint: bool = False,
) -> list[dict]:
    """Train each named method of :data:`~pyro_lid.experiments.methods.METHODS`; one result row per method.

    ``device`` (e.g. ``"cuda"``) is where models train and are evaluated; the data stay on the CPU
    and travel in mini-batches, the test set in one piece. ``devices``, ``num_nodes``, ``distributed``
    and ``precision`` go to :func:`~pyro_lid.infer.fit` (data-parallel training; evaluation stays in
    this process).

    :param root: the folder of the data set's IDX files (see :func:`~pyro_lid.data.load_images`); refused for
        ``"synthetic"``, which draws its images. Training and test images of different sizes are refused
        before any training.
    :param resume: continue the run in ``output_dir`` (see the module's description).
    :param overwrite: start again in a non-empty ``output_dir`` (refused without one): delete its ``results.json``,
        ``history_*.json``, ``checkpoint_*.pt[.validation]`` and ``evaluation_*.pt`` first. Without it or
        ``resume``, a non-empty ``output_dir`` is refused before any data are loaded.
    :param checkpoint_minutes: also write each method's checkpoint within an epoch once this many minutes
        have passed since the last write (``None`` or 0: after every epoch only); ``resume`` continues from it.
    :param stop_signals: the signals that stop a method's training after a finished step, with its checkpoint
        (:func:`~pyro_lid.infer.fit`'s; ``--resume`` goes on from it): the run then raises
        :class:`~pyro_lid.infer.TrainingInterrupted` instead of going on to the next method.
    :param refine_checkpoint: less memory for SA-VAE, the same losses and gradients, as for
        :func:`~pyro_lid.experiments.text_comparison.run_text_comparison`.
    """
    models = [n for n, m in METHODS.items() if not m.is_text] if models == "all" else list(models)
    methods = {name: resolve_method(name) for name in models}  # a bad name or option fails before any data load
    text = [name for name, method in methods.items() if method.is_text]
    if text:
        raise ValueError(f"{', '.join(text)}: text models; compare them on text (--dataset ptb, yahoo, synthetic-text)")
    if not models:
        raise ValueError("no models to compare")
    sizes = dict(
        num_train=num_train, epochs=epochs, latent_dim=latent_dim, hidden=hidden, icnn_hidden=icnn_hidden,
        num_components=num_components, batch_size=batch_size, num_samples=num_samples,
    )  # fmt: skip
    if num_test is not None:
        sizes["num_test"] = num_test
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if dataset == "synthetic" and root is not None:
        raise ValueError(f"root (--root) is the folder of an image data set's files; {dataset} draws its images, "
                         f"got root={root!r}")  # fmt: skip
    check_run_options(output_dir, resume, overwrite, checkpoint_minutes)
    if refine_checkpoint:
        check_refine_checkpoint(methods)
    stop_signals = resolve_stop_signals(stop_signals)  # a signal no process can catch is refused before any data
    device = resolve_device(device)
    run = ComparisonRun(output_dir, image_protocol(locals()), resume, overwrite)
    train, val, test, test_labels = _data(dataset, root, num_train, num_test, seed)
    run.use_data(train=train, valid=val, test=test)
    data_dim = train.shape[1]

    def built(method):  # the model as trained below (the seed is set again before each one trains)
        return method.build(data_dim, latent_dim, hidden, icnn_hidden, num_components, train_data=train)

    recipes = {}
    for name in models:  # a model that cannot be built on these data fails before any training, by name
        try:
            recipes[name] = methods[name].recipe(epochs, model=built(methods[name]))
        except ValueError as error:
            raise ValueError(f"{name} cannot be built on {dataset}: {error}") from error
    run.use_recipes(recipes)
    for name in models:
        if run.finished(name) is not None:
            continue
        method = methods[name]
        pyro.set_rng_seed(seed)
        model = built(method)
        if refine_checkpoint:
            checkpoint_refinement(model)
        if device is not None:
            model.to(device)
        history = fit(
            model,
            train,
            val,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            dynamic_binarization=dataset != "synthetic",
            progress=progress,
            **run.checkpoint_options(name, checkpoint_minutes),
            stop_signals=stop_signals,
            resume=resume,
            **_parallel(devices, num_nodes, distributed, precision),
            **method.fit_options(epochs),
        )
        started = time.perf_counter()
        at = next(model.parameters()).device
        labels = test_labels.to(at) if test_labels is not None else None
        evaluation = run.evaluation(name, model, test.to(at), num_samples=num_samples)  # resumes a stopped one
        report = collapse_report(model, test.to(at), num_samples=num_samples, labels=labels, progress=progress,
                                 checkpoint=evaluation)  # fmt: skip
        run.record(
            {
                "model": name,
                "au": report["au_fraction"],
                "kl": report["kl"],
                "mi": report["mi"],
                "mi_minibatch": report["mi_minibatch"],
                "ll": report["ll"],
                "cluster_accuracy": report.get("cluster_accuracy"),
                "clusters_used": report.get("clusters_used"),
                "mi_per_dim": as_list(report["mi_per_dim"]),
                "kl_per_dim": as_list(report["kl_per_dim"]),
                **cost_columns(history),
                "eval_seconds": time.perf_counter() - started,
                "final_val_loss": history.records[-1]["val_loss"],
            },
            history.records,
        )
        evaluation.remove()
    if run.writes and run.rows:
        with run.lock():  # the rows of every run in the folder, drawn by one at a time
            write_figures(*load_results([run.out])[1:], run.out)
    return run.rows


#: A row's wall-clock measurements: a re-run of the same seed repeats everything else but these.
TIMING_KEYS = ("train_seconds", "seconds_per_epoch", "tokens_per_second", "eval_seconds")


def _results_of(row: dict) -> dict:
    """What must agree between two copies of a row: all but the timings and the recipe, which rows from before
    recipes were recorded lack (two recorded recipes that differ are refused by the study)."""
    return {k: v for k, v in row.items() if k not in TIMING_KEYS and k != "recipe"}


def load_results(output_dirs) -> tuple[dict, list[dict], dict]:
    """Protocol, rows and per-method histories of one or more output directories of one protocol
    (e.g. methods run in parallel, one directory each). A method found in two of them reads once, with the
    first directory's row, where its results agree (a row copied to resume, or a deterministic re-run such as
    a text study's language model: only the wall-clock :data:`TIMING_KEYS` may differ); it is refused where
    they differ."""
    protocol, rows, histories, found_in = None, [], {}, {}
    for directory in map(Path, output_dirs):
        saved = read_results(directory)
        if saved is None:
            raise FileNotFoundError(f"{directory / 'results.json'} not found: is {directory} a comparison's output?")
        if protocol is not None and saved["protocol"] != protocol:
            raise ValueError(f"{directory} was run under another protocol: {saved['protocol']} != {protocol}")
        protocol = saved["protocol"]
        for row in saved["rows"]:
            if row["model"] in found_in:
                first, earlier = found_in[row["model"]]
                if _results_of(row) == _results_of(earlier):
                    continue
                raise ValueError(f"{row['model']} has different results in {first} and {directory}: "
                                 "read one of them")  # fmt: skip
            found_in[row["model"]] = directory, row
            rows.append(row)
            history = directory / f"history_{file_stem(row['model'])}.json"
            if history.exists():
                histories[row["model"]] = read_json(history)
    order = {name: i for i, name in enumerate(METHODS)}
    rows.sort(key=lambda r: order.get(r["model"], len(order)))
    return protocol, rows, {r["model"]: histories[r["model"]] for r in rows if r["model"] in histories}


def write_figures(rows: list[dict], histories: dict, out, unit: str = "image") -> None:
    """``comparison.png`` (:func:`plot_results`; log-likelihood in nats per ``unit``) and
    ``training_curves.png`` (:func:`plot_histories`) in ``out``, for the rows with a latent (a text
    comparison's language model has no active units or posterior to draw)."""
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("au") is not None]
    histories = {r["model"]: histories[r["model"]] for r in rows if r["model"] in histories}
    if rows:
        plt.close(plot_results(rows, Path(out) / "comparison.png", unit=unit))
    if histories:
        plt.close(plot_histories(histories, Path(out) / "training_curves.png"))


def format_results(rows: list[dict]) -> str:
    """A Markdown table: AU (fraction), KL, MI (aggregate and mini-batch), LL, cluster accuracy, and cost:
    seconds per epoch (median, warm-up epoch excluded; relative to ``vae`` when present), gradient
    evaluations per epoch, evaluation seconds."""
    vae = next((r["seconds_per_epoch"] for r in rows if r["model"] == "vae"), None)
    head = (
        "| model | AU | KL | MI (aggregate) | MI (mini-batch) | LL | cluster acc. | s/epoch (median) | x VAE "
        "| grad evals/epoch | eval s |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = "" if r["cluster_accuracy"] is None else f"{r['cluster_accuracy']:.3f}"
        relative = "" if vae is None else f"{r['seconds_per_epoch'] / vae:.1f}"
        lines.append(
            f"| {r['model']} | {r['au']:.2f} | {r['kl']:.2f} | {r['mi']:.2f} | {r['mi_minibatch']:.2f} | "
            f"{r['ll']:.1f} | {acc} | {r['seconds_per_epoch']:.1f} | {relative} | "
            f"{r['grad_evals_per_epoch']:.0f} | {r['eval_seconds']:.0f} |"
        )
    return "\n".join(lines)


def _pyplot(path):
    """``matplotlib.pyplot``, on the file-only Agg backend when the figure goes to ``path``."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_results(rows: list[dict], path=None, unit: str = "image"):
    """Two panels: active units per method, and log-likelihood (nats per ``unit``: image, sentence) against
    training cost (seconds per epoch).

    Methods left of and above others are cheaper and fit better; the marker size grows with
    the fraction of active units. Returns the figure; with ``path`` it is also saved there.
    """
    plt = _pyplot(path)
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    if not rows:
        raise ValueError("plot_results needs at least one result row")
    names = [r["model"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    left.barh(names, [r["au"] for r in rows], color=["C3" if "lid" in n else "C0" for n in names])
    left.invert_yaxis()
    left.set_xlim(0, 1)
    left.set_xlabel("fraction of active units")
    left.set_title("collapse (0 = all dimensions collapsed)")
    for r in rows:
        color = "C3" if "lid" in r["model"] else "C0"
        right.scatter(r["seconds_per_epoch"], r["ll"], s=30 + 170 * r["au"], color=color, alpha=0.7)
        right.annotate(r["model"], (r["seconds_per_epoch"], r["ll"]), fontsize=8, xytext=(4, 3),
                       textcoords="offset points")  # fmt: skip
    costs = [r["seconds_per_epoch"] for r in rows]
    log_scale = max(costs) > 10 * min(costs)  # a log axis only where costs span a decade
    if log_scale:
        right.set_xscale("log")
        right.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        right.xaxis.set_major_formatter(ScalarFormatter())
        right.xaxis.set_minor_formatter(NullFormatter())
    right.set_xlabel("training seconds per epoch" + (" (log scale)" if log_scale else ""))
    right.set_ylabel(f"test log-likelihood (nats per {unit})")
    right.set_title("quality against cost (marker size: active units)")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_histories(histories: dict, path=None):
    """Validation loss, active units and mutual information per epoch, one line per method."""
    plt = _pyplot(path)
    keys = [k for k in ("val_loss", "au", "mi") if any(k in r for h in histories.values() for r in h)]
    if not keys:
        raise ValueError("plot_histories needs histories with validation records (val_loss, au, mi)")
    titles = {"val_loss": "validation loss (each method's objective)", "au": "active units", "mi": "mutual information"}
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), constrained_layout=True, squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, (name, records) in enumerate(histories.items()):
            epochs = [r["epoch"] for r in records if key in r]
            color = f"C{i}" if len(histories) <= 10 else plt.cm.tab20(i % 20)  # no two methods share a colour
            ax.plot(epochs, [r[key] for r in records if key in r], label=name, color=color,
                    ls="-" if "lid" in name else "--")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_title(titles[key])
    if "val_loss" in keys:  # the first epochs dwarf the rest
        ax0 = axes[0][keys.index("val_loss")]
        finals = [r["val_loss"] for h in histories.values() for r in h[len(h) // 3 :] if "val_loss" in r]
        ax0.set_ylim(min(finals) - 2, max(finals) + 2)
    axes[0][-1].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
