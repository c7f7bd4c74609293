r"""KL-weight schedules :math:`w(t)`, with :math:`t` measured in (fractional) epochs.

The model's latent sites are scaled by :math:`\beta\,w(t)`: ``constant`` keeps
:math:`w = 1`; ``linear`` (KL annealing, Bowman et al. 2016) ramps from ``start`` to 1
over ``warmup_epochs``; ``cyclical`` (Fu et al. 2019) repeats a ramp from 0 to 1 over
the first ``ramp_fraction`` of each cycle of ``cycle_epochs`` and holds 1 for the rest.
"""

from __future__ import annotations

__all__ = ["KLSchedule", "make_schedule"]


class KLSchedule:
    """A KL-weight schedule; call it with the training time in epochs."""

    def __init__(
        self,
        kind: str = "constant",
        warmup_epochs: float = 10.0,
        start: float = 0.0,
        cycle_epochs: float = 10.0,
        ramp_fraction: float = 0.5,
    ):
        if kind not in ("constant", "linear", "cyclical"):
            raise ValueError(f"KL schedule must be 'constant', 'linear' or 'cyclical', got {kind!r}")
        if warmup_epochs <= 0 or cycle_epochs <= 0 or not 0 < ramp_fraction <= 1 or not 0 <= start <= 1:
            raise ValueError("need warmup_epochs > 0, cycle_epochs > 0, 0 < ramp_fraction <= 1 and 0 <= start <= 1")
        self.kind, self.warmup_epochs, self.start = kind, warmup_epochs, start
        self.cycle_epochs, self.ramp_fraction = cycle_epochs, ramp_fraction

    def __call__(self, t: float) -> float:
        if self.kind == "constant":
            return 1.0
        if self.kind == "linear":
            return min(1.0, self.start + (1.0 - self.start) * t / self.warmup_epochs)
        phase = (t % self.cycle_epochs) / self.cycle_epochs
        return min(1.0, phase / self.ramp_fraction)

    def __repr__(self):
        return f"KLSchedule({self.kind!r})"


def make_schedule(schedule) -> KLSchedule:
    """A schedule from ``None``, a name (``"constant"``, ``"linear"``, ``"cyclical"``), a :class:`KLSchedule`
    or a dict of its options."""
    if schedule is None:
        return KLSchedule("constant")
    if isinstance(schedule, KLSchedule):
        return schedule
    if isinstance(schedule, str):
        return KLSchedule(schedule)
    if isinstance(schedule, dict):
        return KLSchedule(**schedule)
    raise ValueError(f"cannot make a KL schedule from {schedule!r}")
