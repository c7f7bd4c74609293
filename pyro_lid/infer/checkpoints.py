"""Checkpoints and results files that cannot be lost, and a resume that checks what it resumes.

**Atomic writes.** :func:`atomic_save`, :func:`atomic_write_bytes` and :func:`atomic_write_text`
write to a temporary file in the target's own directory (created if missing), flush it, ``fsync`` it, and move it
over the target with :func:`os.replace` (atomic on POSIX and Windows), then ``fsync`` the
directory. Whenever the process dies (killed, out of memory, disk full, power cut after the
sync), the target holds either the previous complete file or the new complete one, never a
mix. A write that fails removes its temporary file; one killed outright leaves it
(``.<name>.<random>.tmp``) and the next complete write of the same target removes it.

**Checked resume.** :func:`pyro_lid.infer.fit` stores :func:`training_config` in every
checkpoint: the model (class, scalar hyper-parameters such as ``beta``, likelihood, and a
signature of its parameters' names and shapes), the options that change training
(``batch_size``, ``optimizer``, ``lr``, ``clip_norm``, the loss, ``kl_schedule``, ``free_bits``,
``dynamic_binarization``, ``seed``, ``strategy`` with an instance's non-default settings,
``pretrain_epochs``, ``precision`` when not the default, ``bucket_lengths`` when given) and a fingerprint of the
training and validation data (:func:`data_fingerprint`). On resume :func:`check_resumable`
refuses any difference, naming each differing entry with both values.

Not part of the configuration, so free to change on resume: ``epochs`` (resuming to train
longer is the point of a checkpoint; a checkpoint already past ``epochs`` is refused),
``early_stopping_patience`` (a run that stopped early, resumed with the same patience, trains no
further epoch), ``val_metrics``, ``progress``, ``track_batch_kl`` (switched on in the middle of an
epoch, that epoch's maximum covers the steps tracked) and ``device``. The model's ``name`` (a
parameter-store key, not a parameter) is not part of it either.

A checkpoint without a configuration (written before checkpoints carried one) is refused:
nothing about it can be checked, and a silently mixed run is worse than training again.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import os
import tempfile
from pathlib import Path

import torch

__all__ = [
    "CheckpointError",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_resumable",
    "data_fingerprint",
    "load_checkpoint",
    "strategy_settings",
    "training_config",
]

_ADVICE = "delete it to start afresh, or pass another checkpoint path"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: empty, truncated, not a checkpoint, or written by another
    configuration or for other data. A ``ValueError``, so the command line reports it in one line."""


# ------------------------------------------------------------------ atomic writes
@functools.cache
def _file_mode() -> int:
    """The permissions ``open`` would give a new file (``0o666`` less the umask); ``mkstemp`` gives ``0o600``."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; a no-op where a directory cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path, write) -> None:
    """Call ``write(binary_file)`` on a temporary file beside ``path`` (creating its folder), sync it, and move
    it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: the previous file stays, the temporary one goes
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a write that was killed
        with contextlib.suppress(OSError):
            stale.unlink()


def atomic_write_bytes(path, data: bytes) -> None:
    """Replace ``path`` by ``data``, whole or not at all (see the module's description)."""
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> None:
    """Replace ``path`` by ``text``, whole or not at all (e.g. ``results.json``, ``history_*.json``)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_save(obj, path) -> None:
    """``torch.save(obj, path)``, whole or not at all: the previous file stays until the new one is complete."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, map_location=None, required=()) -> dict:
    """The dict :func:`atomic_save` wrote to ``path``, or one :class:`CheckpointError` that names the file,
    says what is wrong with it (empty, truncated or corrupt, not a checkpoint, lacking ``required`` keys)
    and what to do.

    Like ``torch.load(weights_only=False)``, this runs the file's pickle code: load only checkpoints you trust.

    :raises FileNotFoundError: when there is no file at ``path``.
    """
    path = Path(path)
    where = f"cannot read the checkpoint {path}"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_dir():
        raise CheckpointError(f"{where}: it is a directory; pass the checkpoint file's path")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{where}: it is empty (0 bytes), as a run killed while saving leaves it; {_ADVICE}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as error:  # truncated zip, bad pickle, not a torch file: the same advice for all
        reason = (str(error).strip().splitlines() or [""])[0] or "no details"
        raise CheckpointError(
            f"{where}: it is truncated, corrupt or not a file torch.save wrote ({type(error).__name__}: {reason}); "
            f"{_ADVICE}"
        ) from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: it holds a {type(state).__name__}, not a training checkpoint; {_ADVICE}")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{where}: it lacks {', '.join(missing)}, so it is not a training checkpoint; {_ADVICE}")
    return state


