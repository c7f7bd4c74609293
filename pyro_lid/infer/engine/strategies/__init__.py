"""Training recipes: objects with the :class:`TrainingStrategy` interface, not flags of the loop."""

from .base import TrainingStrategy
from .lagging import Lagging
from .pretraining import AutoencoderPretraining
from .standard import Standard

__all__ = ["AutoencoderPretraining", "Lagging", "Standard", "TrainingStrategy", "make_strategy"]

_NAMED = {"standard": Standard, "lagging": Lagging}


def make_strategy(strategy, pretrain_epochs: int = 0) -> TrainingStrategy:
    """A strategy from ``fit``'s arguments: a name (``"standard"``, ``"lagging"``) or an instance,
    wrapped in :class:`AutoencoderPretraining` when ``pretrain_epochs`` > 0."""
    if isinstance(strategy, str):
        if strategy not in _NAMED:
            raise ValueError(f"strategy must be one of {tuple(_NAMED)} or a TrainingStrategy, got {strategy!r}")
        strategy = _NAMED[strategy]()
    elif not isinstance(strategy, TrainingStrategy):
        raise ValueError(f"strategy must be one of {tuple(_NAMED)} or a TrainingStrategy, got {strategy!r}")
    return AutoencoderPretraining(strategy, pretrain_epochs) if pretrain_epochs else strategy
