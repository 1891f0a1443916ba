"""Contract tests run over EVERY registered policy (with its ``tiny()`` config)."""

import re

import numpy as np
import pytest
from _policy_data import tiny_dataset, tiny_split

from policies import registry
from policies.base import PAD, Candidates, Retriever, Scorer, UserBatch
from simulator.core.errors import ConfigError

NAMES = registry.names()


@pytest.fixture(scope="module")
def data():
    ds = tiny_dataset()
    return ds, tiny_split(ds)


@pytest.fixture(scope="module")
def fitted(data):
    ds, split = data
    cache = {}

    def get(name, seed=0):
        if (name, seed) not in cache:
            cfg = registry.get(name).config_cls.tiny().model_copy(update={"seed": seed})
            cache[(name, seed)] = registry.get(name).cls(cfg).fit(ds, split, progress=False)
        return cache[(name, seed)]

    return get


def _users(split, n=12):
    return UserBatch.from_sequences(split.eval_histories("test"), np.arange(n))


def test_registry_lists_the_builtins():
    for name in ("random", "popularity", "itemknn", "sasrec", "hstu"):
        assert name in NAMES
    with pytest.raises(Exception, match="unknown policy"):
        registry.get("nope")


@pytest.mark.parametrize("name", NAMES)
def test_config_contract(name):
    e = registry.get(name)
    cfg = e.config_cls.tiny()
    assert "seed" in type(cfg).model_fields
    assert e.config_cls.model_config.get("extra") == "forbid"
    with pytest.raises(ConfigError, match="definitely_not_a_field"):
        registry.make_config(name, {"definitely_not_a_field": 1})


@pytest.mark.parametrize("name", NAMES)
def test_retrieve_shapes_k_and_exclusion(name, data, fitted):
    ds, split = data
    pol = fitted(name)
    users = _users(split)
    assert isinstance(pol, Retriever) and isinstance(pol, Scorer)
    for k in (1, 5, 17):
        c = pol.retrieve(users, k)
        assert isinstance(c, Candidates)
        assert c.item_ids.shape == (len(users), k) and c.scores.shape == (len(users), k)
        ok = c.item_ids != PAD
        assert ((c.item_ids >= 0) & (c.item_ids < ds.n_items) | ~ok).all()
        assert np.all(np.diff(np.where(ok, c.scores, -np.inf), axis=1) <= 1e-6)  # sorted descending
        for row in c.item_ids:
            r = row[row != PAD]
            assert len(set(r.tolist())) == len(r)  # no duplicates
    excl = [np.asarray(h) for h in users.histories]
    c = pol.retrieve(users, 10, exclude=excl)
    for row, ex in zip(c.item_ids, excl, strict=True):
        assert not set(row.tolist()) & set(ex.tolist())
    # k larger than the catalog: padded, never an excluded or invalid id
    c = pol.retrieve(users, ds.n_items + 5, exclude=excl)
    assert c.item_ids.shape == (len(users), ds.n_items + 5)
    for row, ex in zip(c.item_ids, excl, strict=True):
        r = row[row != PAD]
        assert len(r) == ds.n_items - len(set(ex.tolist()))
        assert not set(r.tolist()) & set(ex.tolist())


@pytest.mark.parametrize("name", NAMES)
def test_score_matches_score_all(name, data, fitted):
    ds, split = data
    pol = fitted(name)
    users = _users(split)
    items = np.tile(np.array([3, 0, 7, PAD]), (len(users), 1))
    s = pol.score(users, items)
    assert s.shape == items.shape and np.isneginf(s[:, 3]).all()
    full = pol.score_all(users)
    assert full.shape == (len(users), ds.n_items) and np.isfinite(full).all()
    np.testing.assert_allclose(s[:, :3], full[:, [3, 0, 7]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_identical(name, data, fitted):
    ds, split = data
    users = _users(split)
    a = fitted(name).score_all(users)
    cfg = registry.get(name).config_cls.tiny()
    b = registry.get(name).cls(cfg).fit(ds, split, progress=False).score_all(users)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_roundtrip(name, data, fitted, tmp_path):
    ds, split = data
    pol = fitted(name)
    users = _users(split)
    pol.save(tmp_path / name)
    back = registry.get(name).cls.load(tmp_path / name)
    np.testing.assert_array_equal(pol.score_all(users), back.score_all(users))
    np.testing.assert_array_equal(pol.retrieve(users, 7).item_ids, back.retrieve(users, 7).item_ids)


BAR = re.compile(r"\d+%\||\d+/\d+ \[")  # a tqdm bar: "100%|" or "3/3 ["


@pytest.mark.parametrize("name", NAMES)
def test_quiet_fit_and_load_print_no_progress_bar(name, data, tmp_path, capfd):
    """``sim run -q``: ``fit_or_load(progress=False)`` trains (and then loads) without any bar on stderr."""
    from policies.store import fit_or_load

    ds, split = data
    cfg = registry.get(name).config_cls.tiny().model_dump()
    capfd.readouterr()
    fit_or_load(name, ds, split, cfg, root=tmp_path, progress=False)
    fit_or_load(name, ds, split, cfg, root=tmp_path, progress=False)  # from the cache
    err = capfd.readouterr().err
    assert not BAR.search(err), err


def test_progress_bars_are_seen_when_not_quiet(data, tmp_path, capfd):
    """The check above can fail: the same capture shows HLLM's bars when progress is on."""
    from policies.store import fit_or_load

    ds, split = data
    capfd.readouterr()
    fit_or_load("hllm", ds, split, registry.get("hllm").config_cls.tiny().model_dump(), root=tmp_path)
    err = capfd.readouterr().err
    assert BAR.search(err) and "hllm stage 2" in err, err
