"""Amazon Reviews JSON Lines, 2018 (``reviewerID, asin, overall, unixReviewTime`` + meta
``asin, title, description, category, brand``) and 2023 (``user_id, parent_asin, rating,
timestamp`` in ms + meta ``parent_asin, title, description, categories, store``).

``path`` is the reviews file (``.jsonl``/``.json``, optionally ``.gz``) or a folder holding
the reviews file and a ``meta*`` file; ``meta=`` names the meta file explicitly.
"""

from __future__ import annotations

from pathlib import Path

from simulator.core.errors import DataError
from simulator.core.loaders.common import canon_interactions, check_file, read_jsonl_table
from simulator.core.preprocess import Canonical, text_template_for

_V2018 = {"user": "$.reviewerID", "item": "$.asin", "value": "$.overall", "ts": "$.unixReviewTime"}
_V2023 = {"user": "$.user_id", "item": "$.parent_asin", "asin": "$.asin", "value": "$.rating",
          "ts": "$.timestamp"}
_META2018 = {"item": "$.asin", "title": "$.title", "description": "$.description",
             "categories": "$.category", "brand": "$.brand"}
_META2023 = {"item": "$.parent_asin", "title": "$.title", "description": "$.description",
             "categories": "$.categories", "brand": "$.store", "main_category": "$.main_category"}


def _json_files(p: Path) -> list[Path]:
    return sorted(f for f in p.iterdir() if f.is_file() and any(
        f.name.endswith(e) for e in (".jsonl", ".json", ".jsonl.gz", ".json.gz")))


def _detect_version(path: Path) -> str:
    with _open(path) as f:
        for line in f:
            if line.strip():
                return "2023" if '"parent_asin"' in line or '"user_id"' in line else "2018"
    raise DataError("file is empty", file=str(path))


def _open(path: Path):
    import gzip

    return gzip.open(path, "rt", errors="replace") if path.suffix == ".gz" else open(path, errors="replace")


def _list_text(col: str) -> str:
    """JSON list text -> space-joined string; plain strings pass through."""
    return f"""CASE WHEN {col} LIKE '[%' THEN nullif(trim(array_to_string(
                   CAST(json_extract_string({col}, '$[*]') AS VARCHAR[]), ' ')), '') ELSE nullif(trim({col}), '') END"""


def load_amazon(con, path: str | Path, *, skip_bad_lines: bool = False, meta: str | Path | None = None,
                version: str | None = None) -> Canonical:
    p = Path(path)
    check_file(p)
    if p.is_dir():
        files = _json_files(p)
        reviews = [f for f in files if not f.name.lower().startswith("meta")]
        metas = [f for f in files if f.name.lower().startswith("meta")]
        if not reviews:
            raise DataError("no reviews .jsonl file found", file=str(p))
        rpath = reviews[0]
        meta = meta or (metas[0] if metas else None)
    else:
        rpath = p
    ver = version or _detect_version(rpath)
    if ver not in ("2018", "2023"):
        raise DataError(f"unknown Amazon version {ver!r} (2018 or 2023)", file=str(rpath))
    fields = _V2023 if ver == "2023" else _V2018
    t, skipped = read_jsonl_table(con, rpath, fields=fields, skip_bad_lines=skip_bad_lines)
    if ver == "2023":  # parent_asin groups variants; older dumps may only have asin
        con.execute(f"UPDATE {t} SET item = asin WHERE item IS NULL")
    inter, bad = canon_interactions(con, t, path=str(rpath), user="user", item="item", ts="ts", value="value",
                                    skip_bad_lines=skip_bad_lines, ts_divisor=1000.0 if ver == "2023" else 1.0)
    skipped += bad
    items_t = None
    if meta is not None:
        mp = Path(meta)
        mf = _META2023 if ver == "2023" else _META2018
        mt, mb = read_jsonl_table(con, mp, fields=mf, skip_bad_lines=skip_bad_lines)
        skipped += mb
        extra = ", main_category" if ver == "2023" else ""
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {mt}_canon AS SELECT trim(item) AS item,
            nullif(trim(title), '') AS title, {_list_text('categories')} AS categories,
            nullif(trim(brand), '') AS brand, {_list_text('description')} AS description{extra}
            FROM {mt} WHERE item IS NOT NULL""")
        items_t = f"{mt}_canon"
        # restrict the catalog to reviewed items (meta dumps cover whole categories)
        con.execute(f"DELETE FROM {items_t} WHERE item NOT IN (SELECT item FROM {inter})")
    return Canonical(interactions=inter, items=items_t, users=None, n_skipped=skipped, source=str(p),
                     format=f"amazon-{ver}", text_template=text_template_for(con, items_t))
