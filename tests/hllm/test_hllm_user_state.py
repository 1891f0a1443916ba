"""Serving the user LLM (hllm.user_state): per-user computation, user-state cache, incremental extension."""

from __future__ import annotations

import copy
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tinydata import tiny_hf_config  # noqa: E402

from hllm.modeling_hllm import HLLMModel  # noqa: E402
from hllm.user_state import UserLLMRunner, UserStateConfig, UserStates  # noqa: E402
from policies.tensors import pad_left  # noqa: E402

P = 20  # max_len: several query chunks and, with a dozen users, several row blocks


@pytest.fixture(scope="module", params=[False, True], ids=["no_time", "use_time"])
def runner(request):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = HLLMModel(tiny_hf_config(user_layers=2, max_len=P, use_time=request.param)).eval()
    table = torch.randn(50, model.config.user_hidden)  # (N, D)
    return UserLLMRunner(model, table), model


def histories(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Histories of 1..2P items (some longer than the window) and increasing timestamps."""
    rng = np.random.default_rng(seed)
    hist = [rng.integers(0, 50, int(rng.integers(1, 2 * P))) for _ in range(n)]
    return hist, [np.cumsum(rng.exponential(3600.0, len(h))) for h in hist]


def padded_forward(model: HLLMModel, table: torch.Tensor, hist, times) -> torch.Tensor:
    """The training path: a left-padded batch forward, last position (what serving replaced)."""
    ids, ts = pad_left(hist, P, times)
    ids_t = torch.from_numpy(ids)
    mask = ids_t > 0
    with torch.no_grad():
        return model.user_states(table[(ids_t - 1).clamp(min=0)] * mask[..., None], mask, torch.from_numpy(ts))[:, -1]


def states(runner, mode: str = "incremental", **kw) -> UserStates:
    r, model = runner
    return UserStates(r, UserStateConfig(mode=mode, **kw), model.config.use_time)


def test_runner_equals_the_padded_forward(runner):
    r, model = runner
    hist, times = histories(12)
    got = states(runner, "recompute").embeddings(np.arange(12), hist, times)
    torch.testing.assert_close(got, padded_forward(model, r.table, hist, times), atol=2e-5, rtol=1e-4)
    empty = states(runner, "recompute").embeddings(np.arange(1), [np.zeros(0, np.int64)], [np.zeros(0)])
    torch.testing.assert_close(empty[0], padded_forward(model, r.table, [np.zeros(0, np.int64)], None)[0])


def test_a_users_embedding_does_not_depend_on_the_batch(runner):
    hist, times = histories(12)
    alone = [states(runner, "recompute").embeddings(np.arange(1), hist[b:b + 1], times[b:b + 1])[0] for b in (0, 7)]
    batch = states(runner, "recompute").embeddings(np.arange(12), hist, times)
    others = states(runner, "recompute").embeddings(np.arange(3), [hist[7], hist[3], hist[0]],
                                                      [times[7], times[3], times[0]])
    assert torch.equal(batch[0], alone[0]) and torch.equal(batch[7], alone[1])
    assert torch.equal(others[2], alone[0]) and torch.equal(others[0], alone[1])


def test_layer0_item_projections_give_the_floats_of_per_row_projections(runner, monkeypatch):
    import hllm.user_state as us

    r, model = runner
    hist, times = histories(12, seed=4)
    assert (r.items is None) == model.config.use_time  # per-item projections: layer 0 reads items only
    monkeypatch.setattr(us, "ITEM_PROJ_MAX_BYTES", 0)  # too big: computed per row
    per_row = UserLLMRunner(model, r.table)
    assert per_row.items is None
    got = UserStates(per_row, UserStateConfig(mode="recompute"), model.config.use_time).embeddings(
        np.arange(12), hist, times)
    assert torch.equal(got, states(runner, "recompute").embeddings(np.arange(12), hist, times))


def test_incremental_extension_is_bit_identical_to_the_full_pass(runner):
    hist, times = histories(12, seed=1)
    users = np.arange(12)
    inc = states(runner)
    inc.embeddings(users, hist, times)
    for grow in (1, 3):  # one click, then several items at once
        hist = [np.append(h, np.arange(grow) + b % 50) for b, h in enumerate(hist)]
        times = [np.append(t, t[-1] + 60.0 * (1 + np.arange(grow))) for t in times]
        got = inc.embeddings(users, hist, times)
        assert torch.equal(got, states(runner, "recompute").embeddings(users, hist, times))
    assert inc.stats["extend"] > 0 and inc.stats["full"] > 12  # extended; full windows slid (recomputed)
    # the user LLM's own forward over the last window agrees too (float tolerance)
    torch.testing.assert_close(got, padded_forward(runner[1], runner[0].table, hist, times), atol=2e-5, rtol=1e-4)


def test_a_pass_that_starts_again_extends_the_users_root_state(runner):
    """The oracle's passes all start from the run's start history: a second pass continues from each
    user's root state (the latest one is the first pass's), bit for bit the full pass."""
    hist, times = histories(12, seed=4)
    hist, times = [h[:P - 3] for h in hist], [t[:P - 3] for t in times]  # room to grow
    users = np.arange(12)
    inc = states(runner)
    inc.embeddings(users, hist, times)  # the roots
    for b in (1, 2):  # pass b: one other item clicked after the start history
        grown = [np.append(h, (u * 7 + b) % 50) for u, h in enumerate(hist)]
        later = [np.append(t, t[-1] + 60.0 * b) for t in times]
        extended = inc.stats["extend"]
        got = inc.embeddings(users, grown, later)
        assert torch.equal(got, states(runner, "recompute").embeddings(users, grown, later))
        assert inc.stats["extend"] - extended == 12  # from the root in pass 2 (the latest is pass 1's)
    assert inc.bytes == sum(s.nbytes for s in inc.cache.values()) + sum(
        r.nbytes for u, r in inc.roots.items() if r is not inc.cache[u])


def test_cache_hits_only_the_identical_window(runner):
    hist, times = histories(6, seed=2)
    users = np.arange(6)
    cache = states(runner, "cached")
    first = cache.embeddings(users, hist, times)
    assert torch.equal(cache.embeddings(users, hist, times), first) and cache.stats["hit"] == 6
    changed = [h.copy() for h in hist]
    changed[0][-1] = (changed[0][-1] + 1) % 50  # same length, other last item: not the cached state
    got = cache.embeddings(users, changed, times)
    assert torch.equal(got, states(runner, "recompute").embeddings(users, changed, times))
    assert not torch.equal(got[0], first[0]) and cache.stats["hit"] == 11
    if runner[1].config.use_time:  # timestamps are inputs: other times, another state
        later = [t * 2.0 for t in times]
        assert torch.equal(cache.embeddings(users, changed, later),
                           states(runner, "recompute").embeddings(users, changed, later))
        assert cache.stats["hit"] == 11


def test_cache_keeps_a_byte_budget_least_recently_used_first(runner):
    hist, times = histories(12, seed=3)
    hist = [h[:5] for h in hist]  # all with keys and values of the same size
    times = [t[:5] for t in times]
    one = states(runner)
    one.embeddings(np.arange(1), hist[:1], times[:1])
    budget = int(3.5 * one.bytes)  # room for three users
    cache = states(runner, max_bytes=budget)
    cache.embeddings(np.arange(3), hist[:3], times[:3])
    cache.embeddings(np.array([0]), hist[:1], times[:1])  # user 0 is now the most recently used
    cache.embeddings(np.array([5]), hist[5:6], times[5:6])
    assert list(cache.cache) == [2, 0, 5] and cache.bytes <= budget and cache.stats["evicted"] == 1
    assert cache.bytes == sum(s.nbytes for s in cache.cache.values())


def test_policy_drops_its_cache_when_copied_or_pickled_and_on_new_weights():
    from _tinydata import tiny_dataset

    from policies import registry
    from policies.base import UserBatch

    torch.set_num_threads(1)
    ds = tiny_dataset(n_users=20)
    split = ds.leave_one_out()
    pol = registry.create("hllm", {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 1}).fit(ds, split,
                                                                                                  progress=False)
    users = UserBatch.from_sequences(split.train)
    want = pol.embed_users(users)
    assert pol._states is not None and len(pol._states.cache) > 0
    for other in (copy.deepcopy(pol), pickle.loads(pickle.dumps(pol))):
        assert other._states is None  # a Ray actor gets a copy: it builds its own cache
        np.testing.assert_array_equal(other.embed_users(users), want)
    pol.refresh_table()  # new weights / table: cached states are stale
    assert pol._states is None


def test_tables_serve_the_history_as_of_the_last_refresh_and_record_staleness(runner):
    """tables: a row is the embedding of the history before the last scheduled rebuild or the last
    multiple of refresh_items, whichever is later; each request's staleness is recorded."""
    cfg = UserStateConfig(serving="tables", refresh_s=100.0, refresh_items=3)
    t = np.array([10.0, 20, 150, 160, 170, 250])
    assert cfg.served_prefix(t, 6, 260.0) == (6, 250.0)  # the 6th item refreshed the row at t=250
    assert cfg.served_prefix(t[:5], 5, 180.0) == (3, 150.0)  # 3rd item at 150 > the rebuild at 100
    assert cfg.served_prefix(t[:2], 2, 90.0) == (0, 0.0)  # not in the table yet: the empty state
    assert UserStateConfig().served_prefix(t, 6, 260.0) == (6, 260.0)  # online: all of it, now
    hist, times = histories(8, seed=4)
    now = np.array([tt[-1] + 1.0 for tt in times])
    tab = UserStates(runner[0], cfg, runner[1].config.use_time)
    got = tab.embeddings(np.arange(8), hist, times, now)
    cut = [cfg.served_prefix(tt, len(h), n)[0] for h, tt, n in zip(hist, times, now, strict=True)]
    want = states(runner, "recompute").embeddings(np.arange(8), [h[:c] for h, c in zip(hist, cut, strict=True)],
                                                  [tt[:c] for tt, c in zip(times, cut, strict=True)])
    assert torch.equal(got, want)
    st = tab.report()["staleness"]
    assert st["requests"] == 8 and st["items_behind_mean"] == np.mean([len(h) - c for h, c in zip(hist, cut, strict=True)])
    assert tab.embeddings(np.arange(8), hist, times, now) is not None and tab.stats["hit"] >= 8  # same rows: lookups
    assert torch.equal(tab.embeddings(np.arange(8), hist, times), states(runner, "recompute").embeddings(
        np.arange(8), hist, times))  # no request time (offline use): the whole history


