r"""A comparison repeated over seeds, summarized as mean :math:`\pm` sd: the evidence a ranking needs.

Each seed is one :func:`~pyro_lid.experiments.image_comparison.run_image_comparison` (or, for a text
corpus, :func:`~pyro_lid.experiments.text_comparison.run_text_comparison`) in its own
folder ``<output_dir>/seed<s>`` (resumable: an interrupted study continues where it stopped,
finished methods are not retrained). :func:`summarize_seeds` reads every seed folder and gives,
per method, the mean and sample standard deviation over seeds of:

* ``au``: the fraction of active units (:math:`\mathrm{Var}_x\,\mathbb{E}_q[z_d\mid x] > 0.01`);
* ``informative``: the fraction of units whose own mutual information
  :math:`I_q(x; z_d)` (:func:`~pyro_lid.diagnostics.mutual_information_per_dim`) exceeds
  ``info_floor`` nats (default 0.01). This floor says "this unit tells the likelihood
  something" rather than "its posterior mean moves". 0.01 nats is the information in a
  Gaussian channel with signal-to-noise ratio :math:`e^{0.02} - 1 \approx 0.02`;
* ``min_mi_dim``: the least informative unit's :math:`I_q(x; z_d)`;
* ``kl``, ``mi``, ``ll``, ``cluster_accuracy``, ``clusters_used``;
* ``cost``: seconds per epoch relative to the VAE (for text the LSTM-VAE) *of the same seed* (same
  machine, same run);
* text only: ``nll`` (per sentence), ``ppl``, ``max_batch_kl`` (the largest training mini-batch KL).

A metric a seed did not record is left out (``n`` says how many seeds did); one a seed recorded as NaN (it
diverged) is not: it makes the mean NaN and is counted (``nan``). On one seed the sd is ``None``: no spread
was measured.

:func:`plot_pareto` draws one point per method and seed (informative units against LL), and
:func:`plot_information_per_dimension` the sorted per-dimension information of each method.
"""

from __future__ import annotations

import inspect
import math
import statistics
import warnings
from pathlib import Path

from .image_comparison import _pyplot, image_protocol, load_results, run_image_comparison
from .methods import BUILT, recipe_differences
from .runs import read_results

__all__ = ["BUDGETS", "run_seed_study", "summarize_seeds", "format_seed_table", "plot_pareto",
           "plot_information_per_dimension", "recorded_models", "seed_dirs"]  # fmt: skip

#: Named budgets on Fashion-MNIST: the short one of the first comparison, the full one of the paper.
BUDGETS = {
    "short": dict(num_train=20000, epochs=10, num_samples=100),
    "full": dict(num_train=59000, epochs=30, num_samples=1000),
}


def _study_folders(output_dirs) -> list[Path]:
    """One study folder (a path) or several (a sequence of paths) as a list of paths."""
    return [Path(output_dirs)] if isinstance(output_dirs, (str, Path)) else [Path(d) for d in output_dirs]


def _existing_seed_dirs(output_dir) -> list[Path]:
    out = Path(output_dir)
    found = [d for d in out.glob("seed*") if d.is_dir() and d.name[4:].isdigit() and (d / "results.json").exists()]
    return sorted(found, key=lambda d: int(d.name[4:]))


def seed_dirs(output_dirs) -> list[list[Path]]:
    """The ``seed<s>`` folders that hold results, grouped by seed in seed order: one group per seed, with
    that seed's folder in each study folder that has one. Several study folders of one protocol (methods
    trained side by side, e.g. ``compare --no-language-model`` into another folder) read as one study."""
    folders, groups = _study_folders(output_dirs), {}
    for folder in folders:
        for directory in _existing_seed_dirs(folder):
            groups.setdefault(int(directory.name[4:]), []).append(directory)
    if not groups:
        where = ", ".join(map(str, folders))
        raise FileNotFoundError(f"no seed<s>/results.json under {where}: is it a study's output directory?")
    return [groups[seed] for seed in sorted(groups)]


