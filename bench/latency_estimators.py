"""A/A rates from the tables ``bench/replay_aa_tables.py`` kept: every metric as the report gave it
(its `summarize` rows), and latency under four variances of the same windowed difference
(``analysis.estimators.BatchRatio``: arms paired within time windows of consecutive batches):

  windows   the report's: windows independent (t, windows - 1 dof)
  hac       Newey-West (Bartlett kernel, lag floor(4 (B/100)^(2/9))) over the window sequence
  users     clustered by user (a user's requests share their history length, so their cost)
  two_way   clustered by user and by window (Cameron, Gelbach and Miller 2011)

    python bench/latency_estimators.py DIR --out replay_aa_4000.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim_calibration import wilson  # noqa: E402

from analysis.estimators import influence, paired_windows, two_way_cov, window_ids  # noqa: E402


def hac_var(phi: np.ndarray) -> float:
    B = len(phi)
    lag, x = int(np.floor(4 * (B / 100) ** (2 / 9))), phi - phi.mean()
    v = x @ x / B + sum(2 * (1 - j / (lag + 1)) * (x[j:] @ x[:-j]) / B for j in range(1, lag + 1))
    return float(v / B)


def latency_tests(rq: pd.DataFrame) -> dict[str, float]:
    """p of the A/A latency difference (arms a, b) under each variance (module doc)."""
    rq = rq.dropna(subset=["batch_no", "latency_ms"])
    bt = rq.groupby(["batch_no", "arm"]).agg(latency_sum=("latency_ms", "sum"), requests=("latency_ms", "size"))
    wide = bt.reset_index().pivot_table(index="batch_no", columns="arm", values=["latency_sum", "requests"],
                                        aggfunc="sum").fillna(0.0)
    w = paired_windows(wide, "requests", "a", "b")
    (rc, pc), (rt, pt) = (influence(w[("latency_sum", a)].to_numpy(float), w[("requests", a)].to_numpy(float))
                          for a in "ab")
    phi, B, d = pt - pc, len(pt), rt - rc
    win = dict(zip(wide.index, window_ids((wide[("requests", "a")] > 0).to_numpy(),
                                          (wide[("requests", "b")] > 0).to_numpy()), strict=True))
    rq = rq.assign(win=rq.batch_no.map(win))
    n = rq.arm.value_counts()
    e = (np.where(rq.arm == "b", 1.0, -1.0) * (rq.latency_ms - rq.arm.map({"a": rc, "b": rt})) / rq.arm.map(n)).to_numpy()
    e, units, users = e[:, None], rq.win.to_numpy(), rq.user_id.to_numpy()
    (vu, nu), (vt, nt) = two_way_cov(e, users, None), two_way_cov(e, units, users)  # the report's own
    var = {"windows": phi.var(ddof=1) / B, "hac": hac_var(phi), "users": float(vu[0, 0]), "two_way": float(vt[0, 0])}
    dof = {"windows": B - 1, "hac": B - 1, "users": nu, "two_way": nt}
    return {k: float(2 * stats.t.sf(abs(d) / np.sqrt(v), dof[k])) for k, v in var.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--out")
    args = ap.parse_args()
    files = sorted(Path(args.dir).glob("sum_*.parquet"), key=lambda f: int(f.stem.split("_")[1]))
    runs = [int(f.stem.split("_")[1]) for f in files]
    summ = pd.concat([pd.read_parquet(f) for f in files])
    out: dict = {"command": "python bench/latency_estimators.py " + " ".join(sys.argv[1:]), "runs": len(runs),
                 "seeds": [1000 + min(runs), 1000 + max(runs)], "metrics": {}, "latency_variances": {}}
    for m, g in summ.groupby("metric"):
        p = g.p.to_numpy(float)
        ok = np.isfinite(p)
        k = int((p[ok] < args.alpha).sum())
        out["metrics"][m] = {"fpr": k / max(ok.sum(), 1), "fpr_ci95": wilson(k, int(ok.sum())), "defined": int(ok.sum()),
                             "significant": int(g.significant.fillna(False).astype(bool).sum()),
                             "ks_p_uniform": float(stats.kstest(p[ok], "uniform").pvalue) if ok.sum() > 1 else None,
                             "significant_with_ci_containing_0": int((g.significant.fillna(False).astype(bool)
                                                                      & (g.rel_ci_low <= 0) & (g.rel_ci_high >= 0)).sum())}
    lat = pd.DataFrame([latency_tests(pd.read_parquet(Path(args.dir) / f"rq_{i}.parquet")) for i in runs])
    for k in lat:
        p = lat[k].to_numpy()
        n = int((p < args.alpha).sum())
        out["latency_variances"][k] = {"fpr": n / len(p), "fpr_ci95": wilson(n, len(p)),
                                       "ks_p_uniform": float(stats.kstest(p, "uniform").pvalue)}
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
