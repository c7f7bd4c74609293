"""``fit``'s argument checks: everything that can be refused is refused before any training."""

from __future__ import annotations

import torch
from pyro.optim.clipped_adam import ClippedAdam

from ..._checks import is_positive_number

__all__ = ["OPTIMIZERS", "check_checkpoint_interval", "check_data", "check_fit_arguments"]

OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "clipped_adam": ClippedAdam}


def check_data(name, data):
    if not isinstance(data, torch.Tensor) or data.dim() != 2 or data.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) tensor, got {getattr(data, 'shape', type(data))}")
    if data.is_floating_point() and not torch.isfinite(data).all():
        raise ValueError(f"{name} has {int((~torch.isfinite(data)).sum())} NaN or infinite entries")


def _with_name(name, check, data):
    """Run a model's data check on ``data``, naming the argument in its error."""
    try:
        check(data)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def optimizer_class(optimizer):
    """The ``torch.optim.Optimizer`` class for ``fit``'s ``optimizer``: a name or the class itself."""
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return optimizer
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)} or a torch.optim.Optimizer class, got "
                         f"{optimizer!r}")  # fmt: skip
    return OPTIMIZERS[optimizer]


def check_fit_arguments(model, train_data, val_data, *, epochs, batch_size, optimizer, free_bits, free_bits_per_point,
                        loss, strategy, strategy_name, val_metrics, pretrain_epochs, checkpoint, resume,
                        early_stopping_patience, dynamic_binarization) -> torch.Tensor:  # fmt: skip
    """Refuse what cannot train; return ``train_data`` (as the model's float type for ``dynamic_binarization``)."""
    check_data("train_data", train_data)
    if val_data is not None:
        check_data("val_data", val_data)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    optimizer_class(optimizer)
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        last = train_data.shape[0] % batch_size
        if batch_size == 1 or last == 1:  # training-mode batch norm cannot normalize a single row
            raise ValueError(
                f"{type(model).__name__} has batch norm, which cannot normalize a mini-batch of one data point in "
                f"training, and {train_data.shape[0]} data points with batch_size={batch_size} leave one "
                f"{'in every mini-batch' if batch_size == 1 else 'in the last mini-batch of each epoch'}; choose "
                "another batch_size (or drop a data point)"
            )
    if free_bits is not None and loss is not None:
        raise ValueError("pass either free_bits or loss, not both")
    if not isinstance(free_bits_per_point, bool):
        raise ValueError(f"free_bits_per_point must be True or False, got {free_bits_per_point!r}")
    if free_bits_per_point and free_bits is None:
        raise ValueError("free_bits_per_point=True needs free_bits: the floor it applies to each data point")
    if strategy.needs_validation_mi and (val_data is None or not val_metrics):
        raise ValueError(f"strategy={strategy_name!r} needs val_data and val_metrics=True: its phase ends on "
                         "validation MI")  # fmt: skip
    if not 0 <= pretrain_epochs < epochs:
        raise ValueError(f"pretrain_epochs must be in [0, epochs), got {pretrain_epochs} with epochs={epochs}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if early_stopping_patience is not None:
        if isinstance(early_stopping_patience, bool) or not isinstance(early_stopping_patience, int):
            raise ValueError(f"early_stopping_patience must be an integer >= 0, got {early_stopping_patience!r}")
        if early_stopping_patience < 0:
            raise ValueError(f"early_stopping_patience must be >= 0, got {early_stopping_patience}")
        if val_data is None:
            raise ValueError("early_stopping_patience needs val_data: it counts epochs without a better val_loss")
    if dynamic_binarization:
        if ((train_data < 0) | (train_data > 1)).any():
            low, high = float(train_data.min()), float(train_data.max())
            raise ValueError(
                f"dynamic_binarization needs training intensities in [0, 1]; got values in [{low:g}, {high:g}]"
            )
        if not train_data.is_floating_point():
            train_data = train_data.to(next(model.parameters()).dtype)
    # the data must be what the likelihood scores: checked here, not after an epoch of training
    check = getattr(model, "check_data", None)
    if check is not None:
        if val_data is not None:
            _with_name("val_data", check, val_data)
        if not dynamic_binarization:
            _with_name("train_data", check, train_data)
    return train_data


def check_bucket_lengths(bucket_lengths, num_rows: int) -> torch.Tensor | None:
    """``bucket_lengths`` as a ``(num_rows,)`` integer tensor of lengths >= 0 (``None`` stays ``None``), or a
    ``ValueError`` naming what is wrong: one length per training row, whole numbers, none negative."""
    if bucket_lengths is None:
        return None
    lengths = torch.as_tensor(bucket_lengths)
    if lengths.shape != (num_rows,):
        raise ValueError(
            f"bucket_lengths needs one length per training row: shape ({num_rows},), got {tuple(lengths.shape)}"
        )
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise ValueError(f"bucket_lengths must be integers (e.g. pyro_lid.data.sentence_lengths), got {lengths.dtype}")
    if num_rows and lengths.min() < 0:
        raise ValueError(f"bucket_lengths must be >= 0, got {int(lengths.min())} at row {int(lengths.argmin())}")
    return lengths.to(torch.long).cpu()


def check_sharding(num_data: int, batch_size: int, world_size: int) -> None:
    """Every process needs data in every step: the global batch, and the last one, must split ``world_size`` ways."""
    last = num_data % batch_size
    if world_size > 1 and (batch_size < world_size or 0 < last < world_size):
        raise ValueError(
            f"with {num_data} data points, batch_size={batch_size} and {world_size} processes some process would get "
            f"an empty mini-batch; choose batch_size >= {world_size} with num_data % batch_size 0 or >= {world_size}"
        )


def check_checkpoint_interval(checkpoint, every_n_steps, every_seconds) -> None:
    """Mid-epoch checkpoints need a ``checkpoint`` file, a whole number of steps >= 1 and/or seconds > 0."""
    if every_n_steps is None and every_seconds is None:
        return
    if checkpoint is None:
        raise ValueError("checkpoint_every_n_steps / checkpoint_every_seconds need a checkpoint file (checkpoint=...)")
    if every_n_steps is not None and (
        isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1
    ):
        raise ValueError(f"checkpoint_every_n_steps must be an integer >= 1, got {every_n_steps!r}")
    if every_seconds is not None and not is_positive_number(every_seconds):
        raise ValueError(f"checkpoint_every_seconds must be a finite number > 0, got {every_seconds!r}")