# ------------------------------------------------------------------ what a resumed run must share
def data_fingerprint(data: torch.Tensor, rows: int = 64) -> dict:
    """``{"shape", "dtype", "sha256"}`` of a data set, cheap even for 60,000 x 784 (tens of milliseconds).

    The hash covers the bytes of up to ``rows`` evenly spaced rows (first and last included) and a
    checksum of every byte: the sum of the data's bytes read as 64-bit integers, which wraps around
    and so is exact and the same in any summation order (any number of threads, CPU or GPU). Any
    changed value changes it; a reordering of rows changes it where it moves a sampled row.
    """
    data = data.detach()
    if data.dim() == 0:
        data = data.reshape(1)
    flat = data.contiguous().reshape(-1).view(torch.uint8)
    whole = flat.numel() // 8 * 8
    words = flat[:whole]
    if words.storage_offset() % 8:
        words = words.clone()
    checksum = int(words.view(torch.int64).sum()) if whole else 0
    checksum = (checksum + int(flat[whole:].sum())) % 2**64
    n = data.shape[0]
    index = torch.linspace(0, n - 1, min(n, rows), dtype=torch.float64).round().long().to(data.device)
    sample = data[index].contiguous().reshape(-1).view(torch.uint8).cpu().numpy().tobytes()
    digest = hashlib.sha256(sample + checksum.to_bytes(8, "little")).hexdigest()[:16]
    return {"shape": tuple(data.shape), "dtype": str(data.dtype).removeprefix("torch."), "sha256": digest}


_SCALARS = (bool, int, float, str, type(None))
_NOT_MODEL_CONFIG = {"training", "name", "kl_weight"}  # nn.Module's mode, the store name, set by fit itself
_NOT_LOSS_CONFIG = {"max_plate_nesting", "max_iarange_nesting", "retain_graph", "ignore_jit_warnings"}


def _scalars(obj, skip=()) -> dict:
    """The class name and public scalar attributes of ``obj``."""
    attributes = vars(obj) if hasattr(obj, "__dict__") else {}
    found = {k: v for k, v in attributes.items() if not k.startswith("_") and k not in skip and isinstance(v, _SCALARS)}
    return {"class": type(obj).__name__, **found}


