"""`sim run`: run an A/B(/n) simulation and print the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from simulator.core.errors import ConfigError


def build_config(treatment: Optional[str], control: Optional[str], arms: Optional[str], config: Optional[Path],
                 overrides: dict, n_items: Optional[int] = None):
    """The experiment config of a `sim run` command line; ``n_items`` (catalog size) caps the
    default arms' quotas."""
    from simulator.engine.config import default_arm, load_config, parse_config

    if config is not None:
        cfg = load_config(config)
        if overrides:
            cfg = parse_config({**cfg.model_dump(mode="json"), **overrides}, str(config))
        return cfg
    names: list[str]
    if arms:
        names = [a.strip() for a in arms.split(",") if a.strip()]
    else:
        names = [control or "sasrec", treatment or "hllm"]
    if len(names) < 2:
        raise ConfigError("need at least two arms (--treatment and --control, or --arms a,b[,c])")
    if len(set(names)) != len(names):
        raise ConfigError(f"arm names must differ, got {names}")
    arm_cfgs = [default_arm(n, "control" if i == 0 else "treatment", n_items=n_items) for i, n in enumerate(names)]
    used = {c["policy"] for a in arm_cfgs for c in a["channels"]}
    policies = {k: v for k, v in QUICK_BUDGET.items() if k in used}
    return parse_config({"name": f"{names[1]}-vs-{names[0]}", "arms": arm_cfgs, "policies": policies, **overrides},
                        "command line")


# the quick budget: what the no-config `sim run` trains (a few minutes on 2 cores, training included),
# named overrides of each policy's own defaults; HLLM's is its "quick" preset (hllm.recipe.PRESETS)
QUICK_BUDGET = {"sasrec": {"epochs": 10, "patience": 2}, "hstu": {"epochs": 10, "patience": 2},
                "hllm": {"preset": "quick"}}


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
    runtime: Optional[str] = typer.Option(None, "--runtime", help="local | ray"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (implies --runtime ray)."),
    catalog: Optional[str] = typer.Option(None, "--catalog", help="Catalog DuckDB file (default ./sim.duckdb or $SIM_CATALOG)."),
    artifacts: Optional[str] = typer.Option(None, "--artifacts", help="Where trained arms are cached."),
    actors: Optional[int] = typer.Option(None, "--actors", help="Pipeline actors per arm (Ray)."),
    report_dir: Path = typer.Option(Path("reports"), "--report-dir", help="Where the report is written."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue an incomplete run by id."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run an A/B test in simulation, e.g. `sim run --treatment hllm --control sasrec`."""
    from simulator.core import Catalog
    from simulator.core.errors import RunInterrupted
    from simulator.engine.run import resume_experiment, run_experiment, validate

    ov = {k: v for k, v in {"design": design, "dataset": data, "user_model": user_model, "n_requests": requests, "seed": seed, "artifacts": artifacts,
                            "duration_s": duration, "actors_per_arm": actors, "ray_address": ray_address,
                            "runtime": "ray" if ray_address and not runtime else runtime}.items() if v is not None}
    check_options(ov, resume=resume, given={"--treatment": treatment, "--control": control, "--arms": arms,
                                             "--config": config})
    cat = Catalog(catalog)
    try:
        try:
            if resume:
                run_id = resume_experiment(resume, cat, progress=not quiet)
            else:
                cfg = build_config(treatment, control, arms, config, ov, _default_arm_items(config, data, cat))
                validate(cfg, cat)  # unknown policy / dataset, impossible quotas: one line, before any work
                check_analysis_block(cfg)
                run_id = run_experiment(cfg, cat, progress=not quiet)
        except RunInterrupted as e:
            verb = "terminated" if e.exit_code == 143 else "interrupted"
            typer.secho(f"\n{verb}: run {e.run_id} kept as incomplete; continue with `sim run --resume {e.run_id}`",
                        err=True)
            raise typer.Exit(e.exit_code) from None
        summarize_run(cat, run_id, report_dir)
    finally:
        cat.close()  # now, not whenever the garbage collector gets to it: other commands may open the file


_OPTION_NAMES = {"design": "--design", "dataset": "--data", "user_model": "--user-model", "n_requests": "--requests", "seed": "--seed", "artifacts": "--artifacts",
                 "duration_s": "--duration", "actors_per_arm": "--actors", "ray_address": "--ray-address",
                 "runtime": "--runtime"}


def check_options(ov: dict, *, resume: Optional[str], given: dict) -> None:
    """Command-line values checked before anything is opened or written (one line each)."""
    if resume:
        extra = [_OPTION_NAMES[k] for k in ov] + [k for k, v in given.items() if v is not None]
        if extra:
            raise ConfigError(f"--resume continues run {resume} with its own settings; {', '.join(extra)} cannot "
                              "change it (start a new run to use other settings)")
        return
    if ov.get("seed", 0) < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {ov['seed']}")
    if ov.get("n_requests", 1) < 1:
        raise ConfigError(f"--requests must be at least 1, got {ov['n_requests']}")
    if ov.get("duration_s", 1.0) <= 0:
        raise ConfigError(f"--duration must be positive, got {ov['duration_s']:g}")
    if ov.get("actors_per_arm", 1) < 1:
        raise ConfigError(f"--actors must be at least 1, got {ov['actors_per_arm']}")
    if ov.get("design") not in (None, "ab", "interleave"):
        raise ConfigError(f"--design must be ab or interleave, got {ov['design']!r}")
    if ov.get("user_model") is not None:  # before any work (the dataset's notes included)
        from simulator.engine.config import _one_of
        from simulator.engine.scenario import SCENARIOS

        try:
            _one_of(ov["user_model"], ("auto", *SCENARIOS), "--user-model")
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if ov.get("runtime") not in (None, "local", "ray"):
        raise ConfigError(f"--runtime must be local or ray, got {ov['runtime']!r}")
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


def summarize_run(cat, run_id: str, report_dir: Path) -> None:
    """Print the answer and the effect table and write the report, or (if the analysis fails) a plain summary."""
    from analysis.report import write_report

    try:
        paths = write_report(cat.con, run_id, report_dir)
        typer.echo(paths["text"])
        typer.echo(f"\nrun {run_id}\nreport: {paths.get('html')}  ({paths.get('md')}, {paths.get('json')})")
        return
    except Exception as e:  # noqa: BLE001 - the run's events are safe; fall back to the plain summary
        typer.secho(f"warning: analysis report failed ({type(e).__name__}: {e}); plain summary follows",
                    err=True, fg=typer.colors.YELLOW)
    rows = cat.con.execute("""
        SELECT r.arm, count(DISTINCT r.user_id) AS users, count(*) AS requests,
               count(f.request_id) AS clicks, round(count(f.request_id) / count(*), 4) AS ctr_per_request,
               round(median(r.latency_ms), 3) AS p50_ms
        FROM requests r LEFT JOIN feedback f
          ON f.run_id = r.run_id AND f.request_id = r.request_id AND f.event = 'click'
        WHERE r.run_id = ? GROUP BY r.arm ORDER BY r.arm""", [run_id]).fetchall()
    typer.echo(f"run {run_id}")
    typer.echo(f"{'arm':<14}{'users':>8}{'requests':>10}{'clicks':>8}{'ctr':>8}{'p50 ms':>9}")
    for r in rows:
        typer.echo(f"{r[0]:<14}{r[1]:>8}{r[2]:>10}{r[3]:>8}{r[4]:>8}{r[5]:>9}")
