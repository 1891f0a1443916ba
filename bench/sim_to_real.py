"""Sim-to-real agreement of the learned world: does an A/B in it rank the arms as their held-out
offline metrics do? Prints JSON (``--out FILE`` also writes it, with the per-user values).

    # ML-100K (the run writes its events into --catalog: any writable file)
    HLLM_SIM_ML100K=/work/shared/data/ml-100k nice -n 10 python bench/sim_to_real.py \\
        --catalog /tmp/s2r-ml100k.duckdb --artifacts /tmp/s2r-art --data ml-100k --out s2r_ml100k.json
    # any dataset loaded with `sim data load` (copy a catalog you must not write to), e.g. Amazon Office
    cp /tmp/q22/office.duckdb /tmp/s2r-office.duckdb
    nice -n 10 python bench/sim_to_real.py --catalog /tmp/s2r-office.duckdb --artifacts /tmp/s2r-art \\
        --data office --out s2r_office.json

Arms (``--arms``, registered policies; the first is the control): each trains once, on the quick
budget ``sim run`` gives it (``engine.config.QUICK_BUDGET``; ``--settings JSON`` overrides a
policy's settings), on the learned world's training split, which is the dataset's leave-one-out
split (every user's seq[:-2], validation seq[:-2] -> seq[-2]). The same fitted models are judged twice:

1. OFFLINE: ``policies.evaluate.evaluate`` on the test targets (seq[:-1] -> seq[-1]; full ranking,
   history excluded, as bench/hllm_quality.py): NDCG@10 and HR@10, per test user.
2. ONLINE: one A/B/n run through the product path (``engine.run.run_experiment``, ``user_model =
   "learned"``, ``--requests`` requests, ``--oracle-reps`` oracle passes); each arm is the policy's
   own ranking (one retrieval channel of 50, seen items filtered, slate of 10: the offline protocol's
   top-10). Per arm: the A/B ctr (clicks / exposures of its users: what the ordering uses),
   ``analysis.report.summarize``'s ctr lift vs the control with its CI (CUPED-adjusted where the
   report adjusts), and the world oracle's true ctr (mean of its passes).
3. AGREEMENT: Spearman and Kendall tau (``scipy.stats``) between the offline NDCG@10 of the arms
   and (a) their A/B ctr, (b) their oracle ctr. 95% percentile bootstrap CIs (``--boot`` draws) that
   resample users: the test users (paired across arms) and, for (a), each arm's users of the run
   (``analysis.views.user_table``); (b)'s oracle values are the world's truth (their Monte-Carlo SE
   is reported beside them). Also: the share of draws with a positive Spearman, and the discordant
   arm pairs (the learned world orders them otherwise than offline), each with the share of draws in
   which it is discordant. Reference: the best published LLM-agent simulator reaches 0.72 Spearman
   against real A/B outcomes (issue 24).

The learned user model is fitted on the whole log (test interactions included): it is the world, not
an arm, so it may know them; the arms never see the test targets in training.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim_calibration import arm, config  # noqa: E402

from analysis.report import summarize  # noqa: E402
from analysis.truth import truth_summary, truth_table  # noqa: E402
from analysis.views import install_views, user_table  # noqa: E402
from policies import registry  # noqa: E402
from policies.evaluate import evaluate  # noqa: E402
from simulator.core import Catalog, ensure_dataset  # noqa: E402
from simulator.core.errors import SimError  # noqa: E402
from simulator.engine.config import QUICK_BUDGET  # noqa: E402
from simulator.engine.run import prepare, run_experiment, train_arms  # noqa: E402

PER_USER = "per_user_ndcg@10"
EFFECT_KEYS = ("rel_lift", "rel_ci_low", "rel_ci_high", "p", "p_adj", "significant", "true_rel_lift",
               "true_rel_se")
REFERENCE = "0.72 Spearman: the best published LLM-agent simulator against real A/B outcomes (issue 24)"


def budget(names: list[str], settings: dict) -> dict:
    """Each arm policy's training settings: ``sim run``'s quick budget, then ``settings`` over it."""
    return {n: {**QUICK_BUDGET.get(n, {}), **settings.get(n, {})} for n in names
            if n in QUICK_BUDGET or n in settings}


def experiment(names: list[str], n_items: int, args, settings: dict):
    """The A/B/n config: popularity (the first arm) the control, one retrieval-only arm per policy."""
    arms = []
    for i, n in enumerate(names):
        a = arm(n, n, "control" if i == 0 else "treatment")
        a["channels"][0]["quota"] = min(a["channels"][0]["quota"], n_items)
        a["slate_size"] = min(a["slate_size"], a["channels"][0]["quota"])
        arms.append(a)
    return config(arms, seed=args.seed, salt="sim-to-real", artifacts=args.artifacts, name="sim-to-real",
                  dataset=args.data, user_model="learned", n_requests=args.requests,
                  oracle_reps=args.oracle_reps, policies=budget(names, settings))


def offline(policies: dict, names: list[str], split) -> tuple[dict, np.ndarray]:
    """Test NDCG@10 / HR@10 of every arm's policy and the (arms, test users) per-user NDCG@10."""
    rows, per, users = {}, [], None
    for n in names:
        ev = evaluate(policies[n], split, which="test", ks=(10,))
        pu = ev.per_user.sort_values("user_id")
        if users is not None and not np.array_equal(users, pu["user_id"].to_numpy()):
            raise AssertionError("offline: the arms were evaluated on different test users")
        users = pu["user_id"].to_numpy()
        rows[n] = {"ndcg@10": ev.summary["ndcg@10"], "hr@10": ev.summary["hr@10"], "test_users": len(pu)}
        per.append(pu["ndcg@10"].to_numpy(np.float64))
    return rows, np.stack(per)


