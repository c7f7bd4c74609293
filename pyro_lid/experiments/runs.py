"""The files of a comparison run, shared by the image and the text comparisons.

A run writes into its ``output_dir``: ``checkpoint_<method>.pt`` after every epoch (by
:func:`~pyro_lid.infer.fit`), then, when a method has finished, ``history_<method>.json`` and
``results.json`` (``{"protocol": ..., "rows": [...]}``), in that order, so that a row in
``results.json`` is a finished method whose history is in place. Every file is replaced whole
or not at all (:func:`~pyro_lid.infer.checkpoints.atomic_write_text`).

* A non-empty ``output_dir`` is refused unless the run resumes it (``resume=True``) or starts
  again there (``overwrite=True``, which deletes ``results.json``, ``history_*.json``,
  ``checkpoint_*.pt[.validation]`` and ``evaluation_*.pt`` and nothing else).
* ``resume=True`` takes the rows of finished methods from ``results.json`` when its protocol
  (the options that define the comparison) is this run's; another protocol is refused. So are other
  data: ``results.json`` also records a fingerprint of each split (:func:`split_fingerprints`), because
  the options do not pin the files down (``--root``, ``PYRO_LID_YAHOO``, a corpus path). A file from
  before the fingerprints is resumed with a warning that says its rows are unchecked.
* Several runs may record their methods in one ``output_dir`` side by side (``compare --models a`` and
  ``compare --models b`` at once): each adds its rows to ``results.json`` as it is then, under a file lock
  (``.results.json.lock``, kept by ``overwrite``), so that none drops the rows another recorded since it began.
  The lock holds between processes of one machine (on NFS without locking, not between machines).
* Only the first process of a distributed launch (``RANK`` / ``SLURM_PROCID`` 0) claims the
  directory and writes (:func:`writes_results`).

Cost columns come from the training history: seconds per epoch are the **median over epochs
2 to E** (:func:`typical_epoch_seconds`), the first epoch's one-time warm-up left out.
"""

from __future__ import annotations

import json
import os
import statistics
import warnings
from pathlib import Path

from filelock import FileLock

from .._checks import is_positive_number, writable_dir
from ..diagnostics.resumable import EvaluationCheckpoint, evaluation_fingerprint
from ..infer.checkpoints import atomic_write_text, data_fingerprint
from ..infer.engine.callbacks.checkpoint import validation_file
from .methods import BUILT, file_stem, recipe_differences

__all__ = [
    "ComparisonRun",
    "RUN_FILES",
    "as_list",
    "claim_output_dir",
    "cost_columns",
    "check_same_data",
    "finished_rows",
    "other_data",
    "read_json",
    "read_results",
    "split_fingerprints",
    "typical_epoch_seconds",
    "writes_results",
]

#: The lock runs that record into one output directory take (:meth:`ComparisonRun.record`). It stays: deleting it
#: while a run holds it would let another take a new one. A folder that holds only it counts as empty.
RESULTS_LOCK = ".results.json.lock"

#: The files of a run in its output directory: what ``overwrite=True`` deletes.
RUN_FILES = ("results.json", "history_*.json", "checkpoint_*.pt", "checkpoint_*.pt.validation", "evaluation_*.pt")


def writes_results() -> bool:
    """Whether this process writes the comparison's files: every process of a ``torchrun`` or SLURM launch
    (``--distributed ddp``) trains its share and evaluates, but only the first (``RANK`` /
    ``SLURM_PROCID`` 0) claims the output directory and writes results, histories and figures."""
    return all(os.environ.get(variable, "0") == "0" for variable in ("RANK", "SLURM_PROCID"))


def as_list(values):
    """A per-dimension tensor as a plain list for JSON (``None`` stays ``None``)."""
    return None if values is None else [float(v) for v in values]


def typical_epoch_seconds(seconds) -> float:
    """The median of the epochs' training seconds, the first epoch (warm-up) left out when there are others."""
    if not seconds:
        raise ValueError("no epochs to time")
    return statistics.median(seconds[1:] or seconds)


def cost_columns(history) -> dict:
    """``train_seconds``, ``seconds_per_epoch`` (:func:`typical_epoch_seconds`) and ``grad_evals_per_epoch``
    of a :class:`~pyro_lid.infer.History`."""
    return {
        "train_seconds": sum(history["seconds"]),
        "seconds_per_epoch": typical_epoch_seconds(history["seconds"]),
        "grad_evals_per_epoch": sum(history["grad_evals"]) / len(history),
    }


