"""`sim report`, `sim query`, `sim power` (mounted by cli.py).

    sim report RUN_ID [--out reports] [--analysis-config a.json] [--format table|json]
    sim query "SELECT * FROM v_arm_summary" [--format table|csv|json|parquet] [--output FILE]
    sim power --baseline 0.05 --mde 0.02 [--kind proportion|mean --sd 1.2] [--n 5000]
    sim power --from-run RUN_ID --mde 0.02 | --n 5000     (the run's observed variance of its primary metric)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from simulator.core.errors import ConfigError, NotFoundError, SimError

_CATALOG = typer.Option(None, "--catalog", help="Catalog file (default $SIM_CATALOG or ./sim.duckdb).")
FORMATS = ("table", "csv", "json", "parquet")


def _connect(path: Optional[str]):
    """The catalog, read-only, with file access off (analysis never writes to it)."""
    from analysis.sqlguard import READ_ONLY_CONFIG
    from simulator.core.catalog import connect, default_catalog_path

    path = path or default_catalog_path()
    if not Path(path).exists():
        raise NotFoundError(f"catalog {path} does not exist")
    return connect(path, read_only=True, config=READ_ONLY_CONFIG)


def report(
    run_id: str = typer.Argument(..., help="Run id (see `sim query \"SELECT run_id FROM runs\"`)."),
    out: Path = typer.Option(Path("reports"), "--out", help="Reports folder (a sub-folder per run)."),
    analysis_config: Optional[Path] = typer.Option(None, "--analysis-config",
                                                   help="JSON: primary, guardrails, alpha, user-defined metrics."),
    fmt: str = typer.Option("table", "--format", help="table (the answer + effect table) | json (report.json)"),
    catalog: Optional[str] = _CATALOG,
) -> None:
    """Write the Markdown + self-contained HTML report (and report.json) of a run; print its answer."""
    from analysis.report import write_report

    if fmt not in ("table", "json"):
        raise ConfigError(f"--format must be table or json, got {fmt!r}")

    cfg = None
    if analysis_config is not None:
        if not analysis_config.exists():
            raise NotFoundError(f"analysis config {analysis_config} does not exist")
        try:
            cfg = json.loads(analysis_config.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{analysis_config}:{e.lineno}: invalid JSON: {e.msg}") from None
    from analysis.provenance import run_warnings
    from analysis.sqlguard import lock_down
    from analysis.srm import srm_for_run
    from analysis.views import install_views, run_info

    con = _connect(catalog)
    try:
        install_views(con)
        lock_down(con)  # user metric SQL runs here too: no file access, no settings changes
        for w in run_warnings(con, run_info(con, run_id)):  # unknown run id: one line, before anything else
            typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
        srm = srm_for_run(con, run_id)
        if srm.failed:
            typer.secho(f"WARNING: {srm.message()}", fg=typer.colors.RED, err=True)
        paths = write_report(con, run_id, out, cfg)
        if fmt == "table":
            typer.echo(paths["text"])
    finally:
        con.close()
    if fmt == "json":
        typer.echo(Path(paths["json"]).read_text())
        return
    typer.echo(f"report: {paths['html']}  ({paths['md']}, {paths['json']})")


QUERY_TIMEOUT_S = 300.0  # `sim query --timeout`: a query still running after this is stopped


def query(
    sql: str = typer.Argument(..., help="SQL over the catalog (views: v_user_metrics, v_arm_summary, ...)."),
    fmt: str = typer.Option("table", "--format", help="table | csv | json | parquet"),
    output: Optional[Path] = typer.Option(None, "--output", help="Write to this file instead of stdout."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --output file."),
    limit: int = typer.Option(200, "--limit", help="Rows shown in table format (files get all rows)."),
    timeout: float = typer.Option(QUERY_TIMEOUT_S, "--timeout", help="Stop a query still running after this many "
                                  "seconds (Ctrl-C stops it at once)."),
    catalog: Optional[str] = _CATALOG,
) -> None:
    """Run one read-only SQL statement on the catalog and print or save the result."""
    from analysis.sqlguard import check_query, lock_down
    from analysis.views import install_views

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "parquet" and output is None:
        raise ConfigError("--format parquet needs --output FILE")
    if not timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout:g}")
    sql = check_query(sql)  # one SELECT, or a one-line refusal before the catalog is touched
    con = _connect(catalog)
    check_output(output, force, catalog)
    try:
        try:
            install_views(con)  # TEMP views: the connection is read-only
        except NotFoundError:
            pass  # no runs yet: plain tables still queryable
        lock_down(con)
        table = run_interruptible(con, sql, timeout)
    finally:
        con.close()
    _emit(table, fmt, output, limit)


def check_output(output: Optional[Path], force: bool, catalog: Optional[str]) -> None:
    """Refuse, before the query runs, an --output that is the catalog (or its WAL), an existing
    file without --force, or a file in a folder that does not exist."""
    if output is None:
        return
    from simulator.core.catalog import default_catalog_path

    cat = Path(catalog or default_catalog_path()).resolve()
    target = output.resolve()
    if target in (cat, cat.with_name(cat.name + ".wal")):
        raise ConfigError(f"--output {output} is the catalog itself: choose another file")
    if not target.parent.is_dir():
        raise ConfigError(f"--output {output}: folder {output.parent} does not exist")
    if target.is_dir():
        raise ConfigError(f"--output {output} is a folder: give a file name")
    if target.exists() and not force:
        raise ConfigError(f"--output {output} exists: add --force to overwrite it")


def run_interruptible(con, sql: str, timeout: float):
    """The query's Arrow table; DuckDB runs it in a worker thread so that Ctrl-C / SIGTERM (exit
    130 / 143) and ``timeout`` stop it within a fraction of a second (``con.interrupt()``)."""
    import threading
    import time

    from analysis.sqlguard import explain_refusal

    box: dict = {}

    def work() -> None:
        try:
            box["table"] = con.sql(sql).to_arrow_table()
        except Exception as e:  # noqa: BLE001 - reported by the caller's thread
            box["error"] = e

    worker = threading.Thread(target=work, daemon=True)
    start = time.monotonic()
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.05)
            if time.monotonic() - start > timeout:
                con.interrupt()
                worker.join()
                raise SimError(f"query stopped after {timeout:g} s (--timeout; the default is {QUERY_TIMEOUT_S:g})")
    except BaseException:  # Ctrl-C / SIGTERM: stop DuckDB, then let the worker end before we exit
        con.interrupt()
        while worker.is_alive():
            try:
                worker.join(0.05)
            except BaseException:  # noqa: BLE001 - a second Ctrl-C: keep waiting (DuckDB stops in ms)
                con.interrupt()
        raise
    if "error" in box:
        e = box["error"]
        raise SimError(explain_refusal(e) or f"query failed: {str(e).strip().splitlines()[0]}") from None
    return box["table"]


def _emit(table, fmt: str, output: Optional[Path], limit: int) -> None:
    """Print or write a query result; files are written here, never by DuckDB."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, str(output))
        typer.echo(f"wrote {output} ({table.num_rows} rows)")
        return
    df = table.to_pandas()
    if fmt == "table":
        text = df.head(limit).to_string(index=False) + (f"\n... {len(df) - limit} more rows" if len(df) > limit else "")
    elif fmt == "csv":
        text = df.to_csv(index=False)
    else:
        text = df.to_json(orient="records", date_format="iso", indent=1)
    if output is not None:
        output.write_text(text)
        typer.echo(f"wrote {output} ({len(df)} rows)")
    else:
        typer.echo(text)


