"""One analysis per experiment design, mirroring the simulator's designs (simulator/engine/design.py).

An :class:`Analysis` computes the design's part of a :class:`~analysis.report.model.Report`
(answer, effects, health check, arms) and its plots; the renderers know no design (their
templates include ``effects_<design>.*.j2``). ``DESIGNS`` is the registry, keyed by the name a
run's config stores in ``design``: a new design is one class here, one entry, two partials.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Protocol

import pandas as pd

from simulator.core.errors import ConfigError

from .. import interleave, plots
from ..decision import headline, power_numbers
from ..segments import segment_effects
from ..srm import SRMResult, srm_for_run
from ..truth import paired_lift
from ..views import AnalysisConfig
from .compute import arm_roles, arm_summary, metric_list, sequential_monitor, summarize
from .model import SRM, EffectRow, Interleave, Look, Power, Report, Sequential, SequentialArm, Stop


def records(df: pd.DataFrame) -> list[dict]:
    """Rows as dicts, a missing value (NaN: e.g. a run stored before a column existed) as None."""
    rows = df.drop(columns=["run_id"], errors="ignore").to_dict("records")
    return [{k: None if isinstance(v, float) and v != v else v for k, v in r.items()} for r in rows]


def srm_model(res: SRMResult, error: str | None = None) -> SRM:
    if error:
        return SRM(error=error, failed=True, message=f"SRM check could not run: {error}")
    return SRM(what=res.what, counts=res.counts, expected=res.expected, chi2=res.chi2, p=res.p,
               failed=res.failed, message=res.message())


def result_label(row: dict) -> str:
    """The decision's label of one effect row (the one place it is computed)."""
    if row.get("role") == "guardrail":
        return str(row.get("guardrail_status") or "")
    return "significant" if row.get("significant") is True else ""


def effect_rows(summary: pd.DataFrame) -> list[EffectRow]:
    rows = [{k: v for k, v in r.items() if k != "ref_t"} for r in summary.to_dict("records")]
    return [EffectRow(**{**r, "note": r.get("note") or "", "result": result_label(r),
                         "guardrail_status": r.get("guardrail_status") or "",
                         "significant": bool(r.get("significant") is True)}) for r in rows]


class Analysis(Protocol):
    name: ClassVar[str]
    title: ClassVar[str]  # the effects section's title
    arms_columns: ClassVar[tuple[str, ...]]  # the Arms table's columns (report.arms keeps all)

    def build(self, con, run_id: str, cfg: AnalysisConfig, truth: pd.DataFrame) -> dict:
        """The design's Report fields: headline, effects, power, srm, sequential, arms, interleave."""

    def plots(self, con, run_id: str, report: Report) -> dict[str, bytes]:
        """PNG bytes per plot name (the effects plot first)."""

    def console_table(self, report: Report) -> tuple[list[str], list[list[str]], str]:
        """What the console shows under the answer: column names, rows of strings, a legend."""


def _pct(v) -> str:
    return "" if v is None else f"{v * 100:+.2f}%"


def _num(v) -> str:
    return "-" if v is None else f"{v:.4g}"


class ABAnalysis:
    """Each user hashed to one arm; every metric tested treatment vs control (decision.py)."""

    name = "ab"
    title = "Effects (treatment vs control)"
    arms_columns = ("arm", "users", "requests", "exposures", "clicks", "ctr", "ndcg", "consumption_per_user",
                    "session_length", "latency_mean_ms", "latency_p50_ms", "latency_p99_ms", "nearline_mean_ms",
                    "coverage")

    def build(self, con, run_id: str, cfg: AnalysisConfig, truth: pd.DataFrame) -> dict:
        try:
            srm = srm_model(srm_for_run(con, run_id))
        except Exception as e:  # noqa: BLE001 - bad weights: report it rather than crash
            srm = srm_model(SRMResult({}, {}, float("nan"), float("nan")), error=str(e))
        summary = summarize(con, run_id, cfg)
        power = {r["arm"]: Power(**power_numbers(r, cfg.alpha, cfg.power)) for r in summary.to_dict("records")
                 if r["role"] == "primary"}
        seq = sequential_monitor(con, run_id, cfg)
        arms = {a: SequentialArm(stop=Stop(**v["stop"]), path=[Look(**x) for x in v["path"].to_dict("records")])
                for a, v in seq["arms"].items()}
        sequential = Sequential(metric=seq["metric"], note=seq["note"], arms=arms)
        sequential.text = sequential_text(sequential, summary.attrs.get("control"))
        control, treatments = arm_roles(con, run_id)
        segments = segment_effects(con, run_id, metric_list(cfg), control, treatments, cfg.alpha)
        return dict(effects=effect_rows(summary), power=power, srm=srm, sequential=sequential, segments=segments,
                    headline=headline(summary, cfg.alpha, cfg.power), arms=records(arm_summary(con, run_id)))

    def plots(self, con, run_id: str, report: Report) -> dict[str, bytes]:
        out = {"forest": plots.forest(report.effects)}
        first = next(iter(report.sequential.arms.values()), None)
        if first is not None:
            path = pd.DataFrame([x.model_dump() for x in first.path])
            out["sequential"] = plots.sequential(path, report.sequential.metric, report.analysis_config["alpha"])
        return out

    def console_table(self, report: Report) -> tuple[list[str], list[list[str]], str]:
        truth = any(e.true_rel_lift is not None for e in report.effects)
        cols = ["metric", "arm", "n c/t", "control", "treatment", "rel lift", "CI", "p adj", "result",
                *(["true lift"] if truth else []), "note"]
        rows = []
        for e in report.effects:
            ci = ci_cell(e, 1 - report.analysis_config["alpha"])
            mark = {"primary": " *", "guardrail": " (g)"}.get(e.role, "")
            rows.append([e.metric + mark, e.arm, f"{e.n_control or 0}/{e.n_treatment or 0}", _num(e.control),
                         _num(e.treatment), _pct(e.rel_lift) or "n/a", ci,
                         "" if e.p_adj is None else f"{e.p_adj:.3g}", e.result,
                         *([_pct(e.true_rel_lift)] if truth else []), e.note])
        legend = ("* primary, tested at alpha; secondary p adj corrected among the secondaries; CI: 95% unless the "
                  "correction widens it (level shown), so a result is significant exactly when its CI excludes 0; "
                  "(g) guardrail: non-inferiority test with its margin; n c/t = users per arm (serving batches "
                  "for latency)")
        return cols, rows, legend