def read_json(path: Path):
    """The JSON value in a run's file, or a ``ValueError`` that names the file: the library writes its files
    atomically, so one that does not parse was damaged or edited by hand after it was written."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        consequence = (
            "without it, compare --resume evaluates the trained methods again from their checkpoints, without training"
            if Path(path).name == "results.json"
            else "without it, that method's training curves drop out of the figures"
        )
        raise ValueError(
            f"{path} is not valid JSON ({error}); it was damaged or edited after pyro-lid wrote it: restore it, or "
            f"move it away ({consequence})"
        ) from None


def read_results(directory: Path) -> dict | None:
    """``{"protocol": ..., "rows": [...]}`` from ``directory/results.json``, or ``None`` when there is none."""
    path = Path(directory) / "results.json"
    if not path.exists():
        return None
    saved = read_json(path)
    if not isinstance(saved, dict) or not {"protocol", "rows"} <= saved.keys():
        raise ValueError(f"{path} is not a comparison's results file (it needs 'protocol' and 'rows')")
    return saved


def claim_output_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless resuming it; with ``overwrite``, delete the earlier run's files first."""
    if resume:
        return
    if overwrite:
        for pattern in RUN_FILES:
            for path in out.glob(pattern):
                if path.is_file():
                    path.unlink()
        return
    entries = sorted(p.name for p in out.iterdir() if p.name != RESULTS_LOCK)
    if entries:
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
        raise ValueError(
            f"the output directory {out} is not empty ({shown}); pass --resume (resume=True) to continue the run "
            "there, or --overwrite (overwrite=True) to start again, which deletes its results.json, history_*.json, "
            "checkpoint_*.pt[.validation] and evaluation_*.pt"
        )


def split_fingerprints(**splits) -> dict:
    """``{split: data_fingerprint}`` (:func:`~pyro_lid.infer.data_fingerprint`) of a comparison's data splits, as
    ``results.json`` stores them (JSON types: lists, not tuples), so that a saved one compares equal."""
    return json.loads(json.dumps({name: data_fingerprint(data) for name, data in splits.items()}))


def other_data(saved: dict, data: dict) -> list[str]:
    """The splits whose fingerprint in a saved ``results.json`` differs from ``data``'s (``[]``: the same data, or
    nothing to compare: a file from before the fingerprints)."""
    recorded = saved.get("data")
    if recorded is None:
        return []
    return [name for name in {**data, **recorded} if recorded.get(name) != data.get(name)]


def _with_row(rows: list[dict], row: dict) -> list[dict]:
    """``rows`` with ``row`` in place of the row of its method, or after them."""
    replaced = [row if r["model"] == row["model"] else r for r in rows]
    return replaced if any(r is row for r in replaced) else [*rows, row]


def finished_rows(out: Path, protocol: dict) -> dict:
    """The rows of an earlier run under the same protocol, by method name."""
    saved = read_results(out)
    if saved is None:
        return {}
    if saved["protocol"] != protocol:
        raise ValueError(
            f"cannot resume from {out / 'results.json'}: it was written under protocol {saved['protocol']}, "
            f"this run is {protocol}; use another output_dir or the same options"
        )
    return {r["model"]: r for r in saved["rows"]}


def check_same_data(out: Path, data: dict) -> None:
    """Refuse to resume the rows of ``out/results.json`` unless they were measured on ``data``
    (:func:`split_fingerprints`); a file from before the fingerprints is resumed with a warning that says so."""
    saved = read_results(out)
    if saved is None:
        return
    path, changed = out / "results.json", other_data(saved, data)
    if changed:
        raise ValueError(
            f"cannot resume from {path}: its rows were measured on other {' and '.join(changed)} data than this "
            "run's, under the same options (another --root, PYRO_LID_YAHOO or corpus file?); use another "
            "output_dir or the same data"
        )
    if "data" not in saved and saved["rows"]:
        names = ", ".join(r["model"] for r in saved["rows"])
        warnings.warn(
            f"{path} predates data fingerprints: its finished rows ({names}) are reused without a check that "
            "they were measured on this run's data",
            stacklevel=3,
        )


