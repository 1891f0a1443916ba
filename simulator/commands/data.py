"""`sim data ...`: load, generate and inspect datasets in the DuckDB catalog."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

app = typer.Typer(help="Load, generate and inspect datasets.", no_args_is_help=True)

_CATALOG = typer.Option(None, "--catalog", help="Catalog file (default $SIM_CATALOG or ./sim.duckdb).")


def _catalog(path: Optional[str], read_only: bool = False):
    from simulator.core import Catalog

    if read_only and path is not None and not Path(path).exists():
        from simulator.core.errors import NotFoundError

        raise NotFoundError(f"catalog {path} does not exist")
    return Catalog(path)


@app.command("load")
def load(
    fmt: str = typer.Argument(..., help="Format: recbole, movielens, amazon, amazon-json, pixelrec (alias hllm), csv, parquet."),
    path: Path = typer.Argument(..., help="File or folder to read."),
    name: str = typer.Option(..., "--name", help="Dataset name in the catalog."),
    catalog: Optional[str] = _CATALOG,
    skip_bad_lines: bool = typer.Option(False, "--skip-bad-lines", help="Skip malformed lines and report how many."),
    k_core: int = typer.Option(0, "--k-core", help="Keep users and items with at least K interactions (iterated)."),
    min_value: Optional[float] = typer.Option(None, "--min-value", help="Implicit feedback: keep value >= this (e.g. rating 4)."),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help="Keep each user's most recent N interactions."),
    no_dedupe: bool = typer.Option(False, "--no-dedupe", help="Keep repeated (user, item, ts) rows."),
    mapping: Optional[str] = typer.Option(None, "--map", help="csv/parquet: canonical=column list, e.g. user=uid,item=iid,ts=time,value=rating."),
    items: Optional[Path] = typer.Option(None, "--items", help="csv/parquet/pixelrec: item file (attributes, text fields)."),
    item_map: Optional[str] = typer.Option(None, "--item-map", help="csv/parquet: item file mapping, e.g. item=iid,title=name."),
    meta: Optional[Path] = typer.Option(None, "--meta", help="amazon: the meta JSONL file."),
    sep: str = typer.Option(",", "--sep", help="csv: field separator."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite an existing dataset of this name."),
) -> None:
    """Read a dataset file, preprocess it and write it to the catalog (all or nothing)."""
    from simulator.core.loaders import load_into_catalog
    from simulator.core.preprocess import Preprocess

    opts: dict = {}
    if fmt in ("csv", "parquet"):
        opts.update(mapping=mapping, items=items, item_mapping=item_map, sep=sep)
    elif fmt in ("pixelrec", "hllm") and items is not None:
        opts["items"] = items
    elif fmt == "amazon" and meta is not None:
        opts["meta"] = meta
    pre = Preprocess(k_core=k_core, min_value=min_value, max_seq_len=max_seq_len, dedupe=not no_dedupe)
    t0 = time.perf_counter()
    with _catalog(catalog) as cat:
        info = load_into_catalog(cat, fmt, path, name, preprocess=pre, skip_bad_lines=skip_bad_lines,
                                 replace=replace, **opts)
    dt = time.perf_counter() - t0
    for note in info.meta.get("notes", []):
        typer.secho(f"warning: {note}", err=True, fg=typer.colors.YELLOW)
    typer.echo(f"loaded {info.name}: {info.n_users} users, {info.n_items} items, {info.n_interactions} interactions "
               f"({info.format}) in {dt:.2f}s")
    if skip_bad_lines:
        typer.echo(f"skipped {info.n_skipped} bad line(s)")


@app.command("synth")
def synth(
    name: str = typer.Option("synthetic", "--name", help="Dataset name in the catalog."),
    users: int = typer.Option(2000, "--users", help="Number of users (before --scale)."),
    items: int = typer.Option(1000, "--items", help="Number of items (before --scale)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, identical tables)."),
    scale: float = typer.Option(1.0, "--scale", help="Multiply users and items (20 gives ~1M+ interactions)."),
    topics: int = typer.Option(20, "--topics", help="Number of latent topics."),
    days: float = typer.Option(60.0, "--days", help="Length of the logged period in days."),
    text_signal: Optional[float] = typer.Option(None, "--text-signal", help="RHO in [0, 1]: share of the "
                                                "within-topic utility variance the item text explains."),
    arrivals: float = typer.Option(0.0, "--arrivals", help="FRAC of the catalog released during the "
                                   "simulated window (with their text), after the logged period."),
    source: Optional[str] = typer.Option(None, "--from", help="Semi-synthetic: build the world on this catalog "
                                         "dataset's real items, texts and users (e.g. ml-100k)."),
    catalog: Optional[str] = _CATALOG,
    replace: bool = typer.Option(False, "--replace", help="Overwrite an existing dataset of this name."),
) -> None:
    """Generate the seeded synthetic world (catalog, logs, ground-truth user model)."""
    from pydantic import ValidationError

    from simulator.core.errors import ConfigError
    from simulator.core.synthetic import WorldConfig, write_world

    try:
        cfg = WorldConfig(n_users=users, n_items=items, seed=seed, scale=scale, n_topics=topics, days=days,
                          text_signal=text_signal, arrivals=arrivals, source=source)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"bad option {err['loc'][0]}: {err['msg']}") from None
    t0 = time.perf_counter()
    with _catalog(catalog) as cat:
        if source is not None:
            from simulator.core import ensure_dataset

            ensure_dataset(source, cat)  # a built-in (ml-100k) loads on first use; else NotFoundError
        info = write_world(cat, name, cfg, replace=replace)
    typer.echo(f"synthesized {info.name}: {info.n_users} users, {info.n_items} items, "
               f"{info.n_interactions} interactions in {time.perf_counter() - t0:.2f}s")


def _histogram(lengths: np.ndarray) -> list[tuple[str, int]]:
    edges = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    out = []
    for lo, hi in zip(edges, edges[1:] + [None], strict=True):
        n = int(((lengths >= lo) & (lengths < hi)).sum()) if hi is not None else int((lengths >= lo).sum())
        if n:
            out.append((f"{lo}-{hi - 1}" if hi is not None and hi - 1 > lo else (str(lo) if hi else f">={lo}"), n))
    return out


def dataset_stats(cat, name: str) -> dict:
    """Counts, sparsity, sequence-length summary and histogram of a catalog dataset."""
    from simulator.core import ensure_dataset

    ensure_dataset(name, cat)
    info = cat.info(name)
    s = info.schema_name
    lengths = cat.con.execute(f"""SELECT count(i.user_id) FROM {s}.users u
        LEFT JOIN {s}.interactions i USING (user_id) GROUP BY u.user_id""").fetchnumpy()
    lengths = np.asarray(next(iter(lengths.values())), dtype=np.int64)
    t = cat.con.execute(f"SELECT min(ts), max(ts), count(DISTINCT item_id) FROM {s}.interactions").fetchall()[0]
    cells = max(info.n_users * info.n_items, 1)
    return {
        "name": info.name, "format": info.format, "source": info.source, "n_users": info.n_users,
        "n_items": info.n_items, "n_items_interacted": int(t[2]), "n_interactions": info.n_interactions,
        "n_skipped": info.n_skipped, "sparsity": round(1.0 - info.n_interactions / cells, 6),
        "ts_min": t[0], "ts_max": t[1], "time_min": _iso(t[0]), "time_max": _iso(t[1]),
        "seq_len": {"min": int(lengths.min()), "median": float(np.median(lengths)), "mean": round(float(lengths.mean()), 2),
                    "max": int(lengths.max())},
        "seq_len_histogram": dict(_histogram(lengths)),
        "text_template": info.meta.get("text_template") or (["title", "genres", "description"] if "world" in info.meta else []),
        "synthetic": "world" in info.meta,
        "preprocess_stats": info.meta.get("stats", {}),
        "notes": info.meta.get("notes", []),
        "order": _order(cat, name),
    }


def _iso(ts) -> str | None:
    """An epoch-seconds timestamp as ISO 8601 (UTC, seconds)."""
    import datetime as dt

    if ts is None:
        return None
    return dt.datetime.fromtimestamp(float(ts), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _order(cat, name: str) -> dict:
    """Same-second share and span per user (simulator/core/ordering.py): is the order real?"""
    from simulator.core.ordering import order_stats

    st = order_stats(cat.load_dataset(name).sequences)
    return {"same_second_share": round(st.same_second_share, 4), "median_span_s": st.median_span_s,
            "pseudo_sequential": st.pseudo_sequential, "note": st.sentence(name) if st.pseudo_sequential else ""}


@app.command("info")
def info(name: str = typer.Argument(..., help="Dataset name ('ml-100k' and 'synthetic' load on first use)."),
         catalog: Optional[str] = _CATALOG,
         fmt: str = typer.Option("table", "--format", help="table | json", show_default=True),
         as_json: bool = typer.Option(False, "--json", help="Same as --format json.")) -> None:
    """Counts, sparsity and the sequence-length histogram of a dataset (times as ISO 8601, UTC)."""
    from simulator.core.errors import ConfigError

    if fmt not in ("table", "json"):
        raise ConfigError(f"--format must be table or json, got {fmt!r}")
    with _catalog(catalog) as cat:
        st = dataset_stats(cat, name)
    if as_json or fmt == "json":
        typer.echo(json.dumps(st, indent=2, default=str))
        return
    typer.echo(f"{st['name']}  ({st['format']}, from {st['source']})")
    typer.echo(f"  users {st['n_users']:,}  items {st['n_items']:,}  interactions {st['n_interactions']:,}  "
               f"skipped lines {st['n_skipped']:,}")
    typer.echo(f"  sparsity {st['sparsity']:.4%}  time {st['time_min']} .. {st['time_max']} (UTC)")
    for note in st["notes"]:
        typer.echo(f"  note: {note}")
    o = st["order"]
    typer.echo(f"  order: {o['same_second_share']:.1%} of consecutive interactions in one second, median span per "
               f"user {o['median_span_s'] / 3600:,.1f} h" + ("  PSEUDO-SEQUENTIAL" if o["pseudo_sequential"] else ""))
    if o["note"]:
        typer.echo(f"  warning: {o['note']}")
    pp = {k: v for k, v in st["preprocess_stats"].items() if k.startswith("dropped") and v}
    if pp:
        typer.echo("  dropped by preprocessing: " + ", ".join(f"{k[8:]} {v:,}" for k, v in pp.items()))
    q = st["seq_len"]
    typer.echo(f"  sequence length: min {q['min']}  median {q['median']:g}  mean {q['mean']}  max {q['max']}")
    top = max(st["seq_len_histogram"].values()) if st["seq_len_histogram"] else 1
    for k, v in st["seq_len_histogram"].items():
        typer.echo(f"    {k:>9} {v:>8,} {'#' * max(1, round(40 * v / top))}")


@app.command("list")
def list_(catalog: Optional[str] = _CATALOG) -> None:
    """List datasets in the catalog."""
    with _catalog(catalog) as cat:
        rows = cat.list_datasets()
    if not rows:
        typer.echo("no datasets (try `sim data synth` or `sim data load ...`)")
        return
    typer.echo(f"{'name':<24} {'format':<16} {'users':>8} {'items':>8} {'interactions':>13} created")
    for d in rows:
        typer.echo(f"{d.name:<24} {d.format:<16} {d.n_users:>8,} {d.n_items:>8,} {d.n_interactions:>13,} {d.created_at}")
