"""Every loader on small fixture files written here, plus ML-100K through two loaders."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from simulator.core import Catalog, get_dataset
from simulator.core.errors import SimError
from simulator.core.loaders import LOADER_VERSION, load_into_catalog
from simulator.core.preprocess import Preprocess


@pytest.fixture
def cat():
    c = Catalog(":memory:")
    yield c
    c.close()


def _write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


def test_recbole_small(tmp_path, cat):
    d = tmp_path / "toy"
    d.mkdir()
    _write(d / "toy.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
           "u1\ti2\t5\t30\nu1\ti1\t3\t10\nu2\ti1\t4\t20\nu2\ti3\t1\t20\n")
    _write(d / "toy.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
           "i1\tAlpha\t1990\tDrama\ni2\tBeta\t1991\tComedy Drama\ni3\tGamma\t1992\tHorror\n")
    _write(d / "toy.user", "user_id:token\tage:token\nu1\t20\nu2\t30\n")
    info = load_into_catalog(cat, "recbole", d, "toy")
    assert (info.n_users, info.n_items, info.n_interactions) == (2, 3, 4)
    ds = cat.load_dataset("toy")
    assert ds.sequences.seq(0).tolist() == [0, 1]  # u1: i1 (ts 10) then i2 (ts 30)
    assert ds.sequences.seq(1).tolist() == [0, 2]  # tie at ts 20 keeps file order
    assert ds.item_text[1] == "Title: Beta. Genres: Comedy Drama. Year: 1991"
    assert ds.item_attrs["genres"].tolist() == ["Drama", "Comedy Drama", "Horror"]
    assert ds.values.tolist() == [3.0, 5.0, 4.0, 1.0]
    users = cat.con.execute(f"SELECT user_id, raw_id, age FROM {info.schema_name}.users ORDER BY 1").fetchall()
    assert users == [(0, "u1", "20"), (1, "u2", "30")]


def _ml_original_from_atomic(src, dst):
    """Write ml-100k u.data / u.item (original format) from the RecBole atomic files."""
    from simulator.core.loaders.movielens import _GENRES_100K

    inter = pd.read_csv(src / "ml-100k.inter", sep="\t", dtype=str)
    inter.to_csv(dst / "u.data", sep="\t", header=False, index=False)
    items = pd.read_csv(src / "ml-100k.item", sep="\t", dtype=str, keep_default_na=False)
    lines = []
    for iid, title, year, genres in items.itertuples(index=False):
        g = set(genres.split())
        flags = "|".join("1" if name in g else "0" for name in _GENRES_100K)
        if year.isdigit():
            lines.append(f"{iid}|{title} ({year})|01-Jan-{year}||http://x/{iid}|{flags}")
        else:  # the one 'unknown' movie has no date in the original
            lines.append(f"{iid}|{title}|||http://x/{iid}|{flags}")
    (dst / "u.item").write_text("\n".join(lines) + "\n", encoding="latin-1")
    users = pd.read_csv(src / "ml-100k.user", sep="\t", dtype=str, keep_default_na=False)
    users.to_csv(dst / "u.user", sep="|", header=False, index=False)


def test_ml100k_recbole_equals_original(ml100k_dir, tmp_path, cat):
    orig = tmp_path / "ml-100k-orig"
    orig.mkdir()
    _ml_original_from_atomic(ml100k_dir, orig)
    a = load_into_catalog(cat, "recbole", ml100k_dir, "a")
    b = load_into_catalog(cat, "movielens", orig, "b")
    assert (a.n_users, a.n_items, a.n_interactions) == (943, 1682, 100000)
    for table, order in (("interactions", "user_id, ts, seq"), ("items", "item_id"), ("item_map", "item_id"),
                         ("user_map", "user_id"), ("users", "user_id")):
        ta = cat.con.execute(f"SELECT * FROM {a.schema_name}.{table} ORDER BY {order}").df()
        tb = cat.con.execute(f"SELECT * FROM {b.schema_name}.{table} ORDER BY {order}").df()
        pd.testing.assert_frame_equal(ta, tb, check_dtype=False)
    assert a.meta["load_seconds"] < 5.0


def test_get_dataset_ml100k_autoload(ml100k_dir, tmp_path):
    ds = get_dataset("ml-100k", str(tmp_path / "c.duckdb"))
    assert (ds.n_users, ds.n_items, len(ds.sequences)) == (943, 1682, 100000)
    assert ds.item_text[0].startswith("Title: Toy Story. Genres: Animation")
    assert set(ds.item_attrs) >= {"title", "genres", "year"}
    assert np.all(np.diff(ds.sequences.indptr) >= 0)
    # chronological within each user
    d = np.diff(ds.sequences.ts)
    starts = ds.sequences.indptr[1:-1] - 1
    d[starts] = 0
    assert (d >= 0).all()


def _age(catalog, name: str) -> None:
    """Pretend ``name`` was loaded by loader version 1 (before the version was recorded)."""
    meta = catalog.info(name).meta
    meta.pop("loader_version")
    catalog.con.execute("UPDATE datasets SET meta_json = ? WHERE name = ?", [json.dumps(meta), name])


def test_ml100k_loaded_by_an_older_loader_is_reloaded(ml100k_dir, tmp_path, capsys):
    path = str(tmp_path / "c.duckdb")
    get_dataset("ml-100k", path)
    with Catalog(path) as c:
        _age(c, "ml-100k")
    assert get_dataset("ml-100k", path).n_items == 1682
    assert "loaded by an older loader: reloading it" in capsys.readouterr().err
    with Catalog(path) as c:
        assert c.info("ml-100k").meta["loader_version"] == LOADER_VERSION


def test_dataset_loaded_by_an_older_loader_warns(tmp_path):
    d = tmp_path / "ml"
    d.mkdir()
    _write(d / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,5,100\n1,20,3,50\n")
    path = str(tmp_path / "c.duckdb")
    with Catalog(path) as c:
        load_into_catalog(c, "movielens", d, "mine")
        _age(c, "mine")
    with pytest.warns(UserWarning, match="'mine' .* loader version 1 .*--replace"):
        assert get_dataset("mine", path).n_items == 2


def test_movielens_dat_and_csv(tmp_path, cat):
    d1 = tmp_path / "ml1m"
    d1.mkdir()
    _write(d1 / "ratings.dat", "1::10::5::100\n1::20::3::50\n2::10::4::70\n")
    _write(d1 / "movies.dat", "10::Heat (1995)::Action|Crime\n20::Up (2009)::Animation\n", "latin-1")
    a = load_into_catalog(cat, "movielens", d1, "m1")
    ds = cat.load_dataset("m1")
    assert a.n_interactions == 3 and ds.sequences.seq(0).tolist() == [1, 0]
    assert ds.item_text[0] == "Title: Heat. Genres: Action Crime. Year: 1995"
    d2 = tmp_path / "latest"
    d2.mkdir()
    _write(d2 / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,5.0,100\n1,20,3.5,50\n2,10,4.0,70\n")
    _write(d2 / "movies.csv", 'movieId,title,genres\n10,"Heat, The (1995)",Action|Crime\n20,Up (2009),Animation\n')
    load_into_catalog(cat, "movielens", d2, "m2")
    ds2 = cat.load_dataset("m2")
    assert ds2.sequences.seq(0).tolist() == [1, 0]
    assert ds2.item_text[0] == "Title: Heat, The. Genres: Action Crime. Year: 1995"


def test_amazon_2018_and_2023(tmp_path, cat):
    d = tmp_path / "am18"
    d.mkdir()
    rev = [{"reviewerID": "A", "asin": "B1", "overall": 5.0, "unixReviewTime": 200},
           {"reviewerID": "A", "asin": "B2", "overall": 2.0, "unixReviewTime": 100},
           {"reviewerID": "C", "asin": "B1", "overall": 4.0, "unixReviewTime": 150}]
    meta = [{"asin": "B1", "title": "Red Pen", "category": ["Office", "Pens"], "description": ["Writes red."],
             "brand": "Acme"},
            {"asin": "B2", "title": "Blue Pen", "category": [], "description": []},
            {"asin": "B9", "title": "Never reviewed"}]
    with gzip.open(d / "Office.json.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rev) + "\n")
    _write(d / "meta_Office.json", "\n".join(json.dumps(m) for m in meta) + "\n")
    info = load_into_catalog(cat, "amazon", d, "am18")
    ds = cat.load_dataset("am18")
    assert info.format == "amazon-2018" and (ds.n_users, ds.n_items) == (2, 2)
    assert ds.sequences.seq(0).tolist() == [1, 0]
    assert ds.item_text[0] == "Title: Red Pen. Categories: Office Pens. Brand: Acme. Description: Writes red."
    assert ds.item_text[1] == "Title: Blue Pen"
    # 2023: ms timestamps, parent_asin groups variants
    rev23 = [{"user_id": "U1", "asin": "x1", "parent_asin": "P1", "rating": 5, "timestamp": 2000},
             {"user_id": "U1", "asin": "x2", "parent_asin": "P2", "rating": 3, "timestamp": 1000}]
    meta23 = [{"parent_asin": "P1", "title": "Lamp", "categories": ["Home"], "store": "Lux",
               "description": ["Bright"], "main_category": "Home"}]
    r = _write(tmp_path / "reviews23.jsonl", "\n".join(json.dumps(x) for x in rev23) + "\n")
    m = _write(tmp_path / "meta23.jsonl", "\n".join(json.dumps(x) for x in meta23) + "\n")
    info = load_into_catalog(cat, "amazon", r, "am23", meta=m)
    ds = cat.load_dataset("am23")
    assert info.format == "amazon-2023" and ds.sequences.ts.tolist() == [1.0, 2.0]
    assert ds.sequences.seq(0).tolist() == [1, 0]
    assert ds.item_text[0] == "Title: Lamp. Categories: Home. Brand: Lux. Description: Bright"
    assert ds.item_text[1] == ""


def test_amazon_json_pair_keeps_order_and_decodes_html(tmp_path, cat):
    d = tmp_path / "office"
    d.mkdir()
    _write(d / "Office.inter.json", json.dumps({"0": [5, 2, 9], "1": [2, 5]}))
    _write(d / "Office.item.json", json.dumps({
        "5": {"title": "AT&amp;T Phone", "description": "", "brand": "AT&amp;T",
              "categories": "Office Electronics, Phones"},
        "2": {"title": "Pen &quot;Red&quot;", "description": "Writes   red.", "brand": None,
              "categories": [["Office", "Pens"], ["Office"]]},
        "7": {"title": "never seen"}}))  # item 9 has no text; item 7 no interaction
    info = load_into_catalog(cat, "amazon-json", d, "office")
    ds = cat.load_dataset("office")
    assert info.format == "amazon-json" and (ds.n_users, ds.n_items, info.n_interactions) == (2, 3, 5)
    seqs = [[ds.item_text[i] for i in s] for s in ds.sequences.as_lists()]
    assert seqs[0][0] == "Title: AT&T Phone. Categories: Office Electronics, Phones. Brand: AT&T"  # order kept
    assert seqs[0][1] == 'Title: Pen "Red". Categories: Office, Pens. Description: Writes red.'
    assert seqs[0][2] == "" and seqs[1] == seqs[0][1::-1]
    assert "never seen" not in " ".join(ds.item_text)  # items nobody interacted with are dropped
    assert [ts.tolist() for ts in np.split(ds.sequences.ts, ds.sequences.indptr[1:-1])] == [[0, 1, 2], [0, 1]]
    assert len(info.meta["notes"]) == 1 and "no timestamps" in info.meta["notes"][0]


def test_pixelrec_hllm_layout(tmp_path, cat):
    (tmp_path / "dataset").mkdir()
    (tmp_path / "information").mkdir()
    _write(tmp_path / "dataset" / "Pixel.csv", "item_id,user_id,timestamp\ni1,u1,5\ni2,u1,3\ni1,u2,1\n")
    _write(tmp_path / "information" / "Pixel.csv",
           'item_id,title,tag,description\ni1,"Cats, dogs",pets,"Fluffy ""friends"""\ni2,Cars,auto,\n')
    info = load_into_catalog(cat, "pixelrec", tmp_path, "px")
    ds = cat.load_dataset("px")
    assert (info.n_users, info.n_items, info.n_interactions) == (2, 2, 3)
    assert ds.sequences.seq(0).tolist() == [1, 0]
    assert ds.item_text[0] == 'Title: Cats, dogs. Tags: pets. Description: Fluffy "friends"'
    assert ds.item_text[1] == "Title: Cars. Tags: auto"


