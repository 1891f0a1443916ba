"""Synthetic world: determinism, shapes, ground-truth API, text carrying the topic, scale."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simulator.core import Catalog, get_dataset
from simulator.core.synthetic import World, WorldConfig, world_for, write_world

SMALL = WorldConfig(n_users=200, n_items=150, n_topics=5, seed=3)


def _tables(cat, name):
    s = cat.info(name).schema_name
    return {t: cat.con.execute(f"SELECT * FROM {s}.{t} ORDER BY ALL").df()
            for t in ("items", "users", "interactions")}


def test_same_seed_identical_tables_other_seed_differs():
    c = Catalog(":memory:")
    write_world(c, "a", SMALL)
    write_world(c, "b", SMALL)
    write_world(c, "c", SMALL.model_copy(update={"seed": 4}))
    ta, tb, tc = _tables(c, "a"), _tables(c, "b"), _tables(c, "c")
    for k in ta:
        pd.testing.assert_frame_equal(ta[k], tb[k])
    assert not ta["interactions"].equals(tc["interactions"])


def test_dataset_shape_and_attrs():
    c = Catalog(":memory:")
    ds = get_dataset("synthetic", c, n_users=SMALL.n_users, n_items=SMALL.n_items, n_topics=5, seed=3)
    assert (ds.n_users, ds.n_items) == (200, 150)
    assert len(ds.sequences) > 1000
    assert {"topic", "title", "release_ts"} <= set(ds.item_attrs)
    assert ds.item_text[0].startswith("Title: ")
    # ids are the world's ids (raw '0'..'n-1' in order)
    assert ds.item_raw_ids.astype(int).tolist() == list(range(150))
    assert ds.user_raw_ids.astype(int).tolist() == list(range(200))
    # no item consumed before its release; long-tail popularity
    rel = ds.item_attrs["release_ts"]
    assert (ds.sequences.ts >= rel[ds.sequences.items]).all()
    pop = np.sort(ds.item_popularity())[::-1]
    assert pop[: len(pop) // 10].sum() > 0.25 * pop.sum()
    assert (rel > 0).mean() > 0.05  # some items arrive during the log (cold start)
    w = world_for(c, "synthetic")
    assert w.cfg == WorldConfig(n_users=200, n_items=150, n_topics=5, seed=3)


def test_text_carries_topic():
    w = World(SMALL)
    it = w.item_table()
    vocab = [set(v) for v in w.topic_vocab]
    for desc, topic in zip(it["description"].head(50), it["topic"].head(50), strict=True):
        words = set(desc.split())
        assert len(words & vocab[topic]) >= 1
        others = set().union(*[v for t, v in enumerate(vocab) if t != topic]) - vocab[topic]
        assert len(words & vocab[topic]) >= len(words & others)


def test_ground_truth_api():
    w = World(SMALL)
    B, K = 64, 10
    rng = np.random.default_rng(0)
    users = rng.integers(0, 200, B)
    slate = rng.integers(0, 150, (B, K))
    slate[:, -1] = -1  # padding
    now = np.full(B, 70 * 86400.0)
    u = w.utility(users, slate, now)
    assert u.shape == (B, K) and np.isneginf(u[:, -1]).all()
    p = w.choice_probs(users, slate, now)
    assert p.shape == (B, K + 1) and np.allclose(p.sum(1), 1) and (p[:, -1] > 0).all()
    c1 = w.choose(users, slate, now, np.random.default_rng(1))
    c2 = w.choose(users, slate, now, np.random.default_rng(1))
    assert (c1 == c2).all() and c1.min() >= -1 and c1.max() < K - 1
    # position bias: the same item is likelier at the top
    one = np.tile(slate[:1, :2], (1, 1))
    pa = w.choice_probs(users[:1], one, now[:1])
    pb = w.choice_probs(users[:1], one[:, ::-1], now[:1])
    assert pa[0, 0] > pb[0, 1]
    # fatigue: consuming an item lowers its utility
    before = w.utility(users[:1], slate[:1, :1], now[:1])[0, 0]
    w.update(users[:1], slate[:1, 0], now[:1])
    assert w.utility(users[:1], slate[:1, :1], now[:1])[0, 0] < before
    w.reset_state()
    assert w.utility(users[:1], slate[:1, :1], now[:1])[0, 0] == before
    # unreleased items are never chosen
    late = np.argmax(w.item_release)
    assert np.isneginf(w.utility(users[:1], np.array([[late]]), np.zeros(1)))[0, 0]


def test_fatigue_counts_every_consumption_of_the_user_only():
    w = World(SMALL)
    rng = np.random.default_rng(3)
    users, items = rng.integers(0, 20, 300), rng.integers(-1, 30, 300)  # repeats; -1: no click
    ref: dict[tuple[int, int], int] = {}
    for s in range(0, 300, 50):  # batch by batch, as the story updates the world
        w.update(users[s:s + 50], items[s:s + 50])
        for u, i in zip(users[s:s + 50].tolist(), items[s:s + 50].tolist(), strict=True):
            if i >= 0:
                ref[(u, i)] = ref.get((u, i), 0) + 1
    slate = np.concatenate([rng.integers(0, 30, (40, 9)), np.full((40, 1), -1)], 1)
    who = rng.integers(0, 25, 40)  # users 20..24 consumed nothing
    want = np.array([[ref.get((u, i), 0) if i >= 0 else 0 for i in row] for u, row in zip(who, slate, strict=True)])
    assert (w._consumed.counts(who, slate) == want).all() and want.max() >= 2
    fresh = World(SMALL)
    now = np.full(40, 70 * 86400.0)
    shown = slate >= 0
    assert np.array_equal(w.utility(who, slate, now)[shown],
                          (fresh.utility(who, slate, now) - SMALL.fatigue * want)[shown])


def test_bad_world_option():
    from simulator.core.errors import ConfigError

    c = Catalog(":memory:")
    with pytest.raises(ConfigError):
        get_dataset("synthetic-bad", c, n_users=1)
    get_dataset("synthetic-x", c, n_users=30, n_items=20)
    assert get_dataset("synthetic-x", c, n_users=30, n_items=20).n_users == 30  # same options: reuse
    with pytest.raises(ConfigError, match="different world config"):
        get_dataset("synthetic-x", c, n_users=31, n_items=20)


@pytest.mark.slow
def test_scale_reaches_a_million():
    import time

    t = time.perf_counter()
    logs = World(WorldConfig(scale=20)).logs()
    assert len(logs) > 1_000_000 and time.perf_counter() - t < 60


def _text_r2(rho: float) -> float:
    """Held-out R^2 of a ridge regression from the items' TF-IDF text to their mean utility beyond
    the topic (what text can know of an item that its topic does not say)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import RidgeCV

    w = World(WorldConfig(n_users=100, n_items=2000, n_topics=5, seed=3, text_signal=rho))
    it = w.item_table()
    n = w.cfg.items
    y = w.utility(np.arange(100), np.tile(np.arange(n), (100, 1)), np.full(100, w.cfg.days * 86400.0)).mean(0)
    y -= pd.Series(y).groupby(w.item_topic).transform("mean").to_numpy()
    X = TfidfVectorizer().fit_transform(it["title"] + " " + it["description"])
    m = RidgeCV(alphas=np.logspace(-3, 2, 12)).fit(X[:1500], y[:1500])
    return float(m.score(X[1500:], y[1500:]))


