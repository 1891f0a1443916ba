"""The HTML pages in a real headless Chromium (Debian's `chromium`; skipped when absent): each loads
without console errors, its answer line is visible in the first 600 px, no table overflows its
container. A screenshot per page is kept (in $SIM_SCREENSHOT_DIR when set: a CI artifact)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest
from _fake_events import make_fake_run
from _simdata import retrieval_arm, tiny_config

from analysis.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install -y chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--window-size=1280,900", "--virtual-time-budget=4000"]

# first in <head>: collect errors (uncaught, console.error); at load: measure, write JSON into the title
PROBE_HEAD = """<script>window.__errs = [];
window.addEventListener("error", e => __errs.push(String(e.message)));
const __ce = console.error; console.error = (...a) => { __errs.push(a.join(" ")); __ce(...a); };</script>"""
PROBE_BODY = """<script>window.addEventListener("load", () => {
  let compared = null, sorted = null, filtered = null;
  if (document.getElementById("compare")) {  // the runs page: sort, filter, select all, compare
    const ids = () => [...document.querySelectorAll("#runs tbody tr td:nth-child(2)")].map(td => td.textContent);
    const before = ids();
    document.querySelector('#runs th[data-k="short_id"]').click();
    sorted = JSON.stringify(ids()) === JSON.stringify([...before].sort()) && before.length > 1;
    const f = document.getElementById("filter"); f.value = "interleave"; f.dispatchEvent(new Event("input"));
    filtered = document.querySelectorAll("#runs tbody tr").length; f.value = ""; f.dispatchEvent(new Event("input"));
    document.querySelectorAll(".pick").forEach(b => { b.checked = true; });
    document.getElementById("compare").click();
    compared = document.querySelectorAll("#comparison tr").length;
  }
  const ans = document.getElementById("answer"), r = ans ? ans.getBoundingClientRect() : null;
  const over = [...document.querySelectorAll("table")].filter(t => {
    const box = t.parentElement.getBoundingClientRect();
    return t.getBoundingClientRect().right > box.right + 1 || t.parentElement.scrollWidth > t.parentElement.clientWidth + 1;
  }).map(t => t.querySelector("th") ? t.querySelector("th").textContent : "?");
  document.title = JSON.stringify({errors: __errs, answer_top: r && r.top, answer_bottom: r && r.bottom,
    answer_text: ans ? ans.textContent.trim().slice(0, 200) : null, overflowing: over,
    body_overflow: document.documentElement.scrollWidth > window.innerWidth + 1,
    tables: document.querySelectorAll("table").length, compared: compared, sorted: sorted, filtered: filtered, rows: document.querySelectorAll("tbody tr").length});
});</script>"""


def probe(page: Path, shots: Path) -> dict:
    """Load ``page`` (a probed copy) in Chromium: the measurements, plus a screenshot of the original."""
    html = page.read_text()
    probed = page.with_name(page.stem + ".probe.html")
    probed.write_text(html.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE_BODY + "</body>", 1))
    r = subprocess.run([CHROMIUM, *FLAGS, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    title = r.stdout.split("<title>", 1)[1].split("</title>", 1)[0]
    out = json.loads(title.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / f"{page.parent.name}-{page.stem}.png"
    subprocess.run([CHROMIUM, *FLAGS[:-2], "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    out["screenshot"] = shot
    return out


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = os.environ.get("SIM_SCREENSHOT_DIR")
    return Path(d) if d else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def pages(tiny_world, tmp_path_factory):
    """Reports of a world A/B run, an interleaving run, a hand-made run with an SRM, and the runs page."""
    from analysis.report import build_report
    from analysis.report.index import render_runs_page
    from simulator.commands.common import store_effects
    from simulator.commands.runs import _effects
    from simulator.core.runs import list_runs
    from simulator.engine.run import run_experiment

    cat, d = tiny_world
    out = tmp_path_factory.mktemp("pages")
    ab = run_experiment(tiny_config(d / "art", policies={}, n_requests=800, oracle_reps=1,
                                    arms=[retrieval_arm("random", "random", "control"),
                                          retrieval_arm("popularity", "popularity")]), cat, progress=False)
    il = run_experiment(tiny_config(d / "art", design="interleave", policies={}, n_requests=800, oracle_reps=1,
                                    arms=[retrieval_arm("c", "random", "control"),
                                          retrieval_arm("t", "popularity", "treatment")]), cat, progress=False)
    got = {"ab": write_report(cat, ab, out)["html"], "interleave": write_report(cat, il, out)["html"]}
    fake = out / "fake.duckdb"
    con = duckdb.connect(str(fake))
    make_fake_run(con, "srm-run", n_users=600, lifts={"control": 1.0, "treatment": 1.2},
                  weights={"control": 0.8, "treatment": 0.2}, config={"n_requests": 99999})
    con.execute("UPDATE arms SET weight = 0.5")
    got["srm"] = write_report(con, "srm-run", out)["html"]
    con.close()
    for rid in (ab, il):
        store_effects(cat.path, rid, build_report(cat.con, rid)[0], con=cat.con)
    runs = list_runs(cat.con)
    (out / "index.html").write_text(render_runs_page(runs, _effects(cat.con, list(runs["run_id"])), out, cat.path))
    got["runs"] = str(out / "index.html")
    return got


@pytest.mark.parametrize("name", ["ab", "interleave", "srm", "runs"])
def test_page_in_chromium(pages, shots, name):
    m = probe(Path(pages[name]), shots)
    assert m["errors"] == [], m["errors"]
    assert m["answer_text"] and m["answer_top"] is not None and 0 <= m["answer_top"] and m["answer_bottom"] < 600
    assert m["overflowing"] == [] and not m["body_overflow"], m
    assert m["tables"] >= 1 and m["rows"] >= 1 and m["screenshot"].stat().st_size > 10_000
    if name == "srm":  # a failing check goes above the answer; the short run's warning is on the page
        html = Path(pages[name]).read_text()
        assert html.index("SAMPLE RATIO MISMATCH") < html.index('id="answer"') < html.index("served only")
    if name == "runs":  # sortable, filterable, a comparison of the selected runs
        assert m["sorted"] and m["filtered"] == 1 and m["compared"] >= 3, m
    if name == "ab":
        html = Path(pages[name]).read_text()
        assert html.index('id="answer"') < html.index("no sample ratio mismatch")  # the verdict first
