"""Write a run's report folder: report.md (+ PNGs), a self-contained report.html, report.json."""

from __future__ import annotations

import base64
from contextlib import contextmanager
from pathlib import Path

from .. import plots
from ..views import AnalysisConfig
from .build import build_report
from .designs import Analysis
from .model import Report
from .render import render_console, render_html, render_json, render_markdown


@contextmanager
def connection(catalog_or_con):
    """A DuckDB connection from a catalog path (opened and closed here), a Catalog or a connection."""
    if isinstance(catalog_or_con, (str, Path)):
        from simulator.core.catalog import connect

        con = connect(str(catalog_or_con))
        try:
            yield con
        finally:
            con.close()
    else:
        yield getattr(catalog_or_con, "con", catalog_or_con)


def make_plots(con, run_id: str, report: Report, analysis: Analysis) -> dict[str, bytes]:
    """The design's plots first, then those every run has."""
    out = analysis.plots(con, run_id, report)
    out.update(cumulative=plots.cumulative(con, run_id), channels=plots.channels(con, run_id),
               latency=plots.latency(con, run_id))
    return out


def write_report(catalog_or_con, run_id: str, out_dir, config: AnalysisConfig | dict | None = None) -> dict:
    """Write ``<out_dir>/<run_id>/``; returns the paths, the console text and the Report."""
    with connection(catalog_or_con) as con:
        report, analysis = build_report(con, run_id, config)
        pngs = make_plots(con, run_id, report, analysis)
    out = Path(out_dir) / str(run_id)
    out.mkdir(parents=True, exist_ok=True)
    for name, png in pngs.items():
        (out / f"{name}.png").write_bytes(png)
    md, html, js = out / "report.md", out / "report.html", out / "report.json"
    md.write_text(render_markdown(report, analysis, {k: f"{k}.png" for k in pngs}))
    uris = {k: "data:image/png;base64," + base64.b64encode(v).decode() for k, v in pngs.items()}
    html.write_text(render_html(report, analysis, uris))
    js.write_text(render_json(report))
    return {"md": str(md), "html": str(html), "json": str(js), "text": render_console(report, analysis),
            "report": report}
