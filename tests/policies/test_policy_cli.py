"""`sim train` / `sim eval` command functions and the eval tables in the catalog."""

import numpy as np
import pandas as pd
import pytest
import typer
from _policy_data import tiny_dataset
from typer.testing import CliRunner

from policies.evaluate import evaluate
from policies.results import save_eval
from simulator.commands import train as pcli
from simulator.core import Catalog
from simulator.core.errors import ConfigError, SimError


def _write_tiny(path):
    ds = tiny_dataset(n_users=40, n_items=20)
    s = ds.sequences
    users = np.repeat(np.arange(ds.n_users), s.lengths)
    inter = pd.DataFrame({"user": users.astype(str), "item": [f"i{i:03d}" for i in s.items], "ts": s.ts,
                          "seq": np.arange(len(s.items))})
    items = pd.DataFrame({"item": [f"i{i:03d}" for i in range(ds.n_items)], "text": ds.item_text,
                          "genre": ds.item_attrs["genre"].astype(str)})
    with Catalog(path) as cat:
        cat.write_dataset("tiny", interactions=inter, items=items)


@pytest.fixture
def app():
    a = typer.Typer()
    a.command("train")(pcli.train)
    a.command("eval")(pcli.evaluate)
    return a


def test_parse_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('hidden = 32\nloss = "bce"\n')
    out = pcli.parse_overrides(["hidden=64", "dropout=0.1", "name=abc"], f, 3)
    assert out == {"hidden": 64, "loss": "bce", "dropout": 0.1, "name": "abc", "epochs": 3}
    with pytest.raises(ConfigError):
        pcli.parse_overrides(["novalue"], None, None)
    with pytest.raises(SimError):
        pcli.parse_overrides(None, tmp_path / "missing.toml", None)


def test_train_and_eval_store_results(app, tmp_path):
    cat = str(tmp_path / "c.duckdb")
    _write_tiny(cat)
    r = CliRunner().invoke(app, ["train", "--model", "sasrec", "--data", "tiny", "--catalog", cat,
                                 "--artifacts", str(tmp_path / "art"), "--set", "max_len=8", "--set", "hidden=16",
                                 "--epochs", "1"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "ndcg@10" in r.output
    r = CliRunner().invoke(app, ["eval", "--model", "sasrec", "--data", "tiny", "--catalog", cat,
                                 "--artifacts", str(tmp_path / "art"), "--set", "max_len=8", "--set", "hidden=16",
                                 "--epochs", "1"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    for _ in range(2):  # a re-run replaces its rows
        r = CliRunner().invoke(app, ["eval", "-m", "popularity", "-d", "tiny", "--catalog", cat,
                                     "--artifacts", str(tmp_path / "art")], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    with Catalog(cat) as c:
        summ = c.con.execute("SELECT model, count(*) FROM eval_summary GROUP BY model ORDER BY model").fetchall()
        assert summ == [("popularity", 11), ("sasrec", 11)]  # 7 quality metrics + 4 of training
        steps = dict(c.con.execute("SELECT model, value FROM eval_summary WHERE metric='train_steps'").fetchall())
        assert steps["popularity"] == 0 and steps["sasrec"] > 0  # one epoch of SASRec's steps
        n = c.con.execute("SELECT count(DISTINCT user_id) FROM eval_results WHERE model='popularity'").fetchall()[0][0]
        assert n == 40
        row = c.con.execute("SELECT value FROM eval_summary WHERE model='popularity' AND metric='ndcg@10'").fetchall()
        mean = c.con.execute("SELECT avg(value) FROM eval_results WHERE model='popularity' AND metric='ndcg@10'").fetchall()
        assert row[0][0] == pytest.approx(mean[0][0])


def test_bad_input_is_a_sim_error(app, tmp_path):
    cat = str(tmp_path / "c.duckdb")
    with pytest.raises(SimError, match="unknown policy"):
        CliRunner().invoke(app, ["train", "--model", "nosuch", "--catalog", cat], catch_exceptions=False)
    with pytest.raises(SimError, match="hiddn"):
        CliRunner().invoke(app, ["eval", "--model", "sasrec", "--set", "hiddn=3", "--catalog", cat],
                           catch_exceptions=False)


def test_save_eval_direct(tmp_path):
    ds = tiny_dataset(n_users=10, n_items=12)
    from policies.baselines import PopularityPolicy
    from simulator.core import LeaveOneOut

    split = LeaveOneOut.from_sequences(ds.sequences)
    res = evaluate(PopularityPolicy().fit(ds, split), split, ks=(10,))
    with Catalog(str(tmp_path / "e.duckdb")) as cat:
        eid = save_eval(cat, res, dataset="t", model="popularity", config_hash="abc")
        df = cat.con.execute("SELECT * FROM eval_results WHERE eval_id = ?", [eid]).df()
    assert set(df["metric"]) == {"rank", "hr@10", "ndcg@10", "mrr"} and len(df) == 4 * 10
