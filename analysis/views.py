"""Metric definitions: SQL views (views.sql) + the per-user table of one run.

``install_views(con)`` creates the documented views (v_request_metrics, v_user_metrics,
v_arm_summary, v_channel_contribution, v_cumulative). ``user_table(con, run_id)`` returns one row
per assigned user of the run with every metric's numerator/denominator, plus dataset-dependent
columns (novelty, intra-list diversity) and the CUPED covariate ``pre`` (the user's interactions
in the dataset log before ``runs.sim_start``) when the dataset schema is available.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import duckdb
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from simulator.core.catalog import dataset_schema
from simulator.core.errors import ConfigError, NotFoundError
from simulator.core.metrics import METRICS
from simulator.core.snapshot import PRE_COLUMNS, diversity_attr, pre_covariates_sql, run_dataset

from .sqlguard import check_expression, wrap_expression

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VIEWS_SQL = (Path(__file__).with_name("views.sql")).read_text()
EVENT_TABLES = ("runs", "arms", "assignments", "requests", "exposures", "feedback")
BATCH_COLUMNS = ("latency_sum", "requests")  # what batch_table() has per (batch, arm)
BATCH_LOAD = ("history_items",)  # and the calls' load besides their size (BatchRatio's covariates)
COVARIATES = PRE_COLUMNS  # pre-period features of each user (user_table): the CUPED covariates
DEFAULT_MARGIN = 0.05  # non-inferiority margin of a guardrail not listed in AnalysisConfig.margins


class Metric(BaseModel):
    """One tested metric over the per-user table.

    kind: "mean" (per-user value ``num``), "proportion" (per-user 0/1 ``num``), or
    "ratio" (sum(num)/sum(den) over users; delta method). ``num``/``den`` are SQL expressions
    over v_user_metrics columns (user-defined metrics use the same fields).
    """

    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["mean", "proportion", "ratio"] = "mean"
    num: str
    den: str | None = None
    unit: Literal["user", "batch"] = Field("user", description="analysis unit: users (randomised), or serving "
                                           "batches for system metrics measured per pipeline call (latency)")
    role: Literal["primary", "secondary", "guardrail"] = "secondary"
    higher_is_better: bool = True
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> Metric:
        """User SQL goes through the one guard (analysis/sqlguard.py): a name that is a plain
        identifier, ``num``/``den`` single expressions (no statements, FROM or subqueries)."""
        if not _IDENT.match(self.name):
            raise ConfigError(f"metric name {self.name!r}: use letters, digits and '_' (not starting with a digit)")
        check_expression(self.num, f"metric {self.name!r} num")
        if self.den is not None:
            check_expression(self.den, f"metric {self.name!r} den")
        if self.kind == "ratio" and not self.den:
            raise ValueError(f"metric {self.name!r}: a ratio metric needs den")
        if self.unit == "batch" and (self.kind != "ratio" or {self.num, self.den} - set(BATCH_COLUMNS)):
            raise ValueError(f"metric {self.name!r}: a batch metric is a ratio of {' / '.join(BATCH_COLUMNS)}")
        return self


class AnalysisConfig(BaseModel):
    """Optional ``analysis`` block of a run config (or a JSON file given to `sim report`)."""

    model_config = ConfigDict(extra="forbid")
    primary: str = "ctr"
    guardrails: list[str] = Field(default_factory=lambda: ["latency_ms", "session_length"])
    margins: dict[str, float] = Field(default_factory=lambda: {"latency_ms": 0.10, "session_length": 0.05},
                                      description="non-inferiority margin per guardrail, relative (0.10 = 10% worse "
                                      f"is tolerated); guardrails not listed get {DEFAULT_MARGIN}")
    alpha: float = Field(0.05, gt=0, lt=1)
    power: float = Field(0.8, gt=0, lt=1, description="power for the MDE and the sample size in the headline")
    secondary_correction: Literal["bh", "holm"] = Field("bh", description="multiplicity correction among the "
                                                        "secondary metrics (the primary is tested at alpha)")
    metrics: list[Metric] = Field(default_factory=list, description="user-defined metrics (SQL expressions)")
    cuped: bool = True
    covariates: list[str] = Field(default_factory=lambda: list(COVARIATES),
                                  description=f"pre-period covariates of the CUPED regression, among {COVARIATES}")
    looks: int = Field(20, ge=2, le=200, description="looks of the sequential monitor over simulated time")
    msprt_tau: float = Field(0.05, gt=0, description="mSPRT mixing scale, relative to the control mean")
    randomization_users: int = Field(2000, ge=0, description="user metrics of a comparison with at most this "
                                     "many users read p and CI from random relabelings of the users instead of t "
                                     "(analysis/randomization.py); 0 = always t")
    randomization_draws: int = Field(2000, ge=100, le=100_000, description="relabelings drawn per comparison")

    @model_validator(mode="after")
    def _check(self) -> AnalysisConfig:
        bad = [c for c in self.covariates if c not in COVARIATES]
        if bad:
            raise ValueError(f"unknown covariates {bad}; choose among {list(COVARIATES)}")
        bad = {k: v for k, v in self.margins.items() if not 0 < v < 10}
        if bad:
            raise ValueError(f"margins must be relative and positive (0.05 = 5%), got {bad}")
        return self

    def margin(self, metric: str) -> float:
        return self.margins.get(metric, DEFAULT_MARGIN)


# the default metrics, defined once in simulator/core/metrics.py (with the world oracle's truth)
DEFAULT_METRICS: tuple[Metric, ...] = tuple(
    Metric(name=m.name, kind=m.kind, num=m.num, den=m.den, unit=m.unit, higher_is_better=m.higher_is_better,
           description=m.description) for m in METRICS)


def install_views(con) -> None:
    """(Re)create the analysis views; NotFoundError if the event tables do not exist."""
    try:
        try:
            con.execute(VIEWS_SQL)
        except duckdb.InvalidInputException as e:  # a read-only catalog: session-local views instead
            if "read-only" not in str(e).lower():
                raise
            con.execute(VIEWS_SQL.replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW")
                        .replace("CREATE OR REPLACE MACRO", "CREATE OR REPLACE TEMP MACRO"))
    except duckdb.CatalogException:
        raise NotFoundError(f"catalog has no event tables ({', '.join(EVENT_TABLES)}): run `sim run` "
                            "first") from None


def run_info(con, run_id: str) -> dict:
    """The runs row as a dict; NotFoundError for an unknown run id."""
    install_views(con)
    df = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]).df()
    if df.empty:
        known = [r[0] for r in con.execute("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 5").fetchall()]
        raise NotFoundError(f"unknown run id {run_id!r} (recent runs: {', '.join(known) or 'none'})")
    return df.iloc[0].to_dict()


def run_config(info: dict) -> dict:
    """The run's stored experiment config (``runs.config_json``) as a dict: the one place it is
    parsed ({} for a hand-made run without one)."""
    try:
        out = json.loads(info.get("config_json") or "{}")
    except (json.JSONDecodeError, TypeError):
        return {}
    return out if isinstance(out, dict) else {}


def _table_columns(con, schema: str, table: str) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
        "ORDER BY ordinal_position", [schema, table]).fetchall()]


def _snapshot_columns_sql(snap: dict) -> tuple[str, dict]:
    """Novelty / diversity / pre CTEs from the run's own snapshot (simulator/core/snapshot.py)."""
    notes: dict[str, str] = {}
    sql = """
        pop AS (SELECT item_id, n_interactions AS n FROM run_items WHERE run_id = $run_id),
        tot AS (SELECT n_interactions AS n FROM run_datasets WHERE run_id = $run_id),
        nov AS (SELECT e.user_id, sum(-log2((coalesce(pop.n, 0) + 1.0) / (tot.n + 1.0))) AS novelty_sum
                FROM exposures e LEFT JOIN pop USING (item_id) CROSS JOIN tot
                WHERE e.run_id = $run_id GROUP BY ALL),
        pre AS (SELECT user_id, pre, pre_items, pre_days, pre_pop FROM run_users WHERE run_id = $run_id)"""
    if snap.get("diversity_attr"):
        sql += """,
        ec AS (SELECT e.request_id, e.user_id, it.attr AS a, count(*) AS c
               FROM exposures e LEFT JOIN run_items it ON it.run_id = $run_id AND it.item_id = e.item_id
               WHERE e.run_id = $run_id GROUP BY ALL),""" + _ILD
        notes["diversity_attr"] = snap["diversity_attr"]
    else:
        notes["diversity"] = f"no item attribute for diversity in dataset {snap.get('dataset')!r}"
        sql += """,
        ild AS (SELECT NULL::BIGINT AS user_id, NULL::DOUBLE AS ild_sum WHERE false)"""
    return sql, notes


