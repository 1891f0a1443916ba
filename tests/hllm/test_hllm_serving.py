"""Item table on disk (npy memmap + parquet + DuckDB), incremental items, exact top-k, CLI."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest
import torch

from hllm import serving


def _norm(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_item_table_round_trip_and_append(tmp_path):
    rng = np.random.default_rng(0)
    emb = _norm(rng.standard_normal((20, 8))).astype(np.float32)
    serving.write_item_table(tmp_path / "t", emb, [f"item {i}" for i in range(20)])
    t = serving.open_item_table(tmp_path / "t")
    assert isinstance(t, np.memmap)
    np.testing.assert_array_equal(np.asarray(t), emb)
    new = _norm(rng.standard_normal((3, 8))).astype(np.float32)
    ids = serving.append_items(tmp_path / "t", new, ["a", "b", "c"])
    assert list(ids) == [20, 21, 22]
    t = serving.open_item_table(tmp_path / "t")
    np.testing.assert_array_equal(np.asarray(t[:20]), emb)
    np.testing.assert_array_equal(np.asarray(t[20:]), new)
    assert serving.read_item_texts(tmp_path / "t")[-1] == "c"
    with pytest.raises(Exception, match="dim"):
        serving.append_items(tmp_path / "t", np.zeros((1, 5), np.float32), ["bad"])


def test_duckdb_mirror_round_trip():
    emb = np.arange(12, dtype=np.float32).reshape(4, 3)
    con = duckdb.connect()
    serving.to_duckdb(con, "hllm_items", emb)
    np.testing.assert_array_equal(serving.from_duckdb(con, "hllm_items"), emb)


def test_topk_exact_matches_full_sort_with_chunks_and_exclusions():
    rng = np.random.default_rng(1)
    items = _norm(rng.standard_normal((1000, 16))).astype(np.float32)
    users = _norm(rng.standard_normal((37, 16))).astype(np.float32)
    exclude = [rng.choice(1000, 5, replace=False) for _ in range(37)]
    ids, scores = serving.topk_inner_product(users, items, 10, exclude, user_batch=8, item_chunk=128)
    full = users @ items.T
    for b, ex in enumerate(exclude):
        full[b, ex] = -np.inf
    want = np.argsort(-full, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, 1), rtol=1e-5)
    assert not any(np.isin(ids[b], exclude[b]).any() for b in range(37))


def test_cli_train_embed_append_export(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    from typer.testing import CliRunner

    sys.path.insert(0, str(Path(__file__).parent))
    from _tinydata import tiny_dataset

    from simulator.commands import hllm as cli

    torch.set_num_threads(1)
    ds = tiny_dataset()
    monkeypatch.setattr(cli, "_dataset", lambda data, catalog: ds)
    r = CliRunner()
    res = r.invoke(cli.app, ["train", "--data", "tiny", "--preset", "tiny", "--set", "stage1_epochs=0",
                             "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.rindex('{"saved"'):].splitlines()[0])
    assert "ndcg@10" in summary
    res = r.invoke(cli.app, ["embed-items", "--model", str(tmp_path / "m"), "--data", "tiny", "--out", str(tmp_path / "t"),
                             "--index", "ivf"])  # a 48-item catalog served by ANN on request
    assert res.exit_code == 0, res.output
    assert serving.read_meta(tmp_path / "t")["index"]["n_items"] == ds.n_items
    from hllm.policy import HLLMPolicy

    pol = HLLMPolicy.load(tmp_path / "m")
    np.testing.assert_allclose(np.asarray(serving.open_item_table(tmp_path / "t")), pol.item_table(), atol=1e-6)
    (tmp_path / "new.csv").write_text("text\n" + ds.item_text[0] + "\nbrand new jazz music record\n")
    res = r.invoke(cli.app, ["embed-items", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "t"),
                             "--new-items", str(tmp_path / "new.csv"), "--index", "ivf"])
    assert res.exit_code == 0, res.output
    t = serving.open_item_table(tmp_path / "t")
    assert len(t) == ds.n_items + 2
    assert serving.load_table_index(tmp_path / "t").ntotal == ds.n_items + 2  # rebuilt after the append
    np.testing.assert_allclose(np.asarray(t[ds.n_items]), np.asarray(t[0]), atol=1e-5)  # same text, same row
    res = r.invoke(cli.app, ["export", "--model", str(tmp_path / "m"), "--data", "tiny", "--out", str(tmp_path / "x")])
    assert res.exit_code == 0, res.output
    import pandas as pd

    users = pd.read_parquet(tmp_path / "x" / "users.parquet")
    assert len(users) == ds.n_users and len(users["emb"][0]) == pol.hf_config.user_hidden
