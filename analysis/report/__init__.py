"""Experiment reports: a typed Report (model.py) built once (build.py) from the computation
(compute.py) by the analysis of the run's design (designs.py), rendered per format (render.py:
HTML, Markdown, JSON, console) and written by write.py.

``summarize(con, run_id)`` -> the effect table as a DataFrame (one row per treatment arm x metric);
``build_report(con, run_id)`` -> (Report, Analysis); ``write_report(catalog_or_con, run_id, out_dir)``
-> {"md", "html", "json": paths, "text": console text, "report": Report}.
"""

from .build import build_report
from .compute import SUMMARY_COLUMNS, analysis_config, arm_roles, arm_summary, metric_list, summarize
from .designs import DESIGNS, Analysis, analysis_for
from .model import SCHEMA_VERSION, EffectRow, Report, report_schema
from .render import render_console, render_html, render_json, render_markdown
from .write import write_report

__all__ = ["DESIGNS", "SCHEMA_VERSION", "SUMMARY_COLUMNS", "Analysis", "EffectRow", "Report", "analysis_config",
           "analysis_for", "arm_roles", "arm_summary", "build_report", "metric_list", "render_console",
           "render_html", "render_json", "render_markdown", "report_schema", "summarize", "write_report"]
