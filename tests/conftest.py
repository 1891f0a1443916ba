"""Shared fixtures: real-data location (skips cleanly when absent), tiny datasets, seeds."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ml100k_dir():
    from simulator.core.paths import find_ml100k

    p = find_ml100k()
    if p is None:
        pytest.skip("MovieLens-100K not found (../shared/data/ml-100k or HLLM_SIM_ML100K)")
    return p


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@dataclass
class SimResult:
    code: int
    out: str
    err: str


def sim_exit_code(*args: str) -> int:
    """The `sim` command in this process through ``cli.main``: its real exit code (signal handlers
    restored afterwards)."""
    import cli

    argv, handlers = sys.argv, {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    sys.argv = ["sim", *args]
    try:
        cli.main()
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        for s, h in handlers.items():
            signal.signal(s, h)


@pytest.fixture
def sim(capsys):
    """``sim(*args)``: the `sim` command in this process (exit code, stdout and stderr)."""

    def call(*args: str) -> SimResult:
        code = sim_exit_code(*args)
        cap = capsys.readouterr()
        return SimResult(code, cap.out, cap.err)

    return call


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """(catalog, folder): the tiny synthetic world in a fresh catalog, one per test module."""
    from _simdata import tiny_catalog

    d = tmp_path_factory.mktemp("world")
    cat = tiny_catalog(str(d / "cat.duckdb"))
    yield cat, d
    cat.close()
