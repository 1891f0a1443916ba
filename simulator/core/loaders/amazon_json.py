"""Amazon item-text JSON pairs (the layout of public text-rich sequential benchmarks, e.g. Office
Products in ``yuyq18/APAO``): ``<name>.inter.json`` = ``{user: [item, ...]}`` with each user's
items in order, and ``<name>.item.json`` = ``{item: {title, description, brand, categories}}``.

``path`` is the folder holding one such pair. HTML entities in the text are decoded
(``&amp;`` -> ``&``); ``categories`` may be a string or a (nested) list. The sequences carry no
timestamps: each user's order is kept (position N = N seconds) and the load says so once.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from simulator.core.errors import DataError
from simulator.core.loaders.common import check_file
from simulator.core.preprocess import Canonical, text_template_for

TEXT = ("title", "description", "brand", "categories")
_counter = [0]


def _pair(p: Path) -> tuple[Path, Path]:
    if not p.is_dir():
        raise DataError("amazon-json reads a folder holding <name>.inter.json and <name>.item.json", file=str(p))
    inter, items = sorted(p.glob("*.inter.json")), sorted(p.glob("*.item.json"))
    if len(inter) != 1 or len(items) != 1:
        found = ", ".join(f.name for f in inter + items) or "none"
        raise DataError(f"expected exactly one *.inter.json and one *.item.json, found: {found}", file=str(p))
    return inter[0], items[0]


def _read_object(f: Path) -> dict:
    check_file(f)
    try:
        with open(f, encoding="utf-8") as fh:
            obj = json.load(fh)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg}", file=str(f), line=e.lineno) from None
    except UnicodeDecodeError:
        raise DataError("not valid utf-8", file=str(f)) from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object at the top level, got {type(obj).__name__}", file=str(f))
    return obj


def _text(value, *, file: Path, item: str, field: str) -> str | None:
    """A text field as one clean string (lists flattened, duplicates dropped, entities decoded)."""
    if value is None:
        return None
    if isinstance(value, list):
        flat, stack = [], [value]
        while stack:
            v = stack.pop()
            if isinstance(v, list):
                stack.extend(reversed(v))
            else:
                flat.append(_text(v, file=file, item=item, field=field))
        value = ", ".join(dict.fromkeys(s for s in flat if s))
    elif not isinstance(value, str | int | float):
        raise DataError(f"item {item!r}: expected text, got {type(value).__name__}", file=str(file), field=field)
    s = " ".join(html.unescape(str(value)).split())
    return s or None


def _interactions(f: Path) -> pd.DataFrame:
    rows = []
    for user, seq in _read_object(f).items():
        if not isinstance(seq, list) or any(not isinstance(i, int | str) or isinstance(i, bool) for i in seq):
            raise DataError(f"user {user!r}: expected a list of item ids", file=str(f), field=str(user))
        rows.extend((str(user), str(i).strip(), float(pos)) for pos, i in enumerate(seq))
    if not rows:
        raise DataError("no interactions", file=str(f))
    df = pd.DataFrame(rows, columns=["user", "item", "ts"])
    return df.assign(value=1.0, event="interact", seq=range(len(df)))


def _items(f: Path) -> pd.DataFrame:
    rows = []
    for item, rec in _read_object(f).items():
        if not isinstance(rec, dict):
            raise DataError(f"item {item!r}: expected an object of text fields", file=str(f), field=str(item))
        rows.append((str(item).strip(), *(_text(rec.get(k), file=f, item=item, field=k) for k in TEXT)))
    return pd.DataFrame(rows, columns=["item", *TEXT])


def _temp(con, df: pd.DataFrame) -> str:
    _counter[0] += 1
    name = f"_raw_amazon_json_{_counter[0]}"
    con.register("_amazon_json_df", df)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM _amazon_json_df")
    con.unregister("_amazon_json_df")
    return name


def load_amazon_json(con, path: str | Path, *, skip_bad_lines: bool = False) -> Canonical:
    p = check_file(path)
    inter_f, item_f = _pair(p)
    inter = _temp(con, _interactions(inter_f))
    items = _temp(con, _items(item_f))
    con.execute(f"DELETE FROM {items} WHERE item NOT IN (SELECT item FROM {inter})")
    note = (f"{inter_f}: no timestamps: each user's item order is kept (position N = N seconds); "
            "temporal splits and replay times then follow that order")
    return Canonical(interactions=inter, items=items, users=None, source=str(p), format="amazon-json",
                     text_template=text_template_for(con, items), notes=[note])