def test_a_window_step_drops_items_in_steps_and_extends_between_drops(runner):
    """window_step S: the served window is the history's items from a start that moves S at a time
    (P - S + 1 to P items); between two drops it grows by extension, bit for bit the full pass over
    that window (recompute mode with the same step), which is the padded forward over those items."""
    cfg = UserStateConfig(window_step=5)
    assert [cfg.window_start(n, P) for n in (3, P, P + 1, P + 5, P + 6, P + 11)] == [0, 0, 5, 5, 10, 15]
    assert UserStateConfig(window_step=100).window_start(P + 3, P) == P  # at most max_len: 3 items left
    hist = list(np.random.default_rng(5).integers(0, 50, (12, P + 1)))  # every window just dropped 5 items
    times = [np.cumsum(np.full(len(h), 60.0)) for h in hist]
    users = np.arange(12)
    inc = states(runner, window_step=5)
    inc.embeddings(users, hist, times)
    for _ in range(6):  # 4 extensions (P - 4 -> P items), then a drop of 5 (recomputed), then one more
        hist = [np.append(h, b % 50) for b, h in enumerate(hist)]
        times = [np.append(t, t[-1] + 60.0) for t in times]
        got = inc.embeddings(users, hist, times)
        assert torch.equal(got, states(runner, "recompute", window_step=5).embeddings(users, hist, times))
    assert inc.stats["extend"] == 12 * 5 and inc.stats["full"] == 12 * 2
    start = cfg.window_start(len(hist[0]), P)
    torch.testing.assert_close(got, padded_forward(runner[1], runner[0].table, [h[start:] for h in hist],
                                                   [t[start:] for t in times]), atol=2e-5, rtol=1e-4)


