"""`sim ope` (mounted by cli.py): off-policy estimates of a target arm from a run's logs.

    sim ope --logs RUN_ID --target ARM [--logging ARM] [--alpha 0.05] [--format table|json]

The run must have logged with a stochastic arm (``explore``) and recorded the target's slates on
its requests (``[ope] targets``); see analysis/ope. Prints the target's estimated CTR and lift over
the logging policy for every estimator, with CI and effective sample size, and warnings on stderr.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from simulator.commands.analysis import _CATALOG, _connect
from simulator.core.errors import SimError


def ope(
    logs: str = typer.Option(..., "--logs", help="Run id whose logs carry propensities."),
    target: str = typer.Option(..., "--target", help="Arm of the run to evaluate off-policy."),
    logging: Optional[str] = typer.Option(None, "--logging", help="Logging arm (default: the arm with propensities)."),
    alpha: float = typer.Option(0.05, "--alpha", help="1 - confidence level of the intervals."),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    catalog: Optional[str] = _CATALOG,
) -> None:
    """Estimate a target arm's CTR from a run's exploration logs (OPE), every estimator side by side."""
    from analysis.ope.evaluate import evaluate
    from analysis.ope.logs import load_logs

    if fmt not in ("table", "json"):
        raise SimError(f"--format must be table or json, got {fmt!r}")
    if not 0 < alpha < 1:
        raise SimError(f"--alpha must be in (0, 1), got {alpha:g}")
    con = _connect(catalog)
    try:
        res = evaluate(load_logs(con, logs, target, logging), alpha)
    finally:
        con.close()
    for w in res.warnings:
        typer.secho(f"warning: {w}", err=True)
    if fmt == "json":
        typer.echo(json.dumps(res.to_dict(), indent=1))
        return
    typer.echo(_table(res, alpha))


def _table(res, alpha: float) -> str:
    level = f"{1 - alpha:.0%}"
    head = (f"off-policy estimates of arm {res.target!r} from arm {res.logging!r}'s logs (run {res.run_id}, "
            f"{res.n_requests:,} requests x {res.slate_size} positions)\n"
            f"logged CTR {res.logged_ctr.value:.4f} [{res.logged_ctr.ci_low:.4f}, {res.logged_ctr.ci_high:.4f}]")
    if res.true_ctr is not None:
        head += f"; world oracle: target CTR {res.true_ctr:.4f}, logging CTR {res.true_logged_ctr:.4f}"
    lines = [head, f"{'estimator':<11} {'kind':<8} {'CTR':>8} {level + ' CI':>19} {'lift':>9} "
             f"{level + ' CI (lift)':>21} {'ESS':>8} {'max w':>8}"]
    for r in res.rows:
        e, d = r.estimate, r.lift
        flag = " !" if e.heavy_weights else ""
        lines.append(f"{e.estimator:<11} {r.kind:<8} {e.value:8.4f} [{e.ci_low:8.4f}, {e.ci_high:8.4f}] "
                     f"{d.value:+9.4f} [{d.ci_low:+9.4f}, {d.ci_high:+9.4f}] {e.ess:8.0f} {e.max_weight:8.3g}{flag}")
    return "\n".join(lines)
