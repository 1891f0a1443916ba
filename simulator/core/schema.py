"""Pydantic schemas of the canonical dataset tables (one row each) and a catalog checker.

A dataset schema ``ds_<name>`` holds ``items``, ``users``, ``interactions`` (plus the id maps
``item_map``/``user_map``). Ids are contiguous 0-based ints; ``raw_id`` is the id in the log.
Loaders produce these tables through DuckDB; the models document them and validate samples.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from simulator.core.errors import DataError


class InteractionRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: int = Field(ge=0)
    item_id: int = Field(ge=0)
    ts: float = Field(description="seconds (Unix time for real logs, simulated seconds for synthetic)")
    event: str = Field("interact", description="interact | consume | click | ...")
    value: float = Field(1.0, description="rating or weight (1.0 for implicit feedback)")
    seq: int = Field(ge=0, description="original log order, the stable tie-break for equal ts")


class ItemRow(BaseModel):
    model_config = ConfigDict(extra="allow")  # attribute columns (title, genres, year, topic, ...)
    item_id: int = Field(ge=0)
    raw_id: str
    text: str = Field("", description="built by the text template: 'Title: ... Genres: ... Year: ...'")


class UserRow(BaseModel):
    model_config = ConfigDict(extra="allow")  # attribute columns (age, gender, ...)
    user_id: int = Field(ge=0)
    raw_id: str


ROW_MODELS = {"interactions": InteractionRow, "items": ItemRow, "users": UserRow}


def check_dataset(catalog, name: str, sample: int = 100) -> None:
    """Check a catalog dataset: required columns, contiguous ids, rows that fit the models.

    Raises :class:`DataError` naming the table and field of the first problem.
    """
    info = catalog.info(name)
    s = info.schema_name
    con = catalog.con
    for table, model in ROW_MODELS.items():
        cols = [d[0] for d in con.execute(f"SELECT * FROM {s}.{table} LIMIT 0").description]
        required = [k for k, f in model.model_fields.items() if f.is_required() or model is InteractionRow]
        missing = [c for c in required if c not in cols]
        if missing:
            raise DataError(f"dataset {name!r}: table {table} lacks column(s) {', '.join(missing)}", field=missing[0])
        rel = con.execute(f"SELECT * FROM {s}.{table} ORDER BY 1 LIMIT {int(sample)}")
        names = [d[0] for d in rel.description]
        for row in rel.fetchall():
            try:
                model(**{k: v for k, v in zip(names, row, strict=True) if v is not None or k in ("item_id", "user_id")})
            except Exception as e:  # pydantic ValidationError: report the first field
                raise DataError(f"dataset {name!r}: table {table}: {str(e).splitlines()[0]}") from None
    for table, key, n in (("items", "item_id", info.n_items), ("users", "user_id", info.n_users)):
        lo, hi, cnt = con.execute(f"SELECT min({key}), max({key}), count(DISTINCT {key}) FROM {s}.{table}").fetchall()[0]
        if (lo, hi, cnt) != (0, n - 1, n):
            raise DataError(f"dataset {name!r}: {table}.{key} is not contiguous 0..{n - 1}", field=key)
    bad = con.execute(f"""SELECT count(*) FROM {s}.interactions
        WHERE user_id NOT BETWEEN 0 AND {info.n_users - 1} OR item_id NOT BETWEEN 0 AND {info.n_items - 1}""").fetchall()[0][0]
    if bad:
        raise DataError(f"dataset {name!r}: {bad} interaction(s) with ids out of range", field="item_id")
