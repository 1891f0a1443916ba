"""Build the typed Report of a run, once: the design's analysis (designs.py) plus what every run
has (run info, warnings, the world oracle's truth, channels, pipelines, configs)."""

from __future__ import annotations

from importlib import metadata

from simulator.core.snapshot import run_dataset

from ..provenance import run_warnings
from ..truth import truth_summary, truth_table
from ..views import AnalysisConfig, install_views, run_config, run_info
from .compute import analysis_config, arm_pipelines
from .designs import Analysis, analysis_for, records
from .model import Report, RunInfo


def package_version() -> str:
    try:
        return metadata.version("hllm-sim")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def run_labels(con, run_id: str) -> dict:
    """The run's name and tags (`sim runs tag/rename`)."""
    row = con.execute("SELECT name, tags FROM run_labels WHERE run_id = ?", [run_id]).fetchone()
    return {"name": row[0], "tags": list(row[1] or [])} if row else {}


def build_report(con, run_id: str, config: AnalysisConfig | dict | None = None) -> tuple[Report, Analysis]:
    """The run's Report and the Analysis of its design (which draws its plots)."""
    install_views(con)
    info = run_info(con, run_id)
    cfg = analysis_config(info, config)
    run_cfg = run_config(info)
    design = analysis_for(run_cfg.get("design", "ab"))
    truth = truth_table(con, run_id)
    channels = con.execute("SELECT * FROM v_channel_contribution WHERE run_id = ? ORDER BY arm, channel",
                           [run_id]).df()
    snap = run_dataset(con, run_id) or {}
    report = Report(
        package_version=package_version(), dataset_hash=snap.get("content_hash"),
        run=RunInfo(**{k: info.get(k) for k in RunInfo.model_fields if k in info}, **run_labels(con, run_id)),
        design=design.name, warnings=run_warnings(con, info),  # unfinished run, changed data, short run
        truth=records(truth_summary(truth)) if not truth.empty else [], truth_passes=records(truth),
        channels=records(channels), pipelines=arm_pipelines(con, run_id),
        analysis_config=cfg.model_dump(mode="json"), config=run_cfg,
        **design.build(con, run_id, cfg, truth))
    return report, design
