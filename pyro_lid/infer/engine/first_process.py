"""Work done on the first process only, whose outcome every process shares: a failure there stops them all.

Validation and checkpoint writes run on the first process while the others wait for it in a collective (a
broadcast, a barrier). Were the first process to fail there without a word, the others would wait until the
backend's timeout (30 minutes with NCCL) while it sat in a user's ``except`` or a notebook. Here it broadcasts
either its result or its error; each other process then raises :class:`FirstProcessFailed` with the reason.
"""

from __future__ import annotations

import pickle

__all__ = ["FirstProcessFailed", "on_first_process"]


class FirstProcessFailed(RuntimeError):
    """Work the first process did for all of them failed there; this process stops too."""


def on_first_process(fabric, work, what: str):
    """``work()`` on the first process, its result on every process (``fabric.broadcast``); one process: ``work()``.

    :param what: the work in words, for the other processes' error: ``"writing the checkpoint ..."``.
    :raises FirstProcessFailed: on the other processes when ``work()`` raised on the first (which re-raises it).
    """
    if fabric.world_size == 1:
        return work()
    result, payload, failure = None, None, None
    if fabric.global_rank == 0:
        try:
            result = work()
            payload = pickle.dumps(result)  # here: a result that cannot travel fails as the work would
        except BaseException as error:  # KeyboardInterrupt too: the others must not wait for it
            failure = error
    reason = None if failure is None else f"{type(failure).__name__}: {failure}"
    payload, reason = fabric.broadcast((payload, reason), src=0)
    if failure is not None:
        raise failure
    if reason is not None:
        raise FirstProcessFailed(
            f"process {fabric.global_rank} stops: the first process failed {what} ({reason}); see its error"
        )
    return result if fabric.global_rank == 0 else pickle.loads(payload)