def check_refine_checkpoint(methods: dict) -> None:
    """Refuse ``refine_checkpoint`` (``--refine-checkpoint``) when none of ``methods`` (name -> registry method)
    refines end to end: the option would change nothing. Known from the registry, before any data are loaded."""
    from .methods import refines_end_to_end

    if not any(refines_end_to_end(method) for method in methods.values()):
        raise ValueError(f"--refine-checkpoint applies to models that refine end to end (sa_vae, its variants, "
                         f"X:recipe=sa_vae); none of {', '.join(methods) or 'the models'} does")  # fmt: skip


def check_run_options(output_dir, resume: bool, overwrite: bool, checkpoint_minutes: float | None = None) -> None:
    """The combinations of ``output_dir``, ``resume`` and ``overwrite`` that make no sense (``resume`` or
    ``overwrite`` without an ``output_dir``, or both), and a ``checkpoint_minutes`` that is not a number >= 0, as a
    ``ValueError``. (A ``checkpoint_minutes`` without an ``output_dir`` is not refused here: the comparisons' default
    is a number; ``compare --checkpoint-minutes`` without ``--output-dir`` is refused by the command line.)"""
    if checkpoint_minutes is not None and not (checkpoint_minutes == 0 or is_positive_number(checkpoint_minutes)):
        raise ValueError(
            f"checkpoint_minutes must be a finite number >= 0 (0: between epochs only), got {checkpoint_minutes!r}"
        )
    if resume and output_dir is None:
        raise ValueError("resume=True needs an output_dir")
    if overwrite and output_dir is None:
        raise ValueError("overwrite=True (--overwrite) needs an output_dir (--output-dir): nothing to overwrite")
    if resume and overwrite:
        raise ValueError("pass resume (--resume) or overwrite (--overwrite), not both")


