"""Slow: a real tiny simulator run (trains a 1-epoch SASRec) analysed end to end."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from _simdata import tiny_catalog, tiny_config

pytestmark = pytest.mark.slow


def test_report_on_real_simulator_run(tmp_path):
    from analysis.report import summarize, write_report
    from simulator.engine.run import run_experiment

    cat = tiny_catalog(str(tmp_path / "cat.duckdb"))
    rid = run_experiment(tiny_config(tmp_path / "art"), cat, progress=False)
    s = summarize(cat.con, rid)
    assert s.iloc[0].metric == "ctr" and s.p.notna().all()
    assert not s.note.str.contains("fallback").any()  # the synthetic world has a pre-period log
    paths = write_report(cat, rid, tmp_path / "reports")
    imgs = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                imgs.append(dict(attrs)["src"])

    P().feed(Path(paths["html"]).read_text())
    assert len(imgs) == 5 and all(i.startswith("data:image/png;base64,") for i in imgs)
    cat.close()
