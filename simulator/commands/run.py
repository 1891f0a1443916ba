"""`sim run`: run an A/B(/n) simulation and print the summary."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from simulator.core.errors import ConfigError, SimError


def build_config(treatment: Optional[str], control: Optional[str], arms: Optional[str], config: Optional[Path],
                 overrides: dict, n_items: Optional[int] = None):
    """The experiment config of a `sim run` command line; ``n_items`` (catalog size) caps the
    default arms' quotas. The same model twice (an A/A) names its arms ``m`` and ``m-b``."""
    from simulator.engine.config import QUICK_BUDGET, default_arm, load_config, parse_config

    if config is not None:
        cfg = load_config(config)
        if overrides:
            cfg = parse_config({**cfg.model_dump(mode="json"), **overrides}, str(config), _OPTION_NAMES)
        return cfg
    names: list[str]
    if arms:
        names = [a.strip() for a in arms.split(",") if a.strip()]
    else:
        names = [control or "sasrec", treatment or "hllm"]
    if len(names) < 2:
        raise ConfigError("need at least two arms (--treatment and --control, or --arms a,b[,c])")
    arm_cfgs = [{**default_arm(n, "control" if i == 0 else "treatment", n_items=n_items), "name": arm_name}
                for i, (n, arm_name) in enumerate(zip(names, _arm_names(names), strict=True))]
    used = {c["policy"] for a in arm_cfgs for c in a["channels"]}
    policies = {k: v for k, v in QUICK_BUDGET.items() if k in used}
    return parse_config({"name": f"{names[1]}-vs-{names[0]}", "arms": arm_cfgs, "policies": policies, **overrides},
                        "command line", _OPTION_NAMES)


def _arm_names(models: list[str]) -> list[str]:
    """Arm names for the models: a model's second use is ``m-b``, its third ``m-c``, ..."""
    seen: dict[str, int] = {}
    out = []
    for m in models:
        k = seen[m] = seen.get(m, -1) + 1
        out.append(m if k == 0 else f"{m}-{chr(ord('a') + k)}")
    return out