def test_generic_csv_and_parquet_with_mapping(tmp_path, cat):
    _write(tmp_path / "log.csv", "uid,iid,when,stars\na,x,3,1\na,y,1,5\nb,x,2,4\nb,x,2,4\n")
    _write(tmp_path / "items.csv", "iid,name,kind\nx,Ex,k1\ny,Why,k2\nz,Zed,k3\n")
    info = load_into_catalog(cat, "csv", tmp_path / "log.csv", "g", mapping="user=uid,item=iid,ts=when,value=stars",
                             items=tmp_path / "items.csv", item_mapping="item=iid,title=name")
    ds = cat.load_dataset("g")
    assert info.n_interactions == 3  # duplicate (b, x, 2) dropped
    assert ds.n_items == 3 and ds.item_text == ["Title: Ex", "Title: Why", "Title: Zed"]
    assert ds.item_attrs["kind"].tolist() == ["k1", "k2", "k3"]
    assert ds.sequences.seq(0).tolist() == [1, 0]
    df = pd.DataFrame({"user": [1, 1, 2], "item": [7, 8, 7], "ts": [1.0, 2.0, 3.0]})
    df.to_parquet(tmp_path / "log.parquet")
    info = load_into_catalog(cat, "parquet", tmp_path / "log.parquet", "pq")
    assert (info.n_users, info.n_items, info.n_interactions, info.format) == (2, 2, 3, "parquet")