def recorded_models(output_dirs) -> set[str]:
    """The methods with a row in some ``seed<s>/results.json`` of these study folders (none where there is none)."""
    return {row["model"] for folder in _study_folders(output_dirs) for directory in _existing_seed_dirs(folder)
            for row in read_results(directory)["rows"]}  # fmt: skip


def run_seed_study(output_dir, seeds=(0, 1, 2), models=("vae", "lidvae"), **comparison) -> list[dict]:
    """Run the comparison once per seed (each in ``output_dir/seed<s>``, resumed if interrupted) and
    return :func:`summarize_seeds` of the whole study. ``comparison``: options of
    :func:`~pyro_lid.experiments.image_comparison.run_image_comparison` (not ``seed`` or ``output_dir``)."""
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be distinct integers >= 0, got {seeds}")
    for key in ("seed", "output_dir", "resume"):
        if key in comparison:
            raise ValueError(f"{key!r} is set by the study itself")
    run, protocol_of = _comparison_for(comparison.get("dataset", "fashion-mnist"))
    bound = inspect.signature(run).bind(models=models, seed=0, **comparison)
    bound.apply_defaults()
    protocol = {k: v for k, v in protocol_of(bound.arguments).items() if k != "seed"}
    for directory in _existing_seed_dirs(output_dir):  # refuse before training anything
        saved = {k: v for k, v in load_results([directory])[0].items() if k != "seed"}
        if saved != protocol:
            keys = [*protocol, *(k for k in saved if k not in protocol)]  # a key either side may lack
            changed = {k: (saved.get(k), protocol.get(k)) for k in keys if saved.get(k) != protocol.get(k)}
            raise ValueError(f"{directory} was run under another protocol (saved, asked): {changed}; "
                             "use another output_dir or the same options")  # fmt: skip
    for seed in seeds:
        run(models=models, seed=seed, output_dir=Path(output_dir) / f"seed{seed}", resume=True, **comparison)
    return summarize_seeds(output_dir)


