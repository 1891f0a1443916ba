"""Run an experiment: train arms on the pre-period, replay/simulate requests, write events.

``run_experiment(cfg, catalog)`` -> run_id. The same config and seed give identical
assignments, requests, exposures and feedback (latency columns aside), in-process or on Ray,
resumed or not: request ids come from the simulated clock, not from wall time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from policies import registry
from policies.base import UserBatch
from policies.store import fit_or_load
from simulator.core import Catalog
from simulator.core.busy import holding
from simulator.core.errors import ConfigError, NotFoundError, RunInterrupted
from simulator.core.sequences import Dataset
from simulator.engine import forked, signals
from simulator.engine.config import ExperimentConfig
from simulator.engine.design import make_design
from simulator.engine.eventlog import EventLog
from simulator.engine.oracle import ReusingRuntime, SlateRecorder, Truth, world_truth
from simulator.engine.pipeline import Pipeline
from simulator.engine.retrain import Retrainer
from simulator.engine.runtime import RUNTIMES, LocalRuntime
from simulator.engine.scenario import Scenario, build_scenario
from simulator.engine.store import PHASES, RunStore, phase_index
from simulator.engine.story import Simulation, Timing


def validate(cfg: ExperimentConfig, catalog: Catalog | None = None) -> None:
    """Fail before any work (one-line ConfigError/NotFoundError): unknown policies, policies
    used in a role they cannot play, bad policy overrides, unknown dataset, channel quotas
    larger than the catalog."""
    for name in cfg.all_policies():
        registry.get(name)
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
    n_items = dataset_size(cfg.dataset, catalog)
    if n_items is not None:
        for arm in cfg.arms:
            for c in arm.channels:
                if c.quota > n_items:
                    raise ConfigError(f"arm {arm.name!r}: channel {c.policy!r} quota {c.quota} exceeds the "
                                      f"{n_items} items of dataset {cfg.dataset!r}")


def dataset_size(name: str, catalog: Catalog) -> int | None:
    """Catalog size without loading the dataset; NotFoundError for an unknown dataset."""
    if catalog.has_dataset(name):
        return int(catalog.info(name).n_items)
    if name == "synthetic" or name.startswith("synthetic-"):
        from simulator.core.synthetic import WorldConfig

        return WorldConfig().items
    if name == "ml-100k":
        from simulator.core.paths import find_ml100k

        if find_ml100k() is None:
            raise NotFoundError("dataset 'ml-100k' not found (../shared/data/ml-100k or HLLM_SIM_ML100K)")
        return None
    catalog.info(name)  # raises NotFoundError listing the known datasets
    return None


def prepare(cfg: ExperimentConfig, catalog: Catalog) -> Scenario:
    """The run's scenario (world, replay, ...): its data, training cut, users and user model."""
    return build_scenario(cfg, catalog)


def train_arms(cfg: ExperimentConfig, setup: Scenario, progress: bool = True) -> dict:
    out = {}
    for name in cfg.all_policies():  # fit_or_load says whether it trains or loads from the cache
        signals.fault_point("training")
        out[name] = fit_or_load(name, setup.train_dataset, setup.split, cfg.policies.get(name), root=cfg.artifacts,
                                progress=progress)
    return out


def _rerank_view(ds: Dataset):
    """What rerankers need from the dataset (name + item attributes), small enough to ship to actors."""
    from types import SimpleNamespace

    return SimpleNamespace(name=ds.name, n_items=ds.n_items, item_attrs=ds.item_attrs)