def online(con, run_id: str, names: list[str]) -> tuple[dict, list[np.ndarray], list[np.ndarray]]:
    """Per arm: A/B ctr, ctr lift vs the control (summarize), oracle ctr; each arm's per-user clicks
    and exposures."""
    users, _ = user_table(con, run_id)
    s = summarize(con, run_id)
    s = s[s.metric == "ctr"].set_index("arm")
    truth = truth_summary(truth_table(con, run_id))
    truth = truth[truth.metric == "ctr"].set_index("arm")
    rows, clicks, exposures = {}, [], []
    for n in names:
        u = users[users.arm == n]
        c, e = u["clicks"].to_numpy(np.float64), u["exposures"].to_numpy(np.float64)
        clicks.append(c)
        exposures.append(e)
        row = {"ctr": float(c.sum() / e.sum()) if e.sum() else float("nan"), "users": len(u),
               "exposures": int(e.sum()), "clicks": int(c.sum())}
        if n in truth.index:
            row.update(true_ctr=float(truth.at[n, "value"]), true_ctr_mc_se=float(truth.at[n, "se"]),
                       oracle_passes=int(truth.at[n, "reps"]))
        if n in s.index:
            row["vs_control"] = {k: _plain(s.at[n, k]) for k in EFFECT_KEYS}
        rows[n] = row
    return rows, clicks, exposures


def _plain(v):
    """A JSON value: numpy scalars as Python, NaN as None (also inside lists and dicts)."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    v = v.item() if hasattr(v, "item") else v
    return None if isinstance(v, float) and not np.isfinite(v) else v


def boot_means(per_user: np.ndarray, draws: int, rng, chunk: int = 100) -> np.ndarray:
    """(draws, arms) mean of ``per_user`` (arms, users) over users resampled, the same users for every arm."""
    n = per_user.shape[1]
    out = []
    for s in range(0, draws, chunk):
        idx = rng.integers(0, n, (min(chunk, draws - s), n))
        out.append(per_user[:, idx].mean(-1).T)
    return np.concatenate(out)


def boot_ctr(clicks: list[np.ndarray], exposures: list[np.ndarray], draws: int, rng,
             chunk: int = 100) -> np.ndarray:
    """(draws, arms) clicks / exposures of each arm over its own users resampled."""
    cols = []
    for c, e in zip(clicks, exposures, strict=True):
        col = []
        for s in range(0, draws, chunk):
            idx = rng.integers(0, len(c), (min(chunk, draws - s), len(c)))
            with np.errstate(invalid="ignore", divide="ignore"):
                col.append(c[idx].sum(1) / e[idx].sum(1))
        cols.append(np.concatenate(col))
    return np.stack(cols, 1)


def rank_corr(x, y) -> tuple[float, float]:
    """(Spearman, Kendall tau-b); NaN where an ordering is undefined (a constant vector)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(x, y).statistic), float(stats.kendalltau(x, y).statistic)