def ci_cell(e: EffectRow, default_level: float) -> str:
    """A relative CI; its level is shown when the multiple-testing adjustment widened it."""
    if e.rel_ci_low is None or e.rel_ci_high is None:
        return ""
    level = e.ci_level if e.ci_level is not None else default_level
    return (f"[{e.rel_ci_low * 100:+.1f}%, {e.rel_ci_high * 100:+.1f}%]"
            + (f" ({level:.1%})" if abs(level - default_level) > 1e-9 else ""))


def sequential_text(seq: Sequential, control: str | None) -> str:
    """The sequential monitor in one sentence per treatment arm."""
    if seq.note or not seq.arms:
        return seq.note or "no treatment arm"
    parts = []
    for arm, v in seq.arms.items():
        last = v.path[-1] if v.path else None
        p_av = (f"always-valid p {last.p_always_valid:.3g} after {last.look} looks"
                if last is not None and last.p_always_valid is not None else "no look")
        stop = (f"a monitor stopping at the first look with always-valid p < alpha would have stopped at look "
                f"{v.stop.look} ({v.stop.hours:.1f} simulated hours)" if v.stop.stopped
                else "a monitor would not have stopped")
        parts.append(f"{arm} vs {control}: {p_av}; {stop}")
    return f"{seq.metric}: " + "; ".join(parts) + "."


class InterleaveAnalysis:
    """Team-draft interleaving: one slate from both rankers; the preference share (interleave.py)."""

    name = "interleave"
    title = "Interleaving (team draft)"
    arms_columns = ("team", "exposures", "clicks")

    def build(self, con, run_id: str, cfg: AnalysisConfig, truth: pd.DataFrame) -> dict:
        control, treatments = arm_roles(con, run_id)
        if len(treatments) != 1:
            raise ConfigError(f"run {run_id!r}: interleaving needs exactly two arms, got {[control, *treatments]}")
        treatment = treatments[0]
        pref = interleave.preference(interleave.user_outcomes(con, run_id, control, treatment), control,
                                     treatment, cfg.alpha)
        bal, shares = interleave.balance(con, run_id, control, treatment)
        per = {a: g.sort_values("rep")["value"].to_numpy() for a, g in truth[truth["metric"] == "ctr"].groupby("arm")}
        true_lift = paired_lift(per[control], per[treatment])[0] if {control, treatment} <= set(per) else None
        lines = [interleave.headline(pref, true_lift)]
        if bal.failed:
            lines.append(f"WARNING: {bal.message()}: the team draft is not fair and the result is not trustworthy.")
        credit = interleave.position_credit(con, run_id)
        teams = credit.groupby("team")[["exposures", "clicks"]].sum().reset_index()
        it = Interleave(preference={**dataclasses.asdict(pref), "significant": pref.significant},
                        exposure_share=shares, credit=records(credit), true_ctr_lift=true_lift)
        return dict(interleave=it, srm=srm_model(bal), headline=lines, arms=records(teams),
                    sequential=Sequential(metric="preference", note="no sequential monitor for interleaving",
                                          text="no sequential monitor for interleaving"))

    def plots(self, con, run_id: str, report: Report) -> dict[str, bytes]:
        return {"credit": plots.credit(pd.DataFrame(report.interleave.credit))}

    def console_table(self, report: Report) -> tuple[list[str], list[list[str]], str]:
        p = report.interleave.preference
        cols = ["treatment", "control", "share", "95% CI", "p", "users", "wins/losses/ties", "sign test p"]
        f = lambda v, k=".4f": "-" if v is None else format(v, k)  # noqa: E731
        rows = [[p.treatment, p.control, f(p.share), f"[{f(p.ci[0])}, {f(p.ci[1])}]", f(p.p, ".3g"),
                 str(p.users), f"{p.wins}/{p.losses}/{p.ties}", f(p.sign_test_p, ".3g")]]
        shares = ", ".join(f"{a} {s:.1%}" for a, s in report.interleave.exposure_share.items() if s is not None)
        legend = (f"share = requests won by {p.treatment}'s team / requests won by either team; exposures: "
                  f"{shares}; {report.srm.message}")
        return cols, rows, legend


DESIGNS: dict[str, Analysis] = {a.name: a for a in (ABAnalysis(), InterleaveAnalysis())}


def analysis_for(design: str) -> Analysis:
    try:
        return DESIGNS[design]
    except KeyError:
        raise ConfigError(f"no analysis for design {design!r} (known: {', '.join(DESIGNS)})") from None