def run(
    treatment: Optional[str] = typer.Option(None, "--treatment", "-t", help="Treatment arm model (default hllm)."),
    control: Optional[str] = typer.Option(None, "--control", "-c", help="Control arm model (default sasrec)."),
    arms: Optional[str] = typer.Option(None, "--arms", help="Comma-separated models for A/B/n; the first is control."),
    config: Optional[Path] = typer.Option(None, "--config", help="Experiment config (TOML or YAML)."),
    design: Optional[str] = typer.Option(None, "--design", help="ab (default: each user hashed to one arm) | "
                                         "interleave (team-draft interleaving of the two arms in every slate)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset: 'synthetic' (default, world user model) or a catalog name such as 'ml-100k' (replay)."),
    user_model: Optional[str] = typer.Option(None, "--user-model", help="Who answers the slates: auto (default: "
                                             "world for synthetic data, replay for a log) | world | replay | learned "
                                             "(a user model fitted on the log; the oracle knows its truth)."),
    requests: Optional[int] = typer.Option(None, "--requests", "-n", help="Number of requests to simulate."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many simulated seconds."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    salt: Optional[str] = typer.Option(None, "--salt", help="Assignment salt (users hash to arms with it)."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="local | ray"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (implies --runtime ray)."),
    catalog: Optional[str] = typer.Option(None, "--catalog", help="Catalog DuckDB file (default ./sim.duckdb or $SIM_CATALOG)."),
    artifacts: Optional[str] = typer.Option(None, "--artifacts", help="Where trained arms are cached."),
    actors: Optional[int] = typer.Option(None, "--actors", help="Pipeline actors per arm (Ray)."),
    report_dir: Path = typer.Option(Path("reports"), "--out", "--report-dir",
                                    help="Reports folder (a sub-folder per run), as `sim report --out`.",
                                    show_default=True),
    resume: Optional[str] = typer.Option(None, "--resume", help="Finish an unfinished run by id (only its missing phases run)."),
    name: Optional[str] = typer.Option(None, "--name", help="A unique name for the run (usable as its id)."),
    tags: Optional[list[str]] = typer.Option(None, "--tag", help="A tag for the run (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run an A/B test in simulation, e.g. `sim run --treatment hllm --control sasrec`."""
    from simulator.core.errors import RunInterrupted
    from simulator.engine.run import resume_experiment, run_experiment

    ov = {k: v for k, v in {"design": design, "dataset": data, "user_model": user_model, "n_requests": requests,
                            "seed": seed, "salt": salt,
                            "artifacts": artifacts, "duration_s": duration, "actors_per_arm": actors,
                            "ray_address": ray_address,
                            "runtime": "ray" if ray_address and not runtime else runtime}.items() if v is not None}
    given = {"--treatment": treatment, "--control": control, "--arms": arms, "--config": config, "--name": name,
             "--tag": tags or None}
    check_options(ov, resume=resume, given=given)
    if not resume:
        build_config(treatment, control, arms, config, ov)  # every value checked before a file is touched
    written: dict = {}
    with opened_catalog(catalog) as cat:
        _check_name_free(cat, name)

        def report(run_id: str) -> None:
            _label(cat, run_id, name, tags)  # before the report, which shows them
            written.update(write_run_report(cat, run_id, report_dir))

        try:
            if resume:
                done = resume_experiment(resume, cat, progress=not quiet, report=report)
                run_id = done.run_id
                say_resumed(done, report_dir)
                if done.was_complete:
                    return
            else:
                cfg = build_config(treatment, control, arms, config, ov, _default_arm_items(config, data, cat))
                check_analysis_block(cfg)  # run_experiment validates the rest before any work
                run_id = run_experiment(cfg, cat, progress=not quiet, report=report)
        except RunInterrupted as e:
            if not resume:
                _label(cat, e.run_id, name, tags)
            verb = "terminated" if e.exit_code == 143 else "interrupted"
            typer.secho(f"\n{verb}: run {e.run_id} kept as incomplete; continue with `sim run --resume {e.run_id}`",
                        err=True)
            raise typer.Exit(e.exit_code) from None
        print_summary(cat, run_id, written)


def say_resumed(done, report_dir: Path) -> None:
    """One line: what the resume did (or that the run was already complete)."""
    if done.was_complete:
        typer.secho(f"run {done.run_id} is already complete: nothing to resume (its report: "
                    f"`sim report {done.run_id} --out {report_dir}`)", err=True)
    else:
        typer.secho(f"resumed run {done.run_id}: {', '.join(done.phases) or 'nothing'} done now; the run is complete",
                    err=True)


@contextmanager
def opened_catalog(path: Optional[str]):
    """The catalog, closed on exit; a catalog file this command created is removed again when the
    command is refused (exit 2: nothing written)."""
    from simulator.core import Catalog, default_catalog_path

    file = Path(path or default_catalog_path())
    existed = file.exists()
    cat = Catalog(str(file))
    try:
        yield cat
    except SimError:
        cat.close()
        if not existed:
            for f in (file, file.with_name(file.name + ".wal")):
                f.unlink(missing_ok=True)
        raise
    finally:
        cat.close()  # now, not whenever the garbage collector gets to it: other commands may open the file


def _check_name_free(cat, name: Optional[str]) -> None:
    """A run name must be unique (a name finds one run): refused before any work."""
    from simulator.core.runs import resolve_run

    if name is None:
        return
    if name == "latest" or not name.strip():
        raise ConfigError(f"--name cannot be {name!r}")
    try:
        other = resolve_run(cat.con, name)
    except SimError:
        return
    if other == name or _name_of(cat, other) == name:
        raise ConfigError(f"--name {name!r} is taken by run {other}; choose another (or `sim runs rename`)")


def _name_of(cat, run_id: str) -> Optional[str]:
    from simulator.core.runs import labels

    return labels(cat.con, run_id)[0]


def _label(cat, run_id: str, name: Optional[str], tags: Optional[list[str]]) -> None:
    if name is not None or tags:
        from simulator.engine.store import RunStore

        RunStore(cat.con, run_id).set_labels(name=name, add=tuple(tags or ()))


_OPTION_NAMES = {"design": "--design", "dataset": "--data", "user_model": "--user-model", "n_requests": "--requests",
                 "seed": "--seed",
                 "salt": "--salt", "artifacts": "--artifacts", "duration_s": "--duration",
                 "actors_per_arm": "--actors", "ray_address": "--ray-address", "runtime": "--runtime"}


def check_options(ov: dict, *, resume: Optional[str], given: dict) -> None:
    """What the config model cannot check: --resume with other settings, a reachable Ray address.
    Every value itself is checked by the config model (``flag_error`` names the flag)."""
    if resume:
        extra = [_OPTION_NAMES[k] for k in ov] + [k for k, v in given.items() if v is not None]
        if extra:
            raise ConfigError(f"--resume continues run {resume} with its own settings; {', '.join(extra)} cannot "
                              "change it (start a new run to use other settings)")
        return
    if ov.get("ray_address") not in (None, "auto", "local"):
        from simulator.engine.raycluster import check_reachable

        check_reachable(ov["ray_address"])  # before training: a wrong address fails in seconds


def _default_arm_items(config: Optional[Path], data: Optional[str], cat) -> Optional[int]:
    """Catalog size for the default arms (None with --config: the config sets its own quotas)."""
    if config is not None:
        return None
    from simulator.engine.config import DEFAULT_QUOTA
    from simulator.engine.run import dataset_size

    n = dataset_size(data or "synthetic", cat)
    if n is not None and n < DEFAULT_QUOTA:
        typer.secho(f"note: dataset {data or 'synthetic'!r} has {n} items: the default arms' channel quotas "
                    f"are capped at {n} (set quotas with --config for full control)", err=True)
    return n


def check_analysis_block(cfg) -> None:
    """The run config's ``analysis`` block, checked before any work so a typo cannot surface only
    after the run (the command layer: the simulator itself knows nothing of the analysis)."""
    if cfg.analysis is not None:
        from analysis.report import analysis_config, metric_list

        metric_list(analysis_config({}, cfg.analysis))


def write_run_report(cat, run_id: str, report_dir: Path) -> dict:
    """The report phase of a run: write the report (its paths and console text), or, if the analysis
    fails, a warning (the run's events are safe; `sim report` can try again)."""
    from analysis.report import write_report
    from simulator.commands.common import store_effects

    try:
        paths = write_report(cat.con, run_id, report_dir)
        store_effects(cat.path, run_id, paths["report"], con=cat.con)
        return paths
    except Exception as e:  # noqa: BLE001 - the run's events are safe; fall back to the plain summary
        typer.secho(f"warning: analysis report failed ({type(e).__name__}: {e}); plain summary follows",
                    err=True, fg=typer.colors.YELLOW)
        return {}


def print_summary(cat, run_id: str, paths: dict) -> None:
    """Print the answer and the effect table (from the report), or a plain summary without one."""
    if paths:
        typer.echo(paths["text"])
        typer.echo(f"\nrun {run_id}\nreport: {paths.get('html')}  ({paths.get('md')}, {paths.get('json')})")
        return
    rows = cat.con.execute("SELECT arm, count(DISTINCT user_id), count(*) FROM requests WHERE run_id = ? "
                           "GROUP BY arm ORDER BY arm", [run_id]).fetchall()
    typer.echo(f"run {run_id} (no report: try `sim report {run_id}`)")
    for arm, users, n in rows:
        typer.echo(f"  {arm}: {users:,} users, {n:,} requests")