def describe_model(model, modules: bool = False) -> dict:
    """Class, scalar hyper-parameters (``data_dim``, ``latent_dim``, ``beta``, ...), likelihood, and the
    parameters' names, shapes and dtypes (a count and a hash), which pin the architecture; with ``modules`` also
    every submodule's class and scalar settings by name (``decoder.injective_map``: its ``margin``), which a
    checkpoint's configuration leaves out (checkpoints written without them still resume)."""
    described = _scalars(model, _NOT_MODEL_CONFIG)
    if modules:
        described["modules"] = {name: _scalars(m, _NOT_MODEL_CONFIG) for name, m in model.named_modules() if name}
    family = getattr(getattr(model, "decoder", None), "family", None)
    if family is not None:
        described["likelihood"] = type(family).__name__
    shapes = [(k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()]
    values = sum(v.numel() for v in model.state_dict().values())
    digest = hashlib.sha256(repr(shapes).encode()).hexdigest()[:16]
    described["parameters"] = f"{len(shapes)} tensors, {values} values, sha256 {digest}"
    return described


def strategy_settings(strategy) -> dict:
    """The settings of a strategy instance (its constructor's scalar arguments, read back from the attributes of
    the same name) that differ from the constructor's defaults; ``{}`` for a strategy given by name."""
    import inspect

    if isinstance(strategy, str):
        return {}
    changed = {}
    for name, parameter in inspect.signature(type(strategy).__init__).parameters.items():
        value = getattr(strategy, name, parameter.empty)
        if parameter.default is not parameter.empty and isinstance(value, _SCALARS) and value != parameter.default:
            changed[name] = value
    return changed


def training_config(
    model,
    train_data: torch.Tensor,
    val_data: torch.Tensor | None,
    *,
    batch_size: int,
    optimizer: str,
    lr: float,
    clip_norm: float | None,
    loss,
    kl_schedule,
    free_bits: float | None,
    dynamic_binarization: bool,
    seed: int,
    strategy: str,
    pretrain_epochs: int,
    lr_multipliers=None,
    strategy_settings: dict | None = None,
    precision: str | None = None,
    bucket_lengths: torch.Tensor | None = None,
) -> dict:
    """What a resumed run must share with the run that wrote the checkpoint (see the module's description).

    :param loss: the ELBO in use (its class and settings such as ``num_particles`` are recorded).
    :param kl_schedule: the :class:`~pyro_lid.infer.schedules.KLSchedule` in use (its kind and parameters).
    :param lr_multipliers: ``fit``'s per-parameter multipliers, recorded only when given (so that checkpoints
        written before the option existed still resume).
    :param strategy_settings: a strategy instance's settings that differ from its class's defaults
        (:func:`strategy_settings`), recorded only when there are any: ``strategy`` alone is a class name.
    :param precision: Lightning's precision, recorded only when it is not the default ``"32-true"``.
    :param bucket_lengths: ``fit``'s per-row lengths that order the mini-batches, recorded (as a fingerprint) only
        when given.
    """
    multipliers = {"lr_multipliers": {str(k): float(v) for k, v in lr_multipliers.items()}} if lr_multipliers else {}
    if strategy_settings:
        multipliers["strategy_settings"] = dict(strategy_settings)
    if precision is not None and str(precision) not in ("32-true", "32"):
        multipliers["precision"] = str(precision)
    if bucket_lengths is not None:
        multipliers["bucket_lengths"] = data_fingerprint(bucket_lengths)
    loss_config = _scalars(loss, _NOT_LOSS_CONFIG)
    if loss_config.get("per_point") is False:  # recorded only when set, as the entries above: checkpoints
        del loss_config["per_point"]  # written before FreeBitsELBO had the option resume
    return {
        "model": describe_model(model),
        "batch_size": batch_size,
        "optimizer": optimizer,
        "lr": lr,
        **multipliers,
        "clip_norm": clip_norm,
        "loss": loss_config,
        "kl_schedule": _scalars(kl_schedule),
        "free_bits": free_bits,
        "dynamic_binarization": dynamic_binarization,
        "seed": seed,
        "strategy": strategy,
        "pretrain_epochs": pretrain_epochs,
        "train_data": data_fingerprint(train_data),
        "val_data": None if val_data is None else data_fingerprint(val_data),
    }


class _Absent:
    def __repr__(self):
        return "(absent)"


_ABSENT = _Absent()


def config_differences(saved: dict, current: dict, prefix: str = ""):
    """``(key, saved value, current value)`` for every entry that differs, nested keys joined by dots."""
    for key in [*saved, *(k for k in current if k not in saved)]:
        old, new = saved.get(key, _ABSENT), current.get(key, _ABSENT)
        if isinstance(old, dict) and isinstance(new, dict):
            yield from config_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            yield f"{prefix}{key}", old, new


def check_resumable(saved_config: dict | None, config: dict, path=None) -> None:
    """Raise a :class:`CheckpointError` unless the checkpoint's ``saved_config`` equals this run's ``config``.

    The message names every differing entry (``model.beta``, ``lr``, ``train_data.shape``, ...) with its
    value in the checkpoint and in this run. ``saved_config=None`` (a checkpoint written before
    checkpoints carried their configuration) is refused: nothing about it can be checked.
    """
    where = f"cannot resume from the checkpoint {path}" if path is not None else "cannot resume from the checkpoint"
    if saved_config is None:
        raise CheckpointError(
            f"{where}: it was written without its training configuration (by an older pyro-lid), so this run's "
            f"options and data cannot be checked against it; {_ADVICE}"
        )
    found = list(config_differences(saved_config, config))
    if found:
        listed = "; ".join(f"{key}: {old!r} in the checkpoint, {new!r} in this run" for key, old, new in found)
        raise CheckpointError(
            f"{where}: it was trained with other options or data ({listed}); resume with the same ones, or {_ADVICE}"
        )