def discordant(names: list[str], x, y, xd: np.ndarray, yd: np.ndarray, labels: tuple[str, str]) -> list[dict]:
    """The arm pairs ordered one way by ``x`` (offline) and the other by ``y`` (the learned world)."""
    out = []
    for i, j in itertools.combinations(range(len(names)), 2):
        if (x[i] - x[j]) * (y[i] - y[j]) < 0:
            share = float(np.mean((xd[:, i] - xd[:, j]) * (yd[:, i] - yd[:, j]) < 0))
            out.append({"pair": [names[i], names[j]], labels[0]: [x[i], x[j]], labels[1]: [y[i], y[j]],
                        "offline_prefers": names[i] if x[i] > x[j] else names[j],
                        "world_prefers": names[i] if y[i] > y[j] else names[j],
                        "discordant_share_of_draws": share})
    return out


def ci95(draws: np.ndarray) -> list[float] | None:
    """95% percentile interval of bootstrap draws (None without any)."""
    return [float(v) for v in np.percentile(draws, [2.5, 97.5])] if len(draws) else None


def agreement(names: list[str], x, y, xd: np.ndarray, yd: np.ndarray, label: str) -> dict:
    """Rank agreement of offline ``x`` with world ``y``, bootstrap CIs from the paired draws."""
    rho, tau = rank_corr(x, y)
    draws = np.array([rank_corr(a, b) for a, b in zip(xd, yd, strict=True)])
    ok = np.isfinite(draws).all(1)
    return {"spearman": rho, "spearman_ci95": ci95(draws[ok, 0]), "kendall_tau": tau,
            "kendall_tau_ci95": ci95(draws[ok, 1]),
            "share_of_draws_spearman_positive": float(np.mean(draws[ok, 0] > 0)) if ok.any() else None,
            "draws": int(len(draws)), "undefined_draws": int((~ok).sum()),
            "world_order": [names[i] for i in np.argsort(-np.asarray(y), kind="stable")],
            "discordant_pairs": discordant(names, list(x), list(y), xd, yd, ("offline_ndcg@10", label))}


