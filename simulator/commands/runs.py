"""`sim runs`: find, label, compare and delete runs (mounted by cli.py).

    sim runs list [--dataset D] [--design ab|interleave] [--arm A] [--tag T] [--status S] [--limit N]
    sim runs show RUN                 (RUN: a full id, a unique prefix, a short id, a name, or 'latest')
    sim runs compare RUN RUN [RUN...] effects side by side, then the configs' differences
    sim runs tag RUN TAG... [--remove]   sim runs rename RUN NAME   sim runs rm RUN... [--force]
    sim runs page [--out reports]     one HTML page of all runs (reports/index.html)
"""

from __future__ import annotations

import json
import shutil
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from simulator.commands.common import read_catalog, write_catalog

app = typer.Typer(help="List, show, compare, tag, rename and delete runs.", no_args_is_help=True)
_CATALOG = typer.Option(None, "--catalog", help="Catalog file (default $SIM_CATALOG or ./sim.duckdb).")


class Design(str, Enum):
    ab = "ab"
    interleave = "interleave"


def _read(catalog: Optional[str]):
    return read_catalog(catalog)


def _write(catalog: Optional[str]):
    return write_catalog(catalog)


def print_table(df, title: Optional[str] = None, drop: tuple[str, ...] = ()) -> None:
    """A DataFrame as a rich table fitted to the terminal (columns in ``drop`` go first; NULL = '-')."""
    from rich.console import Console

    from analysis.report.render import fitted_table

    console = Console(width=shutil.get_terminal_size((120, 24)).columns, highlight=False)
    if title:
        console.print(title, markup=False)
    rows = [[_cell(v) for v in row] for row in df.itertuples(index=False)]
    console.print(fitted_table(console.width, [str(c) for c in df.columns], rows, drop))


def _cell(v) -> str:
    import numpy as np
    import pandas as pd

    if isinstance(v, (list, tuple, np.ndarray)):
        return ",".join(map(str, list(v)))
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if hasattr(v, "isoformat"):
        return v.isoformat(sep=" ", timespec="seconds")
    return str(v)


def _lift(run) -> str:
    """The primary's relative lift; an interleaving run's preference share (its lift is undefined)."""
    import pandas as pd

    if run.primary == "preference" and pd.isna(run.rel_lift) and not pd.isna(run.abs_lift):
        return f"{(0.5 + run.abs_lift) * 100:.1f}% pref"
    return _pct(run.rel_lift)


def _pct(v) -> str:
    import pandas as pd

    return "-" if v is None or pd.isna(v) else f"{v * 100:+.2f}%"


