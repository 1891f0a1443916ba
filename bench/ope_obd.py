"""Off-policy estimators on real logged bandit data: the Open Bandit Dataset sample (ZOZOTOWN,
CC BY 4.0) that ships inside the `obp` 0.4.1 wheel, read as CSV (obp is never imported).

Get the data (never committed):

  pip download obp==0.4.1 --no-deps -d /tmp/obp
  python bench/ope_obd.py --wheel /tmp/obp/obp-0.4.1-py3-none-any.whl --out ope_obd.json

OBP's protocol (examples/obd/evaluate_off_policy_estimators.py): estimate the policy value (CTR)
of Bernoulli Thompson Sampling from the uniform-random policy's logs of the "all" campaign, and
compare with BTS's on-policy CTR in its own logs. BTS's action distribution (per item and
position) comes from the BTS priors OBP ships (obp/policy/conf/prior_bts.yaml: Beta(alpha, beta)
per item, the three highest sampled means shown in order), by Monte-Carlo (``--n-sim`` draws, as
OBP's ``compute_batch_action_dist``). Each bootstrap resample of the random logs refits the
reward model (item-position click rates, cross-fitted: BTS ignores the context, so a context-free
model suffices for its value) and runs every bandit estimator of analysis.ope; the relative
estimation error |V_hat - V_bts| / V_bts is reported as its mean and 95% percentile interval
over the resamples. The sample holds 10,000 rounds per policy and campaign (the full data's "all"
campaign: 1,374,327 Random and 12,168,084 Bernoulli TS rounds), so errors are far larger than the
full-data values of the OBP paper that the output carries beside them (``paper_full_data``).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.ope import BanditFeedback, estimate_all  # noqa: E402
from analysis.ope.registry import BANDIT  # noqa: E402
from analysis.ope.reward_model import cross_fit  # noqa: E402

CSV = "obp/dataset/obd/{policy}/{campaign}/{campaign}.csv"
PRIOR = "obp/policy/conf/prior_bts.yaml"
N_ITEMS, LEN_LIST = 80, 3
# obp's examples/obd/README.md (v0.4.x, this same small sample, 10 bootstrap samples, random_state=12345,
# BTS from random, "all"): relative estimation error, mean [95% CI]
OBP_README_SMALL_SAMPLE = {"dm": [0.218148, 0.14561, 0.29018], "ips": [1.158730, 0.96190, 1.53333],
                           "dr": [0.992942, 0.71789, 1.35594]}
# The OBP paper's values on the full dataset (Saito, Aihara, Matsutani, Narita, arXiv:2008.07146, a 2020
# version: "Table 4: Comparing Relative-Estimation Errors of OPE Estimators (Random -> Bernoulli TS)",
# mean [95% CI] per campaign). Transcribed from the image of that table on page 46 of obp's own
# slides/slides_JN.pdf (st-tech/zr-obp, commit 50586008690594fe972e53d31662b452784f0c2d, blob e3c096b1);
# that table has DM, IPW, SNIPW and DR only (the NeurIPS 2021 version's SNDR / Switch-DR / DRos values
# were not found). Keys are our estimator names (ips = IPW, snips = SNIPW).
PAPER_FULL_DATA = {
    "source": "Saito et al., Open Bandit Dataset and Pipeline, arXiv:2008.07146 (2020 version), Table 4 "
              "(Random -> Bernoulli TS), as reproduced on page 46 of st-tech/zr-obp slides/slides_JN.pdf at "
              "commit 50586008690594fe972e53d31662b452784f0c2d",
    "data": "the full Open Bandit Dataset, campaign 'all': 1,374,327 rounds of Random (CTR 0.35%) and 12,168,084 "
            "of Bernoulli TS (CTR 0.50%) (obp images/obd_stats.png, 'Table 1. Statistics of the Open Bandit "
            "Dataset'); this bench's sample has 10,000 rounds of each",
    "relative_ee_mean_ci95": {
        "all": {"dm": [0.23879, 0.22998, 0.24988], "ips": [0.03477, 0.01147, 0.06592],
                "snips": [0.03381, 0.01005, 0.06662], "dr": [0.03487, 0.01094, 0.06784]},
        "men": {"dm": [0.24155, 0.22656, 0.25592], "ips": [0.09806, 0.07485, 0.12151],
                "snips": [0.08153, 0.05677, 0.10592], "dr": [0.08528, 0.06186, 0.10876]},
        "women": {"dm": [0.22884, 0.22224, 0.23423], "ips": [0.03252, 0.01708, 0.04912],
                  "snips": [0.03179, 0.01562, 0.04825], "dr": [0.03224, 0.01605, 0.04843]},
    },
}


def read(wheel: Path, campaign: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    with zipfile.ZipFile(wheel) as z:
        logs = {p: pd.read_csv(io.BytesIO(z.read(CSV.format(policy=p, campaign=campaign))), index_col=0)
                for p in ("random", "bts")}
        prior = yaml.safe_load(z.read(PRIOR))[campaign]
    return logs["random"], logs["bts"], prior


def bts_action_dist(prior: dict, n_sim: int, seed: int) -> np.ndarray:
    """(n_items, len_list): probability that BTS shows each item at each position."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(prior["alpha"], float), np.asarray(prior["beta"], float)
    counts = np.zeros((N_ITEMS, LEN_LIST))
    for start in range(0, n_sim, 20000):
        m = min(20000, n_sim - start)
        top = np.argsort(-rng.beta(a, b, size=(m, N_ITEMS)), axis=1)[:, :LEN_LIST]
        for k in range(LEN_LIST):
            counts[:, k] += np.bincount(top[:, k], minlength=N_ITEMS)
    return counts / n_sim


