"""Experiment configuration (pydantic, ``extra="forbid"``, frozen), loadable from TOML/YAML.

An experiment is a dataset, a user model, a traffic split over arms, and for each arm a
multi-stage pipeline: retrieval channels (quota, weight) -> merge (de-dup) -> coarse ranker
(cut to N) -> fine ranker (cut to M) -> reranker (seen filter, MMR, per-genre cap) -> slate K.
``resolved_json()`` and ``config_hash()`` are stored with every run.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from simulator.core.errors import ConfigError
from simulator.engine.design import DESIGNS
from simulator.engine.scenario import SCENARIOS

_STRICT = ConfigDict(extra="forbid", frozen=True)


def _one_of(value: str, choices: tuple[str, ...], what: str) -> str:
    """``value`` if it names a registered plug-in, else a ValueError listing them (with a suggestion)."""
    if value in choices:
        return value
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown {what} {value!r} (choose from {', '.join(choices)}){hint}")


class ChannelConfig(BaseModel):
    model_config = _STRICT
    policy: str
    quota: int = Field(100, ge=1, description="candidates this channel contributes")
    weight: float = Field(1.0, gt=0, description="merge priority: higher-weight channels win de-dup ties "
                          "(equal weights keep the listed order)")


class StageConfig(BaseModel):
    model_config = _STRICT
    policy: str
    keep: int = Field(..., ge=1, description="candidates kept after this stage")


class RerankConfig(BaseModel):
    model_config = _STRICT
    filter_seen: bool = True
    mmr_lambda: float | None = Field(None, ge=0, le=1, description="MMR relevance weight (None = off)")
    max_per_genre: int | None = Field(None, ge=1, description="cap items sharing a genre/topic in a slate")
    genre_attr: str = "genres"


class EpsilonGreedyConfig(BaseModel):
    """With probability ``epsilon`` the slate is a uniformly random ordered draw from the pool,
    else the pool's top of the ranking (exact propensities)."""

    model_config = _STRICT
    kind: Literal["epsilon_greedy"]
    epsilon: float = Field(0.1, ge=0, le=1)
    pool: int | None = Field(None, ge=1, description="sample from the reranker's best `pool` candidates "
                             "(default: twice the slate)")
    seed: int = Field(0, ge=0)


class PlackettLuceConfig(BaseModel):
    """Plackett-Luce sampling without replacement over the pool's scores (standardised within each
    request's pool) divided by ``temperature``; cascade and slate propensities exact, position
    marginals estimated from ``mc_draws`` seeded draws."""

    model_config = _STRICT
    kind: Literal["plackett_luce"]
    temperature: float = Field(1.0, gt=0)
    pool: int | None = Field(None, ge=1, description="sample from the reranker's best `pool` candidates "
                             "(default: twice the slate)")
    mc_draws: int = Field(2000, ge=10, description="draws that estimate the position marginals")
    seed: int = Field(0, ge=0)


ExploreConfig = Annotated[EpsilonGreedyConfig | PlackettLuceConfig, Field(discriminator="kind")]


class OpeConfig(BaseModel):
    """Off-policy evaluation logs: the ``targets`` arms also rank every request served by an
    exploring arm (an arm with ``explore``); their slates are recorded in ``ope_slates``, never shown."""

    model_config = _STRICT
    targets: tuple[str, ...] = Field(..., min_length=1)