def _comparison_for(dataset):
    """The comparison a data set belongs to, and the function that makes its protocol from its arguments."""
    from .text_comparison import is_text_dataset, run_text_comparison, text_protocol

    if is_text_dataset(dataset):
        return run_text_comparison, text_protocol
    return run_image_comparison, image_protocol


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _mean_sd(values):
    r"""``{"mean", "sd", "n", "nan"}`` of the seeds' values, a ``None`` (not recorded) left out (``None`` where
    no seed recorded one): ``n`` values :math:`v_s`, their mean :math:`\bar v` and sample standard deviation
    :math:`\sqrt{\sum_s (v_s - \bar v)^2 / (n - 1)}`, ``None`` for :math:`n = 1` (no spread measured, not zero
    spread). A NaN (a diverged seed) is not left out: ``nan`` counts such seeds, and ``mean`` and ``sd`` are
    then NaN."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    nan = sum(map(_is_nan, values))
    if len(values) == 1:
        sd = None
    else:
        sd = math.nan if nan else statistics.stdev(values)
    return {"mean": math.nan if nan else statistics.fmean(values), "sd": sd, "n": len(values), "nan": nan}


def _per_seed_values(row, vae_seconds, info_floor):
    per_dim, seconds = row.get("mi_per_dim"), row.get("seconds_per_epoch")  # no seconds: the oracle (no training)
    informative = min_mi = None
    if per_dim is not None and any(map(_is_nan, per_dim)):  # a NaN unit is neither informative nor not: it diverged
        informative = min_mi = math.nan
    elif per_dim is not None:
        informative, min_mi = sum(v > info_floor for v in per_dim) / len(per_dim), min(per_dim)
    return {
        "au": row["au"],
        "informative": informative,
        "min_mi_dim": min_mi,
        "kl": row["kl"],
        "mi": row["mi"],
        "ll": row["ll"],
        "cluster_accuracy": row.get("cluster_accuracy"),
        "clusters_used": row.get("clusters_used"),
        "cost": None if vae_seconds is None or seconds is None else seconds / vae_seconds,
        "nll": row.get("nll"),
        "ppl": row.get("ppl"),
        "max_batch_kl": row.get("max_batch_kl"),
        "code_r2": row.get("code_r2"),
    }


#: The model each seed's costs are relative to: the VAE, or for text the LSTM-VAE.
COST_BASES = ("vae", "lstm_vae")


def _paired_gap(row, baseline_row):
    """Text: NLL minus the baseline's NLL (lower is better); images: LL minus the baseline's LL (higher is better)."""
    key = "nll" if row.get("nll") is not None else "ll"
    return row[key] - baseline_row[key]


def summarize_seeds(output_dirs, info_floor: float = 0.01, paired: str | None = None) -> list[dict]:
    """Per method: ``{"model", "seeds": [...], <metric>: {"mean", "sd", "n", "nan"} or None}`` over the seeds
    (see the module docstring), in the registry's order. ``n`` counts the seeds that recorded the metric
    (``None`` where none did); ``sd`` is ``None`` where ``n`` is 1 (no spread measured); a seed whose value is
    NaN (it diverged) counts in ``nan`` and makes ``mean`` and ``sd`` NaN, so that it cannot pass for an
    unrecorded one. ``output_dirs``: one study folder or several of one protocol (their ``seed<s>`` rows read
    together as :func:`~pyro_lid.experiments.image_comparison.load_results` reads them: a method in two of them
    once where its results agree, refused where they differ). All seeds must share one protocol but the seed.

    ``paired``: a method every seed has; each row then also gets ``gap``, its NLL (text; images: LL) minus that
    method's *in the same seed*, averaged over seeds. Where seeds differ in more than the initialization (the
    synthetic corpus is drawn from the seed), the spread of the NLL mixes the data sets' difficulty into the
    methods' and the paired gap is the comparison that removes it."""
    protocol, per_model = None, {}
    for directories in seed_dirs(output_dirs):
        saved_protocol, rows, _ = load_results(directories)
        shared = {k: v for k, v in saved_protocol.items() if k != "seed"}
        if protocol is not None and shared != protocol:
            where = " and ".join(map(str, directories))
            raise ValueError(f"{where} was run under another protocol: {shared} != {protocol}")
        protocol = shared
        vae_seconds = next((r["seconds_per_epoch"] for b in COST_BASES for r in rows if r["model"] == b), None)
        baseline = None
        if paired is not None:
            baseline = next((r for r in rows if r["model"] == paired), None)
            if baseline is None:
                where = " and ".join(map(str, directories))
                raise ValueError(f"paired with {paired}, but {where} has no row {paired}")
        for row in rows:
            entry = per_model.setdefault(row["model"], {"seeds": [], "values": [], "recipes": {}, "unchecked": []})
            recipe = row.get("recipe")  # rows from before recipes were recorded have none: unchecked
            if recipe is None:
                entry["unchecked"].append(saved_protocol["seed"])
            for seed, earlier in entry["recipes"].items() if recipe is not None else ():  # each pair, not the first
                changed = "; ".join(
                    f"{k}: {a!r} in seed {seed}, {b!r} here" for k, a, b in recipe_differences(earlier, recipe)
                )
                if changed:
                    where = " and ".join(map(str, directories))
                    raise ValueError(
                        f"{row['model']} in {where} was trained with another recipe than in seed {seed} ({changed}): "
                        "its seeds cannot be pooled; rerun them under one recipe"
                    )
            if recipe is not None:
                entry["recipes"][saved_protocol["seed"]] = recipe
            entry["seeds"].append(saved_protocol["seed"])
            values = _per_seed_values(row, vae_seconds, info_floor)
            if baseline is not None:
                values["gap"] = _paired_gap(row, baseline)
            entry["values"].append(values)
    summary = []
    for name, entry in per_model.items():
        if entry["recipes"] and entry["unchecked"]:
            warnings.warn(
                f"{name}: seeds {entry['unchecked']} predate recorded recipes and are pooled with seeds "
                f"{sorted(entry['recipes'])} without a check that one recipe trained them all",
                stacklevel=2,
            )
        unbuilt = sorted(seed for seed, recipe in entry["recipes"].items() if BUILT not in recipe)
        if unbuilt and len(unbuilt) < len(entry["recipes"]):
            warnings.warn(
                f"{name}: seeds {unbuilt} predate recipes that describe the built model and are pooled with seeds "
                f"{sorted(set(entry['recipes']) - set(unbuilt))} without a check of the model classes' defaults",
                stacklevel=2,
            )
        keys = entry["values"][0].keys()
        summary.append({"model": name, "seeds": entry["seeds"],
                        **{k: _mean_sd([v[k] for v in entry["values"]]) for k in keys}})  # fmt: skip
    return summary