def test_warming_builds_the_rows_requests_then_hit_and_stops_before_evicting(runner):
    """``warm``: the rows users would be served at a time, computed ahead (no request recorded);
    a request at that time hits them with the same floats; the warm-up stops when the cache is full."""
    cfg = UserStateConfig(serving="tables", refresh_s=100.0, refresh_items=3)
    hist, times = histories(12, seed=6)
    hist, times = [h[:5] for h in hist], [t[:5] for t in times]  # states of one size
    now = np.array([t[-1] + 1.0 for t in times])
    tab = UserStates(runner[0], cfg, runner[1].config.use_time)
    assert tab.warm(np.arange(12), hist, times, now, chunk=5) == 12
    assert tab.stats["warm"] == 12 and tab.stats["hit"] == tab.stats["full"] == 0 and tab.compute_s == 0.0
    assert tab.report()["warm_s"] > 0 and "staleness" not in tab.report()  # warming is not a request
    got = tab.embeddings(np.arange(12), hist, times, now)
    served = sum(cfg.served_prefix(t, len(h), n)[0] > 0 for h, t, n in zip(hist, times, now, strict=True))
    assert served >= 8 and tab.stats["hit"] == served and tab.stats["full"] == tab.stats["extend"] == 0
    fresh = UserStates(runner[0], cfg, runner[1].config.use_time)
    assert torch.equal(got, fresh.embeddings(np.arange(12), hist, times, now))
    budget = int(7.5 * tab.bytes / len(tab.cache))  # room for seven users' rows
    small = UserStates(runner[0], cfg.model_copy(update={"max_bytes": budget}), runner[1].config.use_time)
    assert 7 <= small.warm(np.arange(12), hist, times, now, chunk=5) < 12  # users with no row take no room
    assert len(small.cache) == 7 and small.stats["evicted"] == 0