def compare(names: list[str], per_user: np.ndarray, on: dict, clicks, exposures, args) -> dict:
    """(a) offline vs the A/B ctr, (b) offline vs the oracle's true ctr."""
    rng = np.random.default_rng(args.seed)
    x = per_user.mean(1)
    xd = boot_means(per_user, args.boot, rng)
    ab = np.array([on[n]["ctr"] for n in names])
    out = {"offline_order": [names[i] for i in np.argsort(-x, kind="stable")],
           "ab_ctr": agreement(names, x, ab, xd, boot_ctr(clicks, exposures, args.boot, rng), "ab_ctr")}
    if all("true_ctr" in on[n] for n in names):
        truth = np.array([on[n]["true_ctr"] for n in names])
        out["oracle_ctr"] = agreement(names, x, truth, xd, np.broadcast_to(truth, xd.shape), "oracle_ctr")
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="ml-100k",
                    help="a catalog dataset (ml-100k / synthetic* are created on use)")
    ap.add_argument("--catalog", default=None, help="catalog file the run writes into (default "
                    "$SIM_CATALOG or /tmp/sim-to-real.duckdb)")
    ap.add_argument("--arms", default="popularity,itemknn,sasrec,hstu,hllm",
                    help="registered policies; the first is the control")
    ap.add_argument("--requests", type=int, default=8000, help="requests of the A/B/n run")
    ap.add_argument("--oracle-reps", type=int, default=2, help="world-oracle passes per arm")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap draws")
    ap.add_argument("--seed", type=int, default=0, help="the run's seed and the bootstrap's")
    ap.add_argument("--settings", default="{}", help='JSON {policy: {setting: value}} over the quick budget, '
                    'e.g. \'{"hllm": {"preset": "fast"}}\'')
    ap.add_argument("--artifacts", default="artifacts",
                    help="trained-arm cache (default ./artifacts, as sim run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        a.settings = json.loads(a.settings)
        assert isinstance(a.settings, dict) and all(isinstance(v, dict) for v in a.settings.values())
    except (ValueError, AssertionError):
        ap.error(f"--settings {a.settings!r}: expected a JSON object of objects, e.g. '{{\"hllm\": {{}}}}'")
    a.names = [n.strip() for n in a.arms.split(",") if n.strip()]
    if len(a.names) < 3 or len(set(a.names)) != len(a.names):
        ap.error(f"--arms {a.arms!r}: expected at least three different policies (a ranking)")
    return a


def run(args) -> dict:
    """Train the arms once, evaluate them offline, run the A/B/n in the learned world, compare."""
    import torch

    torch.set_num_threads(args.threads)
    for n in args.names:
        registry.get(n)  # an unknown policy stops before any work
    cat = Catalog(args.catalog or os.environ.get("SIM_CATALOG", "/tmp/sim-to-real.duckdb"))
    ensure_dataset(args.data, cat)
    cfg = experiment(args.names, int(cat.info(args.data).n_items), args, args.settings)
    t0 = time.perf_counter()
    setup = prepare(cfg, cat)
    policies = train_arms(cfg, setup, progress=not args.quiet)
    t_train = time.perf_counter() - t0
    off, per_user = offline(policies, args.names, setup.split)
    t_off = time.perf_counter() - t0 - t_train
    rid = run_experiment(cfg, cat, progress=not args.quiet, policies=policies)
    install_views(cat.con)
    on, clicks, exposures = online(cat.con, rid, args.names)
    t_on = time.perf_counter() - t0 - t_train - t_off
    for n in args.names:
        off[n][PER_USER] = [round(float(v), 5) for v in per_user[args.names.index(n)]]
    n_req = cat.con.execute("SELECT count(*) FROM requests WHERE run_id = ?", [rid]).fetchone()[0]
    return {"bench": "sim_to_real", "command": "python bench/sim_to_real.py " + " ".join(args.argv),
            "dataset": args.data, "n_users": setup.dataset.n_users, "n_items": setup.dataset.n_items,
            "arms": args.names, "control": args.names[0], "training": cfg.policies, "seed": args.seed,
            "warnings": setup.warnings(cfg), "offline": off,
            "online": {"run_id": rid, "requests": int(n_req), "oracle_reps": args.oracle_reps,
                       "users_served": sum(r["users"] for r in on.values()), "arms": on},
            "agreement": compare(args.names, per_user, on, clicks, exposures, args),
            "bootstrap": {"draws": args.boot, "resamples": "offline: test users (paired across arms); "
                          "A/B: each arm's users of the run; oracle: fixed (the world's truth)"},
            "reference": REFERENCE, "machine": {"cpus": os.cpu_count(), "threads": args.threads},
            "seconds": {"train": round(t_train, 1), "offline": round(t_off, 1), "online": round(t_on, 1),
                        "total": round(time.perf_counter() - t0, 1)}}


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    try:
        res = _plain(run(args))
    except SimError as e:  # a bad dataset / policy / setting: one line, not a traceback
        raise SystemExit(f"error: {e}") from None
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1, allow_nan=False))
    off = {k: {a: b for a, b in v.items() if a != PER_USER} for k, v in res["offline"].items()}
    short = {**res, "offline": off}
    print(json.dumps(short, indent=1, allow_nan=False))
    return res


if __name__ == "__main__":
    main()
