"""Bad input: one clear DataError naming file, line and field; --skip-bad-lines counts."""

from __future__ import annotations

import json

import pytest

from simulator.core import Catalog
from simulator.core.errors import DataError, SimError
from simulator.core.loaders import load_into_catalog

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


@pytest.fixture
def cat():
    c = Catalog(":memory:")
    yield c
    c.close()


def _rb(tmp_path, body, header=INTER_HEADER, item=None):
    d = tmp_path / "rb"
    d.mkdir(exist_ok=True)
    (d / "rb.inter").write_text(header + body)
    if item is not None:
        (d / "rb.item").write_text(item)
    return d


def _err(cat, *args, **kw) -> DataError:
    with pytest.raises(DataError) as e:
        load_into_catalog(cat, *args, **kw)
    assert "\n" not in str(e.value)
    return e.value


def test_malformed_line(tmp_path, cat):
    d = _rb(tmp_path, "1\t2\t3\t100\n1\t3\t4\n2\t2\t5\t101\n")
    e = _err(cat, "recbole", d, "x")
    assert e.line == 3 and "rb.inter:3" in str(e) and "expected 4 fields, found 3" in str(e)
    info = load_into_catalog(cat, "recbole", d, "x", skip_bad_lines=True)
    assert info.n_skipped == 1 and info.n_interactions == 2


def test_missing_column(tmp_path, cat):
    d = _rb(tmp_path, "1\t100\n", header="user_id:token\ttimestamp:float\n")
    e = _err(cat, "recbole", d, "x")
    assert e.field == "item_id" and "missing column" in str(e)


def test_non_numeric_timestamp(tmp_path, cat):
    d = _rb(tmp_path, "1\t2\t3\t100\n1\t3\t4\tyesterday\n")
    e = _err(cat, "recbole", d, "x")
    assert (e.line, e.field) == (3, "timestamp:float") and "'yesterday'" in str(e)
    info = load_into_catalog(cat, "recbole", d, "x", skip_bad_lines=True)
    assert info.n_skipped == 1 and info.n_interactions == 1


def test_non_numeric_rating_movielens(tmp_path, cat):
    d = tmp_path / "ml"
    d.mkdir()
    (d / "u.data").write_text("1\t2\t3\t100\n1\t3\tfive\t101\n")
    e = _err(cat, "movielens", d, "x")
    assert (e.line, e.field) == (2, "rating") and "u.data:2" in str(e)


def test_empty_file(tmp_path, cat):
    d = _rb(tmp_path, "", header="")
    e = _err(cat, "recbole", d, "x")
    assert "empty" in str(e) and e.file.endswith("rb.inter")
    (tmp_path / "e.csv").write_text("")
    assert "empty" in str(_err(cat, "csv", tmp_path / "e.csv", "y"))


def test_header_only_has_no_interactions(tmp_path, cat):
    d = _rb(tmp_path, "")
    with pytest.raises(SimError, match="no interactions"):
        load_into_catalog(cat, "recbole", d, "x")


def test_duplicate_header(tmp_path, cat):
    d = _rb(tmp_path, "1\t2\t3\n", header="user_id:token\titem_id:token\titem_id:token\n")
    e = _err(cat, "recbole", d, "x")
    assert (e.line, e.field) == (1, "item_id:token") and "duplicate column" in str(e)
    (tmp_path / "d.csv").write_text("user,item,user\n1,2,3\n")
    e = _err(cat, "csv", tmp_path / "d.csv", "y")
    assert (e.line, e.field) == (1, "user")


def test_csv_bad_lines_and_missing_values(tmp_path, cat):
    p = tmp_path / "l.csv"
    p.write_text('user,item,ts\na,x,1\nb,"y,z",2\nc,q\n,x,3\nd,x,4\n')
    e = _err(cat, "csv", p, "x")
    assert e.line == 4 and "malformed" in str(e)
    p.write_text('user,item,ts\na,x,1\nb,"y,z",2\n,x,3\nd,x,4\n')
    e = _err(cat, "csv", p, "x")
    assert (e.line, e.field) == (4, "user") and "missing value" in str(e)
    p.write_text('user,item,ts\na,x,1\nb,"y,z",2\nc,q\n,x,3\nd,x,4\n')
    info = load_into_catalog(cat, "csv", p, "x", skip_bad_lines=True)
    assert (info.n_skipped, info.n_interactions) == (2, 3)


def test_csv_mapping_errors(tmp_path, cat):
    p = tmp_path / "l.csv"
    p.write_text("uid,iid,t\na,x,1\n")
    e = _err(cat, "csv", p, "x", mapping="user=uid,item=iid,ts=time")
    assert e.field == "time" and "missing column" in str(e)
    assert "unknown canonical" in str(_err(cat, "csv", p, "x", mapping="user=uid,foo=iid"))
    assert "expected canonical=column" in str(_err(cat, "csv", p, "x", mapping="user"))


def test_jsonl_malformed_line(tmp_path, cat):
    r = tmp_path / "reviews.jsonl"
    good = json.dumps({"reviewerID": "A", "asin": "B", "overall": 5, "unixReviewTime": 1})
    r.write_text(good + "\n{not json\n" + good.replace('"B"', '"C"') + "\n")
    e = _err(cat, "amazon", r, "x")
    assert e.line == 2 and "JSON" in str(e)
    info = load_into_catalog(cat, "amazon", r, "x", skip_bad_lines=True)
    assert (info.n_skipped, info.n_interactions) == (1, 2)
    r.write_text(json.dumps({"reviewerID": "A", "asin": "B", "overall": 5, "unixReviewTime": "soon"}) + "\n")
    e = _err(cat, "amazon", r, "x2")
    assert (e.line, e.field) == (1, "ts")


def test_missing_file_and_unknown_format(tmp_path, cat):
    assert "not found" in str(_err(cat, "csv", tmp_path / "nope.csv", "x"))
    with pytest.raises(SimError, match="unknown format"):
        load_into_catalog(cat, "xml", tmp_path, "x")
    with pytest.raises(SimError, match="invalid dataset name"):
        load_into_catalog(cat, "csv", tmp_path / "nope.csv", "bad name!")


def test_not_utf8(tmp_path, cat):
    p = tmp_path / "l.csv"
    p.write_bytes(b"user,item,ts\na,x,1\nb,\xff\xfe,2\n")
    e = _err(cat, "csv", p, "x")
    assert "l.csv" in str(e)


def test_bad_load_does_not_replace_existing(tmp_path, cat):
    d = _rb(tmp_path, "1\t2\t3\t100\n")
    load_into_catalog(cat, "recbole", d, "x")
    (d / "rb.inter").write_text(INTER_HEADER + "1\t2\t3\tnope\n")
    _err(cat, "recbole", d, "x", replace=True)
    assert cat.info("x").n_interactions == 1 and len(cat.load_dataset("x").sequences) == 1
