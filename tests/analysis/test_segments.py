"""New vs returning users: each effect per segment, Holm-corrected across segments."""

import numpy as np
import pandas as pd

from analysis.segments import SegmentReport, segment_effects, segment_of
from analysis.views import DEFAULT_METRICS


def test_segment_of_uses_the_pre_period_count():
    t = pd.DataFrame({"pre": [np.nan, 0, 3, 1]})
    assert segment_of(t).tolist() == ["new", "new", "returning", "returning"]


def test_segment_effects_split_users_and_correct_over_segments(monkeypatch):
    rng = np.random.default_rng(0)
    n = 400
    arm = np.where(np.arange(n) % 2 == 0, "control", "treatment")
    pre = np.where(np.arange(n) < n // 2, np.nan, 5.0)
    clicks = rng.poisson(2.0, n) + ((arm == "treatment") & (pre > 0)) * 3  # an effect only on returning users
    table = pd.DataFrame({"user_id": np.arange(n), "arm": arm, "pre": pre, "requests": 10.0,
                          "clicks": clicks.astype(float), "exposures": 50.0})
    import analysis.segments as seg

    monkeypatch.setattr(seg, "user_table", lambda con, run_id, metrics: (table, {}))
    m = [x.model_copy() for x in DEFAULT_METRICS if x.name == "ctr"]
    rep = segment_effects(None, "r", m, "control", ["treatment"])
    assert isinstance(rep, SegmentReport)
    assert rep.users == {"new": {"control": 100, "treatment": 100}, "returning": {"control": 100, "treatment": 100}}
    by = {e.segment: e for e in rep.effects}
    assert by["returning"].significant and not by["new"].significant
    ps = sorted(e.p for e in rep.effects)
    assert by["returning"].p_adj == min(1.0, 2 * ps[0])  # Holm over the two segments
    one = table.assign(pre=5.0)
    monkeypatch.setattr(seg, "user_table", lambda con, run_id, metrics: (one, {}))
    assert segment_effects(None, "r", m, "control", ["treatment"]) is None  # one segment: nothing to split
