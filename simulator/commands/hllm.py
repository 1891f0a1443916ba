"""`sim hllm ...`: train HLLM, write / extend the item-embedding table, export embeddings.

    sim hllm train --data ml-100k --preset fast --out artifacts/hllm-ml100k [--set pooling=\\"mean\\"]
    sim hllm embed-items --model artifacts/hllm-ml100k --data ml-100k --out tables/ml100k [--duckdb]
    sim hllm embed-items --model ... --out tables/ml100k --new-items new.csv   # cold start, no retraining
    sim hllm embed-items ... --index ivf [--retrieval nprobe=64]   # ANN index next to the table
    sim hllm export --model artifacts/hllm-ml100k --data ml-100k --out exports/ml100k
    sim hllm presets
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from simulator.core.errors import DataError, NotFoundError

app = typer.Typer(help="HLLM: train, embed items (incrementally), export embeddings.", no_args_is_help=True)


def _overrides(preset: Optional[str], sets: list[str] | None) -> dict:
    from simulator.commands.train import parse_overrides

    return {**({} if preset is None else {"preset": preset}), **parse_overrides(sets, None, None)}


def _dataset(data: str, catalog: Optional[str]):
    from simulator.core import Catalog, get_dataset

    return get_dataset(data, Catalog(catalog))


def _policy(model: Path):
    from hllm.policy import HLLMPolicy

    if not (model / "policy.json").exists():
        raise NotFoundError(f"no trained HLLM at {model} (run `sim hllm train --out {model}`)")
    return HLLMPolicy.load(model)


@app.command("presets")
def presets() -> None:
    """Show the recipe presets (fast = the policy's default, quick = `sim run`'s budget, paper = paper-faithful)."""
    from hllm.presets import PRESET_LABELS, PRESETS  # not hllm.recipe: no torch for a listing

    for name, vals in PRESETS.items():
        typer.echo(f"{name}: {PRESET_LABELS[name]}\n  {json.dumps(vals)}")


@app.command("train")
def train(
    data: str = typer.Option("ml-100k", "--data", "-d", help="dataset name in the catalog"),
    out: Path = typer.Option(..., "--out", "-o", help="folder to save the trained policy"),
    preset: Optional[str] = typer.Option(None, help="a preset (sim hllm presets); default: the hllm policy's"),
    sets: Optional[list[str]] = typer.Option(None, "--set", help="config override key=value (JSON value)"),
    catalog: Optional[str] = typer.Option(None, "--catalog", help="DuckDB catalog (default $SIM_CATALOG or ./sim.duckdb)"),
) -> None:
    """Stage 1 (if the preset has it) + stage 2 on the leave-one-out training split; prints test metrics."""
    from policies import registry
    from policies.evaluate import evaluate

    ds = _dataset(data, catalog)
    split = ds.leave_one_out()
    pol = registry.create("hllm", _overrides(preset, sets))  # bad keys/values: one-line ConfigError
    t0 = time.perf_counter()
    pol.fit(ds, split)
    secs = time.perf_counter() - t0
    pol.save(out)
    ev = evaluate(pol, split, which="test").summary
    typer.echo(json.dumps({"saved": str(out), "fit_seconds": round(secs, 1), **{k: round(v, 5) for k, v in ev.items()}}))


@app.command("embed-items")
def embed_items(
    model: Path = typer.Option(..., "--model", "-m", help="trained HLLM folder (sim hllm train --out)"),
    out: Path = typer.Option(..., "--out", "-o", help="item table folder (embeddings.npy + items.parquet)"),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="embed this dataset's items (default: the model's)"),
    new_items: Optional[Path] = typer.Option(None, "--new-items", help="CSV with a 'text' column: append these items"),
    duckdb_table: Optional[str] = typer.Option(None, "--duckdb", help="also mirror into this catalog table"),
    catalog: Optional[str] = typer.Option(None, "--catalog"),
    index: Optional[str] = typer.Option(None, "--index", help="auto | exact | ivf | hnsw (default: hllm.ann's)"),
    retrieval: Optional[list[str]] = typer.Option(None, "--retrieval", help="ANN setting key=value (hllm.ann)"),
) -> None:
    """Write the item-embedding table, or append new items to it without retraining; (re)build its
    ANN index when the catalog is served approximately."""
    from hllm import ann, serving
    from simulator.commands.train import parse_overrides
    from simulator.core.catalog import check_table_name

    if duckdb_table:
        check_table_name(duckdb_table)  # pasted into SQL: a plain, unreserved identifier only
    rcfg = ann.retrieval_config({**parse_overrides(retrieval, None, None), **({} if index is None else {"index": index})})
    pol = _policy(model)
    t0 = time.perf_counter()
    if new_items is not None:
        import pandas as pd

        if not new_items.exists():
            raise NotFoundError(f"{new_items} does not exist")
        df = pd.read_csv(new_items)
        if "text" not in df.columns:
            raise DataError("missing column 'text'", file=str(new_items), line=1, field="text")
        texts = df["text"].fillna("").astype(str).tolist()
        ids = serving.append_items(out, pol.embed_texts(texts, progress=True), texts)
        msg = {"appended": len(ids), "first_id": int(ids[0]) if len(ids) else None}
    else:
        texts = list(_dataset(data, catalog).item_text) if data else None
        emb = pol.embed_texts(texts, progress=True) if texts is not None else pol.item_table()
        serving.write_item_table(out, emb, texts, {"model": str(model)})
        msg = {"items": len(emb)}
    info = serving.ensure_table_index(out, rcfg)
    msg["index"] = "exact" if info is None else {k: info[k] for k in ("kind", "build_s", "bytes")}
    table = serving.open_item_table(out)
    if duckdb_table:
        from simulator.core import Catalog

        cat = Catalog(catalog)
        serving.to_duckdb(cat.con, duckdb_table, table)
    typer.echo(json.dumps({**msg, "n_items": len(table), "dim": table.shape[1], "table": str(out),
                           "seconds": round(time.perf_counter() - t0, 2)}))


@app.command("export")
def export(
    model: Path = typer.Option(..., "--model", "-m", help="trained HLLM folder"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for users.parquet + the item table"),
    data: str = typer.Option("ml-100k", "--data", "-d"),
    catalog: Optional[str] = typer.Option(None, "--catalog"),
) -> None:
    """Export user embeddings (from full histories) and the item table."""
    import numpy as np
    import pandas as pd

    from hllm import serving
    from policies.base import UserBatch

    pol = _policy(model)
    ds = _dataset(data, catalog)
    users = pol.embed_users(UserBatch.from_sequences(ds.sequences))
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"user_id": np.arange(len(users)), "emb": list(users)}).to_parquet(out / "users.parquet")
    serving.write_item_table(out / "items", pol.item_table(), list(ds.item_text), {"model": str(model)})
    typer.echo(json.dumps({"users": len(users), "items": int(pol.n_items), "dim": int(users.shape[1]), "out": str(out)}))
