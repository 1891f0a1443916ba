"""Run an experiment: train arms on the pre-period, replay/simulate requests, write events.

``run_experiment(cfg, catalog)`` -> run_id. The same config and seed give identical
assignments, requests, exposures and feedback (latency columns aside), in-process or on Ray,
resumed or not: request ids come from the simulated clock, not from wall time.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import uuid
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from policies import registry
from policies.base import UserBatch
from policies.store import fit_or_load
from simulator.assignment import assign
from simulator.config import ExperimentConfig
from simulator.data import Catalog, ensure_dataset
from simulator.data.sequences import Dataset, LeaveOneOut
from simulator.env import Clock, batcher, replay_requests, tracked, world_sessions
from simulator.errors import ConfigError, NotFoundError
from simulator.runtime import RUNTIMES
from simulator.sink import EventSink, ensure_schema
from simulator.users import ReplayUser, WorldUser, raw_to_world

DAY = 86400.0


@dataclass
class Setup:
    """Everything a run needs, derived deterministically from the config."""

    dataset: Dataset
    train_dataset: Dataset  # pre-period logs the arms are trained on
    split: LeaveOneOut
    mode: str  # "world" | "replay"
    sim_start: float
    histories: list[list[int]]  # per user, grows with consumption
    user_model: object
    users: np.ndarray  # users who will send requests
    replay_times: list[np.ndarray] | None = None


def validate(cfg: ExperimentConfig, catalog: Catalog | None = None) -> None:
    """Fail before any work (one-line ConfigError/NotFoundError): unknown policies, policies
    used in a role they cannot play, bad policy overrides, unknown dataset, channel quotas
    larger than the catalog."""
    for name in cfg.all_policies():
        registry.get(name)
    if cfg.analysis is not None:  # checked now so a typo cannot surface only after the run
        from analysis.report import analysis_config, metric_list

        metric_list(analysis_config({}, cfg.analysis))
    for name, ov in cfg.policies.items():
        registry.make_config(name, ov)
    for arm in cfg.arms:
        for c in arm.channels:
            if "retriever" not in registry.get(c.policy).kinds:
                raise ConfigError(f"arm {arm.name!r}: policy {c.policy!r} cannot be a retrieval channel")
        for st in (arm.coarse, arm.fine):
            if st is not None and "scorer" not in registry.get(st.policy).kinds:
                raise ConfigError(f"arm {arm.name!r}: policy {st.policy!r} cannot be a ranker")
    if catalog is None:
        return
    n_items = _n_items(cfg.dataset, catalog)
    if n_items is not None:
        for arm in cfg.arms:
            for c in arm.channels:
                if c.quota > n_items:
                    raise ConfigError(f"arm {arm.name!r}: channel {c.policy!r} quota {c.quota} exceeds the "
                                      f"{n_items} items of dataset {cfg.dataset!r}")


def _n_items(name: str, catalog: Catalog) -> int | None:
    """Catalog size without loading the dataset; NotFoundError for an unknown dataset."""
    if catalog.has_dataset(name):
        return int(catalog.info(name).n_items)
    if name == "synthetic" or name.startswith("synthetic-"):
        from simulator.data.synthetic import WorldConfig

        return WorldConfig().items
    if name == "ml-100k":
        from simulator.data.paths import find_ml100k

        if find_ml100k() is None:
            raise NotFoundError("dataset 'ml-100k' not found (../shared/data/ml-100k or HLLM_SIM_ML100K)")
        return None
    catalog.info(name)  # raises NotFoundError listing the known datasets
    return None


def prepare(cfg: ExperimentConfig, catalog: Catalog) -> Setup:
    ensure_dataset(cfg.dataset, catalog)
    ds = catalog.load_dataset(cfg.dataset)
    info = catalog.info(cfg.dataset)
    is_world = "world" in info.meta
    mode = cfg.user_model if cfg.user_model != "auto" else ("world" if is_world else "replay")
    if mode == "world" and not is_world:
        raise ConfigError(f"user_model 'world' needs a synthetic dataset; {cfg.dataset!r} has no ground truth")
    if mode == "world":
        from simulator.data.synthetic import world_for

        world = world_for(catalog, cfg.dataset)
        sim_start = float(ds.sequences.ts.max()) if len(ds.sequences) else 0.0
        train_ds = ds
        user_model = WorldUser(world, raw_to_world(ds.user_raw_ids), raw_to_world(ds.item_raw_ids))
        users = np.arange(ds.n_users)
        times = None
    else:
        sim_start = float(np.quantile(ds.sequences.ts, cfg.replay_start_quantile))
        train_ds = ds.until(sim_start)  # values kept: hllm_rank's like labels
        user_model = ReplayUser(ds.sequences, cfg.replay_window, ds.values)
        times = [ds.sequences.times(u)[ds.sequences.times(u) > sim_start] for u in range(ds.n_users)]
        users = np.array([u for u in range(ds.n_users) if len(times[u])], dtype=np.int64)
    pre = train_ds.sequences
    split = LeaveOneOut.from_sequences(pre)
    hist = [list(pre.seq(u)) for u in range(ds.n_users)]
    return Setup(ds, train_ds, split, mode, sim_start, hist, user_model, users, times)


def train_arms(cfg: ExperimentConfig, setup: Setup, progress: bool = True) -> dict:
    out = {}
    for name in cfg.all_policies():
        if progress:
            tqdm.write(f"[sim] training {name} on {len(setup.split.train)} interactions ...")
        out[name] = fit_or_load(name, setup.train_dataset, setup.split, cfg.policies.get(name), root=cfg.artifacts,
                                progress=progress)
    return out


def _rerank_view(ds: Dataset):
    """What rerankers need from the dataset (name + item attributes), small enough to ship to actors."""
    from types import SimpleNamespace

    return SimpleNamespace(name=ds.name, n_items=ds.n_items, item_attrs=ds.item_attrs)


def _git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except Exception:
        return ""


def run_experiment(cfg: ExperimentConfig, catalog: Catalog, *, progress: bool = True, run_id: str | None = None,
                   policies: dict | None = None, on_batch=None) -> str:
    """Run ``cfg``; returns the run id. ``on_batch(batch_no, runtime)`` is a test hook."""
    validate(cfg, catalog)
    con = catalog.con
    ensure_schema(con)
    resumed = run_id is not None
    setup = prepare(cfg, catalog)
    policies = policies or train_arms(cfg, setup, progress)
    run_id = run_id or f"{cfg.name}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    if not resumed:
        con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, current_timestamp, NULL, 'running', ?, NULL, 0)",
                    [run_id, cfg.dataset, cfg.resolved_json(), cfg.config_hash(), cfg.seed, _git_rev(), setup.sim_start])
        for a in cfg.arms:
            con.execute("INSERT INTO arms VALUES (?, ?, ?, ?, ?)", [run_id, a.name, a.role, a.weight, a.model_dump_json()])
    else:
        con.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", [run_id])
    runtime_cls = RUNTIMES[cfg.runtime]
    kw = ({"address": cfg.ray_address, "max_restarts": cfg.max_restarts, "max_task_retries": cfg.max_task_retries}
          if cfg.runtime == "ray" else {})
    runtime = runtime_cls(list(cfg.arms), policies, _rerank_view(setup.dataset), cfg.actors_per_arm,
                          chunk_size=cfg.chunk_size, threads=cfg.threads, **kw)
    sink = EventSink(con, run_id)
    status = "failed"
    try:
        n = _simulate(cfg, setup, runtime, sink, progress, on_batch)
        status = "complete"
    except KeyboardInterrupt:
        status = "incomplete"
        n = None
    finally:
        sink.flush()
        runtime.close()
        end = con.execute("SELECT max(ts), count(*) FROM requests WHERE run_id = ?", [run_id]).fetchall()[0]
        con.execute("UPDATE runs SET status = ?, finished_at = current_timestamp, sim_end = ?, n_requests = ? "
                    "WHERE run_id = ?", [status, end[0], end[1], run_id])
    if status == "incomplete":
        raise KeyboardInterrupt(run_id)
    del n
    return run_id


def _simulate(cfg: ExperimentConfig, setup: Setup, runtime, sink: EventSink, progress: bool, on_batch) -> int:
    arm_names = [a.name for a in cfg.arms]
    arm_of = assign(np.arange(setup.dataset.n_users), [a.weight for a in cfg.arms], cfg.salt)
    clock = Clock(setup.sim_start, cfg.n_requests, cfg.duration_s)
    rng = np.random.default_rng(cfg.seed)
    first_seen: dict[int, float] = {}
    if setup.mode == "world":
        for u in setup.users:
            tracked(clock, world_sessions(clock, int(u), np.random.default_rng([cfg.seed, int(u)]), cfg.session_gap_s,
                                          cfg.abandon_prob, float(rng.uniform(0, cfg.start_horizon_s)),
                                          DAY / cfg.sessions_per_day))
    else:
        for u in setup.users:
            tracked(clock, replay_requests(clock, int(u), setup.replay_times[u]))
    state = {"next_id": 0, "batch": 0}
    bar = tqdm(total=cfg.n_requests, desc="simulate", unit="req", disable=not progress)

    def serve_batch(batch) -> np.ndarray:
        clicks = np.full(len(batch), -1, np.int64)
        for s in range(0, len(batch), cfg.max_batch):
            part = batch[s:s + cfg.max_batch]
            clicks[s:s + len(part)] = _serve(part)
        bar.update(len(batch))
        return clicks

    def _serve(part) -> np.ndarray:
        users = np.array([r.user_id for r in part], np.int64)
        now = np.array([r.ts for r in part], np.float64)
        sess = np.array([r.session_id for r in part], np.int64)
        rid = state["next_id"] + np.arange(len(part), dtype=np.int64)
        state["next_id"] += len(part)
        arms = arm_of[users]
        work, rows = {}, {}
        for a in np.unique(arms):
            idx = np.flatnonzero(arms == a)
            rows[arm_names[a]] = idx
            work[arm_names[a]] = UserBatch(users[idx], [np.asarray(setup.histories[u], np.int64) for u in users[idx]],
                                           None, now[idx])
        results = runtime.serve(work)
        K = max(a.slate_size for a in cfg.arms)
        slate = np.full((len(part), K), -1, np.int64)
        scores = np.full((len(part), K), -np.inf, np.float32)
        channel = np.full((len(part), K), "", dtype=object)
        lat = np.zeros(len(part))
        for arm, idx in rows.items():
            sl, l_ms = results[arm]
            k = sl.item_ids.shape[1]
            slate[idx, :k], scores[idx, :k], lat[idx] = sl.item_ids, sl.scores, l_ms
            names = np.array(list(sl.channel_names) + [""], dtype=object)
            channel[idx, :k] = names[np.where(sl.channel >= 0, sl.channel, len(names) - 1)]
        brng = np.random.default_rng([cfg.seed, 7, state["batch"]])
        pos = setup.user_model.respond(users, slate, now, brng)
        state["batch"] += 1
        arm_str = np.array(arm_names, dtype=object)[arms]
        new = [u for u in np.unique(users) if int(u) not in first_seen]
        for u in new:
            first_seen[int(u)] = float(now[users == u].min())
        if new:
            nu = np.array(new, np.int64)
            sink.add("assignments", user_id=nu, arm=np.array(arm_names, dtype=object)[arm_of[nu]].tolist(),
                     first_ts=np.array([first_seen[int(u)] for u in nu]))
        sink.add("requests", request_id=rid, user_id=users, arm=arm_str.tolist(), ts=now, session_id=sess, latency_ms=lat)
        valid = slate >= 0
        r_i, p_i = np.nonzero(valid)
        sink.add("exposures", request_id=rid[r_i], user_id=users[r_i], arm=arm_str[r_i].tolist(), position=p_i.astype(np.int32),
                 item_id=slate[r_i, p_i], channel=channel[r_i, p_i].tolist(), score=scores[r_i, p_i].astype(np.float64),
                 latency_ms=lat[r_i], ts=now[r_i])
        hit = np.flatnonzero(pos >= 0)
        if len(hit):
            items = slate[hit, pos[hit]]
            sink.add("feedback", request_id=rid[hit], user_id=users[hit], arm=arm_str[hit].tolist(), item_id=items,
                     position=pos[hit].astype(np.int32), event="click", value=1.0, ts=now[hit] + cfg.feedback_delay_s)
            vals = getattr(setup.user_model, "last_values", None)
            sink.add("feedback", request_id=rid[hit], user_id=users[hit], arm=arm_str[hit].tolist(), item_id=items,
                     position=pos[hit].astype(np.int32), event="consume",
                     value=(np.ones(len(hit)) if vals is None else vals[hit]).astype(np.float64),
                     ts=now[hit] + cfg.feedback_delay_s + cfg.consume_delay_s)
            clock.env.process(_deliver(clock.env, cfg.feedback_delay_s, setup.histories, users[hit], items))
        if on_batch is not None:
            on_batch(state["batch"], runtime)
        return pos

    clock.env.process(batcher(clock, cfg.batch_window_s, serve_batch))
    clock.env.run(until=clock.done)
    bar.close()
    return state["next_id"]


def _deliver(env, delay: float, histories: list, users: np.ndarray, items: np.ndarray):
    """Delayed feedback: the consumed items reach the users' histories (what the arms see
    on the next request) only ``delay`` simulated seconds after the click."""
    if delay > 0:
        yield env.timeout(delay)
    for u, it in zip(users.tolist(), items.tolist(), strict=True):
        histories[u].append(it)
    if False:  # pragma: no cover - keeps this a generator when delay == 0
        yield


def resume_experiment(run_id: str, catalog: Catalog, *, progress: bool = True) -> str:
    """Continue an incomplete run: the deterministic replay re-creates every event and the
    keyed writes make the ones already stored harmless."""
    ensure_schema(catalog.con)
    row = catalog.con.execute("SELECT config_json, status FROM runs WHERE run_id = ?", [run_id]).fetchall()
    if not row:
        raise NotFoundError(f"unknown run id {run_id!r}")
    if row[0][1] == "complete":
        return run_id
    cfg = ExperimentConfig.model_validate_json(row[0][0])
    return run_experiment(cfg, catalog, progress=progress, run_id=run_id)
