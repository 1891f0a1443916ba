"""Team-draft interleaving: the draft itself, and whole runs through the product path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _simdata import event_frames, retrieval_arm, tiny_config
from scipy import stats

from policies.base import Slate
from simulator.engine.design import INTERLEAVED, TeamDraft, team_draft
from simulator.engine.run import resume_experiment, run_experiment

DRAFTS = [  # (ranking A, ranking B, k, coins: A picks first in that even round) -> (team, index) per position
    ([1, 2, 3], [1, 2, 3], 3, [True, True], [(0, 0), (1, 1), (0, 2)]),  # same ranking: shown as is
    ([1, 2, 3], [1, 2, 3], 3, [False, True], [(1, 0), (0, 1), (0, 2)]),
    ([1, 2], [3, 4], 4, [True, False], [(0, 0), (1, 0), (1, 1), (0, 1)]),
    ([1, -1], [2, 3, 4], 4, [True, True], [(0, 0), (1, 0), (1, 1), (1, 2)]),  # A runs out: B fills
    ([5], [5], 3, [True, True], [(0, 0)]),  # both exhausted
]


@pytest.mark.parametrize("a,b,k,coins,expected", DRAFTS)
def test_team_draft_table(a, b, k, coins, expected):
    assert team_draft(np.array(a), np.array(b), k, np.array(coins)) == expected


def _slate(ids):
    ids = np.asarray(ids, np.int64)
    return Slate(ids, -np.arange(ids.shape[1], dtype=np.float32)[None].repeat(len(ids), 0),
                 np.zeros(ids.shape, np.int16), ("x",))


def test_draft_is_balanced_and_attributes_every_item_to_its_team():
    rng = np.random.default_rng(0)
    n, k = 4000, 10
    a = np.stack([rng.permutation(40)[:k] for _ in range(n)])
    b = np.stack([rng.permutation(40)[:k] for _ in range(n)])
    sb = TeamDraft(("c", "t")).combine(n, {0: (np.arange(n), _slate(a), np.ones(n)),
                                           1: (np.arange(n), _slate(b), 2 * np.ones(n))}, rng)
    assert (sb.latency_ms == 2).all()  # both rankers run for every request: the slower one counts
    first = np.bincount(sb.arm[:, 0], minlength=2)
    assert stats.chisquare(first).pvalue > 0.001  # the team picking first is a fair coin
    per_row = (sb.arm == 1).sum(1)
    assert set(per_row.tolist()) <= {4, 5, 6} and abs(per_row.mean() - k / 2) < 0.05  # each team ~half the slate
    for r in range(0, n, 97):
        row = sb.item_ids[r]
        assert len(set(row.tolist())) == k  # no duplicates
        for pos in range(k):
            assert row[pos] in (a, b)[sb.arm[r, pos]][r]  # the item comes from the team's own ranking


_arm = retrieval_arm


@pytest.fixture(scope="module")
def world(tiny_world):
    return tiny_world


def _cfg(d, control, treatment, **kw):
    return tiny_config(d / "art", design="interleave", policies={}, oracle_reps=1,
                       arms=[_arm("c", control, "control"), _arm("t", treatment, "treatment")], **kw)


def test_better_ranker_wins_and_identical_rankers_tie(world):
    from analysis.interleave import preference, user_outcomes

    cat, d = world
    rid = run_experiment(_cfg(d, "random", "popularity", n_requests=2000), cat, progress=False)
    ev = event_frames(cat, rid)
    assert set(ev["assignments"].arm) == {INTERLEAVED} and set(ev["requests"].arm) == {INTERLEAVED}
    assert set(ev["exposures"].arm) == {"c", "t"} and set(ev["feedback"].arm) <= {"c", "t"}
    p = preference(user_outcomes(cat.con, rid, "c", "t"), "c", "t")
    assert p.winner == "t" and p.share > 0.55
    same = run_experiment(_cfg(d, "popularity", "popularity", n_requests=800), cat, progress=False)
    q = preference(user_outcomes(cat.con, same, "c", "t"), "c", "t")
    assert abs(q.share - 0.5) < 4 * q.se and q.winner is None


def test_interleave_run_is_deterministic_and_resumes(world):
    cat, d = world
    cfg = _cfg(d, "random", "popularity", n_requests=300)
    base = run_experiment(cfg, cat, progress=False)
    again = run_experiment(cfg, cat, progress=False)

    def stop(batch_no, runtime):
        if batch_no == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as ei:
        run_experiment(cfg, cat, progress=False, on_batch=stop)
    rid = ei.value.args[0]
    resume_experiment(rid, cat, progress=False)
    for other in (again, rid):
        for t, df in event_frames(cat, base).items():
            assert df.equals(event_frames(cat, other)[t]), t


def test_interleave_report_answers_first(world, tmp_path):
    from analysis.report import write_report

    cat, d = world
    rid = run_experiment(_cfg(d, "random", "popularity", n_requests=2000), cat, progress=False)
    paths = write_report(cat, rid, tmp_path)
    assert paths["text"].startswith("Users prefer t over c in interleaving: t won ")
    js = json.loads(open(paths["json"]).read())
    assert js["design"] == "interleave" and js["interleave"]["preference"]["share"] > 0.5
    assert js["interleave"]["true_ctr_lift"] > 0  # the world oracle's A/B truth agrees in sign
    html = open(paths["html"]).read()
    assert "Interleaving (team draft)" in html and "preference share" in html and "Effects (treatment" not in html
    arms = html.split("<h2>Arms</h2>")[1].split("</table>")[0]  # the teams are labelled (the team key is kept)
    assert '<th class="l">team</th>' in arms and '<td class="l">c</td>' in arms and '<td class="l">t</td>' in arms
    assert [a["team"] for a in js["arms"]] == ["c", "t"] and js["effects"] == []
