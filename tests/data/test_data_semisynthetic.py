"""Semi-synthetic world on ML-100K: real items and texts, the text-signal dial, tastes from real
histories, a ground truth the simulator can use (skips when ML-100K is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.core import Catalog, ensure_dataset
from simulator.core.synthetic import WorldConfig, world_for, write_world


@pytest.fixture(scope="module")
def ml_catalog(ml100k_dir, tmp_path_factory):
    cat = Catalog(str(tmp_path_factory.mktemp("semi") / "cat.duckdb"))
    ensure_dataset("ml-100k", cat)
    yield cat
    cat.close()


def _r2(cat, rho: float) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import RidgeCV

    name = f"ml-world-{int(rho * 10)}"
    write_world(cat, name, WorldConfig(source="ml-100k", text_signal=rho, seed=1, sessions_per_user=1.0))
    w, ds = world_for(cat, name), cat.load_dataset(name)
    y = w.utility(np.arange(200), np.tile(np.arange(w.n_items), (200, 1)), np.full(200, w.cfg.days * 86400.0)).mean(0)
    X = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform([str(t) for t in ds.item_text])
    cut = 1300
    return float(RidgeCV(alphas=np.logspace(-3, 2, 12)).fit(X[:cut], y[:cut]).score(X[cut:], y[cut:]))


def test_real_items_and_text_signal(ml_catalog):
    r2 = {rho: _r2(ml_catalog, rho) for rho in (0.0, 1.0)}
    assert r2[0.0] < 0.1 and r2[1.0] > 0.5, r2
    src, ds = ml_catalog.load_dataset("ml-100k"), ml_catalog.load_dataset("ml-world-10")
    assert (ds.n_items, ds.n_users) == (src.n_items, src.n_users)
    assert list(ds.item_text[:50]) == list(src.item_text[:50])  # the real texts, in the source's order
    w = world_for(ml_catalog, "ml-world-10")
    # tastes come from real histories: a user's real items beat random items for that user
    u = np.arange(100)
    hist = np.stack([src.sequences.seq(int(x))[:5] for x in u])
    now = np.full(100, 0.0)
    assert w.utility(u, hist, now).mean() > w.utility(u, np.random.default_rng(0).integers(0, w.n_items, (100, 5)),
                                                      now).mean()
