"""Model-level tests: learning beats random, causal masking, HSTU relative bias, losses, store."""

import numpy as np
import pytest
import torch
from _policy_data import tiny_dataset, tiny_split

from policies import registry
from policies.evaluate import evaluate
from policies.hstu import HSTU, HSTUConfig, RelativeBias
from policies.sasrec import SASRec, SASRecConfig
from policies.store import fit_or_load
from policies.tensors import next_times


@pytest.fixture(scope="module")
def data():
    ds = tiny_dataset(n_users=120, n_items=40)
    return ds, tiny_split(ds)


def _fit(name, data, **over):
    ds, split = data
    return registry.create(name, over).fit(ds, split, progress=False)


@pytest.mark.parametrize("name,over", [
    ("sasrec", dict(max_len=10, hidden=32, n_layers=1, epochs=12, eval_every=2, dropout=0.1, lr=3e-3)),
    ("hstu", dict(max_len=10, hidden=32, n_layers=1, epochs=12, eval_every=2, dropout=0.1, lr=3e-3)),
    ("sasrec", dict(max_len=10, hidden=32, n_layers=1, epochs=12, eval_every=2, dropout=0.1, lr=3e-3,
                    loss="bce")),
    ("sasrec", dict(max_len=10, hidden=32, n_layers=1, epochs=12, eval_every=2, dropout=0.1, lr=3e-3,
                    loss="sampled_ce", n_negatives=8)),
    ("itemknn", dict(neighbours=10, history=3)),
])
def test_training_beats_random_by_a_margin(name, over, data):
    ds, split = data
    rnd = evaluate(_fit("random", data), split, ks=(10,)).summary["ndcg@10"]
    pop = evaluate(_fit("popularity", data), split, ks=(10,)).summary["ndcg@10"]
    got = evaluate(_fit(name, data, **over), split, ks=(10,)).summary["ndcg@10"]
    # the ring structure makes the next item ~90% predictable: a working model is far above chance
    assert got > 3 * rnd + 0.1, (name, got, rnd)
    assert got > pop + 0.1, (name, got, pop)


def _model_outputs_change_only_after(model, T=8, pos=5, seed=0):
    torch.manual_seed(seed)
    model.eval()
    items = torch.randint(1, 30, (3, T))
    ts = torch.cumsum(torch.rand(3, T) * 1000, 1)
    with torch.no_grad():
        a = model(items, ts)
        items2 = items.clone()
        items2[:, pos] = (items2[:, pos] % 29) + 1  # change only position `pos` (a "future" item)
        ts2 = ts.clone()
        ts2[:, pos + 1:] += 12345.0  # and the times after pos (t_pos is the time position pos-1 predicts for)
        b = model(items2, ts2)
    return a, b


@pytest.mark.parametrize("model", [
    SASRec(SASRecConfig(max_len=8, hidden=16, n_heads=2, n_layers=2), 30),
    HSTU(HSTUConfig(max_len=8, hidden=16, n_heads=2, n_layers=2), 30),
])
def test_causal_masking(model):
    pos = 5
    a, b = _model_outputs_change_only_after(model, pos=pos)
    torch.testing.assert_close(a[:, :pos], b[:, :pos], rtol=0, atol=1e-6)
    assert (a[:, pos:] - b[:, pos:]).abs().max() > 1e-4  # the change is visible from pos on


def test_left_padding_does_not_change_the_last_state():
    for model in (SASRec(SASRecConfig(max_len=8, hidden=16), 30), HSTU(HSTUConfig(max_len=8, hidden=16), 30)):
        model.eval()
        torch.manual_seed(0)
        items = torch.tensor([[0, 0, 0, 4, 7, 9, 2, 5]])
        ts = torch.tensor([[0, 0, 0, 10, 20, 30, 40, 50]], dtype=torch.float)
        with torch.no_grad():
            h = model(items, ts)  # (1, 8, D)
            short = model(items[:, 3:], ts[:, 3:])  # the same history without padding, (1, 5, D)
            empty = model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8))
        assert h.shape == (1, 8, 16) and torch.isfinite(h).all() and torch.isfinite(empty).all()
        # padding is invisible: the real positions' states match the unpadded run
        torch.testing.assert_close(h[:, 3:], short, rtol=1e-5, atol=1e-5)


def test_hstu_relative_bias_values():
    """The official generative-recommenders bias: w_pos[i - j] + w_time[bucket(t_{i+1} - t_j)],
    bucket(g) = floor(ln(max(|g|, 1)) / 0.301) clamped to [0, buckets]."""
    rab = RelativeBias(max_len=6, time_buckets=8, use_time=True)
    with torch.no_grad():
        rab.pos.copy_(torch.arange(6, dtype=torch.float) * 10)  # w_pos[d] = 10 d
        rab.time.copy_(torch.arange(9, dtype=torch.float) * 0.1)  # w_time[b] = 0.1 b
    ts = torch.tensor([[0.0, 1.0, 4.0, 100.0]], dtype=torch.float64)
    nxt = torch.tensor([[1.0, 4.0, 100.0, 130.0]], dtype=torch.float64)  # 130: the request time
    bias = rab(ts, nxt)  # (1, 4, 4)
    assert bias.shape == (1, 4, 4)

    def bucket(g):
        return min(int(np.floor(np.log(max(abs(g), 1.0)) / 0.301)), 8)
    for i in range(4):
        for j in range(i + 1):
            expect = 10 * (i - j) + 0.1 * bucket(nxt[0, i].item() - ts[0, j].item())
            assert bias[0, i, j].item() == pytest.approx(expect, abs=1e-5), (i, j)
    # official defaults: 128 buckets of width 0.301, both tables initialised N(0, 0.02)
    cfg = HSTUConfig()
    assert (cfg.time_buckets, cfg.time_bucket_width) == (128, 0.301)
    default = RelativeBias(max_len=50, time_buckets=128, use_time=True)
    assert default.time.shape == (129,) and 0.005 < float(default.time.detach().std()) < 0.05
    # position-only bias depends on the distance alone
    rab2 = RelativeBias(max_len=6, time_buckets=8, use_time=False)
    with torch.no_grad():
        rab2.pos.copy_(torch.arange(6, dtype=torch.float))
    z = torch.zeros(2, 5, dtype=torch.float64)
    b2 = rab2(z, z)[0]
    for d in range(5):
        assert torch.all(torch.diagonal(b2, -d) == d)