def power(
    baseline: Optional[float] = typer.Option(None, "--baseline", help="Control mean (a proportion for --kind proportion)."),
    mde: Optional[float] = typer.Option(None, "--mde", help="Relative lift to detect, e.g. 0.02 = +2%."),
    n: Optional[float] = typer.Option(None, "--n", help="Users per arm: report the MDE instead."),
    kind: str = typer.Option("proportion", "--kind", help="proportion | mean"),
    sd: Optional[float] = typer.Option(None, "--sd", help="Per-user standard deviation (mean metrics)."),
    alpha: float = typer.Option(0.05, "--alpha"),
    power_: float = typer.Option(0.8, "--power"),
    ratio: float = typer.Option(1.0, "--ratio", help="treatment users / control users"),
    from_run: Optional[str] = typer.Option(None, "--from-run", help="Plan from a finished (pilot) run: its primary "
                                           "metric's observed variance replaces --baseline/--kind/--sd."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    catalog: Optional[str] = _CATALOG,
) -> None:
    """Sample size per arm for a relative MDE, or the MDE for a given n (statsmodels power)."""
    from analysis.power import mde as mde_fn
    from analysis.power import sample_size

    if (mde is None) == (n is None):
        raise ConfigError("give exactly one of --mde (-> sample size) or --n (-> MDE)")
    label = f"{kind} metric"
    if from_run is not None:
        r, label = _plan_from_run(from_run, catalog, mde, n, alpha, power_)
    elif baseline is None:
        raise ConfigError("give --baseline (or --from-run RUN_ID)")
    elif mde is not None:
        r = sample_size(baseline, mde, kind=kind, sd=sd, alpha=alpha, power=power_, ratio=ratio)
    else:
        r = mde_fn(baseline, n, kind=kind, sd=sd, alpha=alpha, power=power_, ratio=ratio)
    if as_json:
        typer.echo(json.dumps(r.as_dict()))
        return
    typer.echo(f"{label}, baseline {r.baseline:g}, sd {r.sd:.4g}, alpha {alpha:g}, power {power_:g}")
    typer.echo(f"users per arm: {r.n_per_arm:,.0f}   MDE: {r.mde_rel * 100:+.2f}% relative ({r.mde_abs:+.4g} absolute)")


def _plan_from_run(run_id: str, catalog: Optional[str], mde: Optional[float], n: Optional[float], alpha: float,
                   power_: float):
    """Power plan at a finished run's observed variance of its primary metric (first treatment arm)."""
    from analysis.power import plan_from_run
    from analysis.report import summarize
    from analysis.sqlguard import lock_down

    con = _connect(catalog)
    try:
        lock_down(con)  # the run's analysis config may hold user metric SQL
        s = summarize(con, run_id)
    finally:
        con.close()
    prim = s[s["role"] == "primary"]
    if prim.empty or not prim["rel_se"].notna().any():
        raise SimError(f"run {run_id!r}: its primary metric has no standard error to plan from")
    r = prim.iloc[0]
    plan = plan_from_run(float(r.rel_se), float(min(r.n_control, r.n_treatment)), float(r.control), mde_rel=mde, n=n,
                         alpha=alpha, power=power_)
    return plan, f"{r.metric} (primary metric of run {run_id}, {r.arm} vs {r.control_arm})"
