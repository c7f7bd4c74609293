"""Stopping on a signal without losing work.

A run asked to stop by ``SIGINT`` (Ctrl-C) or ``SIGTERM`` (a batch scheduler's preemption or time limit, a
session that ends, ``timeout``) stops after a finished step, writes its checkpoint there (with
``fit(checkpoint=...)``) and raises :class:`TrainingInterrupted`, which names the signal, where training stands
and the checkpoint a resumed run goes on from. Without this, the process dies mid-epoch and loses everything
since the last checkpoint (up to ``checkpoint_every_seconds``, or a whole epoch).

- The handlers only set a flag. The loop looks at it after every step, before the step's hooks (a signal that
  comes during them is seen after the next step), and after every epoch's checkpoint (a validation in progress
  finishes first). A second signal while the first is pending stops at once (``KeyboardInterrupt``), without
  that checkpoint; one after the stop was carried out (during the teardown) changes nothing.
- With several processes the flag is agreed on after every step (one all-reduce of one number), so that all
  stop after the same step even when the signal reached only one of them. A second signal reaches only the
  processes it is sent to: the others wait for them until the backend's timeout.
- Handlers can only be set from the main thread of the main interpreter; ``fit`` run from another thread keeps
  the process's own handling, and so does a signal the process ignores (``SIG_IGN``: a background job's Ctrl-C)
  or one handled outside Python. On leaving, the previous handlers are restored, and a signal that arrived after
  the loop's last look at the flag is delivered again to them (after a note naming any error that ends the run
  at the same time, which a terminating signal would otherwise leave unsaid).
- With ``distributed="ddp_spawn"`` or ``"ddp_fork"`` the parent process waits in the launcher with its own
  handling: send the signal to the training processes (under ``torchrun`` or SLURM every process gets it).
- A scheduler's grace period (SLURM's ``KillWait``, 30 s by default) must cover the step in progress and the
  checkpoint's write; Windows delivers no ``SIGTERM`` that a process can catch.
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["DEFAULT_STOP_SIGNALS", "StopSignals", "TrainingInterrupted", "resolve_stop_signals"]

#: ``fit(stop_signals=...)`` where not given.
DEFAULT_STOP_SIGNALS = ("SIGINT", "SIGTERM")

_UNCATCHABLE = {getattr(signal, name) for name in ("SIGKILL", "SIGSTOP") if hasattr(signal, name)}
# faults (a handler that only sets a flag would return into the faulting instruction for ever), signals that are
# no request to stop (a child process ending, a terminal resized), job control (whose default action suspends the
# process instead of ending it) and signals Python ignores from its start (asking for them would do nothing)
_UNSUITABLE = {
    getattr(signal, name)
    for name in (
        "SIGSEGV",
        "SIGBUS",
        "SIGFPE",
        "SIGILL",
        "SIGABRT",
        "SIGCHLD",
        "SIGWINCH",
        "SIGURG",
        "SIGCONT",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGPIPE",
        "SIGXFSZ",
    )  # fmt: skip
    if hasattr(signal, name)
}


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after a finished step, with its checkpoint written there (where one was asked
    for). A ``KeyboardInterrupt``, so that ``except Exception`` in the caller's code does not swallow it.

    :ivar signal_name: ``"SIGTERM"``, ``"SIGINT"``, ...; ``"a stop signal on another process"`` where only
        another process of a data-parallel run received it.
    :ivar signal_number: its number (``128 +`` it is the conventional exit status), ``None`` for another process's.
    :ivar position: where training stands, in words (``"epoch 2, step 40 of 100"``).
    :ivar checkpoint: the checkpoint that holds that position, or ``None``.
    """

    def __init__(self, message: str, signal_name: str, signal_number: int | None, position: str, checkpoint=None):
        super().__init__(message)
        self.signal_name, self.signal_number = signal_name, signal_number
        self.position, self.checkpoint = position, checkpoint