_ILD = """
        ild AS (SELECT user_id, sum(CASE WHEN k > 1 THEN 1.0 - same / (k * (k - 1.0)) ELSE 0.0 END) AS ild_sum
                FROM (SELECT request_id, user_id, sum(c) AS k, sum(c * (c - 1.0)) AS same FROM ec GROUP BY ALL)
                GROUP BY ALL)"""


def dataset_columns_sql(con, run_id: str, dataset: str | None) -> tuple[str, dict]:
    """SQL of per-user novelty/diversity/pre columns for this run, and notes about fallbacks.

    Runs keep their own snapshot of the dataset (simulator/core/snapshot.py), so a dataset reloaded
    since does not change their report; a run written without one (a hand-made run such as the
    tests' fake runs) reads the dataset as it is now."""
    snap = run_dataset(con, run_id)
    if snap is not None:
        return _snapshot_columns_sql(snap)
    notes: dict[str, str] = {}
    schema = None
    if dataset:
        try:
            schema = dataset_schema(dataset)
        except Exception:  # noqa: BLE001 - invalid name => no dataset columns
            schema = None
    has = set(_table_columns(con, schema, "items")) if schema else set()
    has_inter = bool(schema) and bool(_table_columns(con, schema, "interactions"))
    parts = []
    if has_inter:
        parts.append(f"""
        pop AS (SELECT item_id, count(*) AS n FROM "{schema}".interactions GROUP BY ALL),
        tot AS (SELECT count(*) AS n FROM "{schema}".interactions),
        nov AS (SELECT e.user_id, sum(-log2((coalesce(pop.n, 0) + 1.0) / (tot.n + 1.0))) AS novelty_sum
                FROM exposures e LEFT JOIN pop USING (item_id) CROSS JOIN tot
                WHERE e.run_id = $run_id GROUP BY ALL),
        pre AS ({pre_covariates_sql(f'"{schema}".interactions',
                                     "(SELECT sim_start FROM runs WHERE run_id = $run_id)")})""")
    else:
        notes["novelty"] = f"dataset {dataset!r} has no interactions table in the catalog"
        notes["pre"] = f"no pre-experiment log for dataset {dataset!r}"
        parts.append("""
        nov AS (SELECT NULL::BIGINT AS user_id, NULL::DOUBLE AS novelty_sum WHERE false),
        pre AS (SELECT NULL::BIGINT AS user_id, NULL::BIGINT AS pre, NULL::BIGINT AS pre_items,
                       NULL::BIGINT AS pre_days, NULL::DOUBLE AS pre_pop WHERE false)""")
    attr = diversity_attr(con, schema) if has else None
    if attr:
        parts.append(f"""
        ec AS (SELECT e.request_id, e.user_id, CAST(it."{attr}" AS VARCHAR) AS a, count(*) AS c
               FROM exposures e LEFT JOIN "{schema}".items it USING (item_id)
               WHERE e.run_id = $run_id GROUP BY ALL),""" + _ILD)
        notes["diversity_attr"] = attr
    else:
        notes["diversity"] = f"no item attribute for diversity in dataset {dataset!r}"
        parts.append("""
        ild AS (SELECT NULL::BIGINT AS user_id, NULL::DOUBLE AS ild_sum WHERE false)""")
    return ",".join(parts), notes