def feedback(df: pd.DataFrame, dist: np.ndarray, seed: int) -> BanditFeedback:
    item, pos, r = df["item_id"].to_numpy(), df["position"].to_numpy() - 1, df["click"].to_numpy(float)
    rows = np.arange(len(df))
    every = np.repeat(np.arange(N_ITEMS)[None], len(df), 0)
    # q_hat at the logged item and at every item (same fold), then its expectation under BTS
    queries = [(item, pos)] + [(every[:, j], pos) for j in range(N_ITEMS)]
    preds = cross_fit(rows, item, pos, r, queries, n_folds=3, seed=seed)
    q_all = np.stack(preds[1:], axis=1)  # (n, n_items)
    q_target = (q_all * dist[:, pos].T).sum(1)
    return BanditFeedback(r, df["propensity_score"].to_numpy(float), dist[item, pos], preds[0], q_target)


def run(args) -> dict:
    random, bts, prior = read(args.wheel, args.campaign)
    truth = float(bts["click"].mean())
    dist = bts_action_dist(prior, args.n_sim, args.seed)
    rng = np.random.default_rng(args.seed)
    full = {e.estimator: e for e in estimate_all(feedback(random, dist, args.seed))}
    errors = {n: [] for n in BANDIT}
    for b in tqdm(range(args.n_boot), desc="bootstrap", disable=args.q):
        sample = random.iloc[rng.integers(0, len(random), len(random))]
        for e in estimate_all(feedback(sample, dist, args.seed + b + 1)):
            errors[e.estimator].append(abs(e.value - truth) / truth)
    table = []
    for n in BANDIT:
        e = np.array(errors[n])
        table.append({"estimator": n, "relative_ee_mean": float(e.mean()),
                      "relative_ee_ci95": [float(np.quantile(e, 0.025)), float(np.quantile(e, 0.975))],
                      "relative_ee_full_sample": abs(full[n].value - truth) / truth,
                      "estimate_full_sample": full[n].value, "ci95_full_sample": [full[n].ci_low, full[n].ci_high],
                      "ess_full_sample": full[n].ess, "obp_readme_small_sample": OBP_README_SMALL_SAMPLE.get(n),
                      "paper_full_data": PAPER_FULL_DATA["relative_ee_mean_ci95"][args.campaign].get(n)})
    return {"campaign": args.campaign, "behavior": "random", "evaluation": "bts", "rounds_random": len(random),
            "rounds_bts": len(bts), "clicks_random": int(random["click"].sum()), "clicks_bts": int(bts["click"].sum()),
            "bts_on_policy_ctr": truth, "random_on_policy_ctr": float(random["click"].mean()),
            # the truth's own noise: relative standard error of BTS's CTR in its 10,000 rounds
            "bts_on_policy_ctr_rel_se": float(np.sqrt(truth * (1 - truth) / len(bts)) / truth),
            "n_boot": args.n_boot, "n_sim": args.n_sim, "table": table, "paper_full_data": PAPER_FULL_DATA}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", type=Path, required=True, help="obp-0.4.1-py3-none-any.whl (pip download)")
    ap.add_argument("--campaign", default="all", choices=("all", "men", "women"))
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--n-sim", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--out", type=Path)
    ap.add_argument("-q", action="store_true")
    args = ap.parse_args()
    if not args.wheel.exists():
        sys.exit(f"error: {args.wheel} not found; get it with `pip download obp==0.4.1 --no-deps -d /tmp/obp`")
    t0 = time.time()
    out = {"command": "python " + " ".join(sys.argv), **run(args), "seconds": time.time() - t0}
    text = json.dumps(out, indent=1)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