class ArmConfig(BaseModel):
    model_config = _STRICT
    name: str = Field(..., pattern=r"^[A-Za-z0-9_\-]+$")
    role: Literal["control", "treatment"] = "treatment"
    weight: float = Field(1.0, gt=0)
    channels: tuple[ChannelConfig, ...] = Field(..., min_length=1)
    coarse: StageConfig | None = None
    fine: StageConfig | None = None
    rerank: RerankConfig = RerankConfig()
    slate_size: int = Field(10, ge=1)
    explore: ExploreConfig | None = Field(None, description="log with a stochastic slate (propensities recorded)")

    def explore_pool(self) -> int | None:
        if self.explore is None:
            return None
        return self.explore.pool if self.explore.pool is not None else 2 * self.slate_size

    @model_validator(mode="after")
    def _check_cuts(self) -> ArmConfig:
        total = sum(c.quota for c in self.channels)
        prev = total
        for name, st in (("coarse", self.coarse), ("fine", self.fine)):
            if st is not None:
                if st.keep > prev:
                    raise ValueError(f"arm {self.name!r}: {name}.keep={st.keep} exceeds the {prev} candidates it receives")
                prev = st.keep
        if self.slate_size > prev:
            raise ValueError(f"arm {self.name!r}: slate_size={self.slate_size} exceeds the {prev} candidates available")
        if self.explore is not None and self.explore.pool is not None and not \
                self.slate_size <= self.explore.pool <= prev:
            raise ValueError(f"arm {self.name!r}: explore.pool={self.explore.pool} must be between the slate size "
                             f"{self.slate_size} and the {prev} candidates available")
        return self

    def policies(self) -> list[str]:
        names = [c.policy for c in self.channels]
        names += [s.policy for s in (self.coarse, self.fine) if s is not None]
        return list(dict.fromkeys(names))


class ExperimentConfig(BaseModel):
    model_config = _STRICT
    name: str = "experiment"
    dataset: str = "synthetic"
    seed: int = Field(0, ge=0, le=2**63 - 1, description="random seed: a non-negative integer that fits the "
                      "event tables' BIGINT")
    salt: str = "hllm-sim"
    user_model: str = Field("auto", description="auto (a world when the data has one, else replay) or a "
                            "scenario: " + ", ".join(SCENARIOS))
    n_requests: int = Field(4000, ge=1, description="stop after this many requests")
    duration_s: float | None = Field(None, gt=0, description="also stop issuing requests after this much simulated time")
    start_horizon_s: float = Field(3600.0, gt=0, description="world: users start their first session within this window")
    sessions_per_day: float = Field(2.0, gt=0, description="world: mean sessions per user per day after the first")
    batch_window_s: float = Field(60.0, gt=0, description="requests arriving within this simulated window are served together")
    max_batch: int = Field(512, ge=1)
    session_gap_s: float = Field(30.0, gt=0, description="mean think time between requests within a session")
    abandon_prob: float = Field(0.3, ge=0, le=1, description="chance a session ends after a slate with no click")
    satisfaction: float = Field(0.0, ge=0, description="world: how much leaving and returning depend on the "
                                "slates' satisfaction (-log P(no click)); 0 = leave only after a no-click slate, "
                                "with abandon_prob, and return at sessions_per_day whatever was shown")
    satisfaction_ref: float = Field(1.0, ge=0, description="world: the satisfaction at which leaving and "
                                    "returning are as at satisfaction 0's rates")
    feedback_delay_s: float = Field(5.0, ge=0, description="delay before a click is recorded (and the item "
                                    "reaches the user's history)")
    consume_delay_s: float = Field(300.0, ge=0, description="delay from click to the 'consume' event")
    design: str = Field("ab", description="ab: each user hashed to one arm; interleave: "
                                                "team-draft interleaving of the two arms' rankings in every slate")
    oracle_reps: int = Field(1, ge=0, le=100, description="world: counterfactual passes per arm that give each arm's "
                             "true metric values (the world oracle; one pass's Monte-Carlo SE comes from its users, "
                             "a grouped jackknife); 0 = off")
    retrain_every: float | None = Field(None, gt=0, description="refit every arm's policies every this many simulated "
                                        "seconds on the data logged so far (the pre-period and what users consumed "
                                        "from the slates shown); None = never")
    replay_window: int = Field(10, ge=1, description="replay: a hit is among the user's next N logged items")
    replay_start_quantile: float = Field(0.8, gt=0, lt=1, description="replay: requests after this quantile of log time")
    runtime: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    actors_per_arm: int = Field(1, ge=1)
    chunk_size: int = Field(128, ge=1, description="requests per pipeline call (fixed, so results do not depend on the runtime)")
    threads: int = Field(1, ge=1, description="torch threads per pipeline (same in every runtime: identical floats)")
    oracle_workers: int | None = Field(None, ge=1, description="processes the world oracle's passes run in at "
                                       "once (None: the cores this process may use; 1: this process only); "
                                       "forked on Linux with threads = 1 and the local runtime, else 1. "
                                       "Results do not depend on it")
    max_restarts: int = Field(-1, ge=-1, description="Ray: restarts of a dead pipeline actor (-1 = unlimited)")
    max_task_retries: int = Field(5, ge=0, description="Ray: retries of a batch whose actor died")
    artifacts: str = "artifacts"
    policies: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-policy config overrides")
    analysis: dict[str, Any] | None = Field(None, description="analysis settings read by `sim report` "
                                                 "(primary metric, guardrails, user SQL metrics); see analysis/README.md")
    arms: tuple[ArmConfig, ...] = Field(..., min_length=1)
    ope: OpeConfig | None = Field(None, description="record the target arms' slates on the exploring arms' "
                                  "requests, for `sim ope`")

    @field_validator("user_model")
    @classmethod
    def _known_scenario(cls, v: str) -> str:
        return _one_of(v, ("auto", *SCENARIOS), "user_model")

    @field_validator("design")
    @classmethod
    def _known_design(cls, v: str) -> str:
        return _one_of(v, tuple(DESIGNS), "design")

    @model_validator(mode="after")
    def _check_arms(self) -> ExperimentConfig:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        if self.ope is not None:
            self._check_ope(names)
        DESIGNS[self.design].check_roles([a.role for a in self.arms])
        if self.design == "interleave" and any(a.explore is not None for a in self.arms):
            raise ValueError("design 'interleave' drafts deterministic rankings: `explore` needs design 'ab'")
        return self

    def _check_ope(self, names: list[str]) -> None:
        unknown = [t for t in self.ope.targets if t not in names]
        if unknown:
            raise ValueError(f"ope.targets: unknown arm {unknown[0]!r} (arms: {', '.join(names)})")
        if not any(a.explore is not None for a in self.arms):
            raise ValueError("ope: no arm explores; give the logging arm an `explore` block")
        if self.design != "ab":
            raise ValueError("ope: shadow target slates need design 'ab'")

    def resolved_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def config_hash(self) -> str:
        return hashlib.sha256(self.resolved_json().encode()).hexdigest()[:16]

    def all_policies(self) -> list[str]:
        return list(dict.fromkeys(p for a in self.arms for p in a.policies()))


