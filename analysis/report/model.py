"""The typed report: everything a report shows, built once from the computation
(``build.build_report``). Markdown, HTML, report.json and the console all render this model;
report.json is ``Report.model_dump(mode="json")`` and validates against ``report_schema()``.

A non-finite number (NaN, inf) is stored as None: JSON has no NaN, and "could not be
estimated" reads the same in every format (the row's ``note`` says why).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..segments import SegmentReport

SCHEMA_VERSION = 1  # bump when a field of report.json changes meaning or is removed


def _finite(v):
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v  # let pydantic refuse it with its own message
    return f if math.isfinite(f) else None


def _int_or_none(v):
    f = _finite(v)
    return None if f is None else int(f)


def _str_or_none(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    if hasattr(v, "isoformat"):  # timestamps: ISO 8601; pandas' NaT (no time) is None
        return None if str(v) == "NaT" else v.isoformat()
    return str(v)


Num = Annotated[float | None, BeforeValidator(_finite)]
Int = Annotated[int | None, BeforeValidator(_int_or_none)]
Text = Annotated[str | None, BeforeValidator(_str_or_none)]
Cell = str | int | float | bool | None
Table = list[dict[str, Cell]]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunInfo(Model):
    run_id: str
    name: Text = None
    tags: list[str] = []
    dataset: Text = None
    status: Text = None
    seed: Int = None
    config_hash: Text = None
    git_rev: Text = None
    started_at: Text = None
    finished_at: Text = None
    sim_start: Num = None
    sim_end: Num = None
    n_requests: Int = None


class EffectRow(Model):
    """One metric x treatment arm; ``result`` is the decision's label (computed once, here)."""

    metric: str
    role: str
    arm: str
    control_arm: Text = None
    method: Text = None
    control: Num = None
    treatment: Num = None
    abs_lift: Num = None
    rel_lift: Num = None
    ci_low: Num = None
    ci_high: Num = None
    rel_ci_low: Num = None
    rel_ci_high: Num = None
    rel_se: Num = None
    p: Num = None
    p_adj: Num = None
    significant: bool = False
    guardrail_status: str = ""
    guardrail_violated: bool = False
    margin: Num = None
    n_control: Int = None
    n_treatment: Int = None
    true_control: Num = None
    true_treatment: Num = None
    true_rel_lift: Num = None
    true_rel_se: Num = None
    var_reduction: Num = None
    se: Num = None
    dof: Num = None
    ci_level: Num = None  # the CI's level: 1 - alpha unless the multiple-testing adjustment widened it
    higher_is_better: bool = True
    unit: str = "user"  # what n counts: users, or serving batches for a batch metric
    note: str = ""
    result: str = ""  # significant | ok | inconclusive | violated | "" (not significant)

    @property
    def good(self) -> bool | None:
        """Is the (significant) change good for the product? None when it is not significant."""
        if self.result not in ("significant", "violated", "ok"):
            return None
        if self.result != "significant":
            return self.result == "ok"
        return ((self.abs_lift or 0) > 0) == self.higher_is_better


class Power(Model):
    power: float
    mde_rel: Num = None
    users_needed_per_arm: Num = None


class SRM(Model):
    what: str = "sample ratio"
    counts: dict[str, int] = {}
    expected: dict[str, Num] = {}
    chi2: Num = None
    p: Num = None
    failed: bool = False
    error: Text = None
    message: str = ""


class Look(Model):
    look: int
    hours: float
    n_control: int
    n_treatment: int
    abs_lift: Num = None
    rel_lift: Num = None
    ci_low: Num = None
    ci_high: Num = None
    p_fixed: Num = None
    cs_low: Num = None
    cs_high: Num = None
    p_always_valid: Num = None
    control: Num = None


class Stop(Model):
    stopped: bool
    look: Int = None
    hours: Num = None


class SequentialArm(Model):
    stop: Stop
    path: list[Look]


class Sequential(Model):
    metric: str
    note: str = ""
    text: str = ""  # the monitor in one sentence
    arms: dict[str, SequentialArm] = {}


class Preference(Model):
    control: str
    treatment: str
    share: Num = None
    ci: tuple[Num, Num]
    se: Num = None
    p: Num = None
    users: int
    wins: int
    losses: int
    ties: int
    sign_test_p: Num = None
    users_for: int
    users_against: int
    alpha: float
    significant: bool = False


class Interleave(Model):
    preference: Preference
    exposure_share: dict[str, Num]
    credit: Table
    true_ctr_lift: Num = None


class Report(Model):
    schema_version: int = SCHEMA_VERSION
    package_version: str
    dataset_hash: Text = None
    run: RunInfo
    design: str
    headline: list[str]
    warnings: list[str] = Field(default_factory=list, description="every warning of the run, console included")
    effects: list[EffectRow] = []
    power: dict[str, Power] = {}
    srm: SRM
    truth: Table = []
    truth_passes: Table = []
    sequential: Sequential
    interleave: Interleave | None = None
    segments: SegmentReport | None = Field(None, description="effects by user segment (new vs returning)")
    arms: Table = []
    pipelines: dict[str, list[str]] = {}
    channels: Table = []
    analysis_config: dict[str, Any]
    config: dict[str, Any] = {}

    @property
    def control(self) -> str | None:
        return next((e.control_arm for e in self.effects), None)

    def effect_records(self) -> list[dict]:
        """The rows of the catalog's ``effects`` table (simulator/core/runs.py) for this report."""
        if self.interleave is not None:
            p = self.interleave.preference
            return [{"arm": p.treatment, "metric": "preference", "role": "primary", "control_arm": p.control,
                     "method": "team draft", "control": 0.5, "treatment": p.share, "p": p.p, "p_adj": p.p,
                     "abs_lift": None if p.share is None else p.share - 0.5,
                     "result": "significant" if p.significant else "", "n_control": p.users,
                     "n_treatment": p.users, "higher_is_better": True,
                     "note": "preference share of decided requests"}]
        return [e.model_dump() for e in self.effects]


def report_schema() -> dict:
    """The JSON Schema of report.json (generated from the model)."""
    return Report.model_json_schema(mode="serialization")