def test_hstu_position_reads_the_time_it_predicts_for_not_the_item():
    """State i may use t_{i+1} (when the next event happens: the request time), never item i+1."""
    torch.manual_seed(0)
    m = HSTU(HSTUConfig(max_len=8, hidden=16, n_layers=1, dropout=0.0), 30).eval()
    items = torch.randint(1, 30, (2, 8))
    ts = torch.cumsum(torch.rand(2, 8, dtype=torch.float64) * 1e5, 1)
    with torch.no_grad():
        a = m(items, ts)
        ts2 = ts.clone()
        ts2[:, 5:] += 1e6  # the time of item 5 (what position 4 predicts for) and later
        b = m(items, ts2)
        now = ts[:, -1] + 1e6  # the request time of the last position
        c = m(items, ts, next_times(ts, now))
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=1e-6)
    assert (a[:, 4] - b[:, 4]).abs().max() > 1e-4
    torch.testing.assert_close(a[:, :7], c[:, :7], rtol=0, atol=1e-6)
    assert (a[:, 7] - c[:, 7]).abs().max() > 1e-4


def test_hstu_time_bias_changes_output_and_is_learned():
    cfg = HSTUConfig(max_len=8, hidden=16, n_layers=1, dropout=0.0)
    m = HSTU(cfg, 30)
    with torch.no_grad():
        m.layers[0].rab.time.copy_(torch.linspace(-2, 2, cfg.time_buckets + 1))
    items = torch.randint(1, 30, (2, 8))
    ts1 = torch.arange(8.0)[None].repeat(2, 1)
    ts2 = ts1 * 1e5
    with torch.no_grad():
        assert (m(items, ts1) - m(items, ts2)).abs().max() > 1e-4
    out = m(items, ts2).sum()
    out.backward()
    assert m.layers[0].rab.time.grad is not None and m.layers[0].rab.pos.grad is not None


def test_fit_or_load_caches(data, tmp_path):
    ds, split = data
    over = {"epochs": 1, "max_len": 8, "hidden": 16, "n_layers": 1}
    a = fit_or_load("sasrec", ds, split, over, root=tmp_path, progress=False)
    dirs = list((tmp_path / ds.name).iterdir())
    assert len(dirs) == 1 and (dirs[0] / "DONE").exists()
    mtime = (dirs[0] / "model.pt").stat().st_mtime
    b = fit_or_load("sasrec", ds, split, over, root=tmp_path, progress=False)
    assert (dirs[0] / "model.pt").stat().st_mtime == mtime  # loaded, not retrained
    users = __import__("policies.base", fromlist=["UserBatch"]).UserBatch.from_sequences(split.train, np.arange(5))
    np.testing.assert_array_equal(a.score_all(users), b.score_all(users))
    fit_or_load("sasrec", ds, split, {**over, "seed": 1}, root=tmp_path, progress=False)
    assert len(list((tmp_path / ds.name).iterdir())) == 2


def test_popularity_window(data):
    ds, split = data
    full = _fit("popularity", data)
    recent = _fit("popularity", data, window_days=0.5)
    assert full.counts.sum() > recent.counts.sum() > 0


@pytest.mark.parametrize("k", [1, 7, 40, 75])
def test_popularity_served_from_its_ranking_equals_the_exact_top_k(k):
    """At ANN size popularity retrieves from its precomputed ranking (no full scoring): the same ids
    and scores as the exact top-k over score_all, ties and exclusions included."""
    from policies.base import UserBatch, topk_excluding
    from policies.baselines import PopularityPolicy

    rng = np.random.default_rng(k)
    pol = PopularityPolicy()
    pol.counts = rng.integers(0, 6, 60).astype(np.float32)  # many ties
    hist = [rng.choice(60, rng.integers(0, 50), replace=False) for _ in range(9)] + [np.arange(60)]
    users = UserBatch(np.arange(10), hist, None, np.zeros(10))
    got = pol.retrieve(users, k, hist)
    ids, sc = topk_excluding(pol.score_all(users), k, hist)
    np.testing.assert_array_equal(got.item_ids, ids)
    np.testing.assert_array_equal(got.scores, sc)
    np.testing.assert_array_equal(pol.score(users, ids), np.where(ids >= 0, sc, -np.inf))
    assert pol.full_scoring()  # a small catalog is still scored in full (the pipeline's shared path)