def resolve_stop_signals(signals) -> tuple[signal.Signals, ...]:
    """``signals`` (names such as ``"SIGTERM"`` or ``"term"``, numbers, or :class:`signal.Signals`; ``None`` or
    ``()``: none) as :class:`signal.Signals`. A name this platform lacks, a number that is no signal,
    ``SIGKILL``/``SIGSTOP`` (which no process can catch), fault signals (``SIGSEGV``, ...), signals that are no
    request to stop (``SIGCHLD``, ``SIGWINCH``, ...), job control (``SIGTSTP``, ...) and the signals Python ignores
    (``SIGPIPE``, ``SIGXFSZ``) are refused."""
    if signals is None:
        return ()
    if isinstance(signals, (str, int)):
        signals = (signals,)
    resolved = []
    for entry in signals:
        try:
            if isinstance(entry, str):
                sig = signal.Signals[entry.upper() if entry.upper().startswith("SIG") else "SIG" + entry.upper()]
            elif isinstance(entry, int) and not isinstance(entry, bool):
                sig = signal.Signals(entry)
            else:
                raise TypeError
        except (KeyError, ValueError, TypeError):
            known = ", ".join(sorted(s.name for s in signal.Signals if s not in _UNCATCHABLE | _UNSUITABLE))
            raise ValueError(f"stop_signals: {entry!r} is not a signal of this platform; known: {known}") from None
        if sig in _UNCATCHABLE:
            raise ValueError(f"stop_signals: {sig.name} cannot be caught, so it cannot stop a run after a step")
        if sig in _UNSUITABLE:
            raise ValueError(f"stop_signals: {sig.name} is a fault, an event or job control, not a request to stop")
        resolved.append(sig)
    return tuple(dict.fromkeys(resolved))


class StopSignals:
    """A context in which ``signals`` ask for a stop (:attr:`received`) instead of ending the process.

    ``with StopSignals(["SIGTERM"]) as stop: ... if stop.received: ...``; call :meth:`acted_on` once the stop
    has been carried out (so that leaving the context does not deliver the signal again).
    """

    def __init__(self, signals=DEFAULT_STOP_SIGNALS):
        self.signals = resolve_stop_signals(signals)
        self.received: signal.Signals | None = None
        self._previous: dict = {}
        self._acted = False

    @property
    def installed(self) -> bool:
        """Whether handlers are set (not outside the main thread, not for ignored signals, not with none)."""
        return bool(self._previous)

    def _handle(self, signum, frame) -> None:
        if self._acted:  # the stop is under way (teardown): nothing left to stop early
            return
        if self.received is not None:  # a second signal: the user does not want to wait for the step
            self._acted = True  # stopping now carries out both
            raise KeyboardInterrupt(
                f"a second {signal.Signals(signum).name} while the stop after the step in progress was pending: "
                "stopped at once, without writing a checkpoint"
            )
        self.received = signal.Signals(signum)
        _note(f"{self.received.name} received: stopping after the step in progress and writing the checkpoint "
              "(send it again to stop at once)")  # fmt: skip

    def acted_on(self) -> None:
        self._acted = True

    def __enter__(self) -> StopSignals:
        self.received, self._acted = None, False
        if self.signals and threading.current_thread() is threading.main_thread():
            try:
                for sig in self.signals:
                    current = signal.getsignal(sig)
                    if current is signal.SIG_IGN or current is None:  # ignored, or handled outside Python: kept
                        continue
                    self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main interpreter: leave the process's handling as it is
                self._restore()
        return self

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __exit__(self, exc_type, exc, traceback) -> None:
        installed = self.installed
        self._restore()  # first: a signal from here on goes to the previous handler itself
        pending = self.received if installed and not self._acted else None
        if pending is not None:  # arrived after the loop's last look: its previous handler decides
            if exc is not None:  # a terminating signal would leave the run's own error unsaid
                _note(f"{pending.name} arrived as the run ended with {type(exc).__name__}: {exc}")
            signal.raise_signal(pending)


def _note(text: str) -> None:
    """One line on stderr, safe inside a signal handler (``os.write``, not ``print``: the handler may run in the
    middle of another write to stderr, the progress bar's); a closed or full stderr does not stop training."""
    try:
        os.write(2, f"\npyro-lid: {text}\n".encode())
    except OSError:
        pass