_MODELS = (ChannelConfig, StageConfig, RerankConfig, ArmConfig)
_ROOT_CAUSE = {"extra_forbidden": 0, "missing": 1}  # a typo first: the other errors are its echoes


def _known_fields(loc: tuple) -> list[str]:
    """Field names valid where ``loc`` points (by the parent key: arms -> ArmConfig, ...)."""
    keys = [k for k in loc if isinstance(k, str)]
    parent = keys[-2] if len(keys) >= 2 else None
    model = {"arms": ArmConfig, "channels": ChannelConfig, "coarse": StageConfig, "fine": StageConfig,
             "rerank": RerankConfig, "ope": OpeConfig, "epsilon_greedy": EpsilonGreedyConfig,
             "plackett_luce": PlackettLuceConfig}.get(parent, ExperimentConfig)
    return list(model.model_fields)


def first_error(e: ValidationError, flags: dict[str, str] | None = None) -> str:
    """The one error to show, as ``path: message``: an unknown or missing field before the
    cascade it causes (pydantic also reports the container of a broken item as invalid).
    ``flags`` maps top-level fields to the command-line flags that set them (the message names the
    flag and the value given)."""
    err = min(e.errors(), key=lambda x: (_ROOT_CAUSE.get(x["type"], 2), -len(x["loc"])))
    loc = tuple(err["loc"])
    if flags and len(loc) == 1 and loc[0] in flags:
        return f"{flags[loc[0]]} {err['input']!r}: {err['msg'].removeprefix('Value error, ')}"
    if err["type"] == "extra_forbidden":
        import difflib

        where = ".".join(map(str, loc[:-1])) or "config"
        close = difflib.get_close_matches(str(loc[-1]), _known_fields(loc), n=1)
        return f"{where}: unknown field {loc[-1]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    where = ".".join(map(str, loc)) or "config"
    if err["type"] == "missing":
        return f"{where}: required field missing"
    return f"{where}: {err['msg'].removeprefix('Value error, ')}"


