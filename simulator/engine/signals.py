"""Ctrl-C and SIGTERM stop a command cleanly: a run is marked ``incomplete`` (resumable) and the
process exits 130 (SIGINT) or 143 (SIGTERM).

The handlers record which signal arrived before raising: DuckDB turns an interrupt that lands
inside a query into ``RuntimeError: Query interrupted``, and Ray's driver replaces the SIGTERM
handler with ``sys.exit(15)``, so the exception alone does not always say what happened.

While a run writes events (:class:`cooperative`), a signal is only recorded, and the simulation
loop stops at the next batch boundary (:func:`check`): never halfway through a DuckDB write or
through the bookkeeping that marks the run ``incomplete``.
"""

from __future__ import annotations

import os
import signal
import threading

from simulator.core.errors import Terminated

_RECEIVED: list[int] = []
_PENDING: list[int] = []
_COOPERATIVE = [0]


def _stop(signum: int) -> BaseException:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _on_signal(signum, frame) -> None:
    _RECEIVED.append(signum)
    if _COOPERATIVE[0]:
        _PENDING.append(signum)
        return
    raise _stop(signum)


class cooperative:
    """Inside this block signals are recorded, not raised; :func:`check` raises them."""

    def __enter__(self):
        _COOPERATIVE[0] += 1
        return self

    def __exit__(self, *exc) -> None:
        _COOPERATIVE[0] -= 1


def check() -> None:
    """Raise KeyboardInterrupt / Terminated for a signal recorded inside :class:`cooperative`."""
    if _PENDING:
        raise _stop(_PENDING.pop())


FAULT_ENV = "SIM_FAULT_INJECT"


_FAULT_CALLS: dict[str, int] = {}


def fault_point(phase: str) -> None:
    """Chaos testing: ``SIM_FAULT_INJECT=PHASE[@N]:SIGNAL`` (e.g. ``oracle:SIGKILL``,
    ``simulate@3:SIGTERM``) makes this process send itself SIGNAL the Nth time (default 1st) it
    reaches PHASE (training, simulate = each served batch, flush, oracle, report), once.
    The fault-injection tests use it; anyone can check that their runs survive a kill anywhere."""
    where, _, sig = os.environ.get(FAULT_ENV, "").partition(":")
    name, _, nth = where.partition("@")
    if name != phase:
        return
    _FAULT_CALLS[phase] = _FAULT_CALLS.get(phase, 0) + 1
    if _FAULT_CALLS[phase] >= int(nth or 1):
        os.environ.pop(FAULT_ENV)
        os.kill(os.getpid(), getattr(signal, sig or "SIGINT"))


def install() -> None:
    """Record-then-raise handlers for SIGINT and SIGTERM (main thread only; idempotent); a command
    starts with no signal recorded."""
    _RECEIVED.clear()
    _PENDING.clear()
    _FAULT_CALLS.clear()
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)


def received() -> int | None:
    """The last stop signal this process received (None: none)."""
    return _RECEIVED[-1] if _RECEIVED else None


def is_stop(e: BaseException) -> bool:
    """Did ``e`` come from Ctrl-C / SIGTERM (directly, via Ray's handler, or inside DuckDB)?"""
    return (isinstance(e, KeyboardInterrupt) or (isinstance(e, SystemExit) and e.code == signal.SIGTERM)
            or received() is not None or (isinstance(e, RuntimeError) and str(e) == "Query interrupted"))


def exit_code(e: BaseException | None = None) -> int:
    """130 for Ctrl-C, 143 for SIGTERM."""
    code = getattr(e, "exit_code", None)
    if isinstance(code, int):
        return code
    if received() == signal.SIGTERM or (isinstance(e, SystemExit) and e.code == signal.SIGTERM):
        return 143
    return 130


class keep_handlers:
    """Put back this process's SIGINT/SIGTERM handlers after a library (Ray) replaced them."""

    def __enter__(self):
        self.saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        if threading.current_thread() is threading.main_thread():
            for s, h in self.saved.items():
                if h is not None:
                    signal.signal(s, h)
