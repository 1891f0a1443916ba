"""Explicit policy registry: every policy is registered once, by name, with its config class.

    @register("sasrec", config=SASRecConfig, kinds=("retriever", "scorer"))
    class SASRecPolicy(FullScorePolicy): ...

``create(name, **overrides)`` validates the config (pydantic, ``extra="forbid"``) so a typo is
an error naming the field; ``get(name)`` returns the entry; ``names()`` lists them all. Policy
modules are imported by :func:`load_builtin` (explicit list, no magic discovery).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from simulator.errors import ConfigError

BUILTIN_MODULES = (
    "policies.baselines",
    "policies.itemknn",
    "policies.sasrec",
    "policies.hstu",
    "hllm.policy",
    "hllm.rank_policy",
)

# where each built-in name is registered, so ``get(name)`` imports only that module (hllm
# pulls in transformers: seconds); ``names()`` still imports every module
BUILTIN_NAMES = {
    "random": "policies.baselines",
    "popularity": "policies.baselines",
    "itemknn": "policies.itemknn",
    "sasrec": "policies.sasrec",
    "hstu": "policies.hstu",
    "hllm": "hllm.policy",
    "hllm_rank": "hllm.rank_policy",
}


@dataclass(frozen=True)
class Entry:
    name: str
    cls: type
    config_cls: type[BaseModel]
    kinds: tuple[str, ...]  # subset of ("retriever", "scorer")
    description: str = ""


_REGISTRY: dict[str, Entry] = {}
_loaded = False


def register(name: str, *, config: type[BaseModel], kinds: tuple[str, ...] = ("retriever", "scorer"),
             description: str = "") -> Callable[[type], type]:
    """Class decorator registering a policy under ``name`` (once; a second is an error)."""
    bad = set(kinds) - {"retriever", "scorer"}
    if bad:
        raise ValueError(f"unknown policy kinds {sorted(bad)}")

    def deco(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"policy {name!r} is already registered by {_REGISTRY[name].cls}")
        cls.name = name
        cls.config_cls = config
        _REGISTRY[name] = Entry(name, cls, config, tuple(kinds), description or (cls.__doc__ or "").strip().split("\n")[0])
        return cls

    return deco


def load_builtin() -> None:
    """Import the built-in policy modules (each registers itself). Missing optional modules
    are skipped only if they do not exist yet; import errors inside them propagate."""
    global _loaded
    if _loaded:
        return
    for mod in BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    _loaded = True


def names() -> list[str]:
    load_builtin()
    return sorted(_REGISTRY)


def _import_for(name: str) -> None:
    mod = BUILTIN_NAMES.get(name)
    if mod is not None and name not in _REGISTRY:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def get(name: str) -> Entry:
    _import_for(name)
    if name not in _REGISTRY:
        load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown policy {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def make_config(name: str, overrides: dict[str, Any] | None = None) -> BaseModel:
    entry = get(name)
    try:
        return entry.config_cls(**(overrides or {}))
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ConfigError(f"policy {name!r} config: {errs}") from None


def create(name: str, overrides: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """Instantiate policy ``name`` with a validated config (``overrides`` dict or kwargs)."""
    cfg = make_config(name, {**(overrides or {}), **kwargs})
    return get(name).cls(cfg)