#: The seed table's columns after the model and its seed count: (header, summary key, digits).
_UNITS = [("AU", "au", 2), ("informative units", "informative", 2), ("min I(x; z_d)", "min_mi_dim", 3)]
SEED_TABLE_COLUMNS = {
    "image": [*_UNITS, ("KL", "kl", 1), ("MI", "mi", 2), ("LL", "ll", 1), ("cluster acc.", "cluster_accuracy", 3),
              ("cost (x VAE)", "cost", 2)],
    # text: NLL per sentence, perplexity and the largest training mini-batch KL (empty for the language model)
    "text": [*_UNITS, ("KL", "kl", 2), ("MI", "mi", 2), ("NLL", "nll", 2), ("PPL", "ppl", 1),
             ("max batch KL", "max_batch_kl", 1), ("cost (x LSTM-VAE)", "cost", 2)],
}  # fmt: skip


#: Inserted after MI where rows carry the held-out R² of a known code (synthetic text).
CODE_R2_COLUMN = ("code R²", "code_r2", 2)


def format_seed_table(summary: list[dict], paired: str | None = None) -> str:
    """A Markdown table (:data:`SEED_TABLE_COLUMNS`, text columns when the rows have a perplexity, and
    :data:`CODE_R2_COLUMN` when they have a code's recovery, and the per-seed gap to the ``paired`` method
    after the NLL or LL when :func:`summarize_seeds` was given it), every
    cell ``mean ± sd`` (the value alone where it rests on one seed: no spread was measured), the number
    of seeds per method, and ``(n=k)`` in a cell that rests on fewer seeds than its row (a metric some
    runs did not record). A metric that is NaN in some seeds reads ``nan (k of n seeds NaN)``."""

    def cell(stat, digits, seeds):
        if stat is None:
            return ""
        if stat.get("nan"):  # diverged seeds: no mean to show, and not to be mistaken for unrecorded ones
            return f"nan ({stat['nan']} of {stat['n']} seed{'s' * (stat['n'] > 1)} NaN)"
        fewer = f" (n={stat['n']})" if stat["n"] < seeds else ""  # e.g. runs from before a metric was recorded
        spread = f" ± {stat['sd']:.{digits}f}" if stat["n"] > 1 and stat["sd"] is not None else ""
        return f"{stat['mean']:.{digits}f}{spread}{fewer}"

    def after(columns, key, column):
        at = next(i for i, (_, k, _) in enumerate(columns) if k == key) + 1
        return [*columns[:at], column, *columns[at:]]

    text = any(s.get("ppl") is not None for s in summary)
    columns = SEED_TABLE_COLUMNS["text" if text else "image"]
    if any(s.get("code_r2") is not None for s in summary):  # synthetic text: the true code's recovery
        columns = after(columns, "mi", CODE_R2_COLUMN)
    if paired is not None:
        columns = after(columns, "nll" if text else "ll", (f"{'NLL' if text else 'LL'} − {paired} (paired)", "gap", 2))
    lines = ["| model | seeds | " + " | ".join(header for header, _, _ in columns) + " |",
             "|---|---|" + "---|" * len(columns)]  # fmt: skip
    for s in summary:
        n = len(s["seeds"])
        cells = " | ".join(cell(s[key], digits, n) for _, key, digits in columns)
        lines.append(f"| {s['model']} | {n} | {cells} |")
    return "\n".join(lines)