class ComparisonRun:
    """One comparison's rows and files: claim ``output_dir``, hand back finished rows, record new ones.

    ``run.finished(name)`` is the row of a method an earlier run under the same protocol finished
    (``resume=True``), else ``None``; ``run.checkpoint(name)`` is the file ``fit`` checkpoints that
    method to (``run.checkpoint_options(name, minutes)``: ``fit``'s arguments for it, written also every
    ``minutes`` within an epoch); ``run.record(row, history)`` adds a finished method's row and writes its history and
    ``results.json`` (rows of this run in order, then finished rows not reached yet). Without an
    ``output_dir`` nothing is written. ``run.rows`` is the run's table. ``run.use_data(train=..., ...)`` records
    the data's fingerprints beside the protocol and refuses to resume rows measured on other data.
    """

    def __init__(self, output_dir, protocol: dict, resume: bool = False, overwrite: bool = False):
        check_run_options(output_dir, resume, overwrite)
        self.out = Path(output_dir) if output_dir is not None else None
        self.protocol, self.data, self.writer, self.rows, self.recipes = protocol, None, writes_results(), [], {}
        if self.out is not None and self.writer:
            writable_dir(output_dir, "output directory")
            claim_output_dir(self.out, resume, overwrite)
        self.done = finished_rows(self.out, protocol) if resume else {}

    def use_data(self, **splits) -> None:
        """The run's data splits, once loaded: their :func:`split_fingerprints` go into ``results.json`` beside the
        protocol, and the finished rows of a resumed run must have been measured on them (:func:`check_same_data`)."""
        self.data = split_fingerprints(**splits)
        if self.done:
            check_same_data(self.out, self.data)

    def use_recipes(self, recipes: dict) -> None:
        """The recipes (:meth:`~pyro_lid.experiments.methods.Method.recipe`) of the methods this run trains, by
        name: each is recorded with its row, and a finished row of a resumed run trained with another recipe (the
        registry changed since) is refused here, before any training. Rows from before recipes were recorded are
        reused with a warning that says so."""
        self.recipes = recipes
        path = self.out / "results.json" if self.out is not None else "results.json"
        changed, unchecked, unbuilt = [], [], []
        for name, row in self.done.items():
            if name not in recipes:
                continue
            if row.get("recipe") is None:
                unchecked.append(name)
                continue
            if BUILT in recipes[name] and BUILT not in row["recipe"]:
                unbuilt.append(name)
            for key, old, new in recipe_differences(row["recipe"], recipes[name]):
                changed.append(f"{name}'s {key}: {old!r} in {path}, {new!r} now")
        if changed:
            raise ValueError(
                f"cannot resume from {path}: finished rows were trained with other recipes than the registry's now "
                f"({'; '.join(changed)}); use another output_dir, or overwrite to train them again"
            )
        if unchecked:
            warnings.warn(
                f"{path} predates recorded recipes: its finished rows of {', '.join(unchecked)} are reused without a "
                "check that they were trained with the registry's recipes of now",
                stacklevel=3,
            )
        if unbuilt:
            warnings.warn(
                f"{path} predates recipes that describe the built model: its finished rows of {', '.join(unbuilt)} "
                "are checked on the registry's options, not on the model classes' defaults",
                stacklevel=3,
            )

    @property
    def writes(self) -> bool:
        """Whether this run writes files (an ``output_dir`` and the first process)."""
        return self.out is not None and self.writer

    def finished(self, name: str) -> dict | None:
        """The finished row of ``name`` from the resumed run (also appended to :attr:`rows`), or ``None``."""
        row = self.done.get(name)
        if row is not None:
            self.rows.append(row)
            if self.writes:  # a run stopped between recording the row and deleting its evaluation's pieces
                self.evaluation_file(name).unlink(missing_ok=True)
                validation_file(self.checkpoint(name)).unlink(missing_ok=True)
        return row

    def checkpoint(self, name: str) -> Path | None:
        return self.out / f"checkpoint_{file_stem(name)}.pt" if self.out is not None else None

    def evaluation_file(self, name: str) -> Path | None:
        return self.out / f"evaluation_{file_stem(name)}.pt" if self.out is not None else None

    def evaluation(self, name: str, model, data, **options) -> EvaluationCheckpoint:
        """Where ``name``'s evaluation on ``data`` keeps its finished pieces (``evaluation_<name>.pt``) until its
        row is recorded: a run stopped during a long evaluation resumes it (without an ``output_dir``: nowhere).
        Every process reads the kept pieces and the first one writes them; a file kept for other parameters, data
        or options (a method trained again) is replaced, with a warning."""
        path = self.evaluation_file(name)
        fingerprint = evaluation_fingerprint(model, data, **options) if path is not None else None
        return EvaluationCheckpoint(path, fingerprint, restart_on_mismatch=True, write=self.writer, device=data.device)

    def checkpoint_options(self, name: str, minutes: float | None) -> dict:
        """``fit``'s checkpoint arguments for ``name``: its file, written after every epoch and (``minutes``
        not ``None`` or 0) also between two steps once that many minutes have passed since the last write."""
        path = self.checkpoint(name)
        every = 60.0 * minutes if path is not None and minutes else None
        return {"checkpoint": path, "checkpoint_every_seconds": every}

    def lock(self) -> FileLock:
        """The folder's lock (:data:`RESULTS_LOCK`), held while ``results.json`` or the figures drawn from it are
        written: runs side by side in one folder take turns."""
        return FileLock(self.out / RESULTS_LOCK)

    def record(self, row: dict, history_records: list) -> None:
        if row["model"] in self.recipes:
            row = {**row, "recipe": self.recipes[row["model"]]}
        self.rows.append(row)
        if not self.writes:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with self.lock():  # other runs may record their methods in this folder too
            saved = read_results(self.out)  # as it is now: with the rows other runs recorded since this one began
            if saved is not None:
                self._check_recorded_meanwhile(saved, row["model"])
            # the history first: a row in results.json is a finished method whose history is in place
            history = self.out / f"history_{file_stem(row['model'])}.json"
            atomic_write_text(history, json.dumps(history_records, indent=1))
            rows = self.rows if saved is None else _with_row(saved["rows"], row)  # only this row changes
            results = {"protocol": self.protocol, "rows": rows}
            if self.data is not None:
                results["data"] = self.data
            atomic_write_text(self.out / "results.json", json.dumps(results, indent=1))

    def _check_recorded_meanwhile(self, saved: dict, name: str) -> None:
        """Refuse to add ``name``'s row to a ``results.json`` another run wrote under other options or data (two
        runs begun in one empty folder) before anything is written; its checkpoint stays, to be resumed elsewhere."""
        changed = [f"{split} data" for split in (other_data(saved, self.data) if self.data is not None else [])]
        if saved["protocol"] != self.protocol:
            changed.insert(0, f"options ({saved['protocol']}, this run's {self.protocol})")
        if changed:
            stem = file_stem(name)
            raise ValueError(
                f"cannot record {name} in {self.out / 'results.json'}: another run has written it meanwhile under "
                f"other {' and '.join(changed)}. {name}'s training is kept: move checkpoint_{stem}.pt (and "
                f"evaluation_{stem}.pt, if there) from {self.out} into an output_dir of its own and resume it there "
                "with this run's options"
            )
