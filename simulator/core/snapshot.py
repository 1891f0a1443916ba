"""What a run's report needs from its dataset, frozen when the run starts.

A report computes novelty (item popularity in the dataset log), intra-list diversity (an item
attribute) and the CUPED covariate (each user's interactions before ``runs.sim_start``) from the
dataset. Reloading the dataset under the same name (``sim data load ... --replace``) would silently
change old reports, so every run stores its own copy (tables declared in schema.py):

  run_datasets(run_id, dataset, content_hash, n_items, n_interactions, diversity_attr, created_at)
  run_items(run_id, item_id, n_interactions, attr)   one row per catalog item
  run_users(run_id, user_id, pre, pre_items, pre_days, pre_pop)
                                                      users with pre-period interactions: count,
                                                      distinct items, active days, mean log popularity

``content_hash`` (simulator/core/fingerprint.py) is the dataset's hash at run time: a report
compares it with the dataset's hash now and says when the data changed.
"""

from __future__ import annotations

from simulator.core.catalog import columns, dataset_schema
from simulator.core.fingerprint import dataset_hash

PRE_COLUMNS = ("pre", "pre_items", "pre_days", "pre_pop")  # the CUPED covariates of each user


def pre_covariates_sql(interactions: str, start: str) -> str:
    """SELECT user_id + PRE_COLUMNS over each user's interactions with ts < ``start`` (SQL)."""
    return f"""SELECT i.user_id, count(*) AS pre, count(DISTINCT i.item_id) AS pre_items,
                      count(DISTINCT floor(i.ts / 86400)) AS pre_days, avg(ln(p.n)) AS pre_pop
               FROM {interactions} i
               JOIN (SELECT item_id, count(*) AS n FROM {interactions} GROUP BY ALL) p
                 USING (item_id)
               WHERE i.ts < {start} GROUP BY ALL"""

DIVERSITY_ATTRS = ("topic", "genre", "genres", "category", "class")


def diversity_attr(con, schema: str) -> str | None:
    """The item attribute used for intra-list diversity ('topic', 'genre', ... first found)."""
    cols = columns(con, f"{schema}.items")
    for c in DIVERSITY_ATTRS:
        if c in cols:
            return c
    extra = [c for c in cols if c not in ("item_id", "raw_id", "text")]
    return extra[0] if extra else None


def snapshot_dataset(con, run_id: str, dataset: str, sim_start: float) -> str:
    """Store the run's copy of what its report needs (idempotent); returns the content hash."""
    schema = dataset_schema(dataset)
    attr = diversity_attr(con, schema)
    attr_sql = f'CAST(it."{attr}" AS VARCHAR)' if attr else "NULL"
    h = dataset_hash(con, dataset)
    con.execute(f"""INSERT OR REPLACE INTO run_items
        SELECT $run_id, it.item_id, coalesce(p.n, 0), {attr_sql}
        FROM {schema}.items it
        LEFT JOIN (SELECT item_id, count(*) AS n FROM {schema}.interactions GROUP BY ALL) p
          USING (item_id)""",
                {"run_id": run_id})
    con.execute(f"""INSERT OR REPLACE INTO run_users BY NAME
        SELECT $run_id AS run_id,
               * FROM ({pre_covariates_sql(f"{schema}.interactions", "$start")})""",
                {"run_id": run_id, "start": sim_start})
    con.execute(f"""INSERT OR REPLACE INTO run_datasets
        SELECT $run_id, $dataset, $hash, (SELECT count(*) FROM {schema}.items),
               (SELECT count(*) FROM {schema}.interactions), $attr, current_timestamp""",
                {"run_id": run_id, "dataset": dataset, "hash": h, "attr": attr})
    return h


def run_dataset(con, run_id: str) -> dict | None:
    """The run_datasets row of ``run_id`` (None for a run written without one: a hand-made run)."""
    df = con.execute("SELECT * FROM run_datasets WHERE run_id = ?", [run_id]).df()
    return None if df.empty else df.iloc[0].to_dict()
