"""One renderer per output format, each from the typed Report: HTML and Markdown from jinja2
templates (templates/; HTML autoescaped), JSON = the model's dump, the console with rich."""

from __future__ import annotations

import io
import json
import shutil

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from ..segments import segment_text
from .designs import Analysis
from .model import Report

DECISION_RULE = ("Decision rule: the primary metric (*) is tested at alpha; secondary metrics are corrected among "
                 "themselves (p adj); guardrails are one-sided non-inferiority tests with a relative margin "
                 "(ok = not worse than the margin, violated = worse than the margin). Levels are the raw arm "
                 "values; lifts are CUPED-adjusted where a pre-period covariate exists, relative to the raw "
                 "control value. Latency is tested on its mean over serving batches, not users; it is the "
                 "request path's time, and 'nearline ms' the arm's work outside it (a user-embedding "
                 "table's refresh), which a deployment runs apart. Only "
                 "significant results are coloured (green = good for the product, red = bad).")
INTERLEAVE_TEXT = ("Every request showed one slate drafted from both rankers (team draft, a fair coin deciding who "
                   "picks first when the teams are even). A request is won by the team with more clicks; the "
                   "preference share is the treatment's wins over all decided requests, with a delta-method CI over "
                   "users and a z-test against 0.5; the sign test compares the users who preferred each team.")
ORACLE_TEXT = ("Each arm's value if every user were served by it, from the synthetic world's choice "
               "probabilities (counterfactual passes over the run's window; ± Monte-Carlo standard error, from one pass "
               "an upper bound: it also counts how users differ). "
               "The 'true lift' column of the effects compares these.")
CHANNEL_TEXT = ("Each channel's share of an arm's exposures and clicks: an item found by several retrieval "
                "channels counts for each of them, so an arm's shares can add up to more than 100%; 'credited' "
                "is the one channel the merge's de-duplication kept (the first in priority).")
LABELS = {"consumption_per_user": "consumption/user", "session_length": "session len", "ctr": "CTR",
          "ndcg": "NDCG", "latency_mean_ms": "mean ms", "latency_p50_ms": "p50 ms", "latency_p99_ms": "p99 ms",
          "nearline_mean_ms": "nearline ms",
          "exposure_share": "share of exposures", "click_share": "share of clicks",
          "only_exposures": "found by it alone", "credited_exposures": "credited"}


OPTIONAL_COLUMNS = ("nearline_mean_ms",)  # shown only where some arm has a value other than 0


def fmt(v, kind: str = "num") -> str:
    """One cell: '–' for a value that could not be estimated (the row's note says why)."""
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, bool) or isinstance(v, str):
        return str(v)
    if kind == "pct":
        return f"{v * 100:+.2f}%"
    if kind == "share":
        return f"{v * 100:.1f}%"
    if kind == "p":
        return "<1e-4" if v < 1e-4 else f"{v:.4f}"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1000):
        return f"{int(v):,}"
    return f"{v:.4g}"


def cell(v, column: str) -> str:
    """A table cell: shares (columns named ``*_share``) as percentages, anything else by ``fmt``."""
    return fmt(v, "share" if column.endswith("_share") else "num")


def _env() -> Environment:
    env = Environment(loader=PackageLoader("analysis.report", "templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html", "html.j2"]), trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters.update(fmt=fmt, pct=lambda v: fmt(v, "pct"), pval=lambda v: fmt(v, "p"),
                       label=lambda c: LABELS.get(c, c), cell=cell)
    env.globals.update(CHANNEL_TEXT=CHANNEL_TEXT, DECISION_RULE=DECISION_RULE, INTERLEAVE_TEXT=INTERLEAVE_TEXT, ORACLE_TEXT=ORACLE_TEXT)
    return env


ENV = _env()