@app.command("list")
def list_(
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Only runs on this dataset."),
    design: Optional[Design] = typer.Option(None, "--design", help="Only runs of this design."),
    arm: Optional[str] = typer.Option(None, "--arm", help="Only runs with an arm of this name."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Only runs with this tag."),
    status: Optional[str] = typer.Option(None, "--status", help="complete | incomplete | running | failed"),
    limit: int = typer.Option(20, "--limit", help="Newest runs shown.", show_default=True),
    fmt: str = typer.Option("table", "--format", help="table | json", show_default=True),
    catalog: Optional[str] = _CATALOG,
) -> None:
    """Runs, newest first, with their primary metric's result (from the last report)."""
    from simulator.core.runs import filter_runs, list_runs

    con = _read(catalog)
    try:
        df = filter_runs(list_runs(con), dataset=dataset, design=design.value if design else None, arm=arm,
                         tag=tag, status=status).head(limit)
    finally:
        con.close()
    if fmt == "json":
        typer.echo(df.to_json(orient="records", date_format="iso", indent=1))
        return
    if df.empty:
        typer.echo("no runs match")
        return
    df = df.assign(rel_lift=[_lift(r) for r in df.itertuples()], started_at=df["started_at"].map(_cell))
    df = df.drop(columns=["run_id", "higher_is_better", "abs_lift"]).rename(columns={"short_id": "id", "started_at": "started", "n_requests": "requests",
                                                     "rel_lift": "lift"})
    print_table(df, drop=("p", "requests", "arms", "design", "tags", "started", "name", "dataset", "primary"))


@app.command("show")
def show(run: str = typer.Argument(..., help="Run id, prefix, short id, name or 'latest'."),
         catalog: Optional[str] = _CATALOG) -> None:
    """One run: its record, labels, effects (from its last report) and where its report is."""
    from simulator.core.runs import labels, list_runs, resolve_run

    con = _read(catalog)
    try:
        rid = resolve_run(con, run)
        row = list_runs(con).set_index("run_id").loc[rid]
        name, tags = labels(con, rid)
        effects = _effects(con, [rid])
    finally:
        con.close()
    typer.echo(f"run {rid}  (id {row['short_id']}{', name ' + name if name else ''})")
    for k in ("dataset", "design", "arms", "status", "started_at", "n_requests"):
        typer.echo(f"  {k:<11} {_cell(row[k])}")
    typer.echo(f"  {'tags':<11} {', '.join(tags) or '-'}")
    if effects.empty:
        typer.echo(f"no effects stored yet: `sim report {row['short_id']}` writes them")
        return
    e = effects.assign(rel_lift=effects["rel_lift"].map(_pct),
                       ci=[f"[{_pct(lo)}, {_pct(hi)}]" for lo, hi in zip(effects["rel_ci_low"],
                                                                     effects["rel_ci_high"], strict=True)])
    print_table(e[["metric", "role", "arm", "rel_lift", "ci", "p_adj", "result", "note"]], title="effects")


def _effects(con, run_ids: list[str]):
    return con.execute("SELECT * FROM effects WHERE list_contains(?, run_id) ORDER BY run_id, "
                       "CASE role WHEN 'primary' THEN 0 WHEN 'guardrail' THEN 1 ELSE 2 END, metric, arm",
                       [run_ids]).df()


def _flat(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True) if isinstance(v, (list, tuple)) else v
    return out


def config_diff(configs: dict[str, dict]) -> list[dict]:
    """The config keys (flattened, a.b.c) whose values differ between runs."""
    flat = {r: _flat(c) for r, c in configs.items()}
    keys = sorted(set().union(*flat.values()))
    return [{"key": k, **{r: flat[r].get(k, "-") for r in flat}} for k in keys
            if len({json.dumps(flat[r].get(k), default=str) for r in flat}) > 1]


@app.command("compare")
def compare(runs: list[str] = typer.Argument(..., help="Two or more runs (ids, prefixes, names, 'latest')."),
            catalog: Optional[str] = _CATALOG) -> None:
    """Effects of several runs side by side (relative lift [95% CI] and result), then their config diff."""
    import pandas as pd

    from analysis.views import run_config
    from simulator.core.errors import ConfigError
    from simulator.core.runs import resolve_run, short_id

    if len(runs) < 2:
        raise ConfigError("compare needs at least two runs")
    con = _read(catalog)
    try:
        ids = list(dict.fromkeys(resolve_run(con, r) for r in runs))
        eff = _effects(con, ids)
        cfgs = {short_id(r): run_config({"config_json": con.execute(
            "SELECT config_json FROM runs WHERE run_id = ?", [r]).fetchone()[0]}) for r in ids}
    finally:
        con.close()
    if len(ids) < 2:
        raise ConfigError(f"compare needs two different runs; {', '.join(runs)} all refer to {ids[0]}")
    eff["cell"] = [f"{_pct(v)} [{_pct(lo)}, {_pct(hi)}] {res or ''}".strip() for v, lo, hi, res in
                   zip(eff["rel_lift"], eff["rel_ci_low"], eff["rel_ci_high"], eff["result"], strict=True)]
    eff["run"] = eff["run_id"].map(short_id)
    if eff.empty:
        typer.echo("no effects stored for these runs yet (`sim report RUN` writes them)")
    else:
        side = eff.pivot_table(index=["metric", "arm"], columns="run", values="cell", aggfunc="first")
        side = side.reindex(columns=[short_id(r) for r in ids]).reset_index().fillna("-")
        print_table(side, title="relative lift [95% CI] result, per run")
    diff = config_diff(cfgs)
    if diff:
        print_table(pd.DataFrame(diff), title="config differences")
    else:
        typer.echo("configs: identical")


@app.command("tag")
def tag(run: str = typer.Argument(..., help="Run id, prefix, short id, name or 'latest'."),
        tags: list[str] = typer.Argument(..., help="Tags to add (or remove with --remove)."),
        remove: bool = typer.Option(False, "--remove", help="Remove these tags instead."),
        catalog: Optional[str] = _CATALOG) -> None:
    """Add (or remove) tags of a run."""
    from simulator.core.runs import resolve_run
    from simulator.engine.store import RunStore

    con = _write(catalog)
    try:
        rid = resolve_run(con, run)
        _, now = RunStore(con, rid).set_labels(add=() if remove else tuple(tags), remove=tuple(tags) if remove else ())
    finally:
        con.close()
    typer.echo(f"run {rid}: tags {', '.join(now) or '(none)'}")


@app.command("rename")
def rename(run: str = typer.Argument(..., help="Run id, prefix, short id, name or 'latest'."),
           name: str = typer.Argument(..., help="The run's new name (unique)."),
           catalog: Optional[str] = _CATALOG) -> None:
    """Give a run a name (usable wherever a run id is)."""
    from simulator.core.runs import resolve_run
    from simulator.engine.store import RunStore

    con = _write(catalog)
    try:
        rid = resolve_run(con, run)
        RunStore(con, rid).set_labels(name=name)
    finally:
        con.close()
    typer.echo(f"run {rid}: named {name!r}")


@app.command("rm")
def rm(runs: list[str] = typer.Argument(..., help="Runs to delete (ids, prefixes, names, 'latest')."),
       force: bool = typer.Option(False, "--force", help="Also delete a run marked running (killed)."),
       catalog: Optional[str] = _CATALOG) -> None:
    """Delete runs with all their events, truth and effects (report folders are left alone)."""
    from simulator.core.runs import resolve_run
    from simulator.engine.store import RunStore

    con = _write(catalog)
    try:
        ids = list(dict.fromkeys(resolve_run(con, r) for r in runs))  # every reference checked before any delete
        for rid in ids:
            counts = RunStore(con, rid).delete(force=force)
            typer.echo(f"deleted run {rid} ({sum(counts.values()):,} rows)")
    finally:
        con.close()


@app.command("page")
def page(out: Path = typer.Option(Path("reports"), "--out", help="Reports folder: the page is <out>/index.html.",
                                  show_default=True),
         catalog: Optional[str] = _CATALOG) -> None:
    """Write one self-contained HTML page of all runs (sortable, filterable, linked to their reports)."""
    from analysis.report.index import render_runs_page
    from simulator.commands.common import catalog_path
    from simulator.core.runs import list_runs

    con = _read(catalog)
    try:
        runs = list_runs(con)
        effects = _effects(con, list(runs["run_id"]))
    finally:
        con.close()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(render_runs_page(runs, effects, out, catalog_path(catalog)))
    typer.echo(f"runs page: {path} ({len(runs)} runs)")