def _rows_by_seed(output_dirs):
    return [(directories, load_results(directories)[1]) for directories in seed_dirs(output_dirs)]


def plot_pareto(output_dirs, path=None, info_floor: float = 0.01):
    """Informative units (or AU where per-dimension information was not recorded) against LL, one
    point per method and seed: the trade-off a construction makes between keeping units and fit.
    ``output_dirs`` as :func:`summarize_seeds`. A point with a NaN coordinate (a diverged seed) cannot be drawn:
    the figure names it below the legend instead of dropping it unsaid."""
    plt = _pyplot(path)
    fig, ax = plt.subplots(figsize=(7.5, 6.5), constrained_layout=True)
    colours, marked, unit, diverged = {}, set(), "image", []
    for directories, rows in _rows_by_seed(output_dirs):
        for row in rows:
            if row.get("ppl") is not None:
                unit = "sentence"
            if row.get("au") is None:  # the language model: no latent, no units to count
                continue
            colour = colours.setdefault(row["model"], f"C{len(colours) % 10}")
            values = _per_seed_values(row, None, info_floor)
            recorded = values["informative"] is not None
            y = values["informative"] if recorded else values["au"]
            if _is_nan(row["ll"]) or _is_nan(y):
                diverged.append(f"{row['model']} {directories[0].name}")
                continue
            label = row["model"] if row["model"] not in marked else None
            marked.add(row["model"])
            ax.scatter(row["ll"], y, label=label, marker="o" if "lid" in row["model"] else "s", edgecolors=colour,
                       facecolors=colour if recorded else "none")  # fmt: skip
    ax.set_xlabel(f"test log-likelihood (nats per {unit}; right is better)")
    ax.set_ylabel(f"fraction of units with I(x; z_d) > {info_floor} nats\n(hollow: active units, where not recorded)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("keeping units against fitting the data (one point per seed)")
    # below the axes, in columns: long variant names (lidsvae:metric=...:margin=...) do not squeeze the plot
    legend = ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    if diverged:
        legend.set_title(f"not drawn, NaN: {', '.join(diverged)}", prop={"size": "small"})
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_information_per_dimension(output_dirs, path=None):
    """Each method's per-dimension :math:`I_q(x; z_d)`, sorted, averaged over seeds (log scale):
    a collapsed unit shows as a drop towards zero at the right. ``output_dirs`` as :func:`summarize_seeds`. A seed
    with a NaN unit (it diverged) is left out of the average, and its method's label says how many were."""
    plt = _pyplot(path)
    curves, diverged = {}, {}
    for _, rows in _rows_by_seed(output_dirs):
        for row in rows:
            if row.get("mi_per_dim") is not None:
                runs = curves.setdefault(row["model"], [])
                if any(map(_is_nan, row["mi_per_dim"])):
                    diverged[row["model"]] = diverged.get(row["model"], 0) + 1
                else:
                    runs.append(sorted(row["mi_per_dim"], reverse=True))
    if not curves:
        where = ", ".join(map(str, _study_folders(output_dirs)))
        raise ValueError(f"no per-dimension information recorded under {where}")
    fig, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
    for i, (name, runs) in enumerate(curves.items()):
        mean = [statistics.fmean(values) for values in zip(*runs)]
        nan = f", {diverged[name]} NaN not drawn" if name in diverged else ""
        ax.plot(range(1, len(mean) + 1), [max(v, 1e-4) for v in mean], label=f"{name} ({len(runs)} seeds{nan})",
                color=f"C{i % 10}", ls="-" if "lid" in name else "--")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("latent unit, most to least informative")
    ax.set_ylabel("I(x; z_d), nats (floor 1e-4 drawn)")
    ax.set_title("information per latent unit")
    ax.legend(fontsize="small")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