def test_text_signal_dial_sets_what_text_predicts_beyond_the_topic():
    r2 = {rho: _text_r2(rho) for rho in (0.0, 0.5, 1.0)}
    assert r2[0.0] < 0.05, r2  # text says nothing beyond the topic
    assert 0.25 < r2[0.5] < 0.7, r2
    assert r2[1.0] > 0.9, r2
    w = World(WorldConfig(n_users=50, n_items=300, seed=1, text_signal=0.5))
    assert np.std(w.item_quality) == pytest.approx(0.8, rel=0.15)  # quality keeps its long tail
    assert World(WorldConfig(n_users=50, n_items=300, seed=1)).item_words is None  # default: unchanged


def test_text_signal_dial_also_sets_how_often_the_text_names_the_topic():
    """At RHO 0 an item's topic words are another topic's as often as chance allows (the text says
    nothing of the item); at RHO 1 always its own; the default world (no dial) is unchanged."""
    own = {rho: float(np.mean(World(WorldConfig(n_users=20, n_items=2000, n_topics=10, seed=2,
                                                text_signal=rho)).text_topics()
                              == World(WorldConfig(n_users=20, n_items=2000, n_topics=10, seed=2)).item_topic))
           for rho in (0.0, 0.25, 1.0)}
    assert own[0.0] == pytest.approx(0.1, abs=0.03) and own[1.0] == 1.0, own
    assert own[0.25] == pytest.approx(0.5 + 0.5 * 0.1, abs=0.04), own  # sqrt(0.25) own + chance
    w = World(WorldConfig(n_users=20, n_items=50, seed=2))
    assert (w.text_topics() == w.item_topic).all()