def test_preprocess_kcore_threshold_maxlen(tmp_path, cat):
    rows = ["user,item,ts,value"]
    # users a,b,c rate items; d has one interaction (removed by 2-core), z item only once
    for u, i, t, v in [("a", "x", 1, 5), ("a", "y", 2, 5), ("a", "w", 3, 1), ("b", "x", 1, 4), ("b", "y", 2, 4),
                       ("c", "x", 1, 5), ("c", "y", 2, 5), ("c", "z", 3, 5), ("d", "x", 9, 5)]:
        rows.append(f"{u},{i},{t},{v}")
    p = _write(tmp_path / "l.csv", "\n".join(rows) + "\n")
    info = load_into_catalog(cat, "csv", p, "k", preprocess=Preprocess(k_core=2, min_value=4))
    ds = cat.load_dataset("k")
    assert (info.n_users, info.n_items, info.n_interactions) == (3, 2, 6)
    st = info.meta["stats"]  # every raw interaction is kept or counted as dropped
    assert st["raw_interactions"] == 9 and st["dropped_min_value"] == 1 and st["dropped_k_core"] == 2
    assert st["raw_interactions"] == st["interactions"] + sum(v for k, v in st.items() if k.startswith("dropped"))
    assert all(len(ds.sequences.seq(u)) >= 2 for u in range(ds.n_users))
    assert np.bincount(ds.sequences.items).min() >= 2
    info = load_into_catalog(cat, "csv", p, "m", preprocess=Preprocess(max_seq_len=1))
    ds = cat.load_dataset("m")
    assert info.n_interactions == 4 and ds.item_raw_ids[ds.sequences.seq(0)].tolist() == ["w"]


def test_failed_load_leaves_catalog_untouched(tmp_path):
    path = str(tmp_path / "c.duckdb")
    p = _write(tmp_path / "ok.csv", "user,item,ts\na,x,1\n")
    with Catalog(path) as c:
        load_into_catalog(c, "csv", p, "keep")
        before = c.con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog <> 'temp'").fetchall()
        with pytest.raises(SimError):  # replacing with a file that empties out rolls back
            load_into_catalog(c, "csv", p, "keep", preprocess=Preprocess(k_core=5))
        assert c.info("keep").n_interactions == 1
        assert c.con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog <> 'temp'").fetchall() == before
    with Catalog(path) as c:
        assert [d.name for d in c.list_datasets()] == ["keep"]
        assert len(c.load_dataset("keep").sequences) == 1
