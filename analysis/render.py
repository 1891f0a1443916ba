"""Render the report context to Markdown and to self-contained HTML (templates/report.html)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from string import Template

import pandas as pd

from .truth import truth_summary

TEMPLATE = Template((Path(__file__).parent / "templates" / "report.html").read_text())


def fmt(v, kind: str = "num") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if kind == "pct":
        return f"{v * 100:+.2f}%"
    if kind == "p":
        return "<1e-4" if v < 1e-4 else f"{v:.4f}"
    if isinstance(v, (int,)) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1000):
        return f"{int(v):,}"
    return f"{v:.4g}"


def effect_rows(summary: pd.DataFrame) -> list[dict]:
    """Display strings per effect row (shared by Markdown and HTML)."""
    multi = summary["arm"].nunique() > 1
    out = []
    for r in summary.to_dict("records"):
        result = r.get("guardrail_status") if r["role"] == "guardrail" else ("significant" if r.get("significant") else "")
        out.append({
            "metric": r["metric"] + (f" [{r['arm']}]" if multi else ""),
            "role": r["role"], "control": fmt(r.get("control")), "treatment": fmt(r.get("treatment")),
            "abs": fmt(r.get("abs_lift")), "rel": fmt(r.get("rel_lift"), "pct"),
            "ci": f"[{fmt(r.get('rel_ci_low'), 'pct')}, {fmt(r.get('rel_ci_high'), 'pct')}]",
            "p": fmt(r.get("p"), "p"), "p_adj": fmt(r.get("p_adj"), "p"), "result": result or "",
            "true": fmt(r.get("true_rel_lift"), "pct"),
            "sig": bool(r.get("significant")), "n": f"{r.get('n_control', 0)} / {r.get('n_treatment', 0)}",
            "method": r.get("method", ""), "note": r.get("note") or "",
            # good or bad by the absolute lift (the relative one is NaN over a non-positive control)
            "sign": (float(r.get("abs_lift") or 0) > 0) == bool(r.get("higher_is_better", True)),
            "violated": bool(r.get("guardrail_violated")),
        })
    return out


def _srm_text(srm) -> tuple[str, bool]:
    if getattr(srm, "error", None):
        return f"SRM check could not run: {srm.error}", True
    return srm.message(), srm.failed


def _guardrails(summary: pd.DataFrame) -> list[str]:
    bad = summary[summary["guardrail_status"] == "violated"]
    return [f"{r.metric} ({r.arm}): {r.rel_lift * 100:+.2f}%, worse than its {r.margin:.0%} margin"
            for r in bad.itertuples()]


def _sequential_text(ctx: dict) -> str:
    seq = ctx["sequential"]
    if seq["note"] or not seq["arms"]:
        return seq["note"] or "no treatment arm"
    parts = []
    for arm, v in seq["arms"].items():
        st, path = v["stop"], v["path"]
        last = path.iloc[-1] if len(path) else None
        p_av = f"always-valid p {last.p_always_valid:.3g} after {int(last.look)} looks" if last is not None else "no look"
        stop = (f"a monitor stopping at the first look with always-valid p < alpha would have stopped at look "
                f"{st['look']} ({st['hours']:.1f} simulated hours)" if st["stopped"] else "a monitor would not have stopped")
        parts.append(f"{arm} vs {ctx['summary'].attrs.get('control')}: {p_av}; {stop}")
    return f"{seq['metric']}: " + "; ".join(parts) + "."


def _truth_display(ctx: dict) -> pd.DataFrame | None:
    if ctx["truth"].empty:
        return None
    t = truth_summary(ctx["truth"])
    t["text"] = [f"{v:.4g}" + (f" ± {e:.2g}" if e == e else "") for v, e in zip(t["value"], t["se"], strict=True)]
    return t.pivot(index="metric", columns="arm", values="text").reset_index()


SEGMENT_TEXT = ("new = users with no interaction before the run's start, returning = the others; plain estimates "
                "(no CUPED); p adj: Holm over the segment x arm tests of each metric")


def _segments_display(ctx: dict) -> pd.DataFrame | None:
    """The per-segment effects (analysis/segments.py) as a table, or None when the run has one segment."""
    rep = ctx.get("segments")
    if rep is None:
        return None
    pct = lambda v: "-" if v is None else f"{v * 100:+.2f}%"  # noqa: E731
    return pd.DataFrame([{"metric": e.metric, "segment": e.segment, "arm": e.arm, "users c/t": f"{e.n_control}/{e.n_treatment}",
                          "rel lift": pct(e.rel_lift),
                          "95% CI": "" if e.rel_ci_low is None else f"[{pct(e.rel_ci_low)}, {pct(e.rel_ci_high)}]",
                          "p adj": "-" if e.p_adj is None else f"{e.p_adj:.3g}",
                          "result": "significant" if e.significant else "", "note": e.note} for e in rep.effects])


def render_markdown(ctx: dict, images: dict[str, str]) -> str:
    info, summary, srm = ctx["info"], ctx["summary"], ctx["srm"]
    text, failed = _srm_text(srm)
    lines = [f"# Experiment report: {info['run_id']}", ""]
    lines += [x for w in ctx.get("warnings", []) for x in (f"> **WARNING: {w}**", "")]
    if failed:
        lines += [f"> **WARNING: {text}.** Results below are not trustworthy until the assignment is fixed.", ""]
    lines += [f"> **{h}**" if i == 0 else f"> {h}" for i, h in enumerate(ctx["headline"])] + [""]
    g = _guardrails(summary)
    if g:
        lines += [f"> **Guardrail violated:** {'; '.join(g)}", ""]
    lines += [f"- dataset: `{info.get('dataset')}`, status: {info.get('status')}, seed: {info.get('seed')}",
              f"- config hash: `{info.get('config_hash')}`, git: `{info.get('git_rev')}`",
              f"- {'team draft balance' if ctx['design'] == 'interleave' else 'SRM'}: {text}", ""]
    lines += _interleave_md(ctx, images) if ctx["design"] == "interleave" else _effects_md(ctx, images)
    truth = _truth_display(ctx)
    if truth is not None:
        lines += ["## World oracle (true values)", "", ORACLE_TEXT, "", _md_table(truth), ""]
    segs = _segments_display(ctx)
    if segs is not None:
        lines += ["## By segment (new vs returning users)", "", SEGMENT_TEXT, "", _md_table(segs), ""]
    lines += ["## Arms", "", _md_table(_arms_display(ctx["arms"])), "", _md_table(_pipelines(ctx)),
              "", f"![cumulative]({images['cumulative']})", "", f"![latency]({images['latency']})", "",
              "## Per-channel contribution", "", f"![channels]({images['channels']})", "",
              _md_table(ctx["channels"].drop(columns=["run_id"], errors="ignore")), "",
              "## Configuration", "", "```json", _pretty_config(info), "```", ""]
    return "\n".join(lines)


def _effects_md(ctx: dict, images: dict[str, str]) -> list[str]:
    lines = ["## Effects", "", DECISION_RULE, "",
             "| metric | role | control | treatment | abs lift | rel lift | 95% CI (rel) | p | p adj | result "
             "| true lift | n (c/t) | method | note |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---|---|"]
    for r in effect_rows(ctx["summary"]):
        res = f"**{r['result']}**" if r["result"] in ("significant", "violated") else r["result"]
        lines.append(f"| {r['metric']} | {r['role']} | {r['control']} | {r['treatment']} | {r['abs']} | {r['rel']} | "
                     f"{r['ci']} | {r['p']} | {r['p_adj']} | {res} | {r['true']} | {r['n']} | {r['method']} | {r['note']} |")
    lines += ["", f"![relative lifts]({images['forest']})", ""]
    if "sequential" in images:
        lines += ["## Sequential monitor", "", _sequential_text(ctx), "", f"![sequential]({images['sequential']})", ""]
    return lines


def _preference_table(ctx: dict) -> pd.DataFrame:
    p = ctx["interleave"]["preference"]
    return pd.DataFrame([{"treatment": p.treatment, "control": p.control, "preference share": f"{p.share:.4f}",
                          "95% CI": f"[{p.ci[0]:.4f}, {p.ci[1]:.4f}]", "p": fmt(p.p, "p"), "users": p.users,
                          "wins": p.wins, "losses": p.losses, "ties": p.ties,
                          "users for / against": f"{p.users_for} / {p.users_against}",
                          "sign test p": fmt(p.sign_test_p, "p")}])


def _interleave_md(ctx: dict, images: dict[str, str]) -> list[str]:
    it = ctx["interleave"]
    credit = it["credit"].pivot_table(index="position", columns="team", values="clicks", fill_value=0).reset_index()
    return ["## Interleaving (team draft)", "", INTERLEAVE_TEXT, "", _md_table(_preference_table(ctx)), "",
            "Exposure share per team: " + ", ".join(f"{a} {v:.1%}" for a, v in it["exposure_share"].items()), "",
            "### Clicks per team and position", "", _md_table(credit), "", f"![credit]({images['credit']})", ""]


INTERLEAVE_TEXT = ("Every request showed one slate drafted from both rankers (team draft, a fair coin deciding who "
                   "picks first when the teams are even). A request is won by the team with more clicks; the "
                   "preference share is the treatment's wins over all decided requests, with a delta-method CI over "
                   "users and a z-test against 0.5; the sign test compares the users who preferred each team.")
DECISION_RULE = ("Decision rule: the primary metric (*) is tested at alpha; secondary metrics are corrected among "
                 "themselves (p adj); guardrails are one-sided non-inferiority tests with a relative margin "
                 "(ok = not worse than the margin, violated = worse than the margin). Levels are the raw arm "
                 "values; lifts are CUPED-adjusted where a pre-period covariate exists, relative to the raw "
                 "control value. Latency is tested over serving batches, not users.")
ORACLE_TEXT = ("Each arm's value if every user were served by it, from the synthetic world's choice "
               "probabilities (counterfactual passes over the run's window; ± Monte-Carlo standard error). "
               "The 'true lift' column of the effects compares these.")


def _arms_display(arms: pd.DataFrame) -> pd.DataFrame:
    names = {"arm": "arm", "users": "users", "requests": "requests",
             "exposures": "exposures", "clicks": "clicks", "ctr": "CTR", "ndcg": "NDCG",
             "consumption_per_user": "consumption/user", "session_length": "session len",
             "latency_p50_ms": "p50 ms", "latency_p99_ms": "p99 ms", "coverage": "coverage"}
    cols = [c for c in names if c in arms]
    return arms[cols].rename(columns=names)


def _pipelines(ctx: dict) -> pd.DataFrame:
    """One row per arm: its pipeline stage by stage (what the A/B actually compares)."""
    return pd.DataFrame([{"arm": a, "pipeline": " -> ".join(st) or "?"} for a, st in ctx["pipelines"].items()])


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(fmt(v) if isinstance(v, float) else str(v) for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f'<th class="l">{html.escape(str(c))}</th>' if i == 0 else f"<th>{html.escape(str(c))}</th>"
                   for i, c in enumerate(df.columns))
    rows = []
    for row in df.itertuples(index=False):
        cells = "".join(f'<td class="l">{html.escape(str(v))}</td>' if i == 0 else
                        f"<td>{html.escape(fmt(v) if isinstance(v, float) else str(v))}</td>" for i, v in enumerate(row))
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _pretty_config(info: dict) -> str:
    try:
        return json.dumps(json.loads(info.get("config_json") or "{}"), indent=2, sort_keys=True)
    except json.JSONDecodeError:
        return str(info.get("config_json"))


def _effects_html(summary: pd.DataFrame) -> str:
    head = ("<tr><th class='l'>metric</th><th>control</th><th>treatment</th><th>rel lift</th>"
            "<th>95% CI (rel)</th><th>p</th><th>p adj</th><th class='l'>result</th><th>true lift</th>"
            "<th>n (c / t)</th><th class='l'>method</th><th class='l'>note</th></tr>")
    rows = []
    for r in effect_rows(summary):
        cls = "pos" if r["sign"] else "neg"
        res = r["result"]
        rcls = {"significant": "sig", "violated": "bad", "inconclusive": "warn", "ok": "okk"}.get(res, "")
        rows.append(
            f"<tr class='{r['role']}'><td class='l'>{html.escape(r['metric'])}</td><td>{r['control']}</td>"
            f"<td>{r['treatment']}</td><td class='{cls}'>{r['rel']}</td><td>{r['ci']}</td>"
            f"<td>{r['p']}</td><td>{r['p_adj']}</td><td class='l {rcls}'>{html.escape(res)}</td><td>{r['true']}</td>"
            f"<td>{r['n']}</td><td class='l'>{html.escape(r['method'])}</td>"
            f"<td class='note'>{html.escape(r['note'])}</td></tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _interleave_html(ctx: dict) -> str:
    it = ctx["interleave"]
    credit = it["credit"].pivot_table(index="position", columns="team", values="clicks", fill_value=0).reset_index()
    shares = ", ".join(f"{a} {v:.1%}" for a, v in it["exposure_share"].items())
    return (f"<p class='meta'>{html.escape(INTERLEAVE_TEXT)}</p>{_html_table(_preference_table(ctx))}"
            f"<p class='meta'>Exposure share per team: {html.escape(shares)}</p>"
            f"<h3>Clicks per team and position</h3>{_html_table(credit)}")


def render_html(ctx: dict, images: dict[str, str]) -> str:
    info, summary, srm = ctx["info"], ctx["summary"], ctx["srm"]
    text, failed = _srm_text(srm)
    srm_banner = (f'<div class="banner bad">WARNING: {html.escape(text)}. Results below are not trustworthy '
                  "until the assignment is fixed.</div>" if failed else f'<div class="banner ok">{html.escape(text)}</div>')
    g = _guardrails(summary)
    guard = f'<div class="banner warn">Guardrail violated: {html.escape("; ".join(g))}</div>' if g else ""
    guard = "".join(f'<div class="banner warn">WARNING: {html.escape(w)}</div>' for w in ctx.get("warnings", [])) + guard
    answer = "".join(f"<p class='{'lead' if i == 0 else ''}'>{html.escape(h)}</p>" for i, h in enumerate(ctx["headline"]))
    seq = ""
    if "sequential" in images:
        seq = (f"<h2>Sequential monitor</h2><p class='meta'>{html.escape(_sequential_text(ctx))}</p>"
               f"<img alt='sequential monitor' src='{images['sequential']}'>")
    truth = _truth_display(ctx)
    truth_html = ("" if truth is None else
                  f"<h2>World oracle (true values)</h2><p class='meta'>{html.escape(ORACLE_TEXT)}</p>{_html_table(truth)}")
    segs = _segments_display(ctx)
    if segs is not None:
        truth_html += (f"<h2>By segment (new vs returning users)</h2><p class='meta'>{html.escape(SEGMENT_TEXT)}</p>"
                       f"{_html_table(segs)}")
    return TEMPLATE.substitute(
        run_id=html.escape(str(info["run_id"])), dataset=html.escape(str(info.get("dataset"))),
        status=html.escape(str(info.get("status"))), config_hash=html.escape(str(info.get("config_hash"))),
        seed=html.escape(str(info.get("seed"))), git_rev=html.escape(str(info.get("git_rev"))),
        n_requests=fmt(info.get("n_requests")) if info.get("n_requests") is not None else "?",
        answer=answer, srm_banner=srm_banner, guardrail_banner=guard,
        decision_rule=html.escape("" if ctx["design"] == "interleave" else DECISION_RULE),
        effects_table=(_interleave_html(ctx) if ctx["design"] == "interleave" else _effects_html(summary)),
        arms_table=_html_table(_arms_display(ctx["arms"])) + _html_table(_pipelines(ctx)),
        channels_table=_html_table(ctx["channels"].drop(columns=["run_id"], errors="ignore")),
        config_json=html.escape(_pretty_config(info)), sequential_section=seq, truth_section=truth_html,
        img_forest=images.get("credit", images["forest"]),
        **({"effects_title": "Interleaving (team draft)", "lifts_title": "Click-through by position and team",
            "lifts_alt": "interleaving credit by position"} if ctx["design"] == "interleave" else
           {"effects_title": "Effects (treatment vs control)", "lifts_title": "Relative lifts",
            "lifts_alt": "forest plot of relative lifts"}), img_cumulative=images["cumulative"], img_latency=images["latency"],
        img_channels=images["channels"])