def dataset_n_items(con, run_id: str, dataset: str | None) -> int | None:
    """Catalog size the run saw (its snapshot), else the dataset's now; None if unknown."""
    snap = run_dataset(con, run_id)
    if snap is not None:
        return int(snap["n_items"])
    try:
        return int(con.execute(f'SELECT count(*) FROM "{dataset_schema(dataset or "")}".items').fetchall()[0][0])
    except Exception:  # noqa: BLE001 - dataset not in the catalog: coverage unknown
        return None


def user_table(con, run_id: str, metrics: list[Metric] | None = None) -> tuple[pd.DataFrame, dict]:
    """One row per assigned user of ``run_id`` with every metric column; returns (df, notes)."""
    info = run_info(con, run_id)
    ctes, notes = dataset_columns_sql(con, run_id, info.get("dataset"))
    custom = ""
    for m in metrics or []:
        custom += f", {wrap_expression(m.num)} AS \"{m.name}__num\""
        if m.den:
            custom += f", {wrap_expression(m.den)} AS \"{m.name}__den\""
    sql = f"""
    WITH {ctes}
    SELECT u.*, coalesce(nov.novelty_sum, 0) AS novelty_sum, coalesce(ild.ild_sum, 0) AS ild_sum,
           pre.pre AS pre, pre.pre_items AS pre_items, pre.pre_days AS pre_days, pre.pre_pop AS pre_pop {custom}
    FROM v_user_metrics u
    LEFT JOIN nov USING (user_id) LEFT JOIN ild USING (user_id) LEFT JOIN pre USING (user_id)
    WHERE u.run_id = $run_id ORDER BY u.user_id"""
    try:
        df = con.execute(sql, {"run_id": run_id}).df()
    except Exception as e:  # noqa: BLE001 - bad user SQL is a config error, one line
        if metrics:
            raise ConfigError(f"user-defined metric SQL failed: {str(e).splitlines()[0]}") from None
        raise
    if "pre" in df and df["pre"].isna().all():
        notes.setdefault("pre", "no pre-experiment interactions before runs.sim_start")
    else:
        df[list(COVARIATES)] = df[list(COVARIATES)].astype(float).fillna(0.0)
    df.attrs["notes"] = notes
    return df, notes


def batch_table(con, run_id: str) -> pd.DataFrame:
    """One row per (serving batch, arm, user) of ``run_id``: summed latency, requests and the
    history items the arms were given with them (NULL for runs stored before it was recorded);
    BatchRatio pairs the arms per batch and clusters by batch and by user."""
    return con.execute("""SELECT batch_no, arm, user_id, sum(latency_ms) AS latency_sum, count(*) AS requests,
                                 sum(history_len) AS history_items
                          FROM requests WHERE run_id = ? AND batch_no IS NOT NULL AND latency_ms IS NOT NULL
                          GROUP BY ALL ORDER BY batch_no, arm, user_id""", [run_id]).df()