def _context(report: Report, analysis: Analysis, images: dict[str, str]) -> dict:
    truth = _truth_pivot(report)
    return {"r": report, "a": analysis, "images": images, "truth": truth,
            "arms_cols": [c for c in analysis.arms_columns if report.arms and c in report.arms[0]
                          and (c not in OPTIONAL_COLUMNS or any(a.get(c) for a in report.arms))],
            "has_truth": any(e.true_rel_lift is not None for e in report.effects),
            "multi": len({e.arm for e in report.effects}) > 1,
            "pipelines": [{"arm": a, "pipeline": " -> ".join(st) or "?"} for a, st in report.pipelines.items()],
            "config": json.dumps(report.config, indent=2, sort_keys=True)}


def _truth_pivot(report: Report) -> list[dict]:
    """World oracle: one row per metric, one 'value ± se' cell per arm."""
    rows: dict[str, dict] = {}
    for t in report.truth:
        se = t.get("se")
        cell = fmt(t.get("value")) + (f" ± {se:.2g}" if isinstance(se, float) and se == se else "")
        rows.setdefault(str(t["metric"]), {"metric": t["metric"]})[str(t["arm"])] = cell
    return list(rows.values())


def render_html(report: Report, analysis: Analysis, images: dict[str, str]) -> str:
    """A self-contained page (images as data: URIs)."""
    return ENV.get_template("report.html.j2").render(**_context(report, analysis, images))


def render_markdown(report: Report, analysis: Analysis, images: dict[str, str]) -> str:
    return ENV.get_template("report.md.j2").render(**_context(report, analysis, images))


def render_json(report: Report) -> str:
    return report.model_dump_json(indent=1)


def _numeric(cell: str) -> bool:
    return cell.strip("[]+-%<., /0123456789e") == "" and any(ch.isdigit() for ch in cell)


DROP_ORDER = ("treatment", "control", "wins/losses/ties", "sign test p", "n c/t", "users", "arm")


def _table(cols: list[str], rows: list[list[str]]):
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for i, c in enumerate(cols):
        numeric = bool(rows) and _numeric(rows[0][i])
        table.add_column(c, overflow="fold", justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*row)
    return table


def fitted_table(width: int, cols: list[str], rows: list[list[str]], drop: tuple[str, ...] = DROP_ORDER):
    """A rich table without its least needed columns (``drop``, in order) until it fits ``width``."""
    keep = list(range(len(cols)))
    for name in (None, *drop):
        if name in cols and cols.index(name) in keep:
            keep.remove(cols.index(name))
        natural = sum(max(len(x) for x in [cols[i], *(r[i] for r in rows)]) for i in keep) + 2 * (len(keep) - 1)
        if natural <= width:
            break
    return _table([cols[i] for i in keep], [[r[i] for i in keep] for r in rows])


def render_console(report: Report, analysis: Analysis, width: int | None = None) -> str:
    """The answer first, then the design's table (rich, fitted to the terminal's width)."""
    from rich.console import Console

    cols, rows, legend = analysis.console_table(report)
    notes: list[str] = []
    if "note" in cols:  # notes as numbered footnotes: a long note cannot crush the table
        i = cols.index("note")
        for row in rows:
            if row[i]:
                notes.append(f"[{len(notes) + 1}] {row[0]}: {row[i]}")
                row[i] = f"[{len(notes)}]"
    buf = io.StringIO()
    width = width or shutil.get_terminal_size((120, 24)).columns
    con = Console(file=buf, width=width, no_color=True, highlight=False, soft_wrap=False, emoji=False,
                  markup=False)
    table = fitted_table(con.width, cols, rows)
    for line in report.headline:
        con.print(line, markup=False)
    con.print()
    con.print(table)
    for n in notes:
        con.print(n, markup=False)
    con.print(f"({legend})", markup=False)
    seg = segment_text(report.segments, report.sequential.metric) if report.segments else ""
    if seg:
        con.print()
        con.print(seg, markup=False)
    return buf.getvalue().rstrip("\n")
