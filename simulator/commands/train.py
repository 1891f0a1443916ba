"""`sim train` and `sim eval`: fit / evaluate a registered policy on a catalog dataset.

    sim train --model sasrec --data ml-100k [--set hidden=64 --set loss=ce] [--config f.toml]
    sim eval  --model sasrec --data ml-100k [--split test] [--no-exclude-history]

Trained models are cached by :func:`policies.store.fit_or_load` under ``--artifacts``; eval
trains first when no cached model matches. Results print as a table and land in the catalog
(``eval_summary`` / ``eval_results``, see :mod:`policies.results`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import tomllib
import typer

from simulator.core.errors import ConfigError, NotFoundError

# the options `sim train` and `sim eval` share
_MODEL = typer.Option(..., "--model", "-m", help="registered policy name (see policies.registry)")
_DATA = typer.Option("ml-100k", "--data", "-d", help="dataset name in the catalog")
_CATALOG = typer.Option(None, "--catalog", help="DuckDB catalog (default $SIM_CATALOG or ./sim.duckdb)")
_ARTIFACTS = typer.Option("artifacts", "--artifacts", help="trained-model cache root")
_SET = typer.Option(None, "--set", help="config override key=value (repeatable)")
_CONFIG = typer.Option(None, "--config", help="TOML file of config overrides")
_EPOCHS = typer.Option(None, "--epochs", help="shortcut for --set epochs=N")


def parse_overrides(sets: list[str] | None, config: Path | None, epochs: int | None) -> dict[str, Any]:
    """Merge ``--config file.toml`` then ``--set key=value`` (JSON-parsed when possible) then ``--epochs``."""
    out: dict[str, Any] = {}
    if config is not None:
        if not config.exists():
            raise NotFoundError(f"config file {config} does not exist")
        try:
            out.update(tomllib.loads(config.read_text()))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{config}: {e}") from None
    for s in sets or []:
        if "=" not in s:
            raise ConfigError(f"--set expects key=value, got {s!r}")
        k, v = s.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    if epochs is not None:
        out["epochs"] = epochs
    return out


def _load(data: str, catalog: Optional[str]):
    from simulator.core import Catalog, LeaveOneOut, get_dataset

    cat = Catalog(catalog)
    ds = get_dataset(data, cat)
    return cat, ds, LeaveOneOut.from_sequences(ds.sequences)


def _print_table(title: str, columns: dict[str, dict[str, float]]) -> None:
    """Metrics as rows, one column per (model, split): fits any terminal width."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    t.add_column("metric")
    for c in columns:
        t.add_column(c, justify="right")
    metrics = list(next(iter(columns.values()))) if columns else []
    for m in metrics:
        t.add_row(m, *[f"{col.get(m, float('nan')):.4f}" for col in columns.values()])
    Console().print(t)


def train(
    model: str = _MODEL, data: str = _DATA, catalog: Optional[str] = _CATALOG, artifacts: str = _ARTIFACTS,
    set_: Optional[list[str]] = _SET, config: Optional[Path] = _CONFIG, epochs: Optional[int] = _EPOCHS,
) -> None:
    """Train a policy (or load it from the cache) and print its validation/test metrics."""
    from policies import registry
    from policies.evaluate import evaluate as run_eval
    from policies.store import fit_or_load

    overrides = parse_overrides(set_, config, epochs)
    registry.make_config(model, overrides)  # validate before loading data
    cat, ds, split = _load(data, catalog)
    try:
        t0 = time.perf_counter()
        pol = fit_or_load(model, ds, split, overrides, root=artifacts)
        secs = time.perf_counter() - t0
        cols = {}
        for which in ("valid", "test"):
            r = run_eval(pol, split, which=which)
            cols[f"{model} {which}"] = {k: v for k, v in r.summary.items() if k != "n_users"}
        _print_table(f"{model} on {data} (fit/load {secs:.1f}s)", cols)
    finally:
        cat.close()


def evaluate(
    model: str = _MODEL, data: str = _DATA, catalog: Optional[str] = _CATALOG, artifacts: str = _ARTIFACTS,
    set_: Optional[list[str]] = _SET, config: Optional[Path] = _CONFIG, epochs: Optional[int] = _EPOCHS,
    split_name: str = typer.Option("test", "--split", help="'test' or 'valid' targets"),
    exclude_history: bool = typer.Option(True, "--exclude-history/--no-exclude-history",
                                         help="exclude the user's history items from the ranking"),
) -> None:
    """Evaluate a policy with full ranking; print the table and store per-user metrics."""
    from policies import registry
    from policies.evaluate import evaluate as run_eval
    from policies.results import save_eval
    from policies.store import config_hash, fit_or_load

    if split_name not in ("test", "valid"):
        raise ConfigError(f"--split must be 'test' or 'valid', got {split_name!r}")
    overrides = parse_overrides(set_, config, epochs)
    cfg = registry.make_config(model, overrides)
    cat, ds, split = _load(data, catalog)
    try:
        pol = fit_or_load(model, ds, split, overrides, root=artifacts)
        t0 = time.perf_counter()
        r = run_eval(pol, split, which=split_name, exclude_history=exclude_history)
        secs = time.perf_counter() - t0
        eid = save_eval(cat, r, dataset=data, model=model, config_hash=config_hash(model, cfg), split=split_name,
                        exclude_history=exclude_history, history=getattr(pol, "history", []))
        _print_table(f"{model} on {data}, {split_name} ({int(r.summary['n_users'])} users, {secs:.2f}s)",
                     {model: {k: v for k, v in r.summary.items() if k != "n_users"}})
        typer.echo(f"eval_id {eid} -> {cat.path} (eval_summary, eval_results)")
    finally:
        cat.close()