def parse_config(data: dict, source: str = "config", flags: dict[str, str] | None = None) -> ExperimentConfig:
    """The validated config; a ConfigError naming the field (or, with ``flags``, the flag) otherwise."""
    try:
        return ExperimentConfig(**data)
    except ValidationError as e:
        msg = first_error(e, flags)
        raise ConfigError(msg if flags and msg.startswith("--") else f"{source}: {msg}") from None


def load_config(path: str | Path) -> ExperimentConfig:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as e:  # parse errors name the line
        raise ConfigError(f"{p}: cannot parse: {e}") from None
    return parse_config(data, str(p))


DEFAULT_QUOTA, BACKUP_QUOTA, DEFAULT_SLATE = 100, 50, 10
HYBRID = "hllm_hybrid"


# the quick budget: what the no-config `sim run` trains (a few minutes on 2 cores, training included),
# named overrides of each policy's own defaults; HLLM's is its "quick" preset (hllm.recipe.PRESETS)
QUICK_BUDGET = {"sasrec": {"epochs": 10, "patience": 2}, "hstu": {"epochs": 10, "patience": 2},
                "hllm": {"preset": "quick"}}


def default_arm(name: str, role: str, *, slate_size: int = DEFAULT_SLATE, n_items: int | None = None) -> dict:
    """The default pipeline for a name used by ``sim run --treatment X --control Y``.

    A model ``X`` runs its own pipeline: retrieval X (100) + popularity backup (50) -> coarse X
    (keep 100) -> fine X (keep 30) -> seen filter -> slate. So ``hllm`` is a pure HLLM arm (no
    ID-model stage: an A/B of hllm vs sasrec measures HLLM vs SASRec). ``hllm_hybrid`` is the
    earlier treatment: SASRec adds a retrieval channel and is the coarse ranker that cuts HLLM's
    candidates before HLLM ranks them (it measures SASRec+HLLM, and drops cold items SASRec ranks low).
    With ``n_items`` (the catalog size), quotas and the slate are capped at it, so a small catalog
    just works.
    """
    cap = n_items if n_items is not None else DEFAULT_QUOTA
    model, coarse = ("hllm", "sasrec") if name == HYBRID else (name, name)
    channels = [{"policy": model, "quota": min(DEFAULT_QUOTA, cap)}]
    if name == HYBRID:
        channels.append({"policy": "sasrec", "quota": min(DEFAULT_QUOTA, cap)})
    if model != "popularity":
        channels.append({"policy": "popularity", "quota": min(BACKUP_QUOTA, cap)})
    total = sum(c["quota"] for c in channels)
    fine_keep = min(30, total)
    return {"name": name, "role": role, "channels": channels,
            "coarse": {"policy": coarse, "keep": min(100, total)},
            "fine": {"policy": model, "keep": fine_keep},
            "rerank": {"filter_seen": True}, "slate_size": min(slate_size, fine_keep, cap)}


def describe_pipeline(arm: ArmConfig) -> list[str]:
    """The arm's pipeline stage by stage, for reports: e.g. ['retrieval: hllm (100) + popularity (50)',
    'coarse: hllm (keep 100)', 'fine: hllm (keep 30)', 'rerank: seen filter', 'slate: 10'].
    Channels are listed in merge priority (weight, then config order), as the pipeline merges them."""
    chans = sorted(arm.channels, key=lambda c: -c.weight)
    out = ["retrieval: " + " + ".join(f"{c.policy} ({c.quota})" for c in chans)]
    for name, st in (("coarse", arm.coarse), ("fine", arm.fine)):
        out.append(f"{name}: " + ("none" if st is None else f"{st.policy} (keep {st.keep})"))
    r = arm.rerank
    steps = ["seen filter" if r.filter_seen else "top-k"]
    if r.mmr_lambda is not None:
        steps.append(f"MMR (lambda {r.mmr_lambda:g}, {r.genre_attr})")
    if r.max_per_genre is not None:
        steps.append(f"at most {r.max_per_genre} per {r.genre_attr}")
    return out + ["rerank: " + ", ".join(steps), f"slate: {arm.slate_size}"]
