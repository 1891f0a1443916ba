"""Independent jobs on the machine's cores: groups of jobs in forked copies of this process.

The oracle's counterfactual passes are independent of one another (each its own story over the
same fitted policies), so they can run side by side. A forked child starts with this process's
memory as it is (the fitted models, the run's slates, the user-state caches: copy-on-write, nothing
pickled or loaded again) and sends back only each job's small result. A group's jobs run in one
process, in order (jobs that share what they compute, such as the passes of arms with the same
slates, belong to one group). Results do not depend on where a job ran: every job computes the
same floats in any process (serving pins torch's thread count; ``simulator.engine.runtime``).

Only where it is safe and pays: Linux ``fork`` (not macOS / Windows), one torch thread per
process (a forked child must not start an OpenMP team its parent's pool owned), and no Ray driver
in this process (its gRPC threads do not survive a fork). A child ignores Ctrl-C (the parent stops
it) and dies with its parent (``PR_SET_PDEATHSIG``), so a stopped or killed run leaves no worker;
a child that fails or dies (the kernel's OOM killer) costs time, not the result: its jobs run
again in the parent.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

PR_SET_PDEATHSIG = 1


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def can_fork(threads: int) -> bool:
    """Forking is safe here (module doc): Linux, one torch thread, no Ray driver."""
    if not sys.platform.startswith("linux") or threads != 1:
        return False
    ray = sys.modules.get("ray")
    return ray is None or not ray.is_initialized()


def balance(groups: Sequence[Sequence[Hashable]], workers: int,
            cost: Callable[[Hashable], float] = lambda job: 1.0) -> list[list[Hashable]]:
    """Groups dealt to at most ``workers`` lanes, the costliest group first to the cheapest lane
    (``cost``: a job's expected cost); a lane's jobs in their groups' order; the costliest lane
    first (``map_lanes`` runs it in this process). Empty lanes are dropped."""
    lanes: list[list[Hashable]] = [[] for _ in range(max(1, workers))]
    total = [0.0] * len(lanes)
    for g in sorted(groups, key=lambda g: sum(map(cost, g)), reverse=True):
        k = total.index(min(total))
        lanes[k].extend(g)
        total[k] += sum(map(cost, g))
    return [lane for _, lane in sorted(zip(total, lanes, strict=True), key=lambda t: -t[0]) if lane]


def _child(fn: Callable[[Any], Any], jobs: list, conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops its children
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        pass
    try:
        conn.send(("ok", [fn(j) for j in jobs]))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def _start(ctx, fn, lane: list):
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(fn, lane, send), daemon=True)
    p.start()
    send.close()
    return p, recv


def _result(p, recv, check: Callable[[], None]) -> tuple[str, Any]:
    """A child's ("ok", results) or ("error" / "died", message); ``check()`` while waiting."""
    while not recv.poll(0.05):
        check()
        if not p.is_alive() and not recv.poll(0):
            p.join()
            return "died", f"exit code {p.exitcode}"
    try:
        return recv.recv()
    except EOFError:
        p.join()
        return "died", f"exit code {p.exitcode}"


def map_lanes(fn: Callable[[Any], Any], lanes: list[list[Hashable]], *,
              check: Callable[[], None] = lambda: None,
              on_retry: Callable[[str], None] = lambda message: None) -> dict[Hashable, Any]:
    """``{job: fn(job)}``: the first lane in this process, every other lane in a forked child at the
    same time. A lane whose child failed or died runs again here (``on_retry`` says why; a job's
    own error is raised from that run, as without workers). ``check()`` is called while waiting
    (a stop signal); a stop or an error here kills the children before it propagates."""
    ctx = mp.get_context("fork")
    procs = []
    gc.freeze()  # the objects so far are never collected in a child: their pages stay shared
    try:
        procs = [(*_start(ctx, fn, lane), lane) for lane in lanes[1:]]
    finally:
        gc.unfreeze()
    try:
        out = {j: fn(j) for j in lanes[0]} if lanes else {}
        for p, recv, lane in procs:
            status, got = _result(p, recv, check)
            if status == "ok":
                out.update(zip(lane, got, strict=True))
                continue
            on_retry(f"a worker process {'failed' if status == 'error' else 'died'} ({got}); "
                     "its passes run in this process")
            out.update({j: fn(j) for j in lane})
        return out
    finally:
        for p, recv, _ in procs:
            recv.close()
            if p.is_alive():
                p.kill()
            p.join()


@dataclass(frozen=True)
class Workers:
    """How many processes independent groups of jobs may use, and what they are told (``map_lanes``)."""

    n: int = 1
    cost: Callable[[Hashable], float] = lambda job: 1.0  # a job's expected cost (balance)
    check: Callable[[], None] = lambda: None
    on_retry: Callable[[str], None] = lambda message: None

    def run(self, fn: Callable[[Any], Any], groups: Sequence[Sequence[Hashable]]) -> dict[Hashable, Any]:
        return map_lanes(fn, balance(groups, self.n, self.cost), check=self.check, on_retry=self.on_retry)
