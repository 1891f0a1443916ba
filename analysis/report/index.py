"""The runs page: one self-contained HTML page of every run of a catalog (sortable, filterable,
each run linked to its report, a side-by-side view of selected runs). ``sim runs page`` writes it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd

from .build import package_version
from .render import ENV

COLUMNS = [("short_id", "id"), ("name", "name"), ("tags", "tags"), ("dataset", "dataset"), ("design", "design"),
           ("arms", "arms"), ("status", "status"), ("started_at", "started"), ("n_requests", "requests"),
           ("primary", "primary"), ("rel_lift", "lift"), ("p", "p"), ("result", "result")]


def _records(df: pd.DataFrame) -> list[dict]:
    return json.loads(df.to_json(orient="records", date_format="iso"))  # NaN -> null, timestamps -> ISO


def summary_line(runs: pd.DataFrame) -> str:
    """The page's answer: how many runs, how many decided, and the newest run's primary result."""
    if runs.empty:
        return "No runs in this catalog yet: start one with `sim run`."
    decided = int((runs["result"] == "significant").sum())
    new = runs.iloc[0]
    who = new["name"] if isinstance(new["name"], str) and new["name"] else new["short_id"]
    lift = "" if pd.isna(new["rel_lift"]) else f" {new['primary']} {new['rel_lift'] * 100:+.2f}%"
    verdict = new["result"] or ("not significant" if not pd.isna(new["rel_lift"]) else "no report yet")
    return (f"{len(runs)} runs, {decided} with a significant primary result; newest: {who} "
            f"({new['status']}){lift}, {verdict}.")


def render_runs_page(runs: pd.DataFrame, effects: pd.DataFrame, out_dir: Path, catalog: str) -> str:
    """The page's HTML; ``runs`` as ``simulator.core.runs.list_runs`` gives them, newest first."""
    data = {"runs": _records(runs), "effects": _records(effects.drop(columns=["written_at"], errors="ignore"))}
    for r in data["runs"]:
        rep = Path(out_dir) / r["run_id"] / "report.html"
        r["report"] = f"{r['run_id']}/report.html" if rep.exists() else None
        r["higher_is_better"] = r.get("higher_is_better") is not False
    return ENV.get_template("runs.html.j2").render(
        data=data, columns=COLUMNS, summary=summary_line(runs), catalog=catalog,
        statuses=sorted({r["status"] for r in data["runs"] if r["status"]}), version=package_version(),
        written=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