def _git_rev() -> str:
    """The commit of the code that ran (the package's checkout, not the working directory's)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parents[2]).stdout.strip()
    except Exception:  # noqa: BLE001 - not a checkout (installed wheel): no commit to record
        return ""


def run_experiment(cfg: ExperimentConfig, catalog: Catalog, *, progress: bool = True, run_id: str | None = None,
                   policies: dict | None = None, on_batch=None, report: Callable[[str], None] | None = None) -> str:
    """Run ``cfg`` through its phases; returns the run id. ``on_batch(batch_no, runtime)`` is a test hook.

    The phases are ``simulate`` (events served and flushed), ``oracle`` (world runs: each arm's true
    values) and ``report`` (``report(run_id)``, the command layer's report, when given). The run is
    ``complete`` once its data phases have stored their rows, and ``runs.phase`` says the last phase
    stored; a resumed run (``run_id`` given) does only the phases still missing. Ctrl-C / SIGTERM raise :class:`RunInterrupted` after
    marking the run ``incomplete``; any other error marks it ``failed``; a runtime that cannot
    start leaves no run row at all."""
    validate(cfg, catalog)
    con = catalog.con
    resumed = run_id is not None
    setup = prepare(cfg, catalog)
    if not resumed:
        setup.announce(cfg)
    done = RunStore(con, run_id).stored_phase() if resumed else None
    policies = policies or train_arms(cfg, setup, progress)
    run_id = run_id or f"{cfg.name}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    store = RunStore(con, run_id)
    runtime = _start_runtime(cfg, policies, setup) if done is None else None
    if runtime is not None and setup.has_truth and cfg.oracle_reps >= 1:  # the oracle reuses the run's slates
        runtime = SlateRecorder(runtime, _history_only_arms(cfg, policies, setup))
    status, stop = "failed", None
    with signals.cooperative():  # from here a signal stops the run between batches, never mid-write
        try:
            store.start(cfg, setup.sim_start, _git_rev(), resumed, setup.warnings(cfg))
            with holding(catalog.path, run_id):
                try:
                    if done is None:
                        _simulate(cfg, setup, runtime, policies, store, progress, on_batch)
                    if phase_index(done) < phase_index("oracle"):
                        recorded = runtime if isinstance(runtime, SlateRecorder) else None
                        _oracle(cfg, setup, policies, store, progress, recorded)
                    status = "complete"
                except BaseException as e:  # Ctrl-C / SIGTERM: incomplete (resumable); anything else: failed
                    if not signals.is_stop(e):
                        raise
                    status, stop = "incomplete", e
                finally:
                    store.finish(status)
                if status == "complete" and report is not None:
                    report_phase(store, report)
        finally:
            if runtime is not None:
                runtime.close()
    if stop is not None:
        raise RunInterrupted(run_id, signals.exit_code(stop))
    signals.check()  # a signal during the final writes: the run is complete, the command stops
    return run_id


def report_phase(store: RunStore, report: Callable[[str], None]) -> None:
    """The report phase, after the data phases made the run ``complete``: ``runs.phase`` becomes
    ``report`` only once the report is written (a process killed here is resumed by writing it)."""
    signals.fault_point("report")
    report(store.run_id)
    store.mark_phase("report")


def _simulate(cfg: ExperimentConfig, setup: Scenario, runtime, policies: dict, store: RunStore,
              progress: bool, on_batch) -> None:
    """The simulate phase: serve the requests and flush every event (also when a signal stops it)."""
    names = tuple(a.name for a in cfg.arms)
    design = make_design(cfg)
    log = EventLog(store.events(), names, cfg.feedback_delay_s, cfg.consume_delay_s)
    try:
        simulation(cfg, setup, design, runtime, log, cfg.seed, policies=policies, progress=progress).run(
            progress, on_batch)
    finally:
        signals.fault_point("flush")
        log.flush()
    store.mark_phase("simulate")


def _start_runtime(cfg: ExperimentConfig, policies: dict, setup: Scenario):
    kw = ({"address": cfg.ray_address, "max_restarts": cfg.max_restarts, "max_task_retries": cfg.max_task_retries}
          if cfg.runtime == "ray" else {})
    runtime = RUNTIMES[cfg.runtime](list(cfg.arms), policies, _rerank_view(setup.dataset), cfg.actors_per_arm,
                                    chunk_size=cfg.chunk_size, threads=cfg.threads,
                                    availability=setup.availability(policies, setup.train_dataset), **kw)
    try:
        runtime.start(start_batch(setup))
    except BaseException:
        runtime.close()
        raise
    return runtime


def start_batch(setup: Scenario) -> UserBatch:
    """The users who will send requests, with what the arms see of them at the run's start."""
    users = np.asarray(setup.users, np.int64)
    now = np.full(len(users), setup.sim_start, np.float64)
    hist, times = setup.seen(users, now, setup.histories, setup.history_times)
    return UserBatch(users, hist, times, now)


def _history_only_arms(cfg: ExperimentConfig, policies: dict, setup: Scenario) -> dict[str, str]:
    """arm -> its ``Pipeline.slate_key``, for the arms whose slate is a function of the user and
    history alone (``Pipeline.history_only``)."""
    view, avail = _rerank_view(setup.dataset), setup.availability(policies, setup.train_dataset)
    pipes = [Pipeline(a, {p: policies[p] for p in a.policies()}, view, avail) for a in cfg.arms]
    return {p.arm.name: p.slate_key() for p in pipes if p.history_only()}


def _oracle(cfg: ExperimentConfig, setup: Scenario, policies: dict, store: RunStore, progress: bool,
            recorded: SlateRecorder | None = None) -> None:
    """The oracle phase (scenarios with a ground truth): store each arm's true values (``recorded``:
    the run's slates and serving times, when this process ran the simulation)."""
    end = store.con.execute("SELECT max(ts) FROM requests WHERE run_id = ?", [store.run_id]).fetchall()[0][0]
    if setup.has_truth and cfg.oracle_reps >= 1 and end is not None:
        signals.fault_point("oracle")
        truth = run_truth(cfg, setup, policies, (setup.sim_start, float(end)), progress, recorded)
        store.store_truth(truth.rows(), truth.window)
    store.mark_phase("oracle")


def simulation(cfg: ExperimentConfig, setup: Scenario, design, runtime, log, seed: int,
               stop_at: float | None = None, *, policies: dict, progress: bool = False) -> Simulation:
    """The run's story with the given design, event log and seed (``stop_at``: end of the window);
    ``policies``: the fitted policies the run starts with (what a scheduled retrain restores)."""
    timing = Timing.from_config(cfg, setup.sim_start)
    if stop_at is not None:
        timing = dataclasses.replace(timing, n_requests=float("inf"), stop_at=stop_at)
    retrainer = Retrainer(cfg, setup, policies, progress) if cfg.retrain_every is not None else None
    return Simulation(timing, design, runtime, setup, log, seed=seed, retrainer=retrainer)


def run_truth(cfg: ExperimentConfig, setup: Scenario, policies: dict, window: tuple[float, float],
              progress: bool = False, recorded: SlateRecorder | None = None) -> Truth:
    """The world oracle for this run's window (in-process, or in forked copies of this process:
    results do not depend on the runtime; ``recorded``: the run's slates, reused where a pass
    repeats a request, and its arms' serving times, which balance the passes over the workers)."""
    local = LocalRuntime(list(cfg.arms), policies, _rerank_view(setup.dataset), chunk_size=cfg.chunk_size,
                         threads=cfg.threads, availability=setup.availability(policies, setup.train_dataset))
    runtime = ReusingRuntime(local, None if recorded is None else recorded.memo)
    stop = float(np.nextafter(window[1], np.inf))  # requests at the run's last request time are served too
    pipes = local.pipes
    shares = tuple(pipes[a.name].slate_key() if pipes[a.name].history_only() else ("arm", a.name)
                   for a in cfg.arms)
    workers = _oracle_workers(cfg, recorded, progress)
    if progress:
        tqdm.write(f"[sim] world oracle: {len(cfg.arms)} arms x {cfg.oracle_reps} counterfactual passes"
                   f"{f' in up to {workers.n} processes' if workers.n > 1 else ''} ...", file=sys.stderr)
    return world_truth(lambda design, log, seed: simulation(cfg, setup, design, runtime, log, seed, stop,
                                                            policies=policies),
                       tuple(a.name for a in cfg.arms), setup.dataset.n_users, setup.user_model, cfg.seed,
                       cfg.oracle_reps, window, shares=shares, workers=workers)


def oracle_workers(cfg: ExperimentConfig) -> int:
    """The processes the oracle's passes may use (``ExperimentConfig.oracle_workers``)."""
    if not forked.can_fork(cfg.threads):
        return 1
    return cfg.oracle_workers or forked.cores()


def _oracle_workers(cfg: ExperimentConfig, recorded: SlateRecorder | None, progress: bool) -> forked.Workers:
    """The oracle's workers: a pass costs what its arm's requests cost in the run (when known)."""
    ms = {} if recorded is None else recorded.ms_per_request()
    names = [a.name for a in cfg.arms]

    def retry(message: str) -> None:
        if progress:
            tqdm.write(f"[sim] world oracle: {message}", file=sys.stderr)

    return forked.Workers(oracle_workers(cfg), cost=lambda job: ms.get(names[job[0]], 1.0),
                          check=signals.check, on_retry=retry)


@dataclass(frozen=True)
class Resumed:
    """What ``resume_experiment`` did: the phases that were missing and are now stored."""

    run_id: str
    was_complete: bool
    phases: tuple[str, ...]  # done by this call, in order


def resume_experiment(run_id: str, catalog: Catalog, *, progress: bool = True,
                      report: Callable[[str], None] | None = None) -> Resumed:
    """Continue an unfinished run: only its missing phases run. A simulation that had not ended is
    re-created by the deterministic replay (the keyed writes make the events already stored
    harmless); a complete run is left as it is."""
    row = catalog.con.execute("SELECT config_json, status FROM runs WHERE run_id = ?", [run_id]).fetchall()
    if not row:
        raise NotFoundError(f"unknown run id {run_id!r}")
    store = RunStore(catalog.con, run_id)
    status, phase = row[0][1], store.stored_phase()
    if status == "complete":
        if report is None or phase == "report":
            return Resumed(run_id, True, ())
        with signals.cooperative():
            report_phase(store, report)
        signals.check()
        return Resumed(run_id, False, ("report",))
    try:
        cfg = ExperimentConfig.model_validate_json(row[0][0])
    except ValueError as e:  # pydantic ValidationError: a config this version no longer accepts
        from simulator.engine.config import first_error

        raise ConfigError(f"cannot resume run {run_id}: its stored config is not valid now ({first_error(e)}); "
                          "start a new run") from None
    todo = [p for p in PHASES[phase_index(phase) + 1:] if p != "report" or report is not None]
    run_experiment(cfg, catalog, progress=progress, run_id=run_id, report=report)
    return Resumed(run_id, False, tuple(todo))
